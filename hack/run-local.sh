#!/usr/bin/env bash
# make run: run the operator against the cluster of the current kubeconfig
# when one answers, or else against a local control plane (hack/localrun).
set -euo pipefail
cd "$(dirname "$0")/.."

go build -o bin/manager ./cmd

if command -v kubectl >/dev/null 2>&1 && { [[ -n "${KUBECONFIG:-}" ]] || [[ -f "$HOME/.kube/config" ]]; } &&
  kubectl version --request-timeout=3s >/dev/null 2>&1; then
  echo "make run: using the cluster of your kubeconfig (context $(kubectl config current-context))"
  echo "make run: installing the CRD; webhooks stay off (the cluster cannot call this machine)"
  kubectl apply --server-side -f config/crd/bases
  kubectl create namespace apitoken-system --dry-run=client -o yaml | kubectl apply --server-side -f -
  kubectl apply --server-side -n default -f config/samples/tokens_v1alpha1_apitoken_full_access.yaml \
    -f config/samples/tokens_v1alpha1_apitoken_read_only.yaml
  exec bin/manager --enable-webhooks=false --namespace=apitoken-system --auth-default-namespaces=default "$@"
fi

echo "make run: no reachable cluster; starting a local one (kubeconfig in .local/kubeconfig)"
exec go run ./hack/localrun "$@"
