package controllers

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// A show-once token (spec.showOnce) has no Secret: the operator mints it,
// records its hash and, in the same status write, the token sealed to its
// creator's public key (status.showOnce.sealed); the plaintext lives only
// in the memory of that pass. Its creator opens the box, and acknowledges
// with the proof sealed beside the token (PickedUpAnnotation); only then,
// and only within the pickup window, is the pickup recorded
// (status.showOnce.pickedUpAt), from which instant on the hash verifies
// (lifecycle.Assess). Past the window the box is dropped and the token
// never verifies. No pass of a show-once token reads or writes a Secret.

// pickupProofLabel separates pickup proofs from the other seals under the
// operator's salt.
const pickupProofLabel = "show-once pickup"

// decideShowOnce is decide for a show-once token, first match wins: a
// revocation; a token presented as leaked at the auth endpoint (refused
// already) ends for good, having no Secret to receive a new one; a record under a salt the operator neither holds nor knows
// to be replaced is held (SaltMismatch), one under a replaced salt cannot
// be delivered again (SaltRotated: it ends with its salt); a token never
// issued is minted (never twice: a record or a revoked hash stops it);
// an acknowledgement while the window is open is checked. Nothing else
// issues a show-once token: neither a regenerate request, nor
// renewBefore (refused by the schema), nor a missing Secret.
func decideShowOnce(t *tokensv1alpha1.ApiToken, salt saltView, now time.Time) action {
	v := t.Status.Verification
	hasRecord := v != nil && v.Hash != ""
	state, _ := lifecycle.Pickup(t, now)
	switch {
	case t.Spec.Revoked:
		return action{actRevoke, tokensv1alpha1.ReasonRevoked}
	case leakOfCurrent(v), !hasRecord && t.Status.LastLeakRevocation != nil:
		return action{actLeakEnded, tokensv1alpha1.ReasonLeakRevoked}
	case hasRecord && v.SaltID != "" && v.SaltID != salt.id && !salt.replaced(v.SaltID):
		return action{actHold, tokensv1alpha1.ReasonSaltMismatch}
	case hasRecord && v.SaltID != salt.id:
		return action{actSaltEnded, tokensv1alpha1.ReasonSaltRotated}
	case state == lifecycle.NotIssued && !hasRecord && (v == nil || v.RevokedHash == ""):
		return action{actMint, tokensv1alpha1.ReasonGenerated}
	case state == lifecycle.Awaiting && t.Annotations[tokensv1alpha1.PickedUpAnnotation] != "":
		return action{actPickUp, tokensv1alpha1.ReasonPickedUp}
	}
	return action{actSync, ""}
}

// mintShowOnce mints a show-once token (actMint): its hash, its issue
// time, and the token with its pickup proof sealed to spec.showOnce's
// public key, with the end of the pickup window. All of it is written by
// the pass's one deferred status write, with an optimistic lock: a second
// replica, or a pass on a stale copy, fails that write and mints nothing.
func (r *ApiTokenReconciler) mintShowOnce(s *pass) error {
	t := s.t
	pub, err := showonce.ParsePublicKey(t.Spec.ShowOnce.PublicKey)
	if err != nil {
		// parsePolicy refused it already; this is the last line.
		s.b = blocker{tokensv1alpha1.ReasonInvalidSpec, "spec.showOnce.publicKey: " + err.Error()}
		return nil
	}
	tok, err := r.mint()
	if err != nil {
		return err
	}
	hash := s.hasher.Hash(tok).Encode()
	box, err := showonce.Seal(pub, showonce.Binding(t.Namespace, t.Name, string(t.UID)), tok, pickupProof(s.hasher, t, hash))
	if err != nil {
		return fmt.Errorf("sealing the show-once token: %w", err)
	}
	issued := s.now.Truncate(time.Second)
	st := &t.Status
	st.Verification = &tokensv1alpha1.Verification{Hash: hash, SaltID: s.hasher.SaltID()}
	st.IssuedAt = &metav1.Time{Time: issued}
	by := metav1.NewTime(issued.Add(s.p.PickupWindow))
	st.ShowOnce = &tokensv1alpha1.ShowOnceStatus{Sealed: box, PickupBy: &by}
	regenerations.WithLabelValues(tokensv1alpha1.ReasonGenerated).Inc()
	if r.SkipGeneratedEvents {
		return nil
	}
	s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonGenerated,
		"Issued a show-once token, sealed for its creator in status.showOnce.sealed (no Secret); it verifies once picked up, before "+by.UTC().Format(time.RFC3339))
	return nil
}

// pickupProof is the proof sealed with a show-once token: a MAC under the
// operator's salt of the ApiToken's UID and the token's hash, so that
// nobody without the salt can make one, and the operator needs to store
// nothing to check it.
func pickupProof(h *token.Hasher, t *tokensv1alpha1.ApiToken, hash string) string {
	return h.Seal(pickupProofLabel, string(t.UID), hash)
}

// pickUp checks the acknowledgement of a show-once token (actPickUp,
// while its window is open): the proof in PickedUpAnnotation, compared in
// constant time with the one sealed with the token. A match records the
// pickup, from which instant on the token verifies, and drops the sealed
// box; anything else changes nothing but a Warning Event: the token stays
// unpicked, and its creator can still pick it up.
func (r *ApiTokenReconciler) pickUp(s *pass) {
	t := s.t
	ack := t.Annotations[tokensv1alpha1.PickedUpAnnotation]
	if !s.hasher.VerifySeal(ack, pickupProofLabel, string(t.UID), t.Status.Verification.Hash) {
		s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonPickupRefused,
			"The acknowledgement in annotation "+tokensv1alpha1.PickedUpAnnotation+" is not the proof sealed with the token: the token was not picked up and does not verify")
		return
	}
	now := metav1.NewTime(s.now)
	so := t.Status.ShowOnce
	so.PickedUpAt, so.Sealed = &now, ""
	s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonPickedUp, "The token's creator picked it up; it verifies from now on, and is no longer held sealed in status")
}

// pickupStatus is the phase and Ready of a show-once token that is
// issued and not picked up (computeStatus): Pending while its window is
// open, Expired for good once it is missed, when its sealed box is
// dropped. It reports false for any other token.
func pickupStatus(t *tokensv1alpha1.ApiToken, ready *metav1.Condition, now time.Time) bool {
	st := &t.Status
	state, by := lifecycle.Pickup(t, now)
	switch state {
	case lifecycle.Awaiting:
		st.Phase = tokensv1alpha1.PhasePending
		ready.Status, ready.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonPickupPending
		ready.Message = "The token is sealed for its creator in status.showOnce.sealed and verifies once picked up (kubectl apitoken create --show-once), before " + by.UTC().Format(time.RFC3339)
		return true
	case lifecycle.Missed, lifecycle.NotIssued:
		st.Phase = tokensv1alpha1.PhaseExpired
		ready.Status, ready.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonPickupExpired
		ready.Message = "Nobody picked the show-once token up within its pickup window: it never verifies; create a new ApiToken"
		if st.ShowOnce != nil {
			st.ShowOnce.Sealed = ""
			if st.ShowOnce.PickupBy != nil {
				ready.Message = "Nobody picked the show-once token up before " + st.ShowOnce.PickupBy.UTC().Format(time.RFC3339) + ": it never verifies; create a new ApiToken"
			}
		}
		return true
	}
	return false
}

// saltEnded blocks a show-once token recorded under a replaced salt
// (actSaltEnded): it cannot be delivered again, so it ends with its salt
// (once a planned rotation's overlap is over, the index no longer
// verifies it).
func (r *ApiTokenReconciler) saltEnded(s *pass) (bool, error) {
	s.b = blocker{tokensv1alpha1.ReasonSaltRotated, "The operator's salt was replaced since this show-once token was issued: it no longer verifies (after a planned rotation's overlap) and cannot be delivered again; create a new ApiToken"}
	if readyReason(s.base) != tokensv1alpha1.ReasonSaltRotated {
		s.record(corev1.EventTypeWarning, s.b.reason, s.b.message)
	}
	return s.end(0)
}

// leakEnded ends a show-once token presented as leaked at the auth
// endpoint (actLeakEnded): its hash is kept as revokedHash, the request as
// lastLeakRevocation (revokeLeakedCurrent, as for any token), the box is
// dropped, and the token stays blocked: nothing is re-issued, since no
// Secret could carry a new token and nobody could pick one up.
func (r *ApiTokenReconciler) leakEnded(s *pass) (bool, error) {
	st := &s.t.Status
	if note, leaked := revokeLeakedCurrent(st); leaked {
		st.Verification.Hash = ""
		if st.ShowOnce != nil {
			st.ShowOnce.Sealed = ""
		}
		s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonLeakRevoked,
			note+"; a show-once token is not re-issued: create a new ApiToken")
	}
	s.b = blocker{tokensv1alpha1.ReasonLeakRevoked, "The show-once token was presented as leaked at the auth endpoint and revoked; it is not re-issued: create a new ApiToken"}
	return s.end(0)
}
