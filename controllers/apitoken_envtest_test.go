package controllers

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// verifiesNow asks the auth endpoint's own index, fed the ApiToken as the
// API server holds it, whether tok verifies at the fake clock's time.
func verifiesNow(g Gomega, key types.NamespacedName, tok string) bool {
	var at tokensv1alpha1.ApiToken
	g.Expect(k8s.Get(context.Background(), key, &at)).To(Succeed())
	ix := authserver.NewIndex(saltStore.Hasher)
	ix.Upsert(&at)
	_, v := ix.Lookup(tok, fakeClock.Now())
	return v == authserver.Valid
}

var _ = Describe("The ApiToken reconciler", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "rec-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})

	newToken := func(name string, spec tokensv1alpha1.ApiTokenSpec) types.NamespacedName {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		return client.ObjectKeyFromObject(at)
	}
	get := func(g Gomega, key types.NamespacedName) *tokensv1alpha1.ApiToken {
		var at tokensv1alpha1.ApiToken
		g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		return &at
	}
	secretToken := func(g Gomega, key types.NamespacedName) string {
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.Name + "-token"}, &s)).To(Succeed())
		return string(s.Data["token"])
	}
	// activeToken waits until the Secret holds a token that verifies, and returns it.
	activeToken := func(key types.NamespacedName) string {
		var tok string
		Eventually(func(g Gomega) {
			g.Expect(get(g, key).Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
			tok = secretToken(g, key)
			g.Expect(verifiesNow(g, key, tok)).To(BeTrue())
		}).Should(Succeed())
		return tok
	}
	patch := func(key types.NamespacedName, mutate func(*tokensv1alpha1.ApiToken)) {
		Eventually(func(g Gomega) {
			at := get(g, key)
			mutate(at)
			g.Expect(k8s.Update(ctx, at)).To(Succeed())
		}).Should(Succeed())
	}
	annotate := func(key types.NamespacedName, k, v string) {
		patch(key, func(at *tokensv1alpha1.ApiToken) {
			if at.Annotations == nil {
				at.Annotations = map[string]string{}
			}
			at.Annotations[k] = v
		})
	}
	// poke makes the reconciler look again after the fake clock moved
	// (any annotation change triggers a pass).
	poke := func(key types.NamespacedName) {
		annotate(key, "test/poke", strconv.FormatInt(time.Now().UnixNano(), 10))
	}

	It("records a PermissionsChanged Event from the old grant to the new one when a live token's power changes", func() {
		key := newToken("power", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: []string{"articles:read"}, Duration: "30d"})
		tok := activeToken(key)
		Expect(eventReasons(Default, ns, "power")).NotTo(ContainElement(tokensv1alpha1.ReasonPermissionsChanged), "issuing is not a change")
		patch(key, func(at *tokensv1alpha1.ApiToken) {
			at.Spec.Scopes = []string{"articles:read", "orders:delete"}
			at.Spec.Audience = "billing-api"
		})
		Eventually(func(g Gomega) []string { return eventNotes(g, ns, "power", tokensv1alpha1.ReasonPermissionsChanged) }).Should(ConsistOf(
			"The token's permissions changed from custom [articles:read] for content-api to custom [articles:read orders:delete] for billing-api"))
		Eventually(func(g Gomega) []string { return get(g, key).Status.Granted.Scopes }).Should(Equal([]string{"articles:read", "orders:delete"}))
		Expect(secretToken(Default, key)).To(Equal(tok), "the same token, with new power")
		patch(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.Description = "only words" })
		Consistently(func(g Gomega) []string { return eventNotes(g, ns, "power", tokensv1alpha1.ReasonPermissionsChanged) }, "1s").Should(HaveLen(1))
	})

	It("records exactly one Event, Generated, for a new token", func() {
		for i := 0; i < 5; i++ {
			newToken(fmt.Sprintf("once-%d", i), tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		}
		for i := 0; i < 5; i++ {
			activeToken(types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("once-%d", i)})
		}
		Consistently(func(g Gomega) []string {
			var all []string
			for i := 0; i < 5; i++ {
				all = append(all, eventReasons(g, ns, fmt.Sprintf("once-%d", i))...)
			}
			return all
		}, "2s").Should(ConsistOf("Generated", "Generated", "Generated", "Generated", "Generated"))
	})

	It("delivers a token into an owned, labelled Secret and fills the status", func() {
		key := newToken("create", tokensv1alpha1.ApiTokenSpec{
			Type: tokensv1alpha1.ReadOnly, Duration: "30d",
			SecretTemplate: &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"reloader": "on"}},
		})
		activeToken(key)
		at := get(Default, key)
		Expect(at.Status.SecretRef.Name).To(Equal("create-token"))
		Expect(at.Status.ExpiresAt.Sub(at.Status.IssuedAt.Time)).To(Equal(30 * 24 * time.Hour))
		Expect(at.Status.ObservedGeneration).To(Equal(at.Generation))
		var s corev1.Secret
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "create-token"}, &s)).To(Succeed())
		Expect(s.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "apitoken-operator"))
		Expect(s.Labels).To(HaveKeyWithValue("tokens.apitoken.dev/apitoken", "create"))
		Expect(s.Labels).To(HaveKeyWithValue("team", "a"))
		Expect(s.Annotations).To(HaveKeyWithValue("reloader", "on"))
		Expect(metav1.IsControlledBy(&s, at)).To(BeTrue())

		By("keeping the template in sync")
		patch(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.SecretTemplate.Labels["tier"] = "gold" })
		Eventually(func(g Gomega) {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "create-token"}, &s)).To(Succeed())
			g.Expect(s.Labels).To(HaveKeyWithValue("tier", "gold"))
		}).Should(Succeed())
	})

	It("expires the token at its deadline on the fake clock", func() {
		key := newToken("expiry", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Duration: "1h"})
		tok := activeToken(key)
		fakeClock.Step(61 * time.Minute)
		poke(key)
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseExpired))
			g.Expect(at.Status.Conditions).To(ContainElement(And(
				HaveField("Type", "Ready"), HaveField("Status", metav1.ConditionFalse), HaveField("Reason", "Expired"))))
		}).Should(Succeed())
		Expect(verifiesNow(Default, key, tok)).To(BeFalse())
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, "expiry") }).Should(ContainElement("Expired"))

		By("regenerating an expired token, which resets issuedAt")
		annotate(key, tokensv1alpha1.RegenerateAnnotation, "after-expiry")
		fresh := activeToken(key)
		Expect(fresh).NotTo(Equal(tok))
	})

	It("regenerates once per annotation value and keeps the old token for the grace period", func() {
		key := newToken("regen", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}})
		old := activeToken(key)
		annotate(key, tokensv1alpha1.RegenerateAnnotation, "1")
		var fresh string
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Status.LastHandledRegenerate).To(Equal("1"))
			fresh = secretToken(g, key)
			g.Expect(fresh).NotTo(Equal(old))
			g.Expect(verifiesNow(g, key, fresh)).To(BeTrue())
		}).Should(Succeed())
		Expect(get(Default, key).Annotations).To(HaveKeyWithValue(tokensv1alpha1.RegenerateAnnotation, "1"), "the annotation is never removed")
		Expect(verifiesNow(Default, key, old)).To(BeTrue(), "the old token is valid inside the grace period")

		By("re-applying the same value, which does nothing")
		poke(key)
		Consistently(func(g Gomega) string { return secretToken(g, key) }, "2s").Should(Equal(fresh))

		By("ending the grace period")
		fakeClock.Step(5 * time.Minute)
		poke(key)
		Eventually(func(g Gomega) string { return get(g, key).Status.Verification.PreviousHash }).Should(BeEmpty())
		Expect(verifiesNow(Default, key, old)).To(BeFalse())
		Expect(verifiesNow(Default, key, fresh)).To(BeTrue())
	})

	It("rotates on its own renewBefore the expiry", func() {
		key := newToken("renew", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "10h", Rotation: &tokensv1alpha1.Rotation{RenewBefore: "2h"}})
		old := activeToken(key)
		fakeClock.Step(8 * time.Hour)
		poke(key)
		Eventually(func(g Gomega) {
			g.Expect(secretToken(g, key)).NotTo(Equal(old))
			g.Expect(get(g, key).Status.LastRegeneratedAt).NotTo(BeNil())
		}).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, "renew") }).Should(ContainElement("Rotated"))
	})

	It("revokes at once and issues a brand-new token when un-revoked", func() {
		key := newToken("revoke", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		old := activeToken(key)
		patch(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = true })
		Eventually(func(g Gomega) {
			g.Expect(get(g, key).Status.Phase).To(Equal(tokensv1alpha1.PhaseRevoked))
			g.Expect(secretToken(g, key)).To(BeEmpty())
		}).Should(Succeed())
		patch(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = false })
		fresh := activeToken(key)
		Expect(fresh).NotTo(Equal(old))
		Expect(verifiesNow(Default, key, old)).To(BeFalse())
	})

	It("re-issues when the Secret is deleted or edited, and never touches a foreign Secret", func() {
		key := newToken("tamper", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		first := activeToken(key)
		secretKey := types.NamespacedName{Namespace: ns, Name: "tamper-token"}

		Expect(k8s.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretKey.Name, Namespace: ns}})).To(Succeed())
		var second string
		Eventually(func(g Gomega) {
			second = secretToken(g, key)
			g.Expect(second).NotTo(Equal(first))
			g.Expect(verifiesNow(g, key, second)).To(BeTrue())
		}).Should(Succeed())

		forged, _ := token.Generate()
		Eventually(func(g Gomega) {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, secretKey, &s)).To(Succeed())
			s.Data["token"] = []byte(forged)
			g.Expect(k8s.Update(ctx, &s)).To(Succeed())
		}).Should(Succeed())
		// The pass that sees the forged Secret may run on a cache that still
		// holds the second token's pending write: it cuts nothing on that
		// stale view and looks again after staleViewRetry (1 s), so this
		// waits longer than that one retry.
		Eventually(func(g Gomega) {
			cur := secretToken(g, key)
			g.Expect(cur).NotTo(Or(Equal(forged), Equal(second)))
			g.Expect(verifiesNow(g, key, cur)).To(BeTrue())
		}, "10s").Should(Succeed())
		Expect(verifiesNow(Default, key, forged)).To(BeFalse())
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, "tamper") }).Should(ContainElements("SecretMissing", "SecretTampered"))

		By("refusing a foreign Secret of the same name")
		Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: ns}, StringData: map[string]string{"token": "keep-me"}})).To(Succeed())
		fk := newToken("foreign", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", SecretName: "theirs"})
		Eventually(func(g Gomega) {
			at := get(g, fk)
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseFailed))
			g.Expect(at.Status.Conditions).To(ContainElement(HaveField("Reason", "SecretConflict")))
		}).Should(Succeed())
		var s corev1.Secret
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "theirs"}, &s)).To(Succeed())
		Expect(string(s.Data["token"])).To(Equal("keep-me"))
		Expect(s.OwnerReferences).To(BeEmpty())
	})

	It("garbage-collects the Secret when the ApiToken is deleted", func() {
		key := newToken("gone", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		activeToken(key)
		Expect(k8s.Delete(ctx, &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: ns}})).To(Succeed())
		Eventually(func() bool {
			err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gone-token"}, &corev1.Secret{})
			return apierrors.IsNotFound(err)
		}, "20s").Should(BeTrue())
	})

	It("re-issues every token without grace when the salt Secret changes", func() {
		keys := []types.NamespacedName{
			newToken("salt-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "1h"}}),
			newToken("salt-b", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Duration: "unlimited"}),
		}
		olds := []string{activeToken(keys[0]), activeToken(keys[1])}
		Eventually(func(g Gomega) {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, saltStore.Ref(), &s)).To(Succeed())
			// At least salt.MinSize bytes: a later operator of the suite
			// starts from this Secret, and refuses a weak salt.
			s.Data["salt"] = []byte(fmt.Sprintf("rotated-%d-%s", time.Now().UnixNano(), strings.Repeat("x", salt.MinSize)))
			g.Expect(k8s.Update(ctx, &s)).To(Succeed())
		}).Should(Succeed())
		// A salt change re-issues every token the suite created so far
		// (dozens, in random order): these two may come last.
		for i, key := range keys {
			Eventually(func(g Gomega) {
				cur := secretToken(g, key)
				// Compared without Equal, whose failure would print the token.
				g.Expect(cur == olds[i]).To(BeFalse(), "%s: the Secret still holds the token from before the salt change", key.Name)
				g.Expect(verifiesNow(g, key, cur)).To(BeTrue())
				g.Expect(verifiesNow(g, key, olds[i])).To(BeFalse())
				// Every token of the suite is re-issued, each on a live
				// read: a bound for a loaded machine, not a timing claim.
			}, "30s").Should(Succeed())
		}
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, "salt-a") }, "30s").Should(ContainElement("SaltRotated"))
	})

})

// eventReasons lists the reasons of the Events about one ApiToken.
// eventNotes are the notes of the Events with the given reason about name.
func eventNotes(g Gomega, ns, name, reason string) []string {
	var list eventsv1.EventList
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

func eventReasons(g Gomega, ns, name string) []string {
	var list eventsv1.EventList
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

var _ = Describe("The cache's digest of a token Secret", func() {
	// The reconciler trusts the digest annotation only because no object
	// on the API server can carry it: a Secret writer who plants one
	// (copying a hash from the ApiToken's status) must be refused.
	It("cannot be planted through the API server", func() {
		ctx := context.Background()
		planted := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "planted", Namespace: operatorNamespace,
			Annotations: map[string]string{digestKey: "\x07\x00"}}}
		err := k8s.Create(ctx, planted)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "creating a Secret with the digest annotation: %v", err)
		Expect(err.Error()).To(ContainSubstring("metadata.annotations"))
	})
})
