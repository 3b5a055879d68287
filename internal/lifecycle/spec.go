// Package lifecycle is the one place that says what an ApiToken's spec
// means in time: its spans, rotation rules and audience default parsed once
// (ParseSpec), and what each hash its status records is worth at any
// instant, and when that changes (Assess). The reconciler's status, the
// auth endpoint's index, the usage receiver and the webhook's warnings all
// ask it; none of them computes an end, a grace or an idle deadline.
//
// It is pure: it imports only the API types, internal/token and
// apimachinery's field errors, takes the time as an argument and never
// logs.
package lifecycle

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// DefaultAudience is the audience of an ApiToken whose spec names none.
const DefaultAudience = tokensv1alpha1.ContentAPI

// MaxClockSkew is how far apart the clocks of the operator's replicas and
// the auth replicas may be: an issue time up to this far in the future is
// still believed, and a use reported up to this long before a token's
// issue time may still be of it.
const MaxClockSkew = time.Minute

// AudienceOf returns spec.audience, or DefaultAudience when it is empty.
func AudienceOf(spec *tokensv1alpha1.ApiTokenSpec) tokensv1alpha1.Audience {
	if spec.Audience == "" {
		return DefaultAudience
	}
	return spec.Audience
}

// Spec is an ApiToken's spec as the lifecycle reads it: its spans parsed.
// The zero Spec is unreadable: Assess refuses every hash under it.
type Spec struct {
	// Lifetime is spec.duration; Finite is false for unlimited.
	Lifetime time.Duration
	Finite   bool
	// Grace is spec.rotation.gracePeriod; 0: none.
	Grace time.Duration
	// RenewBefore is spec.rotation.renewBefore; 0: none.
	RenewBefore time.Duration
	// GraceUntilUsed is spec.rotation.graceUntilNewTokenUsed: the first
	// use of the new token ends the previous one's grace (FirstUse).
	GraceUntilUsed bool
	// Idle is spec.idleTimeout; 0: none.
	Idle time.Duration
	// Audience is spec.audience, defaulted (AudienceOf).
	Audience tokensv1alpha1.Audience
	// PickupWindow is spec.showOnce.pickupWindow, defaulted
	// (DefaultPickupWindow); 0: not a show-once token.
	PickupWindow time.Duration
	// readable: ParseSpec found nothing wrong, beyond a missing duration
	// (which the API server never stores).
	readable bool
}

// Readable reports whether the spec's spans parsed: if not, every hash of
// the token is worth nothing (Assess) until the spec is fixed.
func (s Spec) Readable() bool { return s.readable }

// ParseSpec parses the spec's spans (duration, idleTimeout, gracePeriod,
// renewBefore), checks the rotation rules that make them meaningful
// together (renewBefore needs a finite, longer duration), and defaults
// the audience. It returns every problem as a field error that the webhook
// returns as it is and the reconciler reports as InvalidSpec.
//
// A missing duration is an error too (field.Required), but the spec stays
// Readable: the API server stores none (the field is required and its rule
// refuses ""), and a token built without one is judged by the expiry its
// status records.
func ParseSpec(spec *tokensv1alpha1.ApiTokenSpec) (Spec, field.ErrorList) {
	s := Spec{Audience: AudienceOf(spec)}
	var errs field.ErrorList
	bad := false
	// Paths are built only for an error: the index parses every spec it
	// is fed, valid ones above all.
	fail := func(err *field.Error) { errs, bad = append(errs, err), true }
	var durErr error
	s.Lifetime, s.Finite, durErr = token.ParseDuration(spec.Duration)
	switch {
	case spec.Duration == "":
		errs = append(errs, field.Required(field.NewPath("spec", "duration"), `must be "unlimited" or a positive span such as 7d, 30d, 90d or 36h`))
	case durErr != nil:
		fail(field.Invalid(field.NewPath("spec", "duration"), spec.Duration, durationMessage(durErr, spec.Duration)))
	}
	span := func(value string, path ...string) time.Duration {
		if value == "" {
			return 0
		}
		d, err := token.ParseSpan(value)
		if err != nil {
			fail(field.Invalid(field.NewPath("spec", path...), value, durationMessage(err, value)))
		}
		return d
	}
	s.Idle = span(spec.IdleTimeout, "idleTimeout")
	if r := spec.Rotation; r != nil {
		s.Grace = span(r.GracePeriod, "rotation", "gracePeriod")
		s.RenewBefore = span(r.RenewBefore, "rotation", "renewBefore")
		s.GraceUntilUsed = r.GraceUntilNewTokenUsed
		if s.RenewBefore > 0 && durErr == nil {
			rb := func() *field.Path { return field.NewPath("spec", "rotation", "renewBefore") }
			switch {
			case !s.Finite:
				fail(field.Forbidden(rb(), "renewBefore needs a finite spec.duration; an unlimited token never expires"))
			case s.RenewBefore >= s.Lifetime:
				fail(field.Invalid(rb(), r.RenewBefore, fmt.Sprintf("must be shorter than spec.duration (%s)", spec.Duration)))
			}
		}
	}
	if so := spec.ShowOnce; so != nil {
		s.PickupWindow = DefaultPickupWindow
		if so.PickupWindow != "" {
			s.PickupWindow = span(so.PickupWindow, "showOnce", "pickupWindow")
			if s.PickupWindow > MaxPickupWindow {
				fail(field.Invalid(field.NewPath("spec", "showOnce", "pickupWindow"), so.PickupWindow, "must be at most "+MaxPickupWindow.String()+": the token waits sealed in status until it is picked up"))
			}
		}
	}
	s.readable = !bad
	return s, errs
}

// DefaultPickupWindow is how long a show-once token waits to be picked up
// when spec.showOnce.pickupWindow is not set.
const DefaultPickupWindow = 5 * time.Minute

// MaxPickupWindow is the longest spec.showOnce.pickupWindow.
const MaxPickupWindow = time.Hour

// GraceWithinLifetime refuses a gracePeriod longer than a finite
// spec.duration. It is an admission rule only: a grace period never
// outlives the replaced token's own expiry (PreviousValidUntil), so the
// reconciler and the index accept such a spec as it is.
func GraceWithinLifetime(spec *tokensv1alpha1.ApiTokenSpec, s Spec) *field.Error {
	if r := spec.Rotation; r == nil || r.GracePeriod == "" || spec.Duration == "" || !s.Finite || s.Grace <= s.Lifetime {
		return nil
	}
	return field.Invalid(field.NewPath("spec", "rotation", "gracePeriod"), spec.Rotation.GracePeriod,
		fmt.Sprintf("must not be longer than spec.duration (%s)", spec.Duration))
}

// GraceUntilUsedNeedsGrace refuses graceUntilNewTokenUsed without a
// gracePeriod: there is no grace for it to end. An admission rule only
// (the CRD schema says the same): the flag is harmless without a grace,
// so the reconciler and the index accept such a spec as it is.
func GraceUntilUsedNeedsGrace(spec *tokensv1alpha1.ApiTokenSpec) *field.Error {
	if r := spec.Rotation; r == nil || !r.GraceUntilNewTokenUsed || r.GracePeriod != "" {
		return nil
	}
	return field.Forbidden(field.NewPath("spec", "rotation", "graceUntilNewTokenUsed"),
		"needs spec.rotation.gracePeriod: it ends the previous token's grace when the new token is used, and never later than gracePeriod; without a grace the previous token is refused at once")
}

// durationMessage drops the sentinel and the echoed value from a duration
// error, which field.Invalid already prints.
func durationMessage(err error, value string) string {
	msg := strings.TrimPrefix(err.Error(), token.ErrDuration.Error()+": ")
	return strings.TrimPrefix(msg, strconv.Quote(value)+": ")
}

// ExpiresAt returns when a token issued at issued ends by its duration;
// finite is false for an unlimited token, which never does.
func (s Spec) ExpiresAt(issued time.Time) (at time.Time, finite bool) {
	if !s.Finite {
		return time.Time{}, false
	}
	return issued.Add(s.Lifetime), true
}

// RenewAt returns when a token issued at issued is regenerated by
// renewBefore (ok false: no renewBefore, or an unlimited token).
func (s Spec) RenewAt(issued time.Time) (at time.Time, ok bool) {
	end, finite := s.ExpiresAt(issued)
	if s.RenewBefore <= 0 || !finite {
		return time.Time{}, false
	}
	return end.Add(-s.RenewBefore), true
}

// RenewalDue reports whether renewBefore asks for a new token, issued at
// issued, at now.
func (s Spec) RenewalDue(issued, now time.Time) bool {
	at, ok := s.RenewAt(issued)
	return ok && Reached(at, now)
}

// ByDuration is what a token issued at issued is worth by its duration
// alone: valid until issued + duration, then expired.
func (s Spec) ByDuration(issued time.Time) Standing {
	end, finite := s.ExpiresAt(issued)
	if !finite {
		return Standing{}
	}
	return Standing{Expires: end.UnixNano()}
}

// ByIdle is what the current token of st is worth by idleTimeout alone:
// valid until idleTimeout after the later of its issue and its last use,
// then inactive. Without an issue time it is inactive at once (fail
// closed); without idleTimeout it never goes idle.
func (s Spec) ByIdle(st *tokensv1alpha1.ApiTokenStatus) Standing {
	switch {
	case s.Idle <= 0:
		return Standing{}
	case st.IssuedAt == nil:
		return Standing{Worth: Inactive}
	}
	from := st.IssuedAt.Time
	if st.LastUsedAt != nil && st.LastUsedAt.After(from) {
		from = st.LastUsedAt.Time
	}
	return Standing{Idle: from.Add(s.Idle).UnixNano()}
}
