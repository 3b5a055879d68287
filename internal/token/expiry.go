package token

import "time"

// ExpiringSoonWindow is how long before expiry a token is "expiring soon",
// unless a fifth of its lifetime is shorter.
const ExpiringSoonWindow = 7 * day

// ExpiresAt returns issued + d for a finite duration; ok is false for an
// unlimited token, which never expires.
func ExpiresAt(issued time.Time, d time.Duration, finite bool) (t time.Time, ok bool) {
	if !finite {
		return time.Time{}, false
	}
	return issued.Add(d), true
}

// PreviousValidUntil returns until when a replaced token stays valid: the
// grace period from now, never past the replaced token's own expiry
// (expires, ok false: it never expired). keep is false when nothing is
// kept: no grace, or the replaced token has already expired, so that a
// regeneration or a rotation never revives an expired token.
func PreviousValidUntil(now time.Time, grace time.Duration, expires time.Time, ok bool) (until time.Time, keep bool) {
	if grace <= 0 || Expired(expires, ok, now) {
		return time.Time{}, false
	}
	until = now.Add(grace)
	if ok && expires.Before(until) {
		until = expires
	}
	return until, true
}

// IdleUntil returns when a token with idleTimeout idle (> 0) becomes
// inactive: idle after the later of its issue and its last use (lastUsed,
// ok false: never used).
func IdleUntil(issued time.Time, lastUsed time.Time, used bool, idle time.Duration) time.Time {
	from := issued
	if used && lastUsed.After(from) {
		from = lastUsed
	}
	return from.Add(idle)
}

// Expired reports whether a token expiring at expires (ok false: never) is
// expired at now. A token is invalid from its expiry instant on.
func Expired(expires time.Time, ok bool, now time.Time) bool {
	return ok && !now.Before(expires)
}

// RenewAt returns when a token expiring at expires is regenerated
// automatically with renewBefore.
func RenewAt(expires time.Time, renewBefore time.Duration) time.Time {
	return expires.Add(-renewBefore)
}

// ExpiringSoonAt returns when a token issued at issued and expiring at
// expires enters its expiring-soon window: 7 days before expiry, or a
// fifth of its lifetime before for tokens shorter than 35 days.
func ExpiringSoonAt(issued, expires time.Time) time.Time {
	window := expires.Sub(issued) / 5
	if window > ExpiringSoonWindow {
		window = ExpiringSoonWindow
	}
	return expires.Add(-window)
}
