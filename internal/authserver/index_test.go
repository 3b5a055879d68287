package authserver

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// TestARevokedHashIsDeadForGood: a hash the status records as revoked
// never verifies, whatever other field of the record also names it and
// whatever spec.revoked says now (set back to false before the operator
// issued the new token).
func TestARevokedHashIsDeadForGood(t *testing.T) {
	f := newFixture()
	tok := mustToken()
	h := f.hasher.Hash(tok).Encode()
	future := metav1.NewTime(now.Add(time.Hour))
	for name, v := range map[string]tokensv1alpha1.Verification{
		"as the current hash":  {Hash: h, RevokedHash: h},
		"as the pending hash":  {Hash: f.hasher.Hash(mustToken()).Encode(), PendingHash: h, RevokedHash: h},
		"as the previous hash": {Hash: f.hasher.Hash(mustToken()).Encode(), PreviousHash: h, PreviousValidUntil: &future, RevokedHash: h},
	} {
		t.Run(name, func(t *testing.T) {
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "unrevoked", Namespace: "team-a"},
				Spec:   tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
				Status: tokensv1alpha1.ApiTokenStatus{ExpiresAt: &future, Verification: &v}}
			for replica, view := range map[string]*tokensv1alpha1.ApiToken{"operator": at, "auth-only": IndexView(at, "")} {
				f.ix.Upsert(view)
				if _, verdict := f.ix.Lookup(tok, now); verdict != Revoked {
					t.Fatalf("%s replica: a revoked hash recorded %s = %v, want revoked", replica, name, verdict)
				}
			}
		})
	}
}

// TestAnUnparseableDurationIsRefused: a token whose spec.duration the
// operator cannot parse (the CRD's pattern lets "106752d" in; it is longer
// than a time.Duration holds) is refused as expired on every replica,
// whatever expiry its status records: fail closed, as for an idleTimeout
// that does not parse. Once the duration parses again, it verifies.
func TestAnUnparseableDurationIsRefused(t *testing.T) {
	f := newFixture()
	tok := mustToken()
	future := metav1.NewTime(now.Add(time.Hour))
	for name, expires := range map[string]*metav1.Time{"no expiry recorded": nil, "an expiry recorded": &future} {
		t.Run(name, func(t *testing.T) {
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "unreadable", Namespace: "team-a"},
				Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "106752d"},
				Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseFailed, ExpiresAt: expires,
					Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}}}
			for replica, view := range map[string]*tokensv1alpha1.ApiToken{"operator": at, "auth-only": IndexView(at, "")} {
				f.ix.Upsert(view)
				if _, verdict := f.ix.Lookup(tok, now); verdict != Expired {
					t.Fatalf("%s replica: %v, want expired", replica, verdict)
				}
			}
			at.Spec.Duration = "30d"
			f.ix.Upsert(IndexView(at, ""))
			if _, verdict := f.ix.Lookup(tok, now); verdict != Valid {
				t.Fatalf("a readable duration again: %v, want valid", verdict)
			}
		})
	}
}

// TestARevokeSeenByTheWatchIsNeverUndoneByIt (issue 28): fed ApiTokens as
// the watch delivers them, with no reconciler in between: spec.revoked
// true on an Active token is refused at once while status still records
// its hash as current, and spec.revoked false again (or a deletion
// request withdrawn, as a finalizer-only update cannot do but a restore
// could) brings nothing back: the old token never verifies again without
// a new issue. A new hash recorded afterwards verifies.
func TestARevokeSeenByTheWatchIsNeverUndoneByIt(t *testing.T) {
	future := metav1.NewTime(now.Add(time.Hour))
	deleting := metav1.NewTime(now)
	for name, end := range map[string]func(*tokensv1alpha1.ApiToken){
		"spec.revoked":      func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = true },
		"deletionTimestamp": func(at *tokensv1alpha1.ApiToken) { at.DeletionTimestamp = &deleting },
	} {
		t.Run(name, func(t *testing.T) {
			for _, auth := range []bool{false, true} {
				f := newFixture()
				tok := mustToken()
				at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "flip", Namespace: "team-a", UID: "uid-flip"},
					Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
					Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, ExpiresAt: &future,
						Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(tok).Encode()}}}
				view := func(a *tokensv1alpha1.ApiToken) *tokensv1alpha1.ApiToken {
					if auth {
						return IndexView(a, "")
					}
					return a
				}
				f.ix.Upsert(view(at))
				if _, v := f.ix.Lookup(tok, now); v != Valid {
					t.Fatalf("auth-only %t: before: %v", auth, v)
				}
				ended := at.DeepCopy()
				end(ended)
				f.ix.Upsert(view(ended))
				if _, v := f.ix.Lookup(tok, now); v != Revoked {
					t.Fatalf("auth-only %t: ended by %s with the hash still current = %v, want revoked", auth, name, v)
				}
				f.ix.Upsert(view(at)) // flipped back, no reconcile: status unchanged
				if _, v := f.ix.Lookup(tok, now); v != Revoked {
					t.Fatalf("auth-only %t: %s undone with no new issue = %v, want revoked for good", auth, name, v)
				}
				fresh := mustToken()
				reissued := at.DeepCopy()
				reissued.Status.Verification = &tokensv1alpha1.Verification{Hash: f.hasher.Hash(fresh).Encode(), RevokedHash: at.Status.Verification.Hash}
				f.ix.Upsert(view(reissued))
				if _, v := f.ix.Lookup(fresh, now); v != Valid {
					t.Fatalf("auth-only %t: the new token = %v", auth, v)
				}
				if _, v := f.ix.Lookup(tok, now); v != Revoked {
					t.Fatalf("auth-only %t: the old token after the new issue = %v", auth, v)
				}
			}
		})
	}
}

// TestDeadlinesHoldFromTheirInstant pins, at concrete instants, when each
// recorded hash stops verifying on a replica: a nanosecond before its
// deadline it verifies, at the deadline it is refused. The expectations
// are written out, not asked of internal/lifecycle.
func TestDeadlinesHoldFromTheirInstant(t *testing.T) {
	f := newFixture()
	cur, prev := mustToken(), mustToken()
	issued := metav1.NewTime(now.Add(-time.Hour))
	recorded := metav1.NewTime(now.Add(30 * 24 * time.Hour))
	graceEnd := metav1.NewTime(now.Add(5 * time.Minute))
	used := metav1.NewTime(now.Add(-30 * time.Minute))
	ns := time.Nanosecond
	for _, c := range []struct {
		name  string
		spec  tokensv1alpha1.ApiTokenSpec
		tok   string
		at    time.Time
		want  Verdict
		after Verdict
	}{
		// The recorded expiresAt, 30 days on.
		{"the recorded expiry", tokensv1alpha1.ApiTokenSpec{Duration: "90d"}, cur, recorded.Time, Valid, Expired},
		// Issued an hour ago with a 2h duration: its end is in an hour,
		// before the expiry the status still records.
		{"a shorter duration", tokensv1alpha1.ApiTokenSpec{Duration: "2h"}, cur, now.Add(time.Hour), Valid, Expired},
		// Last used half an hour ago, idle after 45 minutes.
		{"the idle deadline", tokensv1alpha1.ApiTokenSpec{Duration: "90d", IdleTimeout: "45m"}, cur, now.Add(15 * time.Minute), Valid, Inactive},
		// The replaced token verifies until previousValidUntil.
		{"the end of the grace period", tokensv1alpha1.ApiTokenSpec{Duration: "90d"}, prev, graceEnd.Time, Valid, Expired},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.spec.Type = tokensv1alpha1.ReadOnly
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "deadlines", Namespace: "team-a"}, Spec: c.spec,
				Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, IssuedAt: &issued, ExpiresAt: &recorded, LastUsedAt: &used,
					Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(cur).Encode(), PreviousHash: f.hasher.Hash(prev).Encode(), PreviousValidUntil: &graceEnd}}}
			for replica, view := range map[string]*tokensv1alpha1.ApiToken{"operator": at, "auth-only": IndexView(at, "")} {
				f.ix.Upsert(view)
				if _, v := f.ix.Lookup(c.tok, c.at.Add(-ns)); v != c.want {
					t.Errorf("%s replica, a nanosecond before: %v, want %v", replica, v, c.want)
				}
				if _, v := f.ix.Lookup(c.tok, c.at); v != c.after {
					t.Errorf("%s replica, at the instant: %v, want %v", replica, v, c.after)
				}
			}
		})
	}
}

// TestASpecThatDoesNotParseVerifiesNothing: whichever span does not parse
// (the webhook refuses them all; without it the CRD lets some in), every
// hash of the token is refused as expired, the previous one in its grace
// too, as the reconciler reports the spec Failed; fixed, they verify
// again.
func TestASpecThatDoesNotParseVerifiesNothing(t *testing.T) {
	f := newFixture()
	cur, prev := mustToken(), mustToken()
	issued := metav1.NewTime(now.Add(-time.Hour))
	future := metav1.NewTime(now.Add(time.Hour))
	for name, unreadable := range map[string]func(*tokensv1alpha1.ApiTokenSpec){
		"idleTimeout": func(s *tokensv1alpha1.ApiTokenSpec) { s.IdleTimeout = "90 days" },
		"gracePeriod": func(s *tokensv1alpha1.ApiTokenSpec) { s.Rotation = &tokensv1alpha1.Rotation{GracePeriod: "500ms"} },
		"renewBefore": func(s *tokensv1alpha1.ApiTokenSpec) { s.Rotation = &tokensv1alpha1.Rotation{RenewBefore: "30d"} },
	} {
		t.Run(name, func(t *testing.T) {
			at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "unreadable-spec", Namespace: "team-a"},
				Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
				Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseFailed, IssuedAt: &issued, ExpiresAt: &future,
					Verification: &tokensv1alpha1.Verification{Hash: f.hasher.Hash(cur).Encode(), PreviousHash: f.hasher.Hash(prev).Encode(), PreviousValidUntil: &future}}}
			broken := at.DeepCopy()
			unreadable(&broken.Spec)
			for replica, view := range map[string]*tokensv1alpha1.ApiToken{"operator": broken, "auth-only": IndexView(broken, "")} {
				f.ix.Upsert(view)
				for _, tok := range []string{cur, prev} {
					if _, v := f.ix.Lookup(tok, now); v != Expired {
						t.Errorf("%s replica: %v, want expired", replica, v)
					}
				}
			}
			f.ix.Upsert(IndexView(at, ""))
			for _, tok := range []string{cur, prev} {
				if _, v := f.ix.Lookup(tok, now); v != Valid {
					t.Errorf("fixed: %v, want valid", v)
				}
			}
		})
	}
}
