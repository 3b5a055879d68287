package authserver

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/proxytest"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	ix     *Index
	h      *Handler
	hasher *token.Hasher
	tokens map[string]string
}

func mustToken() string {
	t, err := token.Generate()
	if err != nil {
		panic(err)
	}
	return t
}

// newFixture indexes a set of ApiTokens covering every verdict.
func newFixture() *fixture {
	f := &fixture{hasher: token.NewHasher([]byte("test-salt")), tokens: map[string]string{}}
	f.ix = NewIndex(func() *token.Hasher { return f.hasher }).WithIdentityLabels(proxytest.IdentityLabelPrefix)
	f.h = &Handler{Index: f.ix, Clock: clocktesting.NewFakePassiveClock(now), Options: Options{PathPrefix: "/api", DefaultNamespaces: []string{"team-a"}}}
	future, past := metav1.NewTime(now.Add(time.Hour)), metav1.NewTime(now.Add(-time.Second))
	add := func(name, ns string, spec tokensv1alpha1.ApiTokenSpec, mod func(*tokensv1alpha1.ApiToken, string)) {
		tok := mustToken()
		f.tokens[name] = tok
		at := &tokensv1alpha1.ApiToken{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name)},
			Spec:       spec,
			Status:     tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}},
		}
		if mod != nil {
			mod(at, tok)
		}
		f.ix.Upsert(at)
	}
	// The tokens the proxies' attack table names, then the others.
	for _, pt := range proxytest.Tokens {
		add(pt.Name, pt.Namespace, pt.Spec, func(at *tokensv1alpha1.ApiToken, tok string) {
			at.Labels = pt.Labels
			if pt.Expired {
				at.Status.ExpiresAt = &past
			}
			if pt.Revoked {
				at.Status.Verification = &tokensv1alpha1.Verification{RevokedHash: f.hasher.Hash(tok).Encode()}
			}
		})
	}
	add("admin", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Audience: tokensv1alpha1.Admin}, nil)
	add("kube", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Audience: tokensv1alpha1.Kubernetes}, nil)
	add("full", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess}, nil)
	add("unlimited", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, func(at *tokensv1alpha1.ApiToken, _ string) { at.Status.ExpiresAt = nil })
	// A regenerated token: "previous" in grace, "lapsed" past its grace.
	add("rotated", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, func(at *tokensv1alpha1.ApiToken, _ string) {
		prev, lapsed := mustToken(), mustToken()
		f.tokens["previous"], f.tokens["lapsed"] = prev, lapsed
		until := metav1.NewTime(now.Add(time.Minute))
		at.Status.Verification.PreviousHash, at.Status.Verification.PreviousValidUntil = f.hasher.Hash(prev).Encode(), &until
		f.ix.Upsert(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "lapsed", Namespace: "team-a"}, Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
			Status: tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{PreviousHash: f.hasher.Hash(lapsed).Encode(), PreviousValidUntil: &past}}})
	})
	return f
}

type req struct {
	path    string
	method  string
	headers [][2]string
}

// do sends r through the server's routes, as a proxy would reach them.
func (f *fixture) do(r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodGet
	}
	hr := httptest.NewRequest(r.method, r.path, nil)
	for _, h := range r.headers {
		hr.Header.Add(h[0], h[1])
	}
	w := httptest.NewRecorder()
	(&Server{Handler: f.h}).Mux().ServeHTTP(w, hr)
	return w
}

func bearer(tok string) [2]string { return [2]string{"Authorization", "Bearer " + tok} }

type authCase struct {
	name      string
	r         req
	code      int
	challenge string
	user      string
}

func (f *fixture) check(t *testing.T, cases []authCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do(c.r)
			if w.Code != c.code {
				t.Fatalf("code = %d, want %d (%s)", w.Code, c.code, w.Header().Get("WWW-Authenticate"))
			}
			// A 400 names the problem in its body; the challenge carries
			// the same words as an escaped quoted-string.
			if got := w.Header().Get("WWW-Authenticate") + "\n" + w.Body.String(); c.challenge != "" && !strings.Contains(got, c.challenge) {
				t.Fatalf("WWW-Authenticate and body = %q, want %q", got, c.challenge)
			}
			if c := w.Header().Get("WWW-Authenticate"); unescapedQuotes(c)%2 != 0 || strings.ContainsAny(c, "\r\n") {
				t.Fatalf("malformed challenge %q", c)
			}
			if c.code == 401 && c.challenge == `Bearer realm="apitoken"` && w.Header().Get("WWW-Authenticate") != c.challenge {
				t.Fatalf("a request without credential must get a challenge without error code, got %q", w.Header().Get("WWW-Authenticate"))
			}
			if got := w.Header().Get("X-Auth-Request-User"); got != c.user {
				t.Fatalf("X-Auth-Request-User = %q, want %q", got, c.user)
			}
			if c.code == 200 {
				for _, h := range IdentityHeaders {
					if len(w.Header().Values(h)) != 1 {
						t.Fatalf("a 200 must set %s once, got %q", h, w.Header().Values(h))
					}
				}
			}
			for _, tok := range f.tokens {
				if strings.Contains(w.Body.String(), tok) || strings.Contains(w.Header().Get("WWW-Authenticate"), tok) {
					t.Fatal("the response echoes a token")
				}
			}
		})
	}
}

// TestExplicit covers /v1/authorize: the caller names the scope.
func TestExplicit(t *testing.T) {
	f := newFixture()
	tk := f.tokens
	f.check(t, []authCase{
		{"no credential", req{path: "/v1/authorize?scope=articles:read"}, 401, `Bearer realm="apitoken"`, ""},
		{"bearer, any scheme case", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{{"Authorization", "bEaReR " + tk["reader"]}}}, 200, "", "apitoken:team-a:reader"},
		{"x-api-key", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{{"X-API-Key", tk["reader"]}}}, 200, "", "apitoken:team-a:reader"},
		{"malformed", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer("atk_nope")}}, 401, `error="invalid_token", error_description="malformed"`, ""},
		{"unknown", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(mustToken())}}, 401, `error="invalid_token", error_description="unknown"`, ""},
		{"expired", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["expired"])}}, 401, `error_description="expired"`, ""},
		{"revoked", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["revoked"])}}, 401, `error_description="revoked"`, ""},
		{"previous in grace", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["previous"])}}, 200, "", "apitoken:team-a:rotated"},
		{"previous after grace", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["lapsed"])}}, 401, `error_description="expired"`, ""},
		{"unlimited", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["unlimited"])}}, 200, "", "apitoken:team-a:unlimited"},
		{"scope denied", req{path: "/v1/authorize?scope=articles:create", headers: [][2]string{bearer(tk["reader"])}}, 403, `error="insufficient_scope", error_description="the token does not grant articles:create", scope="articles:create"`, ""},
		{"scope required", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["reader"])}}, 400, `the scope parameter is required`, ""},
		{"malformed scope", req{path: "/v1/authorize?scope=articles", headers: [][2]string{bearer(tk["reader"])}}, 400, `error="invalid_request"`, ""},
		{"unknown parameter", req{path: "/v1/authorize?scope=articles:read&namespaces=team-a", headers: [][2]string{bearer(tk["reader"])}}, 400, `"namespaces" is unknown`, ""},
		{"_method is no parameter of this endpoint", req{path: "/v1/authorize?scope=articles:create&_method=DELETE", headers: [][2]string{bearer(tk["author"])}}, 400, `query parameter "_method" is unknown`, ""},
		{"admin token refused for content-api", req{path: "/v1/authorize?scope=users:read", headers: [][2]string{bearer(tk["admin"])}}, 403, `the token's audience is admin, not content-api`, ""},
		{"admin audience", req{path: "/v1/authorize?audience=admin&scope=users:delete", headers: [][2]string{bearer(tk["admin"])}}, 200, "", "apitoken:team-a:admin"},
		{"content token refused for admin", req{path: "/v1/authorize?audience=admin&scope=users:read", headers: [][2]string{bearer(tk["reader"])}}, 403, `audience is content-api, not admin`, ""},
		{"default namespace", req{path: "/v1/authorize?scope=orders:read", headers: [][2]string{bearer(tk["writer"])}}, 403, `tokens from namespace team-b are not accepted`, ""},
		{"namespace accepted", req{path: "/v1/authorize?scope=orders:read&namespace=team-x,team-b", headers: [][2]string{bearer(tk["writer"])}}, 200, "", "apitoken:team-b:writer"},
		{"repeated namespace parameters", req{path: "/v1/authorize?scope=orders:read&namespace=x&namespace=team-b", headers: [][2]string{bearer(tk["writer"])}}, 200, "", "apitoken:team-b:writer"},
		{"namespace refused", req{path: "/v1/authorize?scope=articles:read&namespace=team-b", headers: [][2]string{bearer(tk["reader"])}}, 403, `tokens from namespace team-a are not accepted`, ""},
		{"two authorization headers", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["reader"]), bearer(tk["reader"])}}, 400, `more than one Authorization header`, ""},
		{"two api keys", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{{"X-API-Key", tk["reader"]}, {"X-API-Key", tk["reader"]}}}, 400, `more than one X-API-Key header`, ""},
		{"both credentials", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["reader"]), {"X-API-Key", tk["reader"]}}}, 400, `send one credential`, ""},
		{"basic scheme is no bearer credential", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{{"Authorization", "Basic dXNlcjpwYXNz"}}}, 401, `Bearer realm="apitoken"`, ""},
		{"bearer without token", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{{"Authorization", "Bearer"}}}, 400, `must be Bearer and one token`, ""},
		{"bearer with two tokens", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{{"Authorization", "Bearer a, b"}}}, 400, `must be Bearer and one token`, ""},
		{"repeated scope", req{path: "/v1/authorize?scope=articles:read&scope=orders:read", headers: [][2]string{bearer(tk["reader"])}}, 400, `scope is given more than once`, ""},
		{"escaped scope", req{path: "/v1/authorize?scope=articles%3Aread", headers: [][2]string{bearer(tk["reader"])}}, 200, "", "apitoken:team-a:reader"},
		{"badly escaped parameter", req{path: "/v1/authorize?scope=%zz", headers: [][2]string{bearer(tk["reader"])}}, 400, `not URL-encoded correctly`, ""},
		// What used to be derived here is refused, naming the endpoint to use.
		{"nginx headers sent here", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["reader"]), {"X-Original-Method", "DELETE"}, {"X-Original-URL", "/api/articles/1"}}}, 400, `/v1/auth-request`, ""},
		{"traefik headers sent here", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["reader"]), {"X-Forwarded-Method", "DELETE"}, {"X-Forwarded-Uri", "/api/articles/1"}}}, 400, `/v1/forward-auth`, ""},
		{"envoy prefix mode", req{method: "DELETE", path: "/v1/authorize/api/orders/1?scope=articles:read", headers: [][2]string{bearer(tk["reader"])}}, 400, `/v1/ext-authz`, ""},
	})
	w := f.do(req{path: "/v1/authorize?scope=orders:read&namespace=team-b", headers: [][2]string{bearer(tk["writer"])}})
	if w.Header().Get("X-ApiToken-Name") != "writer" || w.Header().Get("X-ApiToken-Namespace") != "team-b" ||
		w.Header().Get("X-ApiToken-Type") != "custom" || w.Header().Get("X-ApiToken-Scopes") != "articles:read,orders:*" {
		t.Fatalf("identity headers = %v", w.Header())
	}
}

// TestAuthRequest covers /v1/auth-request (nginx): X-Original-Method and
// X-Original-URL, as nginx ($request_method, $request_uri) and
// ingress-nginx ($scheme://$http_host$request_uri) send them.
func TestAuthRequest(t *testing.T) {
	f := newFixture()
	tk := f.tokens
	orig := func(tok, method, url string, more ...[2]string) [][2]string {
		return append([][2]string{bearer(tok), {"X-Original-Method", method}, {"X-Original-URL", url}}, more...)
	}
	// nginx understands only 2xx, 401 and 403: a request that cannot be
	// judged is a 403 with error="invalid_request" here.
	f.check(t, []authCase{
		{"GET read", req{path: "/v1/auth-request", headers: orig(tk["reader"], "GET", "/api/articles/7?x=1")}, 200, "", "apitoken:team-a:reader"},
		{"ingress-nginx absolute URL", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "GET", "https://shop.example/api/articles/7?x=1")}, 200, "", "apitoken:team-b:writer"},
		{"POST articles denied", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "POST", "/api/articles")}, 403, `scope="articles:create"`, ""},
		{"DELETE orders allowed", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/orders/3")}, 200, "", "apitoken:team-b:writer"},
		{"resource from the policy", req{path: "/v1/auth-request/namespace=team-b,resource=orders", headers: orig(tk["writer"], "DELETE", "/api/articles/3")}, 200, "", "apitoken:team-b:writer"},
		{"scope from the policy", req{path: "/v1/auth-request/scope=orders:read,namespace=team-b+team-c", headers: orig(tk["writer"], "GET", "/anything")}, 200, "", "apitoken:team-b:writer"},
		{"audience from the policy", req{path: "/v1/auth-request/audience=admin", headers: orig(tk["admin"], "DELETE", "/api/users/1")}, 200, "", "apitoken:team-a:admin"},
		{"no credential", req{path: "/v1/auth-request", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URL", "/api/a"}}}, 401, `Bearer realm="apitoken"`, ""},
		{"route accepts no namespace", req{path: "/v1/auth-request", headers: orig(tk["writer"], "GET", "/api/orders")}, 403, `not accepted`, ""},
		{"every namespace, explicitly", req{path: "/v1/auth-request/namespace=*", headers: orig(tk["writer"], "GET", "/api/orders")}, 200, "", "apitoken:team-b:writer"},
		{"quote in the path cannot break the challenge", req{path: "/v1/auth-request", headers: orig(tk["reader"], "POST", `/api/a"b/1`)}, 403, `names no resource`, ""},
		{"url without method", req{path: "/v1/auth-request", headers: [][2]string{bearer(tk["reader"]), {"X-Original-URL", "/api/articles"}}}, 403, `X-Original-Method must be sent once`, ""},
		{"method without url: fail closed", req{path: "/v1/auth-request", headers: [][2]string{bearer(tk["reader"]), {"X-Original-Method", "GET"}}}, 403, `X-Original-URL must be sent once`, ""},
		{"nothing: fail closed", req{path: "/v1/auth-request", headers: [][2]string{bearer(tk["reader"])}}, 403, `X-Original-Method must be sent once`, ""},
		// Attacks: what a client adds must never change the answer to a yes.
		{"client's policy in the query", req{path: "/v1/auth-request?scope=articles:read", headers: orig(tk["reader"], "DELETE", "/api/articles/1")}, 403, `put the route policy in the path`, ""},
		{"client's X-Forwarded-Method", req{path: "/v1/auth-request", headers: orig(tk["reader"], "DELETE", "/api/articles/1", [2]string{"X-Forwarded-Method", "GET"})}, 403, `another proxy protocol's header`, ""},
		{"method override", req{path: "/v1/auth-request", headers: orig(tk["reader"], "GET", "/api/articles/1", [2]string{"X-HTTP-Method-Override", "DELETE"})}, 403, `X-Http-Method-Override is refused`, ""},
		{"POST as the author may", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?draft=1&payment_method=x&method=y")}, 200, "", "apitoken:team-a:author"},
		{"method override in the query: _method (Laravel, Symfony)", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?_method=DELETE")}, 403, `X-Original-URL has the query parameter "_method", which is refused: the upstream could act on another method than the one judged`, ""},
		{"method override in the query, after another parameter", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?draft=1&_METHOD=DELETE")}, 403, `query parameter "_METHOD", which is refused`, ""},
		{"method override in the query: X-HTTP-Method-Override", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?x-http-method-override=DELETE")}, 403, `query parameter "x-http-method-override", which is refused`, ""},
		{"method override in the query, percent-encoded", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?%5Fmethod=DELETE")}, 403, `query parameter "_method", which is refused`, ""},
		{"method override in the query, after ';' (Rack 2, old Python)", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?a=1;_method=DELETE")}, 403, `query parameter "_method", which is refused`, ""},
		{"method override in the query, as PHP reads .method", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?.method=DELETE")}, 403, `query parameter ".method", which is refused: an upstream may read it as _method`, ""},
		{"method override in the query, as PHP reads a leading space", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?+_method=DELETE")}, 403, `an upstream may read it as _method`, ""},
		// A red-team run: PHP cuts a parameter's name at a NUL, so
		// ?_method%00=DELETE is $_GET['_method'] (and Symfony's override).
		{"method override in the query, cut at a NUL as PHP reads it", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?_method%00=DELETE")}, 403, `a control character`, ""},
		{"a NUL anywhere in a parameter's name", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?_method%00x=DELETE")}, 403, `a control character`, ""},
		// Names are lowered as ASCII: the Turkish dotted I or the Kelvin
		// sign never folds into an ASCII resource the upstream does not see.
		{"a resource name with a non-ASCII letter that Unicode lowers to ASCII", req{path: "/v1/auth-request", headers: orig(tk["reader"], "GET", "/api/art%C4%B0cles/1")}, 403, `names no resource`, ""},
		{"a resource name with the Kelvin sign", req{path: "/v1/auth-request", headers: orig(tk["reader"], "GET", "/api/boo%E2%84%AA/1")}, 403, `names no resource`, ""},
		{"method override in the query, underscore spelling", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "/api/articles/1?X_HTTP_METHOD_OVERRIDE=DELETE")}, 403, `an upstream may read it as X-Http-Method-Override`, ""},
		{"method override in an ingress-nginx absolute URL", req{path: "/v1/auth-request", headers: orig(tk["author"], "POST", "https://shop.example/api/articles/1?_method=DELETE")}, 403, `query parameter "_method", which is refused`, ""},
		{"second X-Original-Method", req{path: "/v1/auth-request", headers: orig(tk["reader"], "DELETE", "/api/articles/1", [2]string{"X-Original-Method", "GET"})}, 403, `X-Original-Method must be sent once by the proxy (got 2)`, ""},
		{"unmapped method", req{path: "/v1/auth-request", headers: orig(tk["full"], "PROPFIND", "/api/articles/1")}, 403, `not one of GET`, ""},
		{"lower-case method", req{path: "/v1/auth-request", headers: orig(tk["reader"], "get", "/api/articles/1")}, 403, `not one of GET`, ""},
		{"READ is not read", req{path: "/v1/auth-request", headers: orig(tk["reader"], "READ", "/api/articles/1")}, 403, `not one of GET`, ""},
		{"method override with underscores", req{path: "/v1/auth-request", headers: append(orig(tk["reader"], "GET", "/api/articles/1"), [2]string{"X_HTTP_Method_Override", "DELETE"})}, 403, `an upstream may read it as X-Http-Method-Override`, ""},
		{"identity header with underscores", req{path: "/v1/auth-request", headers: append(orig(tk["reader"], "GET", "/api/articles/1"), [2]string{"X_Auth_Request_User", "apitoken:team-a:full"})}, 403, `an upstream may read it as X-Auth-Request-User`, ""},
		{"dot segments", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/orders/../articles/1")}, 403, `dot segment`, ""},
		{"encoded dot segments", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/orders/%2e%2e/articles/1")}, 403, `encoded "."`, ""},
		{"encoded slash", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/orders%2F..%2Farticles/1")}, 403, `encoded "/"`, ""},
		{"double-encoded", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/orders/%252e%252e/articles")}, 403, `encoded "%"`, ""},
		{"empty segment", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api//orders/1")}, 403, `empty segment`, ""},
		{"leading //", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "//evil/api/orders/1")}, 403, `empty segment`, ""},
		{"path parameter", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/orders;x=1/1")}, 403, `';'`, ""},
		{"backslash", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", `/api/orders\..\articles`)}, 403, `backslash`, ""},
		{"encoded backslash", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", `/api/orders%5c..%5carticles`)}, 403, `(%5c)`, ""},
		{"control character", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/orders/%00")}, 403, `control character`, ""},
		{"not a path", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "*")}, 403, `not a path`, ""},
		{"other scheme", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "file://x/api/orders")}, 403, `scheme`, ""},
		{"encoded letters are read decoded", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "DELETE", "/api/%61rticles/1")}, 403, `scope="articles:delete"`, ""},
		{"no resource", req{path: "/v1/auth-request/namespace=team-b", headers: orig(tk["writer"], "GET", "/api")}, 403, `names no resource`, ""},
		// Route policy mistakes by the proxy's operator are refused, not ignored.
		{"policy twice", req{path: "/v1/auth-request/scope=a:read,scope=b:read", headers: orig(tk["reader"], "GET", "/api/a")}, 403, `scope is given more than once`, ""},
		{"scope and resource", req{path: "/v1/auth-request/scope=a:read,resource=b", headers: orig(tk["reader"], "GET", "/api/a")}, 403, `not both`, ""},
		{"unknown key", req{path: "/v1/auth-request/namespaces=team-a", headers: orig(tk["reader"], "GET", "/api/a")}, 403, `"namespaces" is unknown`, ""},
		{"encoded policy", req{path: "/v1/auth-request/namespace%3Dteam-a", headers: orig(tk["reader"], "GET", "/api/a")}, 403, `percent-encoded`, ""},
		{"policy deeper than one segment", req{path: "/v1/auth-request/namespace=team-a/x", headers: orig(tk["reader"], "GET", "/api/a")}, 403, `one segment`, ""},
	})
}

// TestForwardAuth covers /v1/forward-auth (Traefik, Caddy): X-Forwarded-Method
// and X-Forwarded-Uri; the query (Caddy appends the client's) is never read.
func TestForwardAuth(t *testing.T) {
	f := newFixture()
	tk := f.tokens
	fwd := func(tok, method, uri string, more ...[2]string) [][2]string {
		return append([][2]string{bearer(tok), {"X-Forwarded-Method", method}, {"X-Forwarded-Uri", uri}, {"X-Forwarded-Host", "shop.example"}, {"X-Forwarded-Proto", "https"}}, more...)
	}
	f.check(t, []authCase{
		{"GET read", req{path: "/v1/forward-auth", headers: fwd(tk["reader"], "GET", "/api/articles/7?page=2")}, 200, "", "apitoken:team-a:reader"},
		{"PATCH denied for read-only", req{path: "/v1/forward-auth", headers: fwd(tk["reader"], "PATCH", "/api/articles/1")}, 403, `scope="articles:update"`, ""},
		{"policy segment", req{path: "/v1/forward-auth/namespace=team-b", headers: fwd(tk["writer"], "DELETE", "/api/orders/1")}, 200, "", "apitoken:team-b:writer"},
		{"a policy in the auth URL's query is refused, not read", req{path: "/v1/forward-auth?scope=articles:read&namespace=team-b", headers: fwd(tk["reader"], "DELETE", "/api/articles/1?scope=articles:read")}, 400, `query has scope=, which is not read`, ""},
		{"an escaped policy key too", req{path: "/v1/forward-auth?%6Eamespace=team-b", headers: fwd(tk["reader"], "GET", "/api/articles/1")}, 400, `query has namespace=`, ""},
		{"a client's other query appended by Caddy is ignored", req{path: "/v1/forward-auth?page=2", headers: fwd(tk["reader"], "GET", "/api/articles/1?page=2")}, 200, "", "apitoken:team-a:reader"},
		{"the original URI's query is not policy", req{path: "/v1/forward-auth", headers: fwd(tk["reader"], "DELETE", "/api/articles/1?scope=articles:read&namespace=team-a")}, 403, `scope="articles:delete"`, ""},
		{"client's X-Original-Method", req{path: "/v1/forward-auth", headers: fwd(tk["reader"], "DELETE", "/api/articles/1", [2]string{"X-Original-Method", "GET"})}, 400, `another proxy protocol's header`, ""},
		{"method override", req{path: "/v1/forward-auth", headers: fwd(tk["reader"], "GET", "/api/articles/1", [2]string{"X-Method-Override", "DELETE"})}, 400, `X-Method-Override is refused`, ""},
		{"method override in the query", req{path: "/v1/forward-auth", headers: fwd(tk["author"], "POST", "/api/articles/1?_method=DELETE")}, 400, `X-Forwarded-Uri has the query parameter "_method", which is refused`, ""},
		{"method override in the query Caddy appends too", req{path: "/v1/forward-auth?X-HTTP-Method-Override=DELETE", headers: fwd(tk["author"], "POST", "/api/articles/1?X-HTTP-Method-Override=DELETE")}, 400, `query parameter "X-HTTP-Method-Override", which is refused`, ""},
		{"no method", req{path: "/v1/forward-auth", headers: [][2]string{bearer(tk["reader"]), {"X-Forwarded-Uri", "/api/a"}}}, 400, `X-Forwarded-Method must be sent once`, ""},
		{"dot segments", req{path: "/v1/forward-auth/namespace=team-b", headers: fwd(tk["writer"], "DELETE", "/api/orders/../articles/1")}, 400, `dot segment`, ""},
		{"namespace not accepted", req{path: "/v1/forward-auth", headers: fwd(tk["writer"], "GET", "/api/orders/1")}, 403, `namespace team-b are not accepted`, ""},
	})
}

// TestExtAuthz covers /v1/ext-authz/<policy>/<original path> (Envoy
// http_service path_prefix): the check request's own method, the client's
// path and query after the policy segment.
func TestExtAuthz(t *testing.T) {
	f := newFixture()
	tk := f.tokens
	f.check(t, []authCase{
		{"PUT orders", req{method: "PUT", path: "/v1/ext-authz/namespace=team-b/api/orders/9", headers: [][2]string{bearer(tk["writer"])}}, 200, "", "apitoken:team-b:writer"},
		{"PUT articles denied", req{method: "PUT", path: "/v1/ext-authz/namespace=team-b/api/articles/9", headers: [][2]string{bearer(tk["writer"])}}, 403, `scope="articles:update"`, ""},
		{"empty policy, default namespace", req{method: "GET", path: "/v1/ext-authz/-/api/articles", headers: [][2]string{bearer(tk["reader"])}}, 200, "", "apitoken:team-a:reader"},
		{"client's query is not policy", req{method: "DELETE", path: "/v1/ext-authz/-/api/orders/1?scope=articles:read&audience=admin&namespace=team-a&resource=articles", headers: [][2]string{bearer(tk["reader"])}}, 403, `scope="orders:delete"`, ""},
		{"client's path cannot reach the policy", req{method: "DELETE", path: "/v1/ext-authz/-/scope=articles:read/api/orders/1", headers: [][2]string{bearer(tk["reader"])}}, 400, `names no resource`, ""},
		{"prefix without policy segment", req{method: "GET", path: "/v1/ext-authz/api/articles", headers: [][2]string{bearer(tk["reader"])}}, 400, `must be - or key=value pairs`, ""},
		{"no original path", req{method: "GET", path: "/v1/ext-authz/-", headers: [][2]string{bearer(tk["reader"])}}, 400, `no original path`, ""},
		{"dot segments", req{method: "DELETE", path: "/v1/ext-authz/namespace=team-b/api/orders/../articles/1", headers: [][2]string{bearer(tk["writer"])}}, 400, `dot segment`, ""},
		{"encoded slash", req{method: "DELETE", path: "/v1/ext-authz/namespace=team-b/api/orders%2f..%2farticles", headers: [][2]string{bearer(tk["writer"])}}, 400, `encoded "/"`, ""},
		{"empty segment", req{method: "DELETE", path: "/v1/ext-authz/namespace=team-b//api/orders/1", headers: [][2]string{bearer(tk["writer"])}}, 400, `empty segment`, ""},
		{"X-Original headers", req{method: "DELETE", path: "/v1/ext-authz/-/api/articles/1", headers: [][2]string{bearer(tk["reader"]), {"X-Original-Method", "GET"}}}, 400, `another proxy protocol's header`, ""},
		{"X-Forwarded-Method", req{method: "DELETE", path: "/v1/ext-authz/-/api/articles/1", headers: [][2]string{bearer(tk["reader"]), {"X-Forwarded-Method", "GET"}}}, 400, `another proxy protocol's header`, ""},
		{"method override", req{method: "POST", path: "/v1/ext-authz/-/api/articles/1", headers: [][2]string{bearer(tk["full"]), {"X-HTTP-Method", "DELETE"}}}, 400, `X-Http-Method is refused`, ""},
		{"method override in the query", req{method: "POST", path: "/v1/ext-authz/-/api/articles/1?_method=DELETE", headers: [][2]string{bearer(tk["author"])}}, 400, `the original path has the query parameter "_method", which is refused`, ""},
		{"method override in the query, another relative", req{method: "POST", path: "/v1/ext-authz/-/api/articles/1?x-method-override=DELETE", headers: [][2]string{bearer(tk["author"])}}, 400, `query parameter "x-method-override", which is refused`, ""},
		{"OPTIONS refused", req{method: "OPTIONS", path: "/v1/ext-authz/-/api/articles/1", headers: [][2]string{bearer(tk["full"])}}, 400, `not one of GET`, ""},
		{"expired", req{method: "GET", path: "/v1/ext-authz/-/api/articles/1", headers: [][2]string{bearer(tk["expired"])}}, 401, `error_description="expired"`, ""},
		{"two credentials", req{method: "GET", path: "/v1/ext-authz/-/api/articles/1", headers: [][2]string{bearer(tk["reader"]), {"X-API-Key", tk["reader"]}}}, 400, `send one credential`, ""},
	})
}

func TestLookupAtTheExpiryInstant(t *testing.T) {
	f := newFixture()
	exp := metav1.NewTime(now.Add(time.Minute))
	tok := mustToken()
	f.ix.Upsert(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "x"}, Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
		Status: tokensv1alpha1.ApiTokenStatus{ExpiresAt: &exp, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}}})
	if _, v := f.ix.Lookup(tok, exp.Add(-time.Nanosecond)); v != Valid {
		t.Fatalf("just before expiry: %v", v)
	}
	if _, v := f.ix.Lookup(tok, exp.Time); v != Expired {
		t.Fatalf("at expiry: %v", v)
	}
}

func TestIndexUpsertReplacesAndDeleteRemoves(t *testing.T) {
	f := newFixture()
	before := f.ix.Len()
	old, fresh := f.tokens["reader"], mustToken()
	f.ix.Upsert(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "team-a"}, Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
		Status: tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(fresh).Encode()}}})
	if _, v := f.ix.Lookup(old, now); v != Unknown {
		t.Fatalf("replaced token: %v", v)
	}
	if _, v := f.ix.Lookup(fresh, now); v != Valid {
		t.Fatalf("new token: %v", v)
	}
	if f.ix.Len() != before {
		t.Fatalf("len %d, want %d", f.ix.Len(), before)
	}
	f.ix.Delete(keyOf("team-a", "reader"))
	if _, v := f.ix.Lookup(fresh, now); v != Unknown || f.ix.Len() != before-1 {
		t.Fatalf("deleted token: %v", v)
	}
	// No salt: fail closed.
	f.hasher = nil
	if _, v := f.ix.Lookup(f.tokens["writer"], now); v != Unknown {
		t.Fatalf("without a salt: %v", v)
	}
}

// TestGrantTableIsBounded: a tenant cycling through scopes does not grow
// the shared grant table; it holds only the grants of indexed ApiTokens.
func TestGrantTableIsBounded(t *testing.T) {
	f := newFixture()
	before := f.ix.Grants()
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "cycler", Namespace: "team-z"}, Status: tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(mustToken()).Encode()}}}
	for i := 0; i < 1000; i++ {
		at.Spec = tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: []string{"r" + strconv.Itoa(i) + ":read"}}
		f.ix.Upsert(at)
	}
	if n := f.ix.Grants(); n != before+1 {
		t.Fatalf("%d grants after 1,000 scope changes of one token, want %d", n, before+1)
	}
	f.ix.Delete(keyOf("team-z", "cycler"))
	if n := f.ix.Grants(); n != before {
		t.Fatalf("%d grants after the delete, want %d", n, before)
	}
	// Two tokens with the same spec share one grant; it outlives the first.
	f.ix.Delete(keyOf("team-a", "reader"))
	if n := f.ix.Grants(); n != before {
		t.Fatalf("a grant still used by other read-only tokens was dropped: %d, want %d", n, before)
	}
}

// TestIndexRefusesATokenTwoApiTokensRecord: a hash that two ApiTokens
// record (a planted copy, a restore under a second name) is refused for
// both while both name it, in whichever order the index saw them, never
// "whichever registered first", and counted; when one stops naming it
// (deleted, or its record moved on), the other verifies again, as its own
// latest record says.
func TestIndexRefusesATokenTwoApiTokensRecord(t *testing.T) {
	f := newFixture()
	future := metav1.NewTime(now.Add(time.Hour))
	copyOf := func(name, victim string) *tokensv1alpha1.ApiToken {
		return &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-z"}, Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess},
			Status: tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(f.tokens[victim]).Encode()}}}
	}
	reader := f.tokens["reader"]
	owner := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "team-a", UID: "uid-reader"}, Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
		Status: tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(reader).Encode()}}}
	want := func(t *testing.T, tok string, verdict Verdict, user string) {
		t.Helper()
		id, v := f.ix.Lookup(tok, now)
		got := ""
		if id != nil {
			got = id.User
		}
		if v != verdict || (verdict == Valid || user != "") && got != user || verdict == Ambiguous && id != nil {
			t.Fatalf("lookup = %v for %q, want %v for %q", v, got, verdict, user)
		}
	}
	shared := func(t *testing.T, n float64) {
		t.Helper()
		if got := testutil.ToFloat64(sharedHashes); got != n {
			t.Fatalf("apitoken_shared_token_hashes = %v, want %v", got, n)
		}
	}

	thief := copyOf("thief", "reader")
	f.ix.Upsert(thief)
	want(t, reader, Ambiguous, "")
	shared(t, 1)
	f.ix.Upsert(owner) // the owner's next event changes nothing
	want(t, reader, Ambiguous, "")
	// A copy of a revoked token is refused too (it never verified).
	f.ix.Upsert(copyOf("thief-revoked", "revoked"))
	want(t, f.tokens["revoked"], Ambiguous, "")
	shared(t, 2)

	// The thief's record moves on: the owner's token verifies again.
	moved := thief.DeepCopy()
	moved.Status.Verification.Hash = f.hasher.Hash(mustToken()).Encode()
	f.ix.Upsert(moved)
	want(t, reader, Valid, "apitoken:team-a:reader")
	f.ix.Delete(keyOf("team-z", "thief-revoked"))
	want(t, f.tokens["revoked"], Revoked, "apitoken:team-a:revoked")
	shared(t, 0)

	// Three records; the owner's changes while it shares the hash count
	// when it is the last one left.
	f.ix.Upsert(thief)
	f.ix.Upsert(copyOf("accomplice", "reader"))
	want(t, reader, Ambiguous, "")
	expired := owner.DeepCopy()
	past := metav1.NewTime(now.Add(-time.Second))
	expired.Status.ExpiresAt = &past
	f.ix.Upsert(expired)
	f.ix.Delete(keyOf("team-z", "thief"))
	want(t, reader, Ambiguous, "")
	f.ix.Delete(keyOf("team-z", "accomplice"))
	want(t, reader, Expired, "apitoken:team-a:reader")
	f.ix.Upsert(owner)
	want(t, reader, Valid, "apitoken:team-a:reader")
	shared(t, 0)

	// Whichever was seen first: a fresh index fed the copy first refuses
	// alike, and the copy verifies as itself once the owner is gone.
	g := newFixture()
	g.ix.Delete(keyOf("team-a", "reader"))
	indexed := g.ix.Len()
	stolen := copyOf("thief", "reader")
	stolen.Status.Verification.Hash = g.hasher.Hash(reader).Encode()
	g.ix.Upsert(stolen)
	g.ix.Upsert(owner)
	if _, v := g.ix.Lookup(reader, now); v != Ambiguous {
		t.Fatalf("copy first: %v, want ambiguous", v)
	}
	g.ix.Delete(keyOf("team-a", "reader"))
	if id, v := g.ix.Lookup(reader, now); v != Valid || id.User != "apitoken:team-z:thief" {
		t.Fatalf("the copy alone: %v %v", id, v)
	}
	g.ix.Delete(keyOf("team-z", "thief"))
	if n := g.ix.Len(); n != indexed {
		t.Fatalf("%d hashes indexed after the copies left, want %d", n, indexed)
	}

	// Every door answers invalid_token and names no ApiToken.
	f.ix.Upsert(thief)
	for _, r := range []req{
		{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(reader)}},
		{path: "/v1/auth-request/-", headers: [][2]string{bearer(reader), {"X-Original-Method", "GET"}, {"X-Original-URL", "/api/articles/7"}}},
	} {
		w := f.do(r)
		if w.Code != http.StatusUnauthorized || !strings.Contains(w.Header().Get("Www-Authenticate"), `error="invalid_token", error_description="ambiguous"`) {
			t.Fatalf("%s: %d %v", r.path, w.Code, w.Header())
		}
	}
	f.ix.Delete(keyOf("team-z", "thief"))
	shared(t, 0)
}

func TestResourceOf(t *testing.T) {
	cases := []struct {
		prefix  string
		segment int
		n       int
		path    string
		want    string
		item    bool
	}{
		{"/api", 0, 1, "/api/Articles/7", "Articles", true},
		{"/api/", 0, 1, "/api/articles", "articles", false},
		{"/api/", 0, 1, "/api/articles/", "articles", false},
		{"/api", 0, 1, "/apiary/honey", "apiary", true},
		{"/api", 0, 1, "/api", "", false},
		{"", 0, 1, "/orders/1", "orders", true},
		{"", 1, 1, "/v2/orders/1", "orders", true},
		{"", 3, 1, "/v2/orders", "", false},
		{"", 0, 2, "/table/data/7", "table/data", true},
		{"", 0, 2, "/table/data", "table/data", false},
		{"", 0, 2, "/table", "", false},
		{"", 0, 2, "/table/", "", false},
		{"", 0, 3, "/tables/posts/data/7/", "tables/posts/data", true},
	}
	for _, c := range cases {
		h := &Handler{Options: Options{PathPrefix: c.prefix, ResourceSegment: c.segment}}
		got, item, ok := h.resourceOf(c.path, c.n)
		if got != c.want || item != c.item || ok != (c.want != "") {
			t.Errorf("resourceOf(%q, %d) with prefix %q, segment %d = %q, %v, %v; want %q, %v", c.path, c.n, c.prefix, c.segment, got, item, ok, c.want, c.item)
		}
	}
}

// TestATerminatingApiTokenIsRefused: a deletion ends the token at once,
// whatever finalizer holds the object, on every replica (an auth-only one
// indexes IndexView, which keeps the deletion timestamp).
func TestATerminatingApiTokenIsRefused(t *testing.T) {
	f := newFixture()
	tok := mustToken()
	future := metav1.NewTime(now.Add(time.Hour))
	at := &tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: "team-a", UID: "uid-held", Finalizers: []string{"example.com/hold"}},
		Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
		Status:     tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}},
	}
	f.ix.Upsert(at)
	if _, v := f.ix.Lookup(tok, now); v != Valid {
		t.Fatalf("before the deletion: %v", v)
	}
	deleted := metav1.NewTime(now)
	at.DeletionTimestamp = &deleted
	for name, view := range map[string]*tokensv1alpha1.ApiToken{"operator": at, "auth-only": IndexView(at, "")} {
		f.ix.Upsert(view)
		if id, v := f.ix.Lookup(tok, now); v != Revoked || id == nil || id.Name != "held" {
			t.Fatalf("%s replica: a Terminating ApiToken's token = %v", name, v)
		}
	}
}
