package authserver

import (
	"time"

	"golang.org/x/time/rate"
)

// clientLimits is a replica-wide bucket and one bucket per client address
// (at most maxClients, pruned when full): a request is admitted only when
// both hold a token. The zero value is ready; the caller holds its lock.
type clientLimits struct {
	allRate, peerRate   rate.Limit
	allBurst, peerBurst int
	all                 *rate.Limiter
	byClient            map[string]*rate.Limiter
}

// admit takes one request from the replica's bucket and addr's, or none
// and says how long until both hold one.
func (l *clientLimits) admit(addr string, now time.Time) time.Duration {
	if l.all == nil {
		l.all = rate.NewLimiter(l.allRate, l.allBurst)
	}
	if l.byClient == nil || len(l.byClient) >= maxClients {
		l.byClient = pruneClients(l.byClient, now)
	}
	peer, ok := l.byClient[addr]
	if !ok {
		peer = rate.NewLimiter(l.peerRate, l.peerBurst)
		l.byClient[addr] = peer
	}
	mine, all := peer.ReserveN(now, 1), l.all.ReserveN(now, 1)
	if wait := max(mine.DelayFrom(now), all.DelayFrom(now)); wait > 0 {
		mine.CancelAt(now)
		all.CancelAt(now)
		return wait
	}
	return 0
}

// pruneClients drops the buckets that are full again (their clients made
// no review for a while); if none was, every one.
func pruneClients(m map[string]*rate.Limiter, now time.Time) map[string]*rate.Limiter {
	for addr, l := range m {
		if l.TokensAt(now) >= float64(l.Burst()) {
			delete(m, addr)
		}
	}
	if m == nil || len(m) >= maxClients {
		return map[string]*rate.Limiter{}
	}
	return m
}
