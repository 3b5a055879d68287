package plugin

import (
	"context"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// pickupMargin is how much longer than the pickup window create
// --show-once waits: the operator, not this command's clock, ends it.
const pickupMargin = 30 * time.Second

// pickupWindow returns --pickup-window, parsed and defaulted as the
// operator does (lifecycle.DefaultPickupWindow), or an error naming it.
func (o *createOptions) pickupWindowDuration() (time.Duration, error) {
	if o.pickupWindow == "" {
		return lifecycle.DefaultPickupWindow, nil
	}
	d, err := token.ParseSpan(o.pickupWindow)
	if err != nil {
		return 0, fmt.Errorf("--pickup-window: %w", err)
	}
	if d > lifecycle.MaxPickupWindow {
		return 0, fmt.Errorf("--pickup-window %q: must be at most %s", o.pickupWindow, lifecycle.MaxPickupWindow)
	}
	return d, nil
}

// showOnceFlagErrors returns the errors of flags that do not go with
// --show-once (or of --pickup-window without it).
func (o *createOptions) showOnceFlagErrors() []error {
	if !o.showOnce {
		if o.pickupWindow != "" {
			return []error{errors.New("--pickup-window needs --show-once")}
		}
		return nil
	}
	var errs []error
	for _, f := range []struct{ flag, value string }{
		{"--secret-name", o.secretName}, {"--grace-period", o.gracePeriod}, {"--renew-before", o.renewBefore},
	} {
		if f.value != "" {
			errs = append(errs, fmt.Errorf("%s is not allowed with --show-once: a show-once token has no Secret and is never regenerated", f.flag))
		}
	}
	if o.dryRun == "client" {
		errs = append(errs, errors.New("--show-once cannot be combined with --dry-run=client: its key pair lives only in this command, so a manifest of it could never be picked up"))
	}
	if _, err := o.pickupWindowDuration(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// pickUp hands the show-once token of at (just created with the public
// key of priv) over: it waits until the operator has sealed it into
// status.showOnce.sealed, opens it with priv, acknowledges with the proof
// sealed beside it (PickedUpAnnotation), and waits until the operator has
// accepted that proof and the token is Active. It returns the token, which
// nothing else holds; the private key never leaves this process.
func (o *createOptions) pickUp(ctx context.Context, s *session, at *tokensv1alpha1.ApiToken, priv *ecdh.PrivateKey) (string, error) {
	window, err := o.pickupWindowDuration()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, window+pickupMargin)
	defer cancel()
	timedOut := func(what string) func(*tokensv1alpha1.ApiToken) error {
		return func(last *tokensv1alpha1.ApiToken) error {
			return fmt.Errorf("timed out waiting for %s %q to be %s (phase %s; %s); is the operator running?",
				kindLower, last.Name, what, orDash(string(last.Status.Phase)), readyText(last))
		}
	}
	var tok, proof string
	opened := func(at *tokensv1alpha1.ApiToken) (bool, error) {
		if err := pickupFailed(at); err != nil {
			return false, err
		}
		so := at.Status.ShowOnce
		if so == nil || so.Sealed == "" {
			return false, nil
		}
		t, p, err := showonce.Open(priv, showonce.Binding(at.Namespace, at.Name, string(at.UID)), so.Sealed)
		if err != nil {
			return false, fmt.Errorf("%s %q: status.showOnce.sealed does not open with this command's key (was the status written by someone other than the operator?): %w", kindLower, at.Name, err)
		}
		tok, proof = t, p
		return true, nil
	}
	if at, err = watchUntil(ctx, s, at, opened, timedOut("sealed by the operator")); err != nil {
		return "", err
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{tokensv1alpha1.PickedUpAnnotation: proof}},
	})
	if err != nil {
		return "", err
	}
	if at, err = s.tokens.MergePatch(ctx, at.Namespace, at.Name, patch); err != nil {
		return "", err
	}
	accepted := func(at *tokensv1alpha1.ApiToken) (bool, error) {
		if err := pickupFailed(at); err != nil {
			return false, err
		}
		so := at.Status.ShowOnce
		return so != nil && so.PickedUpAt != nil && at.Status.Phase == tokensv1alpha1.PhaseActive, nil
	}
	if _, err := watchUntil(ctx, s, at, accepted, timedOut("picked up")); err != nil {
		return "", err
	}
	return tok, nil
}

// pickupFailed says why a show-once token can no longer be picked up, or
// nil while it can.
func pickupFailed(at *tokensv1alpha1.ApiToken) error {
	ready := meta.FindStatusCondition(at.Status.Conditions, tokensv1alpha1.ConditionReady)
	switch {
	case at.Spec.Revoked || at.Status.Phase == tokensv1alpha1.PhaseRevoked:
		return fmt.Errorf("%s %q was revoked before it was picked up: it never verifies", kindLower, at.Name)
	case ready != nil && ready.Reason == tokensv1alpha1.ReasonPickupExpired:
		return fmt.Errorf("%s %q: the pickup window ended before the operator accepted the pickup; the token never verifies: delete it and create a new one", kindLower, at.Name)
	case at.Status.Phase == tokensv1alpha1.PhaseFailed:
		return fmt.Errorf("%s %q cannot be issued: %s", kindLower, at.Name, readyText(at))
	}
	return nil
}
