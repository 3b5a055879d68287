#!/usr/bin/env bash
# envtest-binaries.sh builds the control-plane binaries the tests and `make run`
# need (etcd, kube-apiserver, kube-controller-manager, kubectl) from Go modules,
# once, into a per-user cache keyed by version, the way setup-envtest keeps its
# binaries under the user's data folder. A second run, even from another clone,
# finds them there and does nothing.
#
# Usage: hack/envtest-binaries.sh [--print-dir] [component...]
#   components: etcd kube-apiserver kube-controller-manager kubectl
#               kube-scheduler kube-proxy kubelet (default: etcd kube-apiserver)
#
# Environment: K8S_VERSION (default 1.37.2), ETCD_VERSION (default 3.6.16),
# ENVTEST_CACHE (default ${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/envtest).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
STAGING_VERSION=0.${K8S_VERSION#1.}
ENVTEST_CACHE=${ENVTEST_CACHE:-${XDG_DATA_HOME:-$HOME/.local/share}/apitoken-operator/envtest}
DIR="$ENVTEST_CACHE/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-$(go env GOOS)-$(go env GOARCH)"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$DIR"
  exit 0
fi

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(etcd kube-apiserver)

mkdir -p "$DIR"
log() { echo "envtest-binaries: $*" >&2; }
LOG_PREFIX=envtest-binaries
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

build_etcd() {
  local mod="$work/etcd"
  mkdir -p "$mod"
  cat >"$mod/main.go" <<'GO'
// Command etcd is etcd's own server entry point, built from Go modules.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  cd "$mod"
  run "etcd: go mod init" go mod init envtest/etcd
  run "etcd: fetch go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}"
  run "etcd: go mod tidy" go mod tidy
  run "etcd: go build" go build -trimpath -o "$DIR/etcd.tmp" .
  cd - >/dev/null
  mv "$DIR/etcd.tmp" "$DIR/etcd"
}

# kubernetes_module prepares a module that requires k8s.io/kubernetes and maps
# every staging module it lists at v0.0.0 to the published v0.x release.
kubernetes_module() {
  local mod="$work/kubernetes"
  [[ -f "$mod/go.mod" ]] && return 0
  mkdir -p "$mod"
  local gomod json
  json=$(mktemp)
  if ! go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" >"$json" 2>&1; then
    log "FAILED: kubernetes: fetch k8s.io/kubernetes@v${K8S_VERSION}"
    log "command: go mod download -json k8s.io/kubernetes@v${K8S_VERSION}"
    tail -n 30 "$json" | sed 's/^/  | /' >&2
    exit 1
  fi
  gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' "$json")
  rm -f "$json"
  [[ -f "$gomod" ]] || { log "FAILED: k8s.io/kubernetes@v${K8S_VERSION} has no go.mod in the module cache"; exit 1; }
  {
    echo "module envtest/kubernetes"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="v${STAGING_VERSION}" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  # -e: k8s.io/kubernetes lists test-only modules that need not resolve for
  # these three commands; a real problem fails the build below, loudly.
  (cd "$mod" && run "kubernetes: go mod tidy" go mod tidy -e)
}

# build_kubernetes builds every named command of k8s.io/kubernetes in one
# go build: the packages they share compile once, and the compiles and the
# links of all of them run in parallel (one build of seven took about as long
# as kube-apiserver's and kube-controller-manager's builds one after the
# other).
build_kubernetes() {
  kubernetes_module
  local ldflags pkgs=() c
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  mkdir -p "$work/out"
  (cd "$work/kubernetes" && run "$*: go build" go build -trimpath -ldflags "$ldflags" -o "$work/out/" "${pkgs[@]}")
  for c in "$@"; do mv "$work/out/$c" "$DIR/$c"; done
}

# One build at a time per part and cache directory (etcd, then Kubernetes,
# always in that order): a second caller waits and then finds the binaries
# ready, and callers that need different parts build them side by side.
etcd=() kubernetes=()
for c in "${components[@]}"; do
  case "$c" in
    etcd) etcd=(etcd) ;;
    kube-apiserver|kube-controller-manager|kubectl|kube-scheduler|kube-proxy|kubelet) kubernetes+=("$c") ;;
    *) log "unknown component $c"; exit 2 ;;
  esac
done

if [[ ${#etcd[@]} -gt 0 ]]; then
  exec 8>"$DIR/.lock-etcd"
  flock 8
  if [[ -x "$DIR/etcd" ]]; then
    log "etcd found in $DIR"
  else
    start=$(date +%s)
    log "building etcd v${ETCD_VERSION} (under a minute)..."
    build_etcd
    log "built etcd in $(( $(date +%s) - start ))s"
  fi
  exec 8>&-
fi

if [[ ${#kubernetes[@]} -gt 0 ]]; then
  exec 9>"$DIR/.lock-kubernetes"
  flock 9
  missing=()
  for c in "${kubernetes[@]}"; do
    if [[ -x "$DIR/$c" ]]; then log "$c found in $DIR"; else missing+=("$c"); fi
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    start=$(date +%s)
    # kube-apiserver alone: about 6 minutes on 2 cores; each further
    # command adds less, as most of its packages are kube-apiserver's too.
    log "building ${missing[*]} v${K8S_VERSION} from k8s.io/kubernetes in one go build (5-12 minutes on 2 cores, once per machine)..."
    build_kubernetes "${missing[@]}"
    log "built ${missing[*]} in $(( $(date +%s) - start ))s"
  fi
fi
echo "$DIR"
