package controllers

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// laggingCache serves the reconciler's cached reads of the objects it
// holds as it holds them (a cache behind the API server by a watch event),
// Secrets through the cache's transform; every other read goes to the
// cache as it is.
type laggingCache struct {
	client.Client
	h    *harness
	held map[types.NamespacedName]client.Object
}

func (l *laggingCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	old, ok := l.held[key]
	if !ok || reflect.TypeOf(old) != reflect.TypeOf(obj) {
		return l.Client.Get(ctx, key, obj, opts...)
	}
	switch o := obj.(type) {
	case *corev1.Secret:
		out, err := digestToken(l.h.r.Salt)(old.DeepCopyObject())
		if err != nil {
			return err
		}
		*o = *out.(*corev1.Secret)
	case *tokensv1alpha1.ApiToken:
		*o = *old.(*tokensv1alpha1.ApiToken).DeepCopy()
	}
	return nil
}

// withLaggingCache runs f with the reconciler's cache serving held.
func (h *harness) withLaggingCache(f func(), held ...client.Object) {
	h.t.Helper()
	c := h.r.Client
	l := &laggingCache{Client: c, h: h, held: map[types.NamespacedName]client.Object{}}
	for _, o := range held {
		l.held[client.ObjectKeyFromObject(o)] = o
	}
	h.r.Client = l
	defer func() { h.r.Client = c }()
	f()
}

// cutEvents are the Events of h that say a token was cut without being asked.
func cutEvents(evs []string) []string {
	var cut []string
	for _, e := range evs {
		for _, r := range cutReasons {
			if strings.Contains(e, " "+r+" ") {
				cut = append(cut, e)
			}
		}
	}
	return cut
}

// TestAStaleCacheCutsNothing: a pass that decides from a cache behind the
// API server (its Secret older than the ApiToken's status, or the ApiToken
// older than its Secret) re-issues nothing; once the cache catches up,
// the token is as it was.
func TestAStaleCacheCutsNothing(t *testing.T) {
	for _, lagging := range []string{"Secret", "ApiToken"} {
		t.Run(lagging+" behind", func(t *testing.T) {
			h := newHarness(t, graceSpec)
			h.mustReconcile()
			old := h.secretToken()
			var obj client.Object = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tok-token"}}
			if lagging == "ApiToken" {
				obj = &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tok"}}
			}
			h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
			h.mustReconcile()
			cur, hash := h.secretToken(), h.token().Status.Verification.Hash
			if cur == old {
				t.Fatal("no regeneration")
			}
			h.events()
			var res ctrl.Result
			h.withLaggingCache(func() { res = h.mustReconcile() }, heldCopy(t, h, obj, old))
			if got := h.token().Status.Verification.Hash; got != hash || h.secretToken() != cur {
				t.Fatal("a pass on a stale cache re-issued the token")
			}
			if cut := cutEvents(h.events()); len(cut) > 0 {
				t.Fatalf("Events of a cut: %q", cut)
			}
			if res.RequeueAfter != staleViewRetry {
				t.Fatalf("RequeueAfter = %v, want %v (look again once the cache caught up)", res.RequeueAfter, staleViewRetry)
			}
			h.mustReconcile()
			if got := h.token().Status.Verification.Hash; got != hash || !h.verifies(cur) {
				t.Fatal("the token changed once the cache caught up")
			}
		})
	}
}

// heldCopy is obj as it was before the regeneration: the Secret with the
// old token, or the ApiToken recording the old hash only.
func heldCopy(t *testing.T, h *harness, obj client.Object, oldToken string) client.Object {
	t.Helper()
	switch obj.(type) {
	case *corev1.Secret:
		var s corev1.Secret
		if err := h.c.Get(context.Background(), client.ObjectKeyFromObject(obj), &s); err != nil {
			t.Fatal(err)
		}
		s.Data = map[string][]byte{tokensv1alpha1.SecretTokenKey: []byte(oldToken)}
		return &s
	default:
		at := h.token()
		at.Annotations = nil
		at.ResourceVersion = "1"
		at.Status.Verification = &tokensv1alpha1.Verification{Hash: h.r.Salt.Hasher().Hash(oldToken).Encode(), SaltID: h.r.Salt.State().ID()}
		return at
	}
}

// TestAPromoteThatLosesAConflictLeavesAVerifyingSecret: a regeneration
// whose last write (the promote) loses against a concurrent lastUsedAt
// patch, followed by a pass whose Secret cache still holds the old token,
// must not issue a second token over the record of the one in the Secret
// (which would leave a Secret matching neither hash, then cut as
// tampered).
func TestAPromoteThatLosesAConflictLeavesAVerifyingSecret(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	old := h.secretToken()
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.clock.Step(time.Minute)

	// The third write (the promote) meets a lastUsedAt written a moment
	// before by the auth endpoint: the optimistic lock refuses it.
	h.beforeWrite = func(n int) {
		if n == 3 {
			at := h.token()
			now := metav1.NewTime(h.clock.Now())
			at.Status.LastUsedAt = &now
			if err := h.c.Status().Update(context.Background(), at); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := h.reconcile(); err == nil {
		t.Fatal("the promote won over a concurrent status write")
	}
	h.beforeWrite = nil
	delivered := h.secretToken()
	if delivered == old || !h.verifies(delivered) {
		t.Fatal("the new token was not delivered, or does not verify as pending")
	}

	// The retry runs on a cache whose Secret still holds the old token.
	var s corev1.Secret
	_ = h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s)
	s.Data = map[string][]byte{tokensv1alpha1.SecretTokenKey: []byte(old)}
	s.ResourceVersion = "1"
	h.withLaggingCache(func() { _, _ = h.reconcile() }, &s)

	for range 3 {
		h.mustReconcile()
	}
	if cur := h.secretToken(); !h.verifies(cur) {
		t.Fatal("the Secret's token does not verify")
	}
	if cut := cutEvents(h.events()); len(cut) > 0 {
		t.Fatalf("Events of a cut: %q", cut)
	}
	if at := h.token(); at.Status.LastHandledRegenerate != "1" || at.Status.Verification.PendingHash != "" {
		t.Fatalf("regeneration not completed: %+v", at.Status.Verification)
	}
}

// TestCutGuardBoundsCutsInItsWindow: the guard allows Max cuts in Window
// (lowered to Percent of all tokens), then none until the window moves.
func TestCutGuardBoundsCutsInItsWindow(t *testing.T) {
	key := func(ns string, i int) types.NamespacedName {
		return types.NamespacedName{Namespace: ns, Name: fmt.Sprintf("t%d", i)}
	}
	g := &CutGuard{Max: 4, Window: 5 * time.Minute}
	for i := range 4 {
		if !g.Allow(t0.Add(time.Duration(i)*time.Second), 100, key(fmt.Sprintf("ns%d", i%2), i)) {
			t.Fatalf("cut %d refused", i+1)
		}
	}
	if g.Allow(t0.Add(time.Minute), 100, key("ns9", 9)) {
		t.Fatal("a fifth cut inside the window was allowed")
	}
	if !g.Allow(t0.Add(5*time.Minute+time.Second), 100, key("ns9", 9)) {
		t.Fatal("a cut after the window moved was refused")
	}
	// The percentage lowers the bound on a large share of few tokens, never
	// below min(Max, 5): 10% of 20 tokens allows 5 of Max 10.
	p := &CutGuard{Max: 10, Percent: 10, Window: time.Hour}
	allowed := 0
	for i := range 12 {
		if p.Allow(t0, 20, key(fmt.Sprintf("ns%d", i%4), i)) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("10%% of 20 tokens allowed %d cuts, want 5 (the floor)", allowed)
	}
	var none *CutGuard
	if !none.Allow(t0, 1, key("a", 1)) || !(&CutGuard{}).Allow(t0, 1, key("a", 1)) {
		t.Fatal("no guard refused a cut")
	}
}

// TestOneTenantCannotSpendEveryonesCuts (found by a red-team run): a tenant
// deleting its own token Secrets, over and over, must not hold another
// namespace's cut. A token cut again inside the window counts once, and a
// namespace spends at most half the bound.
func TestOneTenantCannotSpendEveryonesCuts(t *testing.T) {
	g := &CutGuard{Max: 10, Percent: 10, Window: 5 * time.Minute}
	own := types.NamespacedName{Namespace: "shop", Name: "ro"}
	for i := range 50 {
		g.Allow(t0.Add(time.Duration(i)*time.Second), 7, own) // the same Secret deleted again and again
	}
	for i := range 20 {
		g.Allow(t0.Add(time.Minute), 7, types.NamespacedName{Namespace: "shop", Name: fmt.Sprintf("t%d", i)})
	}
	if !g.Allow(t0.Add(2*time.Minute), 7, types.NamespacedName{Namespace: "team-b", Name: "bobtok"}) {
		t.Fatal("another tenant's cut was held by what one namespace spent")
	}
	if g.Allow(t0.Add(2*time.Minute), 7, types.NamespacedName{Namespace: "shop", Name: "t99"}) {
		t.Fatal("a namespace spent more than its share of the bound")
	}
}
