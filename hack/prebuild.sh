#!/usr/bin/env bash
# prebuild.sh builds, side by side, every program `make verify` and
# `make test` need and the module's compiled dependencies, each into its own
# cache (the scripts below keep them by version), and prints how long each
# part took. Built one after the other, a cold run kept one of two cores
# idle most of the time: a single go build rarely keeps both busy (links, and
# packages that everything else waits for). Warm, every part finds its
# cache and the whole takes seconds.
#
# Parts (each a script of hack/ or a make target, run as a job of its own):
#   std         the standard library, static and -trimpath (first, alone:
#               every other part shares it)
#   etcd        hack/envtest-binaries.sh etcd
#   kubernetes  hack/envtest-binaries.sh kube-apiserver kube-controller-manager
#               kubectl, and kube-scheduler kubelet kube-proxy for the real node
#   coredns     hack/coredns.sh (the real node's DNS)
#   caddy promtool helm   hack/tools.sh
#   lint-tools  make controller-gen golangci-lint
#   module      go vet ./... (compiles the module's dependencies, test-only
#               ones too, for go test, make image and hack/release)
#   plugin-os   the kubectl plugin for the release's other platforms
#               (hack/release's Platforms; the release test builds them all)
#
# APITOKEN_SKIP_CLUSTER=1 leaves out the real node's parts, as make test does.
# Environment: LOCALBIN (default bin), the caches' variables of the scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

export CGO_ENABLED=${CGO_ENABLED:-0}
case " ${GOFLAGS:-} " in *" -trimpath "*) ;; *) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath" ;; esac
export LOCALBIN=${LOCALBIN:-$PWD/bin}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
begin=$(date +%s)
declare -A pid started
names=()

# start NAME CMD...: runs CMD as a job, its output in a log of its own.
start() {
  local name=$1
  shift
  names+=("$name")
  started[$name]=$(date +%s)
  ("$@" >"$logs/$name.log" 2>&1; echo $? >"$logs/$name.rc"; date +%s >"$logs/$name.end") &
  pid[$name]=$!
}

plugin_platforms() {
  local list
  list=$(sed -n 's/^var Platforms = \[\]string{\(.*\)}$/\1/p' hack/release/main.go | tr -d '",')
  if [[ -z "$list" ]]; then
    echo "prebuild: no 'var Platforms = []string{...}' line in hack/release/main.go" >&2
    return 1
  fi
  local p
  for p in $list; do
    [[ "$p" == "$(go env GOOS)/$(go env GOARCH)" ]] && continue
    echo "building the plugin for $p"
    GOOS=${p%/*} GOARCH=${p#*/} go build -ldflags "-s -w" -o /dev/null ./cmd/kubectl-apitoken
  done
}

start std go build std
wait "${pid[std]}"

k8s=(kube-apiserver kube-controller-manager kubectl)
if [[ "${APITOKEN_SKIP_CLUSTER:-}" != 1 ]]; then k8s+=(kube-scheduler kubelet kube-proxy); fi
start kubernetes hack/envtest-binaries.sh "${k8s[@]}"
start etcd hack/envtest-binaries.sh etcd
[[ "${APITOKEN_SKIP_CLUSTER:-}" == 1 ]] || start coredns hack/coredns.sh
start caddy hack/tools.sh caddy
start promtool hack/tools.sh promtool
start helm hack/tools.sh helm
start lint-tools "${MAKE:-make}" --no-print-directory LOCALBIN="$LOCALBIN" controller-gen golangci-lint
start module go vet ./...
start plugin-os plugin_platforms

failed=()
summary=()
for name in "${names[@]}"; do
  wait "${pid[$name]}" || true
  rc=$(cat "$logs/$name.rc" 2>/dev/null || echo 1)
  took=$(( $(cat "$logs/$name.end" 2>/dev/null || date +%s) - ${started[$name]} ))
  summary+=("$name ${took}s")
  # go vet's findings are make verify's to report; its compiles are done.
  if [[ "$rc" != 0 && "$name" != module ]]; then failed+=("$name"); fi
done

echo "prebuild: $(( $(date +%s) - begin ))s on $(nproc) cores, side by side: ${summary[*]}"
for name in "${failed[@]}"; do
  echo "prebuild: FAILED: $name; the end of its output:" >&2
  tail -n 30 "$logs/$name.log" | sed 's/^/  | /' >&2
done
[[ ${#failed[@]} -eq 0 ]]
