package authserver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// GRPCExtAuthz is the endpoint name of Envoy's gRPC ext_authz in metrics
// and audit records.
const GRPCExtAuthz = "grpc-ext-authz"

// removeCredentialKey is the context extension that asks for the
// credential headers to be removed from the upstream request on an OK.
const removeCredentialKey = "remove-credential" //nolint:gosec // a context extension's name, not a credential

// ExtAuthz answers envoy.service.auth.v3.Authorization/Check (Envoy,
// Istio envoyExtAuthzGrpc, Envoy Gateway, Contour) with the same decision
// as the HTTP endpoints. The route policy comes only from the per-route
// context_extensions (ExtAuthzPerRoute.check_settings), which only the
// proxy's operator sets; the original method and path from
// attributes.request.http.
type ExtAuthz struct {
	authv3.UnimplementedAuthorizationServer
	Handler *Handler
}

// Check decides one CheckRequest.
func (x *ExtAuthz) Check(ctx context.Context, cr *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	attrs := cr.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	hd := grpcHeaders(httpReq)
	ext := attrs.GetContextExtensions()
	req, problem := x.adapt(ext, httpReq, hd)
	d := x.Handler.judge(&req, problem, hd)
	var resp *authv3.CheckResponse
	x.Handler.answer(GRPCExtAuthz, &req, &d, start, func() auditSource {
		src := auditSource{client: envoySource(attrs), requestID: firstOf(httpReq.GetId(), hd.Get("X-Request-Id"))}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			src.peer = p.Addr.String() // who asked: the proxy, not what it reports
		}
		return src
	}, func() { resp = checkResponse(&d, ext[removeCredentialKey] == "true") })
	return resp, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// adapt builds the Request: policy from the context extensions, method
// and path from the HTTP attributes, refusing what the HTTP ext-authz
// endpoint refuses.
func (x *ExtAuthz) adapt(ext map[string]string, r *authv3.AttributeContext_HttpRequest, hd http.Header) (Request, string) {
	if r == nil {
		return Request{}, "the CheckRequest has no attributes.request.http"
	}
	pol, problem := contextPolicy(ext)
	if problem != "" {
		return Request{}, problem
	}
	return envoyRequest(hd, r.GetMethod(), "the original method", r.GetPath(), pol)
}

// contextPolicy reads the route policy from context_extensions: scope,
// resource, segments, audience, namespace (comma-separated, or *), and
// remove-credential (true or false). Unknown keys are refused, so that a
// misspelt one is not silently ignored.
func contextPolicy(ext map[string]string) (Policy, string) {
	if len(ext) == 0 {
		return Policy{}, ""
	}
	pairs := make([][2]string, 0, len(ext))
	for k, v := range ext {
		switch k {
		case removeCredentialKey:
			if v != "true" && v != "false" {
				return Policy{}, "context extension " + removeCredentialKey + " must be true or false"
			}
			continue
		case "namespace":
			for ns := range strings.SplitSeq(v, ",") {
				pairs = append(pairs, [2]string{k, strings.TrimSpace(ns)})
			}
			continue
		}
		pairs = append(pairs, [2]string{k, v})
	}
	return policyOf(pairs, "context extension")
}

// grpcHeaders returns the original request's headers in canonical form:
// Envoy sends them lower-cased in headers, or in header_map (possibly
// repeated) with encode_raw_headers.
func grpcHeaders(r *authv3.AttributeContext_HttpRequest) http.Header {
	if hm := r.GetHeaderMap(); hm != nil {
		hd := make(http.Header, len(hm.GetHeaders()))
		for _, h := range hm.GetHeaders() {
			v := h.GetValue()
			if len(h.GetRawValue()) > 0 {
				v = string(h.GetRawValue())
			}
			k := http.CanonicalHeaderKey(h.GetKey())
			hd[k] = append(hd[k], v)
		}
		return hd
	}
	hd := make(http.Header, len(r.GetHeaders()))
	for k, v := range r.GetHeaders() {
		// Keys differing only in case are one header sent twice.
		ck := http.CanonicalHeaderKey(k)
		hd[ck] = append(hd[ck], v)
	}
	return hd
}

// checkResponse translates d: an OK carries the identity headers, which
// overwrite any the client sent, and (when asked) removes the credential;
// a denial carries the status, the RFC 6750 challenge and the reason.
func checkResponse(d *Decision, removeCredential bool) *authv3.CheckResponse {
	if d.Status == http.StatusOK {
		id := d.Identity
		set := func(k string, v []string) *corev3.HeaderValueOption {
			return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v[0]}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
		}
		ok := &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
			set(IdentityHeaders[0], id.userHeader), set(IdentityHeaders[1], id.nameHeader), set(IdentityHeaders[2], id.namespaceHeader),
			set(IdentityHeaders[3], id.typeHeader), set(IdentityHeaders[4], id.scopesHeader),
		}}
		if removeCredential {
			ok.HeadersToRemove = []string{"authorization", "x-api-key"}
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}
	}
	code := codes.PermissionDenied
	switch d.Status {
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusBadRequest:
		code = codes.InvalidArgument
	}
	denied := &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode(int32(d.Status))}, Body: d.Reason} //nolint:gosec // 400, 401 or 403
	for _, c := range d.Challenge {
		denied.Headers = append(denied.Headers, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "WWW-Authenticate", Value: c}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code), Message: d.Result}, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied}}
}

// Default bounds on the streams in flight (GRPCServer's MaxInFlight,
// MaxInFlightPerAddress, MaxInFlightPerConn, MaxCheckTime). A check takes
// microseconds: a proxy under heavy load keeps a few dozen in flight;
// beyond a bound new streams are refused (RESOURCE_EXHAUSTED, which Envoy
// answers per its failure mode) instead of growing memory. One client
// address may hold a quarter of the slots, one connection half of that,
// so that a flood from one address (or a few) never refuses another's.
const (
	maxChecksInFlight = 1024
	// maxCheckTime bounds how long a stream holds its slot: one that sends
	// its HEADERS and then nothing ends (DEADLINE_EXCEEDED) then.
	maxCheckTime = 10 * time.Second
	// maxWatches and maxWatchesPerAddress bound the health Watch streams
	// (GRPCServer's MaxWatches, MaxWatchesPerAddress): a client with
	// client-side health checking holds one per channel.
	maxWatches           = 64
	maxWatchesPerAddress = 4
)

// healthWatch is the one long-lived RPC served: it is exempt from the
// bound on a check's time, so it takes a slot of its own pool, never one
// of the checks' (else Watch streams held open would refuse every Check).
const healthWatch = "/grpc.health.v1.Health/Watch"

// streamLimit admits a stream (an InTapHandle, which grpc-go calls for
// every stream, before it knows the method exists or checks the
// deadline) only while its connection, its client address and the server
// as a whole are under their bounds, and releases the slot when the
// stream's context ends. grpc-go cancels that context however the stream
// ends (answered, unknown method, deadline already past, reset by the
// client, connection closed): pairing the release with the RPC's own end
// (stats.End) would leak the slots of streams that never reach a handler.
// Connections are tagged with their counter by TagConn (a stats.Handler).
// A health Watch is counted in watches instead, by address and in total.
type streamLimit struct {
	max, perAddress, perConn int64
	checkTime                time.Duration
	watches                  watchPool

	mu       sync.Mutex
	inflight int64
	byAddr   map[string]int64
}

// watchPool counts the health Watch streams held (under streamLimit.mu).
type watchPool struct {
	max, perAddress int64
	held            int64
	byAddr          map[string]int64
}

// connSlots counts the streams in flight on one connection (under
// streamLimit.mu).
type connSlots struct{ n int64 }

type connSlotsKey struct{}

func newStreamLimit(total, perAddress, perConn int64, checkTime time.Duration, watches, watchesPerAddress int64) *streamLimit {
	if total <= 0 {
		total = maxChecksInFlight
	}
	if perAddress <= 0 {
		perAddress = max(1, total/4)
	}
	if perConn <= 0 {
		perConn = max(1, perAddress/2)
	}
	if checkTime <= 0 {
		checkTime = maxCheckTime
	}
	if watches <= 0 {
		watches = maxWatches
	}
	if watchesPerAddress <= 0 {
		watchesPerAddress = min(watches, maxWatchesPerAddress)
	}
	return &streamLimit{
		max: total, perAddress: perAddress, perConn: perConn, checkTime: checkTime, byAddr: map[string]int64{},
		watches: watchPool{max: watches, perAddress: watchesPerAddress, byAddr: map[string]int64{}},
	}
}

// clientAddress is the IP a stream came from (the port differs per
// connection, so it is not part of a client's identity).
func clientAddress(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

func (l *streamLimit) admit(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info != nil && info.FullMethodName == healthWatch {
		return l.admitWatch(ctx)
	}
	conn, _ := ctx.Value(connSlotsKey{}).(*connSlots)
	if conn == nil {
		conn = &connSlots{} // not tagged: counted by address and globally only
	}
	addr := clientAddress(ctx)
	l.mu.Lock()
	var refused string
	switch {
	case l.inflight >= l.max:
		refused = "global"
	case l.byAddr[addr] >= l.perAddress:
		refused = "address"
	case conn.n >= l.perConn:
		refused = "connection"
	}
	if refused != "" {
		l.mu.Unlock()
		grpcStreamsRefused.WithLabelValues(refused).Inc()
		return nil, grpcstatus.Error(codes.ResourceExhausted, "too many checks in flight ("+refused+" limit)")
	}
	l.inflight++
	l.byAddr[addr]++
	conn.n++
	l.mu.Unlock()
	grpcStreamsInFlight.Inc()

	ctx, cancel := context.WithTimeout(ctx, l.checkTime)
	context.AfterFunc(ctx, func() {
		cancel()
		l.release(conn, addr)
	})
	return ctx, nil
}

// admitWatch admits a health Watch while its client address and the
// watch pool are under their bounds, with no bound on its time; its slot
// is released when the stream's context ends.
func (l *streamLimit) admitWatch(ctx context.Context) (context.Context, error) {
	addr := clientAddress(ctx)
	w := &l.watches
	l.mu.Lock()
	var refused string
	switch {
	case w.held >= w.max:
		refused = "watch_global"
	case w.byAddr[addr] >= w.perAddress:
		refused = "watch_address"
	}
	if refused != "" {
		l.mu.Unlock()
		grpcStreamsRefused.WithLabelValues(refused).Inc()
		return nil, grpcstatus.Error(codes.ResourceExhausted, "too many health watches ("+refused+" limit)")
	}
	w.held++
	w.byAddr[addr]++
	l.mu.Unlock()
	grpcWatchesInFlight.Inc()
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		w.held--
		if w.byAddr[addr]--; w.byAddr[addr] <= 0 {
			delete(w.byAddr, addr)
		}
		l.mu.Unlock()
		grpcWatchesInFlight.Dec()
	})
	return ctx, nil
}

func (l *streamLimit) release(conn *connSlots, addr string) {
	l.mu.Lock()
	l.inflight--
	conn.n--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
	l.mu.Unlock()
	grpcStreamsInFlight.Dec()
}

// inFlight returns the check slots held.
func (l *streamLimit) inFlight() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

// full says why new checks are refused by the global bound, or "" while
// they are admitted.
func (l *streamLimit) full() string {
	if n := l.inFlight(); n >= l.max {
		return fmt.Sprintf("gRPC ext_authz refuses new checks: %d are in flight, the limit", n)
	}
	return ""
}

func (l *streamLimit) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (l *streamLimit) HandleRPC(context.Context, stats.RPCStats) {}

func (l *streamLimit) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connSlotsKey{}, &connSlots{})
}

func (l *streamLimit) HandleConn(context.Context, stats.ConnStats) {}

// GRPCServer serves ExtAuthz and the standard gRPC health service on its
// own port, on every replica, from the same index as the HTTP endpoint.
type GRPCServer struct {
	// Addr is the listen address, e.g. ":9002".
	Addr string
	// CertFile and KeyFile, when set, serve TLS (reloaded on change).
	CertFile, KeyFile string
	Handler           *Handler
	// Ready reports whether the index has synced; health answers SERVING
	// from then on.
	Ready func() bool
	// MaxInFlight bounds the streams served at once over every
	// connection; zero: maxChecksInFlight.
	MaxInFlight int64
	// MaxInFlightPerAddress bounds them per client IP address; zero: a
	// quarter of MaxInFlight.
	MaxInFlightPerAddress int64
	// MaxInFlightPerConn bounds them per connection; zero: half of
	// MaxInFlightPerAddress.
	MaxInFlightPerConn int64
	// MaxCheckTime bounds how long a stream (other than a health Watch)
	// holds its slot; zero: maxCheckTime.
	MaxCheckTime time.Duration
	// MaxWatches bounds the health Watch streams, which take no slot of
	// MaxInFlight and have no bound on their time; zero: maxWatches.
	MaxWatches int64
	// MaxWatchesPerAddress bounds them per client IP address; zero:
	// maxWatchesPerAddress.
	MaxWatchesPerAddress int64

	ln        net.Listener
	limitOnce sync.Once
	limit     *streamLimit
}

func (s *GRPCServer) limits() *streamLimit {
	s.limitOnce.Do(func() {
		s.limit = newStreamLimit(s.MaxInFlight, s.MaxInFlightPerAddress, s.MaxInFlightPerConn, s.MaxCheckTime, s.MaxWatches, s.MaxWatchesPerAddress)
	})
	return s.limit
}

// InFlight returns the streams holding a check slot (health Watch
// streams not included).
func (s *GRPCServer) InFlight() int64 { return s.limits().inFlight() }

// NeedLeaderElection is false: every replica answers.
func (s *GRPCServer) NeedLeaderElection() bool { return false }

// Listen binds the address; Start calls it if the caller has not.
func (s *GRPCServer) Listen() (net.Addr, error) { return listenOnce(&s.ln, s.Addr, "gRPC ext_authz") }

// Start serves until ctx ends.
func (s *GRPCServer) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("grpc-ext-authz")
	if _, err := s.Listen(); err != nil {
		return err
	}
	limit := s.limits()
	opts := []grpc.ServerOption{
		// A CheckRequest holds the original request's headers (Envoy
		// sends at most 60 KiB by default), never its body here.
		grpc.MaxRecvMsgSize(128 << 10),
		grpc.MaxConcurrentStreams(256),
		// Streams in flight globally, per client address and per
		// connection, each released when its stream ends however it ends.
		grpc.InTapHandle(limit.admit),
		grpc.StatsHandler(limit),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 5 * time.Minute}),
	}
	if s.CertFile != "" {
		tlsConfig, err := watchedTLS(ctx, s.CertFile, s.KeyFile, "gRPC ext_authz")
		if err != nil {
			return err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	srv := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(srv, &ExtAuthz{Handler: s.Handler})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	// The health service follows Ready: SERVING once the index has
	// synced, NOT_SERVING again while the process shuts down or while
	// the global bound refuses new checks. Only Envoy's own health
	// checking reads it: the pod's readiness does not follow the bound,
	// which any client reaching the port can fill.
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		serving := false
		for {
			now := (s.Ready == nil || s.Ready()) && limit.full() == ""
			if now != serving {
				st := healthpb.HealthCheckResponse_NOT_SERVING
				if now {
					st = healthpb.HealthCheckResponse_SERVING
				}
				hs.SetServingStatus("", st)
				hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
				serving = now
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	errc := make(chan error, 1)
	go func() {
		log.Info("Serving gRPC ext_authz", "address", s.ln.Addr().String(), "tls", s.CertFile != "")
		errc <- srv.Serve(s.ln)
	}()
	select {
	case <-ctx.Done():
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(drainTimeout):
			srv.Stop()
		}
		return nil
	case err := <-errc:
		return err
	}
}
