package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
)

// recordLeak writes a leak revocation of the recorded hash encoded, as
// the auth endpoint's /v1/revoke does (internal/authserver/revoke.go).
func (h *harness) recordLeak(encoded string) {
	h.t.Helper()
	at := h.token()
	at.Status.Verification.LeakRevocations = append(at.Status.Verification.LeakRevocations,
		tokensv1alpha1.LeakRevocation{Token: lifecycle.HashRef(encoded), RequestedAt: metav1.NewTime(h.clock.Now()), Client: "192.0.2.7"})
	if err := h.c.Status().Update(context.Background(), at); err != nil {
		h.t.Fatal(err)
	}
}

// TestLeakOfTheCurrentToken: a leak revocation of the current token
// refuses it at once; the pass issues a new token into the Secret with no
// grace for the leaked one (kept as revokedHash), within the leaked
// token's lifetime, says so (LeakRevoked, naming the client) and clears
// the request, and a second pass rotates nothing more.
func TestLeakOfTheCurrentToken(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	issued := h.token().Status.IssuedAt
	leaked := h.secretToken()
	h.events()
	h.clock.Step(time.Hour)
	h.recordLeak(h.token().Status.Verification.Hash)
	if h.verifies(leaked) {
		t.Fatal("the leaked token verifies once its revocation is recorded")
	}
	h.mustReconcile()
	fresh := h.secretToken()
	at := h.token()
	v := at.Status.Verification
	switch {
	case fresh == leaked:
		t.Fatal("no new token in the Secret")
	case !h.verifies(fresh):
		t.Fatal("the new token does not verify")
	case h.verifies(leaked):
		t.Fatal("the leaked token verifies after the pass")
	case v.PreviousHash != "" || v.PreviousValidUntil != nil:
		t.Fatal("the leaked token was kept for a grace period")
	case v.RevokedHash == "" || len(v.LeakRevocations) != 0:
		t.Fatalf("revokedHash %q, leakRevocations %v", v.RevokedHash, v.LeakRevocations)
	case !at.Status.IssuedAt.Equal(issued):
		t.Fatalf("issuedAt %v, want the leaked token's %v: a leak never lengthens a lifetime", at.Status.IssuedAt, issued)
	case at.Status.Phase != tokensv1alpha1.PhaseActive:
		t.Fatalf("phase %s", at.Status.Phase)
	case at.Status.LastLeakRevocation == nil || at.Status.LastLeakRevocation.Client != "192.0.2.7" || at.Status.LastLeakRevocation.Token != lifecycle.HashRef(v.RevokedHash):
		t.Fatalf("lastLeakRevocation %+v", at.Status.LastLeakRevocation)
	}
	evs := h.events()
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning LeakRevoked ") || !strings.Contains(evs[0], "192.0.2.7") {
		t.Fatalf("events %q, want one LeakRevoked naming the client", evs)
	}
	for _, e := range evs {
		if strings.Contains(e, leaked) || strings.Contains(e, v.RevokedHash) {
			t.Fatal("an Event carries the token or its hash")
		}
	}
	h.mustReconcile()
	if h.secretToken() != fresh || len(h.events()) != 0 {
		t.Fatal("a second pass rotated again")
	}
}

// TestLeakOfThePreviousToken: a leak revocation of the replaced token, in
// its grace, ends that grace and rotates nothing.
func TestLeakOfThePreviousToken(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	old := h.secretToken()
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.mustReconcile()
	current := h.secretToken()
	h.events()
	h.recordLeak(h.token().Status.Verification.PreviousHash)
	if h.verifies(old) {
		t.Fatal("the previous token verifies once its leak is recorded")
	}
	h.mustReconcile()
	v := h.token().Status.Verification
	switch {
	case h.secretToken() != current || !h.verifies(current):
		t.Fatal("the current token was replaced or stopped verifying")
	case v.PreviousHash != "" || v.PreviousValidUntil != nil || v.RevokedHash == "" || len(v.LeakRevocations) != 0:
		t.Fatalf("after the pass: previousHash %q, revokedHash %q, leakRevocations %v", v.PreviousHash, v.RevokedHash, v.LeakRevocations)
	case h.verifies(old):
		t.Fatal("the previous token verifies after the pass")
	case h.token().Status.LastLeakRevocation == nil || h.token().Status.LastLeakRevocation.Token != lifecycle.HashRef(v.RevokedHash):
		t.Fatalf("lastLeakRevocation %+v", h.token().Status.LastLeakRevocation)
	}
	if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning LeakRevoked ") {
		t.Fatalf("events %q", evs)
	}
}

// TestLeakOfAHashNoLongerRecorded: a request naming a hash the record no
// longer holds (replaced since) is dropped, with nothing rotated.
func TestLeakOfAHashNoLongerRecorded(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	current := h.secretToken()
	h.recordLeak("not-a-recorded-hash")
	h.events()
	h.mustReconcile()
	if h.secretToken() != current || len(h.token().Status.Verification.LeakRevocations) != 0 || len(h.events()) != 0 {
		t.Fatal("a stale request rotated, was kept or recorded an Event")
	}
}

// TestLeakRevocationCrashSafety: whichever write of the pass fails, the
// leaked token stays refused, the Secret's token verifies, and the retry
// ends with a new token and the request handled.
func TestLeakRevocationCrashSafety(t *testing.T) {
	for n := 1; n <= 3; n++ {
		t.Run(fmt.Sprintf("fail write %d", n), func(t *testing.T) {
			h := newHarness(t, graceSpec)
			h.mustReconcile()
			leaked := h.secretToken()
			h.recordLeak(h.token().Status.Verification.Hash)
			h.failWrite = n
			if _, err := h.reconcile(); !errors.Is(err, errInjected) {
				t.Fatalf("reconcile = %v, want the injected error", err)
			}
			if h.verifies(leaked) {
				t.Fatalf("after failing write %d the leaked token verifies", n)
			}
			if cur := h.secretToken(); cur != leaked && !h.verifies(cur) {
				t.Fatalf("after failing write %d the Secret's new token does not verify", n)
			}
			h.mustReconcile()
			fresh := h.secretToken()
			if fresh == leaked || !h.verifies(fresh) || h.verifies(leaked) || len(h.token().Status.Verification.LeakRevocations) != 0 {
				t.Fatal("the retry did not finish the leak revocation")
			}
		})
	}
}

// TestLeakRevocationRecordedWakesTheReconciler: the status write that
// records a leak revocation queues a pass.
func TestLeakRevocationRecordedWakesTheReconciler(t *testing.T) {
	old := &tokensv1alpha1.ApiToken{Status: tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{Hash: "h"}}}
	withLeak := old.DeepCopy()
	withLeak.Status.Verification.LeakRevocations = []tokensv1alpha1.LeakRevocation{{Token: lifecycle.HashRef("h")}}
	for _, c := range []struct {
		name     string
		old, cur *tokensv1alpha1.ApiToken
		want     bool
	}{
		{"recorded", old, withLeak, true},
		{"unchanged", withLeak, withLeak.DeepCopy(), false},
		{"handled", withLeak, old, false},
	} {
		if got := leakRevocationRecorded.Update(event.UpdateEvent{ObjectOld: c.old, ObjectNew: c.cur}); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
