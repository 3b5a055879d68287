package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustPolicy(t *testing.T, spec tokensv1alpha1.ApiTokenSpec) policy {
	t.Helper()
	p, err := parsePolicy(&spec)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func activeToken(mod ...func(*tokensv1alpha1.ApiToken)) *tokensv1alpha1.ApiToken {
	at := metav1.NewTime(t0)
	tok := &tokensv1alpha1.ApiToken{
		ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: "ns"},
		Spec:       tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		Status: tokensv1alpha1.ApiTokenStatus{
			Phase:        tokensv1alpha1.PhaseActive,
			IssuedAt:     &at,
			Verification: &tokensv1alpha1.Verification{Hash: "h", SaltID: "salt1"},
		},
	}
	for _, m := range mod {
		m(tok)
	}
	return tok
}

func TestDecide(t *testing.T) {
	p := mustPolicy(t, tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d", Rotation: &tokensv1alpha1.Rotation{RenewBefore: "7d"}})
	cases := []struct {
		name  string
		tok   *tokensv1alpha1.ApiToken
		state secretState
		now   time.Time
		want  action
	}{
		{"healthy", activeToken(), secretMatchesCurrent, t0, action{actSync, ""}},
		{"a revocation beats a foreign Secret", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = true }), secretForeign, t0, action{actRevoke, "Revoked"}},
		{"foreign beats all else", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
		}), secretForeign, t0, action{actConflict, "SecretConflict"}},
		{"revoked", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = true }), secretMatchesCurrent, t0, action{actRevoke, "Revoked"}},
		{"pending reached secret", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Verification.PendingHash, a.Status.Verification.PendingReason = "p", "Regenerated"
		}), secretMatchesPending, t0, action{actPromote, "Regenerated"}},
		{"unrevoked", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Phase, a.Status.Verification = tokensv1alpha1.PhaseRevoked, &tokensv1alpha1.Verification{RevokedHash: "h"}
		}), secretInvalid, t0, action{actIssue, "Unrevoked"}},
		{"unrevoked, a conflict since: the revoked token is never adopted", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Phase, a.Status.IssuedAt, a.Status.Verification = tokensv1alpha1.PhaseFailed, nil, &tokensv1alpha1.Verification{RevokedHash: "h", SaltID: "salt1"}
		}), secretWellFormed, t0, action{actIssue, "Unrevoked"}},
		{"cut with its Secret taken, the Secret back: a new token, never the cut one", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Phase, a.Status.Verification = tokensv1alpha1.PhaseFailed, &tokensv1alpha1.Verification{RevokedHash: "h", SaltID: "salt1"}
		}), secretWellFormed, t0, action{actIssue, "SecretConflict"}},
		{"first", &tokensv1alpha1.ApiToken{}, secretAbsent, t0, action{actIssue, "Generated"}},
		{"status lost, secret intact", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status = tokensv1alpha1.ApiTokenStatus{} }), secretWellFormed, t0, action{actRecover, "Recovered"}},
		{"status lost, secret untrusted", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status = tokensv1alpha1.ApiTokenStatus{} }), secretUntrusted, t0, action{actIssue, "SecretUntrusted"}},
		{"salt changed", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "old" }), secretWellFormed, t0, action{actIssue, "SaltRotated"}},
		{"salt not known to be replaced: held", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "lost" }), secretWellFormed, t0, action{actHold, "SaltMismatch"}},
		{"held even with a pending token", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Verification.SaltID = "lost"
			a.Status.Verification.PendingHash, a.Status.Verification.PendingReason = "p", "SaltRotated"
		}), secretMatchesPending, t0, action{actHold, "SaltMismatch"}},
		{"held even when the Secret is gone", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "lost" }), secretAbsent, t0, action{actHold, "SaltMismatch"}},
		{"a revoked token is not held", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Verification.SaltID = "lost"
			a.Spec.Revoked = true
		}), secretWellFormed, t0, action{actRevoke, "Revoked"}},
		{"secret deleted", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "salt2" }), secretAbsent, t0, action{actIssue, "SecretMissing"}},
		{"secret edited", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "salt2" }), secretWellFormed, t0, action{actIssue, "SecretTampered"}},
		{"secret emptied", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "salt2" }), secretInvalid, t0, action{actIssue, "SecretTampered"}},
		{"regenerate asked", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Verification.SaltID = "salt2"
			a.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
		}), secretMatchesCurrent, t0, action{actIssue, "Regenerated"}},
		{"regenerate already handled", activeToken(func(a *tokensv1alpha1.ApiToken) {
			a.Status.Verification.SaltID = "salt2"
			a.Annotations = map[string]string{tokensv1alpha1.RegenerateAnnotation: "1"}
			a.Status.LastHandledRegenerate = "1"
		}), secretMatchesCurrent, t0, action{actSync, ""}},
		{"before renewal", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "salt2" }), secretMatchesCurrent, t0.Add(23*24*time.Hour - time.Second), action{actSync, ""}},
		{"renewal due", activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.SaltID = "salt2" }), secretMatchesCurrent, t0.Add(23 * 24 * time.Hour), action{actIssue, "Rotated"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			salt := "salt1"
			if c.tok.Status.Verification != nil && c.tok.Status.Verification.SaltID == "salt2" {
				salt = "salt2"
			}
			// "old" is a salt the current one replaced; "lost" is not.
			view := saltView{id: salt, replaced: func(id string) bool { return id == "old" }}
			if got := decide(c.tok, p, c.state, view, c.now); got != c.want {
				t.Fatalf("decide = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestNextDeadline(t *testing.T) {
	day := 24 * time.Hour
	grace := metav1.NewTime(t0.Add(5 * time.Minute))
	cases := []struct {
		name string
		spec tokensv1alpha1.ApiTokenSpec
		mod  func(*tokensv1alpha1.ApiToken)
		now  time.Time
		want time.Time
	}{
		{"unlimited: nothing", tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "unlimited"}, nil, t0, time.Time{}},
		{"30d: expiring soon first", tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d"}, nil, t0, t0.Add(24 * day)},
		{"30d: then expiry", tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d"}, nil, t0.Add(25 * day), t0.Add(30 * day)},
		{"expired: nothing", tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d"}, nil, t0.Add(31 * day), time.Time{}},
		{"renewBefore earlier than expiring soon", tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d", Rotation: &tokensv1alpha1.Rotation{RenewBefore: "10d"}}, nil, t0, t0.Add(20 * day)},
		{"grace end first", tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d"}, func(a *tokensv1alpha1.ApiToken) { a.Status.Verification.PreviousValidUntil = &grace }, t0, grace.Time},
		{"revoked: nothing", tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d", Revoked: true}, nil, t0, time.Time{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := activeToken(func(a *tokensv1alpha1.ApiToken) { a.Spec = c.spec })
			if c.mod != nil {
				c.mod(tok)
			}
			if got := nextDeadline(tok, mustPolicy(t, c.spec), c.now); !got.Equal(c.want) {
				t.Fatalf("nextDeadline = %v, want %v", got, c.want)
			}
		})
	}
}

func TestComputeStatus(t *testing.T) {
	p := mustPolicy(t, tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "30d"})
	day := 24 * time.Hour
	cases := []struct {
		name       string
		mod        func(*tokensv1alpha1.ApiToken)
		b          blocker
		now        time.Time
		phase      tokensv1alpha1.Phase
		ready      metav1.ConditionStatus
		readyWhy   string
		expiringOK bool
	}{
		{"active", nil, blocker{}, t0, tokensv1alpha1.PhaseActive, metav1.ConditionTrue, "Active", false},
		{"expiring soon", nil, blocker{}, t0.Add(25 * day), tokensv1alpha1.PhaseActive, metav1.ConditionTrue, "Active", true},
		{"expired at the instant", nil, blocker{}, t0.Add(30 * day), tokensv1alpha1.PhaseExpired, metav1.ConditionFalse, "Expired", false},
		{"revoked", func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = true }, blocker{}, t0, tokensv1alpha1.PhaseRevoked, metav1.ConditionFalse, "Revoked", false},
		{"pending", func(a *tokensv1alpha1.ApiToken) { a.Status.Verification = nil }, blocker{}, t0, tokensv1alpha1.PhasePending, metav1.ConditionFalse, "Pending", false},
		{"conflict", nil, blocker{"SecretConflict", "x"}, t0, tokensv1alpha1.PhaseFailed, metav1.ConditionFalse, "SecretConflict", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := activeToken()
			if c.mod != nil {
				c.mod(tok)
			}
			computeStatus(tok, p, c.b, "", c.now)
			if tok.Status.Phase != c.phase {
				t.Fatalf("phase = %s, want %s", tok.Status.Phase, c.phase)
			}
			var ready, soon *metav1.Condition
			for i := range tok.Status.Conditions {
				switch tok.Status.Conditions[i].Type {
				case "Ready":
					ready = &tok.Status.Conditions[i]
				case "ExpiringSoon":
					soon = &tok.Status.Conditions[i]
				}
			}
			if ready == nil || ready.Status != c.ready || ready.Reason != c.readyWhy {
				t.Fatalf("Ready = %+v", ready)
			}
			if soon == nil || (soon.Status == metav1.ConditionTrue) != c.expiringOK {
				t.Fatalf("ExpiringSoon = %+v", soon)
			}
			if !tok.Status.ExpiresAt.Time.Equal(t0.Add(30 * day)) {
				t.Fatalf("expiresAt = %v", tok.Status.ExpiresAt)
			}
		})
	}
	// Changing the duration recomputes expiresAt from issuedAt.
	tok := activeToken()
	computeStatus(tok, mustPolicy(t, tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "90d"}), blocker{}, "", t0)
	if !tok.Status.ExpiresAt.Time.Equal(t0.Add(90 * day)) {
		t.Fatalf("expiresAt after duration change = %v", tok.Status.ExpiresAt)
	}
	// A grace window that has ended is dropped.
	end := metav1.NewTime(t0.Add(time.Minute))
	tok.Status.Verification.PreviousHash, tok.Status.Verification.PreviousValidUntil = "old", &end
	computeStatus(tok, p, blocker{}, "", t0.Add(time.Minute))
	if tok.Status.Verification.PreviousHash != "" {
		t.Fatal("previous hash kept after its grace period")
	}
}

// TestExpiringSoonOfATokenThatIsNoLongerValid: a revoked or never issued
// unlimited token does not say it "never expires" (kubectl apitoken status
// printed that after a revoke).
func TestExpiringSoonOfATokenThatIsNoLongerValid(t *testing.T) {
	p := mustPolicy(t, tokensv1alpha1.ApiTokenSpec{Type: "read-only", Duration: "unlimited"})
	for name, c := range map[string]struct {
		mod  func(*tokensv1alpha1.ApiToken)
		want string
	}{
		"active":  {func(*tokensv1alpha1.ApiToken) {}, "The token never expires"},
		"revoked": {func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = true }, "The token was revoked: it is refused whatever its expiry"},
		"pending": {func(a *tokensv1alpha1.ApiToken) { a.Status.Verification = nil }, "No token has been issued yet"},
	} {
		tok := activeToken()
		c.mod(tok)
		computeStatus(tok, p, blocker{}, "", t0)
		soon := meta.FindStatusCondition(tok.Status.Conditions, tokensv1alpha1.ConditionExpiringSoon)
		if soon == nil || soon.Status != metav1.ConditionFalse || soon.Message != c.want {
			t.Errorf("%s: ExpiringSoon = %+v, want False %q", name, soon, c.want)
		}
	}
}

func TestParsePolicyNamesTheField(t *testing.T) {
	cases := map[string]tokensv1alpha1.ApiTokenSpec{
		"spec.duration":             {Type: "read-only", Duration: "0d"},
		"spec.scopes":               {Type: "custom", Duration: "7d"},
		"spec.rotation.gracePeriod": {Type: "read-only", Duration: "7d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5ms"}},
		"spec.rotation.renewBefore": {Type: "read-only", Duration: "7d", Rotation: &tokensv1alpha1.Rotation{RenewBefore: "7d"}},
	}
	for path, spec := range cases {
		_, err := parsePolicy(&spec)
		if err == nil || err.Error()[:len(path)] != path {
			t.Errorf("parsePolicy(%+v) = %v, want an error on %s", spec, err, path)
		}
	}
}

func TestTypeNamesAgreeWithTokenCore(t *testing.T) {
	if string(tokensv1alpha1.ReadOnly) != token.TypeReadOnly || string(tokensv1alpha1.FullAccess) != token.TypeFullAccess ||
		string(tokensv1alpha1.Custom) != token.TypeCustom || tokensv1alpha1.Unlimited != token.Unlimited {
		t.Fatal("API constants and token core disagree")
	}
}

func TestInfoMetricFollowsPhaseAndType(t *testing.T) {
	count := func() int { return testutil.CollectAndCount(info) }
	before := count()
	recordMetrics("m", "tok", tokensv1alpha1.ReadOnly, tokensv1alpha1.PhaseActive, 1, 1, true, true)
	recordMetrics("m", "tok", tokensv1alpha1.ReadOnly, tokensv1alpha1.PhaseExpired, 1, 1, true, true)
	recordMetrics("m", "tok", tokensv1alpha1.Custom, tokensv1alpha1.PhaseExpired, 1, 1, true, true)
	if got := count(); got != before+1 {
		t.Fatalf("%d info series for one token, want 1", got-before)
	}
	if v := testutil.ToFloat64(info.WithLabelValues("m", "tok", "custom", "Expired")); v != 1 {
		t.Fatalf("current series = %v", v)
	}
	forgetMetrics("m", "tok")
	if got := count(); got != before {
		t.Fatalf("%d series left after forget", got-before)
	}
}

// TestTokenSeriesAreBounded: without per-token series a token is only
// counted (apitoken_tokens, by namespace, type and phase); its count moves
// with its phase and leaves with it.
func TestTokenSeriesAreBounded(t *testing.T) {
	series := func() int {
		return testutil.CollectAndCount(info) + testutil.CollectAndCount(expirationTimestamp) + testutil.CollectAndCount(expiringSoonTimestamp)
	}
	counted := func(phase tokensv1alpha1.Phase) float64 {
		return testutil.ToFloat64(tokens.WithLabelValues("bounded", "read-only", string(phase)))
	}
	before := series()
	for _, name := range []string{"a", "b", "c"} {
		recordMetrics("bounded", name, tokensv1alpha1.ReadOnly, tokensv1alpha1.PhaseActive, 1, 1, true, false)
	}
	if got := series(); got != before {
		t.Fatalf("%d per-token series for tokens that should have none", got-before)
	}
	if got := counted(tokensv1alpha1.PhaseActive); got != 3 {
		t.Fatalf("apitoken_tokens Active = %v, want 3", got)
	}
	// b enters its ExpiringSoon window: it gets its three series.
	recordMetrics("bounded", "b", tokensv1alpha1.ReadOnly, tokensv1alpha1.PhaseActive, 2, 1, true, true)
	if got := series(); got != before+3 {
		t.Fatalf("%d series for the expiring token, want 3", got-before)
	}
	// b expires: counted as Expired, its series gone again.
	recordMetrics("bounded", "b", tokensv1alpha1.ReadOnly, tokensv1alpha1.PhaseExpired, 2, 1, true, false)
	if got := series(); got != before {
		t.Fatalf("%d series left for the expired token", got-before)
	}
	if a, e := counted(tokensv1alpha1.PhaseActive), counted(tokensv1alpha1.PhaseExpired); a != 2 || e != 1 {
		t.Fatalf("apitoken_tokens Active %v Expired %v, want 2 and 1", a, e)
	}
	for _, name := range []string{"a", "b", "c"} {
		forgetMetrics("bounded", name)
	}
	if a, e := counted(tokensv1alpha1.PhaseActive), counted(tokensv1alpha1.PhaseExpired); a != 0 || e != 0 {
		t.Fatalf("apitoken_tokens Active %v Expired %v after every token was deleted", a, e)
	}
}

func TestParseTokenMetrics(t *testing.T) {
	for _, ok := range []string{"expiring", "all", "none"} {
		if _, err := ParseTokenMetrics(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if _, err := ParseTokenMetrics("some"); err == nil || !strings.Contains(err.Error(), "--token-metrics") {
		t.Errorf("some: %v, want an error naming --token-metrics", err)
	}
}

func TestReasonPolicies(t *testing.T) {
	issued := metav1.NewTime(t0)
	tok := activeToken(func(a *tokensv1alpha1.ApiToken) { a.Status.IssuedAt = &issued })
	now := t0.Add(24 * time.Hour)
	for _, c := range []struct {
		reason        string
		keepsPrevious bool
		newLifetime   bool
	}{
		{tokensv1alpha1.ReasonGenerated, false, true},
		{tokensv1alpha1.ReasonRegenerated, true, true},
		{tokensv1alpha1.ReasonRotated, true, true},
		{tokensv1alpha1.ReasonUnrevoked, false, true},
		{tokensv1alpha1.ReasonSaltRotated, false, false},
		{tokensv1alpha1.ReasonSecretMissing, false, false},
		{tokensv1alpha1.ReasonSecretTampered, false, false},
		{tokensv1alpha1.ReasonSecretConflict, false, false},
	} {
		if got := keepsPrevious(c.reason); got != c.keepsPrevious {
			t.Errorf("keepsPrevious(%s) = %v", c.reason, got)
		}
		if got := lifetimeStart(tok, c.reason, now).Equal(now); got != c.newLifetime {
			t.Errorf("lifetimeStart(%s) starts a new lifetime: %v, want %v", c.reason, got, c.newLifetime)
		}
	}
}

func TestPlausibleIssuedAt(t *testing.T) {
	for v, want := range map[string]bool{
		t0.Format(time.RFC3339):                                 true,
		t0.Add(-90 * 24 * time.Hour).Format(time.RFC3339):       true,
		t0.Add(maxClockSkew).Format(time.RFC3339):               true,
		t0.Add(maxClockSkew + time.Second).Format(time.RFC3339): false,
		"":          false,
		"yesterday": false,
	} {
		if got := plausibleIssuedAt(v, t0); got != want {
			t.Errorf("plausibleIssuedAt(%q) = %v, want %v", v, got, want)
		}
	}
}
