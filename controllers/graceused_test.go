package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

var graceUntilUsedSpec = tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d",
	Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m", GraceUntilNewTokenUsed: true}}

// recordFirstUse writes status.verification.firstUsedAt as the auth
// endpoint's usage writers do (internal/authserver: a use of the current
// token seen by a replica).
func (h *harness) recordFirstUse(at time.Time) {
	h.t.Helper()
	tok := h.token()
	used := metav1.NewTime(at)
	tok.Status.Verification.FirstUsedAt = &used
	if err := h.c.Status().Update(context.Background(), tok); err != nil {
		h.t.Fatal(err)
	}
}

// TestGraceEndsWhenTheNewTokenIsUsed: with graceUntilNewTokenUsed, a
// recorded first use of the new token ends the previous token's grace:
// the index refuses it from then on, and the next pass drops its hash from
// status and says so (GraceEnded). A new token starts with no first use;
// without one, the grace lasts gracePeriod.
func TestGraceEndsWhenTheNewTokenIsUsed(t *testing.T) {
	h := newHarness(t, graceUntilUsedSpec)
	h.mustReconcile()
	old := h.secretToken()
	h.clock.Step(time.Minute)
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.mustReconcile()
	h.events()
	fresh := h.secretToken()
	if !h.verifies(old) || !h.verifies(fresh) {
		t.Fatal("both tokens verify in the grace")
	}

	h.clock.Step(30 * time.Second)
	used := h.clock.Now().Truncate(time.Second)
	h.recordFirstUse(used)
	if h.verifies(old) {
		t.Fatal("the previous token verifies after the new one's first use was recorded")
	}
	h.mustReconcile()
	at := h.token()
	if v := at.Status.Verification; v.PreviousHash != "" || v.PreviousValidUntil != nil || !v.FirstUsedAt.Time.Equal(used) {
		t.Fatalf("after the pass: previousHash %q, previousValidUntil %v, firstUsedAt %v", v.PreviousHash, v.PreviousValidUntil, v.FirstUsedAt)
	}
	evs := h.events()
	want := "Normal GraceEnded The new token was used at " + used.UTC().Format(time.RFC3339) + "; the previous token is refused from now on"
	if len(evs) != 1 || !strings.HasPrefix(evs[0], want) {
		t.Fatalf("events %q, want one starting %q", evs, want)
	}
	if !h.verifies(fresh) {
		t.Fatal("the new token stopped verifying")
	}
	h.mustReconcile()
	if evs := h.events(); len(evs) != 0 {
		t.Fatalf("a second pass recorded %q", evs)
	}

	// A new token: the first use recorded belonged to the one replaced.
	h.clock.Step(time.Minute)
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "2")
	h.mustReconcile()
	at = h.token()
	if v := at.Status.Verification; v.FirstUsedAt != nil || v.PreviousHash == "" {
		t.Fatalf("after a regeneration: firstUsedAt %v, previousHash %q", v.FirstUsedAt, v.PreviousHash)
	}
	// No use of it: the previous token verifies for the whole gracePeriod.
	h.clock.Step(5*time.Minute - time.Second)
	h.mustReconcile()
	if !h.verifies(fresh) {
		t.Fatal("the previous token was refused before gracePeriod, with no use of the new one")
	}
	h.clock.Step(time.Second)
	h.mustReconcile()
	if h.verifies(fresh) || h.token().Status.Verification.PreviousHash != "" {
		t.Fatal("the previous token outlived its gracePeriod")
	}
	for _, e := range h.events() {
		if strings.Contains(e, tokensv1alpha1.ReasonGraceEnded) {
			t.Fatalf("a grace that ran its length recorded %q", e)
		}
	}
}

// TestFirstUseRecordedWakesTheReconciler: the status write that records a
// first use queues a pass (status writes do not, otherwise); other status
// writes, such as lastUsedAt, do not.
func TestFirstUseRecordedWakesTheReconciler(t *testing.T) {
	used := metav1.NewTime(t0)
	old := &tokensv1alpha1.ApiToken{Status: tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: "h"}}}
	withUse := old.DeepCopy()
	withUse.Status.Verification.FirstUsedAt = &used
	lastUse := old.DeepCopy()
	lastUse.Status.LastUsedAt = &used
	for _, c := range []struct {
		name     string
		old, cur *tokensv1alpha1.ApiToken
		want     bool
	}{
		{"first use recorded", old, withUse, true},
		{"last use recorded", old, lastUse, false},
		{"first use unchanged", withUse, withUse.DeepCopy(), false},
		{"first use cleared by a new token", withUse, old, false},
	} {
		if got := firstUseRecorded.Update(event.UpdateEvent{ObjectOld: c.old, ObjectNew: c.cur}); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
