#!/usr/bin/env bash
# Checks terraform/ without a terraform binary (none can be installed on these machines):
#   1. terraform/tests/test_terraform.py: every file parses (python-hcl2); arguments against the
#      pinned providers' schemas; structure (regions, IAM, CloudFront, replication, examples);
#      variables/outputs typed and described; terraform fmt's layout;
#   2. checkov on terraform/: 0 failed checks (skips are inline, with reasons).
# The artifacts the modules point at must exist first (infra/test.sh builds them):
#   target/lambda/berth-lambda/bootstrap.zip and edge/build-serve/ and edge/build-maintenance/
#   (index.js and index_bg.wasm each); BERTH_TF_SKIP_ARTIFACTS=1 skips looking at them.
# Each tool lives in its own virtualenv under .tools/ (checkov ships its own fork of hcl2, which
# would shadow python-hcl2), created once per machine and reused while the pins are unchanged.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
log() { printf 'terraform checks: %s\n' "$*" >&2; }

HCL2_PIN="python-hcl2==8.1.4"
CHECKOV_PIN="checkov==3.3.30"

venv() { # venv DIR PIN: a virtualenv at DIR with exactly PIN installed
  local dir=$1 pin=$2
  if [ "$(cat "$dir/.berth-pin" 2>/dev/null)" != "$pin" ]; then
    log "pip install $pin into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$pin"
    echo "$pin" >"$dir/.berth-pin"
  fi
}
mkdir -p .tools
venv .tools/tf-hcl2 "$HCL2_PIN"
venv .tools/tf-checkov "$CHECKOV_PIN"

log "structure, schemas and layout (python-hcl2)"
.tools/tf-hcl2/bin/python terraform/tests/test_terraform.py

log "checkov"
# --skip-download: no guidelines from the network (there is none here).
# Through the venv's python, not the script's shebang: pip writes the absolute path of the
# directory the venv was created through into it, and a clone that shares the per-machine cache
# (.tools links there) may be gone by the next run.
out=$(.tools/tf-checkov/bin/python .tools/tf-checkov/bin/checkov -d terraform --framework terraform --skip-download --compact --quiet -o json) || true
summary=$(python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
d = d[0] if isinstance(d, list) else d
s = d["summary"]
print(s["passed"], s["failed"], s["skipped"], s["parsing_errors"])
for c in d["results"]["failed_checks"]:
    print("FAILED", c["check_id"], c["resource"], c["file_path"], file=sys.stderr)
' <<<"$out")
read -r passed failed skipped parse_errors <<<"$summary"
log "checkov: $passed passed, $failed failed, $skipped skipped (inline, with reasons), $parse_errors parsing errors"
[ "$failed" = 0 ] && [ "$parse_errors" = 0 ] && [ "$passed" -gt 100 ] || { log "checkov FAILED"; exit 1; }
log "all passed"
