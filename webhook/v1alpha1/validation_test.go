package v1alpha1

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

func TestValidateApiTokenRefuses(t *testing.T) {
	if len(badCases) < 30 {
		t.Fatalf("only %d bad cases", len(badCases))
	}
	for _, c := range badCases {
		t.Run(c.name, func(t *testing.T) {
			at := validToken()
			c.mutate(at)
			errs, _ := ValidateApiToken(nil, at, time.Now())
			if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), c.message) {
				t.Fatalf("errors %v do not contain %q", errs, c.message)
			}
		})
	}
	for _, c := range badUpdates {
		old := validToken()
		old.Spec.SecretName = old.SecretName()
		at := old.DeepCopy()
		c.mutate(at)
		errs, _ := ValidateApiToken(old, at, time.Now())
		if !strings.Contains(errs.ToAggregate().Error(), c.message) {
			t.Fatalf("%s: errors %q do not contain %q", c.name, errs.ToAggregate(), c.message)
		}
	}
}

func TestValidateApiTokenAccepts(t *testing.T) {
	good := []func(*tokensv1alpha1.ApiToken){
		func(*tokensv1alpha1.ApiToken) {},
		showOnce(showOnceKey),
		duration("unlimited"),
		duration("36h"),
		duration("1d12h30m"),
		custom("articles:read", "orders:*", "*:publish"),
		both(duration("90d"), rotation("5m", "7d")),
		func(a *tokensv1alpha1.ApiToken) { a.Spec.Audience = tokensv1alpha1.Admin; a.Spec.SecretName = "x.y-z" },
		func(a *tokensv1alpha1.ApiToken) { a.Spec.Audience = "billing-api" },
		duration("2160h"),
		duration("2160h0m0s"),
		both(duration("1h30m"), rotation("30s", "10m")),
		func(a *tokensv1alpha1.ApiToken) {
			a.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: "10m", GraceUntilNewTokenUsed: true}
		},
		custom("table:data:read", "articles:findOne", "*:*:read"),
		// A reloader, and names that only look like a replicator's.
		func(a *tokensv1alpha1.ApiToken) {
			a.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{
				Labels:      map[string]string{"app": "shop", "example.com/external-secrets.io": "x"},
				Annotations: map[string]string{"reloader.stakater.com/match": "true", "notk8s.emberstack.com/x": "y", "reflector": "z"},
			}
		},
	}
	for i, g := range good {
		at := validToken()
		g(at)
		if errs, _ := ValidateApiToken(nil, at, time.Now()); len(errs) > 0 {
			t.Errorf("case %d refused: %v", i, errs.ToAggregate())
		}
	}
}

func TestValidateApiTokenWarns(t *testing.T) {
	at := validToken()
	custom("articles:read", "orders:*", "articles:read", "orders:delete", "*:*")(at)
	errs, warnings := ValidateApiToken(nil, at, time.Now())
	if len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	want := []string{
		`spec.scopes[2]: "articles:read" duplicates spec.scopes[0]`,
		`spec.scopes[0]: "articles:read" is already granted by "*:*" (spec.scopes[4])`,
		`spec.scopes[1]: "orders:*" is already granted by "*:*" (spec.scopes[4])`,
		`spec.scopes[3]: "orders:delete" is already granted by "orders:*" (spec.scopes[1])`,
	}
	if strings.Join(warnings, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(want, "\n"))
	}
}

// TestValidateDurationWarns: a duration below kubelet's Secret refresh,
// and a duration edit that ends the current token at once, are allowed
// with a warning that says so.
func TestValidateDurationWarns(t *testing.T) {
	at := validToken()
	at.Spec.Duration = "30s"
	if _, warnings := ValidateApiToken(nil, at, time.Now()); len(warnings) != 1 || !strings.Contains(warnings[0], "spec.duration: 30s is shorter than kubelet's Secret refresh") {
		t.Fatalf("warnings %q", warnings)
	}
	old := validToken()
	issued := metav1.NewTime(time.Now().Add(-2 * time.Hour))
	old.Status.IssuedAt = &issued
	for d, want := range map[string]string{
		"1h":  "spec.duration: 1h expires the current token at once (issued at " + issued.UTC().Format(time.RFC3339) + ")",
		"3h":  "",
		"90d": "",
	} {
		at := old.DeepCopy()
		at.Spec.Duration = d
		_, warnings := ValidateApiToken(old, at, time.Now())
		if got := strings.Join(warnings, "\n"); (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s: warnings %q, want %q", d, got, want)
		}
	}
}

// TestIdleTokenIsNotRevived is the attack: the idle deadline has passed,
// the operator has not yet recorded Inactive, and the user lengthens or
// removes idleTimeout to make the same token verify again.
func TestIdleTokenIsNotRevived(t *testing.T) {
	now := time.Now()
	old := validToken()
	old.Spec.IdleTimeout = "1m"
	issued := metav1.NewTime(now.Add(-70 * time.Second))
	old.Status.IssuedAt = &issued
	for idle, refused := range map[string]bool{"": true, "2h": true, "30s": false, "1m": false} {
		at := old.DeepCopy()
		at.Spec.IdleTimeout = idle
		errs := validateNoRevival(old, at, now)
		if got := len(errs) > 0; got != refused {
			t.Errorf("idleTimeout 1m -> %q after 70 s idle: refused %v, want %v (%v)", idle, got, refused, errs)
		}
		if refused && len(errs) > 0 && !strings.Contains(errs[0].Error(), "spec.idleTimeout: Forbidden: the token has been idle since") {
			t.Errorf("message %q", errs[0].Error())
		}
	}
	used := metav1.NewTime(now.Add(-10 * time.Second))
	old.Status.LastUsedAt = &used
	at := old.DeepCopy()
	at.Spec.IdleTimeout = ""
	if errs := validateNoRevival(old, at, now); len(errs) != 0 {
		t.Errorf("a token used 10 s ago is not idle: %v", errs)
	}
}

func TestValidateSecretNameUnique(t *testing.T) {
	at := validToken()
	other := validToken()
	other.Name = "other"
	other.Spec.SecretName = "valid-token"
	if errs := ValidateSecretNameUnique(at, []tokensv1alpha1.ApiToken{*at, *other}); len(errs) != 1 ||
		errs[0].Error() != `spec.secretName: Invalid value: "valid-token": is already used by ApiToken other; choose another spec.secretName` {
		t.Fatalf("errs = %v", errs)
	}
	if errs := ValidateSecretNameUnique(at, []tokensv1alpha1.ApiToken{*at}); len(errs) != 0 {
		t.Fatalf("itself counted: %v", errs)
	}
}

func TestCreatorCannotChangeOnUpdate(t *testing.T) {
	old := validToken()
	old.Annotations = map[string]string{tokensv1alpha1.CreatedByAnnotation: "alice"}
	at := old.DeepCopy()
	at.Annotations[tokensv1alpha1.CreatedByAnnotation] = "mallory"
	errs, _ := ValidateApiToken(old, at, time.Now())
	if !strings.Contains(errs.ToAggregate().Error(), "metadata.annotations[tokens.apitoken.dev/created-by]: Forbidden") {
		t.Fatalf("errs = %v", errs)
	}
}

// TestAnAudienceNamedLikeTheAPIServersIsRefused: k3s and RKE2 add "k3s"
// and "rke2" to the API server's audiences; a token of such an audience
// would be valid at the API server. It is refused on create and on a
// change of audience; an unchanged one is let through with a warning (the
// auth endpoint refuses it for the API server either way).
func TestAnAudienceNamedLikeTheAPIServersIsRefused(t *testing.T) {
	issuer := "https://kubernetes.default.svc.cluster.local"
	for distribution, audiences := range map[string][]string{"k3s": {issuer, "k3s"}, "rke2": {issuer, "rke2"}} {
		at := validToken()
		at.Spec.Audience = tokensv1alpha1.Audience(distribution)
		errs, _ := ValidateAudience(nil, at, audiences)
		if !strings.Contains(errs.ToAggregate().Error(), "spec.audience") || !strings.Contains(errs.ToAggregate().Error(), "--kube-api-audiences") {
			t.Fatalf("%s: create = %v", distribution, errs)
		}
		old := validToken()
		if errs, _ := ValidateAudience(old, at, audiences); len(errs) == 0 {
			t.Fatalf("%s: a change to audience %s was let through", distribution, distribution)
		}
		if errs, warnings := ValidateAudience(at.DeepCopy(), at, audiences); len(errs) != 0 || len(warnings) == 0 {
			t.Fatalf("%s: unchanged = %v %v, want a warning only", distribution, errs, warnings)
		}
		for _, fine := range []tokensv1alpha1.Audience{tokensv1alpha1.Kubernetes, tokensv1alpha1.ContentAPI, "billing-api"} {
			at.Spec.Audience = fine
			if errs, _ := ValidateAudience(nil, at, audiences); len(errs) != 0 {
				t.Fatalf("%s: audience %s refused: %v", distribution, fine, errs)
			}
		}
	}
}

// TestWarningsAndRevivalAtTheInstant pins the webhook's time rules at
// concrete instants (written out, not asked of internal/lifecycle): a new
// duration ends the current token from issuedAt + duration on, and an
// idle deadline holds from its instant on.
func TestWarningsAndRevivalAtTheInstant(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	ns := time.Nanosecond
	old := validToken()
	issued := metav1.NewTime(now.Add(-2 * time.Hour))
	old.Status.IssuedAt = &issued
	at := old.DeepCopy()
	at.Spec.Duration = "2h"
	if _, w := ValidateApiToken(old, at, now.Add(-ns)); len(w) != 0 {
		t.Errorf("a nanosecond before issuedAt + 2h: warnings %q", w)
	}
	if _, w := ValidateApiToken(old, at, now); len(w) != 1 || !strings.Contains(w[0], "expires the current token at once") {
		t.Errorf("at issuedAt + 2h: warnings %q, want the token's end", w)
	}

	old = validToken()
	old.Spec.IdleTimeout = "2h"
	old.Status.IssuedAt = &issued // idle from now on
	at = old.DeepCopy()
	at.Spec.IdleTimeout = "3h"
	if errs := validateNoRevival(old, at, now.Add(-ns)); len(errs) != 0 {
		t.Errorf("a nanosecond before the idle deadline: %v", errs)
	}
	if errs := validateNoRevival(old, at, now); len(errs) != 1 || !strings.Contains(errs[0].Error(), "idle since 2026-06-01T12:00:00Z") {
		t.Errorf("at the idle deadline: %v, want a refusal", errs)
	}
}

// TestRestartTargetsWithGraceUntilUsedWarn: the first restarted pod would
// end the grace of the pods a rollout has not reached yet; admitted, with
// a warning that says so. Without restart targets, no warning.
func TestRestartTargetsWithGraceUntilUsedWarn(t *testing.T) {
	at := validToken()
	at.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: "10m", GraceUntilNewTokenUsed: true,
		RestartTargets: []tokensv1alpha1.RestartTarget{{Kind: tokensv1alpha1.RestartDeployment, Name: "api"}}}
	errs, warnings := ValidateApiToken(nil, at, time.Now())
	if len(errs) != 0 || len(warnings) != 1 || !strings.HasPrefix(warnings[0], "spec.rotation.graceUntilNewTokenUsed: the first restarted pod's request ends the previous token's grace") {
		t.Fatalf("errs %v, warnings %q", errs, warnings)
	}
	at.Spec.Rotation.RestartTargets = nil
	if _, warnings := ValidateApiToken(nil, at, time.Now()); len(warnings) != 0 {
		t.Fatalf("warnings %q", warnings)
	}
}
