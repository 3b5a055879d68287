package authserver

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/utils/clock"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Paths served.
const (
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

// Options configure how a required scope is derived from a path.
type Options struct {
	// PathPrefix is stripped from the original path before the resource is
	// read, e.g. "/api" so that /api/articles/1 names "articles".
	PathPrefix string
	// ResourceSegment is the index of the path segment (after PathPrefix)
	// that names the resource; default 0.
	ResourceSegment int
}

// Handler answers forward-auth and TokenReview requests from the index.
type Handler struct {
	Index   *Index
	Clock   clock.PassiveClock
	Options Options
}

// ServeAuthorize answers a forward-auth request: 200 with identity headers,
// 401 when the credential is missing or invalid, 403 when the token lacks
// the required scope, audience or namespace, 400 for a request it cannot
// read. It never answers 5xx for a decision.
func (h *Handler) ServeAuthorize(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	result := h.authorize(w, r)
	observe(result, start)
}

func (h *Handler) authorize(w http.ResponseWriter, r *http.Request) string {
	tok, problem := credential(r.Header)
	switch {
	case problem != "":
		return badRequest(w, problem)
	case tok == "":
		w.Header()[headerWWWAuthenticate] = realmOnly
		w.WriteHeader(http.StatusUnauthorized)
		return "missing"
	}
	q, problem := parseParams(r.URL.RawQuery)
	if problem != "" {
		return badRequest(w, problem)
	}
	required, problem := h.requiredScope(r, q)
	if problem != "" {
		return badRequest(w, problem)
	}
	now := h.Clock.Now()
	id, verdict := h.Index.Lookup(tok, now)
	if verdict != Valid {
		w.Header()[headerWWWAuthenticate] = invalidToken[verdict]
		w.WriteHeader(http.StatusUnauthorized)
		return verdict.String()
	}
	audience := q.audience
	if audience == "" {
		audience = string(tokensv1alpha1.ContentAPI)
	}
	var why string
	switch {
	case id.Audience != audience:
		why = "the token's audience is " + id.Audience + ", not " + audience
	case !namespaceAccepted(q.namespaces, id.Namespace):
		why = "tokens from namespace " + id.Namespace + " are not accepted here"
	case required != nil && !id.Scopes.Allows(*required):
		why = "the token does not grant " + required.String()
	}
	if why != "" {
		challenge := realm + `, error="insufficient_scope", error_description=` + quoted(why)
		if required != nil {
			challenge += `, scope=` + quoted(required.String())
		}
		w.Header()[headerWWWAuthenticate] = []string{challenge}
		w.WriteHeader(http.StatusForbidden)
		return "insufficient_scope"
	}
	markUsed(id, now)
	// The identity's header values are built once per ApiToken and shared:
	// net/http only reads them.
	hd := w.Header()
	hd[headerUser] = id.userHeader
	hd[headerName] = id.nameHeader
	hd[headerNamespace] = id.namespaceHeader
	hd[headerType] = id.typeHeader
	hd[headerScopes] = id.scopesHeader
	w.WriteHeader(http.StatusOK)
	return "valid"
}

func badRequest(w http.ResponseWriter, problem string) string {
	w.Header()[headerWWWAuthenticate] = []string{realm + `, error="invalid_request", error_description=` + quoted(problem)}
	http.Error(w, problem, http.StatusBadRequest)
	return "bad_request"
}

// credential returns the one token sent in Authorization: Bearer (scheme
// case-insensitive) or X-API-Key. problem is set when the request carries
// more than one credential, a repeated header or another scheme.
func credential(hd http.Header) (tok, problem string) {
	auth, keys := hd[headerAuthorization], hd[headerAPIKey]
	switch {
	case len(auth) > 1:
		return "", "more than one Authorization header"
	case len(keys) > 1:
		return "", "more than one X-API-Key header"
	case len(auth) == 1 && len(keys) == 1:
		return "", "both Authorization and X-API-Key were sent; send one credential"
	case len(keys) == 1:
		tok = strings.TrimSpace(keys[0])
		if tok == "" {
			return "", "empty X-API-Key header"
		}
		return tok, ""
	case len(auth) == 1:
		scheme, rest, _ := strings.Cut(strings.TrimSpace(auth[0]), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", "the Authorization scheme must be Bearer"
		}
		tok = strings.TrimSpace(rest)
		if tok == "" || strings.ContainsAny(tok, " \t,") {
			return "", "the Authorization header must be Bearer and one token"
		}
		return tok, ""
	}
	return "", ""
}

// requiredScope returns the scope the request needs: ?scope=, or the
// action of the original method on the resource named by the original
// path (X-Original-*, X-Forwarded-*, or this request's own method and path
// under /v1/authorize/). nil means only a valid token is required.
func (h *Handler) requiredScope(r *http.Request, q params) (*token.Scope, string) {
	if q.scope != "" {
		sc, err := token.ParseScope(q.scope)
		if err != nil {
			return nil, "scope parameter: " + err.Error()
		}
		return &sc, ""
	}
	method, path, problem := original(r)
	if problem != "" {
		return nil, problem
	}
	if method == "" {
		return nil, ""
	}
	resource := q.resource
	if resource == "" {
		resource = h.resourceOf(path)
	}
	return &token.Scope{Resource: resource, Action: token.ActionForMethod(method)}, ""
}

// originalHeaders name where proxies put the original request: canonical
// keys for the map, and the spelling people know for messages.
var originalHeaders = []struct{ method, url, methodName, urlName string }{
	{headerOriginalMethod, headerOriginalURL, "X-Original-Method", "X-Original-URL"},
	{headerForwardedMethod, headerForwardedURI, "X-Forwarded-Method", "X-Forwarded-Uri"},
}

// original returns the method and path of the request being authorised.
func original(r *http.Request) (method, path, problem string) {
	for _, pair := range originalHeaders {
		ms, us := r.Header[pair.method], r.Header[pair.url]
		if len(ms) > 1 || len(us) > 1 {
			return "", "", "repeated " + pair.methodName + " or " + pair.urlName + " header"
		}
		if len(ms) == 0 && len(us) == 0 {
			continue
		}
		if len(ms) == 0 || ms[0] == "" {
			return "", "", pair.urlName + " was sent without " + pair.methodName
		}
		p := "/"
		if len(us) == 1 {
			u, err := url.Parse(us[0])
			if err != nil {
				return "", "", pair.urlName + " is not a URL"
			}
			p = u.Path
		}
		return strings.ToUpper(ms[0]), p, ""
	}
	// Envoy ext_authz with path_prefix, Traefik: the original request is
	// this request, under the prefix.
	if rest, ok := strings.CutPrefix(r.URL.Path, AuthorizePath+"/"); ok {
		return r.Method, "/" + rest, ""
	}
	return "", "", ""
}

// resourceOf names the resource of a path: the configured segment after
// PathPrefix (matched on whole segments: /api does not strip /apiary),
// lower-cased.
func (h *Handler) resourceOf(p string) string {
	if prefix := strings.TrimSuffix(h.Options.PathPrefix, "/"); prefix != "" {
		if rest, ok := strings.CutPrefix(p, prefix); ok && (rest == "" || rest[0] == '/') {
			p = rest
		}
	}
	p = strings.Trim(p, "/")
	for i := 0; i < h.Options.ResourceSegment; i++ {
		var ok bool
		if _, p, ok = strings.Cut(p, "/"); !ok {
			return ""
		}
	}
	seg, _, _ := strings.Cut(p, "/")
	return strings.ToLower(seg)
}

// namespaceAccepted reports whether ns is in the comma-separated list
// (empty: every namespace).
func namespaceAccepted(list, ns string) bool {
	if list == "" {
		return true
	}
	for rest := list; rest != ""; {
		var n string
		n, rest, _ = strings.Cut(rest, ",")
		if strings.TrimSpace(n) == ns {
			return true
		}
	}
	return false
}

// params are the auth URL's query parameters.
type params struct {
	scope, audience, resource string
	// namespaces is a comma-separated list; repeated parameters are joined.
	namespaces string
}

// parseParams reads the known query parameters without allocating unless
// a value is escaped. A repeated scope, audience or resource is refused.
func parseParams(raw string) (params, string) {
	var p params
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				return p, "query parameter " + k + " is not URL-encoded correctly"
			}
			v = u
		}
		var dst *string
		switch k {
		case "scope":
			dst = &p.scope
		case "audience":
			dst = &p.audience
		case "resource":
			dst = &p.resource
		case "namespace":
			if p.namespaces != "" {
				v = p.namespaces + "," + v
			}
			p.namespaces = v
			continue
		default:
			continue
		}
		if *dst != "" {
			return p, "more than one " + k + " parameter"
		}
		*dst = v
	}
	return p, ""
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
	for _, v := range []Verdict{Malformed, Unknown, Expired, Revoked} {
		m[v] = []string{realm + `, error="invalid_token", error_description="` + v.String() + `"`}
	}
	return m
}()
