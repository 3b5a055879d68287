package controllers

import (
	"context"
	"errors"
	"fmt"
	toolscache "k8s.io/client-go/tools/cache"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

var errInjected = errors.New("injected API error")

type harness struct {
	t     *testing.T
	c     client.WithWatch
	r     *ApiTokenReconciler
	clock *clocktesting.FakeClock
	rec   *events.FakeRecorder
	key   types.NamespacedName
	// failWrite, when > 0, fails the failWrite-th write from now on (1-based).
	failWrite int
	// failWith, when set, is the error of the failed write (errInjected
	// otherwise).
	failWith error
	writes   int
	// beforeWrite, when set, runs before the n-th write (1-based) of a pass.
	beforeWrite func(n int)
}

func newHarness(t *testing.T, spec tokensv1alpha1.ApiTokenSpec, objs ...client.Object) *harness {
	t.Helper()
	s := testenv.Scheme()
	h := &harness{t: t, clock: clocktesting.NewFakeClock(t0), rec: events.NewFakeRecorder(100), key: types.NamespacedName{Namespace: "ns", Name: "tok"}}
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "tok", Namespace: "ns", UID: "uid-1", Generation: 1}, Spec: spec}
	count := func() error {
		h.writes++
		if h.beforeWrite != nil {
			h.beforeWrite(h.writes)
		}
		if h.failWrite > 0 && h.writes == h.failWrite {
			if h.failWith != nil {
				return h.failWith
			}
			return errInjected
		}
		return nil
	}
	h.c = fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&tokensv1alpha1.ApiToken{}).
		WithObjects(append(objs, at)...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				if err := count(); err != nil {
					return err
				}
				return c.Create(ctx, o, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				if err := count(); err != nil {
					return err
				}
				return c.Update(ctx, o, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
				if err := count(); err != nil {
					return err
				}
				return c.Status().Patch(ctx, o, p, opts...)
			},
		}).Build()
	store := salt.NewStore(types.NamespacedName{Namespace: "system", Name: "salt"})
	store.Set([]byte("test-salt"))
	// The reconciler reads Secrets as the manager's cache holds them: with
	// a digest instead of the token (digestToken); the tests read them as
	// they are.
	h.r = &ApiTokenReconciler{Scheme: s, Recorder: h.rec, Clock: h.clock, Salt: store}
	h.r.Client = cachedSecrets{h.c, func(in any) (any, error) { return digestToken(h.r.Salt)(in) }}
	// Reads around the cache see the fake client as it is: the tests'
	// cache is never behind, unless a test makes it so (staleCache).
	h.r.APIReader = liveSalt{h.c, h.r}
	return h
}

// liveSalt is the API server as the harness's reconciler sees it: the
// fake client, where a test that holds no salt Secret there finds the one
// its salt store holds (the store is the harness's source of the salt).
type liveSalt struct {
	client.WithWatch
	r *ApiTokenReconciler
}

func (l liveSalt) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	err := l.WithWatch.Get(ctx, key, obj, opts...)
	if s, ok := obj.(*corev1.Secret); ok && apierrors.IsNotFound(err) && key == l.r.Salt.Ref() && l.r.Salt.State() != nil {
		*s = *l.r.Salt.State().Secret(key)
		return nil
	}
	return err
}

// cachedSecrets reads Secrets through the cache's transform.
type cachedSecrets struct {
	client.Client
	transform toolscache.TransformFunc
}

func (c cachedSecrets) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := c.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	if s, ok := obj.(*corev1.Secret); ok {
		out, err := c.transform(s.DeepCopy())
		if err != nil {
			return err
		}
		*s = *out.(*corev1.Secret)
	}
	return nil
}

func (h *harness) reconcile() (ctrl.Result, error) {
	h.writes = 0
	return h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: h.key})
}

func (h *harness) mustReconcile() ctrl.Result {
	h.t.Helper()
	h.failWrite = 0
	res, err := h.reconcile()
	if err != nil {
		h.t.Fatalf("reconcile: %v", err)
	}
	return res
}

func (h *harness) token() *tokensv1alpha1.ApiToken {
	h.t.Helper()
	var at tokensv1alpha1.ApiToken
	if err := h.c.Get(context.Background(), h.key, &at); err != nil {
		h.t.Fatal(err)
	}
	return &at
}

func (h *harness) secretToken() string {
	h.t.Helper()
	var s corev1.Secret
	if err := h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s); err != nil {
		h.t.Fatal(err)
	}
	return string(s.Data["token"])
}

// verifies asks the auth endpoint's own index, fed the ApiToken's
// current status, whether tok verifies now: the tests use the rule the
// endpoint uses, not a copy of it.
func (h *harness) verifies(tok string) bool {
	ix := authserver.NewIndex(h.r.Salt.Hasher)
	ix.Upsert(h.token())
	_, v := ix.Lookup(tok, h.clock.Now())
	return v == authserver.Valid
}

func (h *harness) annotate(k, v string) {
	at := h.token()
	if at.Annotations == nil {
		at.Annotations = map[string]string{}
	}
	at.Annotations[k] = v
	if err := h.c.Update(context.Background(), at); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

var graceSpec = tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}}

func TestReconcileIssuesIntoSecret(t *testing.T) {
	h := newHarness(t, graceSpec)
	res := h.mustReconcile()
	at := h.token()
	if at.Status.Phase != tokensv1alpha1.PhaseActive || at.Status.IssuedAt == nil || !at.Status.ExpiresAt.Time.Equal(t0.Add(30*24*time.Hour)) {
		t.Fatalf("status = %+v", at.Status)
	}
	tok := h.secretToken()
	if !h.verifies(tok) {
		t.Fatal("Secret's token does not verify")
	}
	// Requeued exactly at the expiring-soon threshold (a fifth of 30d = 6d before expiry).
	if res.RequeueAfter != 24*24*time.Hour {
		t.Fatalf("RequeueAfter = %v", res.RequeueAfter)
	}
	var s corev1.Secret
	_ = h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s)
	if s.Labels[tokensv1alpha1.ManagedByLabel] != "apitoken-operator" || s.Labels[tokensv1alpha1.ApiTokenLabel] != "tok" || !metav1.IsControlledBy(&s, at) {
		t.Fatalf("secret metadata = %+v", s.ObjectMeta)
	}
	if evs := h.events(); len(evs) != 1 || evs[0] != "Normal Generated Issued a new token into Secret tok-token" {
		t.Fatalf("events = %q", evs)
	}
	// An idle pass writes nothing.
	h.writes = 0
	h.mustReconcile()
	if h.writes != 0 || h.secretToken() != tok {
		t.Fatalf("idle pass made %d writes", h.writes)
	}
}

// TestGeneratedEventsCanBeSkipped: --generated-events=false drops the
// Event of a new token only; a regeneration is still recorded.
func TestGeneratedEventsCanBeSkipped(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.r.SkipGeneratedEvents = true
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive {
		t.Fatalf("phase %s", at.Status.Phase)
	}
	if evs := h.events(); len(evs) != 0 {
		t.Fatalf("events = %q, want none for a new token", evs)
	}
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.mustReconcile()
	if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Normal Regenerated ") {
		t.Fatalf("events = %q, want one Regenerated", evs)
	}
}

func TestReconcileNeverLeaksTokenInEvents(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.mustReconcile()
	tok := h.secretToken()
	v := h.token().Status.Verification
	for _, e := range h.events() {
		for _, secret := range []string{tok, v.Hash, v.PreviousHash, "test-salt"} {
			if secret != "" && strings.Contains(e, secret) {
				t.Fatalf("event %q leaks a secret", e)
			}
		}
	}
}

func TestRegenerateCrashSafety(t *testing.T) {
	// Count the writes of a clean regeneration, then fail each in turn.
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.mustReconcile()
	total := h.writes
	if total != 3 {
		t.Fatalf("a regeneration makes %d writes, want 3 (pending status, Secret, status)", total)
	}
	for n := 1; n <= total; n++ {
		t.Run(fmt.Sprintf("fail write %d", n), func(t *testing.T) {
			h := newHarness(t, graceSpec)
			h.mustReconcile()
			old := h.secretToken()
			h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
			h.clock.Step(time.Minute)
			h.failWrite = n
			if _, err := h.reconcile(); !errors.Is(err, errInjected) {
				t.Fatalf("reconcile = %v, want the injected error", err)
			}
			if cur := h.secretToken(); !h.verifies(cur) {
				t.Fatalf("after failing write %d the Secret's token does not verify", n)
			}
			if !h.verifies(old) {
				t.Fatalf("after failing write %d the old token stopped verifying inside its grace window", n)
			}
			h.mustReconcile()
			cur := h.secretToken()
			at := h.token()
			switch {
			case cur == old:
				t.Fatal("no new token after the retry")
			case !h.verifies(cur):
				t.Fatal("the new token does not verify")
			case !h.verifies(old):
				t.Fatal("the old token does not verify inside the grace window")
			case at.Status.LastHandledRegenerate != "1":
				t.Fatalf("lastHandledRegenerate = %q", at.Status.LastHandledRegenerate)
			case at.Status.Verification.PendingHash != "":
				t.Fatal("a pending hash is left behind")
			}
			h.clock.Step(5 * time.Minute)
			h.mustReconcile()
			if h.verifies(old) {
				t.Fatal("the old token still verifies after the grace period")
			}
		})
	}
}

func TestRegenerateOnceAndAfterExpiry(t *testing.T) {
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Duration: "1h"})
	h.mustReconcile()
	first := h.secretToken()
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "a")
	h.mustReconcile()
	second := h.secretToken()
	if second == first || h.verifies(first) {
		t.Fatal("regeneration without grace must replace and invalidate the token")
	}
	h.mustReconcile()
	if h.secretToken() != second {
		t.Fatal("the same annotation value regenerated twice")
	}
	h.clock.Step(time.Hour)
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseExpired || h.verifies(second) {
		t.Fatalf("phase at expiry = %s", at.Status.Phase)
	}
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "b")
	h.mustReconcile()
	at := h.token()
	if at.Status.Phase != tokensv1alpha1.PhaseActive || !at.Status.IssuedAt.Time.Equal(t0.Add(time.Hour)) || !h.verifies(h.secretToken()) {
		t.Fatalf("regeneration of an expired token: %+v", at.Status)
	}
}

// TestExpiredTokenNeverRevived: a regeneration or a rotation keeps the
// replaced token for the grace period only while it has not expired, and
// never past its own expiry.
func TestExpiredTokenNeverRevived(t *testing.T) {
	t.Run("regenerate after expiry, with grace", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "5m"}})
		h.mustReconcile()
		old := h.secretToken()
		h.clock.Step(time.Hour)
		h.mustReconcile()
		h.annotate(tokensv1alpha1.RegenerateAnnotation, "after-expiry")
		h.mustReconcile()
		if h.verifies(old) || h.token().Status.Verification.PreviousHash != "" {
			t.Fatal("an expired token was kept as previous and verifies again")
		}
		if !h.verifies(h.secretToken()) {
			t.Fatal("the new token does not verify")
		}
	})
	t.Run("rotation after the operator was down past expiry", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "10h", Rotation: &tokensv1alpha1.Rotation{RenewBefore: "2h", GracePeriod: "10m"}})
		h.mustReconcile()
		old := h.secretToken()
		h.clock.Step(10*time.Hour + time.Minute)
		h.mustReconcile()
		if h.secretToken() == old || h.verifies(old) || h.token().Status.Verification.PreviousHash != "" {
			t.Fatal("a token that expired while the operator was down verifies again after the rotation")
		}
	})
	t.Run("grace longer than the remaining lifetime", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "30m"}})
		h.mustReconcile()
		old := h.secretToken()
		h.clock.Step(50 * time.Minute)
		h.annotate(tokensv1alpha1.RegenerateAnnotation, "late")
		h.mustReconcile()
		if !h.verifies(old) {
			t.Fatal("the replaced token does not verify inside its grace and lifetime")
		}
		if until := h.token().Status.Verification.PreviousValidUntil; until == nil || !until.Time.Equal(t0.Add(time.Hour)) {
			t.Fatalf("previousValidUntil = %v, want the old expiry %v", until, t0.Add(time.Hour))
		}
		h.clock.Step(10 * time.Minute)
		if h.verifies(old) {
			t.Fatal("the replaced token verifies past its own expiry")
		}
	})
}

// TestSpecEditsNeverRevive: a tenant who may edit the spec cannot bring an
// expired or idle token back by lengthening its duration or dropping its
// idleTimeout; only a new token (regenerate) starts a new life.
func TestSpecEditsNeverRevive(t *testing.T) {
	edit := func(h *harness, mutate func(*tokensv1alpha1.ApiTokenSpec)) {
		at := h.token()
		mutate(&at.Spec)
		at.Generation++
		_ = h.c.Update(context.Background(), at)
	}
	// ended issues a token of spec, lets an hour pass and reconciles: it
	// returns the harness and the token that ended.
	ended := func(t *testing.T, spec tokensv1alpha1.ApiTokenSpec) (*harness, string) {
		h := newHarness(t, spec)
		h.mustReconcile()
		old := h.secretToken()
		h.clock.Step(time.Hour)
		h.mustReconcile()
		return h, old
	}
	oneHour := tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h"}
	t.Run("expired, then a longer duration", func(t *testing.T) {
		h, old := ended(t, oneHour)
		edit(h, func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "30d" })
		h.mustReconcile()
		if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseExpired || h.verifies(old) || !at.Status.ExpiresAt.Time.Equal(t0.Add(time.Hour)) {
			t.Fatalf("a longer duration revived an expired token: phase %s, expiresAt %v", at.Status.Phase, at.Status.ExpiresAt)
		}
		h.annotate(tokensv1alpha1.RegenerateAnnotation, "new-life")
		h.mustReconcile()
		if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || !h.verifies(h.secretToken()) || h.verifies(old) {
			t.Fatalf("after regeneration: phase %s", at.Status.Phase)
		}
	})
	for name, c := range map[string]struct {
		spec     tokensv1alpha1.ApiTokenSpec
		lengthen func(*tokensv1alpha1.ApiTokenSpec)
	}{
		"expired, then a longer duration and grace, then regenerate": {oneHour, func(s *tokensv1alpha1.ApiTokenSpec) {
			s.Duration, s.Rotation = "30d", &tokensv1alpha1.Rotation{GracePeriod: "30d"}
		}},
		"inactive, then no idleTimeout and a long grace, then regenerate": {
			tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "unlimited", IdleTimeout: "1h"},
			func(s *tokensv1alpha1.ApiTokenSpec) {
				s.IdleTimeout, s.Rotation = "", &tokensv1alpha1.Rotation{GracePeriod: "30d"}
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			h, old := ended(t, c.spec)
			edit(h, c.lengthen)
			h.mustReconcile()
			h.annotate(tokensv1alpha1.RegenerateAnnotation, "r1")
			h.mustReconcile()
			if h.verifies(old) || h.token().Status.Verification.PreviousHash != "" {
				t.Fatal("the ended token came back for the grace period after a spec edit and a regeneration")
			}
		})
	}
	t.Run("a longer duration applied before the reconciler saw the expiry", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h"})
		h.mustReconcile()
		old := h.secretToken()
		h.clock.Step(2 * time.Hour) // the operator was down at expiry
		edit(h, func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "30d" })
		h.mustReconcile()
		if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseExpired || h.verifies(old) {
			t.Fatalf("phase %s: the expired token came back", at.Status.Phase)
		}
	})
	t.Run("inactive, then no idleTimeout", func(t *testing.T) {
		h, old := ended(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", IdleTimeout: "1h"})
		edit(h, func(s *tokensv1alpha1.ApiTokenSpec) { s.IdleTimeout = "" })
		h.mustReconcile()
		if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseInactive || h.verifies(old) {
			t.Fatalf("dropping idleTimeout revived an inactive token: phase %s", at.Status.Phase)
		}
	})
	t.Run("active, then a longer duration: allowed, as the spec says", func(t *testing.T) {
		h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "1h"})
		h.mustReconcile()
		old := h.secretToken()
		edit(h, func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2h" })
		h.mustReconcile() // the edit's watch event, before the old expiry
		h.clock.Step(90 * time.Minute)
		h.mustReconcile()
		if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || !h.verifies(old) {
			t.Fatalf("phase %s", at.Status.Phase)
		}
	})
}

// TestIdleTimeout: a token unused for spec.idleTimeout is Inactive and
// refused (with an Event); a use moves the deadline; regenerating brings it
// back, and the idle token is not revived by the grace period.
func TestIdleTimeout(t *testing.T) {
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", IdleTimeout: "2h", Rotation: &tokensv1alpha1.Rotation{GracePeriod: "10m"}})
	if res := h.mustReconcile(); res.RequeueAfter != 2*time.Hour {
		t.Fatalf("RequeueAfter = %v, want the idle deadline (2h)", res.RequeueAfter)
	}
	old := h.secretToken()
	h.events()

	// a use one hour in moves the deadline to three hours.
	at := h.token()
	used := metav1.NewTime(t0.Add(time.Hour))
	at.Status.LastUsedAt = &used
	_ = h.c.Status().Update(context.Background(), at)
	h.clock.Step(2 * time.Hour)
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || !h.verifies(old) {
		t.Fatalf("used an hour ago, idle 2h: phase %s", at.Status.Phase)
	}

	// three hours: inactive and refused.
	h.clock.Step(time.Hour)
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseInactive || h.verifies(old) {
		t.Fatalf("idle for 2h: phase %s", at.Status.Phase)
	}
	ix := authserver.NewIndex(h.r.Salt.Hasher)
	ix.Upsert(h.token())
	if _, v := ix.Lookup(old, h.clock.Now()); v != authserver.Inactive {
		t.Fatalf("the endpoint's verdict = %v, want inactive", v)
	}
	if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning Inactive") {
		t.Fatalf("events = %q", evs)
	}

	// regenerating brings it back, without reviving the idle token.
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "wake")
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || !h.verifies(h.secretToken()) || h.verifies(old) {
		t.Fatalf("after regeneration: phase %s", at.Status.Phase)
	}
}

func TestRenewBeforeRotates(t *testing.T) {
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "10h", Rotation: &tokensv1alpha1.Rotation{RenewBefore: "2h", GracePeriod: "10m"}})
	res := h.mustReconcile()
	if res.RequeueAfter != 8*time.Hour {
		t.Fatalf("RequeueAfter = %v, want the renewal time", res.RequeueAfter)
	}
	old := h.secretToken()
	h.clock.Step(8 * time.Hour)
	h.mustReconcile()
	if h.secretToken() == old || !h.verifies(old) || !h.verifies(h.secretToken()) {
		t.Fatal("renewBefore did not rotate with grace")
	}
	if at := h.token(); !at.Status.ExpiresAt.Time.Equal(t0.Add(18 * time.Hour)) {
		t.Fatalf("expiresAt = %v", at.Status.ExpiresAt)
	}
}

func TestRevokeAndUnrevoke(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	old := h.secretToken()
	at := h.token()
	at.Spec.Revoked = true
	_ = h.c.Update(context.Background(), at)
	h.mustReconcile()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseRevoked || h.verifies(old) || h.secretToken() != "" {
		t.Fatalf("revoked: phase %s, secret %q", at.Status.Phase, h.secretToken())
	}
	if evs := h.events(); len(evs) != 2 || evs[1] != "Normal Revoked The token was revoked and removed from Secret tok-token" {
		t.Fatalf("events = %q", evs)
	}
	at = h.token()
	at.Spec.Revoked = false
	_ = h.c.Update(context.Background(), at)
	h.mustReconcile()
	cur := h.secretToken()
	if at := h.token(); at.Status.Phase != tokensv1alpha1.PhaseActive || cur == old || !h.verifies(cur) || h.verifies(old) {
		t.Fatalf("unrevoked: phase %s", at.Status.Phase)
	}
	if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Normal Unrevoked") {
		t.Fatalf("events = %q", evs)
	}
}

func TestSecretTamperedMissingForeignAndRecovered(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	var s corev1.Secret
	key := types.NamespacedName{Namespace: "ns", Name: "tok-token"}
	_ = h.c.Get(context.Background(), key, &s)
	forged, _ := token.Generate()
	s.Data["token"] = []byte(forged)
	_ = h.c.Update(context.Background(), &s)
	h.mustReconcile()
	if cur := h.secretToken(); cur == forged || !h.verifies(cur) || h.verifies(forged) {
		t.Fatal("a tampered Secret was not replaced")
	}
	h.events()

	expires := h.token().Status.ExpiresAt
	h.clock.Step(24 * time.Hour)
	_ = h.c.Delete(context.Background(), &s)
	h.mustReconcile()
	if !h.verifies(h.secretToken()) {
		t.Fatal("a deleted Secret was not re-created")
	}
	if at := h.token(); !at.Status.ExpiresAt.Equal(expires) {
		t.Fatalf("deleting the Secret moved expiresAt from %v to %v", expires, at.Status.ExpiresAt)
	}
	if evs := h.events(); len(evs) != 1 || evs[0][:len("Warning SecretMissing")] != "Warning SecretMissing" {
		t.Fatalf("events = %q", evs)
	}

	// Status lost (a restore without status): rebuilt from the Secret, same token.
	kept := h.secretToken()
	at := h.token()
	at.Status = tokensv1alpha1.ApiTokenStatus{}
	_ = h.c.Status().Update(context.Background(), at)
	h.mustReconcile()
	if h.secretToken() != kept || !h.verifies(kept) {
		t.Fatal("recovery changed the token")
	}

	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tok-token", Namespace: "ns"}, Data: map[string][]byte{"token": []byte("theirs")}}
	h2 := newHarness(t, graceSpec, foreign)
	res := h2.mustReconcile()
	at = h2.token()
	if at.Status.Phase != tokensv1alpha1.PhaseFailed || res.RequeueAfter != conflictRetry {
		t.Fatalf("foreign secret: %+v %v", at.Status, res)
	}
	if h2.secretToken() != "theirs" {
		t.Fatal("a foreign Secret was overwritten")
	}
	h2.events()
	h2.mustReconcile()
	if evs := h2.events(); len(evs) != 0 {
		t.Fatalf("conflict event repeated: %q", evs)
	}
}

// TestRecoveryRefusesWhatCannotBeTrue: with the record lost, a Secret whose
// issued-at is in the future, or missing, is not adopted (adopting it
// would give its token a longer lifetime than the spec allows); a new
// token is issued and a Warning says why.
func TestRecoveryRefusesWhatCannotBeTrue(t *testing.T) {
	for name, issuedAt := range map[string]string{
		"issued-at in the future": t0.Add(365 * 24 * time.Hour).Format(time.RFC3339),
		"issued-at missing":       "",
		"issued-at malformed":     "yesterday",
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, graceSpec)
			h.mustReconcile()
			h.events()
			var s corev1.Secret
			_ = h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s)
			planted, _ := token.Generate()
			s.Data["token"] = []byte(planted)
			if issuedAt == "" {
				delete(s.Annotations, tokensv1alpha1.IssuedAtAnnotation)
			} else {
				s.Annotations[tokensv1alpha1.IssuedAtAnnotation] = issuedAt
			}
			_ = h.c.Update(context.Background(), &s)
			at := h.token()
			at.Status = tokensv1alpha1.ApiTokenStatus{}
			_ = h.c.Status().Update(context.Background(), at)
			h.mustReconcile()
			if cur := h.secretToken(); cur == planted || h.verifies(planted) || !h.verifies(cur) {
				t.Fatal("a planted token with an implausible issued-at was adopted")
			}
			if exp := h.token().Status.ExpiresAt; exp == nil || exp.After(t0.Add(30*24*time.Hour)) {
				t.Fatalf("expiresAt = %v, beyond the spec's 30d from now", exp)
			}
			if evs := h.events(); len(evs) != 1 || !strings.HasPrefix(evs[0], "Warning SecretUntrusted") {
				t.Fatalf("events = %q", evs)
			}
		})
	}
}

// TestPlantedSecretNotAdopted: a tenant who may write Secrets plants one
// with a token of its choice (or another ApiToken's) and a plausible
// issued-at, and makes the ApiToken its controller owner. Only a Secret
// sealed by the operator is adopted, so the planted token never verifies.
func TestPlantedSecretNotAdopted(t *testing.T) {
	planted, _ := token.Generate()
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tok-token", Namespace: "ns",
		Labels:      map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue},
		Annotations: map[string]string{tokensv1alpha1.IssuedAtAnnotation: t0.Format(time.RFC3339), tokensv1alpha1.SealAnnotation: "AAAA"}},
		Data: map[string][]byte{"token": []byte(planted)}}
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.FullAccess, Duration: "unlimited"}, foreign)
	h.mustReconcile()
	if h.token().Status.Phase != tokensv1alpha1.PhaseFailed {
		t.Fatalf("phase %s, want Failed (SecretConflict)", h.token().Status.Phase)
	}
	h.events()
	var s corev1.Secret
	_ = h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "tok-token"}, &s)
	if err := controllerutil.SetControllerReference(h.token(), &s, h.c.Scheme()); err != nil {
		t.Fatal(err)
	}
	_ = h.c.Update(context.Background(), &s)
	h.mustReconcile()
	if cur := h.secretToken(); cur == planted || h.verifies(planted) || !h.verifies(cur) {
		t.Fatal("a planted token was adopted")
	}
	if evs := h.events(); len(evs) == 0 || !strings.HasPrefix(evs[0], "Warning SecretUntrusted") {
		t.Fatalf("events = %q", evs)
	}
}

func TestSaltChangeReissuesWithoutGrace(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	old := h.secretToken()
	issued := h.token().Status.IssuedAt
	h.clock.Step(time.Hour)
	h.r.Salt.Set([]byte("new-salt"))
	h.mustReconcile()
	if at := h.token(); !at.Status.IssuedAt.Equal(issued) {
		t.Fatalf("a salt change moved issuedAt from %v to %v", issued, at.Status.IssuedAt)
	}
	cur := h.secretToken()
	if cur == old || !h.verifies(cur) || h.verifies(old) {
		t.Fatal("salt change did not re-issue without grace")
	}
	if at := h.token(); at.Status.Verification.SaltID != h.r.Salt.Hasher().SaltID() || at.Status.Verification.PreviousHash != "" {
		t.Fatalf("verification = %+v", at.Status.Verification)
	}
}

func TestInjectedReadErrorWritesNothing(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.c = interceptor.NewClient(h.c, interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, o client.Object, opts ...client.GetOption) error {
		if _, ok := o.(*corev1.Secret); ok {
			return errInjected
		}
		return c.Get(ctx, k, o, opts...)
	}})
	h.r.Client = h.c
	if _, err := h.reconcile(); !errors.Is(err, errInjected) {
		t.Fatalf("reconcile = %v", err)
	}
	if at := h.token(); at.Status.Phase != "" {
		t.Fatalf("status written despite the error: %+v", at.Status)
	}
}

func TestInvalidSpecFailsWithoutToken(t *testing.T) {
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.Custom, Duration: "7d"})
	h.mustReconcile()
	at := h.token()
	if at.Status.Phase != tokensv1alpha1.PhaseFailed || at.Status.Conditions[0].Reason != tokensv1alpha1.ReasonInvalidSpec {
		t.Fatalf("status = %+v", at.Status)
	}
}

func TestFirstIssueCrashSafety(t *testing.T) {
	h := newHarness(t, graceSpec)
	h.mustReconcile()
	if h.writes != 2 {
		t.Fatalf("a first token takes %d writes, want 2 (Secret, status)", h.writes)
	}
	for n := 1; n <= 2; n++ {
		t.Run(fmt.Sprintf("fail write %d", n), func(t *testing.T) {
			h := newHarness(t, graceSpec)
			h.failWrite = n
			if _, err := h.reconcile(); !errors.Is(err, errInjected) {
				t.Fatalf("reconcile = %v, want the injected error", err)
			}
			h.mustReconcile()
			tok := h.secretToken()
			if !h.verifies(tok) || h.token().Status.Phase != tokensv1alpha1.PhaseActive {
				t.Fatal("after a retry the Secret's token does not verify")
			}
			h.mustReconcile()
			if h.secretToken() != tok {
				t.Fatal("the token changed on an idle pass")
			}
		})
	}
}

func TestSecretTemplateKeptInSync(t *testing.T) {
	spec := graceSpec
	spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{
		Labels:      map[string]string{"team": "a", "tier": "gold"},
		Annotations: map[string]string{"reloader": "on"},
	}
	h := newHarness(t, spec)
	h.mustReconcile()
	key := types.NamespacedName{Namespace: "ns", Name: "tok-token"}
	var s corev1.Secret
	_ = h.c.Get(context.Background(), key, &s)
	s.Labels["added-by-someone"] = "x"
	_ = h.c.Update(context.Background(), &s)
	tok := h.secretToken()

	at := h.token()
	at.Spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{Labels: map[string]string{"team": "b"}}
	_ = h.c.Update(context.Background(), at)
	h.mustReconcile()
	_ = h.c.Get(context.Background(), key, &s)
	if s.Labels["team"] != "b" || s.Labels["tier"] != "" || s.Annotations["reloader"] != "" {
		t.Fatalf("template not in sync: labels %v annotations %v", s.Labels, s.Annotations)
	}
	if s.Labels["added-by-someone"] != "x" || s.Labels[tokensv1alpha1.ManagedByLabel] != "apitoken-operator" {
		t.Fatalf("keys not from the template were touched: %v", s.Labels)
	}
	if h.secretToken() != tok {
		t.Fatal("a template change replaced the token")
	}
}

// TestSecretNeverCarriesReplicatorKeys: a template key that a Secret
// replicator reads (admitted where the webhook does not run, or before it
// refused them) never reaches the Secret, and one an earlier operator put
// there from the template is removed; the template's other keys stay.
func TestSecretNeverCarriesReplicatorKeys(t *testing.T) {
	spec := graceSpec
	spec.SecretTemplate = &tokensv1alpha1.SecretTemplate{
		Labels:      map[string]string{"team": "a", "push.external-secrets.io/vault": "true"},
		Annotations: map[string]string{"reloader": "on", "reflector.v1.k8s.emberstack.com/reflection-auto-enabled": "true", "replicator.v1.mittwald.de/replicate-to": "team-b"},
	}
	h := newHarness(t, spec)
	h.mustReconcile()
	key := types.NamespacedName{Namespace: "ns", Name: "tok-token"}
	var s corev1.Secret
	if err := h.c.Get(context.Background(), key, &s); err != nil {
		t.Fatal(err)
	}
	replicated := func(s *corev1.Secret) []string {
		var keys []string
		for _, m := range []map[string]string{s.Labels, s.Annotations} {
			for k := range m {
				if tokensv1alpha1.SecretReplicatorKey(k) != "" {
					keys = append(keys, k)
				}
			}
		}
		return keys
	}
	if keys := replicated(&s); len(keys) > 0 || s.Labels["team"] != "a" || s.Annotations["reloader"] != "on" {
		t.Fatalf("the Secret carries %v (labels %v, annotations %v)", keys, s.Labels, s.Annotations)
	}

	// As an earlier operator wrote it: the keys, named as the template's.
	s.Annotations["reflector.v1.k8s.emberstack.com/reflection-auto-enabled"] = "true"
	s.Labels["push.external-secrets.io/vault"] = "true"
	s.Annotations[tokensv1alpha1.TemplateKeysAnnotation] = "a:reflector.v1.k8s.emberstack.com/reflection-auto-enabled,a:reloader,l:push.external-secrets.io/vault,l:team"
	if err := h.c.Update(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile()
	if err := h.c.Get(context.Background(), key, &s); err != nil {
		t.Fatal(err)
	}
	if keys := replicated(&s); len(keys) > 0 || s.Labels["team"] != "a" || s.Annotations["reloader"] != "on" {
		t.Fatalf("after an upgrade the Secret still carries %v (labels %v, annotations %v)", keys, s.Labels, s.Annotations)
	}
}

// TestConflictUnseenByTheCacheKeepsNoPendingHash: a foreign Secret without
// the operator's label is not in the cache, so a new ApiToken's first token
// is minted (its hash recorded as pending) before the create finds the name
// taken. That token never reached a Secret: the ApiToken must not keep its
// hash as pending.
func TestConflictUnseenByTheCacheKeepsNoPendingHash(t *testing.T) {
	h := newHarness(t, tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"})
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tok-token", Namespace: "ns"}, Data: map[string][]byte{"token": []byte("theirs")}}
	h.r.APIReader = fake.NewClientBuilder().WithScheme(h.c.Scheme()).WithObjects(foreign).Build()
	h.r.Client = interceptor.NewClient(h.c, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			if _, ok := o.(*corev1.Secret); ok {
				return apierrors.NewAlreadyExists(corev1.Resource("secrets"), o.GetName())
			}
			return c.Create(ctx, o, opts...)
		},
	})
	if _, err := h.reconcile(); err != nil {
		t.Fatal(err)
	}
	st := h.token().Status
	if st.Phase != tokensv1alpha1.PhaseFailed {
		t.Fatalf("phase %s, want Failed (SecretConflict)", st.Phase)
	}
	if v := st.Verification; v != nil && v.PendingHash != "" {
		t.Fatal("a SecretConflict token keeps the hash of a token that never reached the Secret")
	}
}
