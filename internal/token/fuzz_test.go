package token

import (
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

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"articles:read", "*:*", "orders", ":", "a:b:c", "A:b", "a.b-c_d:publish"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
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
