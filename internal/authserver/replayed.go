package authserver

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
)

// A replaced or revoked token presented again is a sign that it leaked
// (GitLab's reuse detection): it is refused as before, with the same
// answer, and also counted on every replica
// (apitoken_replaced_token_presented_total), kept per ApiToken
// (usage.presented) and recorded by an operator replica as a Warning
// Event ReplacedTokenPresented (presentedevent.go), reported to one by an
// auth-only replica.

// record is which of its ApiToken's recorded hashes an index entry is.
type record uint8

const (
	// recordCurrent: hash or pendingHash.
	recordCurrent record = iota
	// recordPrevious: previousHash, the replaced token in its grace.
	recordPrevious
	// recordRevoked: revokedHash.
	recordRevoked
	// recordReplaced: replacedHash, a replaced token past its grace.
	recordReplaced
)

// recordOf is which hash of r the hash encoded is; for a hash recorded
// twice, the one Record.Hashes puts last (the one the index keeps).
func recordOf(r lifecycle.Record, encoded string) record {
	switch encoded {
	case r.Revoked.Encoded:
		return recordRevoked
	case r.Current.Encoded, r.Pending.Encoded:
		return recordCurrent
	case r.Previous.Encoded:
		return recordPrevious
	}
	return recordReplaced
}

// Which token was presented again, as the Event and a usage report name it.
const (
	presentedReplaced = "replaced"
	presentedRevoked  = "revoked"
)

// again is a replaced or revoked token of id presented again; the zero
// value: none.
type again struct {
	id *Identity
	// token is presentedReplaced or presentedRevoked.
	token string
}

// presentedAgain says whether a hash of record rec, worth v now, of the
// ApiToken of id is a token presented again: any revoked hash (revokedHash,
// or every hash of a revoked ApiToken), and a replaced one that no longer
// verifies (previousHash past its grace, replacedHash). A current token
// that expired or went idle is not: it was never replaced.
func presentedAgain(rec record, v Verdict, id *Identity) again {
	switch {
	case v == Valid || id == nil:
		return again{}
	case v == Revoked:
		return again{id, presentedRevoked}
	case rec == recordPrevious, rec == recordReplaced:
		return again{id, presentedReplaced}
	}
	return again{}
}

// presentation is one refusal of a token presented again: which token,
// the client's address as the endpoint saw it ("" unknown), the door, and
// when (unix nanoseconds).
type presentation struct {
	token, client, endpoint string
	at                      int64
}

// markPresented keeps the last presentation; the same one again within a
// second changes nothing, so that a client hammering with an old token
// does not allocate per request.
func (u *usage) markPresented(tok, client, endpoint string, at int64) {
	if p := u.presented.Load(); p != nil && p.token == tok && p.client == client && p.endpoint == endpoint && at-p.at < int64(time.Second) {
		return
	}
	u.presented.Store(&presentation{token: tok, client: client, endpoint: endpoint, at: at})
}

// presentedDue returns the presentation not yet recorded or reported, or nil.
func (u *usage) presentedDue() *presentation {
	if p := u.presented.Load(); p != nil && p != u.presentedSent.Load() {
		return p
	}
	return nil
}

// presented counts and keeps a token presented again (d.again), seen at
// endpoint from the client of src; nothing when d is no such refusal.
func presented(endpoint string, d *Decision, src auditSource) {
	a := d.again
	if a.id == nil {
		return
	}
	replacedPresented.WithLabelValues(a.id.Namespace, a.id.Name).Inc()
	a.id.usage.markPresented(a.token, presentedFrom(src), endpoint, d.at.UnixNano())
}

// presentedFrom is the client's IP as the endpoint sees it: the address
// the proxy reported (proxyClient, envoySource: never a header a client
// wrote), else the peer that asked (the proxy, or the API server of a
// TokenReview); "" when neither is an IP address.
func presentedFrom(src auditSource) string {
	for _, s := range [...]string{src.client, src.peer} {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr().Unmap().String()
		}
		if a, err := netip.ParseAddr(s); err == nil {
			return a.Unmap().String()
		}
	}
	return ""
}

var replacedPresented = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "apitoken_replaced_token_presented_total",
	Help: "Replaced (past their grace) or revoked tokens presented again at the auth endpoint, and refused, by ApiToken: a sign that the token leaked.",
}, []string{"namespace", "name"})

func init() { metrics.Registry.MustRegister(replacedPresented) }
