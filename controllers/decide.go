package controllers

import (
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// secretState is what the token's Secret holds, compared with the record.
type secretState int

const (
	// secretAbsent: no Secret of that name.
	secretAbsent secretState = iota
	// secretForeign: a Secret of that name that this ApiToken does not own.
	secretForeign
	// secretMatchesCurrent: its token verifies against status.verification.hash.
	secretMatchesCurrent
	// secretMatchesPending: its token is the pending one (a crash between writes).
	secretMatchesPending
	// secretWellFormed: a well-formed token that matches no record, with a
	// plausible issue time (see plausibleIssuedAt).
	secretWellFormed
	// secretUntrusted: a well-formed token that matches no record, whose
	// issued-at annotation is missing or in the future: adopting it would
	// give it a lifetime longer than the spec allows.
	secretUntrusted
	// secretInvalid: no token, or a malformed one.
	secretInvalid
	// secretUnknownSalt: a secretUntrusted Secret whose seal names (by
	// SaltIDAnnotation) a salt the operator neither holds nor knows to be
	// replaced: its token may verify again once that salt is restored.
	secretUnknownSalt
)

// classifyToken compares the Secret's token (its view) with the
// verification record, in constant time.
func classifyToken(view tokenView, v *tokensv1alpha1.Verification) secretState {
	if !view.wellFormed {
		return secretInvalid
	}
	if v == nil {
		return secretWellFormed
	}
	d := view.digest
	if matches(d, v.Hash) {
		return secretMatchesCurrent
	}
	if matches(d, v.PendingHash) {
		return secretMatchesPending
	}
	return secretWellFormed
}

// maxClockSkew is how far in the future a Secret's issued-at may be and
// still be believed (clocks of replicas differ a little).
const maxClockSkew = lifecycle.MaxClockSkew

// plausibleIssuedAt reports whether a Secret's issued-at annotation could
// have been written by the operator by now: present, RFC 3339, and not in
// the future beyond maxClockSkew.
func plausibleIssuedAt(annotation string, now time.Time) bool {
	at, err := time.Parse(time.RFC3339, annotation)
	return err == nil && !at.After(now.Add(maxClockSkew))
}

func matches(d token.Digest, encoded string) bool {
	if encoded == "" {
		return false
	}
	want, err := token.DecodeDigest(encoded)
	return err == nil && d.Equal(want)
}

// actionKind is what a reconcile pass does to the token.
type actionKind int

const (
	// actSync: the token is fine; only status and Secret metadata are kept in step.
	actSync actionKind = iota
	// actConflict: the Secret belongs to someone else; touch nothing.
	actConflict
	// actRevoke: clear the records and empty the Secret.
	actRevoke
	// actPromote: the pending token reached the Secret; make it current.
	actPromote
	// actRecover: the record was lost; rebuild it from the Secret's token.
	actRecover
	// actIssue: mint a new token.
	actIssue
	// actHold: the token was recorded under a salt the operator neither
	// holds nor knows to be replaced; touch nothing and report it.
	actHold
	// actMint: mint a show-once token and seal it for its creator.
	actMint
	// actPickUp: check a show-once token's acknowledgement.
	actPickUp
	// actSaltEnded: a show-once token's salt was replaced; it cannot be
	// delivered again.
	actSaltEnded
	// actLeakEnded: a show-once token was presented as leaked; it is
	// revoked for good.
	actLeakEnded
)

// saltView is what decide needs of the salt: the current salt's ID and
// whether it replaced a given one (salt.State.Replaces).
type saltView struct {
	id       string
	replaced func(id string) bool
}

// action is a decision and its reason (also the condition and Event reason).
type action struct {
	kind   actionKind
	reason string
}

// decide picks what to do, first match wins: a revocation beats
// everything (recorded whatever the Secret); a foreign Secret blocks
// every other action; a record made under a salt that
// the current one did not replace is held, so that a lost or wrongly
// restored salt never re-issues (breaks) every token before a human said
// so; a token presented as leaked at the auth endpoint (current or
// pending) is replaced; a pending token found in the Secret is promoted; a lost record is
// rebuilt from the Secret, unless it records a revoked token (un-revoked:
// a new token, never the revoked one); then a new token is issued for a
// replaced salt, a missing or altered Secret, a new regenerate request, or
// the renewal time.
func decide(t *tokensv1alpha1.ApiToken, p policy, s secretState, salt saltView, now time.Time) action {
	v := t.Status.Verification
	hasRecord := v != nil && v.Hash != ""
	saltID := salt.id
	switch {
	case t.Spec.Revoked:
		return action{actRevoke, tokensv1alpha1.ReasonRevoked}
	case s == secretForeign:
		return action{actConflict, tokensv1alpha1.ReasonSecretConflict}
	case hasRecord && v.SaltID != "" && v.SaltID != saltID && !salt.replaced(v.SaltID),
		!hasRecord && s == secretUnknownSalt:
		return action{actHold, tokensv1alpha1.ReasonSaltMismatch}
	case leakOfCurrent(v):
		// Presented as leaked at the auth endpoint: refused already.
		return action{actIssue, tokensv1alpha1.ReasonLeakRevoked}
	case s == secretMatchesPending:
		return action{actPromote, v.PendingReason}
	case t.Status.Phase == tokensv1alpha1.PhaseRevoked,
		!hasRecord && v != nil && v.RevokedHash != "" && t.Status.IssuedAt == nil:
		// Revoked, then un-revoked (the second form once a pass since,
		// such as a conflict, moved the phase on).
		return action{actIssue, tokensv1alpha1.ReasonUnrevoked}
	case !hasRecord && v != nil && v.RevokedHash != "":
		// Cut while its Secret was not the operator's (see conflict); the
		// Secret is gone or the operator's again.
		return action{actIssue, tokensv1alpha1.ReasonSecretConflict}
	case !hasRecord && s == secretUntrusted:
		return action{actIssue, tokensv1alpha1.ReasonSecretUntrusted}
	case !hasRecord && s == secretWellFormed:
		return action{actRecover, tokensv1alpha1.ReasonRecovered}
	case !hasRecord && t.Status.IssuedAt == nil:
		return action{actIssue, tokensv1alpha1.ReasonGenerated}
	case hasRecord && v.SaltID != saltID:
		return action{actIssue, tokensv1alpha1.ReasonSaltRotated}
	case s == secretAbsent || !hasRecord:
		return action{actIssue, tokensv1alpha1.ReasonSecretMissing}
	case s != secretMatchesCurrent:
		return action{actIssue, tokensv1alpha1.ReasonSecretTampered}
	case regenerateRequested(t):
		return action{actIssue, tokensv1alpha1.ReasonRegenerated}
	case renewalDue(t, p, now):
		return action{actIssue, tokensv1alpha1.ReasonRotated}
	}
	return action{actSync, ""}
}

// regenerateRequested reports a regenerate annotation value not yet handled.
func regenerateRequested(t *tokensv1alpha1.ApiToken) bool {
	v := t.Annotations[tokensv1alpha1.RegenerateAnnotation]
	return v != "" && v != t.Status.LastHandledRegenerate
}

// renewalDue reports whether renewBefore asks for a new token at now.
func renewalDue(t *tokensv1alpha1.ApiToken, p policy, now time.Time) bool {
	return t.Status.IssuedAt != nil && p.RenewalDue(t.Status.IssuedAt.Time, now)
}

// keepsPrevious reports whether a token issued for reason leaves the
// previous one valid for the grace period. Only asked-for replacements do:
// tampering or un-revocation must cut the old token at once. A salt
// rotation keeps it only during a planned rotation's overlap (see
// saltGrace).
func keepsPrevious(reason string) bool {
	return reason == tokensv1alpha1.ReasonRegenerated || reason == tokensv1alpha1.ReasonRotated
}

// saltGrace returns how long a token recorded under recordedID and
// replaced at now because the salt changed stays valid: until the planned
// rotation's overlap ends if recordedID is its previous salt (the index
// verifies it with that salt until then), but never longer than maxOverlap
// (the operator's --salt-overlap: a deadline written by someone who knows
// the salt cannot keep old tokens for longer); else 0 (an emergency
// rotation, or a salt replaced without one: cut at once).
func saltGrace(recordedID, previousID string, overlapUntil, now time.Time, maxOverlap time.Duration) time.Duration {
	if recordedID == "" || recordedID != previousID || !now.Before(overlapUntil) {
		return 0
	}
	return min(overlapUntil.Sub(now), max(maxOverlap, 0))
}

// lifetimeStart returns the issue time of a token issued for reason: now
// when the reason starts a new lifetime (first token, regeneration,
// rotation, un-revocation), else the current token's issue time, so that a
// deleted, edited or disowned Secret, a salt change or a leak revocation
// never extends, nor revives, a token's lifetime.
func lifetimeStart(t *tokensv1alpha1.ApiToken, reason string, now time.Time) time.Time {
	switch reason {
	case tokensv1alpha1.ReasonSecretMissing, tokensv1alpha1.ReasonSecretTampered, tokensv1alpha1.ReasonSaltRotated, tokensv1alpha1.ReasonSecretUntrusted,
		tokensv1alpha1.ReasonSecretConflict, tokensv1alpha1.ReasonLeakRevoked:
		if t.Status.IssuedAt != nil {
			return t.Status.IssuedAt.Time
		}
	}
	return now
}

// nextDeadline returns the earliest future instant at which the token's
// state changes by itself: expiry, end of grace, renewal, expiring-soon.
// It returns the zero time when nothing is scheduled.
func nextDeadline(t *tokensv1alpha1.ApiToken, p policy, now time.Time) time.Time {
	var next time.Time
	consider := func(at time.Time) {
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if t.Spec.Revoked || t.Status.IssuedAt == nil {
		return next
	}
	if _, by := lifecycle.Pickup(t, now); !by.IsZero() {
		consider(by) // the end of a show-once token's pickup window
	}
	issued := t.Status.IssuedAt.Time
	if exp, finite := p.ExpiresAt(issued); finite {
		consider(exp)
		consider(token.ExpiringSoonAt(issued, exp))
	}
	if at, ok := p.RenewAt(issued); ok {
		consider(at)
	}
	// Expiry, idleness and the end of a grace period, as Assess says.
	if at, ok := lifecycle.Assess(t, p).Next(now); ok {
		consider(at)
	}
	return next
}
