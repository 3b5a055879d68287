package lifecycle

import (
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// PickupState is where a show-once token (spec.showOnce) is in its
// handing over to its creator.
type PickupState uint8

const (
	// NotShowOnce: the token is delivered into a Secret.
	NotShowOnce PickupState = iota
	// NotIssued: no show-once token was issued yet.
	NotIssued
	// Awaiting: issued and sealed for its creator, not picked up yet, and
	// the pickup window is open: a valid proof makes it verify.
	Awaiting
	// PickedUp: its creator picked it up within the window; it verifies
	// as any token does from then on.
	PickedUp
	// Missed: nobody picked it up within the window; it never verifies.
	Missed
)

// Pickup says where at's show-once token is at now, and, while it is
// Awaiting, when its window ends (status.showOnce.pickupBy, from which
// instant on it is Missed). A pickup recorded after pickupBy (a status
// nobody but the operator should write) counts as Missed: fail closed.
func Pickup(at *tokensv1alpha1.ApiToken, now time.Time) (PickupState, time.Time) {
	if at.Spec.ShowOnce == nil {
		return NotShowOnce, time.Time{}
	}
	so := at.Status.ShowOnce
	if so == nil || so.PickupBy == nil {
		return NotIssued, time.Time{}
	}
	by := so.PickupBy.Time
	switch {
	case so.PickedUpAt != nil && so.PickedUpAt.Time.Before(by):
		return PickedUp, time.Time{}
	case so.PickedUpAt != nil || Reached(by, now):
		return Missed, time.Time{}
	}
	return Awaiting, by
}

// pickedUp reports whether at's hashes may verify as far as its delivery
// goes: always for a token delivered into a Secret, only once picked up
// for a show-once token (Pickup), whatever the time.
func pickedUp(at *tokensv1alpha1.ApiToken) bool {
	state, _ := Pickup(at, time.Time{}) // PickedUp does not depend on the time
	return state == NotShowOnce || state == PickedUp
}
