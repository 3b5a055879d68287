#!/usr/bin/env bash
# tools.sh installs the real programs the tests run in front of the auth
# endpoint (beside the envtest binaries of envtest-binaries.sh), once, into a
# per-user cache keyed by version, and prints the path of the binary. A second
# run, even from another clone, finds it there and does nothing.
#
# Usage: hack/tools.sh <tool>
#   tools: caddy     (github.com/caddyserver/caddy/v2/cmd/caddy, CADDY_VERSION, default v2.11.9)
#          promtool  (github.com/prometheus/prometheus/cmd/promtool, PROMTOOL_VERSION, default v0.316.0,
#                     built with -tags remove_all_sd: no service discovery, which
#                     checking and testing rules never use; about half the build)
#
# Environment: TOOLS_CACHE (default ${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/tools).
# On failure it prints the step, the command and the end of its output, and
# exits non-zero.
set -euo pipefail

CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
PROMTOOL_VERSION=${PROMTOOL_VERSION:-v0.316.0}
TOOLS_CACHE=${TOOLS_CACHE:-${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/tools}

log() { echo "tools: $*" >&2; }

LOG_PREFIX=tools
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

tool=${1:-}
case "$tool" in
  caddy)
    dir="$TOOLS_CACHE/caddy-$CADDY_VERSION-$(go env GOOS)-$(go env GOARCH)"
    pkg="github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION"
    tags="" ;;
  promtool)
    dir="$TOOLS_CACHE/promtool-$PROMTOOL_VERSION-$(go env GOOS)-$(go env GOARCH)-nosd"
    pkg="github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
    tags="remove_all_sd" ;;
  *)
    log "usage: hack/tools.sh caddy|promtool"
    exit 2 ;;
esac

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [[ ! -x "$dir/$tool" ]]; then
  log "installing $pkg (a few minutes, once per machine)..."
  start=$(date +%s)
  GOBIN="$dir" GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod run "go install -tags '$tags' $pkg" go install -tags "$tags" "$pkg"
  log "installed $tool in $(($(date +%s) - start))s"
fi
echo "$dir/$tool"
