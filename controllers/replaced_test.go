package controllers

import (
	"testing"
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// replacedHash reports whether the status records tok as its replaced
// token (status.verification.replacedHash), which never verifies and is
// kept so that the auth endpoint can report it presented again.
func (h *harness) replacedHash(tok string) bool {
	h.t.Helper()
	v := h.token().Status.Verification
	return v != nil && v.ReplacedHash != "" && v.ReplacedHash == h.r.Salt.Hasher().Hash(tok).Encode()
}

// TestReplacedTokenKept: a token a regeneration replaced is kept as
// replacedHash once its grace is over (or at once without one), through a
// later regeneration (the last one replaced) and a revocation, and it
// never verifies.
func TestReplacedTokenKept(t *testing.T) {
	t.Run("with grace: kept when the grace ends", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}})
		h.mustReconcile()
		old := h.secretToken()
		h.annotate(tokensv1alpha1.RegenerateAnnotation, "a")
		h.mustReconcile()
		if !h.verifies(old) || h.replacedHash(old) {
			t.Fatal("inside its grace the replaced token verifies and is the previous one, not replacedHash")
		}
		h.clock.Step(5 * time.Minute)
		h.mustReconcile()
		if v := h.token().Status.Verification; v.PreviousHash != "" || !h.replacedHash(old) || h.verifies(old) {
			t.Fatalf("after the grace: previousHash %q, replaced %v, verifies %v", v.PreviousHash, h.replacedHash(old), h.verifies(old))
		}
	})
	t.Run("without grace: kept at once, then the next one replaced", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
		h.mustReconcile()
		first := h.secretToken()
		h.annotate(tokensv1alpha1.RegenerateAnnotation, "a")
		h.mustReconcile()
		if !h.replacedHash(first) || h.verifies(first) {
			t.Fatal("a token replaced without grace is not kept as replacedHash")
		}
		second := h.secretToken()
		h.annotate(tokensv1alpha1.RegenerateAnnotation, "b")
		h.mustReconcile()
		if !h.replacedHash(second) || h.verifies(second) {
			t.Fatal("the last replaced token is not the one kept")
		}
		at := h.token()
		at.Spec.Revoked = true
		if err := h.c.Update(t.Context(), at); err != nil {
			t.Fatal(err)
		}
		h.mustReconcile()
		if v := h.token().Status.Verification; !h.replacedHash(second) || v.RevokedHash == "" {
			t.Fatalf("a revocation dropped the replaced token: %+v", v)
		}
	})
}

// TestReplacedTokenKeptThroughAConflictCut: a Secret taken from the
// operator cuts every hash from the verifying set; the token replaced
// last (here the previous one, in its grace) stays known as replacedHash,
// so that a client presenting it later is reported as for any replaced
// token, and it never verifies.
func TestReplacedTokenKeptThroughAConflictCut(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	first := h.secretToken()
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "a")
	h.mustReconcile()
	if !h.verifies(first) {
		t.Fatal("the replaced token is not in its grace")
	}
	h.editSecret(disownings["owner reference removed"])
	h.clock.Step(time.Minute)
	h.mustReconcile()
	if v := h.token().Status.Verification; h.verifies(first) || !h.replacedHash(first) || v.RevokedHash == "" {
		t.Fatalf("after the cut: verifies %v, replaced %v, revokedHash set %v", h.verifies(first), h.replacedHash(first), v.RevokedHash != "")
	}
}
