package authserver

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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
	req, problem := x.adapt(attrs.GetContextExtensions(), httpReq, hd)
	if problem == "" {
		req.Token, req.Via, problem = credential(hd)
	}
	var d Decision
	if problem != "" {
		d = refusal(problem)
	} else {
		d = x.Handler.Decide(req)
	}
	if x.Handler.Audit != nil {
		src := auditSource{
			client:    firstOf(attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(), hd.Get("X-Forwarded-For")),
			requestID: firstOf(httpReq.GetId(), hd.Get("X-Request-Id")),
		}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			src.peer = p.Addr.String() // who asked: the proxy, not what it reports
		}
		x.Handler.audit(GRPCExtAuthz, &req, &d, src)
	}
	observe(d.Result, start)
	return checkResponse(&d, attrs.GetContextExtensions()[removeCredentialKey] == "true"), nil
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
	if problem := foreignHeaders(hd, originalFamily, forwardedFamily); problem != "" {
		return Request{}, problem
	}
	if !strings.HasPrefix(r.GetPath(), "/") {
		return Request{}, "the original path " + quoted(r.GetPath()) + " is not a path starting with /"
	}
	path, problem := normalPath(r.GetPath())
	if problem != "" {
		return Request{}, "the original path " + problem
	}
	method, problem := checkMethod(r.GetMethod(), "the original method")
	if problem != "" {
		return Request{}, problem
	}
	return Request{Method: method, Path: path, Policy: pol}, ""
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

// maxChecksInFlight bounds the Checks being served at once, over every
// connection. A check takes microseconds: a proxy under heavy load keeps a
// few dozen in flight; beyond the bound new ones are refused
// (RESOURCE_EXHAUSTED, which Envoy answers per its failure mode) instead of
// growing memory.
const maxChecksInFlight = 1024

// streamLimit counts the RPCs in flight (a stats.Handler) and refuses new
// streams beyond max (an InTapHandle).
type streamLimit struct {
	inflight atomic.Int64
	max      int64
}

func (l *streamLimit) admit(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if l.inflight.Add(1) > l.max {
		l.inflight.Add(-1)
		return nil, grpcstatus.Error(codes.ResourceExhausted, "too many checks in flight")
	}
	return ctx, nil
}

func (l *streamLimit) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (l *streamLimit) HandleRPC(_ context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.End); ok {
		l.inflight.Add(-1)
	}
}

func (l *streamLimit) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
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
	// MaxInFlight bounds the Checks served at once; zero: maxChecksInFlight.
	MaxInFlight int64

	ln net.Listener
}

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
	limit := &streamLimit{max: s.MaxInFlight}
	if limit.max == 0 {
		limit.max = maxChecksInFlight
	}
	opts := []grpc.ServerOption{
		// A CheckRequest holds the original request's headers (Envoy
		// sends at most 60 KiB by default), never its body here.
		grpc.MaxRecvMsgSize(128 << 10),
		grpc.MaxConcurrentStreams(256),
		// Checks in flight over all connections: a stream opened and never
		// finished holds memory until its connection closes.
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
	// synced, NOT_SERVING again while the process shuts down.
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		serving := false
		for {
			if ready := s.Ready == nil || s.Ready(); ready != serving {
				serving = ready
				status := healthpb.HealthCheckResponse_NOT_SERVING
				if ready {
					status = healthpb.HealthCheckResponse_SERVING
				}
				hs.SetServingStatus("", status)
				hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, status)
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
