package authserver

import (
	"net/http"
	"strings"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// The checks of what a client sent that every adapter over HTTP headers
// shares, whether the headers came over HTTP or in a gRPC CheckRequest:
// the credential, the other proxy protocols' headers, method overrides
// and the identity headers, and Envoy's original request.

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
)

// IdentityHeaders are the headers of a 200, in the spelling the docs use.
// Every 200 sets all of them; a proxy configuration copies all of them
// upstream, so that a client's own copies never reach the upstream.
var IdentityHeaders = []string{"X-Auth-Request-User", "X-ApiToken-Name", "X-ApiToken-Namespace", "X-ApiToken-Type", "X-ApiToken-Scopes"}

// originFamily is a pair of headers in which one kind of proxy reports
// the original request.
type originFamily struct{ method, target, methodName, targetName string }

var (
	originalFamily  = originFamily{headerOriginalMethod, headerOriginalURL, "X-Original-Method", "X-Original-URL"}
	forwardedFamily = originFamily{headerForwardedMethod, headerForwardedURI, "X-Forwarded-Method", "X-Forwarded-Uri"}
)

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

// envoyRequest builds the Request of Envoy's ext_authz, over HTTP or gRPC,
// from what Envoy reports of the original request: its headers hd (in
// which neither family of original-request headers is accepted), its
// method (named methodName in messages) and its path, under policy pol.
func envoyRequest(hd http.Header, method, methodName, target string, pol Policy) (Request, string) {
	if problem := foreignHeaders(hd, originalFamily, forwardedFamily); problem != "" {
		return Request{}, problem
	}
	if !strings.HasPrefix(target, "/") {
		return Request{}, "the original path " + quoted(target) + " is not a path starting with /"
	}
	path, problem := normalPath(target)
	if problem != "" {
		return Request{}, "the original path " + problem
	}
	method, problem = checkMethod(method, methodName)
	if problem != "" {
		return Request{}, problem
	}
	return Request{Method: method, Path: path, Policy: pol}, ""
}

// foreignHeaders names a header that this endpoint must not receive: the
// original-request headers of another proxy protocol, a method override,
// or an X-ApiToken-* header that is not one of the five every 200 sets
// (isIdentityHeaderSpace), in any spelling.
// It walks the request's headers once (a few) rather than looking up each
// name it refuses.
func foreignHeaders(hd http.Header, families ...originFamily) string {
	for k := range hd {
		if problem := foreignHeader(k, families); problem != "" {
			return problem
		}
		if isIdentityHeaderSpace(k) {
			return k + " is refused: X-ApiToken-* headers are set by this endpoint (from the token's identity labels), never by a client"
		}
		if strings.IndexByte(k, '_') >= 0 {
			// CGI-style upstreams (PHP, WSGI, Rack) read X_Http_Method_Override
			// as X-Http-Method-Override, and X_Auth_Request_User as the
			// identity header the proxy sets only in its hyphenated form.
			alias := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
			if foreignHeader(alias, families) != "" || isIdentityHeader(alias) || isIdentityHeaderSpace(alias) {
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
