terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.47.0"
    }
  }
}

# One provider per region; CloudFront and its certificate are managed from us-east-1.
provider "aws" {
  alias  = "home"
  region = var.regions.home
}

provider "aws" {
  alias  = "second"
  region = var.regions.second
}

provider "aws" {
  alias  = "third"
  region = var.regions.third
}

provider "aws" {
  alias  = "global"
  region = "us-east-1"
}
