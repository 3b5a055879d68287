package v1alpha1

import (
	"time"

	"strings"
	"testing"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// FuzzValidateApiToken checks that ValidateApiToken never panics and that
// whatever it accepts, the token core can act on.
func FuzzValidateApiToken(f *testing.F) {
	f.Add("read-only", "", "30d", "", "", "content-api", "")
	f.Add("custom", "articles:read,orders:*", "90d", "5m", "7d", "admin", "s")
	f.Add("custom", "a:b,*:*,a:b", "unlimited", "1h", "", "", "")
	f.Add("full-access", "x", "0d", "-1m", "30d", "x", "Bad_Name")
	f.Fuzz(func(t *testing.T, typ, scopes, dur, grace, renew, aud, secret string) {
		at := validToken()
		at.Spec.Type = tokensv1alpha1.TokenType(typ)
		if scopes != "" {
			at.Spec.Scopes = strings.Split(scopes, ",")
		}
		at.Spec.Duration = dur
		at.Spec.Audience = tokensv1alpha1.Audience(aud)
		at.Spec.SecretName = secret
		if grace != "" || renew != "" {
			at.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: grace, RenewBefore: renew}
		}
		errs, _ := ValidateApiToken(nil, at, time.Now())
		if len(errs) > 0 {
			return
		}
		lifetime, finite, err := token.ParseDuration(dur)
		if err != nil {
			t.Fatalf("accepted duration %q the core refuses: %v", dur, err)
		}
		set, err := token.Granted(typ, at.Spec.Scopes)
		if err != nil || len(set) == 0 {
			t.Fatalf("accepted scopes the core refuses: %v", err)
		}
		for _, s := range set {
			if !set.Allows(s) {
				t.Fatalf("scope %v does not allow itself", s)
			}
		}
		if renew != "" {
			r, err := token.ParseSpan(renew)
			if err != nil || !finite || r >= lifetime {
				t.Fatalf("accepted renewBefore %q with duration %q", renew, dur)
			}
		}
	})
}
