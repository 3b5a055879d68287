package v1alpha1

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/policy"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokenpolicies,verbs=get;list;watch

// CheckPolicies refuses what the ApiTokenPolicies that select the token's
// namespace forbid (policy.Evaluate), each error naming the policy: on
// create every violation and a namespace at its maxTokensPerNamespace
// (counted from r, the operator's cache: concurrent creates can pass it);
// on un-revoke, which issues a new token, every violation; on other
// updates only what the edit makes worse (policy.NewOnUpdate), so that a
// token created before a policy can still be edited and fixed. An error
// reading the policies, the namespace or its tokens is returned, and the
// request refused (fail closed); a cluster without the ApiTokenPolicy CRD
// has no policy to keep to.
func CheckPolicies(ctx context.Context, r client.Reader, old, at *tokensv1alpha1.ApiToken) (field.ErrorList, error) {
	var list tokensv1alpha1.ApiTokenPolicyList
	if err := r.List(ctx, &list); meta.IsNoMatchError(err) {
		// The ApiTokenPolicy CRD is not installed: no policy can exist.
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("listing ApiTokenPolicies: %w", err)
	}
	if len(list.Items) == 0 {
		return nil, nil
	}
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: at.Namespace}, &ns); err != nil {
		return nil, fmt.Errorf("reading namespace %s for its ApiTokenPolicies: %w", at.Namespace, err)
	}
	policies := policy.ParseAll(list.Items)
	found := policy.Evaluate(policies, ns.Labels, &at.Spec)
	switch {
	case old != nil && old.Spec.Revoked && !at.Spec.Revoked:
		// Un-revoking issues a new token: it keeps to every rule, as a
		// create. It adds no ApiToken to the namespace's count.
		return policy.Errors(found), nil
	case old != nil:
		return policy.Errors(policy.NewOnUpdate(policy.Evaluate(policies, ns.Labels, &old.Spec), found)), nil
	}
	count := -1
	for _, p := range policies {
		if _, capped := p.MaxTokens(); !capped || !p.Selects(ns.Labels) {
			continue
		}
		if count < 0 {
			var tokens tokensv1alpha1.ApiTokenList
			if err := r.List(ctx, &tokens, client.InNamespace(at.Namespace)); err != nil {
				return nil, fmt.Errorf("counting the ApiTokens of namespace %s: %w", at.Namespace, err)
			}
			count = countOthers(tokens.Items, at)
		}
		if v := p.CheckCount(at.Namespace, count); v != nil {
			found = append(found, *v)
		}
	}
	return policy.Errors(found), nil
}

// countOthers counts the tokens but at itself (a retried create may find
// its own object in the cache).
func countOthers(tokens []tokensv1alpha1.ApiToken, at *tokensv1alpha1.ApiToken) int {
	n := 0
	for i := range tokens {
		if tokens[i].Name != at.Name {
			n++
		}
	}
	return n
}
