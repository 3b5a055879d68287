package controllers

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// blocker is a reason the token cannot be delivered, with a message for
// the Ready condition; the zero value means none.
type blocker struct {
	reason  string
	message string
}

// computeStatus derives phase, conditions, expiresAt and secretRef from the
// spec and the verification record at now. It is the one place where the
// phase is decided. It also moves a previous hash whose grace has ended
// to replacedHash (it never verifies again; kept to report it presented).
//
// died is the phase (Expired or Inactive) in which the current token
// already ended, or "": a token that expired or went idle stays so, with
// its expiresAt, until a new token is issued, whatever the spec says now
// (a longer duration or a removed idleTimeout never revives it).
func computeStatus(t *tokensv1alpha1.ApiToken, p policy, b blocker, died tokensv1alpha1.Phase, now time.Time) {
	st := &t.Status
	st.ObservedGeneration = t.Generation
	st.SecretRef = &tokensv1alpha1.SecretReference{Name: t.SecretName()}
	held, revoked := "Secret "+t.SecretName()+" holds a valid token", "The token was revoked and removed from the Secret"
	renew := "annotate " + tokensv1alpha1.RegenerateAnnotation + " to issue a new one"
	if t.Spec.ShowOnce != nil {
		st.SecretRef = nil // no Secret ever holds a show-once token
		held, revoked = "The show-once token was picked up and is valid", "The show-once token was revoked"
		renew = "a show-once token is not regenerated: create a new ApiToken"
	}
	if v := st.Verification; v != nil && v.PreviousValidUntil != nil && lifecycle.Assess(t, p).Previous.WorthAt(now) != lifecycle.Valid {
		v.ReplacedHash, v.PreviousHash, v.PreviousValidUntil = v.PreviousHash, "", nil
	}
	// A spec the operator cannot read says nothing of when the token
	// ends: the recorded expiresAt stays (the auth endpoint refuses a token
	// whose duration does not parse).
	readable := b.reason != tokensv1alpha1.ReasonInvalidSpec
	if readable && (died != tokensv1alpha1.PhaseExpired || st.ExpiresAt == nil) {
		st.ExpiresAt = nil
		if st.IssuedAt != nil {
			if exp, finite := p.ExpiresAt(st.IssuedAt.Time); finite {
				st.ExpiresAt = &metav1.Time{Time: exp}
			}
		}
	}
	// What the current token is worth now, with the phase it already
	// ended in (died) as the status records it.
	view := *t
	view.Status.Phase = died
	worth := lifecycle.Assess(&view, p).Current.WorthAt(now)

	ready := metav1.Condition{Type: tokensv1alpha1.ConditionReady, ObservedGeneration: t.Generation}
	soon := metav1.Condition{
		Type: tokensv1alpha1.ConditionExpiringSoon, Status: metav1.ConditionFalse,
		Reason: tokensv1alpha1.ReasonNotExpiringSoon, ObservedGeneration: t.Generation,
		Message: "The token never expires",
	}
	if st.ExpiresAt != nil {
		soon.Message = "The token expires at " + st.ExpiresAt.UTC().Format(time.RFC3339)
	}
	hasRecord := st.Verification != nil && st.Verification.Hash != ""
	switch {
	case b.reason != "":
		st.Phase = tokensv1alpha1.PhaseFailed
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, b.reason, b.message
	case t.Spec.Revoked:
		st.Phase = tokensv1alpha1.PhaseRevoked
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, tokensv1alpha1.ReasonRevoked, revoked
		soon.Message = "The token was revoked: it is refused whatever its expiry"
	case !hasRecord:
		st.Phase = tokensv1alpha1.PhasePending
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "Pending", "No token has been issued yet"
		soon.Message = "No token has been issued yet"
	case pickupStatus(t, &ready, now):
		// A show-once token not picked up: pickupStatus said so.
	case worth == lifecycle.Expired:
		st.Phase = tokensv1alpha1.PhaseExpired
		ready.Status, ready.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonExpired
		ready.Message = fmt.Sprintf("The token expired at %s; %s", st.ExpiresAt.UTC().Format(time.RFC3339), renew)
	case worth == lifecycle.Inactive:
		st.Phase = tokensv1alpha1.PhaseInactive
		ready.Status, ready.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonInactive
		ready.Message = "The token was not used for its idleTimeout and is refused; " + renew
	default:
		st.Phase = tokensv1alpha1.PhaseActive
		ready.Status, ready.Reason = metav1.ConditionTrue, tokensv1alpha1.ReasonActive
		ready.Message = held
		if st.ExpiresAt != nil && !now.Before(token.ExpiringSoonAt(st.IssuedAt.Time, st.ExpiresAt.Time)) {
			soon.Status, soon.Reason = metav1.ConditionTrue, tokensv1alpha1.ReasonExpiringSoon
			soon.Message = "The token expires at " + st.ExpiresAt.UTC().Format(time.RFC3339)
		}
	}
	setCondition(st, ready, now)
	setCondition(st, soon, now)
}

// diedAs returns the phase in which t's current token ended (Expired or
// Inactive) according to base, t's status before this pass: recorded so,
// or past the expiresAt recorded then (a spec edit that lands before the
// reconciler saw the expiry revives nothing either). "" when the current
// token is not the one that ended.
func diedAs(t, base *tokensv1alpha1.ApiToken, now time.Time) tokensv1alpha1.Phase {
	bv, v := base.Status.Verification, t.Status.Verification
	switch {
	case bv == nil || v == nil || bv.Hash == "" || bv.Hash != v.Hash:
		return ""
	case base.Status.Phase == tokensv1alpha1.PhaseExpired || base.Status.Phase == tokensv1alpha1.PhaseInactive:
		return base.Status.Phase
	case base.Status.ExpiresAt != nil && lifecycle.Reached(base.Status.ExpiresAt.Time, now):
		return tokensv1alpha1.PhaseExpired
	}
	return ""
}

func setCondition(st *tokensv1alpha1.ApiTokenStatus, c metav1.Condition, now time.Time) {
	if old := meta.FindStatusCondition(st.Conditions, c.Type); old != nil && old.Status == c.Status {
		c.LastTransitionTime = old.LastTransitionTime
	} else {
		c.LastTransitionTime = metav1.NewTime(now)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

// recordFailure is the status of a pass that failed with err: as last
// written (what the pass computed but did not write is dropped, so that
// the order of writes stays as issue and recordRevocation keep it), with
// Ready False, ReconcileFailed and err as its message. A held cut keeps
// its Ready: CutHeld is the hold's record (guardCut), which a failed pass
// must not lift.
func recordFailure(s *pass, err error) {
	s.t.Status = *s.base.Status.DeepCopy()
	if readyReason(s.base) == tokensv1alpha1.ReasonCutHeld {
		return
	}
	setCondition(&s.t.Status, metav1.Condition{
		Type: tokensv1alpha1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: s.t.Generation,
		Reason: tokensv1alpha1.ReasonReconcileFailed, Message: err.Error(),
	}, s.now)
}

// readyReason is the reason of t's Ready condition, or "".
func readyReason(t *tokensv1alpha1.ApiToken) string {
	if c := meta.FindStatusCondition(t.Status.Conditions, tokensv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

func conditionTrue(t *tokensv1alpha1.ApiToken, typ string) bool {
	for _, c := range t.Status.Conditions {
		if c.Type == typ {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}
