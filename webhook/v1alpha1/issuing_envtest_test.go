package v1alpha1

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// applyYAML creates every object of a multi-document YAML as the admin.
func applyYAML(ctx context.Context, data []byte) {
	_, err := testenv.CreateYAML(ctx, k8s, data)
	Expect(err).NotTo(HaveOccurred())
}

// docExamples returns the ```yaml blocks of a section of a page under
// docs/ (the first whose heading starts with section), in order: the tests
// apply exactly what users copy.
func docExamples(page, section string) []string {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", page))
	Expect(err).NotTo(HaveOccurred())
	doc := string(data)
	start := strings.Index(doc, "\n"+section)
	Expect(start).NotTo(BeNumerically("<", 0), "docs/%s has a section %q", page, section)
	end := strings.Index(doc[start+1:], "\n## ")
	if end < 0 {
		end = len(doc)
	} else {
		end += start + 1
	}
	var out []string
	for rest := doc[start:end]; ; {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			return out
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		out = append(out, rest[:j])
		rest = rest[j+3:]
	}
}

var _ = Describe("Issuing power (SubjectAccessReview against the real RBAC authorizer)", Ordered, func() {
	const ns = "shop"
	ctx := context.Background()
	// as impersonates a user with groups: only RBAC decides what they may do.
	as := func(user string, groups ...string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		return c
	}
	tok := func(name string, mutate func(*tokensv1alpha1.ApiToken)) *tokensv1alpha1.ApiToken {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}}
		if mutate != nil {
			mutate(at)
		}
		return at
	}
	var examples []string

	BeforeAll(func() {
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "issuer_roles.yaml"))
		Expect(err).NotTo(HaveOccurred())
		applyYAML(ctx, data)
		// Everyone in this namespace may create and edit ApiTokens, which
		// alone issues nothing.
		Expect(k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tokens-editors", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "apitoken-edit"},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:authenticated"}}})).To(Succeed())
		Expect(k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "tokens-viewers", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "apitoken-view"},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:authenticated"}}})).To(Succeed())
		examples = docExamples("admission.md", "## Issuing power")
		Expect(examples).To(HaveLen(3), "docs/admission.md's three examples")
	})

	type row struct {
		name   string
		client func() client.Client
		token  *tokensv1alpha1.ApiToken
		// refused is the exact message ("" to be accepted).
		refused string
	}
	run := func(rows []row) {
		for _, r := range rows {
			err := r.client().Create(ctx, r.token)
			if r.refused == "" {
				Expect(err).NotTo(HaveOccurred(), r.name)
				continue
			}
			Expect(err).To(HaveOccurred(), r.name)
			Expect(err.Error()).To(ContainSubstring(r.refused), r.name)
		}
	}
	alice := func() client.Client { return as("alice") }

	It("refuses everything to a user who may only create ApiTokens", func() {
		run([]row{
			{"1 read-only", alice, tok("a1", nil), `spec.type: Forbidden: user alice may not issue *:read in namespace shop (needs verb read on scopes.tokens.apitoken.dev (every name))`},
			{"2 custom orders:delete", alice, tok("a2", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, []string{"orders:delete"}
			}), `spec.scopes[0]: Forbidden: user alice may not issue orders:delete in namespace shop (needs verb delete on scopes.tokens.apitoken.dev "orders")`},
			{"3 full-access", alice, tok("a3", func(a *tokensv1alpha1.ApiToken) { a.Spec.Type = tokensv1alpha1.FullAccess }),
				`spec.type: Forbidden: user alice may not issue *:* in namespace shop (needs verb * on scopes.tokens.apitoken.dev (every name))`},
			{"3b a show-once token: the same ceiling", alice, tok("a3b", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type = tokensv1alpha1.FullAccess
				showOnce(showOnceKey)(a)
			}), `spec.type: Forbidden: user alice may not issue *:* in namespace shop (needs verb * on scopes.tokens.apitoken.dev (every name))`},
		})
	})

	It("applies example 1 (read-only for a group) and honours groups", func() {
		applyYAML(ctx, []byte(examples[0]))
		dev := func() client.Client { return as("bob", "shop-developers") }
		Eventually(func() error { return dev().Create(ctx, tok("b1", nil)) }).Should(Succeed(), "4 read-only by a shop-developer")
		run([]row{
			{"5 custom articles:read by a shop-developer", dev, tok("b2", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, []string{"articles:read"}
			}), ""},
			{"6 articles:read, orders:delete", dev, tok("b3", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, []string{"articles:read", "orders:delete"}
			}), `spec.scopes[1]: Forbidden: user bob may not issue orders:delete in namespace shop (needs verb delete on scopes.tokens.apitoken.dev "orders")`},
			{"7 read-only for the admin audience", dev, tok("b4", func(a *tokensv1alpha1.ApiToken) { a.Spec.Audience = tokensv1alpha1.Admin }),
				`spec.audience: Forbidden: user bob may not issue audience admin in namespace shop (needs verb issue on audiences.tokens.apitoken.dev "admin")`},
			{"8 the same user without the group", func() client.Client { return as("bob") }, tok("b5", nil),
				`spec.type: Forbidden: user bob may not issue *:read in namespace shop`},
		})
	})

	It("applies example 2 (any scope on orders for alice) and checks widening updates again", func() {
		applyYAML(ctx, []byte(examples[1]))
		Eventually(func() error {
			return alice().Create(ctx, tok("c1", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, []string{"orders:delete"}
			}))
		}).Should(Succeed(), "9 orders:delete")
		run([]row{
			{"10 orders:*", alice, tok("c2", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, []string{"orders:*"}
			}), ""},
			{"11 *:delete", alice, tok("c3", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, []string{"*:delete"}
			}), `spec.scopes[0]: Forbidden: user alice may not issue *:delete in namespace shop (needs verb delete on scopes.tokens.apitoken.dev (every name))`},
		})
		By("12 an update that widens orders:delete with payments:delete is checked again")
		var at tokensv1alpha1.ApiToken
		Expect(alice().Get(ctx, client.ObjectKey{Namespace: ns, Name: "c1"}, &at)).To(Succeed())
		at.Spec.Scopes = []string{"orders:delete", "payments:delete"}
		err := alice().Update(ctx, &at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.scopes[1]: Forbidden: user alice may not issue payments:delete in namespace shop (needs verb delete on scopes.tokens.apitoken.dev "payments")`))
		By("13 an update that narrows, or only describes, needs no issuing power")
		Expect(alice().Get(ctx, client.ObjectKey{Namespace: ns, Name: "c1"}, &at)).To(Succeed())
		at.Spec.Description = "narrowed"
		at.Spec.Scopes = []string{"orders:delete"}
		Expect(as("carol").Update(ctx, &at)).To(Succeed(), "carol may edit ApiTokens but issue nothing")

		By("14 regenerate and revoke by a user with update alone")
		Expect(as("carol").Get(ctx, client.ObjectKey{Namespace: ns, Name: "c1"}, &at)).To(Succeed())
		at.Annotations[tokensv1alpha1.RegenerateAnnotation] = "by-carol"
		Expect(as("carol").Update(ctx, &at)).To(Succeed())
		at.Spec.Revoked = true
		Expect(as("carol").Update(ctx, &at)).To(Succeed())
		By("15 un-revoking issues a new token: carol, who may issue nothing, is refused; alice may")
		at.Spec.Revoked = false
		err = as("carol").Update(ctx, &at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.scopes[0]: Forbidden: user carol may not issue orders:delete in namespace shop (needs verb delete on scopes.tokens.apitoken.dev "orders")`))
		Expect(alice().Get(ctx, client.ObjectKey{Namespace: ns, Name: "c1"}, &at)).To(Succeed())
		at.Spec.Revoked = false
		Expect(alice().Update(ctx, &at)).To(Succeed())
		at.Spec.Scopes = []string{"orders:*"}
		err = as("carol").Update(ctx, &at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.scopes[0]: Forbidden: user carol may not issue orders:* in namespace shop (needs verb * on scopes.tokens.apitoken.dev "orders")`))
	})

	It("applies example 3 (full access for the admin audience, to a group)", func() {
		applyYAML(ctx, []byte(examples[2]))
		platform := func() client.Client { return as("dana", "platform") }
		Eventually(func() error {
			return platform().Create(ctx, tok("d1", func(a *tokensv1alpha1.ApiToken) {
				a.Spec.Type, a.Spec.Audience = tokensv1alpha1.FullAccess, tokensv1alpha1.Admin
			}))
		}).Should(Succeed(), "16 full-access, admin audience")
		By("18 a tenant with read power cannot give an admin-audience token new scopes")
		Expect(k8s.Create(ctx, tok("d3", func(a *tokensv1alpha1.ApiToken) {
			a.Spec.Type, a.Spec.Scopes, a.Spec.Audience = tokensv1alpha1.Custom, []string{"articles:read"}, tokensv1alpha1.Admin
		}))).To(Succeed())
		var adm tokensv1alpha1.ApiToken
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "d3"}, &adm)).To(Succeed())
		adm.Spec.Type, adm.Spec.Scopes = tokensv1alpha1.ReadOnly, nil
		err := as("bob", "shop-developers").Update(ctx, &adm)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.audience: Forbidden: user bob may not issue audience admin in namespace shop (needs verb issue on audiences.tokens.apitoken.dev "admin")`))
		run([]row{
			{"17 the kubernetes audience needs its own grant", platform, tok("d2", func(a *tokensv1alpha1.ApiToken) { a.Spec.Audience = tokensv1alpha1.Kubernetes }),
				`spec.audience: Forbidden: user dana may not issue audience kubernetes in namespace shop (needs verb issue on audiences.tokens.apitoken.dev "kubernetes")`},
		})
	})

	It("issues nested and Strapi scopes by the Roles of docs/scopes.md", func() {
		roles := docExamples("scopes.md", "## Issuing them")
		Expect(roles).To(HaveLen(2), "docs/scopes.md's two Roles")
		for _, r := range roles {
			applyYAML(ctx, []byte(r))
		}
		erin := func() client.Client { return as("erin") }
		frank := func() client.Client { return as("frank") }
		custom := func(name string, scopes ...string) *tokensv1alpha1.ApiToken {
			return tok(name, func(a *tokensv1alpha1.ApiToken) { a.Spec.Type, a.Spec.Scopes = tokensv1alpha1.Custom, scopes })
		}
		Eventually(func() error { return erin().Create(ctx, custom("e1", "table:data:read", "table:data:create")) }).Should(Succeed(),
			"19 erin issues bkend's table:data:read and table:data:create")
		Eventually(func() error { return frank().Create(ctx, custom("f1", "articles:find")) }).Should(Succeed(), "23 frank issues articles:find")
		run([]row{
			{"20 table:data:delete", erin, custom("e2", "table:data:delete"),
				`spec.scopes[0]: Forbidden: user erin may not issue table:data:delete in namespace shop (needs verb delete on scopes.tokens.apitoken.dev "table:data")`},
			{"21 table:*:read is a name of its own", erin, custom("e3", "table:*:read"),
				`spec.scopes[0]: Forbidden: user erin may not issue table:*:read in namespace shop (needs verb read on scopes.tokens.apitoken.dev "table:*")`},
			{"22 read allows find and findOne", erin, custom("e4", "table:data:find", "table:data:findOne"), ""},
			{"24 find does not allow findOne", frank, custom("f2", "articles:find", "articles:findOne"),
				`spec.scopes[1]: Forbidden: user frank may not issue articles:findOne in namespace shop (needs verb findOne or read on scopes.tokens.apitoken.dev "articles")`},
			{"25 categories:find", frank, custom("f3", "categories:find"), ""},
		})
	})

	It("checks a change of audience as a create: audience power alone cannot move a full-access token to the API server", func() {
		Expect(k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "mallory-kubernetes-audience", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "apitoken-issue-kubernetes-audience"},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "mallory"}}})).To(Succeed())
		Expect(k8s.Create(ctx, tok("ci-full", func(a *tokensv1alpha1.ApiToken) { a.Spec.Type = tokensv1alpha1.FullAccess }))).To(Succeed())
		Eventually(func(g Gomega) {
			var at tokensv1alpha1.ApiToken
			g.Expect(as("mallory").Get(ctx, client.ObjectKey{Namespace: ns, Name: "ci-full"}, &at)).To(Succeed())
			at.Spec.Audience = tokensv1alpha1.Kubernetes
			err := as("mallory").Update(ctx, &at)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).To(ContainSubstring(`spec.type: Forbidden: user mallory may not issue *:* in namespace shop (needs verb * on scopes.tokens.apitoken.dev (every name))`))
			g.Expect(err.Error()).NotTo(ContainSubstring("spec.audience"), "the audience itself she may issue")
		}).Should(Succeed(), "26 a change of audience")
	})

	It("refuses restart targets the creator may not patch: the operator's own RBAC never restarts a workload for a tenant who could not", func() {
		// gina may issue read-only tokens and patch one Deployment, api.
		Expect(k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "gina-read-only", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "apitoken-issue-read-only"},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "gina"}}})).To(Succeed())
		Expect(k8s.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "patch-api", Namespace: ns},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{"api"}, Verbs: []string{"get", "patch"}}}})).To(Succeed())
		Expect(k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "gina-patch-api", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "patch-api"},
			Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "gina"}}})).To(Succeed())
		gina := func() client.Client { return as("gina") }
		targets := func(ts ...tokensv1alpha1.RestartTarget) func(*tokensv1alpha1.ApiToken) {
			return func(a *tokensv1alpha1.ApiToken) { a.Spec.Rotation = &tokensv1alpha1.Rotation{RestartTargets: ts} }
		}
		api := tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartDeployment, Name: "api"}
		billing := tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartDeployment, Name: "billing"}
		Eventually(func() error { return gina().Create(ctx, tok("g1", targets(api))) }).Should(Succeed(), "27 a Deployment she may patch")
		run([]row{
			{"28 a Deployment she may not patch", gina, tok("g2", targets(api, billing)),
				`spec.rotation.restartTargets[1]: Forbidden: user gina may not restart Deployment billing in namespace shop (needs verb patch on deployments.apps "billing")`},
			{"29 a StatefulSet of the same name", gina, tok("g3", targets(tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartStatefulSet, Name: "api"})),
				`spec.rotation.restartTargets[0]: Forbidden: user gina may not restart StatefulSet api in namespace shop (needs verb patch on statefulsets.apps "api")`},
			{"30 carol, who may edit ApiTokens and issue nothing", func() client.Client { return as("carol") }, tok("g4", targets(api)),
				`spec.rotation.restartTargets[0]: Forbidden: user carol may not restart Deployment api in namespace shop (needs verb patch on deployments.apps "api")`},
		})
		By("31 an update that adds a target is checked; a regeneration, which restarts the admitted ones, is not")
		var at tokensv1alpha1.ApiToken
		Expect(gina().Get(ctx, client.ObjectKey{Namespace: ns, Name: "g1"}, &at)).To(Succeed())
		at.Spec.Rotation.RestartTargets = append(at.Spec.Rotation.RestartTargets, billing)
		err := gina().Update(ctx, &at)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring(`spec.rotation.restartTargets[1]: Forbidden: user gina may not restart Deployment billing in namespace shop (needs verb patch on deployments.apps "billing")`))
		Expect(as("carol").Get(ctx, client.ObjectKey{Namespace: ns, Name: "g1"}, &at)).To(Succeed())
		if at.Annotations == nil {
			at.Annotations = map[string]string{}
		}
		at.Annotations[tokensv1alpha1.RegenerateAnnotation] = "by-carol"
		Expect(as("carol").Update(ctx, &at)).To(Succeed())
	})
})
