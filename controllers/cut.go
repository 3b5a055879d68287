package controllers

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// staleViewRetry is how soon a pass whose cached view the API server
// contradicted looks again: the cache is behind by a watch event at most.
const staleViewRetry = time.Second

// cutsUnasked reports whether a token issued for reason cuts the current
// one although nobody asked for it: the Secret was tampered with, deleted
// or cannot be trusted, or the salt was replaced. Such a cut refuses every
// client at once (no grace), so it is taken only on a live view
// (confirmLive) and, but for the salt (a person's rotation), only while
// few are taken (CutGuard).
func cutsUnasked(reason string) bool {
	switch reason {
	case tokensv1alpha1.ReasonSecretTampered, tokensv1alpha1.ReasonSecretMissing,
		tokensv1alpha1.ReasonSecretUntrusted, tokensv1alpha1.ReasonSaltRotated:
		return true
	}
	return false
}

// pendingRecorded reports whether t records a pending token: one that may
// already be in the Secret, so that issuing another would overwrite the
// only record of the token the Secret holds.
func pendingRecorded(t *tokensv1alpha1.ApiToken) bool {
	return t.Status.Verification != nil && t.Status.Verification.PendingHash != ""
}

// confirmLive takes the decision act again on a view read from the API
// server instead of the cache: the ApiToken, its Secret and the salt
// Secret. ok is true when that view decides the same, with the live Secret
// (nil: absent) to write over; false when the cache was behind (a Secret or
// status written a moment ago, a salt not yet observed): nothing is done,
// and the pass comes back once the cache has caught up. This is the
// garbage collector's rule before a delete: never destroy on a cache
// alone. Without a reader around the cache (unit tests), the cache is the
// truth.
func (r *ApiTokenReconciler) confirmLive(ctx context.Context, t *tokensv1alpha1.ApiToken, p policy, st *salt.State, act action) (*corev1.Secret, bool, error) {
	if r.APIReader == nil {
		return nil, true, nil
	}
	var live tokensv1alpha1.ApiToken
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(t), &live); err != nil {
		return nil, false, client.IgnoreNotFound(err)
	}
	if live.ResourceVersion != t.ResourceVersion {
		return nil, false, nil
	}
	var saltSecret corev1.Secret
	err := r.APIReader.Get(ctx, r.Salt.Ref(), &saltSecret)
	if apierrors.IsNotFound(err) {
		return nil, false, nil // the salt controller writes it back
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading salt Secret %s: %w", r.Salt.Ref(), err)
	}
	if liveSalt, err := salt.FromSecret(&saltSecret); err != nil || liveSalt.ID() != st.ID() {
		return nil, false, nil // the salt watcher installs it and re-queues every token
	}
	key := types.NamespacedName{Namespace: t.Namespace, Name: t.SecretName()}
	secret, err := r.readSecretLive(ctx, key, t)
	secret, _, state, err := r.classifySecret(ctx, t, st, secret, err)
	if err != nil {
		return nil, false, err
	}
	again := decide(&live, p, state, saltView{id: st.ID(), replaced: st.Replaces}, r.Clock.Now())
	if again != act {
		return nil, false, nil
	}
	return secret, true, nil
}

// CutGuard bounds how many tokens are cut without being asked
// (cutsUnasked, but for the salt; and the token of a Secret taken from the
// operator, see conflict) in a sliding window: many Secrets
// "tampered" or "missing" at once is far more likely a bug, a restore or a
// bad prune than an attack on many Secrets, and cutting them all would log
// every client out. Past the limit the token is held (ReasonCutHeld) until
// a person asks for its regeneration. The zero value and nil allow every
// cut. Safe for concurrent use.
type CutGuard struct {
	// Max is the most cuts allowed in Window (0: no limit).
	Max int
	// Percent, when > 0, lowers Max to this share of all ApiTokens
	// (rounded up), never below min(Max, minCutBound).
	Percent float64
	// Window is how far back cuts count.
	Window time.Duration

	mu   sync.Mutex
	cuts []cutAt
}

// cutAt is one counted cut.
type cutAt struct {
	at  time.Time
	key types.NamespacedName
}

// minCutBound is the least the percentage lowers the bound to: on a small
// cluster a percentage would otherwise allow one cut, which one tenant's
// own deletion spends.
const minCutBound = 5

// Allow reports whether one more cut of the ApiToken key may be taken at
// now with total ApiTokens, and if so counts it. A token cut again inside
// the window counts once (a tenant deleting its own Secret over and over
// spends one cut), and one namespace spends at most half the bound
// (rounded up), so that no tenant can hold another's cuts.
func (g *CutGuard) Allow(now time.Time, total int, key types.NamespacedName) bool {
	if !g.Enabled() {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	limit := g.Max
	if g.Percent > 0 {
		limit = min(limit, max(min(g.Max, minCutBound), int(math.Ceil(g.Percent/100*float64(total)))))
	}
	share := (limit + 1) / 2
	kept := g.cuts[:0]
	inNamespace := 0
	for _, c := range g.cuts {
		if now.Sub(c.at) >= g.Window {
			continue
		}
		kept = append(kept, c)
		if c.key == key {
			return true // counted already
		}
		if c.key.Namespace == key.Namespace {
			inNamespace++
		}
	}
	g.cuts = kept
	if len(g.cuts) >= limit || inNamespace >= share {
		return false
	}
	g.cuts = append(g.cuts, cutAt{now, key})
	return true
}

// Enabled reports whether the guard bounds anything.
func (g *CutGuard) Enabled() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.Max > 0
}

// Set changes the guard's bounds and forgets the cuts counted so far.
func (g *CutGuard) Set(maxCuts int, percent float64, window time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Max, g.Percent, g.Window, g.cuts = maxCuts, percent, window, nil
}

// Limit describes the guard for messages: "10 in 5m0s".
func (g *CutGuard) Limit() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := fmt.Sprintf("%d in %s", g.Max, g.Window)
	if g.Percent > 0 {
		s += fmt.Sprintf(" (at most %g%% of all ApiTokens, not below %d)", g.Percent, min(g.Max, minCutBound))
	}
	return s + ", half of it per namespace"
}

// guardCut decides whether the unasked cut for reason may go ahead: always
// when a person asked for a new token (the release) or presented the
// token as leaked at /v1/revoke (it is refused already), never for a token
// already held (it stays held until released), else as the guard allows.
func (r *ApiTokenReconciler) guardCut(ctx context.Context, t, base *tokensv1alpha1.ApiToken, reason string) (bool, error) {
	if reason == tokensv1alpha1.ReasonSaltRotated || regenerateRequested(t) || leakOfCurrent(t.Status.Verification) || !r.Cuts.Enabled() {
		return true, nil
	}
	if readyReason(base) == tokensv1alpha1.ReasonCutHeld {
		return false, nil
	}
	var list tokensv1alpha1.ApiTokenList
	if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	return r.Cuts.Allow(r.Clock.Now(), len(list.Items), client.ObjectKeyFromObject(t)), nil
}

// cutHeldMessage says why the token is held and how to release it.
func (r *ApiTokenReconciler) cutHeldMessage(t *tokensv1alpha1.ApiToken, reason string) string {
	return fmt.Sprintf("%s, but more tokens than the operator's limit (%s) were to be cut without anyone asking: "+
		"this one is held and its token keeps verifying as before. If the change was meant, release it: "+
		"kubectl -n %s annotate apitoken %s %s=\"$(date +%%s)\" --overwrite (docs/operations.md#held-cuts)",
		reasonMessages[reason], r.Cuts.Limit(), t.Namespace, t.Name, tokensv1alpha1.RegenerateAnnotation)
}
