package lifecycle

import (
	"strings"
	"testing"
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

const day = 24 * time.Hour

// TestParseSpec: each span and rotation rule, with the message the webhook
// returns as it is, and whether the spec stays readable (Assess refuses
// every hash of an unreadable one).
func TestParseSpec(t *testing.T) {
	rot := func(grace, renew string) *tokensv1alpha1.Rotation {
		return &tokensv1alpha1.Rotation{GracePeriod: grace, RenewBefore: renew}
	}
	for _, c := range []struct {
		name     string
		spec     tokensv1alpha1.ApiTokenSpec
		want     string // "" : no error
		readable bool
	}{
		{"valid", tokensv1alpha1.ApiTokenSpec{Duration: "30d", IdleTimeout: "2h", Rotation: rot("5m", "7d")}, "", true},
		{"unlimited", tokensv1alpha1.ApiTokenSpec{Duration: "unlimited"}, "", true},
		{"missing duration", tokensv1alpha1.ApiTokenSpec{}, `spec.duration: Required value: must be "unlimited" or a positive span such as 7d, 30d, 90d or 36h`, true},
		{"malformed duration", tokensv1alpha1.ApiTokenSpec{Duration: "2w"}, `spec.duration: Invalid value: "2w": unit "w" must be d, h, m or s, in that order, each at most once; or "unlimited"`, false},
		{"duration too long", tokensv1alpha1.ApiTokenSpec{Duration: "106752d"}, `spec.duration: Invalid value: "106752d": too long (at most about 292 years); or "unlimited"`, false},
		{"malformed idleTimeout", tokensv1alpha1.ApiTokenSpec{Duration: "30d", IdleTimeout: "90 days"}, `spec.idleTimeout: Invalid value: "90 days"`, false},
		{"malformed grace", tokensv1alpha1.ApiTokenSpec{Duration: "30d", Rotation: rot("500ms", "")}, `spec.rotation.gracePeriod: Invalid value: "500ms": unit "ms" must be d, h, m or s`, false},
		{"renewBefore with unlimited", tokensv1alpha1.ApiTokenSpec{Duration: "unlimited", Rotation: rot("", "7d")}, "spec.rotation.renewBefore: Forbidden: renewBefore needs a finite spec.duration; an unlimited token never expires", false},
		{"renewBefore equal to duration", tokensv1alpha1.ApiTokenSpec{Duration: "30d", Rotation: rot("", "30d")}, `spec.rotation.renewBefore: Invalid value: "30d": must be shorter than spec.duration (30d)`, false},
		{"grace longer than duration: an admission rule only", tokensv1alpha1.ApiTokenSpec{Duration: "1h", Rotation: rot("2h", "")}, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, errs := ParseSpec(&c.spec)
			got := errs.ToAggregate()
			switch {
			case c.want == "" && got != nil:
				t.Fatalf("errors %v", got)
			case c.want != "" && (got == nil || !strings.HasPrefix(got.Error(), c.want)):
				t.Fatalf("errors %v, want %q", got, c.want)
			case s.Readable() != c.readable:
				t.Fatalf("readable %v, want %v", s.Readable(), c.readable)
			}
		})
	}
	if (Spec{}).Readable() {
		t.Fatal("the zero Spec is readable")
	}
}

func TestGraceWithinLifetime(t *testing.T) {
	for spec, want := range map[*tokensv1alpha1.ApiTokenSpec]string{
		{Duration: "1h", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "2h"}}:        `spec.rotation.gracePeriod: Invalid value: "2h": must not be longer than spec.duration (1h)`,
		{Duration: "1h", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "1h"}}:        "",
		{Duration: "unlimited", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "2h"}}: "",
		{Duration: "1h"}: "",
	} {
		s, _ := ParseSpec(spec)
		err := GraceWithinLifetime(spec, s)
		if (err == nil) != (want == "") || (err != nil && err.Error() != want) {
			t.Errorf("%+v: %v, want %q", spec, err, want)
		}
	}
}

func TestAudienceDefault(t *testing.T) {
	if got := AudienceOf(&tokensv1alpha1.ApiTokenSpec{}); got != "content-api" {
		t.Fatalf("default audience %q", got)
	}
	if got := AudienceOf(&tokensv1alpha1.ApiTokenSpec{Audience: "billing-api"}); got != "billing-api" {
		t.Fatalf("audience %q", got)
	}
	if s, _ := ParseSpec(&tokensv1alpha1.ApiTokenSpec{Duration: "7d"}); s.Audience != DefaultAudience {
		t.Fatalf("ParseSpec audience %q", s.Audience)
	}
}

// TestExpiryMath (moved from internal/token): an expiry is issue time plus
// duration, valid until the nanosecond before it; renewal is renewBefore
// earlier.
func TestExpiryMath(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := ParseSpec(&tokensv1alpha1.ApiTokenSpec{Duration: "30d", Rotation: &tokensv1alpha1.Rotation{RenewBefore: "7d"}})
	exp, ok := s.ExpiresAt(issued)
	if !ok || !exp.Equal(issued.Add(30*day)) {
		t.Fatalf("ExpiresAt = %v %v", exp, ok)
	}
	unlimited, _ := ParseSpec(&tokensv1alpha1.ApiTokenSpec{Duration: "unlimited"})
	if _, ok := unlimited.ExpiresAt(issued); ok {
		t.Fatal("unlimited token has an expiry")
	}
	by := s.ByDuration(issued)
	if by.WorthAt(exp.Add(-time.Nanosecond)) != Valid || by.WorthAt(exp) != Expired || unlimited.ByDuration(issued).WorthAt(exp.Add(1000*day)) != Valid {
		t.Fatal("expiry boundaries wrong")
	}
	if got, ok := s.RenewAt(issued); !ok || !got.Equal(issued.Add(23*day)) {
		t.Fatalf("RenewAt = %v", got)
	}
}
