#!/usr/bin/env bash
# `wrangler dev` on the bundle infra/edge-build.sh built, for the tests and benchmarks:
#   bash infra/edge/wrangler-dev.sh [--config FILE] [--bundle DIR] [other wrangler dev options...]
# --bundle DIR runs DIR/index.js with the config's bindings instead of the config's `main`: one
# half of a split deployment (edge/build-serve, edge/build-maintenance; infra/edge-build.sh).
# wrangler dev runs a config's [build] command at start, and again as soon as its file watcher
# is ready ("The file edge/src,shared/src changed, restarting build..."), which restarts workerd
# on the same port. Once in a few hundred starts the new workerd binds before the old one has
# let go, and wrangler exits with "Address already in use" (one CI run failed so). The tests
# never edit the sources under a running Worker, so they run it on a copy of the config
# without its [build] table, written beside the bundle, with `main` made absolute.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
config=$root/wrangler.toml bundle=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config | -c) config=$(realpath "$2"); shift 2 ;;
    --config=*) config=$(realpath "${1#--config=}"); shift ;;
    --bundle) bundle=$(realpath -m "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
main=$(sed -n 's/^main *= *"\(.*\)"$/\1/p' "$config")
[ -n "$main" ] || { echo "wrangler-dev.sh: no main = \"...\" in $config" >&2; exit 1; }
main=$(realpath -m "$(dirname "$config")/$main")
[ -z "$bundle" ] || main=$bundle/index.js
[ -f "$main" ] || { echo "wrangler-dev.sh: no $main: build it first (bash infra/edge-build.sh)" >&2; exit 1; }
dev_config=$(dirname "$main")/wrangler-dev.toml
# Written whole, then renamed: Workers started side by side each write the same text.
awk -v main="$main" '
  /^\[/ { skip = ($0 == "[build]") }
  skip { next }
  /^main *=/ { print "main = \"" main "\""; next }
  { print }' "$config" >"$dev_config.$$"
mv -f "$dev_config.$$" "$dev_config"
exec "$root/.tools/node/node_modules/.bin/wrangler" dev --config "$dev_config" "${args[@]}"
