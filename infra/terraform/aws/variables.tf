variable "region" {
  description = "AWS region of every resource."
  type        = string
}

variable "name" {
  description = "Prefix of resource names (ECS cluster, functions, roles, log groups)."
  type        = string
  default     = "sluice"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: lowercase letters, digits and dashes, 2-31 characters, starting with a letter."
  }
}

variable "cluster_name" {
  description = "sluice --cluster: the metadata namespace in etcd. Nodes and functions of one cluster share it."
  type        = string
  default     = "sluice"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# Storage

variable "bucket_name" {
  description = "Name of the S3 bucket made for sluice's segments, indexes and Parquet archive."
  type        = string
}

variable "store_prefix" {
  description = "Key prefix of this cluster in the bucket (no leading or trailing slash). IAM grants object access under it only."
  type        = string
  default     = "sluice"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.store_prefix))
    error_message = "store_prefix: path segments separated by single slashes, none at either end."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the KMS key of the bucket, logs and function settings is deleted."
  type        = number
  default     = 30
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups of nodes and functions."
  type        = number
  default     = 365
}

# Metadata

variable "etcd_endpoints" {
  description = <<-EOT
    Client URLs of the etcd cluster that holds sluice's metadata
    (["http://10.0.1.10:2379", ...]). etcd is not managed here: run it
    yourself, e.g. the Helm chart's 3-member StatefulSet on EKS
    (infra/helm/sluice, etcd.enabled) or 3 EC2 instances across zones, in
    subnets the nodes and functions can reach on port 2379.
  EOT
  type        = list(string)

  validation {
    condition     = length(var.etcd_endpoints) > 0 && alltrue([for e in var.etcd_endpoints : can(regex("^https?://", e))])
    error_message = "etcd_endpoints: at least one http:// or https:// URL."
  }
}

variable "etcd_port" {
  description = "Client port of etcd, opened in the nodes' and functions' egress rules."
  type        = number
  default     = 2379
}

# Network

variable "vpc_id" {
  description = "VPC of the nodes, the functions and the load balancer."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (one per zone) of the ECS tasks, the Lambda functions and the internal NLB."
  type        = list(string)
}

variable "client_cidr_blocks" {
  description = "Networks of Kafka and HTTP clients, allowed to ports 9092 and 8080 of the NLB and the nodes. Clients connect to the nodes' own IPs after the bootstrap, so they must route to these subnets."
  type        = list(string)
}

variable "nlb_deletion_protection" {
  description = "Refuse to delete the NLB (turn off before `terraform destroy`)."
  type        = bool
  default     = true
}

# ECS nodes

variable "image" {
  description = "Container image of sluice (FROM scratch, /sluice, uid 65532; see infra/image)."
  type        = string
}

variable "init_image" {
  description = "Image with a POSIX shell and wget (busybox) for the init container that writes each task's advertised address."
  type        = string
  default     = "public.ecr.aws/docker/library/busybox:1.36"
}

variable "ecr_repository_arns" {
  description = "ECR repositories the task execution role may pull from (the images above, when they are in ECR)."
  type        = list(string)
  default     = []
}

variable "cpu_architecture" {
  description = "CPU architecture of the image: X86_64 or ARM64."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture: X86_64 or ARM64."
  }
}

variable "node_cpu" {
  description = "CPU units of one node task (2048 = 2 vCPU; a 2-core node measured ~145 MB/s of produce)."
  type        = number
  default     = 2048
}

variable "node_memory" {
  description = "Memory of one node task, MiB."
  type        = number
  default     = 4096
}

variable "node_settings" {
  description = "More sluice settings of the nodes as SLUICE_* variables (e.g. { SLUICE_FLUSH_INTERVAL = \"100ms\" })."
  type        = map(string)
  default = {
    SLUICE_FLUSH_INTERVAL     = "250ms"
    SLUICE_SEGMENT_MAX_BYTES  = "8MiB"
    SLUICE_CACHE_MEMORY_BYTES = "512MiB"
    SLUICE_CACHE_DISK_BYTES   = "16GiB"
  }
}

variable "ephemeral_storage_gib" {
  description = "Fargate ephemeral storage of a node task, GiB (21-200); holds the disk cache."
  type        = number
  default     = 30
}

variable "node_min_count" {
  description = "Fewest node tasks."
  type        = number
  default     = 3
}

variable "node_max_count" {
  description = "Most node tasks."
  type        = number
  default     = 12
}

variable "cpu_target_percent" {
  description = "Target average CPU utilization of the node tasks."
  type        = number
  default     = 70
}

variable "network_bytes_target_per_task" {
  description = <<-EOT
    Target network bytes/s (received + sent) per node task, from Container
    Insights. A producing node moves each byte twice (in from the client, out
    to S3), so 100 MB/s is about the 50 MB/s of client bytes per pod the
    Helm chart's HPA targets: a third of a 2-core node's ~145 MB/s.
  EOT
  type        = number
  default     = 100000000
}

# Lambda

variable "lambda_zip_path" {
  description = "Path of the sluice-lambda deployment package (a zip holding the `bootstrap` binary)."
  type        = string
}

variable "lambda_architecture" {
  description = "Architecture the sluice-lambda binary was built for: arm64 or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture: arm64 or x86_64."
  }
}

variable "produce_reserved_concurrency" {
  description = "Reserved concurrency of the produce function: its most concurrent invocations, which bounds its etcd and S3 load."
  type        = number
  default     = 20
}

variable "produce_memory_mb" {
  description = "Memory of the produce function, MB (CPU grows with it)."
  type        = number
  default     = 1024
}

variable "produce_timeout_seconds" {
  description = "Time limit of one produce invocation."
  type        = number
  default     = 30
}

variable "compactor_schedule" {
  description = "EventBridge schedule of the compactor function."
  type        = string
  default     = "rate(5 minutes)"
}

variable "compactor_memory_mb" {
  description = "Memory of the compactor function, MB."
  type        = number
  default     = 2048
}

variable "compactor_timeout_seconds" {
  description = "Time limit of one compactor run; below the schedule's period so runs rarely overlap (jobs are claimed on etcd leases, so an overlap is safe)."
  type        = number
  default     = 270
}
