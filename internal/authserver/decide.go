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
	// expired, revoked, insufficient_scope or bad_request.
	Result string
	// Reason says why a request was refused (400, 403), in words that
	// name what was wrong. It never contains the credential.
	Reason string
	// Challenge is the WWW-Authenticate value of a refusal.
	Challenge []string
	// Identity is who the token speaks for, on a 200.
	Identity *Identity
}

// Decide is the one place that answers "is this token valid for this
// request?". Every adapter calls it; it reads no request headers itself.
func (h *Handler) Decide(req Request) Decision {
	required, problem := h.requiredScope(&req)
	if problem != "" {
		return refusal(problem)
	}
	if req.Token == "" {
		return Decision{Status: http.StatusUnauthorized, Result: "missing", Challenge: realmOnly}
	}
	now := h.Clock.Now()
	id, verdict := h.Index.Lookup(req.Token, now)
	if verdict != Valid {
		return Decision{Status: http.StatusUnauthorized, Result: verdict.String(), Challenge: invalidToken[verdict]}
	}
	audience := req.Policy.Audience
	if audience == "" {
		audience = string(tokensv1alpha1.ContentAPI)
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
		why = "tokens from namespace " + id.Namespace + " are not accepted on this route"
	case !id.Scopes.Allows(required):
		why = "the token does not grant " + required.String()
	}
	if why != "" {
		challenge := realm + `, error="insufficient_scope", error_description=` + quoted(why) + `, scope=` + quoted(required.String())
		return Decision{Status: http.StatusForbidden, Result: "insufficient_scope", Reason: why, Challenge: []string{challenge}}
	}
	markUsed(id, now)
	return Decision{Status: http.StatusOK, Result: "valid", Identity: id}
}

// requiredScope returns the scope req needs: Policy.Scope, or the action of
// the method on the resource named by Policy.Resource or by the path.
func (h *Handler) requiredScope(req *Request) (token.Scope, string) {
	if req.Policy.Scope != nil {
		return *req.Policy.Scope, ""
	}
	action, ok := token.ActionForMethod(req.Method)
	if !ok {
		return token.Scope{}, "method " + quoted(req.Method) + " has no action: only GET, HEAD, POST, PUT, PATCH and DELETE are mapped (or fix the scope in the route policy)"
	}
	resource := req.Policy.Resource
	if resource == "" {
		resource = h.resourceOf(req.Path)
		if resource == "" || !token.ValidResource(resource) || resource == token.Wildcard {
			return token.Scope{}, "the path " + quoted(req.Path) + " names no resource (after --auth-path-prefix " + quoted(h.Options.PathPrefix) +
				", segment " + strconv.Itoa(h.Options.ResourceSegment) + "): name it with resource= in the route policy"
		}
	}
	return token.Scope{Resource: resource, Action: action}, ""
}

// resourceOf names the resource of a normalised path: the configured
// segment after PathPrefix (matched on whole segments: /api does not strip
// /apiary), lower-cased.
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

// refusal is the 400 answer to a request that cannot be judged.
func refusal(problem string) Decision {
	return Decision{
		Status: http.StatusBadRequest, Result: "bad_request", Reason: problem,
		Challenge: []string{realm + `, error="invalid_request", error_description=` + quoted(problem)},
	}
}
