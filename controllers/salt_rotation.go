package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// askedRotation installs the salt Secret's salt in memory and reads the
// rotation it asks for. A next salt shorter than salt.MinSize is refused:
// installed, it would stop every replica's next start (salt.Load refuses
// it), so the request waits for a next salt that is long enough.
func (r *SaltReconciler) askedRotation(ctx context.Context, s *saltPass) (bool, error) {
	// Install what this pass sees first, so that a salt replaced by an
	// edit is among the witnessed ones recorded below.
	r.Salt.Observe(&s.sec)
	s.now = r.Clock.Now()
	s.want = s.sec.DeepCopy()
	cur, err := salt.FromSecret(s.want)
	if err != nil {
		return true, err
	}
	s.cur = cur
	_, until, overlapping := cur.Overlap()
	s.until, s.overlapping = until, overlapping && s.now.Before(until)
	s.asked = salt.Requested(s.want)
	if n := len(s.want.Data[salt.NextKey]); s.asked != salt.NoRequest && n > 0 && n < salt.MinSize && !r.Salt.AllowWeak {
		logf.FromContext(ctx).Error(nil, "Refused to rotate to a weak salt", "secret", klog.KObj(&s.sec), "bytes", n, "minimum", salt.MinSize)
		r.event(&s.sec, corev1.EventTypeWarning, ReasonSaltRotationRefused, fmt.Sprintf(
			"The rotation was not carried out: the Secret's %q salt is %d bytes, and a salt must be at least %d bytes (docs/operations.md#a-weak-salt); put a longer one there, or remove it to have one generated",
			salt.NextKey, n, salt.MinSize))
		s.asked = salt.NoRequest
	}
	return false, nil
}

// rotateAsked carries out the rotation asked for in want: emergency (or
// planned with no overlap configured) at once; planned, with the previous
// salt verifying for the overlap, unless an overlap still runs, when it
// waits (requeued at its end). What it did is counted, logged and
// recorded once the Secret is written (s.rotated).
func (r *SaltReconciler) rotateAsked(ctx context.Context, s *saltPass) (bool, error) {
	log := logf.FromContext(ctx)
	want, cur := s.want, s.cur
	switch req := s.asked; {
	case req == salt.Emergency || (req == salt.Planned && r.Overlap <= 0):
		if err := r.rotate(want, s.now, 0); err != nil {
			return true, err
		}
		s.rotated = func() {
			saltRotations.WithLabelValues("emergency").Inc()
			msg := fmt.Sprintf("Emergency rotation: salt ID %s replaced salt ID %s with no overlap; every token stopped verifying and is re-issued", idOf(want), cur.ID())
			log.Info("Rotated the salt (emergency)", "secret", klog.KObj(want), "saltID", idOf(want), "replacedSaltID", cur.ID())
			r.event(want, corev1.EventTypeWarning, ReasonSaltRotationEmergency, msg)
		}
	case req == salt.Planned && s.overlapping:
		// A second planned rotation now would drop the previous salt
		// before every token has moved off it: wait (requeued at its end).
		r.event(&s.sec, corev1.EventTypeNormal, ReasonSaltRotationWaiting, "A planned rotation waits until the running overlap ends at "+s.until.UTC().Format(time.RFC3339))
	case req == salt.Planned:
		if err := r.rotate(want, s.now, r.Overlap); err != nil {
			return true, err
		}
		next, err := salt.FromSecret(want)
		if err != nil {
			return true, err
		}
		_, end, _ := next.Overlap()
		s.rotated = func() {
			saltRotations.WithLabelValues("planned").Inc()
			msg := fmt.Sprintf("Planned rotation: salt ID %s replaced salt ID %s; tokens made with the previous salt verify until %s while every token is re-issued", next.ID(), cur.ID(), end.UTC().Format(time.RFC3339))
			log.Info("Rotated the salt (planned)", "secret", klog.KObj(want), "saltID", next.ID(), "replacedSaltID", cur.ID(), "previousValidUntil", end)
			r.event(want, corev1.EventTypeNormal, ReasonSaltRotationPlanned, msg)
		}
	}
	return false, nil
}

// recordSalts records in want the salts the current one replaced, removes
// a previous salt whose overlap ended, and names the current salt's ID
// (for people: a backup says so too; never trusted).
func (r *SaltReconciler) recordSalts(_ context.Context, s *saltPass) (bool, error) {
	want := s.want
	recorded := salt.NameReplaced(want, r.Salt.Witnessed())
	s.pruned = salt.PruneExpired(want, s.now)
	labelled := false
	if id := idOf(want); want.Annotations[tokensv1alpha1.SaltIDAnnotation] != id {
		if want.Annotations == nil {
			want.Annotations = map[string]string{}
		}
		want.Annotations[tokensv1alpha1.SaltIDAnnotation], labelled = id, true
	}
	s.changed = s.rotated != nil || recorded || s.pruned || labelled
	return false, nil
}

// updateSaltSecret writes want, if it changed, then says what was done.
func (r *SaltReconciler) updateSaltSecret(ctx context.Context, s *saltPass) (bool, error) {
	if !s.changed {
		return false, nil
	}
	if err := r.Update(ctx, s.want); err != nil {
		return true, fmt.Errorf("updating salt Secret %s: %w", r.Salt.Ref(), err)
	}
	if s.rotated != nil {
		s.rotated()
	}
	if s.pruned {
		logf.FromContext(ctx).Info("Removed the previous salt: its overlap ended", "secret", klog.KObj(s.want))
		r.event(s.want, corev1.EventTypeNormal, ReasonPreviousSaltRemoved, "The planned rotation's overlap ended; the previous salt was removed and no longer verifies")
	}
	return false, nil
}

// reportSalt reports a previous salt the operator does not use, and the
// running overlap's end (the metric, and the pass's requeue).
func (r *SaltReconciler) reportSalt(ctx context.Context, s *saltPass) (bool, error) {
	after, err := salt.FromSecret(s.want)
	if err != nil {
		return true, err
	}
	if why := after.IgnoredPrevious(); why != "" {
		logf.FromContext(ctx).Error(nil, "The salt Secret holds a previous salt the operator does not use", "secret", klog.KObj(s.want), "why", why)
		r.event(s.want, corev1.EventTypeWarning, ReasonPreviousSaltIgnored, "The Secret's previous salt is not used: "+why)
	}
	if _, end, ok := after.Overlap(); ok && s.now.Before(end) {
		saltPreviousValidUntil.Set(float64(end.Unix()))
		s.requeue = end.Sub(s.now)
		return false, nil
	}
	saltPreviousValidUntil.Set(0)
	return false, nil
}

// rotate installs a new salt in sec: the Secret's own next salt if it
// holds one, else a generated one.
func (r *SaltReconciler) rotate(sec *corev1.Secret, now time.Time, overlap time.Duration) error {
	next := sec.Data[salt.NextKey]
	if len(next) == 0 {
		generate := r.Generate
		if generate == nil {
			generate = salt.Generate
		}
		var err error
		if next, err = generate(); err != nil {
			return err
		}
	}
	salt.Rotate(sec, next, now, overlap)
	return nil
}
