#!/usr/bin/env bash
# make undeploy: delete what `make deploy` (config/default) created.
#
# KEEP_CRD=true (the default) keeps the CustomResourceDefinition, and so
# every ApiToken and, through their owner references, every token Secret;
# and it keeps the namespace apitoken-system, and so the salt Secret that
# the recorded hashes were made with: a later `make deploy` finds every
# token as it was, and every token verifies again.
#
# KEEP_CRD=false deletes everything config/default created, the CRD
# included: the API server then deletes every ApiToken in the cluster, and
# the garbage collector every token Secret. It is `kubectl delete -k
# config/default`.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP_CRD=${KEEP_CRD:-true}
CRD=apitokens.tokens.apitoken.dev
NAMESPACE=apitoken-system

case "$KEEP_CRD" in
true)
  # config/default without its CRD and Namespace: a kustomization next to
  # the repository's (kustomize takes only relative paths), deleted on exit.
  mkdir -p .local
  work=$(mktemp -d .local/undeploy.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  cat >"$work/kustomization.yaml" <<YAML
resources:
- ../../config/default
patches:
- patch: |-
    \$patch: delete
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: $CRD}
- patch: |-
    \$patch: delete
    apiVersion: v1
    kind: Namespace
    metadata: {name: $NAMESPACE}
YAML
  echo "make undeploy: deleting the operator (config/default), keeping CustomResourceDefinition $CRD and Namespace $NAMESPACE"
  kubectl kustomize "$work" | kubectl delete --ignore-not-found -f -
  echo "make undeploy: kept CustomResourceDefinition $CRD: every ApiToken and its token Secret stay (nothing reconciles or verifies them until the next make deploy)"
  echo "make undeploy: kept Namespace $NAMESPACE: the salt Secret apitoken-operator-salt, which the recorded hashes need, stays"
  echo "make undeploy: to delete those too (every ApiToken and token Secret in the cluster): make undeploy KEEP_CRD=false"
  ;;
false)
  echo "make undeploy: KEEP_CRD=false: deleting everything config/default created, CustomResourceDefinition $CRD included:"
  echo "make undeploy: the API server deletes every ApiToken in the cluster, and the garbage collector every token Secret"
  kubectl delete --ignore-not-found -k config/default
  ;;
*)
  echo "make undeploy: KEEP_CRD must be true or false, not '$KEEP_CRD'" >&2
  exit 2
  ;;
esac
