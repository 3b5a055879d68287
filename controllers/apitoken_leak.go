package controllers

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
)

// Leak revocations (status.verification.leakRevocations): the auth
// endpoint records a request, made by presenting a token at /v1/revoke,
// and the token is refused from then on (lifecycle.Assess). A pass acts
// on it: settleLeakRevocations ends a previous token's grace and drops the
// requests that name no recorded hash; decide issues a new token for one
// that names the current (or pending) token (ReasonLeakRevoked), and
// promote keeps the leaked hash as revokedHash, with no grace.

// settleLeakRevocations handles the leak revocations that need no new
// token: one that names the previous token ends its grace (its hash
// becomes revokedHash, and an Event says so); one that names no recorded
// hash (replaced since) is dropped. Those naming the current or pending
// hash are kept for decide. The status is written by the summary.
func (r *ApiTokenReconciler) settleLeakRevocations(_ context.Context, s *pass) (bool, error) {
	v := s.t.Status.Verification
	if v == nil || len(v.LeakRevocations) == 0 {
		return false, nil
	}
	if leak := leakOf(v, v.PreviousHash); leak != nil {
		s.t.Status.LastLeakRevocation = leak.DeepCopy()
		v.RevokedHash, v.PreviousHash, v.PreviousValidUntil = v.PreviousHash, "", nil
		s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonLeakRevoked,
			"The replaced token, in its grace period, was presented as leaked "+leakSource(leak)+" and revoked; the current token is unchanged")
	}
	v.LeakRevocations = slices.DeleteFunc(v.LeakRevocations, func(l tokensv1alpha1.LeakRevocation) bool {
		return !names(l, v.Hash) && !names(l, v.PendingHash)
	})
	if len(v.LeakRevocations) == 0 {
		v.LeakRevocations = nil
	}
	return false, nil
}

// leakOfCurrent reports whether a leak revocation names the current or
// the pending token: a new token is issued (decide).
func leakOfCurrent(v *tokensv1alpha1.Verification) bool {
	return v != nil && (lifecycle.LeakRevoked(v, v.Hash) || lifecycle.LeakRevoked(v, v.PendingHash))
}

// leakOf returns the leak revocation in v that names the hash encoded,
// or nil.
func leakOf(v *tokensv1alpha1.Verification, encoded string) *tokensv1alpha1.LeakRevocation {
	if !lifecycle.LeakRevoked(v, encoded) {
		return nil
	}
	for i := range v.LeakRevocations {
		if names(v.LeakRevocations[i], encoded) {
			return &v.LeakRevocations[i]
		}
	}
	return nil
}

// names reports whether l names the hash encoded (lifecycle.LeakRevoked
// compares in constant time).
func names(l tokensv1alpha1.LeakRevocation, encoded string) bool {
	return lifecycle.LeakRevoked(&tokensv1alpha1.Verification{LeakRevocations: []tokensv1alpha1.LeakRevocation{l}}, encoded)
}

// leakSource says who asked for a leak revocation, and when.
func leakSource(l *tokensv1alpha1.LeakRevocation) string {
	src := "at the auth endpoint"
	if l.Client != "" {
		src += " by " + l.Client
	}
	return src + " at " + l.RequestedAt.UTC().Format(time.RFC3339)
}

// revokeLeakedCurrent is promote's part for a current token that a leak
// revocation names: its hash is kept as revokedHash (refused as revoked,
// never in a grace), the request as lastLeakRevocation, and the note for
// the Event says who asked. The requests left are those naming the hash
// being promoted (a leak of the new token, recorded while it was pending:
// the next pass replaces it). ok false: the current token is not named.
func revokeLeakedCurrent(st *tokensv1alpha1.ApiTokenStatus) (note string, ok bool) {
	v := st.Verification
	leak := leakOf(v, v.Hash)
	if leak != nil {
		note = "The token was presented as leaked " + leakSource(leak) + " and revoked"
		v.RevokedHash = v.Hash
		st.LastLeakRevocation = leak.DeepCopy()
	}
	v.LeakRevocations = slices.DeleteFunc(v.LeakRevocations, func(l tokensv1alpha1.LeakRevocation) bool { return !names(l, v.PendingHash) })
	if len(v.LeakRevocations) == 0 {
		v.LeakRevocations = nil
	}
	return note, leak != nil
}

// leakRevocationRecorded passes the status update that records a leak
// revocation (written by the auth endpoint's /v1/revoke): the pass acts
// on it at once.
var leakRevocationRecorded = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*tokensv1alpha1.ApiToken)
		cur, okNew := e.ObjectNew.(*tokensv1alpha1.ApiToken)
		if !okOld || !okNew || cur.Status.Verification == nil {
			return false
		}
		var before []tokensv1alpha1.LeakRevocation
		if old.Status.Verification != nil {
			before = old.Status.Verification.LeakRevocations
		}
		for _, l := range cur.Status.Verification.LeakRevocations {
			if !slices.ContainsFunc(before, func(b tokensv1alpha1.LeakRevocation) bool { return b.Token == l.Token }) {
				return true
			}
		}
		return false
	},
}
