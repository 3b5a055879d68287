package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// summarizeAndPatch ends every pass that fetched its ApiToken (Reconcile
// defers it): it computes the status (summarize), unless a step failed
// with err, when the status stays as last written and Ready says why
// (recordFailure); it writes the status, the one write of the pass but for
// those the order of writes needs first (recordRevocation, issue); then,
// once it is written, it records the Events that say the same. A pass that
// ran every step looks again at the token's next deadline.
func (r *ApiTokenReconciler) summarizeAndPatch(ctx context.Context, s *pass, err error) (ctrl.Result, error) {
	switch {
	case err != nil && raced(err):
		// Another write got there first (or the object is gone): the pass
		// it queued decides. Ready says nothing of a race, which would
		// flip it to False and back for a routine conflict.
		return ctrl.Result{}, err
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
	var after time.Duration
	if next := nextDeadline(s.t, s.p, s.now); !next.IsZero() {
		after = next.Sub(s.now)
	}
	if s.retry > 0 && (after == 0 || s.retry < after) {
		after = s.retry
	}
	return ctrl.Result{RequeueAfter: after}, nil
}

// raced reports an error that says the pass read an old view, or that
// what it wrote meanwhile exists or is gone: nothing failed, and the
// retry sees the new state.
func raced(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err)
}

// summarize computes the status (computeStatus) and records the Events
// (once the status is written) and metrics of its transitions; the
// revocation's Event is revoke's.
func (r *ApiTokenReconciler) summarize(s *pass) {
	t, base, b := s.t, s.base, s.b
	computeStatus(t, s.p, b, diedAs(t, base, s.now), s.now)
	setPolicyCondition(s)
	recordGraceEnded(s)
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

// recordGraceEnded records a GraceEnded Event when the pass dropped the
// previous hash because the new token was used before the grace's end
// (lifecycle.GraceEndedByUse; spec.rotation.graceUntilNewTokenUsed).
func recordGraceEnded(s *pass) {
	bv, v := s.base.Status.Verification, s.t.Status.Verification
	if bv == nil || bv.PreviousHash == "" || (v != nil && v.PreviousHash == bv.PreviousHash) {
		return
	}
	if used, ok := lifecycle.GraceEndedByUse(s.base); ok {
		s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonGraceEnded, "The new token was used at "+used.Format(time.RFC3339)+
			"; the previous token is refused from now on (its grace would have lasted until "+bv.PreviousValidUntil.UTC().Format(time.RFC3339)+")")
	}
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

// recordGrant keeps status.granted in step with the spec, and records a
// PermissionsChanged Event when a live token's type, scopes or audience
// changed: a change of power is visible, not only in the spec's history.
func recordGrant(s *pass) {
	t := s.t
	g := &tokensv1alpha1.Granted{Type: t.Spec.Type, Scopes: t.Spec.Scopes, Audience: lifecycle.AudienceOf(&t.Spec)}
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
