package authserver

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Request is what every adapter (auth-request, forward-auth, ext-authz,
// explicit) translates its client's request into. Only Token comes from the
// client being judged; Method and Path are the original request as the
// proxy reported it (already checked and normalised), and Policy comes only
// from what the proxy's operator configured.
type Request struct {
	Token string
	// Via is the header the token came in: Authorization (as Bearer) or
	// X-API-Key. Empty: Authorization.
	Via string
	// Method is the original method (GET, HEAD, POST, PUT, PATCH or DELETE);
	// empty when Policy.Scope fixes the scope.
	Method string
	// Path is the original path, normalised and percent-decoded.
	Path   string
	Policy Policy
}

// Policy is what a route requires. The zero value requires the scope
// derived from the method and path, audience content-api, and a token from
// one of the operator's default namespaces.
type Policy struct {
	// Scope, when set, is required whatever the method and path.
	Scope *token.Scope
	// Resource, when set, names the resource instead of the path.
	Resource string
	// Segments is how many path segments name the resource (joined by
	// ':', or replaced by Resource); an entry follows them. Zero: 1.
	Segments int
	// Audience is the audience required; empty: content-api.
	Audience string
	// Namespaces are the namespaces whose tokens are accepted; "*" accepts
	// every namespace. Empty: the operator's default namespaces.
	Namespaces []string
}

// Decision is the answer to a Request.
type Decision struct {
	// Status is 200, 400, 401 or 403; never 5xx.
	Status int
	// Result is the metrics label: valid, missing, malformed, unknown,
	// expired, revoked, inactive, ambiguous, insufficient_scope or
	// bad_request.
	Result string
	// Reason says why a request was refused (400, 403), in words that
	// name what was wrong. It never contains the credential.
	Reason string
	// Challenge is the WWW-Authenticate value of a refusal.
	Challenge []string
	// Identity is who the token speaks for: on a 200, and on a refusal of
	// a known token (for the audit log; never sent).
	Identity *Identity
	// Required and Audience are what the request needed, once known.
	Required token.Scope
	Audience string
}

// Decide is the one place that answers "is this token valid for this
// request?". Every adapter calls it; it reads no request headers itself.
func (h *Handler) Decide(req Request) Decision {
	required, problem := h.requiredScope(&req)
	if problem != "" {
		return refusal(problem)
	}
	audience := req.Policy.Audience
	if audience == "" {
		audience = string(tokensv1alpha1.ContentAPI)
	}
	if req.Token == "" {
		return Decision{Status: http.StatusUnauthorized, Result: "missing", Challenge: realmOnly, Required: required, Audience: audience}
	}
	now := h.Clock.Now()
	id, verdict := h.Index.Lookup(req.Token, now)
	if verdict != Valid {
		return Decision{Status: http.StatusUnauthorized, Result: verdict.String(), Challenge: invalidToken[verdict], Identity: id, Required: required, Audience: audience}
	}
	if problem := presentedWrongly(id, req.Via); problem != "" {
		d := refusal(problem)
		d.Identity, d.Required, d.Audience = id, required, audience
		return d
	}
	namespaces := req.Policy.Namespaces
	if len(namespaces) == 0 {
		namespaces = h.Options.DefaultNamespaces
	}
	var why string
	switch {
	case id.Audience != audience:
		why = "the token's audience is " + id.Audience + ", not " + audience
	case len(namespaces) == 0:
		why = "this route accepts tokens from no namespace: name them in its policy (namespace=" + id.Namespace +
			") or start the operator with --auth-default-namespaces"
	case !slices.Contains(namespaces, id.Namespace) && !slices.Contains(namespaces, "*"):
		why = "tokens from namespace " + id.Namespace + " are not accepted on this route: name it in the route's policy (namespace=" + id.Namespace +
			") or in the operator's --auth-default-namespaces"
	case !id.Scopes.Allows(required):
		why = "the token does not grant " + required.String()
	}
	if why != "" {
		challenge := realm + `, error="insufficient_scope", error_description=` + quoted(why) + `, scope=` + quoted(required.String())
		return Decision{Status: http.StatusForbidden, Result: "insufficient_scope", Reason: why, Challenge: []string{challenge}, Identity: id, Required: required, Audience: audience}
	}
	markUsed(id, now)
	return Decision{Status: http.StatusOK, Result: "valid", Identity: id, Required: required, Audience: audience}
}

// requiredScope returns the scope req needs: Policy.Scope, or the action
// of the method on the resource that Policy.Resource or the path names. A
// read (GET, HEAD) is find on the resource itself (/articles) and findOne
// on an entry under it (/articles/7): a token's read covers both.
func (h *Handler) requiredScope(req *Request) (token.Scope, string) {
	if req.Policy.Scope != nil {
		return *req.Policy.Scope, ""
	}
	action, ok := token.ActionForMethod(req.Method)
	if !ok {
		return token.Scope{}, "method " + quoted(req.Method) + " has no action: only GET, HEAD, POST, PUT, PATCH and DELETE are mapped (or fix the scope in the route policy)"
	}
	segments := req.Policy.Segments
	if segments == 0 {
		segments = 1
	}
	span, item, ok := h.resourceOf(req.Path, segments)
	resource := req.Policy.Resource
	if ok && resource == "" {
		// One segment names one part: /table:data is not table:data.
		if strings.Contains(span, token.Separator) {
			ok = false
		}
		// ASCII only: Unicode would fold İ into i and the Kelvin sign
		// into k, naming a resource the upstream never sees; any other
		// letter then leaves the name no resource.
		resource = asciiLower(span)
		if segments > 1 {
			resource = strings.ReplaceAll(resource, "/", token.Separator)
		}
	}
	if !ok || !token.Concrete(resource) {
		return token.Scope{}, "the path " + quoted(req.Path) + " names no resource (after --auth-path-prefix " + quoted(h.Options.PathPrefix) +
			", segment " + strconv.Itoa(h.Options.ResourceSegment) + ", " + strconv.Itoa(segments) + " segment(s)): name it with resource= in the route policy"
	}
	if action == token.ActionRead {
		action = token.ActionFind
		if item {
			action = token.ActionFindOne
		}
	}
	return token.Scope{Resource: resource, Action: action}, ""
}

// resourceOf reads a normalised path: after PathPrefix (matched on whole
// segments: /api does not strip /apiary) and ResourceSegment segments, span
// is the next n segments as they appear ("table/data"), and item reports
// whether a segment follows them (/articles/7, not /articles or
// /articles/). ok is false when the path has fewer segments.
func (h *Handler) resourceOf(p string, n int) (span string, item, ok bool) {
	if prefix := strings.TrimSuffix(h.Options.PathPrefix, "/"); prefix != "" {
		if rest, ok := strings.CutPrefix(p, prefix); ok && (rest == "" || rest[0] == '/') {
			p = rest
		}
	}
	p = strings.TrimPrefix(p, "/")
	for i := 0; i < h.Options.ResourceSegment; i++ {
		if _, p, ok = strings.Cut(p, "/"); !ok {
			return "", false, false
		}
	}
	rest, end := p, 0
	for i := 0; i < n; i++ {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" || (!more && i < n-1) {
			return "", false, false
		}
		if end += len(seg); i < n-1 {
			end++
		}
		rest = tail
	}
	return p[:end], rest != "", true
}

// presentedWrongly names the header to use when a token came in another
// header than its spec.presentation allows.
func presentedWrongly(id *Identity, via string) string {
	switch {
	case id.Presentation == tokensv1alpha1.BearerHeader && via == headerAPIKey:
		return "this token is a bearer token (spec.presentation: bearer): send it as Authorization: Bearer, not in X-API-Key"
	case id.Presentation == tokensv1alpha1.APIKeyHeader && via != headerAPIKey:
		return "this token is an API key (spec.presentation: api-key): send it in X-API-Key, not as Authorization: Bearer"
	}
	return ""
}

// refusal is the 400 answer to a request that cannot be judged.
func refusal(problem string) Decision {
	return Decision{
		Status: http.StatusBadRequest, Result: "bad_request", Reason: problem,
		Challenge: []string{realm + `, error="invalid_request", error_description=` + quoted(problem)},
	}
}

// asciiLower lowers A-Z and leaves every other byte as it is; s itself,
// with no allocation, when it has no upper-case letter (the request path).
func asciiLower(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return 'A' <= r && r <= 'Z' }) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
