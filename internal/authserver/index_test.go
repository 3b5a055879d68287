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
			for replica, view := range map[string]*tokensv1alpha1.ApiToken{"operator": at, "auth-only": IndexView(at)} {
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
			for replica, view := range map[string]*tokensv1alpha1.ApiToken{"operator": at, "auth-only": IndexView(at)} {
				f.ix.Upsert(view)
				if _, verdict := f.ix.Lookup(tok, now); verdict != Expired {
					t.Fatalf("%s replica: %v, want expired", replica, verdict)
				}
			}
			at.Spec.Duration = "30d"
			f.ix.Upsert(IndexView(at))
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
						return IndexView(a)
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
