# sluice on AWS: the S3 bucket of the log, least-privilege IAM, the Lambda
# producer and compactor, and an ECS Fargate service of nodes behind an
# internal NLB. The VPC, its subnets and etcd are inputs, not made here.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ "app" = "sluice", "sluice-cluster" = var.cluster_name }, var.tags)
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # s3://bucket/prefix, the --store of every node and function.
  store_url = "s3://${aws_s3_bucket.data.bucket}/${var.store_prefix}"

  # The one setting set every process shares.
  sluice_env = {
    SLUICE_STORE   = local.store_url
    SLUICE_ETCD    = join(",", var.etcd_endpoints)
    SLUICE_CLUSTER = var.cluster_name
  }
}
