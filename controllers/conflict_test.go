package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
)

// harnessSecret is the harness token's Secret.
var harnessSecret = types.NamespacedName{Namespace: "ns", Name: "tok-token"}

// editSecret changes the token's Secret as anyone who may edit Secrets in
// the namespace can.
func (h *harness) editSecret(mutate func(*corev1.Secret)) {
	h.t.Helper()
	var s corev1.Secret
	if err := h.c.Get(context.Background(), harnessSecret, &s); err != nil {
		h.t.Fatal(err)
	}
	mutate(&s)
	if err := h.c.Update(context.Background(), &s); err != nil {
		h.t.Fatal(err)
	}
}

// editSpec changes the ApiToken's spec as its owner would (a new generation).
func (h *harness) editSpec(mutate func(*tokensv1alpha1.ApiTokenSpec)) {
	h.t.Helper()
	at := h.token()
	mutate(&at.Spec)
	at.Generation++
	if err := h.c.Update(context.Background(), at); err != nil {
		h.t.Fatal(err)
	}
}

// ready is the ApiToken's Ready condition.
func (h *harness) ready() metav1.Condition {
	h.t.Helper()
	c := meta.FindStatusCondition(h.token().Status.Conditions, tokensv1alpha1.ConditionReady)
	if c == nil {
		h.t.Fatal("no Ready condition")
	}
	return *c
}

// verifiesIfUnrevoked asks the index whether tok would verify once
// spec.revoked is set back to false, before the operator saw it: what the
// status records, and nothing else, must refuse it.
func (h *harness) verifiesIfUnrevoked(tok string) bool {
	at := h.token()
	at.Spec.Revoked = false
	ix := authserver.NewIndex(h.r.Salt.Hasher)
	ix.Upsert(at)
	_, v := ix.Lookup(tok, h.clock.Now())
	return v == authserver.Valid
}

// disownings are the edits that take a token Secret from the operator.
var disownings = map[string]func(*corev1.Secret){
	"owner reference removed": func(s *corev1.Secret) { s.OwnerReferences = nil },
	"owner reference and labels removed (out of the cache)": func(s *corev1.Secret) {
		s.OwnerReferences = nil
		delete(s.Labels, tokensv1alpha1.ManagedByLabel)
		delete(s.Labels, tokensv1alpha1.ApiTokenLabel)
	},
	"another controller owner": func(s *corev1.Secret) {
		s.OwnerReferences = []metav1.OwnerReference{{APIVersion: tokensv1alpha1.GroupVersion.String(), Kind: "ApiToken",
			Name: "other", UID: "uid-other", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	},
}

// TestADisownedSecretNeverFreezesItsToken: anyone who may edit Secrets
// can take the token Secret from the operator (drop or replace its owner
// reference). The operator then cannot regenerate nor revoke through it,
// so the token it records stops verifying (a cut, taken on a live view),
// the condition says why, the Secret is left as it is, and once that
// Secret is gone a new token is issued into one of its own, within the
// old token's lifetime. The cut token never verifies again.
func TestADisownedSecretNeverFreezesItsToken(t *testing.T) {
	for name, disown := range disownings {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, graceSpec)
			h.mustReconcile()
			old := h.secretToken()
			issued := h.token().Status.IssuedAt
			h.events()

			h.editSecret(disown)
			h.clock.Step(time.Minute)
			res := h.mustReconcile()
			if h.verifies(old) {
				t.Fatal("the token of a Secret taken from the operator still verifies")
			}
			at := h.token()
			if c := h.ready(); at.Status.Phase != tokensv1alpha1.PhaseFailed || c.Reason != tokensv1alpha1.ReasonSecretConflict ||
				!strings.Contains(c.Message, "no longer verifies") {
				t.Fatalf("phase %s, Ready %s: %q", at.Status.Phase, c.Reason, c.Message)
			}
			if v := at.Status.Verification; v.Hash != "" || v.PendingHash != "" || v.PreviousHash != "" {
				t.Fatal("a hash is left in the verifying set")
			}
			if res.RequeueAfter != conflictRetry {
				t.Fatalf("RequeueAfter = %v, want %v", res.RequeueAfter, conflictRetry)
			}
			if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning SecretConflict ") {
				t.Fatalf("events = %q", evs)
			}
			if h.secretToken() != old {
				t.Fatal("the operator wrote a Secret it does not own")
			}

			// A regeneration asked meanwhile brings nothing back.
			h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
			h.mustReconcile()
			if h.verifies(old) || h.secretToken() != old {
				t.Fatal("a regeneration on a SecretConflict token left the old token verifying, or wrote the Secret")
			}

			// The Secret deleted: a new token, in a Secret of its own,
			// within the old lifetime.
			if err := h.c.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tok-token"}}); err != nil {
				t.Fatal(err)
			}
			h.mustReconcile()
			cur := h.secretToken()
			at = h.token()
			var s corev1.Secret
			_ = h.c.Get(context.Background(), harnessSecret, &s)
			switch {
			case cur == old || !h.verifies(cur) || h.verifies(old):
				t.Fatal("no new token, or the cut one verifies again")
			case at.Status.Phase != tokensv1alpha1.PhaseActive || !metav1.IsControlledBy(&s, at):
				t.Fatalf("phase %s, Secret owners %v", at.Status.Phase, s.OwnerReferences)
			case !at.Status.IssuedAt.Equal(issued):
				t.Fatalf("issuedAt moved from %v to %v: a Secret edit extended the token's lifetime", issued, at.Status.IssuedAt)
			}
		})
	}
}

// TestACutTokenIsNeverAdopted: a token cut because its Secret was taken
// from the operator is dead for good. Putting the owner reference back on
// the Secret (the cut token still in it, with its seal) does not revive
// it: a new token is issued into it.
func TestACutTokenIsNeverAdopted(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	old := h.secretToken()
	var owners []metav1.OwnerReference
	h.editSecret(func(s *corev1.Secret) { owners, s.OwnerReferences = s.OwnerReferences, nil })
	h.mustReconcile()
	if h.verifies(old) {
		t.Fatal("the token of a disowned Secret still verifies")
	}
	h.editSecret(func(s *corev1.Secret) { s.OwnerReferences = owners })
	h.mustReconcile()
	if cur := h.secretToken(); cur == old || h.verifies(old) || !h.verifies(cur) {
		t.Fatal("the cut token was adopted again")
	}
}

// TestADisownedSecretIsAHeldCutPastTheLimit: the cut of a disowned
// Secret's token is a cut nobody asked for: past the cut guard's limit it
// is held (the token keeps verifying, CutHeld says why), and a regenerate
// request releases it, which cuts it.
func TestADisownedSecretIsAHeldCutPastTheLimit(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.r.Cuts = &CutGuard{Max: 1, Window: time.Hour}
	h.mustReconcile()
	old := h.secretToken()
	h.r.Cuts.Allow(h.clock.Now(), 1, types.NamespacedName{Namespace: "elsewhere", Name: "cut"}) // another token was cut a moment ago
	h.editSecret(func(s *corev1.Secret) { s.OwnerReferences = nil })
	h.mustReconcile()
	if c := h.ready(); c.Reason != tokensv1alpha1.ReasonCutHeld || !h.verifies(old) {
		t.Fatalf("Ready %s (%q), verifies %v: want a held cut that keeps verifying", c.Reason, c.Message, h.verifies(old))
	}
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "release")
	h.mustReconcile()
	if c := h.ready(); c.Reason != tokensv1alpha1.ReasonSecretConflict || h.verifies(old) {
		t.Fatalf("after the release: Ready %s, verifies %v", c.Reason, h.verifies(old))
	}
}

// TestAStaleForeignViewCutsNothing: a cache that still holds the Secret
// as it was before the operator owned it cuts nothing: the cut is decided
// again on the live Secret, which is the operator's.
func TestAStaleForeignViewCutsNothing(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	old := h.secretToken()
	var s corev1.Secret
	_ = h.c.Get(context.Background(), harnessSecret, &s)
	s.OwnerReferences = nil
	var res ctrl.Result
	h.withLaggingCache(func() { res = h.mustReconcile() }, &s)
	if !h.verifies(old) || res.RequeueAfter != staleViewRetry {
		t.Fatalf("a stale foreign view cut the token (requeue %v)", res.RequeueAfter)
	}
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || !h.verifies(old) {
		t.Fatalf("phase %s once the cache caught up", at.Status.Phase)
	}
}

// TestRevocationIsRecordedWhateverTheSecret: a revocation moves the hash
// out of the verifying set before anything else, whatever the Secret's
// state (taken from the operator, or a spec the operator cannot read), so
// that setting spec.revoked back to false never makes the same token
// verify again: un-revoking issues a new token, or none while the Secret
// is not the operator's, and never adopts the revoked one.
func TestRevocationIsRecordedWhateverTheSecret(t *testing.T) {
	t.Run("Secret taken from the operator", func(t *testing.T) {
		h := newHarness(t, graceSpec)
		h.r.Cuts = &CutGuard{Max: 1, Window: time.Hour}
		h.r.Cuts.Allow(h.clock.Now(), 1, types.NamespacedName{Namespace: "elsewhere", Name: "cut"}) // the disown's cut is held: the token still verifies
		h.mustReconcile()
		old := h.secretToken()
		oldHash := h.token().Status.Verification.Hash
		var owners []metav1.OwnerReference
		h.editSecret(func(s *corev1.Secret) { owners, s.OwnerReferences = s.OwnerReferences, nil })
		h.editSpec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Revoked = true })
		h.mustReconcile()
		at := h.token()
		if v := at.Status.Verification; at.Status.Phase != tokensv1alpha1.PhaseRevoked || v.Hash != "" || v.RevokedHash != oldHash {
			t.Fatalf("revocation not recorded: phase %s, hash kept %v, revoked hash recorded %v", at.Status.Phase, v.Hash != "", v.RevokedHash == oldHash)
		}
		if h.verifiesIfUnrevoked(old) {
			t.Fatal("the revoked token verifies once spec.revoked is set back, before the operator sees it")
		}
		if h.secretToken() != old {
			t.Fatal("the operator wrote a Secret it does not own")
		}

		h.editSpec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Revoked = false })
		h.clock.Step(time.Hour)
		h.mustReconcile()
		if h.verifies(old) || h.token().Status.Phase != tokensv1alpha1.PhaseFailed {
			t.Fatalf("un-revoked with a foreign Secret: phase %s, the revoked token verifies: %v", h.token().Status.Phase, h.verifies(old))
		}
		h.events()

		h.editSecret(func(s *corev1.Secret) { s.OwnerReferences = owners }) // the revoked token, sealed, still in it
		h.mustReconcile()
		cur := h.secretToken()
		at = h.token()
		switch {
		case cur == old || h.verifies(old) || !h.verifies(cur):
			t.Fatal("un-revoking adopted the revoked token")
		case !at.Status.IssuedAt.Time.Equal(h.clock.Now().Truncate(time.Second)):
			t.Fatalf("issuedAt %v: un-revoking starts a new lifetime", at.Status.IssuedAt)
		}
		if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Normal Unrevoked ") {
			t.Fatalf("events = %q", evs)
		}
	})
	t.Run("spec the operator cannot read", func(t *testing.T) {
		h := newHarness(t, graceSpec)
		h.mustReconcile()
		old := h.secretToken()
		h.editSpec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Revoked, s.Duration = true, unparseableDuration })
		h.mustReconcile()
		at := h.token()
		if v := at.Status.Verification; at.Status.Phase != tokensv1alpha1.PhaseRevoked || v.Hash != "" || v.RevokedHash == "" {
			t.Fatalf("revocation not recorded: phase %s, hash kept %v, revoked hash recorded %v", at.Status.Phase, v.Hash != "", v.RevokedHash != "")
		}
		if h.verifiesIfUnrevoked(old) || h.secretToken() != "" {
			t.Fatal("the revoked token would verify again, or is still in the Secret")
		}
	})
}

// unparseableDuration is a duration the CRD's pattern accepts but
// token.ParseDuration refuses (longer than time.Duration holds).
const unparseableDuration = "106752d"

// TestAnUnparseableDurationNeverYieldsATokenWithoutExpiry: a duration the
// CRD lets in and the operator cannot parse (a webhook-less install) is
// InvalidSpec: no token is issued, and a token already issued keeps the
// expiry it was recorded with, and does not verify while the spec cannot
// be read; once fixed, it verifies again, nothing re-issued.
func TestAnUnparseableDurationNeverYieldsATokenWithoutExpiry(t *testing.T) {
	t.Run("new", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: unparseableDuration})
		h.mustReconcile()
		at := h.token()
		if c := h.ready(); at.Status.Phase != tokensv1alpha1.PhaseFailed || c.Reason != tokensv1alpha1.ReasonInvalidSpec || at.Status.Verification != nil {
			t.Fatalf("phase %s, Ready %s, a token recorded %v", at.Status.Phase, c.Reason, at.Status.Verification != nil)
		}
		if err := h.c.Get(context.Background(), harnessSecret, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a Secret was written: %v", err)
		}
	})
	for _, from := range []string{"30d", tokensv1alpha1.Unlimited} {
		t.Run("edited from "+from, func(t *testing.T) {
			h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: from})
			h.mustReconcile()
			old := h.secretToken()
			expires := h.token().Status.ExpiresAt
			h.editSpec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = unparseableDuration })
			h.mustReconcile()
			at := h.token()
			switch {
			case at.Status.Phase != tokensv1alpha1.PhaseFailed || h.ready().Reason != tokensv1alpha1.ReasonInvalidSpec:
				t.Fatalf("phase %s, Ready %s", at.Status.Phase, h.ready().Reason)
			case h.verifies(old):
				t.Fatal("the token verifies under a duration the operator cannot read")
			case !at.Status.ExpiresAt.Equal(expires):
				t.Fatalf("expiresAt moved from %v to %v", expires, at.Status.ExpiresAt)
			}
			h.editSpec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = from })
			h.mustReconcile()
			if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || h.secretToken() != old || !h.verifies(old) {
				t.Fatalf("once fixed: phase %s, same token %v", at.Status.Phase, h.secretToken() == old)
			}
		})
	}
}

// TestALeakRevocationReleasesAHeldCut: a held cut keeps its token
// verifying until someone asks; a token presented as leaked at
// /v1/revoke has been asked about. It is cut at once (revokedHash, the
// request kept as lastLeakRevocation, a LeakRevoked Warning) and the
// Ready message no longer says it keeps verifying.
func TestALeakRevocationReleasesAHeldCut(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.r.Cuts = &CutGuard{Max: 1, Window: time.Hour}
	h.mustReconcile()
	old := h.secretToken()
	hash := h.token().Status.Verification.Hash
	h.r.Cuts.Allow(h.clock.Now(), 1, types.NamespacedName{Namespace: "elsewhere", Name: "cut"})
	h.editSecret(func(s *corev1.Secret) { s.OwnerReferences = nil })
	h.mustReconcile()
	if c := h.ready(); c.Reason != tokensv1alpha1.ReasonCutHeld {
		t.Fatalf("Ready %s: want a held cut", c.Reason)
	}
	h.events()
	h.recordLeak(hash)
	h.mustReconcile()
	at := h.token()
	c := h.ready()
	switch {
	case h.verifies(old):
		t.Fatal("the leaked token verifies")
	case c.Reason == tokensv1alpha1.ReasonCutHeld || strings.Contains(c.Message, "keeps verifying"):
		t.Fatalf("Ready %s (%q): still held after a leak revocation", c.Reason, c.Message)
	case at.Status.Verification.RevokedHash != hash || len(at.Status.Verification.LeakRevocations) != 0 || at.Status.LastLeakRevocation == nil:
		t.Fatalf("verification %+v, lastLeakRevocation %v", at.Status.Verification, at.Status.LastLeakRevocation)
	}
	found := false
	for _, e := range h.events() {
		found = found || strings.HasPrefix(e, "Warning LeakRevoked ")
	}
	if !found {
		t.Error("no LeakRevoked Event")
	}
}
