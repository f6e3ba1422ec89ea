terraform {
  # 1.11: write-only arguments (the upload key goes to Secrets Manager without entering the state).
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.47.0"
    }
  }
}
