package authserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apitoken-operator/apitoken-operator/internal/proxytest"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// The conformance tests put each proxy in front of the auth endpoint and a
// small upstream, in the configuration docs/auth-endpoint.md gives, and send
// every row of one attack table through it as raw HTTP (so that dot
// segments and encodings arrive exactly as written). nginx and Caddy are the
// real programs; Traefik and Envoy, which cannot run here, are clients that
// build the auth request exactly as their source does (see traefikProxy and
// envoyProxy).

// routePolicy is the policy segment every proxy's auth URL ends with.
const routePolicy = proxytest.RoutePolicy

// upstream records what reached it.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Request
}

func newUpstream() *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, http.Request{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone()})
		u.mu.Unlock()
		fmt.Fprint(w, "upstream")
	}))
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func (u *upstream) last() http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[len(u.seen)-1]
}

// authRecorder serves the auth endpoint and keeps what the proxy sent it.
type authRecorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Request
}

func newAuthRecorder(h *Handler) *authRecorder {
	a := &authRecorder{}
	mux := (&Server{Handler: h}).Mux()
	a.Server = httptest.NewUnstartedServer(nil)
	// The endpoint's own server settings (header limit, timeouts).
	a.Config = NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, http.Request{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone()})
		a.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	a.Start()
	return a
}

func (a *authRecorder) last(t *testing.T) http.Request {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		t.Fatal("the proxy never called the auth endpoint")
	}
	return a.seen[len(a.seen)-1]
}

// rawDo sends one request exactly as written and returns the response.
func rawDo(t *testing.T, addr, method, target string, headers [][2]string) *http.Response {
	t.Helper()
	resp, _, err := proxytest.RawDo(addr, method, target, headers)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// runAttacks sends every row through the proxy at addr, in front of auth.
func runAttacks(t *testing.T, proxy string, f *fixture, addr string, auth *authRecorder, up *upstream) {
	t.Helper()
	for _, a := range proxytest.Attacks {
		t.Run(a.Name, func(t *testing.T) {
			if why, ok := a.NotOn[proxy]; ok {
				t.Skipf("not on %s (documented caveat): %s", proxy, why)
			}
			before := up.count()
			resp := rawDo(t, addr, a.Method, a.Target, a.RequestHeaders(f.tokens))
			if !a.Allow {
				if a.Unseen != "" && resp.StatusCode == 200 && up.count() == before+1 && !proxytest.HasHeader(up.last().Header, a.Unseen) && !proxytest.HasHeader(auth.last(t).Header, a.Unseen) {
					t.Logf("%s %s -> 200: %s dropped %s before the endpoint and the upstream", a.Method, a.Target, proxy, a.Unseen)
					return
				}
				if up.count() != before || resp.StatusCode < 300 {
					t.Fatalf("%s %s: %d, upstream reached %d times: must be refused", a.Method, a.Target, resp.StatusCode, up.count()-before)
				}
				t.Logf("%s %s -> %d %s", a.Method, a.Target, resp.StatusCode, resp.Header.Get("Www-Authenticate"))
				return
			}
			if resp.StatusCode != 200 || up.count() != before+1 {
				t.Fatalf("%s %s: %d (upstream reached %d times), want 200 once", a.Method, a.Target, resp.StatusCode, up.count()-before)
			}
			seen := up.last()
			id, _ := f.ix.Lookup(f.tokens[a.Token], f.h.Clock.Now())
			want := map[string]string{
				"X-Auth-Request-User": id.User, "X-ApiToken-Name": id.Name, "X-ApiToken-Namespace": id.Namespace,
				"X-ApiToken-Type": id.Type, "X-ApiToken-Scopes": id.ScopesHeader,
			}
			for _, l := range id.Labels {
				want[l.Header] = l.Value()
			}
			for h := range want {
				if got := seen.Header.Values(h); len(got) != 1 || got[0] != want[h] {
					t.Fatalf("the upstream saw %s = %q, want only %q", h, got, want[h])
				}
			}
			// No other X-ApiToken-* header (a label the token lacks, a
			// client's copy) reaches the upstream, in any spelling.
			carried := map[string]bool{}
			for h := range want {
				carried[http.CanonicalHeaderKey(h)] = true
			}
			for k := range seen.Header {
				canon := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
				if strings.HasPrefix(canon, "X-Apitoken-") && (!carried[canon] || k != canon) {
					t.Fatalf("the upstream saw %s = %q, which the token does not carry", k, seen.Header.Values(k))
				}
			}
			if seen.Method != a.Method {
				t.Fatalf("the upstream saw %s, judged %s", seen.Method, a.Method)
			}
		})
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProgram runs a proxy until the test ends and waits for its port.
func startProgram(t *testing.T, port int, logFile string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			_ = conn.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			t.Fatalf("%s did not start: %s %s", name, out, log)
		}
	}
}

// nginxBinary finds Debian's nginx. The test is part of make test; .ci/run
// installs nginx. Set APITOKEN_SKIP_NGINX=1 to opt out explicitly.
func nginxBinary(t *testing.T) string {
	t.Helper()
	if os.Getenv("APITOKEN_SKIP_NGINX") == "1" {
		t.Skip("APITOKEN_SKIP_NGINX=1")
	}
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("nginx is not installed: apt-get install nginx-light (or set APITOKEN_SKIP_NGINX=1 to opt out)")
	return ""
}

// nginxConf is the snippet of docs/auth-endpoint.md, in a server of its own.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path {{dir}}/body;
  proxy_temp_path {{dir}}/proxy;
  fastcgi_temp_path {{dir}}/fastcgi;
  uwsgi_temp_path {{dir}}/uwsgi;
  scgi_temp_path {{dir}}/scgi;
  server {
    listen 127.0.0.1:{{port}};
    # --- docs/auth-endpoint.md: nginx auth_request ---
    location = /_apitoken {
      internal;
      proxy_pass http://{{auth}}/v1/auth-request/namespace=team-a+team-b;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $request_uri;
      proxy_set_header X-Original-Method $request_method;
      # The client address the audit log records (replacing a client's copy).
      proxy_set_header X-Real-IP $remote_addr;
    }
    location /api/ {
      auth_request /_apitoken;
      auth_request_set $apitoken_user $upstream_http_x_auth_request_user;
      auth_request_set $apitoken_name $upstream_http_x_apitoken_name;
      auth_request_set $apitoken_namespace $upstream_http_x_apitoken_namespace;
      auth_request_set $apitoken_type $upstream_http_x_apitoken_type;
      auth_request_set $apitoken_scopes $upstream_http_x_apitoken_scopes;
      auth_request_set $apitoken_tier $upstream_http_x_apitoken_tier;
      proxy_set_header X-Auth-Request-User $apitoken_user;
      proxy_set_header X-ApiToken-Name $apitoken_name;
      proxy_set_header X-ApiToken-Namespace $apitoken_namespace;
      proxy_set_header X-ApiToken-Type $apitoken_type;
      proxy_set_header X-ApiToken-Scopes $apitoken_scopes;
      proxy_set_header X-ApiToken-Tier $apitoken_tier;
      proxy_pass http://{{upstream}};
    }
    # --- end ---
  }
}
`

// TestNginxAuthRequest runs the attack table through Debian's nginx with
// auth_request in front of /v1/auth-request.
func TestNginxAuthRequest(t *testing.T) {
	bin := nginxBinary(t)
	f := newFixture()
	f.h.Audit = NewAuditLog(nil)
	auth, up := newAuthRecorder(f.h), newUpstream()
	defer auth.Close()
	defer up.Close()
	port, dir := freePort(t), t.TempDir()
	conf := strings.NewReplacer("{{dir}}", dir, "{{port}}", fmt.Sprint(port),
		"{{auth}}", strings.TrimPrefix(auth.URL, "http://"), "{{upstream}}", strings.TrimPrefix(up.URL, "http://")).Replace(nginxConf)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startProgram(t, port, filepath.Join(dir, "error.log"), bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// What nginx was seen to send: the configured URI without the client's
	// query, and the client's own headers beside the ones it sets.
	rawDo(t, addr, "GET", "/api/articles/1?scope=x", [][2]string{bearer(f.tokens["reader"]), {"X-Client", "1"}})
	sent := auth.last(t)
	t.Logf("nginx sent %s %s with %v", sent.Method, sent.RequestURI, withoutCredential(sent.Header))
	if sent.RequestURI != "/v1/auth-request/"+routePolicy || sent.Header.Get("X-Original-URL") != "/api/articles/1?scope=x" || sent.Header.Get("X-Client") != "1" {
		t.Fatalf("nginx no longer sends what docs/auth-endpoint.md says: %s %v", sent.RequestURI, sent.Header)
	}
	checkProxyReportsClient(t, f, addr)
	runAttacks(t, "nginx", f, addr, auth, up)
}

// caddyGlobal are the global options every Caddy of the tests runs with:
// no admin endpoint, no ACME, nothing written to disk.
const caddyGlobal = `{
	admin off
	auto_https off
	persist_config off
}
`

// caddyfile is the snippet of docs/auth-endpoint.md as the loopback test
// serves it: at http://:port (bound to 127.0.0.1), the endpoint and the
// upstream on loopback over plain HTTP, so without the transport block
// that HTTPS adds.
func caddyfile(t *testing.T, port int, auth, upstream string) string {
	t.Helper()
	page, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "auth-endpoint.md"))
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := proxytest.CaddySnippet(page)
	if err != nil {
		t.Fatalf("docs/auth-endpoint.md: %v", err)
	}
	site := proxytest.CaddySite(proxytest.WithoutBlock(snippet, "transport http"), fmt.Sprintf("http://:%d", port), auth, upstream)
	if strings.Contains(site, "transport") || !strings.Contains(site, "forward_auth "+auth+" {") {
		t.Fatalf("the loopback Caddyfile is not the snippet with plain-HTTP addresses:\n%s", site)
	}
	return strings.Replace(caddyGlobal, "}", "\tdefault_bind 127.0.0.1\n}", 1) + site
}

// TestCaddyForwardAuth runs the attack table through Caddy's forward_auth
// (installed by hack/tools.sh) in front of /v1/forward-auth.
func TestCaddyForwardAuth(t *testing.T) {
	out, err := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "tools.sh"), "caddy").Output()
	if err != nil {
		t.Fatalf("hack/tools.sh caddy: %v", err)
	}
	bin := strings.TrimSpace(string(out))
	f := newFixture()
	f.h.Audit = NewAuditLog(nil)
	auth, up := newAuthRecorder(f.h), newUpstream()
	defer auth.Close()
	defer up.Close()
	port, dir := freePort(t), t.TempDir()
	conf := caddyfile(t, port, auth.URL, strings.TrimPrefix(up.URL, "http://"))
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startProgram(t, port, "", bin, "run", "--config", file, "--adapter", "caddyfile")
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// What Caddy was seen to send: GET, the configured URI (its trailing ?
	// keeps Caddy from appending the client's query), the client's own
	// headers, X-Forwarded-Method/-Uri set.
	rawDo(t, addr, "DELETE", "/api/articles/1?scope=x", [][2]string{bearer(f.tokens["reader"]), {"X-Client", "1"}})
	sent := auth.last(t)
	t.Logf("caddy sent %s %s with %v", sent.Method, sent.RequestURI, withoutCredential(sent.Header))
	if sent.Method != "GET" || sent.RequestURI != "/v1/forward-auth/"+routePolicy || sent.Header.Get("X-Forwarded-Method") != "DELETE" ||
		sent.Header.Get("X-Forwarded-Uri") != "/api/articles/1?scope=x" || sent.Header.Get("X-Client") != "1" {
		t.Fatalf("Caddy no longer sends what docs/auth-endpoint.md says: %s %s %v", sent.Method, sent.RequestURI, sent.Header)
	}
	checkProxyReportsClient(t, f, addr)
	runAttacks(t, "caddy", f, addr, auth, up)
}

// withoutCredential is h for a log line: the token is never logged.
func withoutCredential(h http.Header) http.Header {
	h = h.Clone()
	for _, k := range []string{"Authorization", "X-Api-Key"} {
		if h.Get(k) != "" {
			h.Set(k, "(redacted)")
		}
	}
	return h
}

// TestNginxConfIsTheDocs: every line of the nginx test's copy of the
// snippet (but the loopback proxy_pass lines) is a line of the snippet of
// docs/auth-endpoint.md, so the headers the test copies upstream are the
// ones the page tells users to copy.
func TestNginxConfIsTheDocs(t *testing.T) {
	page, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "auth-endpoint.md"))
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := proxytest.DocSnippet(page, "### nginx `auth_request`", "nginx")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, l := range strings.Split(snippet, "\n") {
		documented[strings.TrimSpace(l)] = true
	}
	_, block, _ := strings.Cut(nginxConf, "# --- docs/auth-endpoint.md: nginx auth_request ---\n")
	block, _, _ = strings.Cut(block, "# --- end ---")
	n := 0
	for _, l := range strings.Split(block, "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "proxy_pass ") {
			continue
		}
		if n++; !documented[l] {
			t.Errorf("the test's nginx.conf has %q, which the documented snippet does not", l)
		}
	}
	if n < 20 || !documented["proxy_set_header X-ApiToken-Tier $apitoken_tier;"] {
		t.Fatalf("compared %d lines; the snippet:\n%s", n, snippet)
	}
}
