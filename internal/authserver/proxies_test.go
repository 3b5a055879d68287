package authserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
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
const routePolicy = "namespace=team-a+team-b"

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

// attack is one row of the table every proxy runs.
type attack struct {
	name    string
	method  string
	target  string
	token   string // fixture token name; "" sends none
	headers [][2]string
	// allow: 200 and the upstream sees the token's identity, and only it.
	// Otherwise the upstream must not be reached at all.
	allow bool
	// notOn names proxies where the row does not hold, with the caveat that
	// docs/auth-endpoint.md gives for them.
	notOn map[string]string
	// unseen, for a refused row, also lets it pass when the proxy dropped
	// the header of that name (in any spelling: '_' for '-') before both
	// the endpoint and the upstream: nginx drops headers spelled with
	// underscores (underscores_in_headers off).
	unseen string
}

// forged are identity headers a client sends in the hope that the upstream
// trusts them.
var forged = [][2]string{
	{"X-Auth-Request-User", "apitoken:team-a:full"}, {"X-ApiToken-Name", "full"}, {"X-ApiToken-Namespace", "kube-system"},
	{"X-ApiToken-Type", "full-access"}, {"X-ApiToken-Scopes", "*:*"},
}

var attacks = []attack{
	{name: "read with a read-only token", method: "GET", target: "/api/articles/1", token: "reader", allow: true},
	{name: "delete within the token's scope", method: "DELETE", target: "/api/orders/1", token: "writer", allow: true},
	{name: "forged identity headers are overwritten", method: "GET", target: "/api/articles/1?page=2", token: "reader", headers: forged, allow: true},
	{name: "write with a read-only token", method: "DELETE", target: "/api/articles/1", token: "reader"},
	{name: "client-chosen policy in the query", method: "DELETE", target: "/api/articles/1?scope=articles:read&resource=orders&audience=admin&namespace=team-c", token: "reader"},
	{name: "client's X-Original-Method", method: "DELETE", target: "/api/articles/1", token: "reader", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URL", "/api/articles/1"}}},
	{name: "client's X-Forwarded-Method", method: "DELETE", target: "/api/articles/1", token: "reader", headers: [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/api/articles/1"}}},
	{name: "method override header", method: "GET", target: "/api/articles/1", token: "reader", headers: [][2]string{{"X-HTTP-Method-Override", "DELETE"}}},
	{name: "create with a token that may create", method: "POST", target: "/api/articles/1?draft=1", token: "author", allow: true},
	{name: "method override in the query (_method: Laravel, Symfony)", method: "POST", target: "/api/articles/1?_method=DELETE", token: "author"},
	{name: "method override in the query (X-HTTP-Method-Override)", method: "POST", target: "/api/articles/1?X-HTTP-Method-Override=DELETE", token: "author"},
	{name: "method override header spelt with underscores (PHP, WSGI, Rack read it)", method: "POST", target: "/api/articles/1", token: "author",
		headers: [][2]string{{"X_HTTP_Method_Override", "DELETE"}}, unseen: "X-HTTP-Method-Override"},
	{name: "dot segments", method: "DELETE", target: "/api/orders/../articles/1", token: "writer"},
	{name: "encoded dot segments", method: "DELETE", target: "/api/orders/%2e%2e/articles/1", token: "writer"},
	{name: "encoded slash", method: "DELETE", target: "/api/orders%2F..%2Farticles/1", token: "writer"},
	{name: "empty segment", method: "DELETE", target: "/api//articles/1", token: "writer"},
	{name: "path parameter", method: "DELETE", target: "/api/orders;/../articles/1", token: "writer"},
	{name: "token from a namespace the route does not accept", method: "GET", target: "/api/articles/1", token: "outsider"},
	{name: "expired token", method: "GET", target: "/api/articles/1", token: "expired"},
	{name: "revoked token", method: "GET", target: "/api/articles/1", token: "revoked"},
	{name: "garbage token", method: "GET", target: "/api/articles/1", token: "garbage"},
	{name: "no token", method: "GET", target: "/api/articles/1"},
	{name: "two credentials", method: "GET", target: "/api/articles/1", token: "reader", headers: [][2]string{{"X-API-Key", "{reader}"}}},
	{name: "large client headers still get a decision", method: "GET", target: "/api/articles/1", token: "reader", allow: true,
		headers: [][2]string{{"X-A", strings.Repeat("a", 7000)}, {"X-B", strings.Repeat("b", 7000)}, {"X-C", strings.Repeat("c", 7000)}},
		notOn:   map[string]string{"caddy": "Caddy answers 431 itself for these headers (never a 5xx, the upstream not reached)"}},
	{name: "Connection naming identity headers cannot strip them", method: "GET", target: "/api/articles/1", token: "reader", allow: true,
		headers: [][2]string{{"Connection", "X-Auth-Request-User, X-ApiToken-Scopes"}},
		notOn: map[string]string{
			"traefik": "Go's reverse proxy drops the headers a client names in Connection after ForwardAuth set them",
			"envoy":   "the upstream hop here is Go's reverse proxy, which drops the headers a client names in Connection",
		}},
}

// rawDo sends one request exactly as written and returns the response.
func rawDo(t *testing.T, addr, method, target string, headers [][2]string) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n", method, target)
	for _, h := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

// hasHeader reports whether h has the header name in any spelling ('_'
// for '-', any case).
func hasHeader(h http.Header, name string) bool {
	for k := range h {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), name) {
			return true
		}
	}
	return false
}

// runAttacks sends every row through the proxy at addr, in front of auth.
func runAttacks(t *testing.T, proxy string, f *fixture, addr string, auth *authRecorder, up *upstream) {
	t.Helper()
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			if why, ok := a.notOn[proxy]; ok {
				t.Skipf("not on %s (documented caveat): %s", proxy, why)
			}
			var hs [][2]string
			if tok, ok := f.tokens[a.token]; ok {
				hs = append(hs, bearer(tok))
			} else if a.token == "garbage" {
				hs = append(hs, bearer("atk_garbage"))
			}
			for _, h := range a.headers {
				hs = append(hs, [2]string{h[0], strings.ReplaceAll(h[1], "{reader}", f.tokens["reader"])})
			}
			before := up.count()
			resp := rawDo(t, addr, a.method, a.target, hs)
			if !a.allow {
				if a.unseen != "" && resp.StatusCode == 200 && up.count() == before+1 && !hasHeader(up.last().Header, a.unseen) && !hasHeader(auth.last(t).Header, a.unseen) {
					t.Logf("%s %s -> 200: %s dropped %s before the endpoint and the upstream", a.method, a.target, proxy, a.unseen)
					return
				}
				if up.count() != before || resp.StatusCode < 300 {
					t.Fatalf("%s %s: %d, upstream reached %d times: must be refused", a.method, a.target, resp.StatusCode, up.count()-before)
				}
				t.Logf("%s %s -> %d %s", a.method, a.target, resp.StatusCode, resp.Header.Get("Www-Authenticate"))
				return
			}
			if resp.StatusCode != 200 || up.count() != before+1 {
				t.Fatalf("%s %s: %d (upstream reached %d times), want 200 once", a.method, a.target, resp.StatusCode, up.count()-before)
			}
			seen := up.last()
			id, _ := f.ix.Lookup(f.tokens[a.token], f.h.Clock.Now())
			want := map[string]string{
				"X-Auth-Request-User": id.User, "X-ApiToken-Name": id.Name, "X-ApiToken-Namespace": id.Namespace,
				"X-ApiToken-Type": id.Type, "X-ApiToken-Scopes": id.ScopesHeader,
			}
			for _, h := range IdentityHeaders {
				if got := seen.Header.Values(h); len(got) != 1 || got[0] != want[h] {
					t.Fatalf("the upstream saw %s = %q, want only %q", h, got, want[h])
				}
			}
			if seen.Method != a.method {
				t.Fatalf("the upstream saw %s, judged %s", seen.Method, a.method)
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
      proxy_set_header X-Auth-Request-User $apitoken_user;
      proxy_set_header X-ApiToken-Name $apitoken_name;
      proxy_set_header X-ApiToken-Namespace $apitoken_namespace;
      proxy_set_header X-ApiToken-Type $apitoken_type;
      proxy_set_header X-ApiToken-Scopes $apitoken_scopes;
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

// caddyfile is the snippet of docs/auth-endpoint.md.
const caddyfile = `{
	admin off
	auto_https off
	persist_config off
}
http://:{{port}} {
	bind 127.0.0.1
	# --- docs/auth-endpoint.md: Caddy forward_auth ---
	# A client's Connection header would make Caddy drop the headers it
	# names (the identity headers included) on the way upstream.
	request_header -Connection
	forward_auth {{auth}} {
		uri /v1/forward-auth/namespace=team-a+team-b?
		copy_headers X-Auth-Request-User X-ApiToken-Name X-ApiToken-Namespace X-ApiToken-Type X-ApiToken-Scopes
	}
	reverse_proxy {{upstream}}
	# --- end ---
}
`

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
	conf := strings.NewReplacer("{{port}}", fmt.Sprint(port),
		"{{auth}}", strings.TrimPrefix(auth.URL, "http://"), "{{upstream}}", strings.TrimPrefix(up.URL, "http://")).Replace(caddyfile)
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
