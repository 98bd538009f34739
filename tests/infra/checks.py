"""Offline checks of sluice's deployment files (infra/), run by check.sh.

Each check prints one line, `ok   NAME: detail` or `FAIL NAME: why`, then
the run ends with `N passed, M failed` and exits non-zero on any failure.
Nothing here reaches the network: the Helm chart is linted and rendered by
the Helm SDK in-process, manifests are validated against the Kubernetes
schemas that kubernetes-validate ships, checkov runs with --skip-download,
and Terraform is parsed, never planned. The image is built with podman
from the debug binary (infra/image/build.sh --binary) and run, both with
--network=none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import traceback
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CHART = INFRA / "helm" / "sluice"
TERRAFORM = INFRA / "terraform" / "aws"
DASHBOARD = CHART / "dashboards" / "sluice.json"
ADAPTER_VALUES = INFRA / "helm" / "prometheus-adapter-values.yaml"
RENDERED_CHECKOV_CONFIG = INFRA / "helm" / ".checkov.yaml"
HERE = Path(__file__).resolve().parent
KUBE_VERSION = "1.30.0"
RELEASE = "sluice"
NAMESPACE = "streaming"

# Value sets the chart is linted, rendered and validated with: the defaults,
# every toggle on, and the other side of the toggles the defaults leave on.
VALUE_SETS = {
    "default": None,
    "values-all": HERE / "values-all.yaml",
    "values-external-etcd": HERE / "values-external-etcd.yaml",
}

# Kinds whose schema kubernetes-validate does not ship (custom resources).
# They are validated structurally below instead; any other kind without a
# schema fails the check.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# Every metric sluice exports (counters unless noted). The dashboard and the
# Prometheus adapter rule may query these only.
SLUICE_METRICS = {
    "sluice_produce_bytes_total": "counter",
    "sluice_produce_records_total": "counter",
    "sluice_produce_latency_seconds": "histogram",
    "sluice_fetch_bytes_total": "counter",
    "sluice_fetch_latency_seconds": "histogram",
    "sluice_segment_bytes": "histogram",
    "sluice_flushes_total": "counter",
    "sluice_object_puts_total": "counter",
    "sluice_object_put_failures_total": "counter",
    "sluice_object_gets_total": "counter",
    "sluice_commit_txns_total": "counter",
    "sluice_commit_conflicts_total": "counter",
    "sluice_cache_hits_total": "counter",
    "sluice_cache_misses_total": "counter",
    "sluice_peer_fetches_total": "counter",
    "sluice_compaction_lag_seconds": "gauge",
    "sluice_compaction_jobs_total": "counter",
    "sluice_archive_files": "gauge",
    "sluice_index_entries": "gauge",
    "sluice_authentication_failures_total": "counter",
    "sluice_quota_throttles_total": "counter",
    "sluice_request_busy_seconds_total": "counter",
    "sluice_controller": "gauge",
}

# Metrics the dashboard must show (its required panels).
DASHBOARD_REQUIRED = {
    "sluice_produce_bytes_total",
    "sluice_fetch_bytes_total",
    "sluice_produce_latency_seconds",
    "sluice_fetch_latency_seconds",
    "sluice_flushes_total",
    "sluice_object_puts_total",
    "sluice_commit_conflicts_total",
    "sluice_cache_hits_total",
    "sluice_cache_misses_total",
    "sluice_compaction_lag_seconds",
    "sluice_quota_throttles_total",
    "sluice_authentication_failures_total",
    "sluice_controller",
}

TERRAFORM_FILES = ["versions.tf", "variables.tf", "s3.tf", "iam.tf", "lambda.tf", "ecs.tf", "outputs.tf"]


class CheckFailed(Exception):
    """A check's finding; the message is printed on the check's line."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Runner:
    """Runs checks, prints a line per check and counts the outcomes."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, check, *args) -> object:
        try:
            detail = check(*args)
        except CheckFailed as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return None
        except Exception as e:  # a crash of the check itself is a failure too
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
            return None
        self.passed += 1
        print(f"ok   {name}" + (f": {detail}" if detail else ""), flush=True)
        return detail

    @staticmethod
    def skip(name: str, why: str) -> None:
        print(f"skip {name}: {why}", flush=True)


# YAML ----------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys, which PyYAML would
    silently collapse and kubectl (strict decoding) refuses."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_values(path: Path | None) -> dict | None:
    if path is None:
        return None
    return yaml.load(path.read_text(), Loader=StrictLoader)


# Helm ----------------------------------------------------------------------


def helm_lint(values_path: Path | None) -> str:
    import helm_python as helm

    report = helm.lint(str(CHART), load_values(values_path), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = list(report.get("errors") or [])
    problems += [f"{m['path']}: {m['error'].strip()}" for m in report.get("messages", []) if m["severity"] >= 2]
    require(report.get("total_charts_linted") == 1, f"linted {report.get('total_charts_linted')} charts, expected 1")
    require(not problems, "; ".join(problems))
    infos = [m["error"] for m in report.get("messages", []) if m["severity"] < 2]
    return "strict, kube v" + KUBE_VERSION + (f" ({len(infos)} info: {'; '.join(infos)})" if infos else "")


def render(values_path: Path | None) -> list[tuple[str, dict]]:
    """The chart's manifests as (template, document) pairs."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(load_values(values_path), name=RELEASE, namespace=NAMESPACE)
    documents = []
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        try:
            for doc in yaml.load_all(text, Loader=StrictLoader):
                if doc:
                    documents.append((template, doc))
        except yaml.YAMLError as e:
            raise CheckFailed(f"{template} does not parse: {e}".replace("\n", " "))
    return documents


def validate_rendered(values_path: Path | None, rendered: dict) -> str:
    documents = render(values_path)
    rendered["documents"] = documents
    require(documents, "the chart rendered no manifest")
    plain = [(t, d) for t, d in documents if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS]
    custom = [(t, d) for t, d in documents if (d.get("apiVersion"), d.get("kind")) in CRD_KINDS]
    stream = yaml.safe_dump_all([d for _, d in plain], sort_keys=False)
    passed, problems = kubernetes_validate(stream)
    require(not problems, "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    require(
        passed == len(plain),
        f"kubernetes-validate passed {passed} of {len(plain)} documents",
    )
    kinds = sorted({d["kind"] for _, d in plain})
    note = f"{len(plain)} documents valid against Kubernetes {KUBE_VERSION} (strict): {', '.join(kinds)}"
    if custom:
        note += f"; {len(custom)} custom resource(s) left to the structural check: " + ", ".join(
            sorted({d["kind"] for _, d in custom})
        )
    return note


def kubernetes_validate(stream: str) -> tuple[int, list[str]]:
    """Pipes a YAML stream into `kubernetes-validate --strict` and returns
    how many documents passed and every ERROR, WARN or FATAL line (a kind
    without a schema is only a WARN there; here it is a failure)."""
    exe = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run(
        [str(exe), "--strict", "-k", KUBE_VERSION, "-"],
        input=stream,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    passed = sum(1 for line in lines if line.startswith("INFO") and " passed " in line)
    problems = [line for line in lines if line.startswith(("ERROR", "WARN", "FATAL"))]
    if proc.returncode != 0 and not problems:
        problems = [f"kubernetes-validate exited {proc.returncode}: " + " ".join(lines[-3:])]
    return passed, problems


# ServiceMonitor: the fields of the Prometheus Operator CRD this chart may
# produce, closed at every level the chart writes.
_LABEL_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {
            "enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                     "lowercase", "uppercase", "keepequal", "dropequal"]
        },
    },
}
SERVICEMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "labels": _LABEL_MAP,
                "annotations": _LABEL_MAP,
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABEL_MAP, "matchExpressions": {"type": "array"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "tlsConfig": {"type": "object"},
                            "relabelings": {"type": "array", "items": _RELABEL},
                            "metricRelabelings": {"type": "array", "items": _RELABEL},
                        },
                    },
                },
            },
        },
    },
}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h)", duration))


def check_servicemonitors(rendered: dict) -> str:
    documents = rendered.get("documents")
    require(documents is not None, "the chart did not render (see the validation check)")
    monitors = [d for _, d in documents if d.get("kind") == "ServiceMonitor"]
    require(monitors, "serviceMonitor.enabled rendered no ServiceMonitor")
    services = [d for _, d in documents if d.get("kind") == "Service"]
    for monitor in monitors:
        errors = sorted(jsonschema.Draft7Validator(SERVICEMONITOR_SCHEMA).iter_errors(monitor), key=str)
        require(not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:3]))
        spec = monitor["spec"]
        namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [monitor["metadata"].get("namespace")]
        wanted = spec["selector"].get("matchLabels", {})
        selected = [
            s
            for s in services
            if s["metadata"].get("namespace") in namespaces
            and all(s["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        require(selected, f"{monitor['metadata']['name']}: its selector {wanted} matches no rendered Service")
        for endpoint in spec["endpoints"]:
            for service in selected:
                ports = {p.get("name") for p in service["spec"].get("ports", [])}
                require(
                    endpoint["port"] in ports,
                    f"endpoint port {endpoint['port']!r} is not a port of Service {service['metadata']['name']}",
                )
            if "interval" in endpoint and "scrapeTimeout" in endpoint:
                require(
                    _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"]),
                    "scrapeTimeout is longer than interval",
                )
            targets = {r.get("targetLabel") for r in endpoint.get("relabelings", [])}
            require({"pod", "namespace"} <= targets, "the HPA's pods metric needs pod and namespace labels")
        names = ", ".join(s["metadata"]["name"] for s in selected)
    return f"{len(monitors)} ServiceMonitor valid against the CRD fields it uses, selecting Services {names}"


# Chart invariants ------------------------------------------------------------


def _by_kind(documents, kind: str) -> list[dict]:
    return [d for _, d in documents if d.get("kind") == kind]


def check_chart_invariants(rendered_sets: dict) -> str:
    """What the deployment must do whatever the values: the node pods drain
    gracefully and run locked down, each pod advertises its own IP, the
    HPA targets the client bytes metric, etcd runs as specified."""
    checked = 0
    for set_name, rendered in rendered_sets.items():
        documents = rendered.get("documents")
        require(documents is not None, f"{set_name}: the chart did not render")
        deployments = {d["metadata"]["name"]: d for d in _by_kind(documents, "Deployment")}
        node = deployments.get(RELEASE)
        require(node is not None, f"{set_name}: no node Deployment named {RELEASE}")
        for name, deployment in deployments.items():
            pod = deployment["spec"]["template"]["spec"]
            where = f"{set_name}: Deployment {name}"
            require(pod.get("terminationGracePeriodSeconds") == 60, f"{where}: terminationGracePeriodSeconds is not 60")
            require(pod["securityContext"].get("runAsNonRoot") is True, f"{where}: pod not runAsNonRoot")
            require(
                pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault",
                f"{where}: seccomp is not RuntimeDefault",
            )
            require(pod.get("automountServiceAccountToken") is False, f"{where}: the ServiceAccount token is mounted")
            container = pod["containers"][0]
            security = container["securityContext"]
            require(security.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable")
            require(security.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed")
            require(security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped")
            require(security.get("runAsUser") == 65532, f"{where}: not uid 65532")
            sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
            require(isinstance(sleep, int) and 1 <= sleep < 60, f"{where}: no preStop sleep action")
            require("exec" not in container.get("lifecycle", {}).get("preStop", {}), f"{where}: preStop exec (no shell)")
            paths = {
                probe: container.get(probe, {}).get("httpGet", {}).get("path")
                for probe in ("livenessProbe", "readinessProbe", "startupProbe")
            }
            require(paths["livenessProbe"] == "/health/live", f"{where}: liveness is not /health/live")
            require(paths["readinessProbe"] == "/health/ready", f"{where}: readiness is not /health/ready")
            require(container["args"][0] == "serve", f"{where}: args do not start with serve")
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            require("emptyDir" in volumes.get("data", {}), f"{where}: the data directory is not an emptyDir")
            env = {e["name"]: e for e in container.get("env", [])}
            require(env.get("SLUICE_HTTP_ADDR", {}).get("value") == "0.0.0.0:8080", f"{where}: HTTP not on 0.0.0.0:8080")
            require(env.get("SLUICE_STORE", {}).get("value", "").startswith("s3://"), f"{where}: store is not s3://")
            require(env.get("SLUICE_ETCD", {}).get("value", "").startswith("http"), f"{where}: no etcd endpoints")
            checked += 1
        node_container = node["spec"]["template"]["spec"]["containers"][0]
        node_env = {e["name"]: e for e in node_container["env"]}
        require(node_env["SLUICE_ROLES"]["value"] == "ingest,fetch", f"{set_name}: node roles are not ingest,fetch")
        require(
            node_env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP",
            f"{set_name}: POD_IP does not come from the downward API",
        )
        args = " ".join(node_container["args"])
        require(
            "--advertised-kafka-addr=$(POD_IP):9092" in args or "$(POD_IP)" in args,
            f"{set_name}: the node does not advertise its pod IP",
        )
        compactor = deployments.get(f"{RELEASE}-compactor")
        if compactor is not None:
            compactor_env = {e["name"]: e for e in compactor["spec"]["template"]["spec"]["containers"][0]["env"]}
            require(compactor_env["SLUICE_ROLES"]["value"] == "compactor", f"{set_name}: compactor roles")
            require(compactor["spec"]["replicas"] in (1, 2, 3, 4), f"{set_name}: compactor replicas")
        for hpa in _by_kind(documents, "HorizontalPodAutoscaler"):
            metrics = hpa["spec"]["metrics"]
            require(
                any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics),
                f"{set_name}: the HPA does not scale on CPU",
            )
            require(
                any(m["type"] == "Pods" and m["pods"]["metric"]["name"] == "sluice_client_bytes_per_second" for m in metrics),
                f"{set_name}: the HPA does not scale on sluice_client_bytes_per_second",
            )
            require("replicas" not in node["spec"], f"{set_name}: the Deployment sets replicas beside its HPA")
        for sts in _by_kind(documents, "StatefulSet"):
            args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
            for flag in ("--auto-compaction-mode=periodic", "--auto-compaction-retention=1h"):
                require(flag in args, f"{set_name}: etcd lacks {flag}")
            require(sts["spec"].get("volumeClaimTemplates"), f"{set_name}: etcd has no PVC per member")
            require(sts["spec"].get("podManagementPolicy") == "Parallel", f"{set_name}: etcd members start in order")
        pdbs = {d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component"): d for d in _by_kind(documents, "PodDisruptionBudget")}
        if _by_kind(documents, "StatefulSet"):
            require(pdbs.get("etcd", {}).get("spec", {}).get("maxUnavailable") == 1, f"{set_name}: etcd PDB is not maxUnavailable 1")
        for configmap in _by_kind(documents, "ConfigMap"):
            if configmap["metadata"]["name"].endswith("-dashboard"):
                require(
                    json.loads(configmap["data"]["sluice.json"]) == json.loads(DASHBOARD.read_text()),
                    f"{set_name}: the dashboard ConfigMap does not hold dashboards/sluice.json",
                )
                require(configmap["metadata"].get("labels", {}).get("grafana_dashboard"), f"{set_name}: dashboard not labelled for the sidecar")
    return f"{checked} Deployments across {len(rendered_sets)} value sets: drain, security, probes, advertised pod IP, HPA, etcd"


# checkov ---------------------------------------------------------------------


def checkov_bin() -> str:
    return str(Path(sys.executable).with_name("checkov"))


def run_checkov(args: list[str]) -> str:
    proc = subprocess.run(
        [checkov_bin(), "--skip-download", "--compact", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, LOG_LEVEL="WARNING"),
    )
    out = proc.stdout
    summaries = re.findall(r"^(\w[\w ]*) scan results:\s*\n\s*\nPassed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", out, re.M)
    if proc.returncode != 0:
        failed = re.findall(r"^Check: (CKV\w+): \"(.*)\"\n\s+FAILED for resource: (\S+)", out, re.M)
        detail = "; ".join(f"{c} {r} ({t})" for c, t, r in failed[:6]) or (out + proc.stderr).strip()[-600:]
        raise CheckFailed(f"checkov exited {proc.returncode}: {detail}")
    require(summaries, "checkov scanned nothing: " + (out + proc.stderr).strip()[-300:])
    return "; ".join(f"{fw}: {p} passed, {f} failed, {s} skipped" for fw, p, f, s in summaries)


def checkov_infra() -> str:
    return run_checkov(["-d", "infra/"])


def checkov_rendered(rendered_sets: dict) -> str:
    """checkov's Kubernetes checks on the rendered chart: `-d infra/` cannot
    see it (checkov's helm runner needs a helm binary)."""
    with tempfile.TemporaryDirectory(prefix="sluice-rendered-") as tmp:
        for set_name, rendered in rendered_sets.items():
            documents = rendered.get("documents")
            require(documents is not None, f"{set_name}: the chart did not render")
            with open(Path(tmp) / f"{set_name}.yaml", "w") as f:
                yaml.safe_dump_all([d for _, d in documents], f, sort_keys=False)
        return run_checkov(
            ["-d", tmp, "--framework", "kubernetes", "--config-file", str(RENDERED_CHECKOV_CONFIG)]
        )


# Terraform -------------------------------------------------------------------


def load_terraform(hcl2_dir: Path) -> dict:
    """Every .tf file parsed with python-hcl2, merged by block type."""
    if str(hcl2_dir) not in sys.path:
        sys.path.insert(0, str(hcl2_dir))
    import hcl2

    require(
        Path(hcl2.__file__).resolve().is_relative_to(hcl2_dir.resolve()),
        f"imported hcl2 from {hcl2.__file__}, not python-hcl2 in {hcl2_dir}",
    )
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    merged: dict = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}, "terraform": [], "provider": []}
    files = sorted(INFRA.rglob("*.tf"))
    require(files, "no .tf file under infra/")
    for path in files:
        try:
            with open(path) as f:
                parsed = hcl2.load(f, serialization_options=options)
        except Exception as e:
            raise CheckFailed(f"{path.relative_to(ROOT)} does not parse: {e}".replace("\n", " "))
        for block in parsed.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    merged["resource"].setdefault(_unquote(rtype), {})[_unquote(name)] = body
        for block in parsed.get("data", []):
            for dtype, named in block.items():
                for name, body in named.items():
                    merged["data"].setdefault(_unquote(dtype), {})[_unquote(name)] = body
        for block in parsed.get("variable", []):
            for name, body in block.items():
                merged["variable"][_unquote(name)] = body
        for block in parsed.get("output", []):
            for name, body in block.items():
                merged["output"][_unquote(name)] = body
        for block in parsed.get("locals", []):
            merged["locals"].update(block)
        merged["terraform"] += parsed.get("terraform", [])
        merged["provider"] += parsed.get("provider", [])
    merged["files"] = [p.name for p in files]
    return merged


def _unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def _first(value):
    """A nested block as one dict (python-hcl2 gives blocks as lists)."""
    if isinstance(value, list):
        require(len(value) >= 1, "empty block")
        return value[0]
    return value


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def check_terraform(hcl2_dir: Path) -> str:
    tf = load_terraform(hcl2_dir)
    for name in TERRAFORM_FILES:
        require((TERRAFORM / name).is_file(), f"infra/terraform/aws/{name} is missing")
    res = tf["resource"]

    def one(rtype: str, what: str) -> dict:
        found = res.get(rtype, {})
        require(found, f"no {rtype} ({what})")
        return found

    # The provider.
    providers = _first(_first(tf["terraform"])["required_providers"])
    aws = providers.get("aws", {})
    require(aws.get("source") == "hashicorp/aws" and str(aws.get("version", "")).startswith("~> 5"),
            f"the aws provider is not hashicorp/aws ~> 5: {aws}")

    # S3: the bucket, its public access block, SSE, the multipart abort rule.
    buckets = one("aws_s3_bucket", "the data bucket")
    block = _first(list(one("aws_s3_bucket_public_access_block", "public access block").values()))
    for key in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        require(block.get(key) is True, f"public access block: {key} is not true")
    sse = _first(list(one("aws_s3_bucket_server_side_encryption_configuration", "SSE").values()))
    algorithm = _first(_first(sse["rule"])["apply_server_side_encryption_by_default"])["sse_algorithm"]
    require(algorithm in ("aws:kms", "AES256"), f"SSE algorithm {algorithm}")
    abort_days = [
        _first(rule["abort_incomplete_multipart_upload"]).get("days_after_initiation")
        for lifecycle in one("aws_s3_bucket_lifecycle_configuration", "lifecycle").values()
        for rule in _as_list(lifecycle.get("rule"))
        if rule.get("abort_incomplete_multipart_upload") and rule.get("status") == "Enabled"
    ]
    require(1 in abort_days, f"no enabled lifecycle rule aborting incomplete multipart uploads after 1 day ({abort_days})")

    # Lambda: produce and compactor from one zip, a Function URL, the schedule.
    functions = one("aws_lambda_function", "Lambda functions")
    modes = {}
    for name, fn in functions.items():
        require(fn.get("runtime") == "provided.al2023", f"lambda {name}: runtime {fn.get('runtime')}")
        require("var.lambda_zip_path" in str(fn.get("filename")), f"lambda {name}: zip not from var.lambda_zip_path")
        require("reserved_concurrent_executions" in fn, f"lambda {name}: no reserved concurrency")
        arch = str(fn.get("architectures"))
        require("arm64" in arch or "x86_64" in arch or "var." in arch, f"lambda {name}: architectures {arch}")
        env = str(_first(fn.get("environment", [{}])).get("variables"))
        mode = re.search(r"SLUICE_LAMBDA_MODE\W+(\w+)", env)
        require(mode, f"lambda {name}: no SLUICE_LAMBDA_MODE")
        modes[mode.group(1)] = name
    require({"produce", "compactor"} <= set(modes), f"lambda modes {sorted(modes)}, want produce and compactor")
    require(
        "var." in str(functions[modes["produce"]]["reserved_concurrent_executions"]),
        "the produce function's reserved concurrency is not a variable",
    )
    urls = one("aws_lambda_function_url", "the produce Function URL")
    require(
        any(u.get("authorization_type") == "AWS_IAM" and modes["produce"] in str(u.get("function_name")) for u in urls.values()),
        "no AWS_IAM Function URL on the produce function",
    )
    rules = one("aws_cloudwatch_event_rule", "the compactor schedule")
    schedules = [str(r.get("schedule_expression")) for r in rules.values()]
    defaults = {n: str(v.get("default")) for n, v in tf["variable"].items()}
    resolved = [defaults.get(s.removeprefix("${var.").removesuffix("}"), s) for s in schedules]
    require("rate(5 minutes)" in resolved, f"schedules {resolved}, want rate(5 minutes)")
    targets = one("aws_cloudwatch_event_target", "the schedule's target")
    require(
        any(modes["compactor"] in str(t.get("arn")) for t in targets.values()),
        "no event target invoking the compactor function",
    )
    permissions = one("aws_lambda_permission", "EventBridge's right to invoke")
    require(
        any(p.get("principal") == "events.amazonaws.com" for p in permissions.values()),
        "no lambda permission for events.amazonaws.com",
    )

    # ECS: cluster, task definition, service, autoscaling target and policies.
    one("aws_ecs_cluster", "the ECS cluster")
    tasks = one("aws_ecs_task_definition", "the node task definition")
    require(any("FARGATE" in str(t.get("requires_compatibilities")) for t in tasks.values()), "no Fargate task definition")
    require(any("var.image" in str(t.get("container_definitions")) for t in tasks.values()), "the task image is not var.image")
    services = one("aws_ecs_service", "the node service")
    require(any(s.get("launch_type") == "FARGATE" for s in services.values()), "the ECS service is not Fargate")
    one("aws_appautoscaling_target", "the autoscaling target")
    policies = one("aws_appautoscaling_policy", "the scaling policies")
    tracking = [p for p in policies.values() if p.get("policy_type") == "TargetTrackingScaling"]
    require(tracking, "no target-tracking scaling policy")
    require(
        any("ECSServiceAverageCPUUtilization" in str(p) for p in tracking),
        "no target-tracking policy on ECSServiceAverageCPUUtilization",
    )
    require(len(tracking) >= 2, "no second (traffic) target-tracking policy")

    # Logs: retention and KMS on every log group.
    for name, group in one("aws_cloudwatch_log_group", "log groups").items():
        require("retention_in_days" in group, f"log group {name}: no retention")
        require("kms_key_id" in group, f"log group {name}: no KMS key")

    # IAM: no "*" resource on S3 actions, and S3 grants limited to the prefix.
    s3_statements = 0
    for doc_name, doc in tf["data"].get("aws_iam_policy_document", {}).items():
        for statement in _as_list(doc.get("statement")):
            actions = [str(a) for a in _as_list(statement.get("actions"))]
            if not any(a.startswith("s3:") for a in actions):
                continue
            s3_statements += 1
            resources = [str(r) for r in _as_list(statement.get("resources"))]
            require(resources, f"policy {doc_name}: S3 statement without resources")
            require(
                not any(r in ("*", "arn:aws:s3:::*") for r in resources),
                f"policy {doc_name}: S3 actions {actions} on a \"*\" resource",
            )
            if statement.get("effect", "Allow") == "Allow":
                require(
                    set(actions) <= {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"},
                    f"policy {doc_name}: S3 actions beyond Get/Put/DeleteObject and ListBucket: {actions}",
                )
                if "s3:ListBucket" in actions:
                    conditions = _as_list(statement.get("condition"))
                    require(
                        any(c.get("variable") == "s3:prefix" for c in conditions),
                        f"policy {doc_name}: s3:ListBucket without an s3:prefix condition",
                    )
                else:
                    require(
                        all("var.store_prefix" in r and r.endswith("/*") for r in resources),
                        f"policy {doc_name}: object access not limited to the store prefix: {resources}",
                    )
    for rtype in ("aws_iam_policy", "aws_iam_role_policy"):
        for name, policy in res.get(rtype, {}).items():
            text = str(policy.get("policy"))
            require(
                "data.aws_iam_policy_document." in text,
                f"{rtype}.{name}: policy not from an aws_iam_policy_document (cannot be checked here)",
            )
    require(s3_statements >= 2, f"found {s3_statements} S3 policy statements, expected the object and list grants")
    require("etcd_endpoints" in tf["variable"], "no etcd_endpoints variable")
    for name in ("vpc_id", "subnet_ids"):
        require(name in tf["variable"], f"no {name} variable (the VPC is an input)")
    require("aws_vpc" not in res and "aws_subnet" not in res, "the module creates a VPC or subnets")
    count = sum(len(v) for v in res.values())
    return f"{len(tf['files'])} files, {count} resources; bucket, abort rule, 2 functions, URL, schedule, ECS, autoscaling, IAM scoped"


def check_terraform_fmt(terraform: str) -> str:
    proc = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "infra/terraform"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1"),
    )
    require(proc.returncode == 0, "not formatted: " + proc.stdout.strip()[:800])
    return terraform


# Metrics -------------------------------------------------------------------

_PROMQL_WORDS = {
    # aggregations and keywords
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset", "inf", "nan",
}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values()
    query) reads: identifiers that are not functions, keywords, label names,
    strings, ranges or template variables."""
    names = set()
    for m in re.finditer(r'__name__\s*=~?\s*"([^"]*)"', expr):
        names |= {n for n in m.group(1).split("|") if n}
    expr = re.sub(r"label_values\(\s*(.*?)\s*,\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r"<<\.\w+>>", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)
    expr = re.sub(r"'(?:[^'\\]|\\.)*'", " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b", " ", expr)
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        token = m.group(0)
        following = expr[m.end():].lstrip()[:1]
        if following == "(" or token.lower() in _PROMQL_WORDS:
            continue
        names.add(token)
    return names


def known_metric(name: str) -> bool:
    if name in SLUICE_METRICS:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and SLUICE_METRICS.get(base) == "histogram":
            return True
    return False


def base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and SLUICE_METRICS.get(name.removesuffix(suffix)) == "histogram":
            return name.removesuffix(suffix)
    return name


def dashboard_queries(dashboard: dict) -> list[str]:
    queries = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries.append(target["expr"])
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            queries.append(query.get("query") if isinstance(query, dict) else query)
    return [q for q in queries if q]


def check_dashboard() -> str:
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        raise CheckFailed(f"{DASHBOARD.relative_to(ROOT)} is not JSON: {e}")
    require(dashboard.get("uid") and dashboard.get("title"), "the dashboard has no uid or title")
    panels = dashboard.get("panels", [])
    require(panels, "the dashboard has no panels")
    ids = [p.get("id") for p in panels]
    require(len(ids) == len(set(ids)), "duplicate panel ids")
    queries = dashboard_queries(dashboard)
    used = set()
    for query in queries:
        names = promql_metrics(query)
        require(names, f"no metric found in query {query!r}")
        unknown = sorted(n for n in names if not known_metric(n))
        require(not unknown, f"unknown metric(s) {unknown} in {query!r}")
        used |= {base_metric(n) for n in names}
    missing = sorted(DASHBOARD_REQUIRED - used)
    require(not missing, f"the dashboard shows no panel of {missing}")
    return f"{len(panels)} panels, {len(queries)} queries over {len(used)} sluice metrics, all known"


def check_hpa_wiring() -> str:
    """The adapter rule serves the metric the HPA asks for, computed from
    sluice's produce and fetch byte counters."""
    adapter = yaml.load(ADAPTER_VALUES.read_text(), Loader=StrictLoader)
    rules = adapter.get("rules", {}).get("custom", [])
    values = yaml.load((CHART / "values.yaml").read_text(), Loader=StrictLoader)
    wanted = values["autoscaling"]["clientBytes"]["metricName"]
    served = [r for r in rules if r.get("name", {}).get("as") == wanted]
    require(served, f"no adapter rule serves {wanted}")
    rule = served[0]
    overrides = rule.get("resources", {}).get("overrides", {})
    require(
        overrides.get("pod", {}).get("resource") == "pod" and overrides.get("namespace", {}).get("resource") == "namespace",
        "the rule does not map the pod and namespace labels (a pods metric needs both)",
    )
    query_metrics = promql_metrics(rule["metricsQuery"])
    require(
        {"sluice_produce_bytes_total", "sluice_fetch_bytes_total"} <= query_metrics,
        f"metricsQuery reads {sorted(query_metrics)}, want produce and fetch bytes",
    )
    require("rate(" in rule["metricsQuery"] and "[1m]" in rule["metricsQuery"], "metricsQuery is not a 1m rate")
    series = promql_metrics(rule["seriesQuery"])
    unknown = sorted(n for n in query_metrics | series if not known_metric(n))
    require(not unknown, f"unknown metric(s) {unknown}")
    return f"{wanted} = rate(produce + fetch bytes [1m]) per pod, served by the adapter rule, targeted by the HPA"


# Image -----------------------------------------------------------------------


def check_image() -> str:
    containerfile = (INFRA / "image" / "Containerfile").read_text()
    instructions = [line.strip() for line in containerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    froms = [i for i in instructions if i.upper().startswith("FROM ")]
    require(froms == ["FROM scratch"], f"base images {froms}, want FROM scratch only")
    require("USER 65532:65532" in instructions or "USER 65532" in instructions, "the image does not run as uid 65532")
    require('ENTRYPOINT ["/sluice"]' in instructions, 'no ENTRYPOINT ["/sluice"]')
    require(any(i.startswith("COPY") and i.endswith(" /sluice") for i in instructions), "the binary is not copied to /sluice")
    script = INFRA / "image" / "build.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    require(proc.returncode == 0, f"build.sh: {proc.stderr.strip()}")
    text = script.read_text()
    for needle in (
        'RUSTFLAGS="-C target-feature=+crt-static"',
        "--target \"$target\"",
        "x86_64-unknown-linux-gnu",
        "CONTAINERS_CONF",
        "--binary",
        "CONTAINERS_STORAGE_CONF",
        "podman build --network=none --runtime runc",
        "podman run --rm --network=none --runtime runc",
        "podman save --format oci-archive",
    ):
        require(needle in text, f"build.sh lacks {needle}")
    return "FROM scratch, uid 65532, /sluice entrypoint; build.sh parses and builds offline"


IMAGE_DIR = ROOT / "target" / "image"
IMAGE_TAG = "e2e-check"
IMAGE_NAME = f"localhost/sluice:{IMAGE_TAG}"
IMAGE_UID = 65532


def podman(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def podman_env(directory: Path) -> dict:
    """The environment of a podman whose configuration, storage and state
    are all in `directory`: runc under cgroupfs and the ulimits an
    unprivileged container may have (docs: OFFLINE-TOOLS, "Container
    image"), as infra/image/build.sh writes them for its own podman."""
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    (directory / "network").mkdir(exist_ok=True)
    (directory / "containers.conf").write_text(
        "[containers]\n"
        'default_ulimits=["nofile=1024:1024","nproc=1024:1024"]\n'
        "[engine]\n"
        'runtime="runc"\n'
        'cgroup_manager="cgroupfs"\n'
        'events_logger="file"\n'
        f'tmp_dir="{directory}/tmp"\n'
        f'image_copy_tmp_dir="{directory}/tmp"\n'
        "[network]\n"
        f'network_config_dir="{directory}/network"\n'
    )
    (directory / "storage.conf").write_text(
        f'[storage]\ndriver="overlay"\ngraphroot="{directory}/storage"\nrunroot="{directory}/run"\n'
    )
    return dict(
        os.environ,
        CONTAINERS_CONF=str(directory / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(directory / "storage.conf"),
        TMPDIR=str(directory / "tmp"),
    )


def archive_entries(archive: Path) -> dict[str, tarfile.TarInfo]:
    """The files of an OCI archive's image, its layers applied in order
    (a later layer's entry replaces an earlier one's)."""
    entries: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(archive) as outer:
        def blob(digest: str):
            return outer.extractfile("blobs/" + digest.replace(":", "/"))

        index = json.load(outer.extractfile("index.json"))
        require(len(index["manifests"]) == 1, f"the archive holds {len(index['manifests'])} images, want 1")
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=blob(layer["digest"]), mode="r|*") as tar:
                for member in tar:
                    name = member.name.rstrip("/")
                    entries[name[2:] if name.startswith("./") else name.lstrip("/")] = member
    return entries


def check_image_build() -> str:
    """infra/image/build.sh builds the image from the debug binary (with
    its shared libraries: a static release build takes ~20 min here), and
    the saved archive, loaded into a podman of its own, runs `--version`."""
    started = time.monotonic()
    missing = [tool for tool in ("podman", "runc") if not shutil.which(tool)]
    require(not missing, f"{' and '.join(missing)} not on PATH (Debian: apt-get install podman runc)")
    binary = ROOT / "target" / "debug" / "sluice"
    require(binary.is_file(), f"no {binary.relative_to(ROOT)}: build it first (cargo build --bin sluice)")
    with open(ROOT / "Cargo.toml", "rb") as f:
        version = tomllib.load(f)["workspace"]["package"]["version"]
    archive = IMAGE_DIR / f"sluice-{IMAGE_TAG}.oci.tar"
    check_dir = IMAGE_DIR / "check"
    build_env = dict(
        os.environ,
        CONTAINERS_CONF=str(IMAGE_DIR / "podman" / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(IMAGE_DIR / "podman" / "storage.conf"),
    )
    shutil.rmtree(check_dir, ignore_errors=True)
    ok = False
    try:
        proc = subprocess.run(
            ["bash", "infra/image/build.sh", "--binary", "target/debug/sluice", IMAGE_TAG],
            cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
        )
        output = proc.stdout + proc.stderr
        require(
            proc.returncode == 0,
            f"build.sh exited {proc.returncode}: " + " | ".join(output.strip().splitlines()[-12:]),
        )
        linkage = re.search(r"^build\.sh: .* is (statically|dynamically) linked", output, re.M)
        require(linkage, "build.sh did not say whether the binary is static or dynamic")
        require(archive.is_file(), f"build.sh made no {archive.relative_to(ROOT)}")

        env = podman_env(check_dir)
        loaded = podman(env, "load", "--input", str(archive))
        require(loaded.returncode == 0, f"podman load: {(loaded.stdout + loaded.stderr).strip()[-400:]}")
        require(IMAGE_NAME in loaded.stdout, f"podman load did not load {IMAGE_NAME}: {loaded.stdout.strip()}")
        inspected = podman(env, "image", "inspect", IMAGE_NAME)
        require(inspected.returncode == 0, f"podman image inspect: {inspected.stderr.strip()}")
        config = json.loads(inspected.stdout)[0]["Config"]
        user = config.get("User", "")
        require(user.split(":")[0] == str(IMAGE_UID), f"the image runs as {user!r}, want uid {IMAGE_UID}")
        require(config.get("Entrypoint") == ["/sluice"], f"entrypoint {config.get('Entrypoint')}, want [\"/sluice\"]")
        ran = podman(env, "run", "--rm", "--network=none", "--runtime", "runc", IMAGE_NAME, "--version")
        require(ran.returncode == 0, f"podman run {IMAGE_NAME} --version exited {ran.returncode}: {(ran.stdout + ran.stderr).strip()[-400:]}")
        require(ran.stdout.strip() == f"sluice {version}", f"--version said {ran.stdout.strip()!r}, want 'sluice {version}'")

        entries = archive_entries(archive)
        for path, mode, uid in (("sluice", 0o755, 0), ("tmp", 0o1777, 0), ("var/lib/sluice", 0o700, IMAGE_UID)):
            entry = entries.get(path)
            require(entry is not None, f"the image has no /{path}")
            require(
                (entry.mode & 0o7777, entry.uid) == (mode, uid),
                f"/{path} is {entry.mode & 0o7777:o} uid {entry.uid}, want {mode:o} uid {uid}",
            )
        ok = True
        return (
            f"build.sh --binary target/debug/sluice ({linkage.group(1)} linked), {archive.stat().st_size >> 20} MiB archive "
            f"loaded anew: `--version` says sluice {version}, user {user}, entrypoint /sluice, "
            f"/tmp 1777, /var/lib/sluice 0700 uid {IMAGE_UID}; {time.monotonic() - started:.0f}s"
        )
    finally:
        # The image out of both podmans, the check's own storage, and the
        # archive unless the check failed (kept to look at).
        if check_dir.exists():
            podman(podman_env(check_dir), "rmi", "--force", IMAGE_NAME)
            shutil.rmtree(check_dir)
        if (IMAGE_DIR / "podman" / "storage.conf").exists():
            podman(build_env, "rmi", "--force", IMAGE_NAME)
        if ok:
            archive.unlink(missing_ok=True)


def check_plain_manifests() -> str:
    files = sorted(p for p in (INFRA / "kubernetes").rglob("*") if p.suffix in (".yaml", ".yml"))
    require(files, "infra/kubernetes has no manifest")
    docs = []
    for path in files:
        docs += [d for d in yaml.load_all(path.read_text(), Loader=StrictLoader) if d]
    passed, problems = kubernetes_validate(yaml.safe_dump_all(docs, sort_keys=False))
    require(not problems, "; ".join(problems[:5]))
    require(passed == len(docs), f"kubernetes-validate passed {passed} of {len(docs)} documents")
    return f"{len(docs)} documents in {len(files)} files"


# Main ------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hcl2-dir", type=Path, required=True, help="where python-hcl2 was installed (pip --target)")
    args = parser.parse_args()

    runner = Runner()
    for set_name, path in VALUE_SETS.items():
        runner.run(f"helm lint ({set_name})", helm_lint, path)

    rendered_sets: dict[str, dict] = {}
    for set_name, path in VALUE_SETS.items():
        rendered_sets[set_name] = {}
        runner.run(f"render + kubernetes-validate ({set_name})", validate_rendered, path, rendered_sets[set_name])
    runner.run("ServiceMonitor structure (values-all)", check_servicemonitors, rendered_sets["values-all"])
    runner.run("chart invariants", check_chart_invariants, rendered_sets)
    runner.run("checkov -d infra/", checkov_infra)
    runner.run("checkov kubernetes (rendered chart)", checkov_rendered, rendered_sets)
    runner.run("terraform resources (python-hcl2)", check_terraform, args.hcl2_dir)
    terraform = shutil.which("terraform")
    if terraform:
        runner.run("terraform fmt -check", check_terraform_fmt, terraform)
    else:
        runner.skip("terraform fmt -check", "no terraform binary on PATH")
    runner.run("dashboard metrics", check_dashboard)
    runner.run("HPA metric wiring", check_hpa_wiring)
    runner.run("container image files", check_image)
    runner.run("container image builds and runs (podman)", check_image_build)
    if (INFRA / "kubernetes").exists():
        runner.run("infra/kubernetes manifests", check_plain_manifests)

    print(f"{runner.passed} passed, {runner.failed} failed", flush=True)
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
