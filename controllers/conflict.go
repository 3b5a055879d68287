package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// conflictRetry is how often a token blocked by a foreign Secret looks
// again: the foreign Secret is outside the operator's cache, so nothing
// would wake it up otherwise. Slow on purpose: no retry storm.
const conflictRetry = 5 * time.Minute

// recordsVerifying reports whether v holds a hash in the verifying set
// (current, pending, or previous in its grace period).
func recordsVerifying(v *tokensv1alpha1.Verification) bool {
	return v != nil && (v.Hash != "" || v.PendingHash != "" || v.PreviousHash != "")
}

// conflict handles a Secret of the token's name that this ApiToken does
// not control (act, a SecretConflict): it is never written, and the
// ApiToken reports it (Failed, SecretConflict, a Warning Event).
//
// A token recorded for it is cut. The Secret was the operator's and was
// taken from it (its owner reference removed or replaced, or the Secret
// replaced): the operator can neither regenerate nor revoke through it,
// nor tell what it holds now, so the recorded token must not stay valid
// (it would be frozen). Its hash is kept as revokedHash, dead for good:
// never adopted again, refused as revoked. issuedAt stays, so that the
// token issued once the Secret is gone or the operator's again (reason
// SecretConflict) keeps the lifetime. Like every cut nobody asked for, it
// is taken on a live view only (unless live: the view was read from the
// API server) and within the cut guard (unless guarded: the guard was
// asked already): past its limit, the token is held and keeps verifying
// until a regenerate request releases it.
func (r *ApiTokenReconciler) conflict(ctx context.Context, s *pass, live, guarded bool) (bool, error) {
	t := s.t
	v := t.Status.Verification
	if recordsVerifying(v) && !live {
		if _, ok, err := r.confirmLive(ctx, t, s.p, s.salts, s.act); err != nil || !ok {
			if err != nil {
				return true, err
			}
			logf.FromContext(ctx).V(1).Info("Cache was behind the API server; not cutting on it", "apitoken", klog.KObj(t), "reason", s.act.reason)
			return s.endUntouched(staleViewRetry)
		}
	}
	cut := false
	if v != nil {
		// A token recorded as pending never reached the Secret: nobody
		// holds it, and it must not verify.
		v.PendingHash, v.PendingReason, v.PendingRegenerate = "", "", ""
		if v.Hash != "" || v.PreviousHash != "" {
			if !guarded {
				allowed, err := r.guardCut(ctx, t, s.base, tokensv1alpha1.ReasonSecretConflict)
				if err != nil {
					return true, err
				}
				if !allowed {
					return r.holdCut(ctx, s, tokensv1alpha1.ReasonSecretConflict, conflictRetry)
				}
			}
			if leak := leakOf(v, v.Hash); leak != nil {
				t.Status.LastLeakRevocation = leak.DeepCopy()
				s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonLeakRevoked,
					"The token was presented as leaked "+leakSource(leak)+" and revoked; its Secret is not the operator's, so no new token is issued until it is deleted or given back")
			}
			// The previous token, cut from its grace, is the one replaced
			// last: kept, as after any grace, to be known if presented.
			replaced := cmp.Or(v.PreviousHash, v.ReplacedHash)
			t.Status.Verification = &tokensv1alpha1.Verification{SaltID: v.SaltID, RevokedHash: v.Hash, ReplacedHash: replaced}
			cut = true
		}
	}
	s.b = blocker{tokensv1alpha1.ReasonSecretConflict, conflictMessage(t)}
	if cut || readyReason(s.base) != tokensv1alpha1.ReasonSecretConflict {
		s.record(corev1.EventTypeWarning, s.b.reason, s.b.message)
	}
	return s.end(conflictRetry)
}

// conflictMessage says why t is blocked by its Secret and what to do.
func conflictMessage(t *tokensv1alpha1.ApiToken) string {
	if v := t.Status.Verification; v != nil && v.RevokedHash != "" {
		return fmt.Sprintf("Secret %s is not owned by this ApiToken (its owner reference was removed or replaced, or the Secret was replaced): "+
			"the token it held no longer verifies, and no new one is written into a Secret the operator does not own. "+
			"Delete or rename that Secret and a new token is issued into a new one, or set spec.secretName on a new ApiToken", t.SecretName())
	}
	return fmt.Sprintf("Secret %s exists and is not owned by this ApiToken; delete or rename it, or set spec.secretName on a new ApiToken", t.SecretName())
}

// holdCut holds the cut of s.t's token for reason, which the cut guard
// refused, and ends the pass (looking again after requeue): the token
// keeps verifying, the Ready condition (CutHeld), an Event and a log line
// (once) say why and how to release it.
func (r *ApiTokenReconciler) holdCut(ctx context.Context, s *pass, reason string, requeue time.Duration) (bool, error) {
	s.b = blocker{tokensv1alpha1.ReasonCutHeld, r.cutHeldMessage(s.t, reason)}
	if readyReason(s.base) != tokensv1alpha1.ReasonCutHeld {
		s.record(corev1.EventTypeWarning, s.b.reason, s.b.message)
		s.afterWrite = append(s.afterWrite, func() {
			logf.FromContext(ctx).Info("Held a token cut: more tokens than the limit were to be cut without anyone asking",
				"apitoken", klog.KObj(s.t), "reason", reason, "limit", r.Cuts.Limit())
		})
	}
	return s.end(requeue)
}
