# Every regional bucket replicates what is durable (blobs/ pointers, data/ content and the home
# region's meta/) to every other one. Replicas are not replicated again, so the mesh has no
# loops; upload staging (uploads/) stays where it was written. Each bucket's configuration is
# made in that bucket's region through the resource's `region` argument.

locals {
  replicated_prefixes = ["blobs/", "data/", "meta/"]

  # One rule per destination and prefix; S3 wants a distinct priority for each.
  replication_rules = {
    for src, s in var.regions : src => flatten([
      for di, dst in sort([for d in keys(var.regions) : d if d != src]) : [
        for pi, prefix in local.replicated_prefixes : {
          id          = "${trimsuffix(prefix, "/")}-to-${dst}"
          priority    = di * length(local.replicated_prefixes) + pi
          prefix      = prefix
          bucket_arn  = var.regions[dst].bucket_arn
          kms_key_arn = var.regions[dst].kms_key_arn
        }
      ]
    ])
  }

  all_bucket_arns = [for r in var.regions : r.bucket_arn]
  replicated_object_arns = flatten([
    for r in var.regions : [for p in local.replicated_prefixes : "${r.bucket_arn}/${p}*"]
  ])
}

data "aws_iam_policy_document" "replication_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "replication" {
  name               = "${var.name}-replication"
  description        = "S3 replication between Berth's regional buckets"
  assume_role_policy = data.aws_iam_policy_document.replication_assume.json
  tags               = local.tags
}

# Every bucket is a source and a destination; the role may only read replicated prefixes and
# write replicas, with the buckets' own keys.
data "aws_iam_policy_document" "replication" {
  statement {
    sid       = "SourceBuckets"
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = local.all_bucket_arns
  }

  statement {
    sid       = "SourceObjects"
    actions   = ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"]
    resources = local.replicated_object_arns
  }

  statement {
    sid       = "Replicas"
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = local.replicated_object_arns
  }

  statement {
    sid       = "Keys"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [for r in var.regions : r.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "replication" {
  name   = "berth-replication"
  role   = aws_iam_role.replication.id
  policy = data.aws_iam_policy_document.replication.json
}

resource "aws_s3_bucket_replication_configuration" "this" {
  for_each = var.regions
  region   = each.value.region
  bucket   = each.value.bucket_name
  role     = aws_iam_role.replication.arn

  dynamic "rule" {
    for_each = local.replication_rules[each.key]
    content {
      id       = rule.value.id
      priority = rule.value.priority
      status   = "Enabled"

      filter {
        prefix = rule.value.prefix
      }

      # Deletions (a tag removed, garbage collected content) reach the copies too.
      delete_marker_replication {
        status = "Enabled"
      }

      source_selection_criteria {
        sse_kms_encrypted_objects {
          status = "Enabled"
        }
      }

      destination {
        bucket        = rule.value.bucket_arn
        storage_class = "STANDARD"
        encryption_configuration {
          replica_kms_key_id = rule.value.kms_key_arn
        }

        dynamic "metrics" {
          for_each = var.replication_time_control ? [1] : []
          content {
            status = "Enabled"
            event_threshold {
              minutes = 15
            }
          }
        }

        dynamic "replication_time" {
          for_each = var.replication_time_control ? [1] : []
          content {
            status = "Enabled"
            time {
              minutes = 15
            }
          }
        }
      }
    }
  }

  depends_on = [aws_iam_role_policy.replication]
}
