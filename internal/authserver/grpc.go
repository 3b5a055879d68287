package authserver

import (
	"context"
	"net/http"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
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

// checkResponse translates d: an OK carries the identity headers and the
// token's identity label headers, which overwrite any the client sent,
// the labels as dynamic metadata (under the filter's namespace,
// envoy.filters.http.ext_authz, for the rate limiter), and (when asked)
// removes the credential;
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
		for i := range id.Labels {
			ok.Headers = append(ok.Headers, set(id.Labels[i].Header, id.Labels[i].values))
		}
		if removeCredential {
			ok.HeadersToRemove = []string{"authorization", "x-api-key"}
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}, DynamicMetadata: id.metadata}
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
