# The bucket of sluice's data: segments, indexes and the Parquet archive,
# under var.store_prefix. sluice writes every object once (conditional PUT)
# and its controller deletes the ones nothing references after a grace period.

resource "aws_kms_key" "sluice" {
  description             = "${var.name}: S3 objects, CloudWatch logs and function settings"
  deletion_window_in_days = var.kms_deletion_window_days
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "sluice" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.sluice.key_id
}

# The account administers the key (IAM policies then grant its use); the
# CloudWatch Logs service encrypts this deployment's log groups with it.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:a key policy's "*" resource is the key itself; the account root must administer it or the key becomes unmanageable
  #checkov:skip=CKV_AWS_111:a key policy's "*" resource is the key itself; write access is limited to the account and the Logs service for this deployment's log groups
  #checkov:skip=CKV_AWS_356:a key policy's "*" resource is the key itself, not every resource
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsEncrypts"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*${var.name}*"]
    }
  }
}

resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_18:server access logs of a bucket taking a PUT per node every flush interval cost more than the data; enable CloudTrail data events on the prefix when an audit needs them
  #checkov:skip=CKV_AWS_144:cross-region replication doubles storage and PUT cost; S3 already stores objects across zones and disaster recovery is a per-deployment choice
  #checkov:skip=CKV_AWS_21:versioning is off: every object is written once with a conditional PUT and deleted only by sluice's GC once unreferenced, so old versions would only keep garbage
  #checkov:skip=CKV2_AWS_62:nothing consumes bucket event notifications; sluice learns of new objects from etcd
  bucket = var.bucket_name
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket = aws_s3_bucket.data.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# SSE-KMS with a bucket key: one KMS call per bucket key lifetime instead of
# one per object, which matters at a PUT per flush interval per node.
resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.sluice.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id

  # A node killed mid-upload leaves the parts of a multipart upload behind;
  # they are billed until aborted.
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

# Refuse plain-HTTP access.
resource "aws_s3_bucket_policy" "data" {
  bucket = aws_s3_bucket.data.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.data]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}
