package lifecycle

import (
	"testing"
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// showOnceToken is a show-once ApiToken issued at t0, its pickup window
// ending at t0+5m, with pickedUp recorded (nil: not picked up).
func showOnceToken(pickedUp *time.Duration) *tokensv1alpha1.ApiToken {
	return apiToken(func(a *tokensv1alpha1.ApiToken) {
		a.Spec.ShowOnce = &tokensv1alpha1.ShowOnce{PublicKey: "k"}
		a.Status.Phase = tokensv1alpha1.PhasePending
		a.Status.Verification.PreviousHash, a.Status.Verification.PreviousValidUntil = "", nil
		a.Status.ShowOnce = &tokensv1alpha1.ShowOnceStatus{Sealed: "box", PickupBy: mt(5 * time.Minute)}
		if pickedUp != nil {
			a.Status.ShowOnce.PickedUpAt = mt(*pickedUp)
		}
	})
}

// TestAssessShowOnce: a show-once token's hash verifies only once it was
// picked up within its window; never before, never if picked up late.
func TestAssessShowOnce(t *testing.T) {
	ns := time.Nanosecond
	spec := func(a *tokensv1alpha1.ApiToken) Spec {
		s, errs := ParseSpec(&a.Spec)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return s
	}
	early, late, edge := time.Minute, 6*time.Minute, 5*time.Minute
	for _, c := range []struct {
		name     string
		at       *tokensv1alpha1.ApiToken
		when     time.Duration
		want     Worth
		pickup   PickupState
		deadline time.Duration
	}{
		{"sealed, not picked up: refused", showOnceToken(nil), 0, Expired, Awaiting, 5 * time.Minute},
		{"not picked up, a nanosecond before the window ends", showOnceToken(nil), 5*time.Minute - ns, Expired, Awaiting, 5 * time.Minute},
		{"not picked up in the window: missed for good", showOnceToken(nil), 5 * time.Minute, Expired, Missed, 0},
		{"picked up in the window: valid until its expiry", showOnceToken(&early), 10 * day, Valid, PickedUp, 0},
		{"picked up: expires as any token", showOnceToken(&early), 30 * day, Expired, PickedUp, 0},
		{"a pickup recorded after the window: refused", showOnceToken(&late), 10 * time.Minute, Expired, Missed, 0},
		{"a pickup recorded at the window's end: refused", showOnceToken(&edge), 10 * time.Minute, Expired, Missed, 0},
		{"no status.showOnce: refused", apiToken(func(a *tokensv1alpha1.ApiToken) { a.Spec.ShowOnce = &tokensv1alpha1.ShowOnce{PublicKey: "k"} }), 0, Expired, NotIssued, 0},
		{"revoked after pickup", func() *tokensv1alpha1.ApiToken { a := showOnceToken(&early); a.Spec.Revoked = true; return a }(), time.Hour, Revoked, PickedUp, 0},
		{"not show-once: unchanged", apiToken(nil), time.Hour, Valid, NotShowOnce, 0},
	} {
		r := Assess(c.at, spec(c.at))
		now := t0.Add(c.when)
		if got := r.Current.WorthAt(now); got != c.want {
			t.Errorf("%s: current worth %d, want %d", c.name, got, c.want)
		}
		if got := r.Pending.WorthAt(now); got != c.want {
			t.Errorf("%s: pending worth %d, want %d", c.name, got, c.want)
		}
		state, by := Pickup(c.at, now)
		if state != c.pickup {
			t.Errorf("%s: Pickup = %d, want %d", c.name, state, c.pickup)
		}
		if want := t0.Add(c.deadline); c.deadline != 0 && !by.Equal(want) || c.deadline == 0 && !by.IsZero() {
			t.Errorf("%s: Pickup deadline %v, want %v", c.name, by, c.deadline)
		}
	}
}

func TestParseSpecPickupWindow(t *testing.T) {
	so := func(w string) *tokensv1alpha1.ApiTokenSpec {
		return &tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", ShowOnce: &tokensv1alpha1.ShowOnce{PublicKey: "k", PickupWindow: w}}
	}
	if s, errs := ParseSpec(so("")); len(errs) > 0 || s.PickupWindow != DefaultPickupWindow {
		t.Errorf("default: %v %v", s.PickupWindow, errs)
	}
	if s, errs := ParseSpec(so("2m")); len(errs) > 0 || s.PickupWindow != 2*time.Minute {
		t.Errorf("2m: %v %v", s.PickupWindow, errs)
	}
	if s, errs := ParseSpec(so("2h")); len(errs) != 1 || errs[0].Field != "spec.showOnce.pickupWindow" || s.Readable() {
		t.Errorf("2h: want one error on spec.showOnce.pickupWindow, got %v", errs)
	}
	if s, _ := ParseSpec(&tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"}); s.PickupWindow != 0 {
		t.Errorf("not show-once: window %v", s.PickupWindow)
	}
}
