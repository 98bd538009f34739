output "store_url" {
  description = "The --store of every sluice process of this deployment."
  value       = local.store_url
}

output "bucket_arn" {
  description = "ARN of the data bucket."
  value       = aws_s3_bucket.data.arn
}

output "kms_key_arn" {
  description = "KMS key of the bucket, the log groups and the function settings."
  value       = aws_kms_key.sluice.arn
}

output "store_access_policy_arn" {
  description = "IAM policy of S3 access under the store prefix; attach it to an EKS IRSA role for the Helm chart (serviceAccount.awsRoleArn)."
  value       = aws_iam_policy.store_access.arn
}

output "nlb_dns_name" {
  description = "Kafka bootstrap (port 9092) and HTTP API (port 8080) of the ECS nodes."
  value       = aws_lb.nodes.dns_name
}

output "produce_function_url" {
  description = "Function URL of the produce function (requests signed with SigV4)."
  value       = aws_lambda_function_url.produce.function_url
}

output "compactor_function_name" {
  description = "Name of the scheduled compactor function."
  value       = aws_lambda_function.compactor.function_name
}

output "ecs_cluster_name" {
  description = "ECS cluster of the node service."
  value       = aws_ecs_cluster.this.name
}

output "ecs_service_name" {
  description = "ECS service of the nodes."
  value       = aws_ecs_service.nodes.name
}
