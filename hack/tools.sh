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
#          helm      (helm.sh/helm/v3/cmd/helm, HELM_VERSION, default v3.22.0, linked as
#                     helm's Makefile links a release: its version, and its
#                     client-go's Kubernetes version as the default of
#                     `helm template` and `helm lint`, 1.20 otherwise)
#
# Environment: TOOLS_CACHE (default ${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/tools).
# On failure it prints the step, the command and the end of its output, and
# exits non-zero.
set -euo pipefail

CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
PROMTOOL_VERSION=${PROMTOOL_VERSION:-v0.316.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
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
  helm)
    dir="$TOOLS_CACHE/helm-$HELM_VERSION-$(go env GOOS)-$(go env GOARCH)"
    pkg="helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    tags="" ;;
  *)
    log "usage: hack/tools.sh caddy|promtool|helm"
    exit 2 ;;
esac

# helm_ldflags prints the flags helm's own Makefile links a release with.
helm_ldflags() {
  local gomod minor
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  minor=$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod" | cut -d. -f2)
  [[ -n "$minor" ]] || { log "FAILED: no k8s.io/client-go in helm $HELM_VERSION's go.mod ($gomod)"; exit 1; }
  echo "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata=" \
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
}

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [[ ! -x "$dir/$tool" ]]; then
  log "installing $pkg (a few minutes, once per machine)..."
  start=$(date +%s)
  ldflags=""
  if [[ "$tool" == helm ]]; then ldflags=$(GOFLAGS=-mod=mod helm_ldflags); fi
  # Static and -trimpath, as every build of make's (Makefile): the standard
  # library compiled for one is the standard library of all.
  GOBIN="$dir" GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath" run "go install -tags '$tags' $pkg" go install -tags "$tags" -ldflags "$ldflags" "$pkg"
  log "installed $tool in $(($(date +%s) - start))s"
fi
echo "$dir/$tool"
