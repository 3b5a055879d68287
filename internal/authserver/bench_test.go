package authserver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// BenchmarkVerify looks up a valid token in an index of n tokens, next to
// the bare HMAC-SHA512 of one token (the floor) and a malformed token.
func BenchmarkVerify(b *testing.B) {
	hasher := token.NewHasher([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
	tok := mustToken()
	b.Run("hmac-floor", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			hasher.Hash(tok)
		}
	})
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		ix := NewIndex(func() *token.Hasher { return hasher })
		var probe string
		for i := 0; i < n; i++ {
			t := mustToken()
			if i == n/2 {
				probe = t
			}
			ix.Upsert(&tokensv1alpha1.ApiToken{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", i), Namespace: "bench"},
				Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly},
				Status:     tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: hasher.Hash(t).Encode()}},
			})
		}
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, v := ix.Lookup(probe, now); v != Valid {
					b.Fatal(v)
				}
			}
		})
		if n == 1_000 {
			bad := probe[:len(probe)-1] + "!"
			b.Run("malformed", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, v := ix.Lookup(bad, now); v != Malformed {
						b.Fatal(v)
					}
				}
			})
		}
	}
}

// BenchmarkAuthorizeHandler is one forward-auth request through the
// handler, without the network.
func BenchmarkAuthorizeHandler(b *testing.B) {
	f := newFixture()
	r := httptest.NewRequest(http.MethodGet, "/v1/authorize?scope=articles:read", nil)
	r.Header.Set("Authorization", "Bearer "+f.tokens["reader"])
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		f.h.ServeAuthorize(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkEndpoints is one allowed request through each endpoint's route
// and adapter, without the network, as its proxy sends it: the figures
// that docs/benchmarks.md compares with /v1/authorize before the split.
func BenchmarkEndpoints(b *testing.B) {
	f := newFixture()
	tok := "Bearer " + f.tokens["reader"]
	mux := (&Server{Handler: f.h}).Mux()
	for _, c := range []struct {
		name, method, target string
		headers              [][2]string
	}{
		{"explicit", "GET", "/v1/authorize?scope=articles:read", nil},
		{"auth-request", "GET", "/v1/auth-request/namespace=team-a", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Url", "/api/articles/7?page=2"}}},
		{"forward-auth", "GET", "/v1/forward-auth/namespace=team-a", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/api/articles/7?page=2"}}},
		{"ext-authz", "GET", "/v1/ext-authz/namespace=team-a/api/articles/7?page=2", nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest(c.method, c.target, nil)
			r.Header["Authorization"] = []string{tok}
			for _, h := range c.headers {
				r.Header[h[0]] = []string{h[1]}
			}
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatal(w.Code, w.Header())
				}
			}
		})
	}
}
