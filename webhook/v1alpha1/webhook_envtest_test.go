package v1alpha1

import (
	"context"
	"os"
	"path/filepath"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var _ = Describe("The admission webhooks", Ordered, ContinueOnFailure, func() {
	const ns = "admission"
	ctx := context.Background()

	BeforeAll(func() {
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	})

	as := func(user string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:masters"}}
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		return c
	}

	It("accepts the samples and fills the defaults", func() {
		files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "tokens_*.yaml"))
		Expect(files).To(HaveLen(3))
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
	})

	for _, c := range badCases {
		It("refuses: "+c.name, func() {
			at := validToken()
			at.Namespace, at.Name = ns, "bad"
			c.mutate(at)
			err := k8s.Create(ctx, at)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(c.apiMessage()))
		})
	}

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
			Expect(err.Error()).To(ContainSubstring(c.apiMessage()))
		}
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

	It("stamps the creator from the admission request and does not let it be forged or changed", func() {
		alice := as("alice@example.com")
		at := validToken()
		at.Namespace, at.Name = ns, "stamped"
		at.Annotations = map[string]string{tokensv1alpha1.CreatedByAnnotation: "mallory"}
		Expect(alice.Create(ctx, at)).To(Succeed())
		Expect(at.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByAnnotation, "alice@example.com"))

		bob := as("bob@example.com")
		var got tokensv1alpha1.ApiToken
		Expect(bob.Get(ctx, client.ObjectKeyFromObject(at), &got)).To(Succeed())
		got.Annotations[tokensv1alpha1.CreatedByAnnotation] = "bob@example.com"
		got.Spec.Description = "changed by bob"
		Expect(bob.Update(ctx, &got)).To(Succeed())
		Expect(got.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByAnnotation, "alice@example.com"))
		Expect(got.Spec.Description).To(Equal("changed by bob"))

		delete(got.Annotations, tokensv1alpha1.CreatedByAnnotation)
		Expect(bob.Update(ctx, &got)).To(Succeed())
		Expect(got.Annotations).To(HaveKeyWithValue(tokensv1alpha1.CreatedByAnnotation, "alice@example.com"))
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
