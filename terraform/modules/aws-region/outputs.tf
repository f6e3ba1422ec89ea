output "region" {
  description = "The region of this stack."
  value       = local.region
}

output "url" {
  description = "The registry's regional URL (the function URL), e.g. https://<id>.lambda-url.<region>.on.aws"
  value       = trimsuffix(aws_lambda_function_url.this.function_url, "/")
}

output "host" {
  description = "Host name of the function URL, what CloudFront uses as this region's origin and `docker login` takes."
  value       = trimsuffix(trimprefix(aws_lambda_function_url.this.function_url, "https://"), "/")
}

output "bucket_name" {
  description = "This region's bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of this region's bucket."
  value       = aws_s3_bucket.this.arn
}

output "kms_key_arn" {
  description = "ARN of this region's KMS key (bucket, secrets, logs)."
  value       = aws_kms_key.this.arn
}

output "home" {
  description = "The home region's bucket as this region's function uses it; pass the home region's to the other regions' `home`."
  value       = local.home
}

output "function_name" {
  description = "Name of the function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the function."
  value       = aws_lambda_function.this.arn
}

output "role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.function.arn
}

output "log_group_name" {
  description = "The function's log group (request and audit log)."
  value       = aws_cloudwatch_log_group.function.name
}

output "upload_key_secret_arn" {
  description = "ARN of the secret holding the upload-signing key."
  value       = aws_secretsmanager_secret.upload_key.arn
}

output "auth_config_secret_name" {
  description = "Name of the auth config secret the function reads (null: no token auth)."
  value       = local.auth_config_secret_name
}

output "auth_config_secret_arn" {
  description = "ARN of the auth config secret, where this module created it (home region)."
  value       = var.create_auth_config_secret ? aws_secretsmanager_secret.auth_config[0].arn : null
}
