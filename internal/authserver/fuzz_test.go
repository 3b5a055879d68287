package authserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzClientCannotChoosePolicy plays the client being judged at every
// proxy endpoint: it holds a read-only token, makes a write (POST, PUT,
// PATCH or DELETE) and controls its path, its query and one header of its
// own. Whatever it appends, the answer is never 200, never 5xx, and only a
// 200 would carry identity headers.
func FuzzClientCannotChoosePolicy(f *testing.F) {
	fx := newFixture()
	fx.h.Options.DefaultNamespaces = []string{"*"}
	f.Add(uint8(3), "/api/orders/1", "scope=articles:read", "X-Original-Method", "GET")
	f.Add(uint8(1), "/api/articles/../x", "audience=admin&namespace=team-a", "X-Forwarded-Method", "GET")
	f.Add(uint8(0), "/api/orders%2f1", "resource=articles", "X-HTTP-Method-Override", "GET")
	f.Add(uint8(2), "/scope=*:*/api/x", "", "X-Forwarded-Uri", "/api/articles")
	f.Add(uint8(3), "/api/a/1", "", "Authorization", "Bearer x")
	f.Fuzz(func(t *testing.T, method uint8, path, query, hk, hv string) {
		write := []string{"POST", "PUT", "PATCH", "DELETE"}[method%4]
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		for _, endpoint := range []string{"auth-request", "forward-auth", "ext-authz"} {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Authorization", "Bearer "+fx.tokens["reader"])
			switch endpoint {
			case "auth-request":
				// nginx: a fixed auth URL, the original request in headers
				// it sets; the client's own headers pass too.
				r.RequestURI, r.URL.Path = AuthRequestPath, AuthRequestPath
				r.Header.Set("X-Original-Method", write)
				r.Header.Set("X-Original-URL", target)
			case "forward-auth":
				// Caddy without a trailing ? on uri: the client's query is
				// appended to the auth URL.
				r.RequestURI, r.URL.Path, r.URL.RawQuery = ForwardAuthPath+"?"+query, ForwardAuthPath, query
				r.Header.Set("X-Forwarded-Method", write)
				r.Header.Set("X-Forwarded-Uri", target)
			case "ext-authz":
				// Envoy: the client's path and query after the prefix.
				r.Method = write
				r.RequestURI = ExtAuthzPath + "/-" + target
				r.URL.Path, _, _ = strings.Cut(r.RequestURI, "?")
			}
			if k := http.CanonicalHeaderKey(hk); hk != "" && validHeader(k, hv) &&
				k != headerOriginalMethod && k != headerOriginalURL && k != headerForwardedMethod && k != headerForwardedURI {
				// The proxy overwrites its own family; anything else the
				// client sends arrives beside it.
				r.Header.Add(k, hv)
			}
			w := httptest.NewRecorder()
			(&Server{Handler: fx.h}).Mux().ServeHTTP(w, r)
			switch {
			case w.Code == 200:
				t.Fatalf("%s: a read-only token's %s %q was allowed", endpoint, write, target)
			case w.Code >= 500:
				t.Fatalf("%s: 5xx for a decision: %d", endpoint, w.Code)
			case w.Header().Get("X-Auth-Request-User") != "":
				t.Fatalf("%s: identity headers on %d", endpoint, w.Code)
			}
			if c := w.Header().Get("WWW-Authenticate"); unescapedQuotes(c)%2 != 0 || strings.ContainsAny(c, "\r\n") {
				t.Fatalf("%s: malformed challenge %q", endpoint, c)
			}
		}
	})
}

// validHeader reports whether net/http could have received k: v.
func validHeader(k, v string) bool {
	if k == "" || strings.ContainsAny(v, "\r\n\x00") {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// FuzzNormalPath checks the path rules alone: an accepted path starts with
// '/', and has no dot or empty segment (but a trailing slash), even
// after decoding.
func FuzzNormalPath(f *testing.F) {
	for _, s := range []string{"/api/a", "/a/../b", "/a/%2e%2e/b", "https://h/a?q", "//h/a", "/a%2fb", "/a/./b/", "/%", "/a;b", "/a?_method=DELETE", "/a?x=1;X_HTTP_METHOD_OVERRIDE=PUT", "/a?%2Emethod[]=x&+"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		p, problem := normalPath(target)
		if problem != "" {
			if p != "" {
				t.Fatal("a path with a problem")
			}
			return
		}
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("%q -> %q does not start with /", target, p)
		}
		segs := strings.Split(p[1:], "/")
		for i, seg := range segs {
			if seg == "." || seg == ".." || (seg == "" && i < len(segs)-1) || strings.ContainsAny(seg, "\\;") {
				t.Fatalf("%q -> %q has segment %q", target, p, seg)
			}
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
		tok, via, problem := credential(h)
		if tok != "" && problem != "" {
			t.Fatal("both a token and a problem")
		}
		if (tok != "") != (via != "") || (via == headerAPIKey) != (tok != "" && key != "") {
			t.Fatalf("token %q reported as from %q (Authorization %q, X-API-Key %q)", tok, via, auth, key)
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
