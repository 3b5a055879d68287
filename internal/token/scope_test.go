package token

import (
	"strings"
	"testing"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

func TestParseScope(t *testing.T) {
	good := map[string]Scope{
		"articles:read":        {"articles", "read"},
		"orders:*":             {"orders", "*"},
		"*:read":               {"*", "read"},
		"*:*":                  {"*", "*"},
		"api.v2_items:publish": {"api.v2_items", "publish"},
		"a:b1":                 {"a", "b1"},
		"table:data:read":      {"table:data", "read"},
		"table:*:read":         {"table:*", "read"},
		"*:*:*":                {"*:*", "*"},
		"articles:findOne":     {"articles", "findOne"},
		"a:b:c:d:e:f:g:h:read": {"a:b:c:d:e:f:g:h", "read"},
	}
	for in, want := range good {
		got, err := ParseScope(in)
		if err != nil || got != want {
			t.Errorf("ParseScope(%q) = %v, %v; want %v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("String() = %q, want %q", got.String(), in)
		}
	}
	bad := map[string]string{
		"orders":                 "must be resource:action, e.g. orders:read",
		"":                       "must be resource:action",
		":read":                  `resource ""`,
		"Articles:read":          `resource "Articles"`,
		"-a:read":                `resource "-a"`,
		"a-:read":                `resource "a-"`,
		"articles:":              `action ""`,
		"articles:Read":          `action "Read"`,
		"articles:1read":         `action "1read"`,
		"articles:re-ad":         `action "re-ad"`,
		"a::read":                `resource "a:"`,
		":a:read":                `resource ":a"`,
		"a:B:read":               `resource "a:B"`,
		"a:b:c:d:e:f:g:h:i:read": `resource "a:b:c:d:e:f:g:h:i"`,
		"articles:find-one":      `action "find-one"`,
		"articles:FindOne":       `action "FindOne"`,
		"articles:read ":         `action "read "`,
	}
	for in, msg := range bad {
		_, err := ParseScope(in)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseScope(%q) = %v, want error containing %q", in, err, msg)
		}
	}
}

// TestCovers is the matching table of docs/scopes.md, row by row, read
// from the page.
func TestCovers(t *testing.T) {
	rows, err := testenv.MatchingTable()
	if err != nil || len(rows) < 25 {
		t.Fatalf("the matching table of docs/scopes.md: %d rows, %v", len(rows), err)
	}
	for _, c := range rows {
		g, err1 := ParseScope(c.Granted)
		r, err2 := ParseScope(c.Required)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s, %s: %v %v", c.Granted, c.Required, err1, err2)
		}
		if got := g.Covers(r); got != c.Covered {
			t.Errorf("%s covers %s = %v, want %v", c.Granted, c.Required, got, c.Covered)
		}
	}
}

func TestGrantedAndAllows(t *testing.T) {
	cases := []struct {
		typ    string
		scopes []string
		allow  []string
		deny   []string
	}{
		{TypeReadOnly, nil, []string{"articles:read", "orders:read"}, []string{"articles:create", "articles:delete", "articles:publish"}},
		{TypeFullAccess, nil, []string{"articles:read", "orders:delete", "x:publish"}, nil},
		{TypeCustom, []string{"articles:read", "orders:*"}, []string{"articles:read", "orders:delete"}, []string{"articles:create", "users:read"}},
		{TypeCustom, []string{"*:create"}, []string{"a:create"}, []string{"a:read"}},
	}
	for _, c := range cases {
		set, err := Granted(c.typ, c.scopes)
		if err != nil {
			t.Fatalf("Granted(%s, %v): %v", c.typ, c.scopes, err)
		}
		for _, a := range c.allow {
			req, _ := ParseScope(a)
			if !set.Allows(req) {
				t.Errorf("%s %v should allow %s", c.typ, c.scopes, a)
			}
		}
		for _, d := range c.deny {
			req, _ := ParseScope(d)
			if set.Allows(req) {
				t.Errorf("%s %v should deny %s", c.typ, c.scopes, d)
			}
		}
	}
	errs := []struct {
		typ    string
		scopes []string
		msg    string
	}{
		{TypeReadOnly, []string{"a:read"}, "only allowed with type custom"},
		{TypeFullAccess, []string{"a:read"}, "only allowed with type custom"},
		{TypeCustom, nil, "at least one scope"},
		{TypeCustom, []string{"a:read", "bad"}, "scopes[1]: must be resource:action"},
		{"admin", nil, `unknown type "admin"`},
	}
	for _, e := range errs {
		if _, err := Granted(e.typ, e.scopes); err == nil || !strings.Contains(err.Error(), e.msg) {
			t.Errorf("Granted(%s, %v) = %v, want %q", e.typ, e.scopes, err, e.msg)
		}
	}
	if got := (ScopeSet{{"a", "read"}, {"*", "*"}}).Strings(); strings.Join(got, ",") != "a:read,*:*" {
		t.Errorf("Strings = %v", got)
	}
}

func TestActionForMethod(t *testing.T) {
	for m, want := range map[string]string{
		"GET": "read", "HEAD": "read", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete",
		"OPTIONS": "", "PROPFIND": "", "READ": "", "get": "", "": "",
	} {
		got, ok := ActionForMethod(m)
		if got != want || ok != (want != "") {
			t.Errorf("ActionForMethod(%q) = %q, %v, want %q", m, got, ok, want)
		}
	}
}
