#!/usr/bin/env bash
# coredns.sh builds the cluster DNS of hack/cluster.sh: CoreDNS from its Go
# module with only the plugins the cluster uses (kubernetes, bind, errors,
# health, ready, cache; no forward, so no name is ever resolved off this machine),
# once per version, into the per-user cache, and prints the binary's path.
# With every plugin CoreDNS took 352 s to build here; this main takes a
# fraction of that.
#
# Usage: hack/coredns.sh [--print-path]
#
# Environment: COREDNS_VERSION (default 1.15.0), CLUSTER_CACHE (default
# ${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/cluster).
set -euo pipefail

COREDNS_VERSION=${COREDNS_VERSION:-1.15.0}
CLUSTER_CACHE=${CLUSTER_CACHE:-${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/cluster}
MAIN=$(cat <<'GO'
// Command coredns is CoreDNS with only the plugins the real-node cluster
// uses. A plugin registers itself when its package is imported; the server
// runs the registered ones in CoreDNS's own directive order.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
GO
)
# The cache is keyed by the version and by the plugins main imports.
DIR="$CLUSTER_CACHE/coredns-v${COREDNS_VERSION}-$(printf "%s" "$MAIN" | sha256sum | cut -c1-8)-$(go env GOOS)-$(go env GOARCH)"
BIN=$DIR/coredns

if [[ "${1:-}" == "--print-path" ]]; then
  echo "$BIN"
  exit 0
fi

log() { echo "coredns: $*" >&2; }
LOG_PREFIX=coredns
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

mkdir -p "$DIR"
# One build at a time; a second caller waits and then finds the binary.
exec 9>"$DIR/.lock"
flock 9
if [[ -x $BIN ]]; then
  log "found $BIN"
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
log "building CoreDNS v${COREDNS_VERSION} with the kubernetes, bind, errors, health, ready and cache plugins (once per machine)..."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
printf "%s\n" "$MAIN" >"$work/main.go"
cd "$work"
run "go mod init" go mod init cluster/coredns
run "fetch github.com/coredns/coredns@v${COREDNS_VERSION}" go get "github.com/coredns/coredns@v${COREDNS_VERSION}"
run "go mod tidy" go mod tidy
run "go build" go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v${COREDNS_VERSION}" -o "$BIN.tmp" .
mv "$BIN.tmp" "$BIN"
log "built $BIN in $(($(date +%s) - start)) s"
echo "$BIN"
