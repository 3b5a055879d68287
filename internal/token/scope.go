package token

import (
	"fmt"
	"net/http"
	"strings"
)

// Token types, as spelled in spec.type.
const (
	TypeReadOnly   = "read-only"
	TypeFullAccess = "full-access"
	TypeCustom     = "custom"
)

// Well-known actions; any other lower-camel word (publish, findOne) is a
// custom action. Find and FindOne are Strapi's: reading a collection and
// reading one entry; Read covers both.
const (
	ActionRead    = "read"
	ActionFind    = "find"
	ActionFindOne = "findOne"
	ActionCreate  = "create"
	ActionUpdate  = "update"
	ActionDelete  = "delete"
)

// Wildcard matches any one part of a resource, or any action; a resource
// that is Wildcard alone matches every resource, however many parts.
const Wildcard = "*"

// Separator joins the parts of a scope: resource[:sub-resource...]:action.
const Separator = ":"

// MaxResourceParts bounds how deep a resource nests (table:data is 2).
const MaxResourceParts = 8

// MaxScopeLength bounds a scope, as the CRD bounds each of spec.scopes.
const MaxScopeLength = 128

// Scope is a resource and an action. The resource has one or more parts
// joined by Separator ("articles", "table:data"); any part, and the action,
// may be Wildcard.
type Scope struct {
	Resource string
	Action   string
}

// String returns resource:action.
func (s Scope) String() string { return s.Resource + Separator + s.Action }

// Covers reports whether s grants the required scope req:
//
//   - the action: s's is Wildcard or req's, or s's is read and req's is
//     find or findOne;
//   - the resource: s's is Wildcard alone (every resource), or it has as
//     many parts as req's and each part is Wildcard or req's part.
//
// A Wildcard in req is matched only by a Wildcard: requiring table:*:read
// asks for a grant over every table.
func (s Scope) Covers(req Scope) bool {
	return coversAction(s.Action, req.Action) && coversResource(s.Resource, req.Resource)
}

func coversAction(grant, req string) bool {
	return grant == Wildcard || grant == req ||
		grant == ActionRead && (req == ActionFind || req == ActionFindOne)
}

func coversResource(grant, req string) bool {
	if grant == Wildcard || grant == req {
		return true
	}
	for {
		g, gRest, gMore := strings.Cut(grant, Separator)
		r, rRest, rMore := strings.Cut(req, Separator)
		if gMore != rMore || (g != Wildcard && g != r) {
			return false
		}
		if !gMore {
			return true
		}
		grant, req = gRest, rRest
	}
}

// ParseScope parses "resource[:sub-resource...]:action": the last part is
// the action, the others name the resource. A resource part is "*" or
// lower-case letters, digits, '.', '_' and '-' (starting and ending with a
// letter or digit); an action is "*" or a lower-camel word (read, findOne).
func ParseScope(s string) (Scope, error) {
	if len(s) > MaxScopeLength {
		return Scope{}, fmt.Errorf("must be at most %d bytes", MaxScopeLength)
	}
	i := strings.LastIndex(s, Separator)
	if i < 0 {
		return Scope{}, fmt.Errorf("must be resource:action, e.g. %s:read", orExample(s))
	}
	resource, action := s[:i], s[i+1:]
	if !ValidResource(resource) {
		return Scope{}, fmt.Errorf("resource %q must be parts joined by ':' (at most %d), each * or lower-case letters, digits, '.', '_' or '-', e.g. articles:read or table:data:read", resource, MaxResourceParts)
	}
	if !validAction(action) {
		return Scope{}, fmt.Errorf("action %q must be * or a lower-camel word such as read, find, findOne, create, update, delete", action)
	}
	return Scope{Resource: resource, Action: action}, nil
}

func orExample(s string) string {
	if ValidResource(s) && s != Wildcard {
		return s
	}
	return "articles"
}

// ValidResource reports whether r can be the resource of a scope: at most
// MaxResourceParts parts joined by ':', each "*" or lower-case letters,
// digits, '.', '_' and '-' starting and ending with a letter or digit; at
// most MaxScopeLength bytes in all.
func ValidResource(r string) bool {
	if len(r) > MaxScopeLength {
		return false
	}
	for n := 1; ; n++ {
		part, rest, more := strings.Cut(r, Separator)
		if n > MaxResourceParts || !validPart(part) {
			return false
		}
		if !more {
			return true
		}
		r = rest
	}
}

// Concrete reports whether r names a resource without a Wildcard part, as
// a route or a path must.
func Concrete(r string) bool {
	return ValidResource(r) && !strings.Contains(r, Wildcard)
}

func validPart(p string) bool {
	if p == Wildcard {
		return true
	}
	if p == "" {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0 && i < len(p)-1:
		default:
			return false
		}
	}
	return true
}

func validAction(a string) bool {
	if a == Wildcard {
		return true
	}
	if a == "" || a[0] < 'a' || a[0] > 'z' {
		return false
	}
	for i := 1; i < len(a); i++ {
		if c := a[i]; (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// ScopeSet is what a token grants.
type ScopeSet []Scope

// Allows reports whether any scope of the set covers req.
func (ss ScopeSet) Allows(req Scope) bool {
	for _, s := range ss {
		if s.Covers(req) {
			return true
		}
	}
	return false
}

// Strings returns the scopes as resource:action strings.
func (ss ScopeSet) Strings() []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return out
}

// Granted returns the scopes a token of the given type grants: *:read for
// read-only, *:* for full-access, exactly scopes for custom. It refuses
// scopes on a non-custom type and a custom type without scopes.
func Granted(tokenType string, scopes []string) (ScopeSet, error) {
	switch tokenType {
	case TypeReadOnly, TypeFullAccess:
		if len(scopes) > 0 {
			return nil, fmt.Errorf("scopes are only allowed with type %s", TypeCustom)
		}
		if tokenType == TypeReadOnly {
			return ScopeSet{{Resource: Wildcard, Action: ActionRead}}, nil
		}
		return ScopeSet{{Resource: Wildcard, Action: Wildcard}}, nil
	case TypeCustom:
		if len(scopes) == 0 {
			return nil, fmt.Errorf("a %s token must list at least one scope", TypeCustom)
		}
		out := make(ScopeSet, 0, len(scopes))
		for i, s := range scopes {
			sc, err := ParseScope(s)
			if err != nil {
				return nil, fmt.Errorf("scopes[%d]: %w", i, err)
			}
			out = append(out, sc)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown type %q: must be %s, %s or %s", tokenType, TypeReadOnly, TypeFullAccess, TypeCustom)
	}
}

// ActionForMethod maps an HTTP method to the action it needs: GET and HEAD
// read, POST creates, PUT and PATCH update, DELETE deletes. Any other
// method (OPTIONS, TRACE, a custom or mis-cased verb) reports ok false:
// the auth endpoint refuses what it cannot map rather than guess, so a
// method spelled "READ" can never borrow the read action.
func ActionForMethod(method string) (action string, ok bool) {
	switch method {
	case http.MethodGet, http.MethodHead:
		return ActionRead, true
	case http.MethodPost:
		return ActionCreate, true
	case http.MethodPut, http.MethodPatch:
		return ActionUpdate, true
	case http.MethodDelete:
		return ActionDelete, true
	}
	return "", false
}
