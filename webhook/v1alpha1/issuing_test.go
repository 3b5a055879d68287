package v1alpha1

import (
	"context"
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

func revoked(at *tokensv1alpha1.ApiToken) *tokensv1alpha1.ApiToken {
	at.Spec.Revoked = true
	return at
}

// withTargets names Deployments as the token's restart targets.
func withTargets(at *tokensv1alpha1.ApiToken, names ...string) *tokensv1alpha1.ApiToken {
	at.Spec.Rotation = &tokensv1alpha1.Rotation{}
	for _, n := range names {
		at.Spec.Rotation.RestartTargets = append(at.Spec.Rotation.RestartTargets, tokensv1alpha1.RestartTarget{Kind: tokensv1alpha1.RestartDeployment, Name: n})
	}
	return at
}

func TestRequiredPermissions(t *testing.T) {
	spec := func(typ tokensv1alpha1.TokenType, aud tokensv1alpha1.Audience, scopes ...string) *tokensv1alpha1.ApiToken {
		at := validToken()
		at.Namespace, at.Spec.Type, at.Spec.Audience, at.Spec.Scopes = "shop", typ, aud, scopes
		return at
	}
	for _, c := range []struct {
		name    string
		old, at *tokensv1alpha1.ApiToken
		needs   []string
	}{
		{"read-only", nil, spec(tokensv1alpha1.ReadOnly, ""), []string{`spec.type *:read verb read on scopes.tokens.apitoken.dev (every name)`}},
		{"full-access, admin", nil, spec(tokensv1alpha1.FullAccess, tokensv1alpha1.Admin), []string{
			`spec.type *:* verb * on scopes.tokens.apitoken.dev (every name)`, `spec.audience audience admin verb issue on audiences.tokens.apitoken.dev "admin"`}},
		{"custom", nil, spec(tokensv1alpha1.Custom, "", "orders:delete", "articles:*"), []string{
			`spec.scopes[0] orders:delete verb delete on scopes.tokens.apitoken.dev "orders"`, `spec.scopes[1] articles:* verb * on scopes.tokens.apitoken.dev "articles"`}},
		{"nested resources are one name", nil, spec(tokensv1alpha1.Custom, "", "table:data:read", "table:*:delete"), []string{
			`spec.scopes[0] table:data:read verb read on scopes.tokens.apitoken.dev "table:data"`, `spec.scopes[1] table:*:delete verb delete on scopes.tokens.apitoken.dev "table:*"`}},
		{"find and findOne are also allowed by read", nil, spec(tokensv1alpha1.Custom, "", "articles:find", "articles:findOne"), []string{
			`spec.scopes[0] articles:find verb find or read on scopes.tokens.apitoken.dev "articles"`, `spec.scopes[1] articles:findOne verb findOne or read on scopes.tokens.apitoken.dev "articles"`}},
		{"read to find narrows", spec(tokensv1alpha1.Custom, "", "articles:read"), spec(tokensv1alpha1.Custom, "", "articles:find"), nil},
		{"a named audience needs its own grant", nil, spec(tokensv1alpha1.ReadOnly, "billing-api"), []string{
			`spec.type *:read verb read on scopes.tokens.apitoken.dev (every name)`, `spec.audience audience billing-api verb issue on audiences.tokens.apitoken.dev "billing-api"`}},
		{"a new audience is checked as a create (the pair is what a token grants)", spec(tokensv1alpha1.FullAccess, ""), spec(tokensv1alpha1.FullAccess, tokensv1alpha1.Kubernetes), []string{
			`spec.type *:* verb * on scopes.tokens.apitoken.dev (every name)`, `spec.audience audience kubernetes verb issue on audiences.tokens.apitoken.dev "kubernetes"`}},
		{"back to content-api is a create too", spec(tokensv1alpha1.Custom, tokensv1alpha1.Admin, "orders:delete"), spec(tokensv1alpha1.Custom, "", "orders:delete"), []string{
			`spec.scopes[0] orders:delete verb delete on scopes.tokens.apitoken.dev "orders"`}},
		{"narrowing needs nothing", spec(tokensv1alpha1.FullAccess, ""), spec(tokensv1alpha1.Custom, "", "orders:delete"), nil},
		{"widening needs the new scope only", spec(tokensv1alpha1.Custom, "", "orders:delete"), spec(tokensv1alpha1.Custom, "", "orders:delete", "orders:create"),
			[]string{`spec.scopes[1] orders:create verb create on scopes.tokens.apitoken.dev "orders"`}},
		{"read-only to custom reads: nothing", spec(tokensv1alpha1.ReadOnly, ""), spec(tokensv1alpha1.Custom, "", "articles:read"), nil},
		{"same audience: nothing", spec(tokensv1alpha1.ReadOnly, tokensv1alpha1.Admin), spec(tokensv1alpha1.ReadOnly, tokensv1alpha1.Admin), nil},
		{"new scopes on the admin audience need the audience too", spec(tokensv1alpha1.Custom, tokensv1alpha1.Admin, "articles:read"), spec(tokensv1alpha1.ReadOnly, tokensv1alpha1.Admin), []string{
			`spec.type *:read verb read on scopes.tokens.apitoken.dev (every name)`, `spec.audience audience admin verb issue on audiences.tokens.apitoken.dev "admin"`}},
		{"un-revoking is a create", revoked(spec(tokensv1alpha1.FullAccess, "")), spec(tokensv1alpha1.FullAccess, ""), []string{`spec.type *:* verb * on scopes.tokens.apitoken.dev (every name)`}},
		{"revoking needs nothing", spec(tokensv1alpha1.FullAccess, tokensv1alpha1.Admin), revoked(spec(tokensv1alpha1.FullAccess, tokensv1alpha1.Admin)), nil},
		{"invalid spec: left to validation", nil, spec(tokensv1alpha1.Custom, ""), nil},
		{"restart targets: each needs patch on it", nil, withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api", "db"), []string{
			`spec.type *:read verb read on scopes.tokens.apitoken.dev (every name)`,
			`spec.rotation.restartTargets[0] Deployment api verb patch on deployments.apps "api"`, `spec.rotation.restartTargets[1] Deployment db verb patch on deployments.apps "db"`}},
		{"restart targets: an update checks the added one only", withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api"), withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api", "db"), []string{
			`spec.rotation.restartTargets[1] Deployment db verb patch on deployments.apps "db"`}},
		{"restart targets: removing one needs nothing", withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api", "db"), withTargets(spec(tokensv1alpha1.ReadOnly, ""), "db"), nil},
		// A tenant who may edit the token but not patch its targets must
		// not turn it into a restart loop (2s tokens renewed every second),
		// nor bring a revoked one back to restart them.
		{"restart targets: a new duration checks every target", withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api"),
			func() *tokensv1alpha1.ApiToken {
				at := withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api")
				at.Spec.Duration = "2s"
				return at
			}(), []string{`spec.rotation.restartTargets[0] Deployment api verb patch on deployments.apps "api"`}},
		{"restart targets: a new rotation checks every target", withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api"),
			func() *tokensv1alpha1.ApiToken {
				at := withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api")
				at.Spec.Rotation.RenewBefore, at.Spec.Rotation.GracePeriod = "1s", "1s"
				return at
			}(), []string{`spec.rotation.restartTargets[0] Deployment api verb patch on deployments.apps "api"`}},
		{"restart targets: un-revoking checks every target", revoked(withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api")), withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api"), []string{
			`spec.type *:read verb read on scopes.tokens.apitoken.dev (every name)`,
			`spec.rotation.restartTargets[0] Deployment api verb patch on deployments.apps "api"`}},
		{"restart targets: a new description needs nothing", withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api"),
			func() *tokensv1alpha1.ApiToken {
				at := withTargets(spec(tokensv1alpha1.ReadOnly, ""), "api")
				at.Spec.Description = "new words"
				return at
			}(), nil},
	} {
		var got []string
		for _, p := range requiredPermissions(c.old, c.at) {
			got = append(got, p.field.String()+" "+p.what+" "+p.needs())
		}
		if strings.Join(got, "|") != strings.Join(c.needs, "|") {
			t.Errorf("%s: needs %q, want %q", c.name, got, c.needs)
		}
	}
}

// TestCheckIssuingFailsClosed: a SubjectAccessReview that cannot be
// answered refuses, and says so.
func TestCheckIssuingFailsClosed(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
			return errors.New("the API server is unreachable")
		}}).Build()
	at := validToken()
	at.Namespace = "shop"
	errs := CheckIssuing(context.Background(), c, User{Name: "alice"}, nil, at)
	if len(errs) != 1 || errs[0].Error() != "spec.type: Forbidden: could not check whether user alice may issue *:read in namespace shop (SubjectAccessReview: the API server is unreachable); refused" {
		t.Fatalf("errs = %v", errs)
	}
}
