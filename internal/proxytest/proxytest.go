// Package proxytest holds what every proxy put in front of the auth
// endpoint is run through: the attack table, the tokens its rows name, a
// raw HTTP client that sends a request exactly as written, and the proxy
// configurations of docs/auth-endpoint.md, read from the page itself. The
// proxy tests of internal/authserver (nginx and Caddy on loopback, Traefik
// and Envoy simulated) and the real-node suite (Caddy in a pod, test/cluster)
// share it, so a row added for one proxy runs through every one.
package proxytest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// RoutePolicy is the policy segment every proxy's auth URL ends with: the
// route accepts tokens of team-a and team-b.
const RoutePolicy = "namespace=team-a+team-b"

// GarbageToken is what the row "garbage token" sends: the token prefix and
// no valid body.
const GarbageToken = "atk_garbage"

// IdentityLabelPrefix is the --auth-identity-label-prefix the endpoint
// behind the proxy runs with: Tokens' labels under it are identity
// labels, which the documented snippets copy upstream (X-ApiToken-Tier).
const IdentityLabelPrefix = "tokens.apitoken.dev/"

// Token is an ApiToken that a row names, as the endpoint behind the proxy
// must hold it.
type Token struct {
	Name, Namespace string
	// Labels are the ApiToken's labels (a tenant writes them).
	Labels map[string]string
	Spec   tokensv1alpha1.ApiTokenSpec
	// Expired and Revoked: the state the token is in when the rows run.
	Expired, Revoked bool
}

// Tokens are the ApiTokens the rows name (their Token field). The route
// accepts team-a and team-b; outsider is of team-c.
var Tokens = []Token{
	{Name: "reader", Namespace: "team-a", Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}},
	{Name: "writer", Namespace: "team-b", Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: []string{"articles:read", "orders:*"}}},
	// author may create articles, not delete them: what a method override
	// would turn its POST into.
	{Name: "author", Namespace: "team-a", Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Scopes: []string{"articles:read", "articles:create"}}},
	{Name: "outsider", Namespace: "team-c", Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess}},
	{Name: "expired", Namespace: "team-a", Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, Expired: true},
	{Name: "revoked", Namespace: "team-a", Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Revoked: true}, Revoked: true},
	// tiered has one identity label (tier: X-ApiToken-Tier: gold) and
	// labels a tenant might try: one named like an identity header
	// (X-ApiToken-Name), an upper-case spelling of tier, a name with '_'
	// (read as '-' by CGI upstreams) and one outside the prefix. Only
	// tier may reach the upstream.
	{Name: "tiered", Namespace: "team-a", Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly}, Labels: map[string]string{
		IdentityLabelPrefix + "tier": "gold", IdentityLabelPrefix + "name": "full", IdentityLabelPrefix + "Tier": "platinum",
		IdentityLabelPrefix + "rate_limit": "none", "tier": "platinum",
	}},
}

// Attack is one row of the table every proxy runs.
type Attack struct {
	Name   string
	Method string
	Target string
	// Token names one of Tokens, or "garbage" (GarbageToken); "" sends none.
	Token string
	// Headers are sent after the credential; "{reader}" in a value stands
	// for reader's token.
	Headers [][2]string
	// Allow: 200 and the upstream sees the token's identity, and only it.
	// Otherwise the upstream must not be reached at all.
	Allow bool
	// NotOn names proxies where the row does not hold, with the caveat that
	// docs/auth-endpoint.md gives for them.
	NotOn map[string]string
	// Unseen, for a refused row, also lets it pass when the proxy dropped
	// the header of that name (in any spelling: '_' for '-') before both
	// the endpoint and the upstream: nginx drops headers spelled with
	// underscores (underscores_in_headers off).
	Unseen string
}

// Forged are identity headers a client sends in the hope that the upstream
// trusts them.
var Forged = [][2]string{
	{"X-Auth-Request-User", "apitoken:team-a:full"}, {"X-ApiToken-Name", "full"}, {"X-ApiToken-Namespace", "kube-system"},
	{"X-ApiToken-Type", "full-access"}, {"X-ApiToken-Scopes", "*:*"},
}

// Attacks is the table.
var Attacks = []Attack{
	{Name: "read with a read-only token", Method: "GET", Target: "/api/articles/1", Token: "reader", Allow: true},
	{Name: "delete within the token's scope", Method: "DELETE", Target: "/api/orders/1", Token: "writer", Allow: true},
	{Name: "forged identity headers are overwritten", Method: "GET", Target: "/api/articles/1?page=2", Token: "reader", Headers: Forged, Allow: true},
	{Name: "write with a read-only token", Method: "DELETE", Target: "/api/articles/1", Token: "reader"},
	{Name: "client-chosen policy in the query", Method: "DELETE", Target: "/api/articles/1?scope=articles:read&resource=orders&audience=admin&namespace=team-c", Token: "reader"},
	{Name: "client's X-Original-Method", Method: "DELETE", Target: "/api/articles/1", Token: "reader", Headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URL", "/api/articles/1"}}},
	{Name: "client's X-Forwarded-Method", Method: "DELETE", Target: "/api/articles/1", Token: "reader", Headers: [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/api/articles/1"}}},
	{Name: "method override header", Method: "GET", Target: "/api/articles/1", Token: "reader", Headers: [][2]string{{"X-HTTP-Method-Override", "DELETE"}}},
	{Name: "create with a token that may create", Method: "POST", Target: "/api/articles/1?draft=1", Token: "author", Allow: true},
	{Name: "method override in the query (_method: Laravel, Symfony)", Method: "POST", Target: "/api/articles/1?_method=DELETE", Token: "author"},
	{Name: "method override in the query (X-HTTP-Method-Override)", Method: "POST", Target: "/api/articles/1?X-HTTP-Method-Override=DELETE", Token: "author"},
	{Name: "method override header spelt with underscores (PHP, WSGI, Rack read it)", Method: "POST", Target: "/api/articles/1", Token: "author",
		Headers: [][2]string{{"X_HTTP_Method_Override", "DELETE"}}, Unseen: "X-HTTP-Method-Override"},
	{Name: "dot segments", Method: "DELETE", Target: "/api/orders/../articles/1", Token: "writer"},
	{Name: "encoded dot segments", Method: "DELETE", Target: "/api/orders/%2e%2e/articles/1", Token: "writer"},
	{Name: "encoded slash", Method: "DELETE", Target: "/api/orders%2F..%2Farticles/1", Token: "writer"},
	{Name: "empty segment", Method: "DELETE", Target: "/api//articles/1", Token: "writer"},
	{Name: "path parameter", Method: "DELETE", Target: "/api/orders;/../articles/1", Token: "writer"},
	{Name: "token from a namespace the route does not accept", Method: "GET", Target: "/api/articles/1", Token: "outsider"},
	{Name: "expired token", Method: "GET", Target: "/api/articles/1", Token: "expired"},
	{Name: "revoked token", Method: "GET", Target: "/api/articles/1", Token: "revoked"},
	{Name: "garbage token", Method: "GET", Target: "/api/articles/1", Token: "garbage"},
	{Name: "no token", Method: "GET", Target: "/api/articles/1"},
	{Name: "two credentials", Method: "GET", Target: "/api/articles/1", Token: "reader", Headers: [][2]string{{"X-API-Key", "{reader}"}}},
	{Name: "large client headers still get a decision", Method: "GET", Target: "/api/articles/1", Token: "reader", Allow: true,
		Headers: [][2]string{{"X-A", strings.Repeat("a", 7000)}, {"X-B", strings.Repeat("b", 7000)}, {"X-C", strings.Repeat("c", 7000)}},
		NotOn:   map[string]string{"caddy": "Caddy answers 431 itself for these headers (never a 5xx, the upstream not reached)"}},
	{Name: "identity labels reach the upstream, and only the token's", Method: "GET", Target: "/api/articles/1", Token: "tiered", Headers: Forged, Allow: true},
	{Name: "client's own label header (the token has no such label)", Method: "GET", Target: "/api/articles/1", Token: "reader", Headers: [][2]string{{"X-ApiToken-Tier", "gold"}}},
	{Name: "client's own label header (the token has the label)", Method: "GET", Target: "/api/articles/1", Token: "tiered", Headers: [][2]string{{"X-ApiToken-Tier", "platinum"}}},
	{Name: "client's label header in another case", Method: "GET", Target: "/api/articles/1", Token: "reader", Headers: [][2]string{{"x-apitoken-rate-limit", "none"}}},
	{Name: "client's label header spelt with underscores", Method: "GET", Target: "/api/articles/1", Token: "reader",
		Headers: [][2]string{{"X_ApiToken_Tier", "platinum"}}, Unseen: "X-ApiToken-Tier"},
	{Name: "Connection naming identity headers cannot strip them", Method: "GET", Target: "/api/articles/1", Token: "tiered", Allow: true,
		Headers: [][2]string{{"Connection", "X-Auth-Request-User, X-ApiToken-Scopes, X-ApiToken-Tier"}},
		NotOn: map[string]string{
			"traefik": "Go's reverse proxy drops the headers a client names in Connection after ForwardAuth set them",
			"envoy":   "the upstream hop here is Go's reverse proxy, which drops the headers a client names in Connection",
		}},
}

// RequestHeaders returns the headers the row sends, its credential first,
// with the plaintext tokens (by name) in place.
func (a Attack) RequestHeaders(tokens map[string]string) [][2]string {
	var hs [][2]string
	if tok, ok := tokens[a.Token]; ok {
		hs = append(hs, [2]string{"Authorization", "Bearer " + tok})
	} else if a.Token == "garbage" {
		hs = append(hs, [2]string{"Authorization", "Bearer " + GarbageToken})
	}
	for _, h := range a.Headers {
		hs = append(hs, [2]string{h[0], strings.ReplaceAll(h[1], "{reader}", tokens["reader"])})
	}
	return hs
}

// RawDo sends one request to addr exactly as written (so that dot segments
// and encodings arrive unchanged), with Host shop.example and Connection:
// close, and returns the response and its body.
func RawDo(addr, method, target string, headers [][2]string) (*http.Response, []byte, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n", method, target)
	for _, h := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, target, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	return resp, body, err
}

// HasHeader reports whether h has the header name in any spelling ('_'
// for '-', any case).
func HasHeader(h http.Header, name string) bool {
	for k := range h {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), name) {
			return true
		}
	}
	return false
}

// DocSnippet returns the first code block fenced as lang (```lang) after
// the line heading of a Markdown page (docs/auth-endpoint.md), without its
// fences.
func DocSnippet(page []byte, heading, lang string) (string, error) {
	_, rest, ok := bytes.Cut(page, []byte("\n"+heading+"\n"))
	if !ok {
		return "", fmt.Errorf("no heading %q", heading)
	}
	_, rest, ok = bytes.Cut(rest, []byte("\n```"+lang+"\n"))
	if !ok {
		return "", fmt.Errorf("no ```%s block after %q", lang, heading)
	}
	block, _, ok := bytes.Cut(rest, []byte("\n```\n"))
	if !ok {
		return "", fmt.Errorf("the ```%s block after %q does not end", lang, heading)
	}
	return string(block) + "\n", nil
}

// CaddyHeading is the heading of the Caddy snippet in docs/auth-endpoint.md.
const CaddyHeading = "### Caddy `forward_auth`"

// CaddySiteAddress, CaddyAuthAddress and CaddyUpstream are the site
// address, the auth endpoint's address and the upstream the snippet names.
const (
	CaddySiteAddress = "shop.example"
	CaddyAuthAddress = "https://apitoken-operator-auth.apitoken-system.svc:8082"
	CaddyUpstream    = "backend:8080"
)

// CaddySnippet returns the Caddy snippet of the page, checked to name the
// addresses a test substitutes exactly once each.
func CaddySnippet(page []byte) (string, error) {
	s, err := DocSnippet(page, CaddyHeading, "caddyfile")
	if err != nil {
		return "", err
	}
	for _, want := range []string{CaddySiteAddress + " {\n", "forward_auth " + CaddyAuthAddress + " {\n", "reverse_proxy " + CaddyUpstream + "\n"} {
		if n := strings.Count(s, want); n != 1 {
			return "", fmt.Errorf("the Caddy snippet has %d lines %q, want 1:\n%s", n, strings.TrimSpace(want), s)
		}
	}
	return s, nil
}

// CaddySite returns snippet served at site (a Caddy site address such as
// http://:8080), with auth and upstream in place of the page's addresses
// ("" keeps the page's).
func CaddySite(snippet, site, auth, upstream string) string {
	s := strings.Replace(snippet, CaddySiteAddress+" {\n", site+" {\n", 1)
	if auth != "" {
		s = strings.Replace(s, "forward_auth "+CaddyAuthAddress+" {\n", "forward_auth "+auth+" {\n", 1)
	}
	if upstream != "" {
		s = strings.Replace(s, "reverse_proxy "+CaddyUpstream+"\n", "reverse_proxy "+upstream+"\n", 1)
	}
	return s
}

// WithoutBlock returns s without the Caddyfile block that opens with a
// line starting with opening (after its tabs), e.g. "transport http" or
// "forward_auth", and the line that closes it.
func WithoutBlock(s, opening string) string {
	lines := strings.SplitAfter(s, "\n")
	var out strings.Builder
	depth := 0
	for _, l := range lines {
		t := strings.TrimLeft(l, "\t ")
		switch {
		case depth == 0 && strings.HasPrefix(t, opening) && strings.HasSuffix(strings.TrimSpace(t), "{"):
			depth = 1
		case depth > 0:
			depth += strings.Count(t, "{") - strings.Count(t, "}")
		default:
			out.WriteString(l)
		}
	}
	return out.String()
}
