package authserver

import (
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// parsePolicySegment reads a route policy from one path segment of the
// auth URL that the proxy's operator configured, such as
// "namespace=shop+billing,resource=orders" in /v1/ext-authz/<policy>/...
// "" and "-" are the empty policy. The segment is taken verbatim: a
// percent-encoding is refused, so that one policy has one spelling.
func parsePolicySegment(seg string) (Policy, string) {
	if seg == "" || seg == "-" {
		return Policy{}, ""
	}
	if strings.Contains(seg, "%") {
		return Policy{}, "the route policy " + quoted(seg) + " must not be percent-encoded"
	}
	var pairs [][2]string
	for _, kv := range strings.Split(seg, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Policy{}, "the route policy " + quoted(seg) + " must be - or key=value pairs joined by ',' (scope, resource, audience, namespace), e.g. namespace=shop,resource=orders"
		}
		if k == "namespace" {
			for _, ns := range strings.Split(v, "+") {
				pairs = append(pairs, [2]string{k, ns})
			}
			continue
		}
		pairs = append(pairs, [2]string{k, v})
	}
	return policyOf(pairs, "route policy")
}

// parseExplicitQuery reads the query of the explicit endpoint: scope
// (required), audience, namespace (repeated or comma-separated). Unknown
// parameters are refused, so that a misspelt one is not silently ignored.
func parseExplicitQuery(raw string) (Policy, string) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return Policy{}, "the query is not URL-encoded correctly"
	}
	var pairs [][2]string
	for k, vs := range q {
		for _, v := range vs {
			if k == "namespace" {
				for _, ns := range strings.Split(v, ",") {
					pairs = append(pairs, [2]string{k, strings.TrimSpace(ns)})
				}
				continue
			}
			pairs = append(pairs, [2]string{k, v})
		}
	}
	p, problem := policyOf(pairs, "query parameter")
	if problem == "" && p.Scope == nil {
		problem = "the scope parameter is required (e.g. ?scope=articles:read): " + AuthorizePath + " takes the scope from its caller and derives nothing"
	}
	return p, problem
}

// policyOf builds a Policy from key/value pairs; where names the source
// in messages. A key given twice (but namespace), scope together with
// resource, or a malformed value is refused.
func policyOf(pairs [][2]string, where string) (Policy, string) {
	var p Policy
	seen := map[string]bool{}
	for _, kv := range pairs {
		k, v := kv[0], kv[1]
		if seen[k] && k != "namespace" {
			return Policy{}, where + " " + k + " is given more than once"
		}
		seen[k] = true
		switch k {
		case "scope":
			sc, err := token.ParseScope(v)
			if err != nil {
				return Policy{}, where + " scope: " + err.Error()
			}
			p.Scope = &sc
		case "resource":
			if !token.ValidResource(v) || v == token.Wildcard {
				return Policy{}, where + " resource " + quoted(v) + " must be lower-case letters, digits, '.', '_' or '-'"
			}
			p.Resource = v
		case "audience":
			if len(validation.IsDNS1123Label(v)) > 0 {
				return Policy{}, where + " audience " + quoted(v) + " must be a lower-case name such as content-api or admin"
			}
			p.Audience = v
		case "namespace":
			if v != "*" && len(validation.IsDNS1123Label(v)) > 0 {
				return Policy{}, where + " namespace " + quoted(v) + " is not a namespace name (or * for every namespace)"
			}
			p.Namespaces = append(p.Namespaces, v)
		default:
			return Policy{}, where + " " + quoted(k) + " is unknown: use scope, resource, audience or namespace"
		}
	}
	if p.Scope != nil && p.Resource != "" {
		return Policy{}, where + ": give scope or resource, not both"
	}
	return p, ""
}
