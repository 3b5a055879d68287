package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// verifiesDuringRotation is verifies with the previous salt of a planned
// rotation, as the auth endpoint is wired (cmd/main.go).
func (h *harness) verifiesDuringRotation(tok string) bool {
	ix := authserver.NewIndex(h.r.Salt.Hasher).WithPrevious(h.r.Salt.PreviousHasher)
	ix.Upsert(h.token())
	_, v := ix.Lookup(tok, h.clock.Now())
	return v == authserver.Valid
}

// installSalt makes the harness's store follow a salt Secret holding sec.
func (h *harness) installSalt(sec *corev1.Secret) {
	ref := h.r.Salt.Ref()
	sec.Namespace, sec.Name = ref.Namespace, ref.Name
	h.r.Salt.Observe(sec)
}

// gauge reads a gauge of the controller-runtime registry.
func gauge(t *testing.T, name string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func TestPlannedSaltRotationKeepsTheOldTokenUntilTheOverlapEnds(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.r.MaxSaltOverlap = time.Hour
	h.mustReconcile()
	old := h.secretToken()
	issued := h.token().Status.IssuedAt
	sec := &corev1.Secret{Data: map[string][]byte{salt.Key: []byte("test-salt")}}
	salt.Rotate(sec, []byte("planned-salt"), h.clock.Now(), time.Hour)
	h.installSalt(sec)
	if !h.verifiesDuringRotation(old) {
		t.Fatal("before the re-issue, the old token does not verify with the previous salt")
	}
	h.events()
	h.clock.Step(time.Minute)
	h.mustReconcile()
	cur, at := h.secretToken(), h.token()
	switch {
	case cur == old || !h.verifiesDuringRotation(cur):
		t.Fatal("no new token, or it does not verify")
	case !h.verifiesDuringRotation(old):
		t.Fatal("the replaced token does not verify during the overlap")
	case at.Status.Verification.SaltID != token.SaltID([]byte("planned-salt")) || !at.Status.IssuedAt.Equal(issued):
		t.Fatalf("verification %+v, issuedAt %v (want %v)", at.Status.Verification, at.Status.IssuedAt, issued)
	case !at.Status.Verification.PreviousValidUntil.Time.Equal(t0.Add(time.Hour)):
		t.Fatalf("previousValidUntil = %v, want the overlap's end", at.Status.Verification.PreviousValidUntil)
	}
	if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Normal SaltRotated The operator's salt was rotated (planned)") {
		t.Fatalf("events = %q", evs)
	}
	h.clock.Step(59*time.Minute - time.Second)
	if !h.verifiesDuringRotation(old) {
		t.Fatal("the replaced token stopped verifying before the overlap's end")
	}
	h.clock.Step(time.Second)
	if h.verifiesDuringRotation(old) || !h.verifiesDuringRotation(cur) {
		t.Fatal("at the overlap's end the old token still verifies, or the new one does not")
	}
}

// TestPlannedSaltRotationCrashSafety fails each write of the re-issue in
// turn: the old token keeps verifying during the overlap, and the Secret's
// token verifies at every point.
func TestPlannedSaltRotationCrashSafety(t *testing.T) {
	for n := 1; n <= 3; n++ {
		t.Run(fmt.Sprintf("fail write %d", n), func(t *testing.T) {
			h := newHarness(t, graceSpec)
			h.r.MaxSaltOverlap = time.Hour
			h.mustReconcile()
			old := h.secretToken()
			sec := &corev1.Secret{Data: map[string][]byte{salt.Key: []byte("test-salt")}}
			salt.Rotate(sec, []byte("planned-salt"), h.clock.Now(), time.Hour)
			h.installSalt(sec)
			h.failWrite = n
			if _, err := h.reconcile(); !errors.Is(err, errInjected) {
				t.Fatalf("reconcile = %v, want the injected error", err)
			}
			if !h.verifiesDuringRotation(h.secretToken()) || !h.verifiesDuringRotation(old) {
				t.Fatalf("after failing write %d a token does not verify", n)
			}
			h.mustReconcile()
			if cur := h.secretToken(); cur == old || !h.verifiesDuringRotation(cur) || !h.verifiesDuringRotation(old) {
				t.Fatal("after the retry")
			}
		})
	}
}

// TestAnUnknownSaltHoldsEveryTokenLoudly: an operator that starts with a
// salt the tokens do not record (the salt Secret was lost and a new one
// created) re-issues nothing: condition, one Warning Event, metric. The
// salt restored, the token verifies again unchanged; the loss
// acknowledged instead, it is re-issued.
func TestAnUnknownSaltHoldsEveryTokenLoudly(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	old := h.secretToken()
	recorded := h.token().Status.Verification.DeepCopy()
	h.events()

	restart := func(saltBytes string) {
		h.r.Salt = salt.NewStore(h.r.Salt.Ref())
		h.installSalt(&corev1.Secret{Data: map[string][]byte{salt.Key: []byte(saltBytes)}})
	}
	restart("a-new-salt")
	for range 2 {
		h.mustReconcile()
	}
	at := h.token()
	ready := findCondition(at, tokensv1alpha1.ConditionReady)
	switch {
	case at.Status.Phase != tokensv1alpha1.PhaseFailed || ready.Reason != tokensv1alpha1.ReasonSaltMismatch:
		t.Fatalf("phase %s, ready %+v", at.Status.Phase, ready)
	case h.secretToken() != old || at.Status.Verification.Hash != recorded.Hash || at.Status.Verification.SaltID != recorded.SaltID:
		t.Fatal("a held token was re-issued or its record changed")
	case !strings.Contains(ready.Message, recorded.SaltID) || !strings.Contains(ready.Message, salt.ReplacesAnnotation):
		t.Fatalf("the condition does not say what to do: %q", ready.Message)
	case gauge(t, "apitoken_salt_mismatch_tokens") != 1:
		t.Fatal("apitoken_salt_mismatch_tokens is not 1")
	}
	evs := h.events()
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning SaltMismatch ") {
		t.Fatalf("events = %q, want one SaltMismatch Warning", evs)
	}
	for _, secret := range []string{old, recorded.Hash, "a-new-salt", "test-salt"} {
		if strings.Contains(evs[0], secret) || strings.Contains(ready.Message, secret) {
			t.Fatal("the report shows a secret")
		}
	}

	// The salt restored from a backup: the same token verifies again.
	h.installSalt(&corev1.Secret{Data: map[string][]byte{salt.Key: []byte("test-salt")}})
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || h.secretToken() != old || !h.verifies(old) {
		t.Fatalf("after the restore: phase %s", at.Status.Phase)
	}
	if gauge(t, "apitoken_salt_mismatch_tokens") != 0 {
		t.Fatal("apitoken_salt_mismatch_tokens is not back to 0")
	}

	// Lost for good: held until acknowledged, then re-issued.
	restart("a-new-salt")
	h.mustReconcile()
	if h.token().Status.Phase != tokensv1alpha1.PhaseFailed {
		t.Fatal("not held")
	}
	h.installSalt(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{salt.ReplacesAnnotation: recorded.SaltID}},
		Data:       map[string][]byte{salt.Key: []byte("a-new-salt")},
	})
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || h.secretToken() == old || !h.verifies(h.secretToken()) || h.verifies(old) {
		t.Fatalf("after the acknowledgement: phase %s", at.Status.Phase)
	}
	if evs := h.events(); !strings.HasPrefix(evs[len(evs)-1], "Warning SaltRotated") {
		t.Fatalf("events = %q", evs)
	}
}

func findCondition(at *tokensv1alpha1.ApiToken, typ string) metav1.Condition {
	for _, c := range at.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

func TestSaltGrace(t *testing.T) {
	end := t0.Add(time.Hour)
	for _, c := range []struct {
		name               string
		recorded, previous string
		now                time.Time
		max                time.Duration
		want               time.Duration
	}{
		{"planned, in the overlap", "a", "a", t0, 2 * time.Hour, time.Hour},
		{"planned, after the overlap", "a", "a", end, 2 * time.Hour, 0},
		{"a deadline beyond --salt-overlap is cut to it", "a", "a", t0, 10 * time.Minute, 10 * time.Minute},
		{"--salt-overlap=0", "a", "a", t0, 0, 0},
		{"another salt than the previous", "b", "a", t0, time.Hour, 0},
		{"emergency: no previous", "a", "", t0, time.Hour, 0},
		{"no recorded salt", "", "", t0, time.Hour, 0},
	} {
		if got := saltGrace(c.recorded, c.previous, end, c.now, c.max); got != c.want {
			t.Errorf("%s: saltGrace = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestARestoreWithoutStatusOrSaltIsHeld: ApiTokens restored without their
// status, and without the salt (the wrong order), are held rather than
// re-issued: the Secret names the salt its seal was made with. Once the
// salt is restored, the Secret's token is adopted as it is.
func TestARestoreWithoutStatusOrSaltIsHeld(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	kept := h.secretToken()
	at := h.token()
	recorded := at.Status.Verification.SaltID
	at.Status = tokensv1alpha1.ApiTokenStatus{}
	_ = h.c.Status().Update(context.Background(), at)
	h.r.Salt = salt.NewStore(h.r.Salt.Ref())
	h.installSalt(&corev1.Secret{Data: map[string][]byte{salt.Key: []byte("a-new-salt")}})
	h.mustReconcile()
	ready := findCondition(h.token(), tokensv1alpha1.ConditionReady)
	if h.secretToken() != kept || ready.Reason != tokensv1alpha1.ReasonSaltMismatch || !strings.Contains(ready.Message, recorded) {
		t.Fatalf("not held: ready %+v", ready)
	}
	h.installSalt(&corev1.Secret{Data: map[string][]byte{salt.Key: []byte("test-salt")}})
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || h.secretToken() != kept || !h.verifies(kept) {
		t.Fatalf("after the salt's restore: phase %s", at.Status.Phase)
	}
}

// TestATemplateCannotSetTheOperatorsAnnotations: secretTemplate keys that
// name the seal or the salt ID neither replace nor, dropped later, remove
// the operator's own.
func TestATemplateCannotSetTheOperatorsAnnotations(t *testing.T) {
	spec := graceSpec
	spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Annotations: map[string]string{
		tokensv1alpha1.SealAnnotation: "forged", tokensv1alpha1.SaltIDAnnotation: "0000000000000000", "team": "a",
	}}
	h := newHarness(t, spec)
	h.mustReconcile()
	h.mustReconcile()
	var s corev1.Secret
	_ = h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s)
	if s.Annotations[tokensv1alpha1.SealAnnotation] == "forged" || s.Annotations[tokensv1alpha1.SaltIDAnnotation] != h.r.Salt.State().ID() || s.Annotations["team"] != "a" {
		t.Fatalf("annotations = %v", s.Annotations)
	}
	at := h.token()
	at.Spec.SecretTemplate = nil
	_ = h.c.Update(context.Background(), at)
	h.mustReconcile()
	_ = h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s)
	if s.Annotations[tokensv1alpha1.SealAnnotation] == "" || s.Annotations[tokensv1alpha1.SaltIDAnnotation] == "" || s.Annotations["team"] != "" {
		t.Fatalf("annotations after the template was dropped = %v", s.Annotations)
	}
}
