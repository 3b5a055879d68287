#!/usr/bin/env bash
# make run: run the operator against a local control plane (hack/localrun).
# It uses the cluster of your kubeconfig only when asked to:
#   make run CLUSTER=current
# and then prints what it will create there, and removes it again when it
# stops (Ctrl-C, SIGTERM, or the operator exiting).
#
# Usage: hack/run-local.sh [localrun flags] [-- operator flags]
#   localrun flags: -state DIR, -listen-address HOST (default 127.0.0.1: every
#   port of the operator on loopback only; 0.0.0.0 for every interface),
#   -auth-bind-address ADDR (go run ./hack/localrun -h)
set -euo pipefail
cd "$(dirname "$0")/.."

go build -o bin/manager ./cmd
go build -o bin/localrun ./hack/localrun
# exec: Ctrl-C and SIGTERM reach localrun itself, which cleans up.
exec bin/localrun -cluster="${CLUSTER:-}" "$@"
