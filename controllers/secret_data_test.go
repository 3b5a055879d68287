package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// dataSpec renders four keys beside "token".
func dataSpec() tokensv1alpha1.ApiTokenSpec {
	spec := *graceSpec.DeepCopy()
	spec.Audience = "billing-api"
	spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Data: map[string]tokensv1alpha1.SecretDataKey{
		"API_KEY":       {Format: tokensv1alpha1.FormatToken},
		"authorization": {Format: tokensv1alpha1.FormatBearer},
		"app.env":       {Format: tokensv1alpha1.FormatEnv, Variable: "BILLING_TOKEN"},
		"token.json":    {Format: tokensv1alpha1.FormatJSON},
	}}
	return spec
}

func (h *harness) secret() *corev1.Secret {
	h.t.Helper()
	var s corev1.Secret
	if err := h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s); err != nil {
		h.t.Fatal(err)
	}
	return &s
}

// wantRendered checks that the Secret holds exactly "token" = tok and the
// four renderings of tok (all empty when tok is).
func (h *harness) wantRendered(tok string) {
	h.t.Helper()
	s := h.secret()
	want := map[string]string{"token": tok, "API_KEY": tok, "authorization": "", "app.env": "", "token.json": ""}
	if tok != "" {
		exp := h.token().Status.ExpiresAt.UTC().Format(time.RFC3339)
		want["authorization"] = "Bearer " + tok
		want["app.env"] = "BILLING_TOKEN=" + tok + "\n"
		want["token.json"] = `{"token":"` + tok + `","name":"tok","namespace":"ns","audience":"billing-api","expiresAt":"` + exp + `"}`
	}
	if len(s.Data) != len(want) {
		h.t.Fatalf("Secret keys %v, want %d keys", keys(s.Data), len(want))
	}
	for k, v := range want {
		if got := string(s.Data[k]); got != v {
			h.t.Errorf("Secret key %s = %q, want %q", k, got, v)
		}
	}
}

// TestRenderedKeysFollowTheToken: the rendered keys are written with the
// token, change with it on a regeneration (the previous token, valid in
// its grace, is in none of them) and are emptied by a revocation; no
// Event carries the token.
func TestRenderedKeysFollowTheToken(t *testing.T) {
	h := newHarness(t, dataSpec())
	h.mustReconcile()
	first := h.secretToken()
	h.wantRendered(first)
	h.writes = 0
	h.mustReconcile()
	if h.writes != 0 {
		t.Fatalf("an idle pass made %d writes", h.writes)
	}

	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.mustReconcile()
	second := h.secretToken()
	if second == first || !h.verifies(first) {
		t.Fatal("no new token, or the previous one lost its grace")
	}
	h.wantRendered(second)
	for k, v := range h.secret().Data {
		if strings.Contains(string(v), first) {
			t.Errorf("key %s still holds the previous token", k)
		}
	}

	at := h.token()
	at.Spec.Revoked = true
	if err := h.c.Update(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	h.wantRendered("")
	if s := h.secret(); s.Annotations[tokensv1alpha1.DataSealAnnotation] == "" {
		t.Fatal("the revoked renderings are not sealed")
	}
	// Someone puts the revoked token back into a rendered key: emptied again.
	s := h.secret()
	s.Data["API_KEY"] = []byte(second)
	if err := h.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	h.wantRendered("")

	for _, e := range h.events() {
		for _, tok := range []string{first, second} {
			if strings.Contains(e, tok) {
				t.Fatalf("an Event carries the token: %q", e)
			}
		}
	}
}

// TestTamperedRenderedKeyIsWrittenBack: a rendered key edited, deleted or
// added to is written back from the token, which stays (an edited
// rendering is not a tampered token); a template or identity change
// renders the same token anew; dropping data drops the keys.
func TestTamperedRenderedKeyIsWrittenBack(t *testing.T) {
	h := newHarness(t, dataSpec())
	h.mustReconcile()
	tok := h.secretToken()
	edits := map[string]func(s *corev1.Secret){
		"edited":       func(s *corev1.Secret) { s.Data["authorization"] = []byte("Bearer attacker") },
		"deleted":      func(s *corev1.Secret) { delete(s.Data, "app.env") },
		"added":        func(s *corev1.Secret) { s.Data["extra"] = []byte("x") },
		"seal removed": func(s *corev1.Secret) { delete(s.Annotations, tokensv1alpha1.DataSealAnnotation) },
		"seal replayed": func(s *corev1.Secret) {
			s.Annotations[tokensv1alpha1.DataSealAnnotation] = "0." + s.Annotations[tokensv1alpha1.SealAnnotation]
		},
	}
	for name, edit := range edits {
		s := h.secret()
		edit(s)
		if err := h.c.Update(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		h.mustReconcile()
		if h.secretToken() != tok || !h.verifies(tok) {
			t.Fatalf("%s rendered key: the token changed", name)
		}
		h.wantRendered(tok)
	}
	if evs := h.events(); len(evs) != 1 {
		t.Fatalf("events = %q, want only Generated", evs)
	}

	// A longer duration: the same token, its json's expiresAt moved.
	at := h.token()
	at.Spec.Duration = "60d"
	if err := h.c.Update(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	h.mustReconcile() // the first pass recomputes expiresAt, the next renders it (the fingerprint)
	if h.secretToken() != tok {
		t.Fatal("a duration change changed the token")
	}
	h.wantRendered(tok)
	if !strings.Contains(string(h.secret().Data["token.json"]), t0.Add(60*24*time.Hour).UTC().Format(time.RFC3339)) {
		t.Fatalf("json %q does not carry the new expiry", h.secret().Data["token.json"])
	}

	at = h.token()
	at.Spec.SecretTemplate = nil
	if err := h.c.Update(context.Background(), at); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	if s := h.secret(); len(s.Data) != 1 || string(s.Data["token"]) != tok || s.Annotations[tokensv1alpha1.DataSealAnnotation] != "" {
		t.Fatalf("template data removed: keys %v, data seal %q", keys(s.Data), s.Annotations[tokensv1alpha1.DataSealAnnotation])
	}
}

// TestRenderedKeysOfATamperedTokenAreReissued: a forged "token" is a
// tampered token, as before: a new one, and every rendering with it.
func TestRenderedKeysOfATamperedTokenAreReissued(t *testing.T) {
	h := newHarness(t, dataSpec())
	h.mustReconcile()
	old := h.secretToken()
	s := h.secret()
	s.Data["token"] = []byte("forged")
	if err := h.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	cur := h.secretToken()
	if cur == old || cur == "forged" || h.verifies(old) {
		t.Fatal("a tampered token was not replaced")
	}
	h.wantRendered(cur)
}

// TestInvalidDataKeysWithoutWebhook: a template the webhook refuses (here
// a key shadowing "token"), let in where it does not run, issues nothing.
func TestInvalidDataKeysWithoutWebhook(t *testing.T) {
	spec := dataSpec()
	spec.SecretTemplate.Data["token"] = tokensv1alpha1.SecretDataKey{Format: tokensv1alpha1.FormatBearer}
	h := newHarness(t, spec)
	h.mustReconcile()
	at := h.token()
	if at.Status.Phase != tokensv1alpha1.PhaseFailed || at.Status.Verification != nil {
		t.Fatalf("status %+v, want Failed with nothing issued", at.Status)
	}
	var s corev1.Secret
	if err := h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s); err == nil {
		t.Fatalf("a Secret was written: keys %v", keys(s.Data))
	}
}
