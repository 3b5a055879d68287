package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var _ = Describe("The CRD schema", Ordered, func() {
	const ns = "schema"
	ctx := context.Background()

	BeforeAll(func() {
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	})

	It("accepts every sample", func() {
		files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "tokens_*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(files).To(HaveLen(6))
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			var at tokensv1alpha1.ApiToken
			Expect(yaml.UnmarshalStrict(data, &at)).To(Succeed(), f)
			at.Namespace = ns
			Expect(k8s.Create(ctx, &at)).To(Succeed(), f)
			Expect(at.Spec.Audience).NotTo(BeEmpty(), "audience is defaulted")
		}
	})

	valid := func() *tokensv1alpha1.ApiToken {
		return &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "bad-", Namespace: ns},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		}
	}
	DescribeTable("refuses a bad shape with the API server's message",
		func(mutate func(*tokensv1alpha1.ApiToken), message string) {
			at := valid()
			mutate(at)
			err := k8s.Create(ctx, at)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(testenv.ContainFieldError(message))
		},
		Entry("unknown type", func(a *tokensv1alpha1.ApiToken) { a.Spec.Type = "admin" },
			`spec.type: Unsupported value: "admin": supported values: "read-only", "full-access", "custom"`),
		Entry("custom without scopes", func(a *tokensv1alpha1.ApiToken) { a.Spec.Type = tokensv1alpha1.Custom },
			"spec.scopes: Required value: a custom token must list at least one scope"),
		Entry("scopes on read-only", func(a *tokensv1alpha1.ApiToken) { a.Spec.Scopes = []string{"articles:read"} },
			"spec.scopes: Forbidden: scopes are only allowed with type custom"),
		Entry("malformed scope", func(a *tokensv1alpha1.ApiToken) {
			a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, []string{"articles:read", "orders"}
		}, `spec.scopes[1]: Invalid value: "orders": must be resource[:sub-resource...]:action, e.g. orders:read, table:data:read or articles:findOne; each resource part is * or lower-case, at most 8`),
		Entry("too many scopes", func(a *tokensv1alpha1.ApiToken) {
			a.Spec.Type = tokensv1alpha1.Custom
			for i := 0; i < 65; i++ {
				a.Spec.Scopes = append(a.Spec.Scopes, "a:read")
			}
		}, "spec.scopes: Too many: 65: must have at most 64 items"),
		Entry("zero duration", func(a *tokensv1alpha1.ApiToken) { a.Spec.Duration = "0d" },
			`spec.duration: Invalid value: "0d": must be unlimited or a positive span of days, hours, minutes and seconds, such as 7d, 30d, 90d, 2160h, 1h30m or 30s`),
		Entry("negative duration", func(a *tokensv1alpha1.ApiToken) { a.Spec.Duration = "-1d" },
			`spec.duration: Invalid value: "-1d"`),
		Entry("duration in weeks", func(a *tokensv1alpha1.ApiToken) { a.Spec.Duration = "2w" },
			`spec.duration: Invalid value: "2w"`),
		Entry("missing duration", func(a *tokensv1alpha1.ApiToken) { a.Spec.Duration = "" },
			`spec.duration: Invalid value: "": must be unlimited or a positive span`),
		Entry("audience not a name", func(a *tokensv1alpha1.ApiToken) { a.Spec.Audience = "billing_api" },
			`spec.audience: Invalid value: "billing_api": must be a lower-case name (a DNS label) such as content-api, admin or billing-api`),
		Entry("invalid secretName", func(a *tokensv1alpha1.ApiToken) { a.Spec.SecretName = "My_Secret" },
			`spec.secretName: Invalid value: "My_Secret": must be a valid Secret name`),
		Entry("renewBefore with unlimited", func(a *tokensv1alpha1.ApiToken) {
			a.Spec.Duration, a.Spec.Rotation = "unlimited", &tokensv1alpha1.Rotation{RenewBefore: "7d"}
		}, "spec.rotation.renewBefore: Forbidden: renewBefore needs a finite duration"),
		Entry("gracePeriod in milliseconds", func(a *tokensv1alpha1.ApiToken) {
			a.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: "500ms"}
		}, `spec.rotation.gracePeriod: Invalid value: "500ms": must be a positive span of days, hours, minutes and seconds, such as 30s, 5m, 2h or 7d`),
		Entry("description too long", func(a *tokensv1alpha1.ApiToken) { a.Spec.Description = strings.Repeat("x", 257) },
			"spec.description: Too long: may not be more than 256 bytes"),
	)

	It("accepts Kubernetes/Go duration strings", func() {
		for i, d := range []string{"2160h", "2160h0m0s", "1h30m", "30s"} {
			at := valid()
			at.Name = fmt.Sprintf("go-duration-%d", i)
			at.Spec.Duration = d
			at.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: "30s"}
			Expect(k8s.Create(ctx, at)).To(Succeed(), d)
		}
	})

	It("accepts the scope vocabularies of bkend and Strapi", func() {
		at := valid()
		at.Spec.Type = tokensv1alpha1.Custom
		at.Spec.Scopes = []string{"project:read", "table:data:read", "table:data:delete", "table:*:read", "*:*",
			"articles:find", "articles:findOne", "a:b:c:d:e:f:g:h:read"}
		Expect(k8s.Create(ctx, at)).To(Succeed())
	})

	It("refuses a change of secretName after creation", func() {
		at := valid()
		at.Spec.SecretName = "first"
		Expect(k8s.Create(ctx, at)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(at), at)).To(Succeed())
			at.Spec.SecretName = "second"
			err := k8s.Update(ctx, at)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(testenv.ContainFieldError("spec.secretName: Invalid value: secretName cannot be changed after creation"))
		}).Should(Succeed())
	})
})
