package authserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAuthorizeHeaders sends arbitrary credential and original-request
// headers: the handler never panics, never answers 5xx, and only a 200
// carries identity headers.
func FuzzAuthorizeHeaders(f *testing.F) {
	fx := newFixture()
	f.Add("Bearer "+fx.tokens["reader"], "", "GET", "/api/articles", "articles:read")
	f.Add("bearer  "+fx.tokens["writer"]+" ", "", "POST", "https://x/api/orders?q", "")
	f.Add("", fx.tokens["admin"], "", "", "")
	f.Add("Basic abc", "k", "DELETE", "%zz", "a:b:c")
	f.Add("Bearer atk_", "", "", "::", "*:*")
	f.Add("Bearer "+fx.tokens["reader"], "", "POST", `/api/a"b\\/1`, "")
	f.Fuzz(func(t *testing.T, auth, key, method, url, scope string) {
		r := httptest.NewRequest(http.MethodGet, "/v1/authorize", nil)
		if scope != "" {
			q := r.URL.Query()
			q.Set("scope", scope)
			r.URL.RawQuery = q.Encode()
		}
		for k, v := range map[string]string{"Authorization": auth, "X-API-Key": key, "X-Original-Method": method, "X-Original-URL": url} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		fx.h.ServeAuthorize(w, r)
		if w.Code >= 500 {
			t.Fatalf("5xx for a decision: %d", w.Code)
		}
		if (w.Code == 200) != (w.Header().Get("X-Auth-Request-User") != "") {
			t.Fatalf("identity headers on %d", w.Code)
		}
		if w.Code == 200 && !strings.HasPrefix(w.Header().Get("X-Auth-Request-User"), "apitoken:") {
			t.Fatal("bad identity")
		}
		if c := w.Header().Get("WWW-Authenticate"); unescapedQuotes(c)%2 != 0 || strings.ContainsAny(c, "\r\n") {
			t.Fatalf("malformed challenge %q", c)
		}
	})
}

// FuzzCredential checks the credential parser alone: a token it returns
// is trimmed and has no separators.
func FuzzCredential(f *testing.F) {
	f.Add("Bearer abc", "")
	f.Add("", " key ")
	f.Add("BEARER\tabc", "x")
	f.Fuzz(func(t *testing.T, auth, key string) {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		if key != "" {
			h.Set("X-API-Key", key)
		}
		tok, problem := credential(h)
		if tok != "" && problem != "" {
			t.Fatal("both a token and a problem")
		}
		if tok != strings.TrimSpace(tok) || (auth != "" && strings.ContainsAny(tok, " \t,")) {
			t.Fatalf("untrimmed or compound token %q", tok)
		}
	})
}

// unescapedQuotes counts the double quotes not preceded by a backslash
// escape: a well-formed challenge has an even number.
func unescapedQuotes(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			n++
		}
	}
	return n
}
