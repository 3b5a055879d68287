package controllers

import (
	"context"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// What a tenant who may edit Secrets and ApiTokens in a namespace can do
// to a token through its Secret and spec.revoked (issue 24, item 2),
// against the real API server and the suite's operator: nothing of it
// keeps a token verifying that should not.
var _ = Describe("A token whose Secret is taken from the operator, or that is revoked and un-revoked", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "taken-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})

	get := func(g Gomega, key types.NamespacedName) *tokensv1alpha1.ApiToken {
		var at tokensv1alpha1.ApiToken
		g.Expect(k8s.Get(ctx, key, &at)).To(Succeed())
		return &at
	}
	secretOf := func(g Gomega, key types.NamespacedName) *corev1.Secret {
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.Name + "-token"}, &s)).To(Succeed())
		return &s
	}
	// issued creates an ApiToken and returns its key and the token its
	// Secret holds once it verifies.
	issued := func(name string) (types.NamespacedName, string) {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := client.ObjectKeyFromObject(at)
		var tok string
		Eventually(func(g Gomega) {
			g.Expect(get(g, key).Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
			tok = string(secretOf(g, key).Data[tokensv1alpha1.SecretTokenKey])
			g.Expect(verifiesNow(g, key, tok)).To(BeTrue())
		}).Should(Succeed())
		return key, tok
	}
	// mergePatch patches obj as kubectl patch --type=merge does.
	mergePatch := func(obj client.Object, patch string) {
		ExpectWithOffset(1, k8s.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))).To(Succeed())
	}
	setRevoked := func(key types.NamespacedName, revoked bool) error {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		return k8s.Patch(ctx, at, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"revoked":`+strconv.FormatBool(revoked)+`}}`)))
	}
	// poke makes the operator look again now (any annotation change does).
	poke := func(key types.NamespacedName) {
		mergePatch(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}},
			`{"metadata":{"annotations":{"test/poke":"`+strconv.FormatInt(time.Now().UnixNano(), 10)+`"}}}`)
	}

	DescribeTable("a Secret whose owner reference is removed: its token stops verifying, nothing brings it back, and a new token follows the Secret's deletion",
		func(patch string) {
			key, old := issued("disowned")
			issuedAt := get(Default, key).Status.IssuedAt
			mergePatch(secretOf(Default, key), patch)
			Eventually(func(g Gomega) {
				g.Expect(verifiesNow(g, key, old)).To(BeFalse(), "the token of a Secret taken from the operator still verifies")
				at := get(g, key)
				g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseFailed))
				g.Expect(readyReason(at)).To(Equal(tokensv1alpha1.ReasonSecretConflict))
			}, 5*time.Second).Should(Succeed())
			Eventually(func(g Gomega) []string { return eventReasons(g, ns, key.Name) }).Should(ContainElement(tokensv1alpha1.ReasonSecretConflict))

			By("a regeneration asked meanwhile keeps nothing alive and touches no foreign Secret")
			mergePatch(get(Default, key), `{"metadata":{"annotations":{"`+tokensv1alpha1.RegenerateAnnotation+`":"after-disown"}}}`)
			Consistently(func(g Gomega) {
				g.Expect(verifiesNow(g, key, old)).To(BeFalse())
				g.Expect(string(secretOf(g, key).Data[tokensv1alpha1.SecretTokenKey])).To(Equal(old))
			}, "1s").Should(Succeed())

			By("the Secret deleted: a new token, in a Secret the ApiToken owns, within the old lifetime")
			Expect(k8s.Delete(ctx, secretOf(Default, key))).To(Succeed())
			poke(key) // the operator looks again every 5 minutes, or when asked
			Eventually(func(g Gomega) {
				at := get(g, key)
				g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
				s := secretOf(g, key)
				g.Expect(metav1.IsControlledBy(s, at)).To(BeTrue())
				cur := string(s.Data[tokensv1alpha1.SecretTokenKey])
				g.Expect(cur).NotTo(Equal(old))
				g.Expect(verifiesNow(g, key, cur)).To(BeTrue())
				g.Expect(at.Status.IssuedAt.Equal(issuedAt)).To(BeTrue(), "a Secret edit extended the token's lifetime")
			}, 5*time.Second).Should(Succeed())
			Expect(verifiesNow(Default, key, old)).To(BeFalse(), "the cut token verifies again")
		},
		Entry("owner reference removed", `{"metadata":{"ownerReferences":null}}`),
		Entry("owner reference and labels removed (the Secret leaves the operator's cache)", `{"metadata":{"ownerReferences":null,"labels":null}}`),
	)

	It("keeps a token whose Secret only lost its labels (still owned): same token, labels put back", func() {
		key, old := issued("unlabelled")
		mergePatch(secretOf(Default, key), `{"metadata":{"labels":null}}`)
		poke(key)
		Eventually(func(g Gomega) map[string]string { return secretOf(g, key).Labels }).Should(HaveKeyWithValue(tokensv1alpha1.ManagedByLabel, tokensv1alpha1.ManagedByValue))
		Consistently(func(g Gomega) {
			g.Expect(verifiesNow(g, key, old)).To(BeTrue())
			g.Expect(get(g, key).Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
		}, "1s").Should(Succeed())
	})

	// holdStatus makes the API server refuse every write of an ApiToken
	// status in ns (a ValidatingAdmissionPolicy), as an operator that is
	// down, failing over or behind a backlog would never write it; release
	// lifts it.
	holdStatus := func(key types.NamespacedName) (release func()) {
		policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "hold-status-"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: key.Namespace}},
					ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{APIGroups: []string{tokensv1alpha1.GroupVersion.Group},
							APIVersions: []string{tokensv1alpha1.GroupVersion.Version}, Resources: []string{"apitokens/status"}},
					}}},
				},
				Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: "held by the test: no ApiToken status is written here"}},
			},
		}
		Expect(k8s.Create(ctx, policy)).To(Succeed())
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
		}
		Expect(k8s.Create(ctx, binding)).To(Succeed())
		release = func() {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, binding))).To(Succeed())
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, policy))).To(Succeed())
		}
		DeferCleanup(release)
		// In force once a status write of the test's own is refused.
		Eventually(func() error {
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
			used := time.Now().UTC().Format(time.RFC3339)
			return k8s.Status().Patch(ctx, at, client.RawPatch(types.MergePatchType, []byte(`{"status":{"lastUsedAt":"`+used+`"}}`)))
		}, 10*time.Second, 100*time.Millisecond).Should(MatchError(ContainSubstring("held by the test")))
		return release
	}

	It("never verifies a revoked token again, even when it is un-revoked before the operator recorded the revocation", func() {
		key, old := issued("flipped")
		release := holdStatus(key)

		Expect(setRevoked(key, true)).To(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(verifiesNow(g, key, old)).To(BeFalse(), "refused at once, through spec.revoked")
			g.Expect(get(g, key).Status.Verification.Hash).NotTo(BeEmpty(), "the hold let the operator record the revocation")
		}, "1s").Should(Succeed())

		By("setting revoked back to false before the operator could record the revocation (a GitOps self-heal, a backlog, a failover)")
		flipBack := setRevoked(key, false)

		release()
		poke(key)
		if flipBack != nil {
			// Refused: a GitOps tool or a person retries, as they would.
			Eventually(func() error { return setRevoked(key, false) }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		}
		var fresh string
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Spec.Revoked).To(BeFalse())
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseActive))
			fresh = string(secretOf(g, key).Data[tokensv1alpha1.SecretTokenKey])
			g.Expect(verifiesNow(g, key, fresh)).To(BeTrue())
		}, 10*time.Second).Should(Succeed())
		Expect(verifiesNow(Default, key, old)).To(BeFalse(), "the revoked token verifies again")
		Expect(fresh).NotTo(Equal(old), "un-revoking must issue a new token")
		Expect(eventReasons(Default, ns, key.Name)).To(ContainElements(tokensv1alpha1.ReasonRevoked, tokensv1alpha1.ReasonUnrevoked))
		Expect(flipBack).To(MatchError(ContainSubstring("spec.revoked: Forbidden: cannot be set back to false until the operator has recorded the revocation")),
			"the API server lets an un-revoke in before the revocation is recorded")
	})

	It("reports InvalidSpec for a duration the CRD accepts and the operator cannot parse, and never lets the token verify without an expiry", func() {
		key, old := issued("unreadable")
		expires := get(Default, key).Status.ExpiresAt
		mergePatch(get(Default, key), `{"spec":{"duration":"`+unparseableDuration+`"}}`)
		Eventually(func(g Gomega) {
			at := get(g, key)
			g.Expect(at.Status.Phase).To(Equal(tokensv1alpha1.PhaseFailed))
			g.Expect(readyReason(at)).To(Equal(tokensv1alpha1.ReasonInvalidSpec))
			g.Expect(verifiesNow(g, key, old)).To(BeFalse(), "the token verifies under a duration the operator cannot read")
			g.Expect(at.Status.ExpiresAt.Equal(expires)).To(BeTrue(), "expiresAt moved from %v to %v", expires, at.Status.ExpiresAt)
		}).Should(Succeed())

		By("a new ApiToken with that duration gets no token")
		fresh := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "unreadable-new", Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: unparseableDuration}}
		Expect(k8s.Create(ctx, fresh)).To(Succeed())
		Eventually(func(g Gomega) {
			at := get(g, client.ObjectKeyFromObject(fresh))
			g.Expect(readyReason(at)).To(Equal(tokensv1alpha1.ReasonInvalidSpec))
			g.Expect(at.Status.Verification).To(BeNil())
		}).Should(Succeed())
	})
})
