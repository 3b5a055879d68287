package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	platformpolicy "github.com/apitoken-operator/apitoken-operator/internal/policy"
)

// ApiTokenPolicyReconciler keeps an ApiTokenPolicy's status: how many
// ApiTokens of the namespaces it selects break it, and which namespaces
// hold more tokens than it allows. It writes nothing but that status.
type ApiTokenPolicyReconciler struct {
	client.Client
	Clock clock.PassiveClock
}

// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokenpolicies/status,verbs=get;update;patch

// maxNamed is how many tokens or namespaces a Compliant message names.
const maxNamed = 5

// Reconcile counts the policy's non-compliant tokens (policy.Check, as the
// webhook and the ApiToken reconciler ask it) and namespaces over its
// maxTokensPerNamespace, and writes them in status.
func (r *ApiTokenPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	p := &tokensv1alpha1.ApiTokenPolicy{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var namespaces corev1.NamespaceList
	if err := r.List(ctx, &namespaces); err != nil {
		return ctrl.Result{}, err
	}
	var tokens tokensv1alpha1.ApiTokenList
	if err := r.List(ctx, &tokens); err != nil {
		return ctrl.Result{}, err
	}
	base := p.DeepCopy()
	p.Status.ObservedGeneration = p.Generation
	p.Status.NonCompliantTokens, p.Status.Conditions = r.assess(p, namespaces.Items, tokens.Items)
	if equality.Semantic.DeepEqual(base.Status, p.Status) {
		return ctrl.Result{}, nil
	}
	if err := r.Status().Patch(ctx, p, client.MergeFrom(base)); err != nil {
		return ctrl.Result{}, fmt.Errorf("patching status: %w", err)
	}
	logf.FromContext(ctx).V(1).Info("Assessed ApiTokenPolicy", "apitokenpolicy", p.Name, "nonCompliantTokens", p.Status.NonCompliantTokens)
	return ctrl.Result{}, nil
}

// assess returns the count of p's non-compliant tokens (not revoked) and
// its conditions with Compliant set.
func (r *ApiTokenPolicyReconciler) assess(p *tokensv1alpha1.ApiTokenPolicy, namespaces []corev1.Namespace, tokens []tokensv1alpha1.ApiToken) (int32, []metav1.Condition) {
	parsed := platformpolicy.Parse(p)
	selected := map[string]bool{}
	for i := range namespaces {
		selected[namespaces[i].Name] = parsed.Selects(namespaces[i].Labels)
	}
	var bad []string
	perNamespace := map[string]int{}
	for i := range tokens {
		t := &tokens[i]
		if !selected[t.Namespace] {
			continue
		}
		perNamespace[t.Namespace]++
		if !t.Spec.Revoked && len(parsed.Check(&t.Spec)) > 0 {
			bad = append(bad, t.Namespace+"/"+t.Name)
		}
	}
	var over []string
	if max, ok := parsed.MaxTokens(); ok {
		for ns, n := range perNamespace {
			if n > max {
				over = append(over, fmt.Sprintf("%s (%d)", ns, n))
			}
		}
	}
	sort.Strings(bad)
	sort.Strings(over)
	c := metav1.Condition{Type: tokensv1alpha1.ConditionCompliant, ObservedGeneration: p.Generation,
		Status: metav1.ConditionTrue, Reason: tokensv1alpha1.ReasonCompliant, Message: "Every ApiToken of the selected namespaces keeps to the policy"}
	var parts []string
	if err := parsed.Err(); err != nil {
		parts = append(parts, fmt.Sprintf("the policy cannot be read (%v): it refuses every new token and spec change", err))
	}
	if len(bad) > 0 {
		parts = append(parts, fmt.Sprintf("%d ApiTokens break it (they keep working; each has PolicyCompliant False): %s", len(bad), named(bad)))
	}
	if len(over) > 0 {
		parts = append(parts, "namespaces over maxTokensPerNamespace: "+named(over))
	}
	if len(parts) > 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, tokensv1alpha1.ReasonPolicyViolation, strings.Join(parts, "; ")
	}
	conditions := append([]metav1.Condition(nil), p.Status.Conditions...)
	if old := meta.FindStatusCondition(conditions, c.Type); old == nil || old.Status != c.Status {
		c.LastTransitionTime = metav1.NewTime(r.Clock.Now())
	}
	meta.SetStatusCondition(&conditions, c)
	return int32(len(bad)), conditions //nolint:gosec // a count of ApiTokens
}

// named lists the first maxNamed items and how many more there are.
func named(items []string) string {
	if len(items) <= maxNamed {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:maxNamed], ", "), len(items)-maxNamed)
}

// SetupWithManager registers the reconciler: ApiTokenPolicies, and every
// ApiToken change and namespace label change, which re-queue every policy.
func (r *ApiTokenPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&tokensv1alpha1.ApiTokenPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&tokensv1alpha1.ApiToken{}, handler.EnqueueRequestsFromMapFunc(r.allPolicies), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.allPolicies), builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Named("apitokenpolicy").
		Complete(r)
}

// allPolicies returns every ApiTokenPolicy.
func (r *ApiTokenPolicyReconciler) allPolicies(ctx context.Context, _ client.Object) []reconcile.Request {
	var list tokensv1alpha1.ApiTokenPolicyList
	if err := r.List(ctx, &list); err != nil {
		logf.FromContext(ctx).Error(err, "Failed to list ApiTokenPolicies")
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return reqs
}
