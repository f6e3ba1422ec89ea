#!/usr/bin/env python3
"""Static checks of terraform/, standing in for `terraform validate` and `plan`, which cannot
run here (no terraform binary can be installed on these machines):

  - every .tf file parses (python-hcl2);
  - every resource, data source and ephemeral resource uses only arguments and blocks its
    provider has at the pinned version, sets every required one and no read-only one
    (provider_schemas.json, see extract_schemas.py); module calls pass only declared variables
    and every required one;
  - the structure the deployment relies on: each region gets a bucket, function, URL and role;
    the function gets every setting the Lambda runtime reads; IAM names only this stack's ARNs
    and no `*` action; CloudFront's behaviours follow docs/architecture.md's caching rules for real request paths; buckets
    expire only upload staging and replicate only durable prefixes; the examples wire the
    modules the way their READMEs say;
  - variables and outputs are typed and described, providers pinned, and the layout is what
    `terraform fmt` produces (indentation, `=` alignment, whitespace).

Run with python-hcl2 installed: `python3 terraform/tests/test_terraform.py` (terraform/tests/run.sh
sets that up and runs checkov too).
"""
import fnmatch
import json
import os
import re
import sys
import unittest
import zipfile

import hcl2

HERE = os.path.dirname(os.path.abspath(__file__))
TF = os.path.dirname(HERE)
ROOT = os.path.dirname(TF)
MODULES = os.path.join(TF, "modules")
EXAMPLES = os.path.join(TF, "examples")

META = {"__is_block__", "__comments__", "__inline_comments__", "__start_line__", "__end_line__"}
# Meta-arguments Terraform itself handles on resources, data sources and ephemeral resources.
RESOURCE_META = {"count", "for_each", "provider", "depends_on", "lifecycle", "connection", "provisioner"}


def read(path):
    with open(path) as f:
        return f.read()


SCHEMAS = json.loads(read(os.path.join(HERE, "provider_schemas.json")))


def tf_files(directory=TF):
    for dirpath, _, files in sorted(os.walk(directory)):
        for f in sorted(files):
            if f.endswith(".tf"):
                yield os.path.join(dirpath, f)


def unq(value):
    """A string literal without its quotes; other values as they are."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def is_block_list(value):
    return isinstance(value, list) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


class Config:
    """All .tf files of one directory (a module), merged the way Terraform sees them."""

    def __init__(self, directory):
        self.dir = directory
        self.resources, self.data, self.ephemeral = {}, {}, {}
        self.variables, self.outputs, self.modules, self.locals = {}, {}, {}, {}
        self.providers, self.terraform = [], []
        for path in sorted(os.listdir(directory)):
            if not path.endswith(".tf"):
                continue
            with open(os.path.join(directory, path)) as f:
                doc = hcl2.load(f)
            for kind, target in (("resource", self.resources), ("data", self.data), ("ephemeral", self.ephemeral)):
                for entry in doc.get(kind, []):
                    for typ, named in entry.items():
                        for name, body in named.items():
                            target[(unq(typ), unq(name))] = body
            for entry in doc.get("variable", []):
                for name, body in entry.items():
                    self.variables[unq(name)] = body
            for entry in doc.get("output", []):
                for name, body in entry.items():
                    self.outputs[unq(name)] = body
            for entry in doc.get("module", []):
                for name, body in entry.items():
                    self.modules[unq(name)] = body
            for entry in doc.get("locals", []):
                self.locals.update({k: v for k, v in entry.items() if k not in META})
            for entry in doc.get("provider", []):
                for name, body in entry.items():
                    self.providers.append((unq(name), body))
            self.terraform.extend(doc.get("terraform", []))

    def of_type(self, typ):
        return {name: body for (t, name), body in self.resources.items() if t == typ}

    def one(self, typ):
        found = self.of_type(typ)
        assert len(found) == 1, f"{self.dir}: expected one {typ}, found {sorted(found)}"
        return next(iter(found.values()))


def module(name):
    return Config(os.path.join(MODULES, name))


def example(name):
    return Config(os.path.join(EXAMPLES, name))


# --- schema conformance --------------------------------------------------------------------------


def check_body(body, schema, where, errors, top=False):
    """Collects into `errors` every argument of `body` the schema does not allow, every required
    one missing, and every read-only one set."""
    dynamic_names = set()
    for entry in body.get("dynamic", []):
        for label, dyn in entry.items():
            name = unq(label)
            dynamic_names.add(name)
            if name not in schema["blocks"]:
                errors.append(f"{where}: dynamic \"{name}\" is not a block of this type")
                continue
            for content in dyn.get("content", []):
                check_body(content, schema["blocks"][name]["block"], f"{where}.{name}", errors)
    for key, value in body.items():
        if key in META or key == "dynamic" or (top and key in RESOURCE_META):
            continue
        if key in schema["attributes"]:
            attr = schema["attributes"][key]
            if attr.get("computed") and not (attr.get("optional") or attr.get("required")):
                errors.append(f"{where}: {key} is read-only")
            if is_block_list(value) and value:
                errors.append(f"{where}: {key} is an attribute (`{key} = ...`), not a block")
            nested = attr.get("nested")
            if nested:
                elements = value if isinstance(value, list) else [value]
                for element in elements:
                    if isinstance(element, dict):
                        check_body(element, nested, f"{where}.{key}", errors)
        elif key in schema["blocks"]:
            if not is_block_list(value):
                errors.append(f"{where}: {key} is a block (`{key} {{ ... }}`), not an attribute")
                continue
            for element in value:
                check_body(element, schema["blocks"][key]["block"], f"{where}.{key}", errors)
        else:
            errors.append(f"{where}: unknown argument {key}")
    for key, attr in schema["attributes"].items():
        if attr.get("required") and key not in body:
            errors.append(f"{where}: required argument {key} is missing")
    for key, block in schema["blocks"].items():
        given = len(body.get(key, [])) if is_block_list(body.get(key, [])) else 0
        if key in dynamic_names:
            continue
        if given < block["min"]:
            errors.append(f"{where}: needs at least {block['min']} {key} block(s), has {given}")
        if block["max"] and given > block["max"]:
            errors.append(f"{where}: allows at most {block['max']} {key} block(s), has {given}")


def schema_errors(config):
    errors = []
    for kind, items in (("resource", config.resources), ("data", config.data), ("ephemeral", config.ephemeral)):
        for (typ, name), body in items.items():
            provider = typ.split("_")[0]
            schema = SCHEMAS.get(provider, {}).get(kind, {}).get(typ)
            if schema is None:
                errors.append(f"{kind} {typ}: no schema (run extract_schemas.py)")
                continue
            check_body(body, schema, f"{os.path.relpath(config.dir, TF)}: {kind} {typ}.{name}", errors, top=True)
    return errors


def module_call_errors(config):
    errors = []
    for name, call in config.modules.items():
        source = unq(call["source"])
        target = os.path.normpath(os.path.join(config.dir, source))
        if not os.path.isdir(target):
            errors.append(f"module {name}: source {source} does not exist")
            continue
        callee = Config(target)
        for key in call:
            if key in META or key in {"source", "providers", "count", "for_each", "depends_on", "version"}:
                continue
            if key not in callee.variables:
                errors.append(f"module {name}: {source} has no variable {key}")
        for var, body in callee.variables.items():
            if "default" not in body and var not in call:
                errors.append(f"module {name}: required variable {var} is not set")
    return errors


class SchemaTest(unittest.TestCase):
    def test_every_file_parses(self):
        files = list(tf_files())
        self.assertGreater(len(files), 15)
        for path in files:
            with open(path) as f:
                hcl2.load(f)

    def test_resources_follow_the_pinned_providers(self):
        errors = []
        for d in [os.path.join(MODULES, m) for m in sorted(os.listdir(MODULES))] + [
            os.path.join(EXAMPLES, e) for e in sorted(os.listdir(EXAMPLES))
        ]:
            errors += schema_errors(Config(d))
        self.assertEqual(errors, [])

    def test_module_calls_match_module_variables(self):
        errors = []
        for e in sorted(os.listdir(EXAMPLES)):
            errors += module_call_errors(Config(os.path.join(EXAMPLES, e)))
        self.assertEqual(errors, [])

    def test_the_checker_catches_mistakes(self):
        """The schema check must be able to fail: a misspelled, a missing, a read-only and a
        misplaced argument are each reported."""
        bad = hcl2.loads(
            'resource "aws_lambda_function_url" "x" {\n'
            "  function_name = \"f\"\n"
            "  auth_type     = \"NONE\"\n"  # the real argument is authorization_type
            "  function_url  = \"u\"\n"  # read-only
            "  cors = {}\n"  # a block, written as an attribute
            "}\n"
        )
        body = bad["resource"][0]['"aws_lambda_function_url"']['"x"']
        errors = []
        check_body(body, SCHEMAS["aws"]["resource"]["aws_lambda_function_url"], "x", errors, top=True)
        joined = "\n".join(errors)
        for expected in ("unknown argument auth_type", "required argument authorization_type", "function_url is read-only", "cors is a block"):
            self.assertIn(expected, joined)


# --- AWS: the regional stack ------------------------------------------------------------------------


class AwsRegionTest(unittest.TestCase):
    region = module("aws-region")

    def test_region_has_bucket_function_url_and_role_once(self):
        for typ in ("aws_s3_bucket", "aws_lambda_function", "aws_lambda_function_url", "aws_iam_role", "aws_cloudwatch_log_group"):
            body = self.region.one(typ)
            self.assertNotIn("count", body, typ)
            self.assertNotIn("for_each", body, typ)

    def test_bucket_is_versioned_encrypted_private_and_cleans_up_uploads(self):
        r = self.region
        self.assertEqual(unq(r.one("aws_s3_bucket_versioning")["versioning_configuration"][0]["status"]), "Enabled")
        sse = r.one("aws_s3_bucket_server_side_encryption_configuration")["rule"][0]
        default = sse["apply_server_side_encryption_by_default"][0]
        self.assertEqual(unq(default["sse_algorithm"]), "aws:kms")
        self.assertIn("aws_kms_key.this.arn", default["kms_master_key_id"])
        pab = r.one("aws_s3_bucket_public_access_block")
        for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
            self.assertIs(pab[flag], True, flag)
        rules = {unq(rule["id"]): rule for rule in r.one("aws_s3_bucket_lifecycle_configuration")["rule"]}
        abort = [x for x in rules.values() if "abort_incomplete_multipart_upload" in x]
        self.assertEqual(len(abort), 1)
        self.assertEqual(abort[0]["filter"][0].get("prefix"), None, "aborts must cover the whole bucket")
        expiring = {unq(x["filter"][0].get("prefix", '""')) for x in rules.values() if "expiration" in x and "days" in x["expiration"][0]}
        self.assertEqual(expiring, {"uploads/", "meta/uploads/"}, "only upload staging and sessions may expire")

    def test_lifecycle_never_touches_published_content(self):
        """The runtimes keep published content under data/ and blobs/, staging under uploads/:
        expiring uploads/ must not delete a blob (the Lambda runtime used to assemble data
        under uploads/<id>/data)."""
        # Both object stores upload through the core's engine (shared/src/parted.rs), which
        # names the assembled object and the staging prefix for R2 and S3 alike.
        parted = read(os.path.join(ROOT, "shared/src/parted.rs"))
        self.assertRegex(parted, r'pub fn data_key\(id: &str\) -> String \{\s*format!\("data/\{id\}"\)')
        self.assertRegex(parted, r'pub fn staging_prefix\(id: &str\) -> String \{\s*format!\("uploads/\{id\}/"\)')
        for adapter in ("lambda/src/s3/upload.rs", "edge/src/r2_upload.rs"):
            self.assertIn("berth_core::parted", read(os.path.join(ROOT, adapter)), adapter)
        blobs_rs = read(os.path.join(ROOT, "lambda/src/s3/blobs.rs"))
        self.assertIn('format!("blobs/{}"', blobs_rs)
        # Upload sessions are metadata records under uploads/, stored under meta/ by both.
        self.assertIn('pub(crate) const UPLOADS: &str = "uploads/";', read(os.path.join(ROOT, "shared/src/records.rs")))
        for meta in ("lambda/src/s3/meta.rs", "edge/src/r2_meta.rs"):
            self.assertIn('const PREFIX: &str = "meta/";', read(os.path.join(ROOT, meta)), meta)

    def test_webhook_queue_wakes_the_function(self):
        """docs/webhooks.md: the queue (encrypted with the region's key, a dead-letter queue
        behind it) feeds the function, whose role may use that queue only, and the function
        is told its URL; all behind var.webhook_queue."""
        r = self.region
        self.assertIs(r.variables["webhook_queue"]["default"], True)
        queue = r.resources[("aws_sqs_queue", "webhooks")]
        dead = r.resources[("aws_sqs_queue", "webhooks_dead")]
        for q in (queue, dead):
            self.assertEqual(q["count"], "${local.webhook_queue}")
            self.assertEqual(q["kms_master_key_id"], "${aws_kms_key.this.arn}")
        self.assertIn("aws_sqs_queue.webhooks_dead[0].arn", queue["redrive_policy"])
        # Lambda refuses a mapping whose queue hides messages for less than the function's timeout.
        self.assertEqual(queue["visibility_timeout_seconds"], "${var.timeout * 6}")
        mapping = r.one("aws_lambda_event_source_mapping")
        self.assertEqual(mapping["event_source_arn"], "${aws_sqs_queue.webhooks[0].arn}")
        self.assertEqual(mapping["function_name"], "${aws_lambda_function.this.arn}")
        self.assertEqual(mapping["function_response_types"], ['"ReportBatchItemFailures"'])
        statements = [d['"statement"'] for d in r.data[("aws_iam_policy_document", "function")].get("dynamic", [])]
        sqs = [s for s in statements if "sqs:" in str(s)]
        self.assertEqual(len(sqs), 1)
        self.assertEqual(sqs[0]["for_each"], "${aws_sqs_queue.webhooks[*].arn}")
        content = sqs[0]["content"][0]
        self.assertEqual(sorted(unq(a) for a in content["actions"]),
                         ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"])
        self.assertEqual(content["resources"], ["${statement.value}"])
        env = r.one("aws_lambda_function")["environment"][0]["variables"]
        self.assertIn("var.webhook_queue ? {BERTH_WEBHOOK_QUEUE_URL = aws_sqs_queue.webhooks[0].url} : {}", env)

    def test_function_gets_every_setting_the_runtime_reads(self):
        config_rs = read(os.path.join(ROOT, "lambda/src/config.rs"))
        runtime = set(re.findall(r'(?:var|secs)\("(BERTH_[A-Z0-9_]+)"', config_rs)) | {"RUST_LOG"}
        emf_rs = read(os.path.join(ROOT, "lambda/src/emf.rs"))
        runtime |= set(re.findall(r'std::env::var\("(BERTH_[A-Z0-9_]+)"', emf_rs))
        # Settings for local stand-ins (tests), and the plain-text forms of what a deployment
        # keeps in Secrets Manager.
        not_deployed = {"BERTH_S3_ENDPOINT", "BERTH_META_S3_ENDPOINT", "BERTH_SECRETS_ENDPOINT", "BERTH_SQS_ENDPOINT", "BERTH_UPLOAD_SECRET", "BERTH_AUTH_CONFIG_TOML"}
        self.assertTrue(not_deployed <= runtime, "a test-only setting vanished from lambda/src/config.rs")
        fn = self.region.one("aws_lambda_function")
        env = fn["environment"][0]["variables"]
        set_here = set(re.findall(r"\b(BERTH_[A-Z0-9_]+|RUST_LOG)\s*=", env))
        self.assertEqual(set_here, runtime - not_deployed)
        self.assertEqual(unq(fn["runtime"]), "provided.al2023")
        self.assertEqual(unq(fn["handler"]), "bootstrap")
        self.assertEqual([unq(a) for a in fn["architectures"]], ["x86_64"])
        self.assertEqual(fn["filename"], "${var.lambda_zip}")
        self.assertIn("filebase64sha256(var.lambda_zip)", fn["source_code_hash"])
        # Keys come from Secrets Manager, never from a variable.
        self.assertIn("aws_secretsmanager_secret.upload_key.name", env)
        for var, body in self.region.variables.items():
            self.assertNotIn("sensitive", body, f"variable {var}: keys are read from Secrets Manager, not passed in")

    def test_alarms_cover_the_shipped_alert_rules(self):
        alarms = self.region.of_type("aws_cloudwatch_metric_alarm")
        rules = read(os.path.join(ROOT, "observability/alerts.yml"))
        # Each Prometheus alert about the registry (not the scrape: BerthDown) has its alarm.
        for alert in ("BerthServerErrors", "BerthSlowPulls", "BerthStorageNearlyFull"):
            self.assertIn(f"alert: {alert}", rules)
            self.assertTrue(any(alert in a.get("alarm_description", "") for a in alarms.values()), alert)
        for name, alarm in alarms.items():
            self.assertEqual(alarm["alarm_actions"], "${var.alarm_actions}", name)
            self.assertEqual(alarm["ok_actions"], "${var.alarm_actions}", name)
            self.assertEqual(unq(alarm["treat_missing_data"]), "notBreaching", name)
        errors = alarms["server_errors"]
        self.assertEqual(errors["threshold"], 5)
        names = {unq(v) for v in errors["dynamic"][0]['"metric_query"']["for_each"].values()}
        self.assertEqual(names, {"Url5xxCount", "UrlRequestCount"})
        # Slow pulls read the EMF records the function writes, in the namespace it is given.
        slow = alarms["slow_pulls"]
        self.assertEqual(slow["threshold"], 3)
        queries = slow["dynamic"][0]['"metric_query"']
        self.assertIn("var.metrics_namespace", queries["content"][0]["metric"][0]["namespace"])
        self.assertEqual({unq(v[0]) for v in queries["for_each"].values()}, {"manifest_get", "blob_get"})
        emf_rs = read(os.path.join(ROOT, "lambda/src/emf.rs"))
        self.assertIn('metric("Latency", "Seconds")', emf_rs)
        self.assertIn('["Route"]', emf_rs)
        for route in ("manifest_get", "blob_get"):
            self.assertIn(f'"{route}"', read(os.path.join(ROOT, "shared/src/routes.rs")), route)
        self.assertIn("0.85", alarms["storage_nearly_full"]["threshold"])

    def test_upload_key_never_enters_the_state(self):
        version = self.region.one("aws_secretsmanager_secret_version")
        self.assertNotIn("secret_string", version)
        self.assertIn("ephemeral.aws_secretsmanager_random_password", version["secret_string_wo"])

    def test_log_group_has_retention_and_key(self):
        group = self.region.one("aws_cloudwatch_log_group")
        self.assertIn("var.log_retention_days", group["retention_in_days"])
        self.assertIn("aws_kms_key.this.arn", group["kms_key_id"])
        self.assertGreaterEqual(self.region.variables["log_retention_days"]["default"], 365)


# --- IAM ------------------------------------------------------------------------------------------

# What an IAM policy's resources may refer to: this stack's buckets, keys, log group and secrets.
STACK_REFERENCES = (
    "aws_s3_bucket.this.arn",
    "aws_kms_key.this.arn",
    "aws_cloudwatch_log_group.function.arn",
    "aws_secretsmanager_secret.upload_key.arn",
    "local.auth_config_secret_name",
    "local.home.bucket_arn",
    "local.home.kms_key_arn",
    "statement.value",  # the dynamic HomeContent statement: for_each over local.home.bucket_arn
    "local.all_bucket_arns",
    "local.replicated_object_arns",
    "r.kms_key_arn",  # for r in var.regions: the regional stacks' keys
)


def policy_statements(config):
    for (typ, name), body in config.data.items():
        if typ == "aws_iam_policy_document":
            for statement in body.get("statement", []):
                yield name, statement
            for entry in body.get("dynamic", []):
                for content in entry.get('"statement"', {}).get("content", []):
                    yield name, content


class IamTest(unittest.TestCase):
    def test_no_wildcard_actions_and_only_stack_arns(self):
        seen = 0
        for mod in ("aws-region", "aws-global"):
            config = module(mod)
            for name, statement in policy_statements(config):
                seen += 1
                where = f"{mod}: {name}/{unq(statement.get('sid', '?'))}"
                self.assertNotIn("not_actions", statement, where)
                self.assertNotIn("not_resources", statement, where)
                for action in statement.get("actions", []):
                    self.assertNotIn("*", unq(action), where)
                if unq(statement.get("effect", '"Allow"')) == "Deny":
                    continue
                resources = statement.get("resources", [])
                if isinstance(resources, str):
                    resources = [resources]
                for resource in resources:
                    self.assertNotEqual(unq(resource), "*", where)
                    self.assertNotRegex(resource, r'"\*"', where)
                    self.assertTrue(any(ref in resource for ref in STACK_REFERENCES), f"{where}: {resource} is not this stack's ARN")
        self.assertGreaterEqual(seen, 12)

    def test_every_role_policy_is_a_checked_document(self):
        for mod in ("aws-region", "aws-global"):
            config = module(mod)
            for name, body in config.of_type("aws_iam_role_policy").items():
                self.assertRegex(body["policy"], r"^\$\{data\.aws_iam_policy_document\.[a-z_]+\.json\}$", f"{mod}: {name}")
            for name, body in config.of_type("aws_iam_role").items():
                self.assertNotIn("managed_policy_arns", body, f"{mod}: {name} must not attach AWS managed policies")
                self.assertRegex(body["assume_role_policy"], r"^\$\{data\.aws_iam_policy_document\.[a-z_]+\.json\}$")
            self.assertFalse(config.of_type("aws_iam_role_policy_attachment"), f"{mod}: attachments escape the checks")
            self.assertFalse(config.of_type("aws_iam_policy"), f"{mod}: standalone policies escape the checks")

    def test_roles_can_only_be_assumed_by_their_service_in_this_account(self):
        for mod, doc, service in (("aws-region", "assume", "lambda.amazonaws.com"), ("aws-global", "replication_assume", "s3.amazonaws.com")):
            statements = module(mod).data[("aws_iam_policy_document", doc)]["statement"]
            self.assertEqual(len(statements), 1)
            self.assertEqual([unq(i) for i in statements[0]["principals"][0]["identifiers"]], [service])
            self.assertEqual([unq(a) for a in statements[0]["actions"]], ["sts:AssumeRole"])
        # S3 passes the source account: replication can only be for this account's buckets.
        replication = module("aws-global").data[("aws_iam_policy_document", "replication_assume")]["statement"][0]
        self.assertEqual(unq(replication["condition"][0]["variable"]), "aws:SourceAccount")

    def test_key_policy_lists_actions(self):
        key = module("aws-region").one("aws_kms_key")
        self.assertNotRegex(key["policy"], r'"kms:\*"|Action = "\*"')
        self.assertIs(key["enable_key_rotation"], True)


# --- AWS: what spans regions -----------------------------------------------------------------------

ALL_METHODS = {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"}
DIGEST = "sha256:" + "a" * 64


def cloudfront_matches(pattern, path):
    """CloudFront path patterns: `*` any run of characters (including /), `?` one; case-sensitive."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path) is not None


class CloudFrontTest(unittest.TestCase):
    glob = module("aws-global")
    dist = glob.one("aws_cloudfront_distribution")

    def behaviour_for(self, path):
        for b in self.dist.get("ordered_cache_behavior", []):
            if cloudfront_matches(unq(b["path_pattern"]), path):
                return b
        return self.dist["default_cache_behavior"][0]

    def policy(self, ref):
        m = re.fullmatch(r'\$\{aws_cloudfront_cache_policy\.digest\["([a-z]+)"\]\.id\}', ref)
        if m:
            policy = self.glob.resources[("aws_cloudfront_cache_policy", "digest")]
            self.assertEqual(policy["for_each"], "${local.digest_cache_keys}")
            return ("own", dict(policy, keys=self.glob.locals["digest_cache_keys"][m.group(1)]))
        m = re.fullmatch(r"\$\{data\.aws_cloudfront_cache_policy\.([a-z_]+)\.id\}", ref)
        self.assertIsNotNone(m, ref)
        return ("managed", unq(self.glob.data[("aws_cloudfront_cache_policy", m.group(1))]["name"]))

    def assert_digest_policy(self, ref, key_headers):
        kind, policy = self.policy(ref)
        self.assertEqual(kind, "own")
        # The origin's Cache-Control decides: immutable content a year, anything without it
        # (a redirect to a presigned URL) not at all.
        self.assertEqual((policy["min_ttl"], policy["default_ttl"], policy["max_ttl"]), (0, 0, 31536000))
        params = policy["parameters_in_cache_key_and_forwarded_to_origin"][0]
        headers = params["headers_config"][0]
        self.assertEqual(unq(headers["header_behavior"]), "whitelist")
        self.assertEqual(headers["headers"][0]["items"], "${each.value}")
        self.assertEqual({unq(h) for h in policy["keys"]}, key_headers)
        self.assertEqual(unq(params["query_strings_config"][0]["query_string_behavior"]), "none")
        self.assertEqual(unq(params["cookies_config"][0]["cookie_behavior"]), "none")

    def test_max_ttl_is_the_registrys_max_age(self):
        blobs_rs = read(os.path.join(ROOT, "shared/src/blobs.rs"))
        self.assertIn('IMMUTABLE: &str = "public, max-age=31536000, immutable"', blobs_rs)
        manifests_rs = read(os.path.join(ROOT, "shared/src/manifests.rs"))
        self.assertIn('reply.header(CACHE_CONTROL, "no-cache").header(VARY, "Accept")', manifests_rs)

    def test_requests_reach_the_right_behaviour(self):
        home = "${local.home_origin}"
        group = "${local.failover_group}"
        # (method, path, cache policy: "blobs"/"manifests"/"disabled", origin, allowed)
        table = [
            ("GET", f"/v2/team/app/blobs/{DIGEST}", "blobs", group, True),
            ("HEAD", f"/v2/team/app/blobs/{DIGEST}", "blobs", group, True),
            ("GET", f"/v2/a/b/c/blobs/{DIGEST}", "blobs", group, True),
            ("DELETE", f"/v2/team/app/blobs/{DIGEST}", "blobs", group, False),  # regional URL
            ("GET", f"/v2/team/app/manifests/{DIGEST}", "manifests", home, True),
            ("PUT", f"/v2/team/app/manifests/{DIGEST}", "manifests", home, True),
            ("DELETE", f"/v2/team/app/manifests/{DIGEST}", "manifests", home, True),
            ("GET", "/v2/team/app/manifests/latest", "disabled", home, True),
            ("HEAD", "/v2/team/app/manifests/v1.2.3", "disabled", home, True),
            ("PUT", "/v2/team/app/manifests/latest", "disabled", home, True),
            ("POST", "/v2/team/app/blobs/uploads/", "disabled", home, True),
            ("PATCH", "/v2/team/app/blobs/uploads/0123abcd", "disabled", home, True),
            ("PUT", "/v2/team/app/blobs/uploads/0123abcd", "disabled", home, True),
            ("GET", "/v2/team/app/tags/list", "disabled", home, True),
            ("GET", f"/v2/team/app/referrers/{DIGEST}", "disabled", home, True),
            ("GET", "/v2/_catalog", "disabled", home, True),
            ("GET", "/v2/", "disabled", home, True),
            ("GET", "/token", "disabled", home, True),
            ("POST", "/token", "disabled", home, True),
        ]
        for method, path, policy, origin, allowed in table:
            b = self.behaviour_for(path)
            where = f"{method} {path}"
            kind, p = self.policy(b["cache_policy_id"])
            if policy == "disabled":
                self.assertEqual((kind, p), ("managed", "Managed-CachingDisabled"), where)
            else:
                self.assertEqual(b["cache_policy_id"], f'${{aws_cloudfront_cache_policy.digest["{policy}"].id}}', where)
            self.assertEqual(b["target_origin_id"], origin, where)
            self.assertEqual(method in {unq(m) for m in b["allowed_methods"]}, allowed, where)

    def test_cache_policies(self):
        self.assert_digest_policy('${aws_cloudfront_cache_policy.digest["blobs"].id}', {"Authorization"})
        self.assert_digest_policy('${aws_cloudfront_cache_policy.digest["manifests"].id}', {"Authorization", "Accept"})

    def test_every_behaviour_forwards_the_request_and_is_https_only(self):
        behaviours = self.dist["ordered_cache_behavior"] + self.dist["default_cache_behavior"]
        managed = unq(self.glob.data[("aws_cloudfront_origin_request_policy", "all_but_host")]["name"])
        self.assertEqual(managed, "Managed-AllViewerExceptHostHeader")
        for b in behaviours:
            self.assertEqual(b["origin_request_policy_id"], "${data.aws_cloudfront_origin_request_policy.all_but_host.id}")
            self.assertEqual(unq(b["viewer_protocol_policy"]), "https-only")
            self.assertIs(b["compress"], False)

    def test_failover_only_where_cloudfront_allows_it(self):
        group = self.dist["origin_group"][0]
        self.assertEqual(group["origin_id"], "${local.failover_group}")
        self.assertEqual(sorted(group["failover_criteria"][0]["status_codes"]), [500, 502, 503, 504])
        self.assertEqual([m["origin_id"] for m in group["member"]], ["${local.home_origin}", "${local.origin_id[var.failover]}"])
        for b in self.dist["ordered_cache_behavior"] + self.dist["default_cache_behavior"]:
            methods = {unq(m) for m in b["allowed_methods"]}
            if b["target_origin_id"] == "${local.failover_group}":
                self.assertLessEqual(methods, {"GET", "HEAD", "OPTIONS"})
            else:
                self.assertEqual(b["target_origin_id"], "${local.home_origin}", "writes go to the home region")
                self.assertEqual(methods, ALL_METHODS)

    def test_errors_are_never_cached(self):
        dynamic = [d['"custom_error_response"'] for d in self.dist["dynamic"] if '"custom_error_response"' in d][0]
        codes = set(int(c) for c in re.findall(r"\d{3}", dynamic["for_each"]))
        self.assertTrue({400, 403, 404, 405, 416, 500, 502, 503, 504} <= codes)
        self.assertEqual(dynamic["content"][0]["error_caching_min_ttl"], 0)

    def test_every_region_is_an_origin(self):
        origin = [d['"origin"'] for d in self.dist["dynamic"] if '"origin"' in d][0]
        self.assertEqual(origin["for_each"], "${var.regions}")
        custom = origin["content"][0]["custom_origin_config"][0]
        self.assertEqual(unq(custom["origin_protocol_policy"]), "https-only")
        self.assertEqual(origin["content"][0]["domain_name"], "${origin.value.host}")


class ReplicationTest(unittest.TestCase):
    glob = module("aws-global")

    def test_every_bucket_replicates_durable_prefixes_to_every_other(self):
        config = self.glob.one("aws_s3_bucket_replication_configuration")
        self.assertEqual(config["for_each"], "${var.regions}")
        self.assertEqual(config["region"], "${each.value.region}")
        self.assertEqual(config["bucket"], "${each.value.bucket_name}")
        prefixes = {unq(p) for p in self.glob.locals["replicated_prefixes"]}
        self.assertEqual(prefixes, {"blobs/", "data/", "meta/"})
        rules = self.glob.locals["replication_rules"]
        self.assertIn("if d != src", rules, "a bucket must not replicate to itself")
        rule = [d['"rule"'] for d in config["dynamic"] if '"rule"' in d][0]["content"][0]
        self.assertEqual(unq(rule["source_selection_criteria"][0]["sse_kms_encrypted_objects"][0]["status"]), "Enabled")
        self.assertEqual(rule["destination"][0]["encryption_configuration"][0]["replica_kms_key_id"], "${rule.value.kms_key_arn}")


# --- examples ----------------------------------------------------------------------------------------


class AwsExampleTest(unittest.TestCase):
    ex = example("aws-multi-region")
    readme = read(os.path.join(EXAMPLES, "aws-multi-region/README.md"))

    def test_three_regions_through_provider_aliases(self):
        aliases = {unq(body["alias"]): body["region"] for name, body in self.ex.providers if name == "aws"}
        regional = {name: call for name, call in self.ex.modules.items() if unq(call["source"]) == "../../modules/aws-region"}
        self.assertEqual(len(regional), 3)
        used = []
        for name, call in regional.items():
            provider = call["providers"][0]["aws"] if isinstance(call["providers"], list) else call["providers"]["aws"]
            alias = provider.strip("${}").split(".")[1]
            self.assertIn(alias, aliases)
            used.append(aliases[alias])
        self.assertEqual(sorted(used), ["${var.regions.home}", "${var.regions.second}", "${var.regions.third}"])
        self.assertEqual(unq(aliases["global"]), "us-east-1", "CloudFront certificates live in us-east-1")

    def test_home_region_holds_metadata_and_auth_for_the_others(self):
        home = self.ex.modules["home"]
        self.assertNotIn("home", home)
        self.assertIs(home["create_auth_config_secret"], True)
        self.assertEqual(home["auth_config_replica_regions"], ["${var.regions.second}", "${var.regions.third}"])
        for other in ("second", "third"):
            call = self.ex.modules[other]
            self.assertEqual(call["home"], "${module.home.home}")
            self.assertEqual(call["auth_config_secret_name"], "${module.home.auth_config_secret_name}")

    def test_global_gets_each_region_from_its_own_module(self):
        glob = self.ex.modules["global"]
        self.assertEqual(unq(glob["source"]), "../../modules/aws-global")
        self.assertEqual((unq(glob["home"]), unq(glob["failover"])), ("home", "second"))
        regional = self.ex.locals["regional"]
        self.assertEqual(regional, {label: f"${{module.{label}}}" for label in ("home", "second", "third")})
        regions = glob["regions"]
        self.assertTrue(regions.startswith("${{for label, stack in local.regional : label => {"), regions)
        for attr in ("region", "host", "bucket_name", "bucket_arn", "kms_key_arn"):
            self.assertIn(f"{attr} = stack.{attr}", regions)

    def test_readme_commands_use_real_outputs_and_paths(self):
        for name in re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", self.readme):
            self.assertIn(name, self.ex.outputs, f"README uses output {name}")
        for section in ("terraform init", "terraform apply", "docker login", "docker push", "docker pull", "terraform destroy"):
            self.assertIn(section, self.readme)
        zip_default = unq(self.ex.variables["lambda_zip"]["default"])
        self.assertEqual(os.path.normpath(os.path.join(self.ex.dir, zip_default)), os.path.join(ROOT, "target/lambda/berth-lambda/bootstrap.zip"))

    def test_the_zip_the_modules_point_at_was_built(self):
        path = os.path.join(ROOT, "target/lambda/berth-lambda/bootstrap.zip")
        if os.environ.get("BERTH_TF_SKIP_ARTIFACTS"):
            self.skipTest("BERTH_TF_SKIP_ARTIFACTS set")
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("bootstrap")
            self.assertGreater(info.file_size, 1_000_000)
            self.assertTrue((info.external_attr >> 16) & 0o111, "bootstrap must be executable")
            binary = z.read("bootstrap")
        # Built against this machine's glibc, it must not need a newer one than the
        # provided.al2023 runtime has (2.34).
        needed = max(int(v) for v in re.findall(rb"GLIBC_2\.(\d+)", binary))
        self.assertLessEqual(needed, 34, f"bootstrap needs GLIBC_2.{needed}; provided.al2023 has 2.34")


class CloudflareTest(unittest.TestCase):
    mod = module("cloudflare")
    ex = example("cloudflare")
    readme = read(os.path.join(EXAMPLES, "cloudflare/README.md"))

    def test_worker_has_the_bindings_the_worker_reads(self):
        settings_rs = read(os.path.join(ROOT, "edge/src/settings.rs"))
        names = set(re.findall(r'(?:text|number)\(env, "([A-Z_0-9]+)"', settings_rs))
        # The request Worker's bindings are the shared list (the maintenance Worker's too,
        # test_background_work_runs_on_the_maintenance_worker_when_split).
        self.assertEqual(self.mod.resources[("cloudflare_worker_version", "this")]["bindings"], "${local.bindings}")
        bindings = re.findall(r'name = "([A-Z_0-9]+)"', self.mod.locals["bindings"])
        bindings += re.findall(r"\b([A-Z][A-Z_0-9]+)\s*=", self.mod.locals["vars"])
        bindings += re.findall(r'name = \\?"([A-Z_0-9]+)\\?"', self.mod.locals["secret_bindings"])
        self.assertTrue(names, "no settings found in edge/src/settings.rs")
        # Bench and test instrumentation (bench/request-cost.sh and tests/edge/run.sh set them
        # on wrangler dev), never deployed.
        bench_only = {"COUNT_BACKEND_CALLS", "ANALYTICS_ECHO"}
        self.assertEqual(names - set(bindings) - bench_only, set())
        self.assertTrue(bench_only <= names, "a bench-only setting listed here is no longer read")
        wrangler = read(os.path.join(ROOT, "wrangler.toml"))
        for binding in re.findall(r'binding = "([A-Z_]+)"', wrangler):
            self.assertIn(binding, bindings)
        date = re.search(r'compatibility_date = "([0-9-]+)"', wrangler).group(1)
        self.assertEqual(unq(self.mod.variables["compatibility_date"]["default"]), date)

    def test_modules_are_the_built_bundle(self):
        """Each Worker version uploads worker-build's two files from its own bundle directory,
        and the example points at the split build's two bundles."""
        for worker, variable, built in (
            ("this", "bundle_dir", "edge/build-serve"),
            ("maintenance", "maintenance_bundle_dir", "edge/build-maintenance"),
        ):
            version = self.mod.resources[("cloudflare_worker_version", worker)]
            modules = {unq(m["name"]): m for m in version["modules"]}
            self.assertEqual(set(modules), {"index.js", "index_bg.wasm"}, worker)
            self.assertEqual(unq(version["main_module"]), "index.js", worker)
            self.assertEqual(unq(modules["index.js"]["content_type"]), "application/javascript+module", worker)
            self.assertEqual(unq(modules["index_bg.wasm"]["content_type"]), "application/wasm", worker)
            for name, module_ in modules.items():
                self.assertEqual(unq(module_["content_file"]), f"${{var.{variable}}}/{name}", worker)
            self.assertEqual(self.ex.modules["berth"][variable], f"${{var.{variable}}}")
            bundle = os.path.normpath(os.path.join(self.ex.dir, unq(self.ex.variables[variable]["default"])))
            self.assertEqual(bundle, os.path.join(ROOT, built))
            if os.environ.get("BERTH_TF_SKIP_ARTIFACTS"):
                continue
            js = read(os.path.join(bundle, "index.js"))
            imports = set(re.findall(r'from\s*"(\./[^"]+)"', js))
            self.assertEqual(imports, {"./index_bg.wasm"}, f"{built}: the JS glue must import exactly the wasm module uploaded beside it")
            self.assertGreater(os.path.getsize(os.path.join(bundle, "index_bg.wasm")), 100_000, built)

    def test_background_work_runs_on_the_maintenance_worker_when_split(self):
        """With maintenance_bundle_dir, the Cron Trigger and the queue consumer go to the
        maintenance Worker (the request bundle has no scheduled or queue handler), which gets
        the same bindings as the request Worker; without it, to the all-in-one Worker."""
        m = self.mod
        self.assertEqual(m.locals["split"], "${var.maintenance_bundle_dir != null}")
        self.assertIsNone(m.variables["maintenance_bundle_dir"]["default"])
        self.assertEqual(
            m.locals["background_worker"],
            "${local.split ? cloudflare_worker.maintenance[0].name : cloudflare_worker.this.name}",
        )
        for typ, name in (("cloudflare_workers_cron_trigger", "gc"), ("cloudflare_queue_consumer", "webhooks")):
            body = m.resources[(typ, name)]
            self.assertEqual(body["script_name"], "${local.background_worker}", typ)
            # The script must be deployed first, whichever of the two it is.
            self.assertEqual(
                set(body["depends_on"]),
                {"${cloudflare_workers_deployment.this}", "${cloudflare_workers_deployment.maintenance}"},
                typ,
            )
        worker = m.resources[("cloudflare_worker", "maintenance")]
        version = m.resources[("cloudflare_worker_version", "maintenance")]
        deployment = m.resources[("cloudflare_workers_deployment", "maintenance")]
        for body in (worker, version, deployment):
            self.assertEqual(body["count"], "${local.split ? 1 : 0}")
        self.assertEqual(unq(worker["name"]), "${var.name}-maintenance")
        # That name must fit the 63 characters the name variable allows.
        self.assertEqual(worker["lifecycle"][0]["precondition"][0]["condition"], f"${{length(var.name) <= {63 - len('-maintenance')}}}")
        # No fetch handler: nothing to serve on workers.dev.
        self.assertIs(worker["subdomain"]["enabled"], False)
        self.assertIs(worker["observability"]["enabled"], True)
        self.assertEqual(version["worker_id"], "${cloudflare_worker.maintenance[0].id}")
        self.assertEqual(version["bindings"], m.resources[("cloudflare_worker_version", "this")]["bindings"])
        self.assertEqual(version["bindings"], "${local.bindings}")
        self.assertEqual(version["compatibility_date"], "${var.compatibility_date}")
        self.assertEqual(deployment["script_name"], "${cloudflare_worker.maintenance[0].name}")
        self.assertEqual([v["version_id"] for v in deployment["versions"]], ["${cloudflare_worker_version.maintenance[0].id}"])
        self.assertEqual(m.outputs["maintenance_worker_name"]["value"], "${local.split ? cloudflare_worker.maintenance[0].name : null}")
        # The request-only bundle alone would leave the crons and the queue without a handler.
        conditions = [p["condition"] for l in m.resources[("cloudflare_worker_version", "this")]["lifecycle"] for p in l["precondition"]]
        self.assertIn('${local.split || basename(trimsuffix(var.bundle_dir, "/")) != "build-serve"}', conditions)

    def test_worker_configs_must_be_json(self):
        # The Worker has no TOML parser (shared/src/config_text.rs): a TOML config would make
        # every request a 500, so the module refuses it at plan time.
        for name in ("auth_config", "policy_config"):
            validation = str(self.mod.variables[name].get("validation"))
            self.assertIn(f"can(jsondecode(var.{name}))", validation, name)
            self.assertIn("berth auth export --json", validation, name)

    def test_lifecycle_expires_only_staging(self):
        rules = self.mod.resources[("cloudflare_r2_bucket_lifecycle", "blobs")]["rules"]
        deleting = {unq(r["conditions"]["prefix"]) for r in rules if "delete_objects_transition" in r}
        self.assertEqual(deleting, {"uploads/", "meta/uploads/"})
        self.assertTrue(any("abort_multipart_uploads_transition" in r and unq(r["conditions"]["prefix"]) == "" for r in rules))

    def test_example_and_readme(self):
        call = self.ex.modules["berth"]
        self.assertEqual(unq(call["source"]), "../../modules/cloudflare")
        for name in re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", self.readme):
            self.assertIn(name, self.ex.outputs)
        for section in ("terraform init", "terraform apply", "docker login", "docker push", "docker pull", "terraform destroy"):
            self.assertIn(section, self.readme)


# --- conventions --------------------------------------------------------------------------------------


class ConventionsTest(unittest.TestCase):
    def all_configs(self):
        for base in (MODULES, EXAMPLES):
            for d in sorted(os.listdir(base)):
                yield Config(os.path.join(base, d))

    def test_variables_and_outputs_are_typed_and_described(self):
        for config in self.all_configs():
            for name, body in config.variables.items():
                self.assertIn("type", body, f"{config.dir}: variable {name}")
                self.assertTrue(unq(body.get("description", "")), f"{config.dir}: variable {name}")
            for name, body in config.outputs.items():
                self.assertTrue(unq(body.get("description", "")), f"{config.dir}: output {name}")

    def test_providers_are_pinned_to_the_checked_versions(self):
        for config in self.all_configs():
            self.assertTrue(config.terraform, f"{config.dir}: no terraform block")
            for block in config.terraform:
                self.assertEqual(unq(block["required_version"]), ">= 1.11")
                for providers in block["required_providers"]:
                    for name, spec in providers.items():
                        if name in META:
                            continue
                        self.assertEqual(unq(spec["version"]), f"~> {SCHEMAS[name]['version']}", f"{config.dir}: {name}")

    def test_checkov_skips_are_inline_with_a_reason(self):
        skips = 0
        for path in tf_files():
            lines = read(path).splitlines()
            for i, line in enumerate(lines):
                if "checkov:skip" not in line:
                    continue
                skips += 1
                self.assertRegex(line, r"^  #checkov:skip=CKV2?_[A-Z0-9]+_\d+:\S.{10,}$", f"{path}:{i + 1}")
                # Inside a resource block: the nearest unindented line above opens it.
                opener = next(l for l in reversed(lines[:i]) if l and not l.startswith(" "))
                self.assertRegex(opener, r'^resource "', f"{path}:{i + 1}")
        self.assertGreater(skips, 10)

    def test_layout_is_terraform_fmt(self):
        problems = []
        for path in tf_files():
            problems += [f"{os.path.relpath(path, TF)}:{p}" for p in fmt_problems(read(path))]
        self.assertEqual(problems, [])

    def test_fmt_check_can_fail(self):
        self.assertTrue(fmt_problems('a = 1\nbcd = 2\n'))  # unaligned
        self.assertTrue(fmt_problems('x {\n   a = 1\n}\n'))  # indentation
        self.assertTrue(fmt_problems('a = 1 \n'))  # trailing space
        self.assertEqual(fmt_problems('x {\n  a   = 1\n  bcd = 2\n  e = [\n    1,\n  ]\n}\n'), [])
        self.assertTrue(fmt_problems('x {\n  a   = 1\n  e = [\n    1,\n  ]\n}\n'))  # a multi-line value ends the group


# --- terraform fmt's layout ------------------------------------------------------------------------------


def scan(line):
    """Splits one line the way hclwrite's formatter does: the text before the first `=`
    ("lead"), whether what follows is a whole expression (an "assign" cell), and the
    line's net bracket change. Quoted strings are skipped except for their `${`/`%{`
    interpolations, which count as brackets; a `#` or `//` comment ends the line."""
    net = 0
    eq_at = None
    eq_net = 0
    i, n = 0, len(line)
    stack = []  # "s": inside a string; "{": inside an interpolation or a brace
    while i < n:
        c = line[i]
        in_string = stack and stack[-1] == "s"
        if in_string:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                stack.pop()
            elif c in "$%" and line[i + 1 : i + 2] == "{":
                stack.append("{")
                net += 1
                i += 2
                continue
            i += 1
            continue
        if c == '"':
            stack.append("s")
        elif c == "#" or line.startswith("//", i):
            break
        elif c in "{[(":
            stack.append("{")
            net += 1
        elif c in "}])":
            if stack:
                stack.pop()
            net -= 1
        elif c == "=" and eq_at is None and line[i + 1 : i + 2] not in ("=", ">") and (i == 0 or line[i - 1] not in "=!<>"):
            eq_at, eq_net = i, net
        i += 1
    assign = eq_at is not None and line[:eq_at].strip() != "" and net - eq_net == 0
    return {"lead": line[:eq_at] if assign else None, "assign_at": eq_at if assign else None, "net": net}


def fmt_problems(text):
    problems = []
    lines = text.split("\n")
    if text and not text.endswith("\n"):
        problems.append("end: no final newline")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    indents = []
    chain = []

    def close_chain():
        if chain:
            widest = max(len(lead.rstrip()) for _, lead in chain)
            for number, lead in chain:
                if len(lead) != widest + 1:
                    problems.append(f"{number}: `=` not aligned with its neighbours (terraform fmt aligns it at column {widest + 2})")
            chain.clear()

    for number, line in enumerate(lines, 1):
        if "\t" in line:
            problems.append(f"{number}: tab")
        if line != line.rstrip():
            problems.append(f"{number}: trailing whitespace")
        if not line.strip():
            close_chain()
            continue
        info = scan(line)
        net = info["net"]
        if net > 0:
            want = 2 * len(indents)
            indents.append(net)
        elif net < 0:
            closed = -net
            while closed > 0 and indents:
                if closed > indents[-1]:
                    closed -= indents.pop()
                elif closed < indents[-1]:
                    indents[-1] -= closed
                    closed = 0
                else:
                    indents.pop()
                    closed = 0
            want = 2 * len(indents)
        else:
            want = 2 * len(indents)
        have = len(line) - len(line.lstrip(" "))
        if have != want:
            problems.append(f"{number}: indented {have}, terraform fmt indents {want}")
        if info["lead"] is not None:
            chain.append((number, info["lead"]))
            rest = line[info["assign_at"] + 1 :]
            if not rest.startswith(" ") or rest.startswith("  "):
                problems.append(f"{number}: one space after `=`")
        else:
            close_chain()
    close_chain()
    return problems


if __name__ == "__main__":
    unittest.main(verbosity=2)
