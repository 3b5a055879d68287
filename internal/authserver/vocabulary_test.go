package authserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// The tables of docs/scopes.md, row by row, through every proxy protocol
// of the auth endpoint.

// protocol builds the request one kind of proxy sends for an original
// request (method, target) on a route with the given policy segment.
type protocol struct {
	name string
	// bad is the status of a request that cannot be judged.
	bad   int
	build func(policy, method, target string, cred [2]string) req
}

var protocols = []protocol{
	{"auth-request", http.StatusForbidden, func(policy, method, target string, cred [2]string) req {
		return req{path: AuthRequestPath + "/" + policy, headers: [][2]string{cred, {"X-Original-Method", method}, {"X-Original-URL", target}}}
	}},
	{"forward-auth", http.StatusBadRequest, func(policy, method, target string, cred [2]string) req {
		return req{path: ForwardAuthPath + "/" + policy, headers: [][2]string{cred, {"X-Forwarded-Method", method}, {"X-Forwarded-Uri", target}}}
	}},
	{"ext-authz", http.StatusBadRequest, func(policy, method, target string, cred [2]string) req {
		return req{method: method, path: ExtAuthzPath + "/" + policy + target, headers: [][2]string{cred}}
	}},
}

// vocabularyFixture adds custom tokens in team-a (a default namespace),
// one per name, with the given scopes and presentation.
func vocabularyFixture(t *testing.T, tokens map[string][]string, presentation map[string]tokensv1alpha1.Presentation) *fixture {
	t.Helper()
	f := newFixture()
	future := metav1.NewTime(now.Add(24 * time.Hour))
	for name, scopes := range tokens {
		tok := mustToken()
		f.tokens[name] = tok
		f.ix.Upsert(&tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a"},
			Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: scopes, Presentation: presentation[name]},
			Status:     tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}},
		})
	}
	return f
}

// TestDerivation is the method/path → scope table of docs/scopes.md:
// each row's required scope (read from the refusal of a token that grants
// nothing relevant), a token it allows and a token it refuses, through
// each protocol. The fixture's --auth-path-prefix is /api.
func TestDerivation(t *testing.T) {
	f := vocabularyFixture(t, map[string][]string{
		"nothing": {"none:read"},
		"strapi":  {"articles:find", "articles:findOne", "categories:find"},
		"finder":  {"articles:find"},
		"bkend":   {"table:data:read", "table:data:create"},
		"tables":  {"table:*:read"},
	}, nil)
	rows := []struct {
		policy, method, target string
		// scope is the required scope; "" for a request refused as bad,
		// with problem in the answer.
		scope, problem string
		allow, refuse  string
	}{
		{"-", "GET", "/api/articles", "articles:find", "", "finder", "bkend"},
		{"-", "GET", "/api/articles/", "articles:find", "", "finder", "bkend"},
		{"-", "GET", "/api/articles?filters[id]=7", "articles:find", "", "finder", "bkend"},
		{"-", "GET", "/api/articles/7", "articles:findOne", "", "strapi", "finder"},
		{"-", "HEAD", "/api/articles/7", "articles:findOne", "", "reader", "finder"},
		{"-", "GET", "/api/articles/7/comments", "articles:findOne", "", "strapi", "finder"},
		{"-", "GET", "/api/Articles", "articles:find", "", "finder", "bkend"},
		{"-", "POST", "/api/articles", "articles:create", "", "full", "reader"},
		{"-", "PUT", "/api/articles/7", "articles:update", "", "full", "reader"},
		{"-", "PATCH", "/api/articles/7", "articles:update", "", "full", "strapi"},
		{"-", "DELETE", "/api/articles/7", "articles:delete", "", "full", "strapi"},
		{"-", "GET", "/api/categories", "categories:find", "", "strapi", "finder"},
		{"-", "GET", "/api/categories/3", "categories:findOne", "", "reader", "strapi"},
		{"segments=2", "GET", "/api/table/data", "table:data:find", "", "bkend", "strapi"},
		{"segments=2", "GET", "/api/table/data/7", "table:data:findOne", "", "tables", "strapi"},
		{"segments=2", "POST", "/api/table/data", "table:data:create", "", "bkend", "tables"},
		{"segments=2", "DELETE", "/api/table/data/7", "table:data:delete", "", "full", "bkend"},
		{"segments=2", "GET", "/api/Table/Data", "table:data:find", "", "bkend", "finder"},
		{"resource=table:data,segments=3", "GET", "/api/tables/posts/data", "table:data:find", "", "bkend", "finder"},
		{"resource=table:data,segments=3", "GET", "/api/tables/posts/data/7", "table:data:findOne", "", "bkend", "strapi"},
		{"resource=table:data,segments=3", "POST", "/api/tables/posts/data", "table:data:create", "", "bkend", "tables"},
		{"resource=orders", "GET", "/api/anything/7", "orders:findOne", "", "reader", "finder"},
		{"scope=table:data:read", "GET", "/api/anything", "table:data:read", "", "tables", "strapi"},
		{"scope=articles:find", "DELETE", "/api/articles/7", "articles:find", "", "finder", "bkend"},
		{"resource=table:data,segments=3", "GET", "/api/tables/posts", "", `names no resource`, "", ""},
		{"segments=2", "GET", "/api/table", "", `names no resource`, "", ""},
		{"segments=2", "GET", "/api/table/", "", `names no resource`, "", ""},
		{"-", "GET", "/api/table:data/7", "", `names no resource`, "", ""},
		{"segments=2", "GET", "/api/table:x/data", "", `names no resource`, "", ""},
		{"segments=0", "GET", "/api/articles", "", `segments "0" must be a number of path segments from 1 to 16`, "", ""},
		{"segments=02", "GET", "/api/articles", "", `segments "02" must be`, "", ""},
		{"segments=2,segments=3", "GET", "/api/a/b", "", `segments is given more than once`, "", ""},
		{"scope=a:read,segments=2", "GET", "/api/a/b", "", `give scope, or resource and segments, not both`, "", ""},
		{"resource=table:*", "GET", "/api/a", "", `resource "table:*" must be parts joined by ':'`, "", ""},
	}
	for _, p := range protocols {
		for _, r := range rows {
			name := p.name + " " + r.policy + " " + r.method + " " + r.target
			send := func(tok string) *httptest.ResponseRecorder {
				return f.do(p.build(r.policy, r.method, r.target, bearer(f.tokens[tok])))
			}
			if r.scope == "" {
				w := send("full")
				if w.Code != p.bad || !strings.Contains(w.Body.String(), r.problem) {
					t.Errorf("%s: %d %q, want %d %q", name, w.Code, w.Body.String(), p.bad, r.problem)
				}
				continue
			}
			if w := send("nothing"); w.Code != http.StatusForbidden || !strings.Contains(w.Header().Get("WWW-Authenticate"), `scope="`+r.scope+`"`) {
				t.Errorf("%s: requires %q, want %s", name, w.Header().Get("WWW-Authenticate"), r.scope)
			}
			if w := send(r.allow); w.Code != http.StatusOK {
				t.Errorf("%s: %s refused (%d %s), want allowed", name, r.allow, w.Code, w.Header().Get("WWW-Authenticate"))
			}
			if w := send(r.refuse); w.Code != http.StatusForbidden {
				t.Errorf("%s: %s got %d, want 403", name, r.refuse, w.Code)
			}
		}
	}
}

// TestMatching is the matching table of docs/scopes.md, read from the
// page: each row a token granting one scope, judged on a route whose
// policy requires another, through each protocol and the explicit
// endpoint.
func TestMatching(t *testing.T) {
	table, err := testenv.MatchingTable()
	if err != nil || len(table) < 25 {
		t.Fatalf("the matching table of docs/scopes.md: %d rows, %v", len(table), err)
	}
	type row struct {
		grant, required string
		allowed         bool
	}
	var rows []row
	for _, r := range table {
		rows = append(rows, row{r.Granted, r.Required, r.Covered})
	}
	grants := map[string][]string{}
	for _, r := range rows {
		grants["g-"+strings.NewReplacer(":", "-", "*", "any").Replace(r.grant)] = []string{r.grant}
	}
	f := vocabularyFixture(t, grants, nil)
	for _, r := range rows {
		tok := f.tokens["g-"+strings.NewReplacer(":", "-", "*", "any").Replace(r.grant)]
		want := http.StatusForbidden
		if r.allowed {
			want = http.StatusOK
		}
		for _, p := range protocols {
			if w := f.do(p.build("scope="+r.required, "GET", "/api/x", bearer(tok))); w.Code != want {
				t.Errorf("%s: %s on a route requiring %s: %d, want %d", p.name, r.grant, r.required, w.Code, want)
			}
		}
		if w := f.do(req{path: AuthorizePath + "?scope=" + r.required, headers: [][2]string{bearer(tok)}}); w.Code != want {
			t.Errorf("explicit: %s asked for %s: %d, want %d", r.grant, r.required, w.Code, want)
		}
	}
}

// TestPresentation: bkend's token kinds. A bearer token is refused from
// X-API-Key and an api-key token from Authorization, with a message that
// names the header to use, on every protocol; TokenReview (the API server
// presents tokens as Bearer) refuses an api-key token.
func TestPresentation(t *testing.T) {
	f := vocabularyFixture(t, map[string][]string{"bearer": {"articles:read"}, "apikey": {"articles:read"}, "any": {"articles:read"}},
		map[string]tokensv1alpha1.Presentation{"bearer": tokensv1alpha1.BearerHeader, "apikey": tokensv1alpha1.APIKeyHeader, "any": tokensv1alpha1.AnyHeader})
	apiKey := func(tok string) [2]string { return [2]string{"X-API-Key", tok} }
	rows := []struct {
		tok     string
		cred    func(string) [2]string
		problem string
	}{
		{"bearer", bearer, ""},
		{"bearer", apiKey, "send it as Authorization: Bearer, not in X-API-Key"},
		{"apikey", apiKey, ""},
		{"apikey", bearer, "send it in X-API-Key, not as Authorization: Bearer"},
		{"any", bearer, ""},
		{"any", apiKey, ""},
	}
	for _, r := range rows {
		for _, p := range protocols {
			w := f.do(p.build("-", "GET", "/api/articles/7", r.cred(f.tokens[r.tok])))
			switch {
			case r.problem == "" && w.Code != http.StatusOK:
				t.Errorf("%s: %s token: %d %s, want 200", p.name, r.tok, w.Code, w.Body.String())
			case r.problem != "" && (w.Code != p.bad || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="invalid_request"`) || !strings.Contains(w.Body.String(), r.problem)):
				t.Errorf("%s: %s token: %d %q, want %d %q", p.name, r.tok, w.Code, w.Body.String(), p.bad, r.problem)
			}
		}
	}
	for tok, want := range map[string]string{"bearer": "", "any": "", "apikey": "send it in X-API-Key"} {
		_, out := f.review(t, reviewBody("v1", f.tokens[tok], "content-api"), "application/json")
		if st := out.Status; st.Authenticated != (want == "") || !strings.Contains(st.Error, want) {
			t.Errorf("TokenReview of the %s token: %+v, want error %q", tok, out.Status, want)
		}
	}
}

// TestNamedAudience: a billing-api token verifies only where a route
// requires billing-api, on every protocol and the explicit endpoint.
func TestNamedAudience(t *testing.T) {
	f := newFixture()
	tok := mustToken()
	future := metav1.NewTime(now.Add(time.Hour))
	f.tokens["billing"] = tok
	f.ix.Upsert(&tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: "team-a"},
		Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Audience: "billing-api"},
		Status:     tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}},
	})
	for _, p := range protocols {
		for policy, want := range map[string]int{"audience=billing-api": 200, "-": 403, "audience=orders-api": 403, "audience=admin": 403} {
			w := f.do(p.build(policy, "GET", "/api/invoices/7", bearer(tok)))
			if w.Code != want {
				t.Errorf("%s %s: %d, want %d (%s)", p.name, policy, w.Code, want, w.Header().Get("WWW-Authenticate"))
			}
			if want == 403 && !strings.Contains(w.Header().Get("WWW-Authenticate"), "the token's audience is billing-api") {
				t.Errorf("%s %s: %q", p.name, policy, w.Header().Get("WWW-Authenticate"))
			}
		}
		if w := f.do(p.build("audience=billing-api", "GET", "/api/invoices/7", bearer(f.tokens["reader"]))); w.Code != 403 {
			t.Errorf("%s: a content-api token on a billing-api route: %d", p.name, w.Code)
		}
	}
	if w := f.do(req{path: AuthorizePath + "?scope=invoices:read&audience=billing-api", headers: [][2]string{bearer(tok)}}); w.Code != 200 {
		t.Errorf("explicit: %d", w.Code)
	}
}
