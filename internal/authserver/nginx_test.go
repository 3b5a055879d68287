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
	"testing"
	"time"
)

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
    location = /_apitoken {
      internal;
      proxy_pass http://{{auth}}/v1/authorize;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }
    location /api/ {
      auth_request /_apitoken;
      auth_request_set $apitoken_user $upstream_http_x_auth_request_user;
      auth_request_set $apitoken_scopes $upstream_http_x_apitoken_scopes;
      proxy_set_header X-Auth-Request-User $apitoken_user;
      proxy_set_header X-ApiToken-Scopes $apitoken_scopes;
      proxy_pass http://{{upstream}};
    }
  }
}
`

// TestNginxAuthRequest puts a real nginx with auth_request in front of a
// small upstream and checks that 200, 401 and 403 flow through and that
// the identity headers reach the upstream.
func TestNginxAuthRequest(t *testing.T) {
	bin := nginxBinary(t)
	f := newFixture()
	f.h.Options.PathPrefix = "/api"
	auth := httptest.NewServer((&Server{Handler: f.h}).Mux())
	defer auth.Close()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-User", r.Header.Get("X-Auth-Request-User"))
		w.Header().Set("X-Seen-Scopes", r.Header.Get("X-ApiToken-Scopes"))
		fmt.Fprintf(w, "upstream %s %s", r.Method, r.URL.Path)
	}))
	defer upstream.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir := t.TempDir()
	conf := strings.NewReplacer("{{dir}}", dir, "{{port}}", fmt.Sprint(port),
		"{{auth}}", strings.TrimPrefix(auth.URL, "http://"), "{{upstream}}", strings.TrimPrefix(upstream.URL, "http://")).Replace(nginxConf)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			_ = conn.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start: %s %s", out, log)
		}
		time.Sleep(20 * time.Millisecond)
	}

	do := func(method, path, tok string) *http.Response {
		req, _ := http.NewRequest(method, base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp
	}

	resp := do("GET", "/api/articles/1", f.tokens["reader"])
	if resp.StatusCode != 200 || resp.Header.Get("X-Seen-User") != "apitoken:team-a:reader" || resp.Header.Get("X-Seen-Scopes") != "*:read" {
		t.Fatalf("GET with a read-only token: %d, upstream saw user %q scopes %q", resp.StatusCode, resp.Header.Get("X-Seen-User"), resp.Header.Get("X-Seen-Scopes"))
	}
	resp = do("GET", "/api/articles", "")
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="apitoken"` {
		t.Fatalf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	resp = do("GET", "/api/articles", f.tokens["revoked"])
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("revoked token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	resp = do("POST", "/api/articles", f.tokens["reader"])
	if resp.StatusCode != 403 || resp.Header.Get("X-Seen-User") != "" {
		t.Fatalf("POST with a read-only token: %d", resp.StatusCode)
	}
	resp = do("DELETE", "/api/orders/7", f.tokens["writer"])
	if resp.StatusCode != 200 || resp.Header.Get("X-Seen-User") != "apitoken:team-b:writer" {
		t.Fatalf("DELETE orders with orders:*: %d", resp.StatusCode)
	}
	resp = do("DELETE", "/api/articles/7", f.tokens["writer"])
	if resp.StatusCode != 403 {
		t.Fatalf("DELETE articles with articles:read: %d", resp.StatusCode)
	}
}
