# sluice-lambda: one artifact, two functions. `produce` takes records over a
# Function URL signed with SigV4 (AWS_IAM); `compactor` runs compaction and
# archiving jobs every 5 minutes. SLUICE_LAMBDA_MODE tells the binary which.
# Both run in the VPC, since etcd is reachable only there.

resource "aws_cloudwatch_log_group" "produce" {
  name              = "/aws/lambda/${var.name}-produce"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.sluice.arn
}

resource "aws_cloudwatch_log_group" "compactor" {
  name              = "/aws/lambda/${var.name}-compactor"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.sluice.arn
}

resource "aws_security_group" "lambda" {
  name        = "${var.name}-lambda"
  description = "sluice-lambda functions: no ingress; egress to S3 and etcd"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "lambda_https" {
  security_group_id = aws_security_group.lambda.id
  description       = "S3 and AWS APIs over HTTPS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "lambda_etcd" {
  security_group_id = aws_security_group.lambda.id
  description       = "etcd client port inside the VPC"
  ip_protocol       = "tcp"
  from_port         = var.etcd_port
  to_port           = var.etcd_port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_lambda_function" "produce" {
  #checkov:skip=CKV_AWS_116:the Function URL invokes synchronously and the caller gets the error; a dead-letter queue only serves asynchronous invocations
  #checkov:skip=CKV_AWS_272:the zip is built by CI from this repository; code signing needs an AWS Signer profile per deployment, which this module does not assume
  function_name                  = "${var.name}-produce"
  description                    = "sluice-lambda: produce records over a Function URL"
  role                           = aws_iam_role.lambda.arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.lambda_architecture]
  filename                       = var.lambda_zip_path
  source_code_hash               = filebase64sha256(var.lambda_zip_path)
  memory_size                    = var.produce_memory_mb
  timeout                        = var.produce_timeout_seconds
  reserved_concurrent_executions = var.produce_reserved_concurrency
  kms_key_arn                    = aws_kms_key.sluice.arn

  environment {
    variables = merge(local.sluice_env, { SLUICE_LAMBDA_MODE = "produce", SLUICE_DATA_DIR = "/tmp/sluice" })
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.lambda.id]
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.produce.name
  }

  depends_on = [aws_iam_role_policy.lambda_logs, aws_iam_role_policy_attachment.lambda_eni]
}

# Callers sign requests with SigV4 and need lambda:InvokeFunctionUrl on the
# function (granted to them, not here).
resource "aws_lambda_function_url" "produce" {
  function_name      = aws_lambda_function.produce.function_name
  authorization_type = "AWS_IAM"
}

resource "aws_lambda_function" "compactor" {
  #checkov:skip=CKV_AWS_116:a failed scheduled run is retried by Lambda's asynchronous retries and the next run 5 minutes later takes the same jobs; a dead-letter queue would hold nothing to act on
  #checkov:skip=CKV_AWS_272:the zip is built by CI from this repository; code signing needs an AWS Signer profile per deployment, which this module does not assume
  # Reserved concurrency 1: one run at a time is enough for a 5-minute
  # schedule; jobs are claimed on etcd leases, so a second would find little.
  function_name                  = "${var.name}-compactor"
  description                    = "sluice-lambda: compaction and Parquet archiving jobs"
  role                           = aws_iam_role.lambda.arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.lambda_architecture]
  filename                       = var.lambda_zip_path
  source_code_hash               = filebase64sha256(var.lambda_zip_path)
  memory_size                    = var.compactor_memory_mb
  timeout                        = var.compactor_timeout_seconds
  reserved_concurrent_executions = 1
  kms_key_arn                    = aws_kms_key.sluice.arn

  environment {
    variables = merge(local.sluice_env, var.node_settings, {
      # the compactor stands for controller: it plans with the nodes' settings
      SLUICE_LAMBDA_MODE = "compactor"
      SLUICE_DATA_DIR    = "/tmp/sluice"
    })
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.lambda.id]
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.compactor.name
  }

  depends_on = [aws_iam_role_policy.lambda_logs, aws_iam_role_policy_attachment.lambda_eni]
}

resource "aws_cloudwatch_event_rule" "compactor" {
  name                = "${var.name}-compactor"
  description         = "Runs the sluice compactor function"
  schedule_expression = var.compactor_schedule
}

resource "aws_cloudwatch_event_target" "compactor" {
  rule      = aws_cloudwatch_event_rule.compactor.name
  target_id = "compactor"
  arn       = aws_lambda_function.compactor.arn

  retry_policy {
    maximum_retry_attempts       = 1
    maximum_event_age_in_seconds = 240
  }
}

resource "aws_lambda_permission" "compactor_schedule" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.compactor.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.compactor.arn
}
