package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// policy is an ApiToken's spec, parsed.
type policy struct {
	lifetime    time.Duration
	finite      bool
	grace       time.Duration
	renewBefore time.Duration
	// idle is spec.idleTimeout; 0: none.
	idle time.Duration
}

// parsePolicy parses the spec's spans and scopes. The CRD schema and the
// webhook refuse bad specs; this is the last line for an install without
// the webhook, and its error names the field.
func parsePolicy(spec *tokensv1alpha1.ApiTokenSpec) (policy, error) {
	var p policy
	var err error
	specPath := field.NewPath("spec")
	if p.lifetime, p.finite, err = token.ParseDuration(spec.Duration); err != nil {
		return p, field.Invalid(specPath.Child("duration"), spec.Duration, err.Error())
	}
	if _, err := token.Granted(string(spec.Type), spec.Scopes); err != nil {
		return p, field.Invalid(specPath.Child("scopes"), spec.Scopes, err.Error())
	}
	if spec.IdleTimeout != "" {
		if p.idle, err = token.ParseSpan(spec.IdleTimeout); err != nil {
			return p, field.Invalid(specPath.Child("idleTimeout"), spec.IdleTimeout, err.Error())
		}
	}
	if r := spec.Rotation; r != nil {
		rotPath := specPath.Child("rotation")
		if r.GracePeriod != "" {
			if p.grace, err = token.ParseSpan(r.GracePeriod); err != nil {
				return p, field.Invalid(rotPath.Child("gracePeriod"), r.GracePeriod, err.Error())
			}
		}
		if r.RenewBefore != "" {
			if p.renewBefore, err = token.ParseSpan(r.RenewBefore); err != nil {
				return p, field.Invalid(rotPath.Child("renewBefore"), r.RenewBefore, err.Error())
			}
			if !p.finite || p.renewBefore >= p.lifetime {
				return p, field.Invalid(rotPath.Child("renewBefore"), r.RenewBefore, "must be shorter than a finite spec.duration")
			}
		}
	}
	return p, nil
}

// expiresAt returns issued + lifetime, or nil for an unlimited token.
func (p policy) expiresAt(issued time.Time) *time.Time {
	t, ok := token.ExpiresAt(issued, p.lifetime, p.finite)
	if !ok {
		return nil
	}
	return &t
}

// idleUntil returns when t becomes inactive, and false without idleTimeout
// or an issue time.
func (p policy) idleUntil(t *tokensv1alpha1.ApiToken) (time.Time, bool) {
	if p.idle == 0 || t.Status.IssuedAt == nil {
		return time.Time{}, false
	}
	var last time.Time
	if t.Status.LastUsedAt != nil {
		last = t.Status.LastUsedAt.Time
	}
	return token.IdleUntil(t.Status.IssuedAt.Time, last, t.Status.LastUsedAt != nil, p.idle), true
}
