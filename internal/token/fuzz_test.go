package token

import (
	"strings"
	"testing"
	"time"
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

// FuzzPreviousValidUntil: whatever the grace, expiry and instant, a
// replaced token is never kept past the expiry it was issued with, and an
// expired one is never kept.
func FuzzPreviousValidUntil(f *testing.F) {
	f.Add(int64(0), int64(300), int64(3600), true)
	f.Add(int64(3600), int64(300), int64(3600), true)
	f.Add(int64(3300), int64(1800), int64(3600), true)
	f.Add(int64(100), int64(300), int64(0), false)
	f.Add(int64(100), int64(0), int64(3600), true)
	f.Fuzz(func(t *testing.T, nowSec, graceSec, expiresSec int64, finite bool) {
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		clamp := func(s int64) time.Duration { return time.Duration(s%(1<<32)) * time.Second }
		now, expires, grace := base.Add(clamp(nowSec)), base.Add(clamp(expiresSec)), clamp(graceSec)
		until, keep := PreviousValidUntil(now, grace, expires, finite)
		switch {
		case !keep:
			return
		case finite && !now.Before(expires):
			t.Fatalf("an expired token (expiry %v) kept at %v", expires, now)
		case finite && until.After(expires):
			t.Fatalf("kept until %v, past its expiry %v", until, expires)
		case until.After(now.Add(grace)) || !until.After(now):
			t.Fatalf("kept until %v: not within (now, now+grace] = (%v, %v]", until, now, now.Add(grace))
		}
	})
}
