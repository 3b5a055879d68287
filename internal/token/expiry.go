package token

import "time"

// ExpiringSoonWindow is how long before expiry a token is "expiring soon",
// unless a fifth of its lifetime is shorter.
const ExpiringSoonWindow = 7 * day

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
