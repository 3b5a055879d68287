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

// Well-known actions; any other lower-case word is a custom verb.
const (
	ActionRead   = "read"
	ActionCreate = "create"
	ActionUpdate = "update"
	ActionDelete = "delete"
)

// Wildcard matches any resource or any action.
const Wildcard = "*"

// Scope is a resource:action pair; either part may be Wildcard.
type Scope struct {
	Resource string
	Action   string
}

// String returns resource:action.
func (s Scope) String() string { return s.Resource + ":" + s.Action }

// Covers reports whether s grants the required scope req.
func (s Scope) Covers(req Scope) bool {
	return (s.Resource == Wildcard || s.Resource == req.Resource) &&
		(s.Action == Wildcard || s.Action == req.Action)
}

// ParseScope parses "resource:action". A resource is "*" or lower-case
// letters, digits, '.', '_' and '-' (starting and ending with a letter or
// digit); an action is "*" or a lower-case word.
func ParseScope(s string) (Scope, error) {
	resource, action, ok := strings.Cut(s, ":")
	if !ok {
		return Scope{}, fmt.Errorf("must be resource:action, e.g. %s:read", orExample(s))
	}
	if !ValidResource(resource) {
		return Scope{}, fmt.Errorf("resource %q must be * or lower-case letters, digits, '.', '_' or '-', e.g. articles:read", resource)
	}
	if !validAction(action) {
		return Scope{}, fmt.Errorf("action %q must be * or a lower-case word such as read, create, update, delete", action)
	}
	return Scope{Resource: resource, Action: action}, nil
}

func orExample(s string) string {
	if ValidResource(s) && s != Wildcard {
		return s
	}
	return "articles"
}

// ValidResource reports whether r can be the resource of a scope: "*" or
// lower-case letters, digits, '.', '_' and '-', starting and ending with a
// letter or digit, at most 120 bytes.
func ValidResource(r string) bool {
	if r == Wildcard {
		return true
	}
	if r == "" || len(r) > 120 {
		return false
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0 && i < len(r)-1:
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
	if a == "" || len(a) > 64 || a[0] < 'a' || a[0] > 'z' {
		return false
	}
	for i := 1; i < len(a); i++ {
		if c := a[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
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
