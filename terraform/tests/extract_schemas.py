#!/usr/bin/env python3
"""Regenerates provider_schemas.json: the arguments of every resource, data source and
ephemeral resource terraform/ uses, at the provider versions terraform/ pins.

No terraform binary can run here, so `terraform providers schema -json` is not available. The
schemas come from published copies instead, fetched once by a developer (not by the tests):
  - hashicorp/aws: the generated schema files of the lonegunmanb/terraform-aws-schema repository
    at its tag for the pinned version (made with `terraform providers schema -json`);
  - cloudflare/cloudflare and hashicorp/random: the providers' own documentation
    (docs/resources/*.md, generated from the schema by tfplugindocs) at the pinned tag.

    python3 terraform/tests/extract_schemas.py AWS_SCHEMA_REPO CLOUDFLARE_REPO RANDOM_REPO

Each argument keeps only what the checks need: required / optional / computed, nested
attributes, and blocks with their nesting limits.
"""
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TERRAFORM = os.path.dirname(HERE)
PINS = {"aws": "6.47.0", "cloudflare": "5.22.0", "random": "3.9.0"}


def git_show(repo, rev, path):
    return subprocess.run(["git", "-C", repo, "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout


def used_types():
    """(kind, type) pairs named in terraform/**/*.tf."""
    found = set()
    pattern = re.compile(r'^\s*(resource|data|ephemeral)\s+"([a-z0-9_]+)"', re.M)
    for dirpath, _, files in os.walk(TERRAFORM):
        for f in files:
            if f.endswith(".tf"):
                for kind, typ in pattern.findall(open(os.path.join(dirpath, f)).read()):
                    found.add((kind, typ))
    return found


def slim_block(block):
    out = {"attributes": {}, "blocks": {}}
    for name, a in block.get("attributes", {}).items():
        entry = {k: True for k in ("required", "optional", "computed") if a.get(k)}
        if "nested_type" in a:
            entry["nested"] = slim_block(a["nested_type"])
        out["attributes"][name] = entry
    for name, b in block.get("block_types", {}).items():
        out["blocks"][name] = {
            "nesting": b["nesting_mode"],
            "min": b.get("min_items", 0),
            "max": b.get("max_items", 0),
            "block": slim_block(b["block"]),
        }
    return out


def aws_schema(repo, kind, typ):
    folder = {"resource": "resource", "data": "data", "ephemeral": "ephemeral"}[kind]
    camel = typ.split("_")[0] + "".join(p.capitalize() for p in typ.split("_")[1:])
    src = git_show(repo, f"v{PINS['aws']}", f"generated/{folder}/{camel}.go")
    text = src[src.index("`") + 1 : src.rindex("`")].replace('` + "`" + `', "`")
    return slim_block(json.loads(text)["block"])


ITEM = re.compile(r"^- `([a-z0-9_]+)` \(([^)]*)\)")


def doc_schema(repo, tag, kind, typ, prefix):
    """Parses tfplugindocs markdown: top-level Required/Optional/Read-Only lists, then one
    'Nested Schema for `a.b`' section per nested attribute."""
    folder = "resources" if kind == "resource" else "data-sources"
    text = git_show(repo, tag, f"docs/{folder}/{typ[len(prefix):]}.md")
    text = text[text.index("## Schema") :]
    sections = {"": {}}
    current, mode = "", None
    for line in text.splitlines():
        m = re.match(r"^### Nested Schema for `([^`]+)`", line)
        if m:
            current, mode = m.group(1), None
            sections[current] = {}
            continue
        if line.startswith("## ") and not line.startswith("## Schema"):
            break
        m = re.match(r"^(?:### )?(Required|Optional|Read-Only):?$", line.strip())
        if m:
            mode = m.group(1)
            continue
        m = ITEM.match(line)
        if m and mode:
            name, kinds = m.group(1), m.group(2)
            entry = {"Required": {"required": True}, "Optional": {"optional": True}, "Read-Only": {"computed": True}}[mode]
            sections[current][name] = dict(entry, nested_kind=kinds)

    def build(path):
        block = {"attributes": {}, "blocks": {}}
        for name, entry in sections.get(path, {}).items():
            kinds = entry.pop("nested_kind")
            child = f"{path}.{name}" if path else name
            if kinds.startswith("Attributes") and child in sections:
                entry["nested"] = build(child)
            block["attributes"][name] = entry
        return block

    return build("")


def main():
    aws_repo, cloudflare_repo, random_repo = sys.argv[1:4]
    schemas = {p: {"version": v, "resource": {}, "data": {}, "ephemeral": {}} for p, v in PINS.items()}
    for kind, typ in sorted(used_types()):
        provider = typ.split("_")[0]
        if provider == "aws":
            block = aws_schema(aws_repo, kind, typ)
        elif provider == "cloudflare":
            block = doc_schema(cloudflare_repo, f"v{PINS['cloudflare']}", kind, typ, "cloudflare_")
        elif provider == "random":
            block = doc_schema(random_repo, f"v{PINS['random']}", kind, typ, "random_")
        else:
            sys.exit(f"no schema source for {typ}")
        schemas[provider][kind][typ] = block
    with open(os.path.join(HERE, "provider_schemas.json"), "w") as f:
        json.dump(schemas, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{sum(len(s[k]) for s in schemas.values() for k in ('resource', 'data', 'ephemeral'))} types written")


if __name__ == "__main__":
    main()
