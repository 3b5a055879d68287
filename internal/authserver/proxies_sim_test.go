package authserver

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Traefik v3.7 and Envoy do not run here (Traefik's module does not build
// with go install; there is no Envoy binary). These handlers build the auth
// request exactly as their source does, read on Traefik v3.7.9
// (pkg/middlewares/auth/forward.go) and Envoy's ext_authz HTTP client
// (source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc and the
// HttpService API docs), and the same attack table runs through them.

// traefikForwardAuth is Traefik's ForwardAuth middleware with
// trustForwardHeader false (the default) and preserveRequestMethod false.
func traefikForwardAuth(address string, authResponseHeaders []string, next http.Handler) http.Handler {
	hopByHop := []string{"Connection", "Keep-Alive", "Te", "Trailers", "Transfer-Encoding", "Upgrade"}
	xForwarded := []string{"X-Forwarded-Proto", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Port", "X-Forwarded-Server",
		"X-Forwarded-Uri", "X-Forwarded-Method", "X-Forwarded-Prefix", "X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info", "X-Real-Ip"}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// forward.go: GET <address> as written; the client's query is not appended.
		fwd, _ := http.NewRequestWithContext(req.Context(), http.MethodGet, address, nil)
		// writeHeader: every client header, minus hop-by-hop and the
		// X-Forwarded-* family, which Traefik then sets itself.
		fwd.Header = req.Header.Clone()
		for _, c := range req.Header.Values("Connection") {
			for _, k := range strings.Split(c, ",") {
				fwd.Header.Del(strings.TrimSpace(k))
			}
		}
		for _, k := range append(hopByHop, xForwarded...) {
			fwd.Header.Del(k)
		}
		host, _, _ := net.SplitHostPort(req.RemoteAddr)
		fwd.Header.Set("X-Forwarded-For", host)
		fwd.Header.Set("X-Forwarded-Method", req.Method)
		fwd.Header.Set("X-Forwarded-Proto", "http")
		fwd.Header.Set("X-Forwarded-Host", req.Host)
		fwd.Header.Set("X-Forwarded-Uri", req.URL.RequestURI())
		resp, err := http.DefaultClient.Do(fwd)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			// Non-2xx: the auth response's headers, status and body go to the client.
			relay(w, resp, body)
			return
		}
		// 2xx: each authResponseHeaders entry is deleted from the request,
		// then copied from the auth response when present.
		for _, h := range authResponseHeaders {
			k := http.CanonicalHeaderKey(h)
			req.Header.Del(k)
			if vs := resp.Header[k]; len(vs) > 0 {
				req.Header[k] = append([]string(nil), vs...)
			}
		}
		next.ServeHTTP(w, req)
	})
}

// envoyExtAuthz is Envoy's HttpConnectionManager with the ext_authz filter
// and an http_service. First the connection manager's
// headers_with_underscores_action: REJECT_REQUEST answers 400 to a request
// with a header name containing '_', DROP_HEADER removes such headers
// before any filter, ALLOW (Envoy's default) lets them through. Then the
// check request has the original method and path_prefix + the original
// :path (query included), Host, Authorization, Content-Length: 0 and the
// allowed_headers; on 200 the allowed_upstream_headers overwrite the
// upstream request's; any other status goes back to the client with the
// auth response's headers and body.
func envoyExtAuthz(authBase, pathPrefix string, underscores corev3.HttpProtocolOptions_HeadersWithUnderscoresAction, allowedHeaders, allowedUpstream []string, next http.Handler) http.Handler {
	base, _ := url.Parse(authBase)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		for k := range req.Header {
			if !strings.Contains(k, "_") {
				continue
			}
			switch underscores {
			case corev3.HttpProtocolOptions_REJECT_REQUEST:
				http.Error(w, "Bad Request", http.StatusBadRequest)
				return
			case corev3.HttpProtocolOptions_DROP_HEADER:
				delete(req.Header, k)
			}
		}
		check := &http.Request{
			Method: req.Method, Host: req.Host, Header: http.Header{},
			// Opaque keeps the client's :path byte for byte on the wire.
			URL: &url.URL{Scheme: base.Scheme, Host: base.Host, Opaque: pathPrefix + req.RequestURI},
		}
		check.Header.Set("Content-Length", "0")
		for k, vs := range req.Header {
			if k == "Authorization" || envoyMatches(allowedHeaders, k) {
				check.Header[k] = vs
			}
		}
		resp, err := http.DefaultClient.Do(check.WithContext(req.Context()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			relay(w, resp, body)
			return
		}
		for k, vs := range resp.Header {
			if envoyMatches(allowedUpstream, k) {
				req.Header[k] = vs
			}
		}
		next.ServeHTTP(w, req)
	})
}

// envoyMatches reports whether header k matches one of patterns, as
// Envoy's header matchers do (names are lower-case on Envoy's side): an
// exact name, or a prefix written with a trailing "*".
func envoyMatches(patterns []string, k string) bool {
	k = strings.ToLower(k)
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(strings.ToLower(p), "*"); ok && strings.HasPrefix(k, prefix) || k == strings.ToLower(p) {
			return true
		}
	}
	return false
}

// envoyPatterns are the patterns of a ListStringMatcher as envoyMatches
// reads them: exact names, and prefixes with a trailing "*".
func envoyPatterns(t *testing.T, ms []*matcherv3.StringMatcher) []string {
	t.Helper()
	var out []string
	for _, m := range ms {
		switch {
		case m.GetExact() != "":
			out = append(out, m.GetExact())
		case m.GetPrefix() != "":
			out = append(out, m.GetPrefix()+"*")
		default:
			t.Fatalf("a header pattern that the simulation does not read: %v", m)
		}
	}
	return out
}

// relay answers the client with the auth response, as both proxies do on
// a denial.
func relay(w http.ResponseWriter, resp *http.Response, body []byte) {
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// traefikResponseHeaders are the authResponseHeaders of the Traefik
// Middleware of docs/auth-endpoint.md.
func traefikResponseHeaders(t *testing.T) []string {
	t.Helper()
	blocks := yamlBlocks(t, "### Traefik ForwardAuth", "###")
	var mw struct {
		Spec struct {
			ForwardAuth struct {
				AuthResponseHeaders []string `json:"authResponseHeaders"`
			} `json:"forwardAuth"`
		} `json:"spec"`
	}
	if len(blocks) == 0 {
		t.Fatal("docs/auth-endpoint.md has no Traefik Middleware")
	}
	if err := yaml.Unmarshal([]byte(blocks[0]), &mw); err != nil || len(mw.Spec.ForwardAuth.AuthResponseHeaders) == 0 {
		t.Fatalf("the Traefik Middleware of docs/auth-endpoint.md: %v %+v", err, mw)
	}
	return mw.Spec.ForwardAuth.AuthResponseHeaders
}

func reverseProxy(t *testing.T, target string) http.Handler {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	return httputil.NewSingleHostReverseProxy(u)
}

// TestTraefikForwardAuth runs the attack table through Traefik's
// ForwardAuth as its source builds the request, with the middleware of
// docs/auth-endpoint.md.
func TestTraefikForwardAuth(t *testing.T) {
	f := newFixture()
	auth, up := newAuthRecorder(f.h), newUpstream()
	defer auth.Close()
	defer up.Close()
	proxy := httptest.NewServer(traefikForwardAuth(auth.URL+"/v1/forward-auth/"+routePolicy, traefikResponseHeaders(t), reverseProxy(t, up.URL)))
	defer proxy.Close()
	runAttacks(t, "traefik", f, strings.TrimPrefix(proxy.URL, "http://"), auth, up)
}

// TestEnvoyExtAuthzHTTP runs the attack table through Envoy's HTTP
// ext_authz as its source builds the check request, with the connection
// manager of docs/auth-endpoint.md (its allowed_headers and
// headers_with_underscores_action, read from the page); and once more with
// every client header allowed, as an Istio includeRequestHeadersInCheck of
// "*"-like breadth would.
func TestEnvoyExtAuthzHTTP(t *testing.T) {
	hcm, authz := envoyHTTPSnippet(t)
	underscores := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction()
	// The snippet's fields; Envoy deprecates allowed_headers for
	// ExtAuthz.allowed_headers and still honours it.
	documented := envoyPatterns(t, authz.GetHttpService().GetAuthorizationRequest().GetAllowedHeaders().GetPatterns()) //nolint:staticcheck // see above
	upstreamHeaders := envoyPatterns(t, authz.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders().GetPatterns())
	for name, allowed := range map[string][]string{
		"allowed_headers as documented": documented,
		"every client header allowed": {"x-api-key", "x-original-method", "x-original-url", "x-forwarded-method", "x-forwarded-uri",
			"x-http-method-override", "x-auth-request-user", "x-apitoken-*"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture()
			auth, up := newAuthRecorder(f.h), newUpstream()
			defer auth.Close()
			defer up.Close()
			proxy := httptest.NewServer(envoyExtAuthz(auth.URL, "/v1/ext-authz/"+routePolicy, underscores, allowed, upstreamHeaders, reverseProxy(t, up.URL)))
			defer proxy.Close()
			runAttacks(t, "envoy", f, strings.TrimPrefix(proxy.URL, "http://"), auth, up)
		})
	}
}
