package app_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// The operator as users run it: its auth endpoint records the uses it
// accepts (every 200 ms here) and its reconciler acts on them.
var _ = Describe("A grace period that ends when the new token is in use (graceUntilNewTokenUsed)", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace("grace-used")
	})
	spec := tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d",
		Rotation: &tokensv1alpha1.Rotation{GracePeriod: "2m", GraceUntilNewTokenUsed: true}}

	// regenerated creates an ApiToken, regenerates it and returns its
	// key, the previous token and the new one, once the status records
	// the new one as current and the old one in its grace. The new token
	// is not presented: that would be its first use.
	regenerated := func(name string) (types.NamespacedName, string, string) {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: *spec.DeepCopy()}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := types.NamespacedName{Namespace: ns, Name: name}
		var old, fresh string
		Eventually(func(g Gomega) {
			old = tokenIn(g, ns, name+"-token")
			g.Expect(status(authURL+verifyPath, old)).To(Equal(200))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, key, at)).To(Succeed())
			at.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
			g.Expect(k8s.Update(ctx, at)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			fresh = tokenIn(g, ns, name+"-token")
			g.Expect(fresh).NotTo(Equal(old))
			g.Expect(k8s.Get(ctx, key, at)).To(Succeed())
			g.Expect(at.Status.LastHandledRegenerate).To(Equal("1"))
			g.Expect(at.Status.Verification.PendingHash).To(BeEmpty())
			g.Expect(at.Status.Verification.PreviousHash).NotTo(BeEmpty())
		}).Should(Succeed())
		return key, old, fresh
	}
	verification := func(g Gomega, key types.NamespacedName) *tokensv1alpha1.ApiTokenStatus {
		var at tokensv1alpha1.ApiToken
		g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		g.Expect(at.Status.Verification).NotTo(BeNil())
		return &at.Status
	}
	graceEnded := func(g Gomega, name string) []string {
		var list eventsv1.EventList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		var notes []string
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == tokensv1alpha1.ReasonGraceEnded {
				notes = append(notes, e.Note)
			}
		}
		return notes
	}

	It("continues while clients use the old token, and ends within a pass of the new token's first use", func() {
		key, old, fresh := regenerated("used")

		By("clients still on the old token: their uses are recorded, and the grace continues")
		for range 5 {
			Expect(status(authURL+verifyPath, old)).To(Equal(200))
		}
		Eventually(func(g Gomega) {
			g.Expect(verification(g, key).LastUsedAt).NotTo(BeNil())
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(status(authURL+verifyPath, old)).To(Equal(200))
			st := verification(g, key)
			g.Expect(st.Verification.FirstUsedAt).To(BeNil())
			g.Expect(st.Verification.PreviousHash).NotTo(BeEmpty())
		}, "1s", "100ms").Should(Succeed())

		By("one use of the new token: the old one is refused, its hash dropped, and an Event says so")
		used := fakeClock.Now()
		Eventually(func() int { return status(authURL+verifyPath, fresh) }).Should(Equal(200))
		start := time.Now()
		Eventually(func() int { return status(authURL+verifyPath, old) }, "5s", "20ms").Should(Equal(401))
		AddReportEntry("old token refused after the new one's first use", time.Since(start).String())
		Eventually(func(g Gomega) {
			v := verification(g, key).Verification
			g.Expect(v.FirstUsedAt).NotTo(BeNil())
			g.Expect(v.FirstUsedAt.Time).To(BeTemporally("~", used, time.Second))
			g.Expect(v.PreviousHash).To(BeEmpty())
			g.Expect(v.PreviousValidUntil).To(BeNil())
			g.Expect(graceEnded(g, "used")).To(ConsistOf(HavePrefix("The new token was used at " + v.FirstUsedAt.UTC().Format(time.RFC3339) + "; the previous token is refused from now on")))
		}).Should(Succeed())
		Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
		Consistently(func() int { return status(authURL+verifyPath, old) }, "500ms").Should(Equal(401))
	})

	It("lasts gracePeriod when the new token is not used", func() {
		key, old, fresh := regenerated("unused")
		Consistently(func(g Gomega) {
			g.Expect(status(authURL+verifyPath, old)).To(Equal(200))
			g.Expect(verification(g, key).Verification.FirstUsedAt).To(BeNil())
		}, "1s", "100ms").Should(Succeed())
		fakeClock.Step(2*time.Minute - time.Second)
		Expect(status(authURL+verifyPath, old)).To(Equal(200))
		fakeClock.Step(time.Second)
		Expect(status(authURL+verifyPath, old)).To(Equal(401))
		// The reconciler's own wake-up is a real-time requeue; an
		// annotation queues a pass on the suite's fake clock now.
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
			at.Annotations["example.com/touch"] = "1"
			g.Expect(k8s.Update(ctx, &at)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(verification(g, key).Verification.PreviousHash).To(BeEmpty())
		}).Should(Succeed())
		Consistently(func(g Gomega) []string { return graceEnded(g, "unused") }, "500ms").Should(BeEmpty())
		Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
	})
})
