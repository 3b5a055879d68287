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
