package token

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	good, _ := Generate()
	for _, s := range []string{good, "", Prefix, "ghp_abc", good[:Length-1], strings.ToUpper(good), good + good} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Parse(s)
		if err == nil && (len(s) != Length || !strings.HasPrefix(s, Prefix)) {
			t.Fatalf("accepted a string of the wrong shape")
		}
		if err != nil && len(s) > 8 && strings.Contains(err.Error(), s) {
			t.Fatalf("error echoes the input")
		}
	})
}

// FuzzParseScope: what ParseScope accepts is exactly what the CRD's CEL
// rule accepts (read from the generated CRD), it round-trips and covers
// itself.
func FuzzParseScope(f *testing.F) {
	rule := crdScopeRule(f)
	for _, s := range []string{"articles:read", "*:*", "orders", ":", "a:b:c", "A:b", "a.b-c_d:publish", "table:data:read", "table:*:read",
		"articles:findOne", "a::b", "a:b:c:d:e:f:g:h:i:read", "*:*:*", strings.Repeat("a", 127) + ":r"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if (err == nil) != rule.MatchString(s) && len(s) <= MaxScopeLength {
			t.Fatalf("ParseScope(%q) = %v, but the CRD rule says %v", s, err, rule.MatchString(s))
		}
		if err != nil {
			return
		}
		if sc.String() != s {
			t.Fatalf("round trip %q -> %q", s, sc.String())
		}
		if !sc.Covers(sc) {
			t.Fatalf("scope %q does not cover itself", s)
		}
	})
}

// FuzzCovers: covering is transitive, so a grant never reaches through an
// intermediate scope what it does not reach directly.
func FuzzCovers(f *testing.F) {
	f.Add("*:*", "table:*:read", "table:data:find")
	f.Add("*:read", "articles:read", "articles:findOne")
	f.Add("table:*:*", "table:data:read", "table:data:findOne")
	f.Fuzz(func(t *testing.T, s1, s2, s3 string) {
		a, err1 := ParseScope(s1)
		b, err2 := ParseScope(s2)
		c, err3 := ParseScope(s3)
		if err1 == nil && err2 == nil && err3 == nil && a.Covers(b) && b.Covers(c) && !a.Covers(c) {
			t.Fatalf("%s covers %s covers %s, but not %s", s1, s2, s3, s3)
		}
	})
}

// crdScopeRule is the regular expression of the CRD's rule on spec.scopes.
func crdScopeRule(f *testing.F) *regexp.Regexp {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "tokens.apitoken.dev_apitokens.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	i := strings.Index(string(data), "must be resource[:sub-resource...]:action")
	m := regexp.MustCompile(`rule: self\.matches\('([^']+)'\)`).FindStringSubmatch(string(data[i:]))
	if i < 0 || m == nil {
		f.Fatal("no scope rule in the CRD")
	}
	return regexp.MustCompile(m[1])
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "30d", "unlimited", "36h", "1d12h30m", "0d", "-1d", "99999999999999999999d", "1h1d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, finite, err := ParseDuration(s)
		if err != nil {
			return
		}
		if finite && d <= 0 {
			t.Fatalf("accepted non-positive %q = %v", s, d)
		}
		if finite {
			if d2, err := ParseSpan(formatSpan(d)); err != nil || d2 != d {
				t.Fatalf("format round trip of %q: %v %v", s, d2, err)
			}
		}
	})
}
