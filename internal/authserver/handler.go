package authserver

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Paths served.
const (
	AuthorizePath   = "/v1/authorize"
	TokenReviewPath = "/v1/tokenreview"
)

// Headers.
const (
	headerAPIKey          = "X-API-Key" //nolint:gosec // a header name, not a credential
	headerOriginalMethod  = "X-Original-Method"
	headerOriginalURL     = "X-Original-URL"
	headerForwardedMethod = "X-Forwarded-Method"
	headerForwardedURI    = "X-Forwarded-Uri"
	headerUser            = "X-Auth-Request-User"
	headerName            = "X-ApiToken-Name"
	headerNamespace       = "X-ApiToken-Namespace"
	headerType            = "X-ApiToken-Type"
	headerScopes          = "X-ApiToken-Scopes"
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
		w.Header().Set("WWW-Authenticate", realm)
		w.WriteHeader(http.StatusUnauthorized)
		return "missing"
	}
	q := r.URL.Query()
	required, problem := h.requiredScope(r, q)
	if problem != "" {
		return badRequest(w, problem)
	}
	now := h.Clock.Now()
	id, verdict := h.Index.Lookup(tok, now)
	if verdict != Valid {
		w.Header().Set("WWW-Authenticate", realm+`, error="invalid_token", error_description="`+verdict.String()+`"`)
		w.WriteHeader(http.StatusUnauthorized)
		return verdict.String()
	}
	audience := q.Get("audience")
	if audience == "" {
		audience = "content-api"
	}
	var why string
	switch {
	case id.Audience != audience:
		why = "the token's audience is " + id.Audience + ", not " + audience
	case !namespaceAccepted(q["namespace"], id.Namespace):
		why = "tokens from namespace " + id.Namespace + " are not accepted here"
	case required != nil && !id.Scopes.Allows(*required):
		why = "the token does not grant " + required.String()
	}
	if why != "" {
		challenge := realm + `, error="insufficient_scope", error_description="` + why + `"`
		if required != nil {
			challenge += `, scope="` + required.String() + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		w.WriteHeader(http.StatusForbidden)
		return "insufficient_scope"
	}
	markUsed(id, now)
	hd := w.Header()
	hd.Set(headerUser, id.User)
	hd.Set(headerName, id.Name)
	hd.Set(headerNamespace, id.Namespace)
	hd.Set(headerType, id.Type)
	hd.Set(headerScopes, id.ScopesHeader)
	w.WriteHeader(http.StatusOK)
	return "valid"
}

func badRequest(w http.ResponseWriter, problem string) string {
	w.Header().Set("WWW-Authenticate", realm+`, error="invalid_request", error_description="`+problem+`"`)
	http.Error(w, problem, http.StatusBadRequest)
	return "bad_request"
}

// credential returns the one token sent in Authorization: Bearer (scheme
// case-insensitive) or X-API-Key. problem is set when the request carries
// more than one credential, a repeated header or another scheme.
func credential(hd http.Header) (tok, problem string) {
	auth, keys := hd.Values("Authorization"), hd.Values(headerAPIKey)
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
func (h *Handler) requiredScope(r *http.Request, q url.Values) (*token.Scope, string) {
	if s := q["scope"]; len(s) > 0 {
		if len(s) > 1 {
			return nil, "more than one scope parameter"
		}
		sc, err := token.ParseScope(s[0])
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
	resource := q.Get("resource")
	if resource == "" {
		resource = h.resourceOf(path)
	}
	return &token.Scope{Resource: resource, Action: token.ActionForMethod(method)}, ""
}

// original returns the method and path of the request being authorised.
func original(r *http.Request) (method, path, problem string) {
	for _, pair := range [][2]string{{headerOriginalMethod, headerOriginalURL}, {headerForwardedMethod, headerForwardedURI}} {
		ms, us := r.Header.Values(pair[0]), r.Header.Values(pair[1])
		if len(ms) > 1 || len(us) > 1 {
			return "", "", "repeated " + pair[0] + " or " + pair[1] + " header"
		}
		if len(ms) == 0 && len(us) == 0 {
			continue
		}
		if len(ms) == 0 || ms[0] == "" {
			return "", "", pair[1] + " was sent without " + pair[0]
		}
		p := "/"
		if len(us) == 1 {
			u, err := url.Parse(us[0])
			if err != nil {
				return "", "", pair[1] + " is not a URL"
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
// PathPrefix, lower-cased.
func (h *Handler) resourceOf(p string) string {
	p = strings.TrimPrefix(p, strings.TrimSuffix(h.Options.PathPrefix, "/"))
	segs := strings.Split(strings.Trim(p, "/"), "/")
	if h.Options.ResourceSegment >= len(segs) {
		return ""
	}
	return strings.ToLower(segs[h.Options.ResourceSegment])
}

func namespaceAccepted(params []string, ns string) bool {
	if len(params) == 0 {
		return true
	}
	for _, p := range params {
		for _, n := range strings.Split(p, ",") {
			if strings.TrimSpace(n) == ns {
				return true
			}
		}
	}
	return false
}
