package app_test

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// The operator as users run it: a token it replaced (after its grace) or
// revoked, presented again, is refused as before, counted, and recorded as
// one ReplacedTokenPresented Event per --replaced-token-event-interval
// (the default, 10 minutes, on the suite's fake clock).
var _ = Describe("A replaced or revoked token presented again", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace("replayed")
	})
	spec := tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "2m"}}

	// issued creates an ApiToken and returns its key and token once the
	// auth endpoint accepts it.
	issued := func(name string) (types.NamespacedName, string) {
		Expect(k8s.Create(ctx, &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: *spec.DeepCopy()})).To(Succeed())
		var tok string
		Eventually(func(g Gomega) {
			tok = tokenIn(g, ns, name+"-token")
			g.Expect(status(authURL+verifyPath, tok)).To(Equal(200))
		}).Should(Succeed())
		return types.NamespacedName{Namespace: ns, Name: name}, tok
	}
	edit := func(key types.NamespacedName, mutate func(*tokensv1alpha1.ApiToken)) {
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
			mutate(&at)
			g.Expect(k8s.Update(ctx, &at)).To(Succeed())
		}).Should(Succeed())
	}
	// presented returns the ReplacedTokenPresented Events of name. The
	// operator's recorder (client-go's events broadcaster) folds a second
	// Event of the same reason on the same object into the first as a
	// series (count 2, sent at once), so the count of Events recorded is
	// what recorded returns: one, plus the series count beyond the first.
	presented := func(g Gomega, name string) (notes []string, recorded int32) {
		var list eventsv1.EventList
		g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == tokensv1alpha1.ReasonReplacedTokenPresented {
				g.Expect(e.Type).To(Equal("Warning"))
				notes = append(notes, e.Note)
				recorded++
				if e.Series != nil {
					recorded += e.Series.Count - 1
				}
			}
		}
		return notes, recorded
	}
	presentedEvents := func(g Gomega, name string) []string {
		notes, _ := presented(g, name)
		return notes
	}
	// challenge is the auth endpoint's answer to tok.
	challenge := func(tok string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, authURL+verifyPath, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	counted := func(key types.NamespacedName) float64 {
		families, err := metrics.Registry.Gather()
		Expect(err).NotTo(HaveOccurred())
		for _, f := range families {
			if f.GetName() != "apitoken_replaced_token_presented_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["namespace"] == key.Namespace && labels["name"] == key.Name {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}

	It("is refused as an unknown token once its grace is over, and recorded once per interval", func() {
		key, old := issued("regenerated")
		edit(key, func(at *tokensv1alpha1.ApiToken) {
			at.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
		})
		var fresh string
		Eventually(func(g Gomega) {
			fresh = tokenIn(g, ns, "regenerated-token")
			g.Expect(fresh).NotTo(Equal(old))
			g.Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
			// Promoted: the grace runs from the regeneration's pass on.
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
			g.Expect(at.Status.LastHandledRegenerate).To(Equal("1"))
			g.Expect(at.Status.Verification.PendingHash).To(BeEmpty())
			g.Expect(at.Status.Verification.PreviousHash).NotTo(BeEmpty())
		}).Should(Succeed())
		Expect(status(authURL+verifyPath, old)).To(Equal(200), "in its grace")
		fakeClock.Step(2 * time.Minute)
		// The reconciler's wake-up is a real-time requeue: an annotation
		// queues a pass on the fake clock now.
		edit(key, func(at *tokensv1alpha1.ApiToken) { at.Annotations["example.com/touch"] = "1" })
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
			g.Expect(at.Status.Verification.PreviousHash).To(BeEmpty())
			g.Expect(at.Status.Verification.ReplacedHash).NotTo(BeEmpty())
		}).Should(Succeed())

		By("the answer is an unknown token's, word for word")
		Eventually(func(g Gomega) {
			code, got := challenge(old)
			g.Expect(code).To(Equal(401))
			_, unknown := challenge(mustToken())
			g.Expect(got).To(Equal(unknown))
		}).Should(Succeed())
		before := counted(key)
		for range 20 {
			Expect(status(authURL+verifyPath, old)).To(Equal(401))
		}
		Expect(counted(key)).To(BeNumerically(">=", before+20))

		By("one Event, naming the client, never the token or its hash")
		// Events are listed at a slower pace than the suite's default: the
		// suite's client is shared, and its rate limit with it.
		Eventually(func(g Gomega) []string { return presentedEvents(g, "regenerated") }).WithPolling(200 * time.Millisecond).Should(ConsistOf(
			HavePrefix("A replaced token of this ApiToken was presented from 127.0.0.1 at the authorize endpoint at ")))
		var at tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		Consistently(func(g Gomega) {
			// A second apart: each is a presentation of its own.
			fakeClock.Step(2 * time.Second)
			for range 5 {
				g.Expect(status(authURL+verifyPath, old)).To(Equal(401))
			}
			notes, recorded := presented(g, "regenerated")
			g.Expect(notes).To(HaveLen(1))
			g.Expect(recorded).To(BeEquivalentTo(1), "hammered within the interval")
			for _, secret := range []string{old, fresh, at.Status.Verification.ReplacedHash, at.Status.Verification.Hash} {
				g.Expect(notes[0]).NotTo(ContainSubstring(secret))
			}
		}, "1s", "250ms").Should(Succeed())

		By("another once the interval is over")
		fakeClock.Step(10 * time.Minute)
		Expect(status(authURL+verifyPath, old)).To(Equal(401))
		Eventually(func(g Gomega) int32 {
			_, recorded := presented(g, "regenerated")
			return recorded
		}).WithPolling(200 * time.Millisecond).Should(BeEquivalentTo(2))
		Expect(status(authURL+verifyPath, fresh)).To(Equal(200))
	})

	It("is refused as revoked, and recorded", func() {
		key, tok := issued("revoked")
		edit(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = true })
		Eventually(func(g Gomega) {
			code, got := challenge(tok)
			g.Expect(code).To(Equal(401))
			g.Expect(got).To(ContainSubstring(`error_description="revoked"`))
		}).Should(Succeed())
		Eventually(func(g Gomega) []string { return presentedEvents(g, "revoked") }).WithPolling(200 * time.Millisecond).Should(ConsistOf(
			HavePrefix("A revoked token of this ApiToken was presented from 127.0.0.1 at the authorize endpoint at ")))
	})
})

func mustToken() string {
	tok, err := token.Generate()
	Expect(err).NotTo(HaveOccurred())
	return tok
}
