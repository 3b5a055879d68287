package v1alpha1

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// The policies of these specs select only the namespaces labelled
// policy-spec=<their own value>: a cluster-scoped policy must not reach
// the suite's other specs, which run in any order.
var _ = Describe("ApiTokenPolicy at admission", Ordered, ContinueOnFailure, func() {
	const (
		capped   = "policy-capped"
		elsewise = "policy-elsewhere"
		label    = "policy-spec"
	)
	ctx := context.Background()

	BeforeAll(func() {
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: capped, Labels: map[string]string{label: "admission"}}})).To(Succeed())
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: elsewise}})).To(Succeed())
	})

	token := func(ns, name string, mutate func(*tokensv1alpha1.ApiTokenSpec)) *tokensv1alpha1.ApiToken {
		at := validToken()
		at.Namespace, at.Name = ns, name
		at.Spec.IdleTimeout = "7d"
		at.Spec.Rotation = &tokensv1alpha1.Rotation{RenewBefore: "3d"}
		if mutate != nil {
			mutate(&at.Spec)
		}
		return at
	}
	// refusedOnceSeen waits until the webhook's cache has the policy, then
	// expects the refusal (a dry run: nothing is stored).
	refusedOnceSeen := func(at *tokensv1alpha1.ApiToken, want string) {
		GinkgoHelper()
		Eventually(func(g Gomega) {
			err := k8s.Create(ctx, at.DeepCopy(), client.DryRunAll)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(ContainSubstring(want))
		}).WithTimeout(10 * time.Second).Should(Succeed())
	}
	newPolicy := func(name, selects string, spec tokensv1alpha1.ApiTokenPolicySpec) *tokensv1alpha1.ApiTokenPolicy {
		spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{label: selects}}
		p := &tokensv1alpha1.ApiTokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
		Expect(k8s.Create(ctx, p)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8s.Delete(ctx, p))).To(Succeed()) })
		return p
	}

	It("creates the tokens that exist before the policy", func() {
		Expect(k8s.Create(ctx, token(capped, "before-policy", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" }))).To(Succeed())
		Expect(k8s.Create(ctx, token(capped, "revoked-long", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration, s.Revoked = "2160h", true }))).To(Succeed())
	})

	for _, c := range []struct {
		rule   string
		mutate func(*tokensv1alpha1.ApiTokenSpec)
		want   string
	}{
		{"maxDuration", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" },
			`spec.duration: Forbidden: ApiTokenPolicy "org-defaults": spec.duration 2160h exceeds maxDuration 720h`},
		{"maxDuration refuses unlimited", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration, s.Rotation = "unlimited", nil },
			`spec.duration: Forbidden: ApiTokenPolicy "org-defaults": spec.duration unlimited is not allowed: maxDuration 720h requires tokens to expire`},
		{"maxIdleTimeout requires one", func(s *tokensv1alpha1.ApiTokenSpec) { s.IdleTimeout = "" },
			`spec.idleTimeout: Forbidden: ApiTokenPolicy "org-defaults": spec.idleTimeout is required: maxIdleTimeout 30d`},
		{"maxIdleTimeout", func(s *tokensv1alpha1.ApiTokenSpec) { s.IdleTimeout = "90d" },
			`spec.idleTimeout: Forbidden: ApiTokenPolicy "org-defaults": spec.idleTimeout 90d exceeds maxIdleTimeout 30d`},
		{"allowedTypes", func(s *tokensv1alpha1.ApiTokenSpec) { s.Type = tokensv1alpha1.FullAccess },
			`spec.type: Forbidden: ApiTokenPolicy "org-defaults": spec.type full-access is not allowed (allowedTypes: read-only)`},
		{"allowedAudiences", func(s *tokensv1alpha1.ApiTokenSpec) { s.Audience = tokensv1alpha1.Admin },
			`spec.audience: Forbidden: ApiTokenPolicy "org-defaults": spec.audience admin is not allowed (allowedAudiences: content-api)`},
		{"requireRenewBefore", func(s *tokensv1alpha1.ApiTokenSpec) { s.Rotation = nil },
			`spec.rotation.renewBefore: Forbidden: ApiTokenPolicy "org-defaults": spec.rotation.renewBefore is required for a token of finite duration (requireRenewBefore)`},
	} {
		It("refuses a create that breaks "+c.rule+", naming the policy; not in a namespace it does not select", func() {
			newPolicy("org-defaults", "admission", tokensv1alpha1.ApiTokenPolicySpec{
				MaxDuration: "720h", MaxIdleTimeout: "30d", RequireRenewBefore: true,
				AllowedTypes: []tokensv1alpha1.TokenType{tokensv1alpha1.ReadOnly}, AllowedAudiences: []tokensv1alpha1.Audience{tokensv1alpha1.ContentAPI},
			})
			refusedOnceSeen(token(capped, "breaks", c.mutate), c.want)
			Expect(k8s.Create(ctx, token(elsewise, "breaks-"+fmt.Sprint(len(c.rule)), c.mutate), client.DryRunAll)).To(Succeed())
			Expect(k8s.Create(ctx, token(capped, "keeps", nil), client.DryRunAll)).To(Succeed())
		})
	}

	It("lets a token created before the policy be edited, fixed and written by the operator, not made worse", func() {
		newPolicy("short-lived", "admission", tokensv1alpha1.ApiTokenPolicySpec{MaxDuration: "720h"})
		refusedOnceSeen(token(capped, "probe", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" }), `ApiTokenPolicy "short-lived"`)
		var at tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: capped, Name: "before-policy"}, &at)).To(Succeed())

		By("the operator's status write")
		at.Status.Phase = tokensv1alpha1.PhaseActive
		Expect(k8s.Status().Update(ctx, &at)).To(Succeed())
		By("a label, and a change of another field")
		at.Labels = map[string]string{"team": "web"}
		at.Spec.Description = "still too long"
		Expect(k8s.Update(ctx, &at)).To(Succeed())
		By("a longer duration is refused")
		longer := at.DeepCopy()
		longer.Spec.Duration = "3000h"
		err := k8s.Update(ctx, longer)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.duration: Forbidden: ApiTokenPolicy "short-lived": spec.duration 3000h exceeds maxDuration 720h`))
		By("a shorter one, still too long, and the fix pass")
		at.Spec.Duration = "60d"
		Expect(k8s.Update(ctx, &at)).To(Succeed())
		at.Spec.Duration = "30d"
		Expect(k8s.Update(ctx, &at)).To(Succeed())
		By("and once fixed, it cannot be made non-compliant again")
		at.Spec.Duration = "60d"
		err = k8s.Update(ctx, &at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`ApiTokenPolicy "short-lived": spec.duration 60d exceeds maxDuration 720h`))
	})

	It("refuses to un-revoke a token that breaks a policy: a new token is issued", func() {
		newPolicy("no-revival", "admission", tokensv1alpha1.ApiTokenPolicySpec{MaxDuration: "720h"})
		refusedOnceSeen(token(capped, "probe", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" }), `ApiTokenPolicy "no-revival"`)
		var at tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: capped, Name: "revoked-long"}, &at)).To(Succeed())
		at.Spec.Revoked = false
		err := k8s.Update(ctx, &at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.duration: Forbidden: ApiTokenPolicy "no-revival": spec.duration 2160h exceeds maxDuration 720h`))
	})

	It("refuses a create beyond maxTokensPerNamespace", func() {
		const ns = "policy-count"
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{label: "count"}}})).To(Succeed())
		newPolicy("two-per-namespace", "count", tokensv1alpha1.ApiTokenPolicySpec{MaxTokensPerNamespace: ptr.To[int32](2)})
		Expect(k8s.Create(ctx, token(ns, "one", nil))).To(Succeed())
		Expect(k8s.Create(ctx, token(ns, "two", nil))).To(Succeed())
		refusedOnceSeen(token(ns, "three", nil),
			`metadata.namespace: Forbidden: ApiTokenPolicy "two-per-namespace": namespace policy-count holds 2 ApiTokens, and maxTokensPerNamespace is 2`)
		By("an update of one of them is no create")
		var one tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "one"}, &one)).To(Succeed())
		one.Spec.Description = "edited"
		Expect(k8s.Update(ctx, &one)).To(Succeed())
	})

	It("refuses every token while a policy cannot be read (fail closed), naming it", func() {
		newPolicy("unreadable", "admission", tokensv1alpha1.ApiTokenPolicySpec{MaxDuration: "30d"})
		p := &tokensv1alpha1.ApiTokenPolicy{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: "unreadable"}, p)).To(Succeed())
		p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: label, Operator: metav1.LabelSelectorOpIn}}}
		Expect(k8s.Update(ctx, p)).To(Succeed())
		refusedOnceSeen(token(elsewise, "any", nil), `spec: Forbidden: ApiTokenPolicy "unreadable": the policy cannot be read (spec.namespaceSelector: `)

		By("deleted, it refuses no more (the suite's other specs run after this one)")
		Expect(k8s.Delete(ctx, p)).To(Succeed())
		Eventually(func() error { return k8s.Create(ctx, token(elsewise, "any", nil), client.DryRunAll) }).WithTimeout(10 * time.Second).Should(Succeed())
	})
})
