package authserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// checkRequest is what Envoy sends for an original request: headers
// lower-cased (the pseudo-headers included), the path with its query.
func checkRequest(method, path string, headers, ext map[string]string) *authv3.CheckRequest {
	hd := map[string]string{":method": method, ":path": path, ":authority": "shop.example"}
	for k, v := range headers {
		hd[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-1", Method: method, Path: path, Host: "shop.example", Scheme: "https", Headers: hd,
		}},
		ContextExtensions: ext,
	}}
}

// startGRPC serves f's handler over a real gRPC listener and returns a
// client built from Envoy's generated types, and the server's ready flag.
func startGRPC(t testing.TB, h *Handler) (authv3.AuthorizationClient, *grpc.ClientConn, *atomic.Bool) {
	return startGRPCWith(t, &GRPCServer{Addr: "127.0.0.1:0", Handler: h})
}

func startGRPCWith(t testing.TB, s *GRPCServer) (authv3.AuthorizationClient, *grpc.ClientConn, *atomic.Bool) {
	t.Helper()
	var ready atomic.Bool
	s.Ready = ready.Load
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Start(ctx); close(done) }()
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(); cancel(); <-done })
	return authv3.NewAuthorizationClient(conn), conn, &ready
}

func headerOf(opts []*corev3.HeaderValueOption, key string) (string, int) {
	v, n := "", 0
	for _, o := range opts {
		if strings.EqualFold(o.GetHeader().GetKey(), key) {
			v, n = o.GetHeader().GetValue(), n+1
			if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				panic("a header set without overwriting the client's copy: " + key)
			}
		}
	}
	return v, n
}

// TestGRPCExtAuthz runs the attack table against the gRPC endpoint with a
// real grpc-go client: the allowed cases pass with exactly the token's
// identity; everything else is refused with the right code and status.
func TestGRPCExtAuthz(t *testing.T) {
	f := newFixture()
	client, _, _ := startGRPC(t, f.h)
	tk := f.tokens
	bearerOf := func(name string) map[string]string { return map[string]string{"authorization": "Bearer " + tk[name]} }
	with := func(base map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	cases := []struct {
		name         string
		method, path string
		headers, ext map[string]string
		code         codes.Code
		status       int
		user, detail string
	}{
		{"read", "GET", "/api/articles/7", bearerOf("reader"), nil, codes.OK, 200, "apitoken:team-a:reader", ""},
		{"forged identity headers are overwritten", "GET", "/api/articles/7", with(bearerOf("reader"), "x-auth-request-user", "apitoken:team-a:full", "x-apitoken-scopes", "*:*"), nil, codes.OK, 200, "apitoken:team-a:reader", ""},
		{"in-scope delete", "DELETE", "/api/orders/1", bearerOf("writer"), map[string]string{"namespace": "team-b"}, codes.OK, 200, "apitoken:team-b:writer", ""},
		{"api key", "GET", "/api/articles", map[string]string{"x-api-key": tk["reader"]}, nil, codes.OK, 200, "apitoken:team-a:reader", ""},
		{"write with a read-only token", "DELETE", "/api/articles/1", bearerOf("reader"), nil, codes.PermissionDenied, 403, "", `scope="articles:delete"`},
		{"client's policy in the query is not read", "DELETE", "/api/articles/1?scope=articles:read&resource=x&namespace=team-a", bearerOf("reader"), nil, codes.PermissionDenied, 403, "", `scope="articles:delete"`},
		{"client's X-Original-Method", "DELETE", "/api/articles/1", with(bearerOf("full"), "x-original-method", "GET"), nil, codes.InvalidArgument, 400, "", "X-Original-Method is another proxy protocol's header"},
		{"client's X-Forwarded-Uri", "GET", "/api/articles/1", with(bearerOf("full"), "x-forwarded-uri", "/api/other"), nil, codes.InvalidArgument, 400, "", "X-Forwarded-Uri is another proxy protocol's header"},
		{"method override", "POST", "/api/articles", with(bearerOf("full"), "x-http-method-override", "GET"), nil, codes.InvalidArgument, 400, "", "X-Http-Method-Override is refused"},
		{"method override in the query", "POST", "/api/articles/1?_method=DELETE", bearerOf("author"), nil, codes.InvalidArgument, 400, "", `the original path has the query parameter "_method", which is refused`},
		{"method override in the query, any case", "POST", "/api/articles/1?page=2&X-Http-Method-Override=DELETE", bearerOf("author"), nil, codes.InvalidArgument, 400, "", `query parameter "X-Http-Method-Override", which is refused`},
		{"a parameter that only contains method", "POST", "/api/articles/1?payment_method=card", bearerOf("author"), nil, codes.OK, 200, "apitoken:team-a:author", ""},
		{"dot segments", "GET", "/api/../admin/users", bearerOf("full"), nil, codes.InvalidArgument, 400, "", "dot segment"},
		{"encoded dot segments", "GET", "/api/%2e%2e/admin", bearerOf("full"), nil, codes.InvalidArgument, 400, "", `encoded "."`},
		{"encoded slash", "GET", "/api/articles%2F1", bearerOf("full"), nil, codes.InvalidArgument, 400, "", `encoded "/"`},
		{"empty segment", "GET", "/api//articles", bearerOf("full"), nil, codes.InvalidArgument, 400, "", "empty segment"},
		{"path parameter", "GET", "/api/articles;x=1", bearerOf("full"), nil, codes.InvalidArgument, 400, "", "';'"},
		{"unmapped method", "OPTIONS", "/api/articles", bearerOf("full"), nil, codes.InvalidArgument, 400, "", "is not one of GET"},
		{"another namespace", "GET", "/api/articles", bearerOf("outsider"), nil, codes.PermissionDenied, 403, "", "tokens from namespace team-c are not accepted"},
		{"namespace from the route", "GET", "/api/articles", bearerOf("outsider"), map[string]string{"namespace": "team-c, team-x"}, codes.OK, 200, "apitoken:team-c:outsider", ""},
		{"audience from the route", "GET", "/api/users", bearerOf("admin"), map[string]string{"audience": "admin"}, codes.OK, 200, "apitoken:team-a:admin", ""},
		{"admin token on a content route", "GET", "/api/users", bearerOf("admin"), nil, codes.PermissionDenied, 403, "", "audience is admin, not content-api"},
		{"scope from the route", "GET", "/anything", bearerOf("writer"), map[string]string{"scope": "orders:read", "namespace": "team-b"}, codes.OK, 200, "apitoken:team-b:writer", ""},
		{"segments from the route", "GET", "/api/table/data/7", bearerOf("reader"), map[string]string{"segments": "2"}, codes.OK, 200, "apitoken:team-a:reader", ""},
		{"unknown context extension", "GET", "/api/articles", bearerOf("reader"), map[string]string{"namespaces": "team-a"}, codes.InvalidArgument, 400, "", `context extension "namespaces" is unknown`},
		{"bad namespace", "GET", "/api/articles", bearerOf("reader"), map[string]string{"namespace": "Team A"}, codes.InvalidArgument, 400, "", "is not a namespace name"},
		{"expired", "GET", "/api/articles", bearerOf("expired"), nil, codes.Unauthenticated, 401, "", `error_description="expired"`},
		{"revoked", "GET", "/api/articles", bearerOf("revoked"), nil, codes.Unauthenticated, 401, "", `error_description="revoked"`},
		{"garbage", "GET", "/api/articles", map[string]string{"authorization": "Bearer atk_garbage"}, nil, codes.Unauthenticated, 401, "", `error_description="malformed"`},
		{"no token", "GET", "/api/articles", nil, nil, codes.Unauthenticated, 401, "", `Bearer realm="apitoken"`},
		{"two credentials", "GET", "/api/articles", with(bearerOf("reader"), "x-api-key", tk["reader"]), nil, codes.InvalidArgument, 400, "", "send one credential"},
		{"method override with underscores", "GET", "/api/articles/1", with(bearerOf("reader"), "x_http_method_override", "DELETE"), nil, codes.InvalidArgument, 400, "", "X_http_method_override is refused: an upstream may read it as X-Http-Method-Override"},
		{"identity labels", "GET", "/api/articles/1", bearerOf("tiered"), nil, codes.OK, 200, "apitoken:team-a:tiered", ""},
		{"client's own label header", "GET", "/api/articles/1", with(bearerOf("reader"), "x-apitoken-tier", "gold"), nil, codes.InvalidArgument, 400, "", "X-Apitoken-Tier is refused"},
		{"client's own label header with underscores", "GET", "/api/articles/1", with(bearerOf("tiered"), "x_apitoken_tier", "platinum"), nil, codes.InvalidArgument, 400, "", "an upstream may read it as X-Apitoken-Tier"},
		{"identity header with underscores", "GET", "/api/articles/1", with(bearerOf("reader"), "x_auth_request_user", "apitoken:team-a:full"), nil, codes.InvalidArgument, 400, "", "an upstream may read it as X-Auth-Request-User"},
		{"absolute URL as the path", "GET", "http://evil/api/articles", bearerOf("reader"), nil, codes.InvalidArgument, 400, "", "is not a path starting with /"},
		{"one header twice, in two cases", "GET", "/api/articles", map[string]string{"x-api-key": tk["reader"], "X-Api-Key": tk["full"]}, nil, codes.InvalidArgument, 400, "", "more than one X-API-Key header"},
		{"repeated authorization, joined by Envoy", "GET", "/api/articles", map[string]string{"authorization": "Bearer " + tk["reader"] + ",Bearer " + tk["full"]}, nil, codes.InvalidArgument, 400, "", "must be Bearer and one token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := client.Check(context.Background(), checkRequest(c.method, c.path, c.headers, c.ext))
			if err != nil {
				t.Fatal(err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != c.code {
				t.Fatalf("code %v, want %v (%v)", got, c.code, resp)
			}
			if c.code == codes.OK {
				ok := resp.GetOkResponse()
				if user, n := headerOf(ok.GetHeaders(), "X-Auth-Request-User"); user != c.user || n != 1 {
					t.Fatalf("X-Auth-Request-User = %q (%d), want %q", user, n, c.user)
				}
				for _, h := range IdentityHeaders {
					if _, n := headerOf(ok.GetHeaders(), h); n != 1 {
						t.Fatalf("an OK must set %s once, got %d", h, n)
					}
				}
				if len(ok.GetHeadersToRemove()) != 0 {
					t.Fatalf("removed %v unasked", ok.GetHeadersToRemove())
				}
				return
			}
			denied := resp.GetDeniedResponse()
			if int(denied.GetStatus().GetCode()) != c.status {
				t.Fatalf("HTTP status %d, want %d", denied.GetStatus().GetCode(), c.status)
			}
			challenge, _ := headerOf(denied.GetHeaders(), "WWW-Authenticate")
			if !strings.Contains(challenge+"\n"+denied.GetBody(), c.detail) {
				t.Fatalf("challenge %q, body %q; want %q", challenge, denied.GetBody(), c.detail)
			}
			for _, tok := range tk {
				if strings.Contains(challenge+denied.GetBody()+resp.GetStatus().GetMessage(), tok) {
					t.Fatal("the answer echoes a token")
				}
			}
		})
	}
}

// TestGRPCRawHeadersAndRemoval: with encode_raw_headers Envoy sends
// header_map, where a repeated header stays repeated (and is refused); a
// route may ask for the credential to be removed upstream.
func TestGRPCRawHeadersAndRemoval(t *testing.T) {
	f := newFixture()
	client, _, _ := startGRPC(t, f.h)
	raw := checkRequest("GET", "/api/articles", nil, nil)
	raw.Attributes.Request.Http.Headers = nil
	raw.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "authorization", RawValue: []byte("Bearer " + f.tokens["reader"])},
		{Key: "authorization", RawValue: []byte("Bearer " + f.tokens["full"])},
	}}
	resp, err := client.Check(context.Background(), raw)
	if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.InvalidArgument || !strings.Contains(resp.GetDeniedResponse().GetBody(), "more than one Authorization header") {
		t.Fatalf("repeated raw authorization: %v %v", resp, err)
	}
	raw.Attributes.Request.Http.HeaderMap.Headers = raw.Attributes.Request.Http.HeaderMap.Headers[:1]
	raw.Attributes.ContextExtensions = map[string]string{removeCredentialKey: "true"}
	resp, err = client.Check(context.Background(), raw)
	if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK ||
		strings.Join(resp.GetOkResponse().GetHeadersToRemove(), ",") != "authorization,x-api-key" {
		t.Fatalf("remove-credential: %v %v", resp, err)
	}
	raw.Attributes.Request.Http = nil
	if resp, err = client.Check(context.Background(), raw); err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.InvalidArgument {
		t.Fatalf("no http attributes: %v %v", resp, err)
	}
}

// TestGRPCStreamsInFlightAreBounded is the attack: streams opened and
// never finished (HEADERS, no message) hold memory until their connection
// closes. Beyond MaxInFlight, new ones are refused with
// RESOURCE_EXHAUSTED; once they end, checks pass again.
func TestGRPCStreamsInFlightAreBounded(t *testing.T) {
	f := newFixture()
	client, conn, _ := startGRPCWith(t, &GRPCServer{Addr: "127.0.0.1:0", Handler: f.h, MaxInFlight: 8})
	ctx, cancel := context.WithCancel(context.Background())
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	for i := 0; i < 8; i++ {
		if _, err := conn.NewStream(ctx, desc, "/envoy.service.auth.v3.Authorization/Check"); err != nil {
			t.Fatal(err)
		}
	}
	check := func() codes.Code {
		resp, err := client.Check(context.Background(), checkRequest("GET", "/api/articles", map[string]string{"authorization": "Bearer " + f.tokens["reader"]}, nil))
		if err != nil {
			return grpcstatus.Code(err)
		}
		return codes.Code(resp.GetStatus().GetCode())
	}
	deadline := time.Now().Add(5 * time.Second)
	for check() != codes.ResourceExhausted {
		if time.Now().After(deadline) {
			t.Fatal("a ninth check was served while eight streams were held open")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for check() != codes.OK {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("checks still refused after the held streams ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGRPCServesTLS: with a certificate, the gRPC endpoint speaks TLS
// (as config/ runs it), and a client that trusts the certificate checks
// through it; a plaintext client gets nowhere.
func TestGRPCServesTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := testenv.WriteSelfSignedCert(certFile, keyFile, 1); err != nil {
		t.Fatal(err)
	}
	f := newFixture()
	s := &GRPCServer{Addr: "127.0.0.1:0", Handler: f.h, CertFile: certFile, KeyFile: keyFile, Ready: func() bool { return true }}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	creds, err := credentials.NewClientTLSFromFile(certFile, "")
	if err != nil {
		t.Fatal(err)
	}
	req := checkRequest("GET", "/api/articles", map[string]string{"authorization": "Bearer " + f.tokens["reader"]}, nil)
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), req)
	if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("over TLS: %v %v", resp, err)
	}
	plain, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	if _, err := authv3.NewAuthorizationClient(plain).Check(short, req); err == nil {
		t.Fatal("a plaintext client was answered by the TLS endpoint")
	}
}

// TestGRPCHealth: the standard health service answers NOT_SERVING until
// the index has synced, then SERVING, for the server and the service, and
// NOT_SERVING again once Ready turns false (the process shutting down,
// still serving through its shutdown delay).
func TestGRPCHealth(t *testing.T) {
	f := newFixture()
	_, conn, ready := startGRPC(t, f.h)
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", authv3.Authorization_ServiceDesc.ServiceName} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("%q before sync: %v %v", svc, resp, err)
		}
	}
	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus, when string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
			if err == nil && resp.GetStatus() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not %v %s: %v %v", want, when, resp, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ready.Store(true)
	waitFor(healthpb.HealthCheckResponse_SERVING, "after sync")
	ready.Store(false)
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING, "once Ready turned false")
}

// FuzzGRPCMatchesHTTP: for any method, path and client header, gRPC
// ext_authz decides exactly as the HTTP ext-authz endpoint does (one
// decision, two transports), and an OK names the token's own ApiToken.
func FuzzGRPCMatchesHTTP(f *testing.F) {
	f.Add("GET", "/api/articles/7", "x-original-method", "DELETE", "segments=2")
	f.Add("DELETE", "/api/%2e%2e/x", "x-http-method-override", "GET", "-")
	f.Add("POST", "/api/orders", "authorization", "Bearer x", "namespace=team-b")
	f.Add("GET", "/api/a;b", "x-api-key", "", "resource=orders")
	f.Add("POST", "/api/orders/1?_method=DELETE", "x_http_method", "PUT", "namespace=team-b")
	fx := newFixture()
	x := &ExtAuthz{Handler: fx.h}
	tok := fx.tokens["writer"]
	f.Fuzz(func(t *testing.T, method, path, hk, hv, policy string) {
		if strings.ContainsAny(policy, "/?#% ") || policy == "" || strings.ContainsAny(hk, "\r\n:") || strings.ContainsAny(hv, "\r\n") || hk == "" {
			return
		}
		headers := map[string]string{"authorization": "Bearer " + tok}
		headers[strings.ToLower(hk)] = hv
		ext := map[string]string{}
		pol, problem := parsePolicySegment(policy)
		if problem != "" {
			return
		}
		if pol.Scope != nil {
			ext["scope"] = pol.Scope.String()
		}
		if pol.Resource != "" {
			ext["resource"] = pol.Resource
		}
		if pol.Segments != 0 {
			ext["segments"] = strings.TrimPrefix(strings.Split(policy[strings.Index(policy, "segments="):], ",")[0], "segments=")
		}
		if pol.Audience != "" {
			ext["audience"] = pol.Audience
		}
		if len(pol.Namespaces) > 0 {
			ext["namespace"] = strings.Join(pol.Namespaces, ",")
		}
		resp, err := x.Check(context.Background(), checkRequest(method, path, headers, ext))
		if err != nil {
			t.Fatal(err)
		}
		r := &http.Request{Method: method, RequestURI: ExtAuthzPath + "/" + policy + path, URL: &url.URL{Path: ExtAuthzPath}, Header: http.Header{}}
		for k, v := range headers {
			r.Header[http.CanonicalHeaderKey(k)] = []string{v}
		}
		w := httptest.NewRecorder()
		fx.h.ServeExtAuthz(w, r)
		got := http.StatusOK
		if d := resp.GetDeniedResponse(); d != nil {
			got = int(d.GetStatus().GetCode())
		}
		if got != w.Code {
			t.Fatalf("%s %q with %s: %q, policy %q: gRPC %d, HTTP %d (%s)", method, path, hk, hv, policy, got, w.Code, w.Body.String())
		}
		if got == http.StatusOK {
			if user, _ := headerOf(resp.GetOkResponse().GetHeaders(), "X-Auth-Request-User"); user != "apitoken:team-b:writer" {
				t.Fatalf("OK for %q", user)
			}
		}
	})
}

// rawH2 is an attacker's HTTP/2 connection to the gRPC port, as
// `curl --http2-prior-knowledge` opens one: it writes HEADERS frames that a
// grpc-go client would never send and reads (and drops) what comes back.
type rawH2 struct {
	t    testing.TB
	conn net.Conn
	fr   *http2.Framer
	id   uint32
	mu   sync.Mutex
}

// dialRawH2 connects from the loopback address from (127.0.0.x) to addr.
func dialRawH2(t testing.TB, from, addr string) *rawH2 {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	r := &rawH2{t: t, conn: conn, fr: http2.NewFramer(conn, conn), id: 1}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go func() {
		rd := http2.NewFramer(io.Discard, conn)
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				return
			}
			if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
				r.mu.Lock()
				_ = r.fr.WriteSettingsAck()
				r.mu.Unlock()
			}
		}
	}()
	return r
}

// open writes the HEADERS of a gRPC call to path with the extra header
// fields (name, value pairs); with end, the stream is half-closed at once
// (no message follows).
func (r *rawH2) open(path string, end bool, extra ...string) {
	r.t.Helper()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	fields := append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "ext-authz", "content-type", "application/grpc", "te", "trailers"}, extra...)
	for i := 0; i < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: r.id, BlockFragment: buf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
	r.id += 2
}

// TestGRPCStreamsThatNeverReachAHandlerReleaseTheirSlots is the lockout
// of issue 24: streams to an unknown service or method, and streams whose
// grpc-timeout has already expired, end without the RPC's end being
// reported. Ten times the limit of each, then a normal Check and the
// health service must still be answered.
func TestGRPCStreamsThatNeverReachAHandlerReleaseTheirSlots(t *testing.T) {
	f := newFixture()
	const limit = 16
	s := &GRPCServer{Addr: "127.0.0.1:0", Handler: f.h, MaxInFlight: limit}
	client, conn, ready := startGRPCWith(t, s)
	ready.Store(true)
	check := func() (codes.Code, error) {
		resp, err := client.Check(context.Background(), checkRequest("GET", "/api/articles", map[string]string{"authorization": "Bearer " + f.tokens["reader"]}, nil))
		if err != nil {
			return grpcstatus.Code(err), err
		}
		return codes.Code(resp.GetStatus().GetCode()), nil
	}
	if c, err := check(); c != codes.OK {
		t.Fatalf("before the flood: %v %v", c, err)
	}
	attacks := []struct {
		name  string
		path  string
		extra []string
	}{
		{"unknown service", "/x.Y/Z", nil},
		{"unknown method", "/envoy.service.auth.v3.Authorization/Nope", nil},
		{"expired grpc-timeout", "/envoy.service.auth.v3.Authorization/Check", []string{"grpc-timeout", "0n"}},
		{"expired grpc-timeout, unknown method", "/x.Y/Z", []string{"grpc-timeout", "1n"}},
	}
	for _, a := range attacks {
		// Over several connections, a batch at a time (the server's
		// MaxConcurrentStreams would otherwise refuse them first).
		for c := 0; c < 10; c++ {
			raw := dialRawH2(t, "127.0.0.1", s.ln.Addr().String())
			for range limit {
				raw.open(a.path, true, a.extra...)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := check()
			if c == codes.OK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %d streams (%s), a normal Check is answered %v: %v", 10*limit, a.name, c, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for {
			resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
			if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: health %v %v", a.name, resp, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if why := s.limits().full(); why != "" {
			t.Fatalf("after %s: %s", a.name, why)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still held after every stream ended", s.InFlight())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGRPCAFloodFromOneAddressNeverRefusesAnother: one client address
// holding every stream it can open (HEADERS, no message, no deadline) over
// many connections fills its own share, never the global one, so a Check
// from another address is answered; the held streams end within the
// server's bound on a check's time and release their slots.
func TestGRPCAFloodFromOneAddressNeverRefusesAnother(t *testing.T) {
	f := newFixture()
	const limit = 16
	s := &GRPCServer{Addr: "127.0.0.1:0", Handler: f.h, MaxInFlight: limit, MaxCheckTime: 2 * time.Second}
	client, _, ready := startGRPCWith(t, s)
	ready.Store(true)
	for range 8 {
		raw := dialRawH2(t, "127.0.0.2", s.ln.Addr().String())
		for range 4 * limit {
			raw.open("/envoy.service.auth.v3.Authorization/Check", false)
		}
	}
	// Let the server take them all in.
	time.Sleep(300 * time.Millisecond)
	for i := range 20 {
		resp, err := client.Check(context.Background(), checkRequest("GET", "/api/articles", map[string]string{"authorization": "Bearer " + f.tokens["reader"]}, nil))
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Fatalf("check %d from 127.0.0.1 during a flood from 127.0.0.2: %v %v", i, resp, err)
		}
	}
	if s.InFlight() == 0 {
		t.Fatal("the flood held no slot: the test does not test")
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still held past the bound on a check's time", s.InFlight())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGRPCFullIsReported: while every check slot is held, the health
// service answers NOT_SERVING (to a Watch opened before, which has a pool
// of its own, and by refusing a health Check, which needs a check slot);
// /readyz stays ready, since what any client can hold open must not take
// the replica and its HTTP endpoints out of the Service. Health is
// SERVING again when the streams end.
func TestGRPCFullIsReported(t *testing.T) {
	f := newFixture()
	s := &GRPCServer{Addr: "127.0.0.1:0", Handler: f.h, MaxInFlight: 4, MaxInFlightPerAddress: 4, MaxInFlightPerConn: 4}
	_, conn, ready := startGRPCWith(t, s)
	ready.Store(true)
	hc := healthpb.NewHealthClient(conn)
	httpSrv := &Server{Handler: f.h}
	synced := func() bool { return true }
	httpSrv.synced.Store(&synced)
	readyz := func() int {
		rec := httptest.NewRecorder()
		httpSrv.Mux().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	health := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}
	waitFor("not SERVING after sync", func() bool { return health() == healthpb.HealthCheckResponse_SERVING })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch before the flood: %v %v", resp, err)
	}
	raw := dialRawH2(t, "127.0.0.3", s.ln.Addr().String())
	for range 4 {
		raw.open("/envoy.service.auth.v3.Authorization/Check", false)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch while every check slot is held: %v %v", resp, err)
	}
	if got := health(); got == healthpb.HealthCheckResponse_SERVING {
		t.Fatal("a health Check answered SERVING while every check slot is held")
	}
	if s.InFlight() != 4 {
		t.Fatalf("%d check slots held, want 4 (the Watch takes none)", s.InFlight())
	}
	if readyz() != http.StatusOK {
		t.Fatal("/readyz refuses while every gRPC check slot is held: a gRPC flood would take the HTTP endpoints down")
	}
	_ = raw.conn.Close()
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch after the streams ended: %v %v", resp, err)
	}
	waitFor("health not SERVING again after the streams ended", func() bool { return health() == healthpb.HealthCheckResponse_SERVING })
}

// TestGRPCHealthWatchesNeverRefuseACheck is the security report's
// lockout: health Watch streams are exempt from the bound on a check's
// time, so clients that open them from a few addresses (8 connections
// from 127.0.0.1 to .4, 128 streams on each, as reported) and hold them
// must fill a pool of their own, never the slots of Check: a Check is
// answered, the health service stays SERVING, and past the pool a new
// Watch is refused with RESOURCE_EXHAUSTED.
func TestGRPCHealthWatchesNeverRefuseACheck(t *testing.T) {
	f := newFixture()
	s := &GRPCServer{Addr: "127.0.0.1:0", Handler: f.h}
	client, conn, ready := startGRPCWith(t, s)
	ready.Store(true)
	serving := func() (*healthpb.HealthCheckResponse, error) {
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("%v", resp.GetStatus())
		}
		return resp, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, err := serving(); err != nil; _, err = serving() {
		if time.Now().After(deadline) {
			t.Fatalf("not SERVING after sync: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watching, refused atomic.Int64
	var wg sync.WaitGroup
	for c := range 8 {
		from := net.ParseIP(fmt.Sprintf("127.0.0.%d", 1+c%4))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}
		wc, err := grpc.NewClient(s.ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = wc.Close() })
		hc := healthpb.NewHealthClient(wc)
		for range 128 {
			wg.Go(func() {
				w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: authv3.Authorization_ServiceDesc.ServiceName})
				if err == nil {
					_, err = w.Recv()
				}
				switch grpcstatus.Code(err) {
				case codes.OK:
					watching.Add(1)
				case codes.ResourceExhausted:
					refused.Add(1)
				default:
					t.Errorf("a Watch ended with %v", err)
				}
			})
		}
	}
	wg.Wait() // every Watch is held open (answered once) or refused
	for i := range 20 {
		resp, err := client.Check(context.Background(), checkRequest("GET", "/api/articles", map[string]string{"authorization": "Bearer " + f.tokens["reader"]}, nil))
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Fatalf("check %d while %d Watch streams are held (%d refused): %v %v", i, watching.Load(), refused.Load(), resp, err)
		}
	}
	if resp, err := serving(); err != nil {
		t.Fatalf("health while Watch streams are held: %v %v", resp, err)
	}
	if watching.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("%d Watch streams held, %d refused: want some of each", watching.Load(), refused.Load())
	}
}
