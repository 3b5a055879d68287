package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	"crypto/ecdh"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	corev1 "k8s.io/api/core/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
)

// newShowOnceHarness is a harness of a show-once token whose creator holds priv.
func newShowOnceHarness(t *testing.T, window string) (*harness, *ecdh.PrivateKey) {
	t.Helper()
	priv, pub, err := showonce.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d",
		ShowOnce: &tokensv1alpha1.ShowOnce{PublicKey: pub, PickupWindow: window}})
	return h, priv
}

// open opens the sealed box of the harness's token as its creator does.
func (h *harness) open(priv *ecdh.PrivateKey) (tok, proof string) {
	h.t.Helper()
	at := h.token()
	if at.Status.ShowOnce == nil || at.Status.ShowOnce.Sealed == "" {
		h.t.Fatalf("no sealed token in status: %+v", at.Status.ShowOnce)
	}
	tok, proof, err := showonce.Open(priv, showonce.Binding(at.Namespace, at.Name, string(at.UID)), at.Status.ShowOnce.Sealed)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok, proof
}

// noSecret fails unless no Secret exists in the harness's namespace.
func (h *harness) noSecret() {
	h.t.Helper()
	var list corev1.SecretList
	if err := h.c.List(context.Background(), &list, client.InNamespace("ns")); err != nil {
		h.t.Fatal(err)
	}
	if len(list.Items) > 0 {
		h.t.Fatalf("a show-once token got a Secret: %s", list.Items[0].Name)
	}
}

func TestShowOnceMintsOnceInOneStatusWrite(t *testing.T) {
	h, priv := newShowOnceHarness(t, "")
	stale := h.token() // the ApiToken as a cache behind the mint holds it
	res := h.mustReconcile()
	if h.writes != 1 {
		t.Errorf("a mint took %d writes, want 1 (the hash and the sealed box in one status write)", h.writes)
	}
	h.noSecret()
	at := h.token()
	so, v := at.Status.ShowOnce, at.Status.Verification
	if v == nil || v.Hash == "" || so == nil || so.Sealed == "" || so.PickupBy == nil || so.PickedUpAt != nil {
		t.Fatalf("after the mint: verification %+v, showOnce %+v", v, so)
	}
	if want := t0.Truncate(time.Second).Add(5 * time.Minute); !so.PickupBy.Time.Equal(want) || res.RequeueAfter != want.Sub(t0) {
		t.Errorf("pickupBy %v (requeue %v), want %v (the default window), requeued at it", so.PickupBy, res.RequeueAfter, want)
	}
	if at.Status.Phase != tokensv1alpha1.PhasePending || readyReason(at) != tokensv1alpha1.ReasonPickupPending || at.Status.SecretRef != nil {
		t.Errorf("phase %s, Ready %s, secretRef %v; want Pending, PickupPending, none", at.Status.Phase, readyReason(at), at.Status.SecretRef)
	}
	tok, _ := h.open(priv)
	if h.verifies(tok) {
		t.Error("the token verifies before it was picked up")
	}

	// A second pass mints nothing.
	h.mustReconcile()
	if again := h.token(); again.Status.Verification.Hash != v.Hash || again.Status.ShowOnce.Sealed != so.Sealed {
		t.Error("a second pass minted again")
	}

	// A pass on a stale copy (a second replica, a cache behind) fails
	// its write and mints nothing.
	h.r.Client = staleToken{h.r.Client, stale}
	if _, err := h.reconcile(); !apierrors.IsConflict(err) {
		t.Errorf("a pass on a stale copy: %v, want a conflict", err)
	}
	if again := h.token(); again.Status.Verification.Hash != v.Hash || again.Status.ShowOnce.Sealed != so.Sealed {
		t.Error("a pass on a stale copy replaced the minted token")
	}
	for _, e := range h.events() {
		if strings.Contains(e, tok) || strings.Contains(e, so.Sealed) {
			t.Errorf("an Event holds the token or its box: %s", e)
		}
	}
}

// staleToken reads the ApiToken as a cache that is behind holds it.
type staleToken struct {
	client.Client
	at *tokensv1alpha1.ApiToken
}

func (s staleToken) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if at, ok := obj.(*tokensv1alpha1.ApiToken); ok && key == (types.NamespacedName{Namespace: s.at.Namespace, Name: s.at.Name}) {
		*at = *s.at.DeepCopy()
		return nil
	}
	return s.Client.Get(ctx, key, obj, opts...)
}

func TestShowOnceFailedWriteMintsNothing(t *testing.T) {
	h, _ := newShowOnceHarness(t, "")
	h.failWrite = 1
	if _, err := h.reconcile(); err == nil {
		t.Fatal("the failed status write was not reported")
	}
	if at := h.token(); at.Status.Verification != nil || at.Status.ShowOnce != nil {
		t.Fatalf("a failed write left a record: %+v %+v", at.Status.Verification, at.Status.ShowOnce)
	}
	h.mustReconcile()
	if at := h.token(); at.Status.ShowOnce == nil || at.Status.ShowOnce.Sealed == "" {
		t.Fatal("the next pass did not mint")
	}
	h.noSecret()
}

func TestShowOncePickUp(t *testing.T) {
	h, priv := newShowOnceHarness(t, "")
	h.mustReconcile()
	tok, proof := h.open(priv)
	h.events()

	// A proof that is not the sealed one: a guess, a proof of another
	// token, the token itself.
	other, otherPriv := newShowOnceHarness(t, "")
	other.mustReconcile()
	_, otherProof := other.open(otherPriv)
	for _, wrong := range []string{"x", otherProof, tok, proof[:len(proof)-1], proof + "A"} {
		h.annotate(tokensv1alpha1.PickedUpAnnotation, wrong)
		h.mustReconcile()
		at := h.token()
		if at.Status.ShowOnce.PickedUpAt != nil || h.verifies(tok) || at.Status.ShowOnce.Sealed == "" {
			t.Fatalf("an acknowledgement without the proof (%.6s...) picked the token up", wrong)
		}
		if ev := h.events(); len(ev) != 1 || !strings.Contains(ev[0], tokensv1alpha1.ReasonPickupRefused) {
			t.Errorf("a refused acknowledgement recorded %v, want one PickupRefused Event", ev)
		}
	}

	h.annotate(tokensv1alpha1.PickedUpAnnotation, proof)
	h.mustReconcile()
	at := h.token()
	if at.Status.ShowOnce.PickedUpAt == nil || at.Status.ShowOnce.Sealed != "" {
		t.Fatalf("the proof did not pick the token up, or the box stayed: %+v", at.Status.ShowOnce)
	}
	if !h.verifies(tok) || at.Status.Phase != tokensv1alpha1.PhaseActive {
		t.Fatalf("a picked-up token: verifies %v, phase %s", h.verifies(tok), at.Status.Phase)
	}
	if c := meta.FindStatusCondition(at.Status.Conditions, tokensv1alpha1.ConditionReady); c == nil || strings.Contains(c.Message, "Secret") {
		t.Errorf("Ready of a show-once token names a Secret: %+v", c)
	}
	for _, e := range h.events() {
		if strings.Contains(e, tok) || strings.Contains(e, proof) {
			t.Errorf("an Event holds the token or the proof: %s", e)
		}
	}

	// A regenerate request changes nothing: a show-once token is never
	// re-issued (nobody could pick a new one up).
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.mustReconcile()
	if again := h.token(); again.Status.Verification.Hash != at.Status.Verification.Hash || !h.verifies(tok) {
		t.Error("a regenerate request re-issued a show-once token")
	}

	// Revoked: refused, as any token.
	at = h.token()
	at.Spec.Revoked = true
	if err := h.c.Update(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	if h.verifies(tok) || h.token().Status.Phase != tokensv1alpha1.PhaseRevoked {
		t.Error("a revoked show-once token still verifies")
	}
	h.noSecret()
}

func TestShowOncePickupWindow(t *testing.T) {
	h, priv := newShowOnceHarness(t, "2m")
	h.mustReconcile()
	tok, proof := h.open(priv)

	// The window ends: the pass at its deadline drops the box, and the
	// token is refused for good, even with the right proof after it.
	h.clock.Step(2 * time.Minute)
	h.mustReconcile()
	at := h.token()
	if at.Status.ShowOnce.Sealed != "" || at.Status.Phase != tokensv1alpha1.PhaseExpired || readyReason(at) != tokensv1alpha1.ReasonPickupExpired {
		t.Fatalf("past the window: sealed %t, phase %s, Ready %s", at.Status.ShowOnce.Sealed != "", at.Status.Phase, readyReason(at))
	}
	h.annotate(tokensv1alpha1.PickedUpAnnotation, proof)
	h.mustReconcile()
	h.clock.Step(time.Hour)
	h.mustReconcile()
	if at := h.token(); at.Status.ShowOnce.PickedUpAt != nil || h.verifies(tok) || at.Status.Verification.Hash == "" && at.Status.ShowOnce.Sealed != "" {
		t.Fatal("a token picked up after its window verifies")
	}
	h.noSecret()
}

func TestShowOnceRevokedBeforePickup(t *testing.T) {
	h, priv := newShowOnceHarness(t, "")
	h.mustReconcile()
	tok, proof := h.open(priv)
	at := h.token()
	at.Spec.Revoked = true
	if err := h.c.Update(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	if at := h.token(); at.Status.ShowOnce.Sealed != "" || at.Status.Verification.Hash != "" || at.Status.Verification.RevokedHash == "" {
		t.Fatalf("a revoked show-once token kept its box or hash: %+v %+v", at.Status.ShowOnce, at.Status.Verification)
	}
	h.annotate(tokensv1alpha1.PickedUpAnnotation, proof)
	h.mustReconcile()
	if h.verifies(tok) {
		t.Error("a token revoked before its pickup verifies once picked up")
	}
	h.noSecret()
}

func TestShowOnceBadPublicKey(t *testing.T) {
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d",
		ShowOnce: &tokensv1alpha1.ShowOnce{PublicKey: "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}})
	h.mustReconcile()
	at := h.token()
	if at.Status.Verification != nil || at.Status.ShowOnce != nil || readyReason(at) != tokensv1alpha1.ReasonInvalidSpec {
		t.Fatalf("a low-order public key: minted %v, Ready %s", at.Status.ShowOnce, readyReason(at))
	}
	h.noSecret()
}

// An unlimited show-once token waiting for its pickup has no expiresAt:
// its status says Pending, and it does not verify.
func TestShowOnceUnlimitedAwaitingPickup(t *testing.T) {
	_, pub, err := showonce.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: tokensv1alpha1.Unlimited,
		ShowOnce: &tokensv1alpha1.ShowOnce{PublicKey: pub}})
	h.mustReconcile()
	at := h.token()
	if at.Status.ExpiresAt != nil || at.Status.Phase != tokensv1alpha1.PhasePending || readyReason(at) != tokensv1alpha1.ReasonPickupPending {
		t.Fatalf("expiresAt %v, phase %s, Ready %s", at.Status.ExpiresAt, at.Status.Phase, readyReason(at))
	}
}

// A show-once token presented as leaked at /v1/revoke (a leak revocation
// recorded in status): it is refused from then on and, having no Secret to
// receive a new token, ends for good: never re-minted, never Active again,
// whatever pass follows.
func TestShowOnceLeakRevoked(t *testing.T) {
	h, priv := newShowOnceHarness(t, "")
	h.mustReconcile()
	tok, proof := h.open(priv)
	h.annotate(tokensv1alpha1.PickedUpAnnotation, proof)
	h.mustReconcile()
	if !h.verifies(tok) {
		t.Fatal("the picked-up token does not verify")
	}
	h.events()

	at := h.token()
	hash := at.Status.Verification.Hash
	at.Status.Verification.LeakRevocations = []tokensv1alpha1.LeakRevocation{{
		Token: lifecycle.HashRef(hash), RequestedAt: metav1.NewTime(h.clock.Now()), Client: "192.0.2.7",
	}}
	if err := h.c.Status().Update(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.mustReconcile()
		h.clock.Step(time.Minute)
	}
	at = h.token()
	if h.verifies(tok) {
		t.Fatal("a show-once token presented as leaked still verifies")
	}
	if at.Status.Phase == tokensv1alpha1.PhaseActive || readyReason(at) != tokensv1alpha1.ReasonLeakRevoked {
		t.Errorf("after a leak revocation: phase %s, Ready %s; want not Active, LeakRevoked", at.Status.Phase, readyReason(at))
	}
	if v := at.Status.Verification; v.Hash != "" || v.RevokedHash != hash || at.Status.LastLeakRevocation == nil {
		t.Errorf("after a leak revocation: hash kept %t, revokedHash is the leaked one %t, lastLeakRevocation %v",
			v.Hash != "", v.RevokedHash == hash, at.Status.LastLeakRevocation)
	}
	if ev := h.events(); len(ev) != 1 || !strings.Contains(ev[0], tokensv1alpha1.ReasonLeakRevoked) {
		t.Errorf("a leak revocation of a show-once token recorded %v, want one LeakRevoked Event", ev)
	}
	h.noSecret()
}
