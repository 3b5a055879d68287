package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// TestAFailedSecretWriteSaysWhyInReady: a pass whose Secret write fails
// leaves Ready saying why (False, ReconcileFailed, the error), not what
// the last pass that succeeded said; the rest of the status is what was
// written before the failure, and the retry makes Ready true again.
func TestAFailedSecretWriteSaysWhyInReady(t *testing.T) {
	for name, c := range map[string]struct {
		setup     func(h *harness)
		failWrite int
		phase     tokensv1alpha1.Phase
	}{
		// A first token: the Secret's creation is the first write.
		"first token": {func(*harness) {}, 1, ""},
		// A regeneration: pending status, then the Secret (write 2).
		"regeneration": {func(h *harness) {
			h.mustReconcile()
			h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
			h.clock.Step(time.Minute)
		}, 2, tokensv1alpha1.PhaseActive},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, graceSpec)
			c.setup(h)
			h.failWrite = c.failWrite
			if _, err := h.reconcile(); !errors.Is(err, errInjected) {
				t.Fatalf("reconcile = %v, want the injected error", err)
			}
			at := h.token()
			ready := meta.FindStatusCondition(at.Status.Conditions, tokensv1alpha1.ConditionReady)
			if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != tokensv1alpha1.ReasonReconcileFailed ||
				!strings.Contains(ready.Message, "writing Secret ns/tok-token") || !strings.Contains(ready.Message, errInjected.Error()) {
				t.Fatalf("Ready = %+v, want False %s saying the Secret write failed", ready, tokensv1alpha1.ReasonReconcileFailed)
			}
			if !ready.LastTransitionTime.Time.Equal(h.clock.Now()) {
				t.Fatalf("Ready's lastTransitionTime = %v, want %v", ready.LastTransitionTime, h.clock.Now())
			}
			if at.Status.Phase != c.phase {
				t.Fatalf("phase %q, want %q (as the last pass that succeeded left it)", at.Status.Phase, c.phase)
			}
			h.mustReconcile()
			at = h.token()
			if !meta.IsStatusConditionTrue(at.Status.Conditions, tokensv1alpha1.ConditionReady) || !h.verifies(h.secretToken()) {
				t.Fatalf("after the retry: phase %s, conditions %+v", at.Status.Phase, at.Status.Conditions)
			}
		})
	}
}

// TestARaceLeavesReadyAsItWas: a pass that loses a race (a conflict on
// its Secret write) is retried at once and fails nothing: Ready stays as
// the last pass left it instead of flipping to ReconcileFailed and back.
func TestARaceLeavesReadyAsItWas(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.clock.Step(time.Minute)
	h.failWrite, h.failWith = 2, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, "tok-token", errors.New("the object has been modified"))
	if _, err := h.reconcile(); !apierrors.IsConflict(err) {
		t.Fatalf("reconcile = %v, want the conflict", err)
	}
	if c := h.ready(); c.Status != metav1.ConditionTrue || c.Reason != tokensv1alpha1.ReasonActive {
		t.Fatalf("after a lost race Ready is %s %s (%q), want True %s as before", c.Status, c.Reason, c.Message, tokensv1alpha1.ReasonActive)
	}
	h.failWith = nil
	h.mustReconcile()
	if !h.verifies(h.secretToken()) {
		t.Fatal("after the retry the Secret's token does not verify")
	}
}

// failingSecretReads fails every read of a Secret through the cache.
type failingSecretReads struct{ client.Client }

func (f failingSecretReads) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		return errInjected
	}
	return f.Client.Get(ctx, key, obj, opts...)
}

// TestAFailedPassNeverLiftsAHeldCut: Ready is the record of a held cut
// (CutHeld), so a pass of a held token that fails keeps it: once the cut
// guard would allow a cut again, the token is still held and verifying
// until a person releases it.
func TestAFailedPassNeverLiftsAHeldCut(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.r.Cuts = &CutGuard{Max: 1, Window: time.Hour}
	h.mustReconcile()
	old := h.secretToken()
	h.r.Cuts.Allow(h.clock.Now(), 1, types.NamespacedName{Namespace: "elsewhere", Name: "cut"})
	h.editSecret(func(s *corev1.Secret) { s.OwnerReferences = nil })
	h.mustReconcile()
	if c := h.ready(); c.Reason != tokensv1alpha1.ReasonCutHeld {
		t.Fatalf("Ready %s, want %s", c.Reason, tokensv1alpha1.ReasonCutHeld)
	}
	c := h.r.Client
	h.r.Client = failingSecretReads{c}
	if _, err := h.reconcile(); !errors.Is(err, errInjected) {
		t.Fatalf("reconcile = %v, want the injected error", err)
	}
	h.r.Client = c
	if c := h.ready(); c.Reason != tokensv1alpha1.ReasonCutHeld {
		t.Fatalf("after a failed pass Ready is %s (%q), want %s kept", c.Reason, c.Message, tokensv1alpha1.ReasonCutHeld)
	}
	h.r.Cuts.Set(10, 0, time.Hour) // the guard would allow the cut now
	h.mustReconcile()
	if c := h.ready(); c.Reason != tokensv1alpha1.ReasonCutHeld || !h.verifies(old) {
		t.Fatalf("Ready %s, verifies %v: the held cut was lifted without a release", c.Reason, h.verifies(old))
	}
}

// TestTheRevokedEventOutlivesAFailedStatusWrite: the Revoked Event is
// recorded once the revocation's record is written, so a later write of
// the pass that fails (a spec edit racing it) does not lose it, and the
// retry does not record it twice.
func TestTheRevokedEventOutlivesAFailedStatusWrite(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	h.events()
	h.editSpec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Revoked = true })
	h.failWrite = 3 // the revocation's record, the emptied Secret, then the status
	if _, err := h.reconcile(); !errors.Is(err, errInjected) {
		t.Fatalf("reconcile = %v, want the injected error", err)
	}
	h.mustReconcile()
	var revoked []string
	for _, e := range h.events() {
		if strings.HasPrefix(e, "Normal "+tokensv1alpha1.ReasonRevoked+" ") {
			revoked = append(revoked, e)
		}
	}
	if len(revoked) != 1 || h.token().Status.Phase != tokensv1alpha1.PhaseRevoked || h.secretToken() != "" {
		t.Fatalf("Revoked Events %q, phase %s: want one, Revoked, an empty Secret", revoked, h.token().Status.Phase)
	}
}
