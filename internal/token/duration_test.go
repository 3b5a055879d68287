package token

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"7d":       7 * day,
		"30d":      30 * day,
		"90d":      90 * day,
		"365d":     365 * day,
		"36h":      36 * time.Hour,
		"90m":      90 * time.Minute,
		"1d12h":    36 * time.Hour,
		"1d1h1m":   day + time.Hour + time.Minute,
		"106751d":  106751 * day,
		"2562047h": 2562047 * time.Hour,
		// Kubernetes/Go duration strings (cert-manager's duration: 2160h).
		"2160h":     90 * day,
		"30s":       30 * time.Second,
		"1h30m":     90 * time.Minute,
		"2160h0m0s": 90 * day,
		"0h1s":      time.Second,
		"1d0h0m1s":  day + time.Second,
		"3600s":     time.Hour,
	}
	for in, want := range good {
		d, finite, err := ParseDuration(in)
		if err != nil || !finite || d != want {
			t.Errorf("ParseDuration(%q) = %v, %v, %v; want %v", in, d, finite, err, want)
		}
	}
	if d, finite, err := ParseDuration("unlimited"); err != nil || finite || d != 0 {
		t.Errorf("unlimited = %v %v %v", d, finite, err)
	}
	bad := map[string]string{
		"":                      "empty",
		"0d":                    "must be positive",
		"00d":                   "without leading zeros",
		"0h0m0s":                "must be positive (at least 1s)",
		"07d":                   "without leading zeros",
		"500ms":                 `unit "ms"`,
		"1m30ms":                `unit "ms"`,
		"1s1m":                  `unit "m"`,
		"-1d":                   "must be a positive span",
		"+1d":                   "must be a positive span",
		"1w":                    `unit "w"`,
		"1h1d":                  `unit "d"`,
		"1d1d":                  `unit "d"`,
		"30":                    "must be a positive span",
		"d":                     "must be a positive span",
		"1.5d":                  "use whole numbers",
		"1.5h":                  "use whole numbers",
		"Unlimited":             "must be a positive span",
		"30d ":                  "must be a positive span",
		"106752d":               "too long",
		"99999999999999999999d": "too long",
		"106751d1000000m":       "too long",
	}
	for in, msg := range bad {
		_, _, err := ParseDuration(in)
		if err == nil || !strings.Contains(err.Error(), msg) || !errors.Is(err, ErrDuration) {
			t.Errorf("ParseDuration(%q) = %v, want error containing %q", in, err, msg)
		}
	}
	if _, err := ParseSpan("unlimited"); err == nil {
		t.Error("ParseSpan accepted unlimited")
	}
}

func TestFormatSpanRoundTrip(t *testing.T) {
	for _, s := range []string{"7d", "36h", "1d12h", "5m", "1d1h1m", "2h30m"} {
		d, err := ParseSpan(s)
		if err != nil {
			t.Fatal(err)
		}
		want := s
		if s == "36h" {
			want = "1d12h"
		}
		if got := formatSpan(d); got != want {
			t.Errorf("formatSpan(%v) = %q, want %q", d, got, want)
		}
	}
	if formatSpan(time.Millisecond) != "0s" || formatSpan(90*time.Second) != "1m30s" {
		t.Error("sub-second or seconds span")
	}
}

func TestExpiryMath(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := issued.Add(30 * day)
	// 30 days: a fifth is 6 days, shorter than 7.
	if got := ExpiringSoonAt(issued, exp); !got.Equal(exp.Add(-6 * day)) {
		t.Fatalf("ExpiringSoonAt(30d) = %v", got)
	}
	// 90 days: 7 days.
	exp90 := issued.Add(90 * day)
	if got := ExpiringSoonAt(issued, exp90); !got.Equal(exp90.Add(-7 * day)) {
		t.Fatalf("ExpiringSoonAt(90d) = %v", got)
	}
	// 1 hour: 12 minutes.
	exp1h := issued.Add(time.Hour)
	if got := ExpiringSoonAt(issued, exp1h); !got.Equal(exp1h.Add(-12 * time.Minute)) {
		t.Fatalf("ExpiringSoonAt(1h) = %v", got)
	}
}

// formatSpan writes d the way ParseSpan reads it, dropping fractions of a
// second: the inverse the round-trip tests need.
func formatSpan(d time.Duration) string {
	if d < time.Second {
		return "0s"
	}
	out := ""
	if days := d / day; days > 0 {
		out += fmt.Sprintf("%dd", days)
		d -= days * day
	}
	if h := d / time.Hour; h > 0 {
		out += fmt.Sprintf("%dh", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		out += fmt.Sprintf("%dm", m)
		d -= m * time.Minute
	}
	if sec := d / time.Second; sec > 0 {
		out += fmt.Sprintf("%ds", sec)
	}
	return out
}
