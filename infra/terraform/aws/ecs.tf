# sluice nodes (roles ingest,fetch) as an ECS Fargate service behind an
# internal NLB (Kafka 9092, HTTP 8080). Compaction runs in the compactor
# Lambda function, so the nodes serve clients only.
#
# Kafka clients bootstrap through the NLB, then connect to each node's own
# address from Metadata: a node must announce its task IP. ECS has no
# downward API and the image no shell, so an init container reads the IP
# from the task metadata endpoint and writes it into a sluice config file
# (kafka.advertised_addr) that the node reads with SLUICE_CONFIG.

locals {
  node_container = "sluice"

  node_env = merge(local.sluice_env, var.node_settings, {
    SLUICE_ROLES      = "ingest,fetch"
    SLUICE_HTTP_ADDR  = "0.0.0.0:8080"
    SLUICE_KAFKA_ADDR = "0.0.0.0:9092"
    SLUICE_DATA_DIR   = "/var/lib/sluice"
    SLUICE_CONFIG     = "/run/sluice/sluice.toml"
    AWS_REGION        = var.region
  })

  # busybox sh; runs as root only to hand the empty volumes to uid 65532.
  advertise_script = <<-EOT
    set -eu
    meta=$(wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4")
    ip=$(printf '%s' "$meta" | sed -n 's/.*"IPv4Addresses": *\[ *"\([0-9.]*\)".*/\1/p' | head -n 1)
    test -n "$ip"
    printf '[kafka]\nadvertised_addr = "%s:9092"\n' "$ip" > /run/sluice/sluice.toml
    chmod 0644 /run/sluice/sluice.toml
    chown 65532:65532 /var/lib/sluice /tmp-sluice
  EOT

  # Docker's default capabilities less CHOWN.
  capabilities_but_chown = [
    "AUDIT_WRITE", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
  ]

  log_options = {
    awslogs-group         = aws_cloudwatch_log_group.node.name
    awslogs-region        = var.region
    awslogs-stream-prefix = "node"
  }
}

resource "aws_cloudwatch_log_group" "node" {
  name              = "/ecs/${var.name}-node"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.sluice.arn
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  # Container Insights also publishes the per-task network metrics that the
  # second scaling policy tracks.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_task_definition" "node" {
  family                   = "${var.name}-node"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.node_cpu
  memory                   = var.node_memory
  execution_role_arn       = aws_iam_role.node_execution.arn
  task_role_arn            = aws_iam_role.node_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  # Task-local volumes: the data directory (disk cache), the generated
  # config and /tmp. The root filesystems stay read-only.
  volume {
    name = "data"
  }

  volume {
    name = "runtime"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = "advertise"
      image                  = var.init_image
      essential              = false
      user                   = "0"
      readonlyRootFilesystem = true
      entryPoint             = ["sh", "-c"]
      command                = [local.advertise_script]
      # Fargate can add no capability back after dropping ALL: keep CHOWN,
      # the one the script needs, by dropping the others by name.
      linuxParameters = {
        capabilities = { drop = local.capabilities_but_chown }
      }
      mountPoints = [
        { sourceVolume = "data", containerPath = "/var/lib/sluice", readOnly = false },
        { sourceVolume = "runtime", containerPath = "/run/sluice", readOnly = false },
        { sourceVolume = "tmp", containerPath = "/tmp-sluice", readOnly = false },
      ]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    },
    {
      name                   = local.node_container
      image                  = var.image
      essential              = true
      command                = ["serve"]
      user                   = "65532:65532"
      readonlyRootFilesystem = true
      # On SIGTERM a node flushes what it accepted and commits offsets.
      stopTimeout = 60
      environment = [for k in sort(keys(local.node_env)) : { name = k, value = local.node_env[k] }]
      portMappings = [
        { name = "kafka", containerPort = 9092, protocol = "tcp" },
        { name = "http", containerPort = 8080, protocol = "tcp" },
      ]
      mountPoints = [
        { sourceVolume = "data", containerPath = "/var/lib/sluice", readOnly = false },
        { sourceVolume = "runtime", containerPath = "/run/sluice", readOnly = true },
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      ]
      dependsOn = [{ containerName = "advertise", condition = "SUCCESS" }]
      linuxParameters = {
        capabilities = { drop = ["ALL"] }
      }
      ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      # The image has no shell or curl: the binary asks its own HTTP API.
      # With --authorizer, give it a token (SLUICE_TOKEN_FILE) or drop this
      # check and rely on the NLB's /health/ready check.
      healthCheck = {
        command     = ["CMD", "/sluice", "topic", "list", "--url", "http://127.0.0.1:8080"]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    },
  ])
}

# Security groups: clients reach the NLB and the nodes on 9092 and 8080; the
# NLB reaches the nodes; nodes reach each other on 8080 (peer block fetches),
# S3 over HTTPS and etcd.

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "sluice NLB: Kafka and HTTP from clients"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "nodes" {
  name        = "${var.name}-nodes"
  description = "sluice node tasks"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "nlb_from_clients" {
  for_each = { for pair in setproduct(var.client_cidr_blocks, [9092, 8080]) : "${pair[0]}-${pair[1]}" => pair }

  security_group_id = aws_security_group.nlb.id
  description       = "clients to the NLB on ${each.value[1]}"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_nodes" {
  for_each = toset(["9092", "8080"])

  security_group_id            = aws_security_group.nlb.id
  description                  = "NLB to the nodes on ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_from_nlb" {
  for_each = toset(["9092", "8080"])

  security_group_id            = aws_security_group.nodes.id
  description                  = "NLB traffic and health checks on ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_from_clients" {
  for_each = { for pair in setproduct(var.client_cidr_blocks, [9092, 8080]) : "${pair[0]}-${pair[1]}" => pair }

  security_group_id = aws_security_group.nodes.id
  description       = "clients to a node's own address on ${each.value[1]}"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_ingress_rule" "nodes_from_peers" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "peer block fetches between nodes"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_to_peers" {
  security_group_id            = aws_security_group.nodes.id
  description                  = "peer block fetches between nodes"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.nodes.id
}

resource "aws_vpc_security_group_egress_rule" "nodes_https" {
  security_group_id = aws_security_group.nodes.id
  description       = "S3, ECR and the other AWS APIs over HTTPS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "nodes_etcd" {
  security_group_id = aws_security_group.nodes.id
  description       = "etcd client port inside the VPC"
  ip_protocol       = "tcp"
  from_port         = var.etcd_port
  to_port           = var.etcd_port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_lb" "nodes" {
  #checkov:skip=CKV_AWS_91:an NLB writes access logs only for TLS listeners; these listeners are TCP (Kafka and HTTP pass through to the nodes)
  name                             = "${var.name}-nodes"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.nlb_deletion_protection
}

# Both target groups check /health/ready, which fails while a node drains.
resource "aws_lb_target_group" "kafka" {
  name                 = "${var.name}-kafka"
  port                 = 9092
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 15

  health_check {
    protocol            = "HTTP"
    port                = "8080"
    path                = "/health/ready"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group" "http" {
  name                 = "${var.name}-http"
  port                 = 8080
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 15

  health_check {
    protocol            = "HTTP"
    port                = "8080"
    path                = "/health/ready"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "kafka" {
  load_balancer_arn = aws_lb.nodes.arn
  port              = 9092
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.kafka.arn
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.nodes.arn
  port              = 8080
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.http.arn
  }
}

resource "aws_ecs_service" "nodes" {
  name                               = "${var.name}-nodes"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.node.arn
  desired_count                      = var.node_min_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true
  health_check_grace_period_seconds  = 60
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.nodes.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.kafka.arn
    container_name   = local.node_container
    container_port   = 9092
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.http.arn
    container_name   = local.node_container
    container_port   = 8080
  }

  # Application Auto Scaling owns the task count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.kafka, aws_lb_listener.http, aws_iam_role_policy_attachment.node_task_store]
}

# Autoscaling: two target-tracking policies; the service scales out when
# either is above its target and in only when both are below.
#   cpu: average CPU of the tasks (ECS's own metric).
#   network: average bytes/s received + sent per task (Container Insights),
#     the nearest AWS-side measure of the client bytes per second that the
#     Helm chart's HPA tracks from sluice's own Prometheus counters.

resource "aws_appautoscaling_target" "nodes" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.nodes.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.node_min_count
  max_capacity       = var.node_max_count
}

resource "aws_appautoscaling_policy" "nodes_cpu" {
  name               = "${var.name}-nodes-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.nodes.service_namespace
  resource_id        = aws_appautoscaling_target.nodes.resource_id
  scalable_dimension = aws_appautoscaling_target.nodes.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "nodes_network" {
  name               = "${var.name}-nodes-network"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.nodes.service_namespace
  resource_id        = aws_appautoscaling_target.nodes.resource_id
  scalable_dimension = aws_appautoscaling_target.nodes.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.network_bytes_target_per_task
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    customized_metric_specification {
      metrics {
        id          = "rx"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "NetworkRxBytes"

            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }

            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.nodes.name
            }
          }
        }
      }

      metrics {
        id          = "tx"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "NetworkTxBytes"

            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }

            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.nodes.name
            }
          }
        }
      }

      metrics {
        id          = "bytes"
        expression  = "rx + tx"
        label       = "network bytes/s per task"
        return_data = true
      }
    }
  }
}
