package authserver

import (
	"net/url"
	"strconv"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// policyCacheSize bounds the parsed policy segments kept: a proxy's
// operator configures a handful, and a caller that sends endless new ones
// only gets them parsed each time.
const policyCacheSize = 256

// maxSegments bounds segments=: how many path segments a route's resource
// spans.
const maxSegments = 16

// policyCache holds parsed policy segments (valid or not), so that the hot
// path parses a route's policy once. Cached Policies are shared and never
// modified.
var policyCache = struct {
	sync.RWMutex
	m map[string]cachedPolicy
}{m: map[string]cachedPolicy{}}

type cachedPolicy struct {
	p       Policy
	problem string
}

// parsePolicySegment is parsePolicySegmentUncached through policyCache.
func parsePolicySegment(seg string) (Policy, string) {
	policyCache.RLock()
	c, ok := policyCache.m[seg]
	policyCache.RUnlock()
	if ok {
		return c.p, c.problem
	}
	p, problem := parsePolicySegmentUncached(seg)
	policyCache.Lock()
	if len(policyCache.m) < policyCacheSize {
		policyCache.m[strings.Clone(seg)] = cachedPolicy{p, problem}
	}
	policyCache.Unlock()
	return p, problem
}

// parsePolicySegment reads a route policy from one path segment of the
// auth URL that the proxy's operator configured, such as
// "namespace=shop+billing,resource=orders,segments=2" in /v1/ext-authz/<policy>/...
// "" and "-" are the empty policy. The segment is taken verbatim: a
// percent-encoding is refused, so that one policy has one spelling.
func parsePolicySegmentUncached(seg string) (Policy, string) {
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
			return Policy{}, "the route policy " + quoted(seg) + " must be - or key=value pairs joined by ',' (scope, resource, segments, audience, namespace), e.g. namespace=shop,resource=orders"
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
// It allocates only for escaped values and for namespaces.
func parseExplicitQuery(raw string) (Policy, string) {
	var pairs [4][2]string
	list := pairs[:0]
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") || strings.ContainsAny(v, "%+") {
			uk, err1 := url.QueryUnescape(k)
			uv, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				return Policy{}, "the query is not URL-encoded correctly"
			}
			k, v = uk, uv
		}
		if k == "namespace" {
			for ns := range strings.SplitSeq(v, ",") {
				list = append(list, [2]string{k, strings.TrimSpace(ns)})
			}
			continue
		}
		list = append(list, [2]string{k, v})
	}
	p, problem := policyOf(list, "query parameter")
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
	var seenScope, seenResource, seenAudience, seenSegments bool
	for _, kv := range pairs {
		k, v := kv[0], kv[1]
		var seen *bool
		switch k {
		case "scope":
			seen = &seenScope
		case "resource":
			seen = &seenResource
		case "audience":
			seen = &seenAudience
		case "segments":
			seen = &seenSegments
		}
		if seen != nil {
			if *seen {
				return Policy{}, where + " " + k + " is given more than once"
			}
			*seen = true
		}
		switch k {
		case "scope":
			sc, err := token.ParseScope(v)
			if err != nil {
				return Policy{}, where + " scope: " + err.Error()
			}
			p.Scope = &sc
		case "resource":
			if !token.Concrete(v) {
				return Policy{}, where + " resource " + quoted(v) + " must be parts joined by ':' (such as orders or table:data), each lower-case letters, digits, '.', '_' or '-'"
			}
			p.Resource = v
		case "segments":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxSegments || v != strconv.Itoa(n) {
				return Policy{}, where + " segments " + quoted(v) + " must be a number of path segments from 1 to " + strconv.Itoa(maxSegments)
			}
			p.Segments = n
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
			return Policy{}, where + " " + quoted(k) + " is unknown: use scope, resource, segments, audience or namespace"
		}
	}
	if p.Scope != nil && (p.Resource != "" || p.Segments != 0) {
		return Policy{}, where + ": give scope, or resource and segments, not both"
	}
	return p, ""
}
