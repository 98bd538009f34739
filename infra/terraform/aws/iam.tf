# Least privilege: nodes and functions may read, write and delete objects
# under the store prefix and list that prefix, nothing else in S3; they use
# the KMS key only through S3 and write only their own log groups.

data "aws_iam_policy_document" "store_access" {
  statement {
    sid       = "ObjectsUnderPrefix"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.data.arn}/${var.store_prefix}/*"]
  }

  statement {
    sid       = "ListPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.store_prefix, "${var.store_prefix}/*"]
    }
  }

  statement {
    sid       = "KeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.sluice.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "store_access" {
  name        = "${var.name}-store-access"
  description = "sluice: objects under s3://${var.bucket_name}/${var.store_prefix}/ and its KMS key through S3"
  policy      = data.aws_iam_policy_document.store_access.json
}

# ECS: the task role is what sluice runs as.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "node_task" {
  name               = "${var.name}-node-task"
  description        = "sluice nodes on ECS"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "node_task_store" {
  role       = aws_iam_role.node_task.name
  policy_arn = aws_iam_policy.store_access.arn
}

# ECS: the execution role pulls the images and ships the containers' logs.

resource "aws_iam_role" "node_execution" {
  name               = "${var.name}-node-execution"
  description        = "ECS agent for sluice node tasks: image pulls and logs"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "node_execution" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.node.arn}:*"]
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []

    content {
      sid       = "PullImages"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = var.ecr_repository_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.ecr_repository_arns) > 0 ? [1] : []

    content {
      # GetAuthorizationToken has no resource-level permissions.
      sid       = "RegistryToken"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "node_execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.node_execution.id
  policy = data.aws_iam_policy_document.node_execution.json
}

# Lambda: one role for both functions (same artifact, same rights).

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "lambda" {
  name               = "${var.name}-lambda"
  description        = "sluice-lambda produce and compactor functions"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy_attachment" "lambda_store" {
  role       = aws_iam_role.lambda.name
  policy_arn = aws_iam_policy.store_access.arn
}

# The functions run in the VPC to reach etcd: they need their ENIs.
resource "aws_iam_role_policy_attachment" "lambda_eni" {
  role       = aws_iam_role.lambda.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaENIManagementAccess"
}

data "aws_iam_policy_document" "lambda_logs" {
  statement {
    sid     = "OwnLogGroups"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      "${aws_cloudwatch_log_group.produce.arn}:*",
      "${aws_cloudwatch_log_group.compactor.arn}:*",
    ]
  }

  statement {
    sid       = "SettingsKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.sluice.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["lambda.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "lambda_logs" {
  name   = "logs-key-tracing"
  role   = aws_iam_role.lambda.id
  policy = data.aws_iam_policy_document.lambda_logs.json
}
