package controllers

import (
	"context"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

var _ = Describe("The Secret's rendered keys (spec.secretTemplate.data)", func() {
	It("are written with the token, change with every new token, are written back when edited, and are emptied on revocation", func() {
		ctx := context.Background()
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "data-"}}
		Expect(k8s.Create(ctx, n)).To(Succeed())
		spec := dataSpec()
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "rendered", Namespace: n.Name}, Spec: spec}
		Expect(k8s.Create(ctx, at)).To(Succeed())
		key := client.ObjectKeyFromObject(at)
		secretKey := types.NamespacedName{Namespace: n.Name, Name: "rendered-token"}
		secret := func(g Gomega) *corev1.Secret {
			var s corev1.Secret
			g.Expect(k8s.Get(ctx, secretKey, &s)).To(Succeed())
			return &s
		}
		// rendered waits until the Secret holds a verifying token and its
		// four renderings, and returns the token.
		rendered := func(not string) string {
			var tok string
			Eventually(func(g Gomega) {
				s := secret(g)
				tok = string(s.Data["token"])
				g.Expect(tok).NotTo(Or(BeEmpty(), Equal(not)))
				g.Expect(verifiesNow(g, key, tok)).To(BeTrue())
				g.Expect(s.Data).To(HaveLen(5))
				g.Expect(string(s.Data["API_KEY"])).To(Equal(tok))
				g.Expect(string(s.Data["authorization"])).To(Equal("Bearer " + tok))
				g.Expect(string(s.Data["app.env"])).To(Equal("BILLING_TOKEN=" + tok + "\n"))
				g.Expect(string(s.Data["token.json"])).To(HavePrefix(`{"token":"` + tok + `","name":"rendered","namespace":"` + n.Name + `","audience":"billing-api","expiresAt":"`))
			}).Should(Succeed())
			return tok
		}
		first := rendered("")

		By("a regeneration changes every key; the previous token, in its grace, is in none")
		Eventually(func(g Gomega) {
			var cur tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &cur)).To(Succeed())
			cur.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
			g.Expect(k8s.Update(ctx, &cur)).To(Succeed())
		}).Should(Succeed())
		second := rendered(first)
		Eventually(func(g Gomega) { g.Expect(verifiesNow(g, key, first)).To(BeTrue()) }).Should(Succeed())
		for k, v := range secret(Default).Data {
			Expect(strings.Contains(string(v), first)).To(BeFalse(), "key %s holds the previous token", k)
		}

		By("an edited rendered key is written back from the same token")
		Eventually(func(g Gomega) {
			s := secret(g)
			s.Data["authorization"] = []byte("Bearer attacker")
			g.Expect(k8s.Update(ctx, s)).To(Succeed())
		}).Should(Succeed())
		Expect(rendered(first)).To(Equal(second))

		By("a revocation empties every key")
		Eventually(func(g Gomega) {
			var cur tokensv1alpha1.ApiToken
			g.Expect(k8s.Get(ctx, key, &cur)).To(Succeed())
			cur.Spec.Revoked = true
			g.Expect(k8s.Update(ctx, &cur)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			s := secret(g)
			g.Expect(s.Data).To(HaveLen(5))
			for k, v := range s.Data {
				g.Expect(v).To(BeEmpty(), "key %s", k)
			}
		}).Should(Succeed())
		Expect(verifiesNow(Default, key, second)).To(BeFalse())
	})
})
