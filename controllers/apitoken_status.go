package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
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
// phase is decided. It also drops a previous hash whose grace has ended.
//
// died is the phase (Expired or Inactive) in which the current token
// already ended, or "": a token that expired or went idle stays so, with
// its expiresAt, until a new token is issued, whatever the spec says now
// (a longer duration or a removed idleTimeout never revives it).
func computeStatus(t *tokensv1alpha1.ApiToken, p policy, b blocker, died tokensv1alpha1.Phase, now time.Time) {
	st := &t.Status
	st.ObservedGeneration = t.Generation
	st.SecretRef = &tokensv1alpha1.SecretReference{Name: t.SecretName()}
	if v := st.Verification; v != nil && v.PreviousValidUntil != nil && !now.Before(v.PreviousValidUntil.Time) {
		v.PreviousHash, v.PreviousValidUntil = "", nil
	}
	// A spec the operator cannot read says nothing of when the token
	// ends: the recorded expiresAt stays (the auth endpoint refuses a token
	// whose duration does not parse).
	readable := b.reason != tokensv1alpha1.ReasonInvalidSpec
	if readable && (died != tokensv1alpha1.PhaseExpired || st.ExpiresAt == nil) {
		st.ExpiresAt = nil
		if st.IssuedAt != nil {
			if exp := p.expiresAt(st.IssuedAt.Time); exp != nil {
				st.ExpiresAt = &metav1.Time{Time: *exp}
			}
		}
	}

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
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, tokensv1alpha1.ReasonRevoked, "The token was revoked and removed from the Secret"
	case !hasRecord:
		st.Phase = tokensv1alpha1.PhasePending
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, "Pending", "No token has been issued yet"
	case died == tokensv1alpha1.PhaseExpired || (st.ExpiresAt != nil && token.Expired(st.ExpiresAt.Time, true, now)):
		st.Phase = tokensv1alpha1.PhaseExpired
		ready.Status, ready.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonExpired
		ready.Message = fmt.Sprintf("The token expired at %s; annotate %s to issue a new one", st.ExpiresAt.UTC().Format(time.RFC3339), tokensv1alpha1.RegenerateAnnotation)
	case died == tokensv1alpha1.PhaseInactive || idleSince(t, p, now):
		st.Phase = tokensv1alpha1.PhaseInactive
		ready.Status, ready.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonInactive
		ready.Message = fmt.Sprintf("The token was not used for its idleTimeout and is refused; annotate %s to issue a new one", tokensv1alpha1.RegenerateAnnotation)
	default:
		st.Phase = tokensv1alpha1.PhaseActive
		ready.Status, ready.Reason = metav1.ConditionTrue, tokensv1alpha1.ReasonActive
		ready.Message = "Secret " + t.SecretName() + " holds a valid token"
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
	case base.Status.ExpiresAt != nil && token.Expired(base.Status.ExpiresAt.Time, true, now):
		return tokensv1alpha1.PhaseExpired
	}
	return ""
}

// idleSince reports whether t has been idle for spec.idleTimeout at now.
func idleSince(t *tokensv1alpha1.ApiToken, p policy, now time.Time) bool {
	until, ok := p.idleUntil(t)
	return ok && !now.Before(until)
}

func setCondition(st *tokensv1alpha1.ApiTokenStatus, c metav1.Condition, now time.Time) {
	if old := meta.FindStatusCondition(st.Conditions, c.Type); old != nil && old.Status == c.Status {
		c.LastTransitionTime = old.LastTransitionTime
	} else {
		c.LastTransitionTime = metav1.NewTime(now)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

// summarizeAndPatch ends every pass that fetched its ApiToken (Reconcile
// defers it): it computes the status (summarize), unless a step failed
// with err, when the status stays as last written and Ready says why
// (recordFailure); it writes the status, the one write of the pass but for
// those the order of writes needs first (recordRevocation, issue); then,
// once it is written, it records the Events that say the same. A pass that
// ran every step looks again at the token's next deadline.
func (r *ApiTokenReconciler) summarizeAndPatch(ctx context.Context, s *pass, err error) (ctrl.Result, error) {
	switch {
	case err != nil:
		recordFailure(s, err)
	case !s.untouched:
		r.summarize(s)
	}
	if perr := r.patchStatus(ctx, s); perr != nil {
		if err != nil {
			logf.FromContext(ctx).V(1).Info("Could not record the failed pass in Ready", "apitoken", klog.KObj(s.t), "error", perr.Error())
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, perr
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, e := range s.events {
		r.event(s.t, e.eventType, e.reason, e.note)
	}
	for _, f := range s.afterWrite {
		f()
	}
	if s.ended {
		return ctrl.Result{RequeueAfter: s.requeue}, nil
	}
	logf.FromContext(ctx).V(1).Info("Reconciled ApiToken", "apitoken", klog.KObj(s.t), "phase", s.t.Status.Phase, "action", s.act.reason)
	if next := nextDeadline(s.t, s.p, s.now); !next.IsZero() {
		return ctrl.Result{RequeueAfter: next.Sub(s.now)}, nil
	}
	return ctrl.Result{}, nil
}

// summarize computes the status (computeStatus) and records the Events
// (once the status is written) and metrics of its transitions.
func (r *ApiTokenReconciler) summarize(s *pass) {
	t, base, b := s.t, s.base, s.b
	computeStatus(t, s.p, b, diedAs(t, base, s.now), s.now)
	// base already says Revoked once the revocation is recorded: the
	// phase the pass began with tells the transition.
	if t.Status.Phase == tokensv1alpha1.PhaseRevoked && (s.revokedNow || s.phaseBefore != tokensv1alpha1.PhaseRevoked) {
		msg := "The token was revoked and removed from Secret " + t.SecretName()
		if s.state == secretForeign {
			msg = "The token was revoked; Secret " + t.SecretName() + " is not owned by this ApiToken and was left as it is"
		}
		s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonRevoked, msg)
	}
	if t.Status.Phase != base.Status.Phase {
		switch t.Status.Phase {
		case tokensv1alpha1.PhaseExpired:
			s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonExpired, "The token expired at "+t.Status.ExpiresAt.UTC().Format(time.RFC3339))
		case tokensv1alpha1.PhaseInactive:
			s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonInactive, "The token was not used for "+t.Spec.IdleTimeout+" and is refused until it is regenerated")
		case tokensv1alpha1.PhaseFailed:
			if b.reason == tokensv1alpha1.ReasonInvalidSpec {
				s.record(corev1.EventTypeWarning, b.reason, b.message)
			}
		}
	}
	if b.reason != tokensv1alpha1.ReasonInvalidSpec {
		recordGrant(s)
	}
	wasSoon := conditionTrue(base, tokensv1alpha1.ConditionExpiringSoon)
	if !wasSoon && conditionTrue(t, tokensv1alpha1.ConditionExpiringSoon) {
		s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonExpiringSoon, "The token expires at "+t.Status.ExpiresAt.UTC().Format(time.RFC3339))
	}
	r.recordTokenMetrics(t, b)
}

// recordTokenMetrics sets t's series: its phase and expiry (a series of
// its own as TokenMetrics says) and whether a salt or cut hold holds it.
func (r *ApiTokenReconciler) recordTokenMetrics(t *tokensv1alpha1.ApiToken, b blocker) {
	var exp, soon float64
	if st := &t.Status; st.ExpiresAt != nil {
		exp = float64(st.ExpiresAt.Unix())
		soon = exp
		if st.IssuedAt != nil {
			soon = float64(token.ExpiringSoonAt(st.IssuedAt.Time, st.ExpiresAt.Time).Unix())
		}
	}
	perToken := r.TokenMetrics == TokenMetricsAll ||
		(r.TokenMetrics != TokenMetricsNone && t.Status.Phase == tokensv1alpha1.PhaseActive && conditionTrue(t, tokensv1alpha1.ConditionExpiringSoon))
	recordMetrics(t.Namespace, t.Name, t.Spec.Type, t.Status.Phase, exp, soon, t.Status.ExpiresAt != nil, perToken)
	recordSaltHeld(t.Namespace, t.Name, b.reason == tokensv1alpha1.ReasonSaltMismatch)
	recordCutHeld(t.Namespace, t.Name, b.reason == tokensv1alpha1.ReasonCutHeld)
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

// patchStatus writes the status of s.t if it differs from s.base, with an
// optimistic lock, and moves s.base forward. It is the only status write.
func (r *ApiTokenReconciler) patchStatus(ctx context.Context, s *pass) error {
	t, base := s.t, s.base
	if equality.Semantic.DeepEqual(base.Status, t.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, t, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching status: %w", err)
	}
	*base = *t.DeepCopy()
	return nil
}

// queuedEvent is an Event a pass records once its status is written.
type queuedEvent struct {
	eventType, reason, note string
}

// record queues an Event on the pass's ApiToken (see summarizeAndPatch).
func (s *pass) record(eventType, reason, note string) {
	s.events = append(s.events, queuedEvent{eventType, reason, note})
}

func (r *ApiTokenReconciler) event(t *tokensv1alpha1.ApiToken, eventType, reason, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(t, nil, eventType, reason, "Reconcile", "%s", note)
	}
}

// readyReason is the reason of t's Ready condition, or "".
func readyReason(t *tokensv1alpha1.ApiToken) string {
	if c := meta.FindStatusCondition(t.Status.Conditions, tokensv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// recordGrant keeps status.granted in step with the spec, and records a
// PermissionsChanged Event when a live token's type, scopes or audience
// changed: a change of power is visible, not only in the spec's history.
func recordGrant(s *pass) {
	t := s.t
	g := &tokensv1alpha1.Granted{Type: t.Spec.Type, Scopes: t.Spec.Scopes, Audience: t.Spec.Audience}
	if g.Audience == "" {
		g.Audience = tokensv1alpha1.ContentAPI
	}
	prev := s.base.Status.Granted
	if prev != nil && !equality.Semantic.DeepEqual(prev, g) && t.Status.Phase == tokensv1alpha1.PhaseActive {
		s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonPermissionsChanged,
			"The token's permissions changed from "+describeGrant(prev)+" to "+describeGrant(g))
	}
	t.Status.Granted = g
}

// describeGrant says what a grant is, as an Event reads it:
// "custom [articles:read orders:*] for content-api".
func describeGrant(g *tokensv1alpha1.Granted) string {
	s := string(g.Type)
	if len(g.Scopes) > 0 {
		s += " [" + strings.Join(g.Scopes, " ") + "]"
	}
	return s + " for " + string(g.Audience)
}

func conditionTrue(t *tokensv1alpha1.ApiToken, typ string) bool {
	for _, c := range t.Status.Conditions {
		if c.Type == typ {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}
