package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// issueToken issues a new token for s.act.reason (actIssue). A cut that
// nobody asked for, or one over a recorded pending token, is decided
// again on a live view first; an unasked cut is taken only as the cut
// guard allows, else held. The new token's life starts at lifetimeStart.
func (r *ApiTokenReconciler) issueToken(ctx context.Context, s *pass) (bool, error) {
	reason := s.act.reason
	if cutsUnasked(reason) || pendingRecorded(s.t) {
		// Destructive, or it would overwrite the record of a token
		// that may be in the Secret: taken again on a live view.
		live, ok, err := r.confirmLive(ctx, s.t, s.p, s.salts, s.act)
		if err != nil {
			return true, err
		}
		if !ok {
			logf.FromContext(ctx).V(1).Info("Cache was behind the API server; not issuing on it", "apitoken", klog.KObj(s.t), "reason", reason)
			return s.endUntouched(staleViewRetry)
		}
		if r.APIReader != nil {
			s.secret = live
		}
	}
	if cutsUnasked(reason) {
		allowed, err := r.guardCut(ctx, s.t, s.base, reason)
		if err != nil {
			return true, err
		}
		if !allowed {
			// A regenerate request or a repaired Secret re-queues it.
			return r.holdCut(ctx, s, reason, 0)
		}
	}
	issued := lifetimeStart(s.t, reason, s.now)
	err := r.issue(ctx, s, issued)
	if errors.Is(err, errSecretExists) {
		// Not in the cache, yet there: someone else's, or ours with
		// its labels stripped. Look on the API server.
		if err := r.observeSecret(ctx, s, true); err != nil {
			return true, err
		}
		if s.state == secretForeign {
			// Seen on the API server; an unasked cut was guarded above.
			return r.conflict(ctx, s, true, cutsUnasked(reason))
		}
		err = r.issue(ctx, s, issued)
	}
	if err != nil {
		return true, err
	}
	r.promote(s, issued)
	return false, nil
}

// issue mints a token and delivers it, in the order that keeps a valid
// token in the Secret at every step: (1) record the new hash as pending,
// so that it verifies before anyone can read it; (2) write the Secret. The
// caller then promotes the pending hash (3, the deferred status write). A
// failure after (1) leaves the old token in the Secret and verifying; a
// failure after (2) leaves the new one, which verifies as pending and is
// promoted on the next pass.
func (r *ApiTokenReconciler) issue(ctx context.Context, s *pass, issued time.Time) error {
	t, secret, reason, h := s.t, s.secret, s.act.reason, s.hasher
	tok, err := r.mint()
	if err != nil {
		return err
	}
	if t.Status.Verification == nil {
		t.Status.Verification = &tokensv1alpha1.Verification{}
	}
	v := t.Status.Verification
	first := v.Hash == "" && v.RevokedHash == "" && secret == nil
	v.PendingHash = h.Hash(tok).Encode()
	v.PendingReason = reason
	v.PendingRegenerate = t.Annotations[tokensv1alpha1.RegenerateAnnotation]
	// A first token has nothing to lose: if the status write after the
	// Secret fails, the next pass rebuilds the record from the Secret
	// (actRecover). Skipping step (1) saves one write per new token. A
	// token that replaces a revoked one is not first: a record with a
	// revoked hash is never rebuilt from the Secret. A token that
	// replaces one is also the one the restart targets are restarted for,
	// once it is in the Secret (restartTargets).
	if !first {
		prepareRestarts(t, s.now)
		if err := r.patchStatus(ctx, s); err != nil {
			return err
		}
	}
	return r.writeSecret(ctx, s, secret, tok, issued)
}

// promote makes the pending hash current: the replaced hash stays valid
// for the grace period (from now, never past its own expiry, and not at all
// once expired: lifecycle.PreviousValidUntil) when the reason allows it (for a
// salt rotation, the planned rotation's overlap: saltGrace), the
// regenerate request it answers is marked handled, and issuedAt is set to
// issued (see lifetimeStart). The last token replaced and no longer in a
// grace (the one before the previous, or this one without a grace) is
// kept as replacedHash.
func (r *ApiTokenReconciler) promote(s *pass, issued time.Time) {
	t, p, salts, now := s.t, s.p, s.salts, s.now
	st := &t.Status
	v := st.Verification
	reason := v.PendingReason
	// A first use belongs to the hash it was of, which is replaced now.
	if v.PreviousHash != "" {
		v.ReplacedHash = v.PreviousHash
	}
	v.PreviousHash, v.PreviousValidUntil, v.FirstUsedAt = "", nil, nil
	var grace time.Duration
	switch {
	case keepsPrevious(reason):
		grace = p.Grace
	case reason == tokensv1alpha1.ReasonSaltRotated:
		previousID, until, _ := salts.Overlap()
		grace = saltGrace(v.SaltID, previousID, until, now, r.MaxSaltOverlap)
	}
	leakNote, leaked := revokeLeakedCurrent(st)
	if grace > 0 && v.Hash != "" && !leaked {
		end, finite := currentEnd(t, p)
		if until, keep := lifecycle.PreviousValidUntil(now, grace, end, finite); keep {
			v.PreviousHash, v.PreviousValidUntil = v.Hash, &metav1.Time{Time: until}
		}
	}
	if v.PreviousHash == "" && v.Hash != "" {
		v.ReplacedHash = v.Hash
	}
	v.Hash, v.SaltID = v.PendingHash, salts.ID()
	if v.PendingRegenerate != "" {
		st.LastHandledRegenerate = v.PendingRegenerate
	}
	v.PendingHash, v.PendingReason, v.PendingRegenerate = "", "", ""
	if reason != tokensv1alpha1.ReasonGenerated {
		replaced := metav1.NewTime(now.Truncate(time.Second))
		st.LastRegeneratedAt = &replaced
	}
	at := metav1.NewTime(issued.Truncate(time.Second))
	st.IssuedAt = &at
	regenerations.WithLabelValues(reason).Inc()
	eventType := corev1.EventTypeNormal
	msg := "Issued a new token into Secret " + t.SecretName()
	switch {
	case reason == tokensv1alpha1.ReasonSaltRotated && v.PreviousValidUntil != nil:
		msg = "The operator's salt was rotated (planned); " + msg + "; the replaced token verifies until " + v.PreviousValidUntil.UTC().Format(time.RFC3339)
	case leaked:
		eventType, reason = corev1.EventTypeWarning, tokensv1alpha1.ReasonLeakRevoked
		msg = leakNote + "; " + msg
	case reason == tokensv1alpha1.ReasonSecretConflict:
		eventType = corev1.EventTypeWarning
		msg = "The token was cut while its Secret was not owned by this ApiToken; " + msg
	case reason == tokensv1alpha1.ReasonSecretTampered, reason == tokensv1alpha1.ReasonSecretMissing, reason == tokensv1alpha1.ReasonSaltRotated, reason == tokensv1alpha1.ReasonSecretUntrusted:
		eventType = corev1.EventTypeWarning
		msg = reasonMessages[reason] + "; " + msg
	}
	if reason == tokensv1alpha1.ReasonGenerated && r.SkipGeneratedEvents {
		return
	}
	s.record(eventType, reason, msg)
}

// mint generates a token: r.Generate (a test's) or token.Generate.
func (r *ApiTokenReconciler) mint() (string, error) {
	generate := r.Generate
	if generate == nil {
		generate = token.Generate
	}
	tok, err := generate()
	if err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	return tok, nil
}

var reasonMessages = map[string]string{
	tokensv1alpha1.ReasonSecretTampered: "The Secret's token no longer matched the recorded hash",
	tokensv1alpha1.ReasonSecretMissing:  "The Secret was deleted",
	tokensv1alpha1.ReasonSecretConflict: "The Secret is no longer owned by this ApiToken (its owner reference was removed or replaced)",
	tokensv1alpha1.ReasonSaltRotated:    "The salt this token was made with was replaced with no overlap (an emergency rotation, or a lost salt acknowledged), which invalidated it",
	tokensv1alpha1.ReasonSecretUntrusted: "The verification record was lost and the Secret's token was not adopted: " +
		"its " + tokensv1alpha1.IssuedAtAnnotation + " annotation is missing or in the future, or its " + tokensv1alpha1.SealAnnotation +
		" is not the operator's for this ApiToken (a Secret it did not write, or one written for an ApiToken of the same name deleted since)",
}

// recoverRecord rebuilds a lost verification record from the Secret's
// token (actRecover), keeping the token and, if the Secret says so, its
// issue time. Right after a first token is issued, the cache may still
// hold the ApiToken without the status that records it: the API server is
// asked first (and before an Event says so).
func (r *ApiTokenReconciler) recoverRecord(ctx context.Context, s *pass) (bool, error) {
	stale, err := r.staleRecord(ctx, client.ObjectKeyFromObject(s.t))
	if apierrors.IsNotFound(err) {
		return s.endUntouched(0)
	}
	if err != nil {
		return true, err
	}
	if stale {
		return s.endUntouched(0) // the status update on its way re-queues it
	}
	t := s.t
	t.Status.Verification = &tokensv1alpha1.Verification{Hash: s.view.digest.Encode(), SaltID: s.hasher.SaltID()}
	at := metav1.NewTime(sealedIssuedAt(t, s.secret, s.view, s.now).Truncate(time.Second))
	t.Status.IssuedAt = &at
	s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonRecovered, "Rebuilt the verification record from Secret "+s.secret.Name)
	return false, nil
}

// currentEnd returns when t's current token ends, as its status records
// it (finite false: never): at once if it already ended (phase Expired or
// Inactive) or has no issue time, else the earliest of the expiresAt
// recorded for it, its issue time plus the duration, and its idle deadline.
// The recorded expiry counts because a spec edited since (a longer
// duration) must not lengthen the life of a token being replaced.
func currentEnd(t *tokensv1alpha1.ApiToken, p policy) (time.Time, bool) {
	return lifecycle.CurrentEnd(t, p)
}

// recordRevocation moves every hash of t out of the verifying set and
// writes the status at once: the revoked token (the current one, else the
// pending one) is kept as revokedHash, dead for good, so that the auth
// endpoint refuses it as "revoked" however quickly spec.revoked is set
// back and whatever happens to the Secret; the other hashes are dropped.
// issuedAt and expiresAt go with it: no token is current, and the one
// issued when revoked is set back to false starts a new lifetime. It
// notes in s whether a hash was moved (the revocation happened now). The
// Secret is emptied later in the pass (actRevoke: emptySecret).
func (r *ApiTokenReconciler) recordRevocation(ctx context.Context, s *pass) (bool, error) {
	if !s.t.Spec.Revoked {
		return false, nil
	}
	st := &s.t.Status
	v := st.Verification
	if v == nil {
		v = &tokensv1alpha1.Verification{}
	}
	moved := recordsVerifying(v)
	if !moved && st.IssuedAt == nil {
		return false, nil
	}
	revoked := v.RevokedHash
	switch {
	case v.Hash != "":
		revoked = v.Hash
	case v.PendingHash != "":
		revoked = v.PendingHash
	}
	replaced := v.ReplacedHash
	if v.PreviousHash != "" {
		replaced = v.PreviousHash
	}
	st.Verification = &tokensv1alpha1.Verification{SaltID: v.SaltID, RevokedHash: revoked, ReplacedHash: replaced}
	st.IssuedAt, st.ExpiresAt = nil, nil
	if so := st.ShowOnce; so != nil {
		so.Sealed = "" // a revoked show-once token is never handed over
	}
	st.Phase = tokensv1alpha1.PhaseRevoked
	s.revokedNow = moved
	return false, r.patchStatus(ctx, s)
}

// revoke removes the revoked token from its Secret (actRevoke; its record
// was moved by recordRevocation) and records the Revoked Event, once: when
// the revocation happened in this pass, or the phase became Revoked. The
// Event is recorded at once if the revocation's record is written already
// (a later write of the pass may fail without taking the Event with it),
// else with the status.
func (r *ApiTokenReconciler) revoke(ctx context.Context, s *pass) error {
	t := s.t
	if t.Spec.ShowOnce == nil {
		if err := r.emptySecret(ctx, s); err != nil {
			return err
		}
	}
	if !s.revokedNow && s.phaseBefore == tokensv1alpha1.PhaseRevoked {
		return nil
	}
	msg := "The token was revoked and removed from Secret " + t.SecretName()
	switch {
	case t.Spec.ShowOnce != nil:
		msg = "The show-once token was revoked"
	case s.state == secretForeign:
		msg = "The token was revoked; Secret " + t.SecretName() + " is not owned by this ApiToken and was left as it is"
	}
	if s.base.Status.Phase == tokensv1alpha1.PhaseRevoked {
		r.event(t, corev1.EventTypeNormal, tokensv1alpha1.ReasonRevoked, msg)
		return nil
	}
	s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonRevoked, msg)
	return nil
}

// staleRecord reports whether the API server holds a verification record
// that the cached ApiToken lacks. Without a reader around the cache (unit
// tests), the cache is the truth.
func (r *ApiTokenReconciler) staleRecord(ctx context.Context, key types.NamespacedName) (bool, error) {
	if r.APIReader == nil {
		return false, nil
	}
	var live tokensv1alpha1.ApiToken
	if err := r.APIReader.Get(ctx, key, &live); err != nil {
		return false, err
	}
	return live.Status.Verification != nil && live.Status.Verification.Hash != "", nil
}
