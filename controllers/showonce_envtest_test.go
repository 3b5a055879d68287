package controllers

import (
	"context"
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
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
)

var _ = Describe("A show-once token", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "once-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})
	get := func(g Gomega, key types.NamespacedName) *tokensv1alpha1.ApiToken {
		var at tokensv1alpha1.ApiToken
		g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		return &at
	}
	update := func(key types.NamespacedName, mutate func(*tokensv1alpha1.ApiToken)) {
		Eventually(func(g Gomega) {
			at := get(g, key)
			if at.Annotations == nil {
				at.Annotations = map[string]string{}
			}
			mutate(at)
			g.Expect(k8s.Update(ctx, at)).To(Succeed())
		}).Should(Succeed())
	}
	// create creates a show-once token as the plugin does, and returns the
	// token and proof the plugin opens once the operator sealed them.
	create := func(name string, so tokensv1alpha1.ShowOnce) (types.NamespacedName, string, string) {
		priv, pub, err := showonce.GenerateKey()
		Expect(err).NotTo(HaveOccurred())
		so.PublicKey = pub
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", ShowOnce: &so}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := client.ObjectKeyFromObject(at)
		var tok, proof string
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Status.ShowOnce).NotTo(BeNil())
			g.Expect(at.Status.ShowOnce.Sealed).NotTo(BeEmpty())
			tok, proof, err = showonce.Open(priv, showonce.Binding(ns, name, string(at.UID)), at.Status.ShowOnce.Sealed)
			g.Expect(err).NotTo(HaveOccurred())
		}).Should(Succeed())
		return key, tok, proof
	}
	noSecrets := func() {
		var list corev1.SecretList
		ExpectWithOffset(1, k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		ExpectWithOffset(1, list.Items).To(BeEmpty(), "a show-once token got a Secret")
	}
	noEventHolds := func(secrets ...string) {
		var list eventsv1.EventList
		ExpectWithOffset(1, k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		for _, e := range list.Items {
			for _, s := range secrets {
				ExpectWithOffset(1, strings.Contains(e.Note, s)).To(BeFalse(), "Event %s holds a secret", e.Reason)
			}
		}
	}

	It("is sealed for its creator in status, never in a Secret, and verifies only once picked up with its proof", func() {
		key, tok, proof := create("ci", tokensv1alpha1.ShowOnce{})
		at := get(Default, key)
		Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhasePending))
		Expect(readyReason(at)).To(Equal(tokensv1alpha1.ReasonPickupPending))
		Expect(at.Status.SecretRef).To(BeNil())
		Expect(at.Status.ShowOnce.PickupBy).NotTo(BeNil())
		Expect(verifiesNow(Default, key, tok)).To(BeFalse(), "verifies before its pickup")
		noSecrets()

		By("an acknowledgement without the proof picks nothing up")
		update(key, func(at *tokensv1alpha1.ApiToken) { at.Annotations[tokensv1alpha1.PickedUpAnnotation] = "guessed" })
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, "ci") }).Should(ContainElement(tokensv1alpha1.ReasonPickupRefused))
		at = get(Default, key)
		Expect(at.Status.ShowOnce.PickedUpAt).To(BeNil())
		Expect(at.Status.ShowOnce.Sealed).NotTo(BeEmpty(), "its creator can still pick it up")
		Expect(verifiesNow(Default, key, tok)).To(BeFalse())

		By("the proof picks it up: it verifies, and the box is gone")
		update(key, func(at *tokensv1alpha1.ApiToken) { at.Annotations[tokensv1alpha1.PickedUpAnnotation] = proof })
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
			g.Expect(at.Status.ShowOnce.PickedUpAt).NotTo(BeNil())
			g.Expect(at.Status.ShowOnce.Sealed).To(BeEmpty())
			g.Expect(verifiesNow(g, key, tok)).To(BeTrue())
		}).Should(Succeed())
		Eventually(func(g Gomega) []string { return eventReasons(g, ns, "ci") }).Should(ContainElement(tokensv1alpha1.ReasonPickedUp))
		noSecrets()
		noEventHolds(tok, proof)

		By("revoked, it is refused as any token")
		update(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = true })
		Eventually(func(g Gomega) tokensv1alpha1.Phase { return get(g, key).Status.Phase }).Should(Equal(tokensv1alpha1.PhaseRevoked))
		Expect(verifiesNow(Default, key, tok)).To(BeFalse())
		noSecrets()
	})

	It("that nobody picked up within its window is refused for good", func() {
		key, tok, proof := create("late", tokensv1alpha1.ShowOnce{PickupWindow: "2m"})
		fakeClock.Step(2*time.Minute + time.Second)
		update(key, func(at *tokensv1alpha1.ApiToken) {
			at.Annotations["test/poke"] = strconv.FormatInt(time.Now().UnixNano(), 10)
		})
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseExpired))
			g.Expect(readyReason(at)).To(Equal(tokensv1alpha1.ReasonPickupExpired))
			g.Expect(at.Status.ShowOnce.Sealed).To(BeEmpty())
		}).Should(Succeed())

		By("the right proof, after the window, changes nothing")
		update(key, func(at *tokensv1alpha1.ApiToken) {
			at.Annotations[tokensv1alpha1.PickedUpAnnotation] = proof
			at.Spec.Description = "acknowledged late" // a generation the pass reports as observed
		})
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Status.ObservedGeneration).To(Equal(at.Generation))
		}).Should(Succeed())
		at := get(Default, key)
		Expect(at.Status.ShowOnce.PickedUpAt).To(BeNil())
		Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseExpired))
		Expect(verifiesNow(Default, key, tok)).To(BeFalse())
		noSecrets()
		noEventHolds(tok, proof)
	})

	It("is refused by the schema with a Secret, a rotation, a bad key, or a change of showOnce", func() {
		_, pub, err := showonce.GenerateKey()
		Expect(err).NotTo(HaveOccurred())
		for name, spec := range map[string]tokensv1alpha1.ApiTokenSpec{
			"secret-name": {SecretName: "x"},
			"rotation":    {Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}},
			"template":    {SecretTemplate: &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"a": "b"}}},
		} {
			spec.Type, spec.Duration, spec.ShowOnce = tokensv1alpha1.ReadOnly, "30d", &tokensv1alpha1.ShowOnce{PublicKey: pub}
			err := k8s.Create(ctx, &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec})
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: %v", name, err)
			Expect(err.Error()).To(ContainSubstring("not allowed with showOnce"))
		}
		for _, bad := range []string{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "short", strings.Repeat("A", 44)} {
			err := k8s.Create(ctx, &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "badkey", Namespace: ns},
				Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", ShowOnce: &tokensv1alpha1.ShowOnce{PublicKey: bad}}})
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%q: %v", bad, err)
		}

		key, _, _ := create("fixed", tokensv1alpha1.ShowOnce{})
		_, other, err := showonce.GenerateKey()
		Expect(err).NotTo(HaveOccurred())
		// Merge patches, without a resourceVersion: the operator writes the
		// status meanwhile, and an update would meet a conflict, not the
		// schema.
		refused := func(change func(*tokensv1alpha1.ApiToken)) error {
			at := get(Default, key)
			base := at.DeepCopy()
			change(at)
			return k8s.Patch(ctx, at, client.MergeFrom(base))
		}
		err = refused(func(at *tokensv1alpha1.ApiToken) { at.Spec.ShowOnce.PublicKey = other })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "the public key changed after creation: %v", err)
		err = refused(func(at *tokensv1alpha1.ApiToken) { at.Spec.ShowOnce = nil })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "showOnce removed after creation: %v", err)

		By("revoked, it cannot be un-revoked")
		update(key, func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = true })
		Eventually(func(g Gomega) tokensv1alpha1.Phase { return get(g, key).Status.Phase }).Should(Equal(tokensv1alpha1.PhaseRevoked))
		err = refused(func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = false })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("cannot be un-revoked"))
		noSecrets()
	})
})
