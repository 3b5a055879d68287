package authserver

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
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

// Headers, in canonical form (X-API-Key is X-Api-Key on the wire map), so
// that the hot path indexes the header map without canonicalizing.
const (
	headerAuthorization   = "Authorization"
	headerAPIKey          = "X-Api-Key" //nolint:gosec // a header name, not a credential
	headerOriginalMethod  = "X-Original-Method"
	headerOriginalURL     = "X-Original-Url"
	headerForwardedMethod = "X-Forwarded-Method"
	headerForwardedURI    = "X-Forwarded-Uri"
	headerWWWAuthenticate = "Www-Authenticate"
	headerUser            = "X-Auth-Request-User"
	headerName            = "X-Apitoken-Name"
	headerNamespace       = "X-Apitoken-Namespace"
	headerType            = "X-Apitoken-Type"
	headerScopes          = "X-Apitoken-Scopes"
	realm                 = `Bearer realm="apitoken"`
)

// IdentityHeaders are the headers of a 200, in the spelling the docs use.
// Every 200 sets all of them; a proxy configuration copies all of them
// upstream, so that a client's own copies never reach the upstream.
var IdentityHeaders = []string{"X-Auth-Request-User", "X-ApiToken-Name", "X-ApiToken-Namespace", "X-ApiToken-Type", "X-ApiToken-Scopes"}

// Options configure the auth endpoint.
type Options struct {
	// PathPrefix is stripped from the original path before the resource is
	// read, e.g. "/api" so that /api/articles/1 names "articles".
	PathPrefix string
	// ResourceSegment is the index of the path segment (after PathPrefix)
	// that names the resource; default 0.
	ResourceSegment int
	// DefaultNamespaces are accepted on a route whose policy names no
	// namespace; "*" is every namespace. Empty: such a route accepts none.
	DefaultNamespaces []string
	// KubeAPIAudiences are the Kubernetes API server's audiences (its
	// --api-audiences, by default its service-account issuer): a token of
	// audience "kubernetes" is accepted by TokenReview only for them (one
	// of them among spec.audiences, or none asked), and a token of any
	// other audience never for them, whatever its name (k3s, rke2).
	KubeAPIAudiences []string
}

// Handler answers auth requests and TokenReviews from the index.
type Handler struct {
	Index   *Index
	Clock   clock.PassiveClock
	Options Options
	// Audit, when set, records every decision.
	Audit *AuditLog
}

// originFamily is a pair of headers in which one kind of proxy reports
// the original request.
type originFamily struct{ method, target, methodName, targetName string }

var (
	originalFamily  = originFamily{headerOriginalMethod, headerOriginalURL, "X-Original-Method", "X-Original-URL"}
	forwardedFamily = originFamily{headerForwardedMethod, headerForwardedURI, "X-Forwarded-Method", "X-Forwarded-Uri"}
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
		if problem := foreignHeaders(r.Header, originalFamily, forwardedFamily); problem != "" {
			return Request{}, problem
		}
		path, problem := normalPath(target)
		if problem != "" {
			return Request{}, "the original path " + problem
		}
		method, problem := checkMethod(r.Method, "the check request's method")
		if problem != "" {
			return Request{}, problem
		}
		return Request{Method: method, Path: path, Policy: pol}, ""
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
	if problem == "" {
		req.Token, req.Via, problem = credential(r.Header)
	}
	var d Decision
	if problem != "" {
		d = refusal(problem)
	} else {
		d = h.Decide(req)
	}
	if d.Status == http.StatusBadRequest {
		d.Status = badRequest
	}
	if h.Audit != nil {
		h.audit(endpoint, &req, &d, auditSource{client: proxyClient(endpoint, r.Header), requestID: r.Header.Get("X-Request-Id"), peer: r.RemoteAddr})
	}
	writeDecision(w, &d)
	observe(d.Result, start)
}

// writeDecision answers d over HTTP: a 200 carries every identity header
// (built once per ApiToken and shared: net/http only reads them), a
// refusal its challenge.
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

// foreignHeaders names a header that this endpoint must not receive: the
// original-request headers of another proxy protocol, or a method override.
// It walks the request's headers once (a few) rather than looking up each
// name it refuses.
func foreignHeaders(hd http.Header, families ...originFamily) string {
	for k := range hd {
		if problem := foreignHeader(k, families); problem != "" {
			return problem
		}
		if strings.IndexByte(k, '_') >= 0 {
			// CGI-style upstreams (PHP, WSGI, Rack) read X_Http_Method_Override
			// as X-Http-Method-Override, and X_Auth_Request_User as the
			// identity header the proxy sets only in its hyphenated form.
			alias := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
			if foreignHeader(alias, families) != "" || isIdentityHeader(alias) {
				return k + " is refused: an upstream may read it as " + alias
			}
		}
	}
	return ""
}

// foreignHeader names why the canonical header k is refused, or "".
func foreignHeader(k string, families []originFamily) string {
	switch k {
	case headerOriginalMethod, headerOriginalURL, headerForwardedMethod, headerForwardedURI:
		for _, f := range families {
			switch k {
			case f.method:
				return f.methodName + " is another proxy protocol's header and is not accepted on this endpoint"
			case f.target:
				return f.targetName + " is another proxy protocol's header and is not accepted on this endpoint"
			}
		}
	}
	return methodOverrideRefused(k, k)
}

// methodOverrides are the names in which a client asks an upstream to act
// on another method than the one sent: headers (in canonical form) that
// frameworks read, X-HTTP-Method-Override and its relatives, which some
// also read as query parameters (Jersey, Express's method-override with a
// getter); and _method, the parameter of Rails (Rack::MethodOverride),
// Laravel and Symfony.
var methodOverrides = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "_method"}

// methodOverride returns the name of methodOverrides that an upstream may
// read name (a header's or a query parameter's) as: the same letters in
// any case, with '_' for any '-' (CGI-style upstreams, PHP, WSGI and Rack,
// read X_HTTP_Method_Override as the header); "" for any other name. It is
// the one rule of what a method override is, for headers and queries.
func methodOverride(name string) string {
	for _, o := range methodOverrides {
		if len(name) == len(o) && readAs(name, o) {
			return o
		}
	}
	return ""
}

// readAs reports whether name, of o's length, reads as o (methodOverride).
func readAs(name, o string) bool {
	for i := 0; i < len(o); i++ {
		c, w := name[i], o[i]
		switch {
		case c == w, c == '_' && w == '-':
		case 'A' <= c && c <= 'Z' && c+'a'-'A' == w, 'a' <= c && c <= 'z' && c-('a'-'A') == w:
		default:
			return false
		}
	}
	return true
}

// methodOverrideRefused says why what (a header, or "the query parameter
// ..."), named name, is refused as a method override, or "" when it is none.
func methodOverrideRefused(what, name string) string {
	o := methodOverride(name)
	switch {
	case o == "":
		return ""
	case strings.EqualFold(name, o):
		return what + " is refused: the upstream could act on another method than the one judged"
	}
	return what + " is refused: an upstream may read it as " + o
}

// isIdentityHeader reports whether canonical header k is one a 200 sets.
func isIdentityHeader(k string) bool {
	switch k {
	case headerUser, headerName, headerNamespace, headerType, headerScopes:
		return true
	}
	return false
}

// checkMethod accepts the methods that map to an action.
func checkMethod(m, name string) (string, string) {
	if _, ok := token.ActionForMethod(m); !ok {
		return "", name + " " + quoted(m) + " is not one of GET, HEAD, POST, PUT, PATCH, DELETE"
	}
	return m, ""
}

// credential returns the one token sent in Authorization: Bearer (scheme
// case-insensitive) or X-API-Key, and the header it came in; none for
// another Authorization scheme. problem is set when the request carries
// more than one credential or a repeated header.
func credential(hd http.Header) (tok, via, problem string) {
	auth, keys := hd[headerAuthorization], hd[headerAPIKey]
	switch {
	case len(auth) > 1:
		return "", "", "more than one Authorization header"
	case len(keys) > 1:
		return "", "", "more than one X-API-Key header"
	case len(auth) == 1 && len(keys) == 1:
		return "", "", "both Authorization and X-API-Key were sent; send one credential"
	case len(keys) == 1:
		tok = strings.TrimSpace(keys[0])
		if tok == "" {
			return "", "", "empty X-API-Key header"
		}
		return tok, headerAPIKey, ""
	case len(auth) == 1:
		scheme, rest, _ := strings.Cut(strings.TrimSpace(auth[0]), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			// Another scheme (Basic, ...) carries no bearer credential:
			// a 401 with the Bearer challenge (RFC 6750 section 3), which
			// every proxy passes on, not a 400 that nginx turns into a 500.
			return "", "", ""
		}
		tok = strings.TrimSpace(rest)
		if tok == "" || strings.ContainsAny(tok, " \t,") {
			return "", "", "the Authorization header must be Bearer and one token"
		}
		return tok, headerAuthorization, ""
	}
	return "", "", ""
}

var realmOnly = []string{realm}

// quoted returns s as an RFC 9110 quoted-string: quotes and backslashes
// escaped, control characters dropped, so that a value taken from the
// request (a path segment, a query parameter) cannot add parameters to the
// challenge.
func quoted(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// invalidToken holds the challenge of each refusal verdict.
var invalidToken = func() map[Verdict][]string {
	m := map[Verdict][]string{}
	for _, v := range []Verdict{Malformed, Unknown, Expired, Revoked, Inactive, Ambiguous} {
		m[v] = []string{realm + `, error="invalid_token", error_description="` + v.String() + `"`}
	}
	return m
}()
