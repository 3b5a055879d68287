package lifecycle

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mt(d time.Duration) *metav1.Time { at := metav1.NewTime(t0.Add(d)); return &at }

// apiToken is an ApiToken issued at t0 with a 30d duration, a current and a
// pending hash, and a previous one valid until t0+5m.
func apiToken(mod func(*tokensv1alpha1.ApiToken)) *tokensv1alpha1.ApiToken {
	at := &tokensv1alpha1.ApiToken{
		Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, IssuedAt: mt(0), ExpiresAt: mt(30 * day),
			Verification: &tokensv1alpha1.Verification{Hash: "cur", PendingHash: "pend", PreviousHash: "prev", PreviousValidUntil: mt(5 * time.Minute), RevokedHash: "rev", ReplacedHash: "repl"}},
	}
	if mod != nil {
		mod(at)
	}
	return at
}

// TestAssess pins each rule at concrete instants, a nanosecond before and
// at each deadline (tests elsewhere use Assess; this one says what it is).
func TestAssess(t *testing.T) {
	ns := time.Nanosecond
	type at struct {
		d                 time.Duration
		current, previous Worth
	}
	for _, c := range []struct {
		name string
		mod  func(*tokensv1alpha1.ApiToken)
		at   []at
	}{
		{"expiry and grace", nil, []at{
			{0, Valid, Valid}, {5*time.Minute - ns, Valid, Valid}, {5 * time.Minute, Valid, Expired},
			{30*day - ns, Valid, Expired}, {30 * day, Expired, Expired},
		}},
		{"a shorter duration ends it before the recorded expiry", func(a *tokensv1alpha1.ApiToken) { a.Spec.Duration = "1h" }, []at{
			{time.Hour - ns, Valid, Expired}, {time.Hour, Expired, Expired},
		}},
		{"a longer duration never lengthens the recorded expiry", func(a *tokensv1alpha1.ApiToken) { a.Spec.Duration = "90d" }, []at{
			{30*day - ns, Valid, Expired}, {30 * day, Expired, Expired},
		}},
		{"idle before expiry", func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "2h"; a.Status.LastUsedAt = mt(time.Hour) }, []at{
			{3*time.Hour - ns, Valid, Expired}, {3 * time.Hour, Inactive, Expired}, {30 * day, Expired, Expired},
		}},
		{"idle without an issue time: inactive at once", func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "2h"; a.Status.IssuedAt = nil }, []at{
			{0, Inactive, Valid},
		}},
		{"recorded Expired: for good", func(a *tokensv1alpha1.ApiToken) { a.Status.Phase = tokensv1alpha1.PhaseExpired }, []at{
			{0, Expired, Valid},
		}},
		{"recorded Inactive: until it expires", func(a *tokensv1alpha1.ApiToken) { a.Status.Phase = tokensv1alpha1.PhaseInactive }, []at{
			{0, Inactive, Valid}, {30 * day, Expired, Expired},
		}},
		{"a spec that does not parse: nothing", func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "90 days" }, []at{
			{0, Expired, Expired},
		}},
		{"a first use of the new token ends the grace then", func(a *tokensv1alpha1.ApiToken) {
			graceUntilUsed(a)
			a.Status.Verification.FirstUsedAt = mt(2 * time.Minute)
		}, []at{
			{2*time.Minute - ns, Valid, Valid}, {2 * time.Minute, Valid, Expired}, {5 * time.Minute, Valid, Expired},
		}},
		{"a first use after previousValidUntil: the grace ends at previousValidUntil", func(a *tokensv1alpha1.ApiToken) {
			graceUntilUsed(a)
			a.Status.Verification.FirstUsedAt = mt(10 * time.Minute)
		}, []at{
			{5*time.Minute - ns, Valid, Valid}, {5 * time.Minute, Valid, Expired},
		}},
		{"a recorded first use ends the grace even once the spec no longer asks", func(a *tokensv1alpha1.ApiToken) {
			a.Status.Verification.FirstUsedAt = mt(time.Minute)
		}, []at{
			{time.Minute - ns, Valid, Valid}, {time.Minute, Valid, Expired},
		}},
		{"graceUntilNewTokenUsed with no use: the whole grace", graceUntilUsed, []at{
			{5*time.Minute - ns, Valid, Valid}, {5 * time.Minute, Valid, Expired},
		}},
		{"revoked", func(a *tokensv1alpha1.ApiToken) { a.Spec.Revoked = true }, []at{{0, Revoked, Revoked}}},
		{"deletion requested", func(a *tokensv1alpha1.ApiToken) { a.DeletionTimestamp = mt(0) }, []at{{0, Revoked, Revoked}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := apiToken(c.mod)
			s, _ := ParseSpec(&tok.Spec)
			r := Assess(tok, s)
			for _, w := range c.at {
				now := t0.Add(w.d)
				if got := r.Current.WorthAt(now); got != w.current {
					t.Errorf("current at +%v: %v, want %v", w.d, got, w.current)
				}
				if got := r.Pending.WorthAt(now); got != w.current {
					t.Errorf("pending at +%v: %v, want %v (the current one's)", w.d, got, w.current)
				}
				if got := r.Previous.WorthAt(now); got != w.previous {
					t.Errorf("previous at +%v: %v, want %v", w.d, got, w.previous)
				}
				if got := r.Revoked.WorthAt(now); got != Revoked {
					t.Errorf("revokedHash at +%v: %v", w.d, got)
				}
				if got := r.Replaced.WorthAt(now); got != Expired {
					t.Errorf("replacedHash at +%v: %v, want expired for good", w.d, got)
				}
			}
		})
	}
}

func TestRecordHashesAndNext(t *testing.T) {
	tok := apiToken(func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "2h" })
	s, _ := ParseSpec(&tok.Spec)
	r := Assess(tok, s)
	var order []string
	for _, h := range r.Hashes() {
		order = append(order, h.Encoded)
	}
	if got := len(order); got != 5 || order[0] != "repl" || order[1] != "prev" || order[2] != "pend" || order[3] != "cur" || order[4] != "rev" {
		t.Fatalf("Hashes = %v", order)
	}
	for _, c := range []struct{ now, want time.Duration }{
		{0, 5 * time.Minute}, {5 * time.Minute, 2 * time.Hour}, {2 * time.Hour, 30 * day},
	} {
		if next, ok := r.Next(t0.Add(c.now)); !ok || !next.Equal(t0.Add(c.want)) {
			t.Errorf("Next(+%v) = %v %v, want +%v", c.now, next, ok, c.want)
		}
	}
	if _, ok := r.Next(t0.Add(30 * day)); ok {
		t.Error("a change after the expiry")
	}
	tok.Status.Verification.PreviousValidUntil = nil
	if h := Assess(tok, s).Previous; h.Encoded != "" {
		t.Errorf("a previous hash without previousValidUntil: %+v", h)
	}
	if r := Assess(&tokensv1alpha1.ApiToken{}, s); len(r.Hashes()) != 0 {
		t.Error("hashes without a record")
	}
}

func TestCurrentEndAndGrace(t *testing.T) {
	tok := apiToken(func(a *tokensv1alpha1.ApiToken) { a.Spec.IdleTimeout = "2h" })
	s, _ := ParseSpec(&tok.Spec)
	if end, finite := CurrentEnd(tok, s); !finite || !end.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("CurrentEnd = %v %v, want the idle deadline", end, finite)
	}
	tok.Status.Phase = tokensv1alpha1.PhaseExpired
	if end, finite := CurrentEnd(tok, s); !finite || !end.IsZero() {
		t.Fatalf("CurrentEnd of an ended token = %v %v, want at once", end, finite)
	}
	end := t0.Add(time.Hour)
	for _, c := range []struct {
		now   time.Duration
		grace time.Duration
		want  time.Duration // -1: nothing kept
	}{
		{0, 5 * time.Minute, 5 * time.Minute},
		{55 * time.Minute, 10 * time.Minute, time.Hour},
		{time.Hour - time.Nanosecond, 10 * time.Minute, time.Hour},
		{time.Hour, 10 * time.Minute, -1},
		{0, 0, -1},
	} {
		until, keep := PreviousValidUntil(t0.Add(c.now), c.grace, end, true)
		if (c.want < 0) == keep || (keep && !until.Equal(t0.Add(c.want))) {
			t.Errorf("PreviousValidUntil(+%v, %v) = %v %v, want +%v", c.now, c.grace, until, keep, c.want)
		}
	}
	if _, keep := PreviousValidUntil(t0, time.Minute, time.Time{}, true); keep {
		t.Error("kept a token that ended at once")
	}
	if until, keep := PreviousValidUntil(t0, time.Minute, time.Time{}, false); !keep || !until.Equal(t0.Add(time.Minute)) {
		t.Error("an unlimited token's grace")
	}
}

// graceUntilUsed sets spec.rotation: a 5m grace that ends when the new
// token is used.
func graceUntilUsed(a *tokensv1alpha1.ApiToken) {
	a.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: "5m", GraceUntilNewTokenUsed: true}
}

// TestFirstUse: which use of which hash ends the previous token's grace.
// Only a use of the hash the status records as current does, while the
// previous one's grace runs; a client still on the previous token never
// ends its own grace.
func TestFirstUse(t *testing.T) {
	for _, c := range []struct {
		name    string
		mod     func(*tokensv1alpha1.ApiToken)
		encoded string
		when    time.Duration
		want    time.Duration // -1: no first use
	}{
		{"the new token, in the grace", graceUntilUsed, "cur", time.Minute, time.Minute},
		{"the previous token never ends its own grace", graceUntilUsed, "prev", time.Minute, -1},
		{"a pending token is not the current one yet", graceUntilUsed, "pend", time.Minute, -1},
		{"a hash the record does not name", graceUntilUsed, "other", time.Minute, -1},
		{"no hash", graceUntilUsed, "", time.Minute, -1},
		{"the spec does not ask", nil, "cur", time.Minute, -1},
		{"after the grace ended", graceUntilUsed, "cur", 5 * time.Minute, -1},
		{"a first use already recorded", func(a *tokensv1alpha1.ApiToken) {
			graceUntilUsed(a)
			a.Status.Verification.FirstUsedAt = mt(2 * time.Minute)
		}, "cur", time.Minute, -1},
		{"a replica's clock behind: dated at the issue", graceUntilUsed, "cur", -30 * time.Second, 0},
		{"a revoked token", func(a *tokensv1alpha1.ApiToken) { graceUntilUsed(a); a.Spec.Revoked = true }, "cur", time.Minute, -1},
		{"an expired token", func(a *tokensv1alpha1.ApiToken) { graceUntilUsed(a); a.Status.Phase = tokensv1alpha1.PhaseExpired }, "cur", time.Minute, -1},
		{"no previous token", func(a *tokensv1alpha1.ApiToken) {
			graceUntilUsed(a)
			a.Status.Verification.PreviousHash, a.Status.Verification.PreviousValidUntil = "", nil
		}, "cur", time.Minute, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := apiToken(c.mod)
			s, _ := ParseSpec(&tok.Spec)
			got, ok := FirstUse(tok, s, c.encoded, t0.Add(c.when))
			if (c.want >= 0) != ok || (ok && !got.Equal(t0.Add(c.want))) {
				t.Errorf("FirstUse(%q, +%v) = %v %v, want +%v", c.encoded, c.when, got, ok, c.want)
			}
			if r := Assess(tok, s); ok && !r.EndsGrace {
				t.Error("a first use where Record.EndsGrace is false")
			}
		})
	}
}

func TestGraceEndedByUse(t *testing.T) {
	tok := apiToken(graceUntilUsed)
	if _, ok := GraceEndedByUse(tok); ok {
		t.Error("ended with no use")
	}
	tok.Status.Verification.FirstUsedAt = mt(2 * time.Minute)
	if at, ok := GraceEndedByUse(tok); !ok || !at.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("GraceEndedByUse = %v %v, want +2m", at, ok)
	}
	tok.Status.Verification.FirstUsedAt = mt(5 * time.Minute)
	if _, ok := GraceEndedByUse(tok); ok {
		t.Error("a use at previousValidUntil ended nothing early")
	}
}

func TestGraceUntilUsedNeedsGrace(t *testing.T) {
	spec := &tokensv1alpha1.ApiTokenSpec{Rotation: &tokensv1alpha1.Rotation{GraceUntilNewTokenUsed: true}}
	if err := GraceUntilUsedNeedsGrace(spec); err == nil || err.Field != "spec.rotation.graceUntilNewTokenUsed" {
		t.Fatalf("GraceUntilUsedNeedsGrace = %v", err)
	}
	spec.Rotation.GracePeriod = "5m"
	if err := GraceUntilUsedNeedsGrace(spec); err != nil {
		t.Fatal(err)
	}
}
