package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// The policy of this spec selects only the namespaces labelled
// policy-spec=report: it must not reach the suite's other specs.
var _ = Describe("An ApiTokenPolicy over existing tokens", func() {
	const label = "policy-spec"
	ctx := context.Background()

	namespace := func(labels map[string]string) string {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "policy-", Labels: labels}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		return n.Name
	}
	activeToken := func(ns, name, duration string) types.NamespacedName {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: duration}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := client.ObjectKeyFromObject(at)
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, key, at)).To(Succeed())
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
		}).WithTimeout(10 * time.Second).Should(Succeed())
		return key
	}
	compliance := func(g Gomega, key types.NamespacedName) *metav1.Condition {
		var at tokensv1alpha1.ApiToken
		g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		return meta.FindStatusCondition(at.Status.Conditions, tokensv1alpha1.ConditionPolicyCompliant)
	}
	// delivered is what a policy must never change: the Secret's token and
	// the recorded hash.
	delivered := func(g Gomega, key types.NamespacedName) [2]string {
		var at tokensv1alpha1.ApiToken
		g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: at.SecretName()}, &s)).To(Succeed())
		g.Expect(at.Status.Verification).NotTo(BeNil())
		return [2]string{string(s.Data[tokensv1alpha1.SecretTokenKey]), at.Status.Verification.Hash}
	}

	It("reports the tokens it would refuse (condition, one Event, its count) and never touches their Secret or hash", func() {
		selected := namespace(map[string]string{label: "report"})
		other := namespace(nil)
		long := activeToken(selected, "long", "2160h")
		fine := activeToken(selected, "fine", "30d")
		elsewhere := activeToken(other, "long", "2160h")
		before := delivered(Default, long)

		p := &tokensv1alpha1.ApiTokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "report-defaults"}, Spec: tokensv1alpha1.ApiTokenPolicySpec{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{label: "report"}}, MaxDuration: "720h",
		}}
		Expect(k8s.Create(ctx, p)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8s.Delete(ctx, p))).To(Succeed()) })
		want := `ApiTokenPolicy "report-defaults": spec.duration 2160h exceeds maxDuration 720h`

		Eventually(func(g Gomega) {
			c := compliance(g, long)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(tokensv1alpha1.ReasonPolicyViolation))
			g.Expect(c.Message).To(ContainSubstring(want))
		}).WithTimeout(10 * time.Second).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventNotes(g, selected, "long", tokensv1alpha1.ReasonPolicyViolation) }).WithTimeout(10 * time.Second).Should(ConsistOf(ContainSubstring(want)))
		Eventually(func(g Gomega) metav1.ConditionStatus {
			c := compliance(g, fine)
			g.Expect(c).NotTo(BeNil())
			return c.Status
		}).WithTimeout(10 * time.Second).Should(Equal(metav1.ConditionTrue))
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
			g.Expect(p.Status.NonCompliantTokens).To(Equal(int32(1)))
			c := meta.FindStatusCondition(p.Status.Conditions, tokensv1alpha1.ConditionCompliant)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Message).To(ContainSubstring(selected + "/long"))
		}).WithTimeout(10 * time.Second).Should(Succeed())

		By("the token keeps working: the same token in its Secret, the same hash, Active")
		Expect(delivered(Default, long)).To(Equal(before))
		var at tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, long, &at)).To(Succeed())
		Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))

		By("a namespace the policy does not select gets no condition")
		Consistently(func(g Gomega) *metav1.Condition { return compliance(g, elsewhere) }).Should(BeNil())

		By("until its labels make it selected")
		var n corev1.Namespace
		Expect(k8s.Get(ctx, client.ObjectKey{Name: other}, &n)).To(Succeed())
		n.Labels = map[string]string{label: "report"}
		Expect(k8s.Update(ctx, &n)).To(Succeed())
		Eventually(func(g Gomega) string {
			c := compliance(g, elsewhere)
			g.Expect(c).NotTo(BeNil())
			return c.Reason
		}).WithTimeout(10 * time.Second).Should(Equal(tokensv1alpha1.ReasonPolicyViolation))
		Eventually(func(g Gomega) int32 {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			return p.Status.NonCompliantTokens
		}).WithTimeout(10 * time.Second).Should(Equal(int32(2)))

		By("a fix makes it compliant, with no second Event")
		Expect(k8s.Get(ctx, long, &at)).To(Succeed())
		at.Spec.Duration = "30d"
		Expect(k8s.Update(ctx, &at)).To(Succeed())
		Eventually(func(g Gomega) metav1.ConditionStatus { return compliance(g, long).Status }).WithTimeout(10 * time.Second).Should(Equal(metav1.ConditionTrue))
		Expect(eventNotes(Default, selected, "long", tokensv1alpha1.ReasonPolicyViolation)).To(HaveLen(1))

		By("and with the policy gone, no token has the condition")
		Expect(k8s.Delete(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) *metav1.Condition { return compliance(g, elsewhere) }).WithTimeout(10 * time.Second).Should(BeNil())
	})
})
