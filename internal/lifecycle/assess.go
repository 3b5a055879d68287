package lifecycle

import (
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// Worth is what a recorded hash is worth at an instant.
type Worth uint8

const (
	// Valid: the hash verifies.
	Valid Worth = iota
	// Expired: its lifetime or its grace period is over, or the spec that
	// says when it ends does not parse.
	Expired
	// Inactive: it was not used for its idleTimeout.
	Inactive
	// Revoked: revoked, or its ApiToken's deletion was asked for.
	Revoked
)

// Standing is what one recorded hash is worth at every instant, packed
// for an index: Worth (for good when it is Expired or Revoked), then
// Inactive from Idle on, then Expired from Expires on (unix nanoseconds;
// 0: never). An expiry wins over idleness once both have passed.
type Standing struct {
	Worth   Worth
	Idle    int64
	Expires int64
}

// At returns what s is worth at now (unix nanoseconds). A deadline holds
// from its instant on.
func (s Standing) At(now int64) Worth {
	switch {
	case s.Worth == Expired || s.Worth == Revoked:
		return s.Worth
	case s.Expires != 0 && now >= s.Expires:
		return Expired
	case s.Worth == Inactive || (s.Idle != 0 && now >= s.Idle):
		return Inactive
	}
	return Valid
}

// Reached reports whether deadline holds at now: from its instant on, as
// every deadline of a Standing does.
func Reached(deadline, now time.Time) bool {
	return Standing{Expires: deadline.UnixNano()}.WorthAt(now) == Expired
}

// WorthAt is At for a time.Time.
func (s Standing) WorthAt(now time.Time) Worth { return s.At(now.UnixNano()) }

// Next returns the first instant after now at which s changes by itself,
// and false when it never does.
func (s Standing) Next(now time.Time) (time.Time, bool) {
	n := now.UnixNano()
	var next int64
	for _, at := range [...]int64{s.Idle, s.Expires} {
		if at > n && (next == 0 || at < next) && s.At(at) != s.At(n) {
			next = at
		}
	}
	if next == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, next).UTC(), true
}

// End returns when s stops being valid: ended is true and at zero when it
// is not valid at all (not even before any deadline), finite false when it
// never ends.
func (s Standing) End() (at time.Time, finite bool) {
	if s.Worth != Valid {
		return time.Time{}, true
	}
	end := s.Expires
	if s.Idle != 0 && (end == 0 || s.Idle < end) {
		end = s.Idle
	}
	if end == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, end).UTC(), true
}

// Deadline returns the instant from which s is inactive (ok false: it
// never goes idle by a deadline).
func (s Standing) Deadline() (at time.Time, ok bool) {
	if s.Idle == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, s.Idle).UTC(), true
}

// and returns the standing that is worth the worse of s and o at every
// instant: the earlier of each deadline, and the stronger Worth (revoked,
// then expired, then inactive, then valid).
func (s Standing) and(o Standing) Standing {
	earlier := func(a, b int64) int64 {
		if a == 0 || (b != 0 && b < a) {
			return b
		}
		return a
	}
	s.Idle, s.Expires = earlier(s.Idle, o.Idle), earlier(s.Expires, o.Expires)
	if rank[o.Worth] > rank[s.Worth] {
		s.Worth = o.Worth
	}
	return s
}

// rank orders Worth by strength for and.
var rank = [...]int{Valid: 0, Inactive: 1, Expired: 2, Revoked: 3}

// Hash is one hash an ApiToken's status records, and its standing.
type Hash struct {
	// Encoded is the hash as the status records it; "": none recorded.
	Encoded string
	Standing
}

// Record is what each hash of an ApiToken's verification record is worth.
type Record struct {
	// Current is status.verification.hash; Pending is its pendingHash
	// (worth what the current one is: it becomes the current one).
	Current, Pending Hash
	// Previous is the replaced hash while its grace runs: valid until
	// previousValidUntil (never past its own expiry: PreviousValidUntil).
	// Without a previousValidUntil it is the zero Hash.
	Previous Hash
	// Revoked is revokedHash: revoked for good.
	Revoked Hash
	// Replaced is replacedHash: a token replaced by a regeneration whose
	// grace is over (or had none), expired for good and kept only to
	// report it presented again.
	Replaced Hash
	// EndsGrace: a use of Current would end Previous's grace
	// (spec.rotation.graceUntilNewTokenUsed, and no first use recorded
	// yet), so a replica records such a use apart (FirstUse decides).
	EndsGrace bool
}

// Hashes returns the hashes of r that are recorded, in the order an index
// takes them (a later one wins for a hash recorded twice): replaced,
// previous, pending, current, revoked.
func (r Record) Hashes() []Hash {
	out := make([]Hash, 0, 5)
	for _, h := range [...]Hash{r.Replaced, r.Previous, r.Pending, r.Current, r.Revoked} {
		if h.Encoded != "" {
			out = append(out, h)
		}
	}
	return out
}

// Next returns the first instant after now at which a hash of r changes
// worth by itself (ok false: none does).
func (r Record) Next(now time.Time) (next time.Time, ok bool) {
	for _, h := range [...]Hash{r.Previous, r.Pending, r.Current} {
		if at, found := h.Next(now); found && (!ok || at.Before(next)) {
			next, ok = at, true
		}
	}
	return next, ok
}

// Assess says what each hash at's status records is worth at every
// instant under s, the parsed spec (ParseSpec). It is the one rule:
//
//   - A revoked spec or a requested deletion revokes every hash, and
//     revokedHash is revoked for good; replacedHash is expired for good.
//   - A spec whose spans do not parse (!s.Readable()) makes every other
//     hash expired until it parses again: fail closed.
//   - The current (and pending) hash is expired for good once the status
//     records phase Expired, inactive once it records Inactive (until it
//     expires), and otherwise valid until the earliest of the expiresAt
//     its status records, its issue time plus spec.duration (a longer
//     duration never lengthens a life the status records) and its
//     idleTimeout's deadline (ByIdle).
//   - A show-once token's hashes (spec.showOnce) are expired until its
//     creator picked it up within the pickup window
//     (status.showOnce.pickedUpAt before pickupBy: see Pickup); one that
//     was not picked up in time stays so for good.
//   - The previous hash is valid until previousValidUntil, or until the
//     current one's first recorded use (firstUsedAt,
//     graceUntilNewTokenUsed: see FirstUse) if that is earlier. Once
//     recorded, that use ends the grace whatever the spec says later.
//   - A hash a leak revocation names (LeakRevoked) is revoked.
//
// Whatever the time, a hash's worth comes from Standing.At.
func Assess(at *tokensv1alpha1.ApiToken, s Spec) Record {
	st := &at.Status
	v := st.Verification
	if v == nil {
		return Record{}
	}
	var current Standing
	switch st.Phase {
	case tokensv1alpha1.PhaseExpired:
		current.Worth = Expired
	case tokensv1alpha1.PhaseInactive:
		current.Worth = Inactive
	}
	if st.ExpiresAt != nil {
		current.Expires = st.ExpiresAt.UnixNano()
	}
	if st.IssuedAt != nil {
		current = current.and(s.ByDuration(st.IssuedAt.Time))
	}
	current = current.and(s.ByIdle(st))
	var previous Standing
	if v.PreviousValidUntil != nil {
		previous.Expires = v.PreviousValidUntil.UnixNano()
		if u := v.FirstUsedAt; u != nil && u.UnixNano() < previous.Expires {
			previous.Expires = u.UnixNano()
		}
	}
	if !s.readable || !pickedUp(at) {
		current, previous = Standing{Worth: Expired}, Standing{Worth: Expired}
	}
	if at.Spec.Revoked || at.DeletionTimestamp != nil {
		current, previous = Standing{Worth: Revoked}, Standing{Worth: Revoked}
	}
	r := Record{
		Current:  Hash{v.Hash, current},
		Pending:  Hash{v.PendingHash, current},
		Revoked:  Hash{v.RevokedHash, Standing{Worth: Revoked}},
		Replaced: Hash{v.ReplacedHash, Standing{Worth: Expired}},
	}
	if v.PreviousValidUntil != nil {
		r.Previous = Hash{v.PreviousHash, previous}
	}
	for _, h := range [...]*Hash{&r.Current, &r.Pending, &r.Previous} {
		if LeakRevoked(v, h.Encoded) {
			h.Standing = Standing{Worth: Revoked}
		}
	}
	if v.PreviousValidUntil != nil {
		r.EndsGrace = r.Current.Worth == Valid && s.GraceUntilUsed && v.PreviousHash != "" && v.Hash != "" && v.FirstUsedAt == nil && r.Previous.Worth == Valid
	}
	return r
}

// FirstUse says what a replica's use, at when, of the hash encoded
// records for at under s: the first use of the current token, which ends
// the previous one's grace (graceUntilNewTokenUsed). It is one when encoded
// is the hash at's status records as current (a use of the previous one,
// which clients send during the grace, never counts, nor one of a hash
// that was current before), no first use is recorded yet (Record.
// EndsGrace), and at when the current hash is valid and the previous one
// still in its grace. It is recorded as when, or as the current token's
// issue time if when is earlier (a replica's clock behind the
// operator's). ok false: nothing to record.
func FirstUse(at *tokensv1alpha1.ApiToken, s Spec, encoded string, when time.Time) (time.Time, bool) {
	v := at.Status.Verification
	if v == nil || encoded == "" || encoded != v.Hash {
		return time.Time{}, false
	}
	r := Assess(at, s)
	if !r.EndsGrace || r.Current.WorthAt(when) != Valid || r.Previous.WorthAt(when) != Valid {
		return time.Time{}, false
	}
	if issued := at.Status.IssuedAt; issued != nil && when.Before(issued.Time) {
		when = issued.Time
	}
	return when, true
}

// GraceEndedByUse returns the first use of at's current token that ended
// (or ends) its previous token's grace before previousValidUntil; ok false
// when none did, and the grace runs, or ran, its full length.
func GraceEndedByUse(at *tokensv1alpha1.ApiToken) (used time.Time, ok bool) {
	v := at.Status.Verification
	if v == nil || v.FirstUsedAt == nil || v.PreviousValidUntil == nil || !v.FirstUsedAt.Before(v.PreviousValidUntil) {
		return time.Time{}, false
	}
	return v.FirstUsedAt.UTC(), true
}

// CurrentEnd returns when at's current token stops being valid under s
// (finite false: never): at once (zero time) when it has no issue time or
// is not valid by Assess, else its Standing's End.
func CurrentEnd(at *tokensv1alpha1.ApiToken, s Spec) (time.Time, bool) {
	if at.Status.IssuedAt == nil {
		return time.Time{}, true
	}
	return Assess(at, s).Current.End()
}

// PreviousValidUntil returns until when a token replaced at now stays
// valid: the grace period from now, never past the replaced token's own
// end (end; finite false: it never ended). keep is false when nothing is
// kept: no grace, or the replaced token has already ended (end reached),
// so that a regeneration or a rotation never revives an ended token.
func PreviousValidUntil(now time.Time, grace time.Duration, end time.Time, finite bool) (until time.Time, keep bool) {
	var replaced Standing
	switch {
	case finite && end.IsZero():
		replaced.Worth = Expired
	case finite:
		replaced.Expires = end.UnixNano()
	}
	if grace <= 0 || replaced.WorthAt(now) != Valid {
		return time.Time{}, false
	}
	until = now.Add(grace)
	if finite && end.Before(until) {
		until = end
	}
	return until, true
}
