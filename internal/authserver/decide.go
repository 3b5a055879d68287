package authserver

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Request is what every door (auth-request, forward-auth, ext-authz over
// HTTP and gRPC, explicit, TokenReview) translates its client's request
// into. Only Token comes from the client being judged; Method and Path are
// the original request as the proxy reported it (already checked and
// normalised), Policy comes only from what the proxy's operator
// configured, and Audiences from the API server that asks a TokenReview.
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
	// Review marks a TokenReview: the token must be valid for Audiences
	// (Decider.reviewAudiences), and no scope, route audience or namespace
	// is required (Method, Path and Policy are not read).
	Review bool
	// Audiences are a TokenReview's spec.audiences; none asks for the
	// Kubernetes API server's own.
	Audiences []string
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
	// Challenge is the WWW-Authenticate value of a refusal (none for a
	// TokenReview, which answers in its status).
	Challenge []string
	// Identity is who the token speaks for: on a 200, and on a refusal of
	// a known token (for the audit log; never sent).
	Identity *Identity
	// Required and Audience are what a route request needed, once known.
	Required token.Scope
	Audience string
	// Audiences are what a TokenReview's token is valid for, of those
	// asked (status.audiences): its own audience, or none when it is
	// valid for the API server's.
	Audiences []string
	// at is when the index was asked: the use a 200 records (answer).
	at time.Time
	// again, when set, is a replaced or revoked token presented again
	// (answer records it: presented).
	again again
}

// Options configure the auth endpoint's decisions.
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

// Decider is the one place that answers "is this token valid for this
// request?". Every door calls Decide; it reads no request headers and
// writes nothing (the door's answer records the use).
type Decider struct {
	Index   *Index
	Clock   clock.PassiveClock
	Options Options
}

// Decide judges req: what it requires (a route's scope, audience and
// namespaces; a TokenReview's audiences), then the token's verdict at the
// clock's now, how it was presented, and whether it grants what is
// required.
func (dc *Decider) Decide(req *Request) Decision {
	var d Decision
	if !req.Review {
		required, problem := dc.Options.requiredScope(req)
		if problem != "" {
			return refusal(problem)
		}
		d.Required, d.Audience = required, req.Policy.Audience
		if d.Audience == "" {
			d.Audience = string(lifecycle.DefaultAudience)
		}
	}
	if req.Token == "" {
		d.Status, d.Result, d.Challenge = http.StatusUnauthorized, "missing", realmOnly
		return d
	}
	d.at = dc.Clock.Now()
	id, verdict, again := dc.Index.lookup(req.Token, d.at)
	d.Identity = id
	if verdict != Valid {
		d.again = again
		d.Status, d.Result, d.Challenge = http.StatusUnauthorized, verdict.String(), invalidToken[verdict]
		return d
	}
	if problem := presentedWrongly(id, req.Via); problem != "" {
		r := refusal(problem)
		r.Identity, r.Required, r.Audience = id, d.Required, d.Audience
		return r
	}
	var why string
	if req.Review {
		d.Audiences, why = dc.reviewAudiences(req.Audiences, id)
	} else {
		why = dc.routeRefuses(req, id, &d)
	}
	if why != "" {
		d.Status, d.Result, d.Reason = http.StatusForbidden, "insufficient_scope", why
		if !req.Review {
			d.Challenge = []string{realm + `, error="insufficient_scope", error_description=` + quoted(why) + `, scope=` + quoted(d.Required.String())}
		}
		return d
	}
	d.Status, d.Result = http.StatusOK, "valid"
	return d
}

// routeRefuses says why the token of id may not make the route request
// req, whose needs d holds: another audience, a namespace the route does
// not accept, or a scope it does not grant; "" when it may.
func (dc *Decider) routeRefuses(req *Request, id *Identity, d *Decision) string {
	namespaces := req.Policy.Namespaces
	if len(namespaces) == 0 {
		namespaces = dc.Options.DefaultNamespaces
	}
	switch {
	case id.Audience != d.Audience:
		return "the token's audience is " + id.Audience + ", not " + d.Audience
	case len(namespaces) == 0:
		return "this route accepts tokens from no namespace: name them in its policy (namespace=" + id.Namespace +
			") or start the operator with --auth-default-namespaces"
	case !slices.Contains(namespaces, id.Namespace) && !slices.Contains(namespaces, "*"):
		return "tokens from namespace " + id.Namespace + " are not accepted on this route: name it in the route's policy (namespace=" + id.Namespace +
			") or in the operator's --auth-default-namespaces"
	case !id.Scopes.Allows(d.Required):
		return "the token does not grant " + d.Required.String()
	}
	return ""
}

// reviewAudiences decides which of the audiences a TokenReview asked for
// the token of id is valid for (validFor, status.audiences), or returns
// why it is valid for none.
//
// The TokenReview API defines absent spec.audiences as the API server's
// own, and an empty status.audiences on an authenticated answer as "valid
// for the API server's audiences". So only a token of audience kubernetes
// passes a review that names none (answered with no status.audiences), or
// one that names an audience of the API server (Options.KubeAPIAudiences).
// Any other token is valid only for its own audience, and never when that
// is also one of the API server's by name (k3s and RKE2 add "k3s" and
// "rke2" to their --api-audiences): the API server would accept it.
func (dc *Decider) reviewAudiences(asked []string, id *Identity) (validFor []string, why string) {
	apiServers := func(a string) bool { return slices.Contains(dc.Options.KubeAPIAudiences, a) }
	kube := id.Audience == string(tokensv1alpha1.Kubernetes)
	switch {
	case len(asked) == 0 && kube:
		return nil, ""
	case len(asked) == 0:
		return nil, "a TokenReview that names no audience asks for the API server's audiences, for which only a token of audience kubernetes is valid; " +
			"this token's audience is " + id.Audience + ": name it in spec.audiences (kube-rbac-proxy: --auth-token-audiences=" + id.Audience + ")"
	case kube && slices.ContainsFunc(asked, apiServers):
		return nil, ""
	case !kube && apiServers(id.Audience):
		return nil, "the token's audience " + id.Audience + " is also an audience of the Kubernetes API server (--kube-api-audiences), for which only a token of audience kubernetes is valid"
	case slices.Contains(asked, id.Audience):
		return []string{id.Audience}, ""
	case kube:
		return nil, "a kubernetes token is valid only for the API server's audiences (--kube-api-audiences), and none of the requested audiences is one"
	}
	return nil, "the token's audience " + id.Audience + " is not among the requested audiences"
}

// requiredScope returns the scope req needs: Policy.Scope, or the action
// of the method on the resource that Policy.Resource or the path names. A
// read (GET, HEAD) is find on the resource itself (/articles) and findOne
// on an entry under it (/articles/7): a token's read covers both.
func (o *Options) requiredScope(req *Request) (token.Scope, string) {
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
	span, item, ok := o.resourceOf(req.Path, segments)
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
		return token.Scope{}, "the path " + quoted(req.Path) + " names no resource (after --auth-path-prefix " + quoted(o.PathPrefix) +
			", segment " + strconv.Itoa(o.ResourceSegment) + ", " + strconv.Itoa(segments) + " segment(s)): name it with resource= in the route policy"
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
func (o *Options) resourceOf(p string, n int) (span string, item, ok bool) {
	if prefix := strings.TrimSuffix(o.PathPrefix, "/"); prefix != "" {
		if rest, ok := strings.CutPrefix(p, prefix); ok && (rest == "" || rest[0] == '/') {
			p = rest
		}
	}
	p = strings.TrimPrefix(p, "/")
	for i := 0; i < o.ResourceSegment; i++ {
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

// realm is the RFC 6750 challenge every refusal starts with.
const realm = `Bearer realm="apitoken"`

var realmOnly = []string{realm}

// invalidToken holds the challenge of each refusal verdict.
var invalidToken = func() map[Verdict][]string {
	m := map[Verdict][]string{}
	for _, v := range []Verdict{Malformed, Unknown, Expired, Revoked, Inactive, Ambiguous} {
		m[v] = []string{realm + `, error="invalid_token", error_description="` + v.String() + `"`}
	}
	return m
}()

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
