{{/*
Names, labels and the pieces the node and compactor pods share.
*/}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name; 52 characters leave room for "-compactor" and "-headless". */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "sluice.selectorLabels" (list . "node") */}}
{{- define "sluice.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "sluice.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "sluice.etcd.fullname" -}}
{{- printf "%s-etcd" (include "sluice.fullname" .) -}}
{{- end -}}

{{/* Client URLs of the etcd members: the chart's StatefulSet, else etcd.endpoints. */}}
{{- define "sluice.etcd.endpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $name := include "sluice.etcd.fullname" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless.%s.svc.%s:2379" $name $i $name $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- required "etcd.endpoints is required when etcd.enabled is false" (join "," .Values.etcd.endpoints) -}}
{{- end -}}
{{- end -}}

{{/*
Environment of a sluice container: include "sluice.env" (list . "ingest,fetch" .Values.node.config .Values.node.extraEnv)
Settings go in as SLUICE_* variables; flags given in args win over them.
*/}}
{{- define "sluice.env" -}}
{{- $root := index . 0 -}}
{{- $roles := index . 1 -}}
{{- $config := merge (dict) (index . 2) $root.Values.config -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SLUICE_ROLES
  value: {{ $roles | quote }}
- name: SLUICE_CLUSTER
  value: {{ $root.Values.cluster | quote }}
- name: SLUICE_STORE
  value: {{ $root.Values.store.url | quote }}
{{- with $root.Values.store.s3Endpoint }}
- name: SLUICE_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $root.Values.store.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
- name: SLUICE_ETCD
  value: {{ include "sluice.etcd.endpoints" $root | quote }}
- name: SLUICE_DATA_DIR
  value: /var/lib/sluice
- name: SLUICE_HTTP_ADDR
  value: "0.0.0.0:8080"
{{- if $root.Values.tls.enabled }}
- name: SLUICE_TLS_CERT_FILE
  value: /etc/sluice/tls/tls.crt
- name: SLUICE_TLS_KEY_FILE
  value: /etc/sluice/tls/tls.key
{{- if $root.Values.tls.http }}
- name: SLUICE_HTTP_TLS
  value: "true"
{{- end }}
{{- if $root.Values.tls.clientCa }}
- name: SLUICE_TLS_CLIENT_CA_FILE
  value: /etc/sluice/tls/ca.crt
{{- end }}
{{- end }}
{{- range $key := keys $config | sortAlpha }}
{{- $value := get $config $key }}
{{- /* YAML numbers arrive as float64: print integers whole, not as 4.294967296e+09 */}}
{{- if kindIs "float64" $value }}
{{- $value = int64 $value }}
{{- end }}
- name: {{ printf "SLUICE_%s" ($key | upper | replace "-" "_") }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with index . 3 }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes of a sluice pod: include "sluice.volumes" (list . sizeLimit) */}}
{{- define "sluice.volumes" -}}
{{- $root := index . 0 -}}
- name: data
  emptyDir:
    sizeLimit: {{ index . 1 }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secretName is required when tls.enabled is true" $root.Values.tls.secretName }}
{{- end }}
{{- end -}}

{{- define "sluice.volumeMounts" -}}
- name: data
  mountPath: /var/lib/sluice
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/sluice/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Scheme of the HTTP port: HTTPS with tls.http (--http-tls). */}}
{{- define "sluice.httpScheme" -}}
{{- if and .Values.tls.enabled .Values.tls.http -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/* Ports of the nodes' Services. */}}
{{- define "sluice.nodePorts" -}}
- name: http
  port: {{ .Values.service.httpPort }}
  targetPort: http
  protocol: TCP
- name: kafka
  port: {{ .Values.service.kafkaPort }}
  targetPort: kafka
  protocol: TCP
{{- range .Values.kafka.extraPorts }}
- name: {{ .name }}
  port: {{ .port }}
  targetPort: {{ .name }}
  protocol: TCP
{{- end }}
{{- end -}}
