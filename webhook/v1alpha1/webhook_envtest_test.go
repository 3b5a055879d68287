package v1alpha1

import (
	"context"
	"os"
	"path/filepath"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var _ = Describe("The admission webhooks", Ordered, ContinueOnFailure, func() {
	const ns = "admission"
	ctx := context.Background()

	BeforeAll(func() {
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	})

	as := func(user string, groups ...string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:masters")}
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		return c
	}

	It("accepts the samples and fills the defaults", func() {
		files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "tokens_*.yaml"))
		Expect(files).To(HaveLen(6))
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			var at tokensv1alpha1.ApiToken
			Expect(yaml.UnmarshalStrict(data, &at)).To(Succeed())
			at.Namespace = ns
			Expect(k8s.Create(ctx, &at)).To(Succeed(), f)
			Expect(at.Spec.SecretName).NotTo(BeEmpty())
			Expect(at.Spec.Audience).NotTo(BeEmpty())
		}
		var ro tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "read-only"}, &ro)).To(Succeed())
		Expect(ro.Spec.SecretName).To(Equal("read-only-token"))
		Expect(ro.Spec.Audience).To(Equal(tokensv1alpha1.ContentAPI))
		Expect(ro.Spec.Presentation).To(Equal(tokensv1alpha1.AnyHeader))
	})

	for _, c := range badCases {
		It("refuses: "+c.name, func() {
			at := validToken()
			at.Namespace, at.Name = ns, "bad"
			c.mutate(at)
			err := k8s.Create(ctx, at)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(testenv.ContainFieldError(c.apiMessage()))
		})
	}

	It("refuses an audience named like one of the API server's (--kube-api-audiences: the suite's are k3s's)", func() {
		at := validToken()
		at.Namespace, at.Name, at.Spec.Audience = ns, "named-k3s", "k3s"
		err := k8s.Create(ctx, at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.audience: Invalid value: "k3s": is also an audience of the Kubernetes API server (--kube-api-audiences)`))

		By("and a change of audience to one")
		at = validToken()
		at.Namespace, at.Name = ns, "becomes-k3s"
		Expect(k8s.Create(ctx, at)).To(Succeed())
		at.Spec.Audience = "k3s"
		err = k8s.Update(ctx, at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.audience: Invalid value: "k3s"`))

		By("while kubernetes itself is accepted")
		at = validToken()
		at.Namespace, at.Name, at.Spec.Audience = ns, "kube", "kubernetes"
		Expect(k8s.Create(ctx, at)).To(Succeed())
	})

	It("refuses a second ApiToken using the same Secret", func() {
		at := validToken()
		at.Namespace, at.Name, at.Spec.SecretName = ns, "first-user", "shared"
		Expect(k8s.Create(ctx, at)).To(Succeed())
		at2 := validToken()
		at2.Namespace, at2.Name, at2.Spec.SecretName = ns, "second-user", "shared"
		err := k8s.Create(ctx, at2)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.secretName: Invalid value: "shared": is already used by ApiToken first-user`))
	})

	It("refuses a change of secretName", func() {
		at := validToken()
		at.Namespace, at.Name = ns, "valid"
		Expect(k8s.Create(ctx, at)).To(Succeed())
		for _, c := range badUpdates {
			upd := at.DeepCopy()
			c.mutate(upd)
			err := k8s.Update(ctx, upd)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(testenv.ContainFieldError(c.apiMessage()))
		}
	})

	It("accepts a show-once token without giving it a Secret name, and keeps its showOnce as it was", func() {
		at := validToken()
		at.Namespace, at.Name = ns, "show-once"
		showOnce(showOnceKey)(at)
		Expect(k8s.Create(ctx, at)).To(Succeed())
		Expect(at.Spec.SecretName).To(BeEmpty(), "the defaulter named a Secret for a token that has none")
		Expect(at.Spec.Audience).To(Equal(tokensv1alpha1.ContentAPI))

		By("a second show-once token does not share a Secret name with it")
		other := validToken()
		other.Namespace, other.Name = ns, "show-once-too"
		showOnce(showOnceKey)(other)
		Expect(k8s.Create(ctx, other)).To(Succeed())

		By("its public key cannot change")
		upd := at.DeepCopy()
		_, pub, err := showonce.GenerateKey()
		Expect(err).NotTo(HaveOccurred())
		upd.Spec.ShowOnce.PublicKey = pub
		err = k8s.Update(ctx, upd)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("showOnce cannot be changed after creation"))
	})

	It("returns warnings for duplicate and redundant scopes", func() {
		rec := &warningRecorder{}
		cfg := rest.CopyConfig(env.Config)
		cfg.WarningHandler = rec
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		at := validToken()
		at.Namespace, at.Name = ns, "warned"
		custom("orders:read", "orders:*", "orders:*")(at)
		Expect(c.Create(ctx, at)).To(Succeed())
		Expect(rec.messages()).To(ConsistOf(
			`spec.scopes[2]: "orders:*" duplicates spec.scopes[1]`,
			`spec.scopes[0]: "orders:read" is already granted by "orders:*" (spec.scopes[1])`,
		))
	})

	It("stamps the creator and their groups from the admission request and does not let them be forged or changed", func() {
		alice := as("alice@example.com", "shop-developers", "devs,system:masters")
		at := validToken()
		at.Namespace, at.Name = ns, "stamped"
		at.Annotations = map[string]string{tokensv1alpha1.CreatedByAnnotation: "mallory", tokensv1alpha1.CreatedByGroupsAnnotation: "platform-admins"}
		Expect(alice.Create(ctx, at)).To(Succeed())
		Expect(at.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByAnnotation, "alice@example.com"))
		Expect(at.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByGroupsAnnotation, `["shop-developers","devs,system:masters","system:masters","system:authenticated"]`))

		bob := as("bob@example.com")
		var got tokensv1alpha1.ApiToken
		Expect(bob.Get(ctx, client.ObjectKeyFromObject(at), &got)).To(Succeed())
		got.Annotations[tokensv1alpha1.CreatedByAnnotation] = "bob@example.com"
		got.Spec.Description = "changed by bob"
		Expect(bob.Update(ctx, &got)).To(Succeed())
		Expect(got.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByAnnotation, "alice@example.com"))
		Expect(got.Spec.Description).To(Equal("changed by bob"))

		delete(got.Annotations, tokensv1alpha1.CreatedByAnnotation)
		got.Annotations[tokensv1alpha1.CreatedByGroupsAnnotation] = "platform-admins"
		Expect(bob.Update(ctx, &got)).To(Succeed())
		Expect(got.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByAnnotation, "alice@example.com"))
		Expect(got.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByGroupsAnnotation, `["shop-developers","devs,system:masters","system:masters","system:authenticated"]`))
	})

	It("refuses annotations that read like the creator's but differ in case", func() {
		at := validToken()
		at.Namespace, at.Name = ns, "lookalike"
		at.Annotations = map[string]string{"Tokens.apitoken.dev/created-by": "admin", "tokens.apitoken.dev/Created-By-Groups": "system:masters"}
		err := as("mallory").Create(ctx, at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(And(
			ContainSubstring(`metadata.annotations[Tokens.apitoken.dev/created-by]: Forbidden: keys under tokens.apitoken.dev/ are lower-case: this one reads like tokens.apitoken.dev/created-by`),
			ContainSubstring(`metadata.annotations[tokens.apitoken.dev/Created-By-Groups]: Forbidden`)))
	})

	It("lets revoke and regenerate through while the webhook server is down, and nothing else", func() {
		at := validToken()
		at.Namespace, at.Name = ns, "down"
		Expect(k8s.Create(ctx, at)).To(Succeed())

		By("pointing both webhook configurations at a closed port, as a webhook server that is down")
		var mw admissionregistrationv1.MutatingWebhookConfiguration
		var vw admissionregistrationv1.ValidatingWebhookConfiguration
		Expect(k8s.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, &mw)).To(Succeed())
		Expect(k8s.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, &vw)).To(Succeed())
		mwUp, vwUp := mw.DeepCopy(), vw.DeepCopy()
		dead := func(cc *admissionregistrationv1.WebhookClientConfig) {
			u := "https://127.0.0.1:1/down"
			cc.URL, cc.Service = &u, nil
		}
		for i := range mw.Webhooks {
			dead(&mw.Webhooks[i].ClientConfig)
		}
		for i := range vw.Webhooks {
			dead(&vw.Webhooks[i].ClientConfig)
		}
		Expect(k8s.Update(ctx, &mw)).To(Succeed())
		Expect(k8s.Update(ctx, &vw)).To(Succeed())
		DeferCleanup(func() {
			for _, o := range []client.Object{mwUp, vwUp} {
				Eventually(func() error {
					cur := o.DeepCopyObject().(client.Object)
					if err := k8s.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
						return err
					}
					o.SetResourceVersion(cur.GetResourceVersion())
					return k8s.Update(ctx, o)
				}).Should(Succeed())
			}
		})

		update := func(mutate func(*tokensv1alpha1.ApiToken)) error {
			var cur tokensv1alpha1.ApiToken
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(at), &cur)).To(Succeed())
			mutate(&cur)
			return k8s.Update(ctx, &cur)
		}
		// The API server may take a moment to see the new configuration:
		// a change the webhook must judge is refused once it does.
		Eventually(func() error {
			return update(func(a *tokensv1alpha1.ApiToken) { a.Spec.Description = "needs the webhook" })
		}).Should(MatchError(ContainSubstring("failed calling webhook")))

		Expect(update(func(a *tokensv1alpha1.ApiToken) {
			a.Annotations[tokensv1alpha1.RegenerateAnnotation] = "while-down"
		})).To(Succeed(), "a regenerate request must not wait on the webhook")
		Expect(update(func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = true })).To(Succeed(), "revocation must not wait on the webhook")
		Expect(update(func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = false })).To(MatchError(ContainSubstring("failed calling webhook")), "un-revoking is judged")
		Expect(update(func(a *tokensv1alpha1.ApiToken) {
			a.Annotations[tokensv1alpha1.CreatedByAnnotation] = "mallory"
		})).To(MatchError(ContainSubstring("failed calling webhook")), "created-by is guarded by the webhook")
		Expect(update(func(a *tokensv1alpha1.ApiToken) {
			a.Annotations[tokensv1alpha1.CreatedByGroupsAnnotation] = "system:masters"
		})).To(MatchError(ContainSubstring("failed calling webhook")), "created-by-groups is guarded by the webhook")
		Expect(update(func(a *tokensv1alpha1.ApiToken) {
			delete(a.Annotations, tokensv1alpha1.CreatedByGroupsAnnotation)
		})).To(MatchError(ContainSubstring("failed calling webhook")), "removing created-by-groups is guarded by the webhook")
		Expect(update(func(a *tokensv1alpha1.ApiToken) {
			a.Spec.Revoked = true
			a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.FullAccess, nil
		})).To(MatchError(ContainSubstring("failed calling webhook")), "a revoke that also widens the token is judged")
	})
})

type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warningRecorder) messages() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}
