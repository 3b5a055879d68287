package authserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
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
	f.ix = NewIndex(func() *token.Hasher { return f.hasher })
	f.h = &Handler{Index: f.ix, Clock: clocktesting.NewFakePassiveClock(now), Options: Options{PathPrefix: "/api"}}
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
	add("reader", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, nil)
	add("writer", "team-b", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: []string{"articles:read", "orders:*"}}, nil)
	add("admin", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Audience: tokensv1alpha1.Admin}, nil)
	add("expired", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, func(at *tokensv1alpha1.ApiToken, _ string) { at.Status.ExpiresAt = &past })
	add("unlimited", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, func(at *tokensv1alpha1.ApiToken, _ string) { at.Status.ExpiresAt = nil })
	add("revoked", "team-a", tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Revoked: true}, func(at *tokensv1alpha1.ApiToken, tok string) {
		at.Status.Verification = &tokensv1alpha1.Verification{RevokedHash: f.hasher.Hash(tok).Encode()}
	})
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

func (f *fixture) do(r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodGet
	}
	hr := httptest.NewRequest(r.method, r.path, nil)
	for _, h := range r.headers {
		hr.Header.Add(h[0], h[1])
	}
	w := httptest.NewRecorder()
	f.h.ServeAuthorize(w, hr)
	return w
}

func bearer(tok string) [2]string { return [2]string{"Authorization", "Bearer " + tok} }

func TestAuthorize(t *testing.T) {
	f := newFixture()
	tk := f.tokens
	cases := []struct {
		name      string
		r         req
		code      int
		challenge string
		user      string
	}{
		{"no credential", req{path: "/v1/authorize"}, 401, `Bearer realm="apitoken"`, ""},
		{"bearer, any scheme case", req{path: "/v1/authorize", headers: [][2]string{{"Authorization", "bEaReR " + tk["reader"]}}}, 200, "", "apitoken:team-a:reader"},
		{"x-api-key", req{path: "/v1/authorize", headers: [][2]string{{"X-API-Key", tk["reader"]}}}, 200, "", "apitoken:team-a:reader"},
		{"malformed", req{path: "/v1/authorize", headers: [][2]string{bearer("atk_nope")}}, 401, `error="invalid_token", error_description="malformed"`, ""},
		{"unknown", req{path: "/v1/authorize", headers: [][2]string{bearer(mustToken())}}, 401, `error="invalid_token", error_description="unknown"`, ""},
		{"expired", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["expired"])}}, 401, `error_description="expired"`, ""},
		{"revoked", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["revoked"])}}, 401, `error_description="revoked"`, ""},
		{"previous in grace", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["previous"])}}, 200, "", "apitoken:team-a:rotated"},
		{"previous after grace", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["lapsed"])}}, 401, `error_description="expired"`, ""},
		{"unlimited", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["unlimited"])}}, 200, "", "apitoken:team-a:unlimited"},
		{"scope query allowed", req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tk["reader"])}}, 200, "", "apitoken:team-a:reader"},
		{"scope query denied", req{path: "/v1/authorize?scope=articles:create", headers: [][2]string{bearer(tk["reader"])}}, 403, `error="insufficient_scope", error_description="the token does not grant articles:create", scope="articles:create"`, ""},
		{"malformed scope query", req{path: "/v1/authorize?scope=articles", headers: [][2]string{bearer(tk["reader"])}}, 400, `error="invalid_request"`, ""},
		{"x-original GET read", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["writer"]), {"X-Original-Method", "GET"}, {"X-Original-URL", "https://shop.example/api/articles/7?x=1"}}}, 200, "", "apitoken:team-b:writer"},
		{"x-original POST to articles denied", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["writer"]), {"X-Original-Method", "POST"}, {"X-Original-URL", "/api/articles"}}}, 403, `scope="articles:create"`, ""},
		{"x-original DELETE orders allowed", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["writer"]), {"X-Original-Method", "DELETE"}, {"X-Original-URL", "/api/orders/3"}}}, 200, "", "apitoken:team-b:writer"},
		{"x-forwarded PATCH denied for read-only", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["reader"]), {"X-Forwarded-Method", "PATCH"}, {"X-Forwarded-Uri", "/api/articles/1"}}}, 403, `scope="articles:update"`, ""},
		{"path prefix, own method", req{method: "PUT", path: "/v1/authorize/api/orders/9", headers: [][2]string{bearer(tk["writer"])}}, 200, "", "apitoken:team-b:writer"},
		{"path prefix, own method denied", req{method: "PUT", path: "/v1/authorize/api/articles/9", headers: [][2]string{bearer(tk["writer"])}}, 403, `scope="articles:update"`, ""},
		{"admin token refused for content-api", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["admin"])}}, 403, `error="insufficient_scope", error_description="the token's audience is admin, not content-api"`, ""},
		{"admin audience", req{path: "/v1/authorize?audience=admin&scope=users:delete", headers: [][2]string{bearer(tk["admin"])}}, 200, "", "apitoken:team-a:admin"},
		{"content token refused for admin", req{path: "/v1/authorize?audience=admin", headers: [][2]string{bearer(tk["reader"])}}, 403, `audience is content-api, not admin`, ""},
		{"namespace accepted", req{path: "/v1/authorize?namespace=team-x,team-a", headers: [][2]string{bearer(tk["reader"])}}, 200, "", "apitoken:team-a:reader"},
		{"namespace refused", req{path: "/v1/authorize?namespace=team-b", headers: [][2]string{bearer(tk["reader"])}}, 403, `tokens from namespace team-a are not accepted here`, ""},
		{"two authorization headers", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["reader"]), bearer(tk["reader"])}}, 400, `more than one Authorization header`, ""},
		{"two api keys", req{path: "/v1/authorize", headers: [][2]string{{"X-API-Key", tk["reader"]}, {"X-API-Key", tk["reader"]}}}, 400, `more than one X-API-Key header`, ""},
		{"both credentials", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["reader"]), {"X-API-Key", tk["reader"]}}}, 400, `send one credential`, ""},
		{"basic scheme", req{path: "/v1/authorize", headers: [][2]string{{"Authorization", "Basic dXNlcjpwYXNz"}}}, 400, `scheme must be Bearer`, ""},
		{"bearer without token", req{path: "/v1/authorize", headers: [][2]string{{"Authorization", "Bearer"}}}, 400, `must be Bearer and one token`, ""},
		{"bearer with two tokens", req{path: "/v1/authorize", headers: [][2]string{{"Authorization", "Bearer a, b"}}}, 400, `must be Bearer and one token`, ""},
		{"repeated scope parameter", req{path: "/v1/authorize?scope=articles:read&scope=orders:read", headers: [][2]string{bearer(tk["reader"])}}, 400, `more than one scope parameter`, ""},
		{"escaped scope parameter", req{path: "/v1/authorize?scope=articles%3Aread", headers: [][2]string{bearer(tk["reader"])}}, 200, "", "apitoken:team-a:reader"},
		{"repeated namespace parameters", req{path: "/v1/authorize?namespace=x&namespace=team-a", headers: [][2]string{bearer(tk["reader"])}}, 200, "", "apitoken:team-a:reader"},
		{"badly escaped parameter", req{path: "/v1/authorize?scope=%zz", headers: [][2]string{bearer(tk["reader"])}}, 400, `not URL-encoded correctly`, ""},
		{"quote in the path cannot break the challenge", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["reader"]), {"X-Original-Method", "POST"}, {"X-Original-URL", `/api/a",x="y/1`}}}, 403, `scope="a\",x=\"y:create"`, ""},
		{"url without method", req{path: "/v1/authorize", headers: [][2]string{bearer(tk["reader"]), {"X-Original-URL", "/api/articles"}}}, 400, `X-Original-URL was sent without X-Original-Method`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do(c.r)
			if w.Code != c.code {
				t.Fatalf("code = %d, want %d (%s)", w.Code, c.code, w.Header().Get("WWW-Authenticate"))
			}
			if c.challenge != "" && !strings.Contains(w.Header().Get("WWW-Authenticate"), c.challenge) {
				t.Fatalf("WWW-Authenticate = %q, want %q", w.Header().Get("WWW-Authenticate"), c.challenge)
			}
			if c.code == 401 && c.challenge == `Bearer realm="apitoken"` && w.Header().Get("WWW-Authenticate") != c.challenge {
				t.Fatalf("a request without credential must get a challenge without error code, got %q", w.Header().Get("WWW-Authenticate"))
			}
			if got := w.Header().Get("X-Auth-Request-User"); got != c.user {
				t.Fatalf("X-Auth-Request-User = %q, want %q", got, c.user)
			}
			for _, tok := range f.tokens {
				if strings.Contains(w.Body.String(), tok) || strings.Contains(w.Header().Get("WWW-Authenticate"), tok) {
					t.Fatal("the response echoes a token")
				}
			}
		})
	}
	w := f.do(req{path: "/v1/authorize", headers: [][2]string{bearer(tk["writer"])}})
	if w.Header().Get("X-ApiToken-Name") != "writer" || w.Header().Get("X-ApiToken-Namespace") != "team-b" ||
		w.Header().Get("X-ApiToken-Type") != "custom" || w.Header().Get("X-ApiToken-Scopes") != "articles:read,orders:*" {
		t.Fatalf("identity headers = %v", w.Header())
	}
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

func TestResourceOf(t *testing.T) {
	cases := []struct {
		prefix  string
		segment int
		path    string
		want    string
	}{
		{"/api", 0, "/api/Articles/7", "articles"},
		{"/api/", 0, "/api/articles", "articles"},
		{"/api", 0, "/apiary/honey", "apiary"},
		{"/api", 0, "/api", ""},
		{"", 0, "/orders/1", "orders"},
		{"", 1, "/v2/orders/1", "orders"},
		{"", 3, "/v2/orders", ""},
	}
	for _, c := range cases {
		h := &Handler{Options: Options{PathPrefix: c.prefix, ResourceSegment: c.segment}}
		if got := h.resourceOf(c.path); got != c.want {
			t.Errorf("resourceOf(%q) with prefix %q, segment %d = %q, want %q", c.path, c.prefix, c.segment, got, c.want)
		}
	}
}
