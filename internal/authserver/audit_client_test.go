package authserver

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/peer"
)

// spoofed is the address a client writes into every header a proxy might
// report its address in; it must never be the audit's client.
const spoofed = "203.0.113.66"

// nextAuditRecord takes the one record a decision queued (the log's writer
// is not started) as the JSON line it would write.
func nextAuditRecord(t *testing.T, a *AuditLog) map[string]any {
	t.Helper()
	select {
	case r := <-a.ch:
		var rec map[string]any
		if err := json.Unmarshal(r.appendJSON(nil), &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	default:
		t.Fatal("no audit record")
		return nil
	}
}

// checkProxyReportsClient sends a request through a real proxy at addr
// with the client's own X-Real-IP and X-Forwarded-For and checks that the
// audit record names the address the proxy saw (loopback), not the
// client's; f.h.Audit is an unstarted log.
func checkProxyReportsClient(t *testing.T, f *fixture, addr string) {
	t.Helper()
	for len(f.h.Audit.ch) > 0 {
		<-f.h.Audit.ch
	}
	rawDo(t, addr, "GET", "/api/articles/1", [][2]string{bearer(f.tokens["reader"]), {"X-Real-IP", spoofed}, {"X-Forwarded-For", spoofed}})
	if rec := nextAuditRecord(t, f.h.Audit); rec["client"] != "127.0.0.1" {
		t.Errorf("the audit's client is %v, want 127.0.0.1, the address the proxy saw (%v)", rec["client"], rec)
	}
}

// TestAuditClientIsWhatTheProxySet: the audit record's client is the
// address the proxy in front of each endpoint sets (overwriting a
// client's copy), never a header the client sent and the proxy passed
// on; where the proxy sets none, there is no client, only the peer.
func TestAuditClientIsWhatTheProxySet(t *testing.T) {
	f := newFixture()
	f.h.Audit = NewAuditLog(nil)
	tok := f.tokens["reader"]
	auth := func(extra ...[2]string) req {
		return req{path: "/v1/auth-request/-", headers: append([][2]string{bearer(tok), {"X-Original-Method", "GET"}, {"X-Original-URL", "/api/articles/7"}}, extra...)}
	}
	fwd := func(extra ...[2]string) req {
		return req{path: "/v1/forward-auth/-", headers: append([][2]string{bearer(tok), {"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/api/articles/7"}}, extra...)}
	}
	cases := []struct {
		name string
		r    req
		want string // "" for no client field
	}{
		{"nginx: X-Real-IP as its snippet sets it; the client's X-Forwarded-For, which nginx passes on, is not read",
			auth([2]string{"X-Forwarded-For", spoofed}, [2]string{"X-Real-IP", "10.1.1.1"}), "10.1.1.1"},
		{"nginx without the snippet's X-Real-IP line: the client's X-Forwarded-For is not a client",
			auth([2]string{"X-Forwarded-For", spoofed}), ""},
		{"nginx: two X-Real-IP values are not what proxy_set_header writes",
			auth([2]string{"X-Real-IP", spoofed}, [2]string{"X-Real-IP", "10.1.1.1"}), ""},
		{"nginx: a value that is not an address is not what the proxy wrote",
			auth([2]string{"X-Real-IP", "atk_" + strings.Repeat("x", 10)}), ""},
		{"Traefik, Caddy: the address they set in X-Forwarded-For; the client's X-Real-IP, which both pass on, is not read",
			fwd([2]string{"X-Real-IP", spoofed}, [2]string{"X-Forwarded-For", "10.2.2.2"}), "10.2.2.2"},
		{"Traefik, Caddy trusting a proxy in front: the address they appended, not the client's list before it",
			fwd([2]string{"X-Forwarded-For", spoofed + ", 10.9.9.9"}, [2]string{"X-Forwarded-For", "10.2.2.2"}), "10.2.2.2"},
		{"Traefik, Caddy: the last entry of one line", fwd([2]string{"X-Forwarded-For", spoofed + ",10.2.2.2"}), "10.2.2.2"},
		{"Envoy over HTTP sets no client header in the check",
			req{path: "/v1/ext-authz/-/api/articles/7", headers: [][2]string{bearer(tok), {"X-Real-IP", spoofed}, {"X-Forwarded-For", spoofed}}}, ""},
		{"the explicit endpoint: its caller is the peer",
			req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tok), {"X-Real-IP", spoofed}, {"X-Forwarded-For", spoofed}}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.do(c.r)
			rec := nextAuditRecord(t, f.h.Audit)
			if got, _ := rec["client"].(string); got != c.want {
				t.Errorf("client = %q, want %q (%v)", got, c.want, rec)
			}
			if rec["peer"] != "192.0.2.1:1234" {
				t.Errorf("peer = %v, want the connection's address", rec["peer"])
			}
		})
	}

	t.Run("TokenReview: the API server is the peer", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, TokenReviewPath, strings.NewReader(reviewBody("v1", tok, "content-api")))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Real-IP", spoofed)
		r.Header.Set("X-Forwarded-For", spoofed)
		f.h.ServeTokenReview(httptest.NewRecorder(), r)
		if rec := nextAuditRecord(t, f.h.Audit); rec["client"] != nil {
			t.Errorf("client = %v, want none", rec["client"])
		}
	})

	envoy := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 3, 7), Port: 51234}})
	for _, c := range []struct {
		name, source, want string
	}{
		{"gRPC: Envoy's source address, not the client's X-Forwarded-For", "10.3.3.3", "10.3.3.3"},
		{"gRPC without a source address: none, not the client's X-Forwarded-For", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr := checkRequest("GET", "/api/articles/7", map[string]string{"authorization": "Bearer " + tok, "x-forwarded-for": spoofed, "x-real-ip": spoofed}, nil)
			if c.source != "" {
				cr.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: c.source}}}}
			}
			if _, err := (&ExtAuthz{Handler: f.h}).Check(envoy, cr); err != nil {
				t.Fatal(err)
			}
			if got, _ := nextAuditRecord(t, f.h.Audit)["client"].(string); got != c.want {
				t.Errorf("client = %q, want %q", got, c.want)
			}
		})
	}
}
