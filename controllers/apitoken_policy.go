package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	platformpolicy "github.com/apitoken-operator/apitoken-operator/internal/policy"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokenpolicies,verbs=get;list;watch

// policyFinding is what the ApiTokenPolicies say of a pass's token.
type policyFinding struct {
	// selected: at least one policy selects the token's namespace.
	selected   bool
	violations []platformpolicy.Violation
	// err: the policies or the namespace could not be read.
	err error
}

// checkPolicies evaluates the ApiTokenPolicies that select the token's
// namespace (platformpolicy.Evaluate, as the webhook does) for the summary's
// PolicyCompliant condition. It never ends the pass nor changes what it
// does: a policy reports a token, it never cuts, revokes or re-issues it.
// A read that fails is reported as PolicyUnknown.
func (r *ApiTokenReconciler) checkPolicies(ctx context.Context, s *pass) (bool, error) {
	s.policy = r.findPolicies(ctx, s.t)
	if s.policy.err != nil {
		logf.FromContext(ctx).Error(s.policy.err, "Failed to read the ApiTokenPolicies", "apitoken", klog.KObj(s.t))
	}
	return false, nil
}

func (r *ApiTokenReconciler) findPolicies(ctx context.Context, t *tokensv1alpha1.ApiToken) policyFinding {
	var list tokensv1alpha1.ApiTokenPolicyList
	if err := r.List(ctx, &list); meta.IsNoMatchError(err) {
		return policyFinding{} // no ApiTokenPolicy CRD: no policy can exist
	} else if err != nil {
		return policyFinding{selected: true, err: err}
	}
	if len(list.Items) == 0 {
		return policyFinding{}
	}
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: t.Namespace}, &ns); err != nil {
		return policyFinding{selected: true, err: err}
	}
	var f policyFinding
	for _, p := range platformpolicy.ParseAll(list.Items) {
		if p.Selects(ns.Labels) {
			f.selected = true
			f.violations = append(f.violations, p.Check(&t.Spec)...)
		}
	}
	return f
}

// setPolicyCondition sets PolicyCompliant from the pass's finding, and
// records a Warning PolicyViolation Event when the token starts breaking a
// policy or breaks it otherwise. A token no policy selects has no
// PolicyCompliant condition (a cluster without policies writes nothing); a
// revoked one keeps to every policy (it grants nothing).
func setPolicyCondition(s *pass) {
	st, f := &s.t.Status, s.policy
	if !f.selected {
		meta.RemoveStatusCondition(&st.Conditions, tokensv1alpha1.ConditionPolicyCompliant)
		return
	}
	c := metav1.Condition{Type: tokensv1alpha1.ConditionPolicyCompliant, ObservedGeneration: s.t.Generation,
		Status: metav1.ConditionTrue, Reason: tokensv1alpha1.ReasonCompliant, Message: "The token keeps to every ApiTokenPolicy that selects its namespace"}
	switch {
	case f.err != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, tokensv1alpha1.ReasonPolicyUnknown, "Could not read the ApiTokenPolicies: "+f.err.Error()
	case s.t.Spec.Revoked:
		c.Message = "The token is revoked: it grants nothing"
	case len(f.violations) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonPolicyViolation
		c.Message = platformpolicy.Message(f.violations) + ". The token keeps working; change its spec to keep to the policy"
	}
	before := meta.FindStatusCondition(s.base.Status.Conditions, tokensv1alpha1.ConditionPolicyCompliant)
	if c.Status == metav1.ConditionFalse && (before == nil || before.Status != c.Status || before.Message != c.Message) {
		s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonPolicyViolation, c.Message)
	}
	setCondition(st, c, s.now)
}

// tokensForPolicy returns every ApiToken when an ApiTokenPolicy changes:
// a policy's selector may have moved away from a namespace as well as to
// one, and policies change seldom.
func (r *ApiTokenReconciler) tokensForPolicy(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.listTokens(ctx)
}

// tokensForNamespace returns the ApiTokens of a namespace whose labels
// changed: a policy may select it now, or no longer.
func (r *ApiTokenReconciler) tokensForNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	return r.listTokens(ctx, client.InNamespace(o.GetName()))
}

func (r *ApiTokenReconciler) listTokens(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list tokensv1alpha1.ApiTokenList
	if err := r.List(ctx, &list, opts...); err != nil {
		logf.FromContext(ctx).Error(err, "Failed to list ApiTokens after an ApiTokenPolicy or namespace change")
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return reqs
}

// PolicyServed reports whether the API server serves ApiTokenPolicy (its
// CRD is installed). Without it no policy can exist: the operator then
// neither watches policies nor runs their reconciler, and a CRD installed
// later takes effect at admission at once and in reports once the
// operator restarts.
func PolicyServed(mapper meta.RESTMapper) (bool, error) {
	gvk := tokensv1alpha1.GroupVersion.WithKind("ApiTokenPolicy")
	_, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}
