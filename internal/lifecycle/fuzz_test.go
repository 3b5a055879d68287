package lifecycle

import (
	"testing"
	"time"
)

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
