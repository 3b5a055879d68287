package authserver

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Paths served: one endpoint per proxy protocol, each reading only what
// its proxy sets, plus the explicit one and TokenReview.
const (
	// AuthRequestPath is nginx auth_request and ingress-nginx auth-url:
	// X-Original-Method and X-Original-URL; policy in the next segment.
	AuthRequestPath = "/v1/auth-request"
	// ForwardAuthPath is Traefik ForwardAuth and Caddy forward_auth:
	// X-Forwarded-Method and X-Forwarded-Uri; policy in the next segment.
	ForwardAuthPath = "/v1/forward-auth"
	// ExtAuthzPath is Envoy ext_authz over HTTP (Istio, Gateway API): the
	// check request's own method, and the original path after the policy
	// segment: /v1/ext-authz/<policy>/<original path and query>.
	ExtAuthzPath = "/v1/ext-authz"
	// AuthorizePath is the explicit endpoint: the caller names the scope.
	AuthorizePath   = "/v1/authorize"
	TokenReviewPath = "/v1/tokenreview"
)

// ServeAuthRequest answers nginx auth_request and ingress-nginx auth-url at
// /v1/auth-request[/<policy>]. The original request is X-Original-Method and
// X-Original-URL (which nginx sets); the policy is the path segment that the
// proxy's operator wrote into the auth URL.
//
// nginx reads only 2xx, 401 and 403 from the auth request (anything else
// becomes a 500 for the client), so a request that cannot be judged is
// answered 403 here, with the same invalid_request challenge as a 400.
func (h *Handler) ServeAuthRequest(w http.ResponseWriter, r *http.Request) {
	h.serveAs(w, r, "auth-request", http.StatusForbidden, func(r *http.Request) (Request, string) {
		seg, problem := singleSegment(r.RequestURI, AuthRequestPath)
		if problem != "" {
			return Request{}, problem
		}
		if _, q, _ := strings.Cut(r.RequestURI, "?"); q != "" {
			return Request{}, "the auth URL has a query: put the route policy in the path (" + AuthRequestPath + "/namespace=shop,resource=orders)"
		}
		return h.fromOrigin(r, seg, originalFamily, forwardedFamily)
	})
}

// ServeForwardAuth answers Traefik ForwardAuth and Caddy forward_auth at
// /v1/forward-auth[/<policy>]. The original request is X-Forwarded-Method
// and X-Forwarded-Uri (which both proxies overwrite). The query is never
// read (Caddy appends the client's unless uri ends with ?); one that
// carries a policy key is refused.
func (h *Handler) ServeForwardAuth(w http.ResponseWriter, r *http.Request) {
	h.serve(w, r, "forward-auth", func(r *http.Request) (Request, string) {
		seg, problem := singleSegment(r.RequestURI, ForwardAuthPath)
		if problem != "" {
			return Request{}, problem
		}
		if k := policyKeyIn(r.URL.RawQuery); k != "" {
			// Never read; refused, so that a policy written in the query
			// by mistake is not silently ignored.
			return Request{}, "the auth URL's query has " + k + "=, which is not read: put the route policy in the path (" + ForwardAuthPath +
				"/namespace=shop,resource=orders); with Caddy, end uri with ? so that the client's query is not appended"
		}
		return h.fromOrigin(r, seg, forwardedFamily, originalFamily)
	})
}

// ServeExtAuthz answers Envoy's HTTP ext_authz (Istio envoyExtAuthzHttp,
// Gateway API ExternalAuth) at /v1/ext-authz/<policy>/<original path>: the
// proxy appends the client's :path (query included) to the configured
// prefix, which ends with the policy segment, so the client's path can
// only follow it. The method is the check request's own.
func (h *Handler) ServeExtAuthz(w http.ResponseWriter, r *http.Request) {
	h.serve(w, r, "ext-authz", func(r *http.Request) (Request, string) {
		rest, ok := strings.CutPrefix(r.RequestURI, ExtAuthzPath+"/")
		if !ok {
			return Request{}, "use " + ExtAuthzPath + "/<policy>/ as the proxy's path prefix (- for no policy)"
		}
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return Request{}, "no original path after " + ExtAuthzPath + "/<policy>: the proxy's path prefix must end with the policy segment"
		}
		seg, target := rest[:i], rest[i:]
		pol, problem := parsePolicySegment(seg)
		if problem != "" {
			return Request{}, problem
		}
		return envoyRequest(r.Header, r.Method, "the check request's method", target, pol)
	})
}

// ServeAuthorize answers the explicit endpoint, for services that call it
// themselves: /v1/authorize?scope=articles:read[&audience=..][&namespace=..].
// It derives nothing from the request; a proxy's original-request headers
// or a path under it are refused with the endpoint to use instead.
func (h *Handler) ServeAuthorize(w http.ResponseWriter, r *http.Request) {
	h.serve(w, r, "authorize", func(r *http.Request) (Request, string) {
		if r.URL.Path != AuthorizePath {
			return Request{}, AuthorizePath + "/<path> is gone: Envoy, Istio and Gateway API use " + ExtAuthzPath + "/<policy>/ as the path prefix"
		}
		switch {
		case len(r.Header[headerOriginalMethod]) > 0 || len(r.Header[headerOriginalURL]) > 0:
			return Request{}, "X-Original-Method/X-Original-URL were sent to " + AuthorizePath + ", which reads only ?scope=: point nginx auth_request or ingress-nginx auth-url at " + AuthRequestPath + "/<policy>"
		case len(r.Header[headerForwardedMethod]) > 0 || len(r.Header[headerForwardedURI]) > 0:
			return Request{}, "X-Forwarded-Method/X-Forwarded-Uri were sent to " + AuthorizePath + ", which reads only ?scope=: point Traefik ForwardAuth or Caddy forward_auth at " + ForwardAuthPath + "/<policy>"
		}
		pol, problem := parseExplicitQuery(r.URL.RawQuery)
		return Request{Policy: pol}, problem
	})
}

// serve runs one adapter, adds the credential, decides, audits and
// answers; endpoint names it in the audit log.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, endpoint string, adapt func(*http.Request) (Request, string)) {
	h.serveAs(w, r, endpoint, http.StatusBadRequest, adapt)
}

// serveAs is serve with the status that answers a request that cannot be
// judged (400, or 403 for a proxy that understands no 400).
func (h *Handler) serveAs(w http.ResponseWriter, r *http.Request, endpoint string, badRequest int, adapt func(*http.Request) (Request, string)) {
	start := time.Now()
	req, problem := adapt(r)
	d := h.judge(&req, problem, r.Header)
	if d.Status == http.StatusBadRequest {
		d.Status = badRequest
	}
	h.answer(endpoint, &req, &d, start, func() auditSource {
		return auditSource{client: proxyClient(endpoint, r.Header), requestID: r.Header.Get("X-Request-Id"), peer: r.RemoteAddr}
	}, func() { writeDecision(w, &d) })
}

// writeDecision answers d over HTTP: a 200 carries every identity header
// and the token's identity label headers (built once per ApiToken and
// shared: net/http only reads them), a refusal its challenge.
func writeDecision(w http.ResponseWriter, d *Decision) {
	hd := w.Header()
	if d.Status != http.StatusOK {
		hd[headerWWWAuthenticate] = d.Challenge
		if d.Reason != "" {
			http.Error(w, d.Reason, d.Status)
			return
		}
		w.WriteHeader(d.Status)
		return
	}
	id := d.Identity
	hd[headerUser] = id.userHeader
	hd[headerName] = id.nameHeader
	hd[headerNamespace] = id.namespaceHeader
	hd[headerType] = id.typeHeader
	hd[headerScopes] = id.scopesHeader
	for i := range id.Labels {
		hd[id.Labels[i].canonical] = id.Labels[i].values
	}
	w.WriteHeader(http.StatusOK)
}

// fromOrigin builds the Request of an endpoint whose proxy reports the
// original request in the headers of family own; the headers of family
// foreign, or a method override, are refused rather than guessed at.
func (h *Handler) fromOrigin(r *http.Request, seg string, own, foreign originFamily) (Request, string) {
	pol, problem := parsePolicySegment(seg)
	if problem != "" {
		return Request{}, problem
	}
	if problem := foreignHeaders(r.Header, foreign); problem != "" {
		return Request{}, problem
	}
	ms, ts := r.Header[own.method], r.Header[own.target]
	switch {
	case len(ms) != 1:
		return Request{}, own.methodName + " must be sent once by the proxy (got " + strconv.Itoa(len(ms)) + ")"
	case len(ts) != 1:
		return Request{}, own.targetName + " must be sent once by the proxy (got " + strconv.Itoa(len(ts)) + ")"
	}
	method, problem := checkMethod(ms[0], own.methodName)
	if problem != "" {
		return Request{}, problem
	}
	path, problem := normalPath(ts[0])
	if problem != "" {
		return Request{}, own.targetName + " " + problem
	}
	return Request{Method: method, Path: path, Policy: pol}, ""
}

// policyKeyIn returns the first route-policy key (scope, resource, segments,
// audience, namespace) in a raw query, or "".
func policyKeyIn(raw string) string {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, _, _ := strings.Cut(kv, "=")
		if u, err := url.QueryUnescape(k); err == nil {
			k = u
		}
		switch k {
		case "scope", "resource", "segments", "audience", "namespace":
			return k
		}
	}
	return ""
}

// singleSegment returns the policy segment of uri under base: "" for base
// itself, the segment for base/<segment>; anything deeper is refused.
func singleSegment(uri, base string) (string, string) {
	p, _, _ := strings.Cut(uri, "?")
	rest, ok := strings.CutPrefix(p, base)
	switch {
	case !ok:
		return "", "the auth URL must be " + base + " or " + base + "/<policy>"
	case rest == "":
		return "", ""
	case rest[0] != '/' || strings.Contains(rest[1:], "/"):
		return "", "the auth URL must be " + base + " or " + base + "/<policy>, with the policy in one segment"
	}
	return rest[1:], ""
}
