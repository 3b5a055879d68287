package authserver

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

func TestLastUsedWritesAtMostOncePerInterval(t *testing.T) {
	f := newFixture()
	s := runtime.NewScheme()
	_ = tokensv1alpha1.AddToScheme(s)
	var writes atomic.Int64
	c := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&tokensv1alpha1.ApiToken{}).
		WithObjects(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "team-a"}}).
		WithInterceptorFuncs(interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			writes.Add(1)
			return c.Status().Patch(ctx, o, p, opts...)
		}}).Build()
	clk := clocktesting.NewFakeClock(now)
	f.h.Clock = clk
	w := &LastUsedWriter{Index: f.ix, Client: c, Clock: clk, Interval: time.Minute}

	// A burst of a million verifications of one token.
	tok := f.tokens["reader"]
	for i := 0; i < 1_000_000; i++ {
		if id, v := f.ix.Lookup(tok, now); v == Valid {
			markUsed(id, clk.Now())
		}
	}
	clk.Step(time.Minute)
	w.Flush(context.Background())
	w.Flush(context.Background())
	if n := writes.Load(); n != 1 {
		t.Fatalf("%d writes after a burst, want 1", n)
	}
	var at tokensv1alpha1.ApiToken
	_ = c.Get(context.Background(), keyOf("team-a", "reader"), &at)
	if at.Status.LastUsedAt == nil || !at.Status.LastUsedAt.Time.Equal(now) {
		t.Fatalf("lastUsedAt = %v", at.Status.LastUsedAt)
	}
	// Used again within the interval: no write until the interval passed.
	f.do(req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tok)}})
	clk.Step(30 * time.Second)
	w.Flush(context.Background())
	if writes.Load() != 1 {
		t.Fatal("wrote twice within one interval")
	}
	clk.Step(30 * time.Second)
	w.Flush(context.Background())
	if writes.Load() != 2 {
		t.Fatalf("writes = %d after the interval, want 2", writes.Load())
	}
	// A refused request (insufficient scope) is not a use.
	clk.Step(2 * time.Minute)
	f.do(req{path: "/v1/authorize?scope=articles:delete", headers: [][2]string{bearer(tok)}})
	w.Flush(context.Background())
	if writes.Load() != 2 {
		t.Fatal("a refused request counted as a use")
	}
	// Tokens deleted meanwhile are ignored; unused tokens never written.
	w.Flush(context.Background())
	if writes.Load() != 2 {
		t.Fatal("idle flush wrote")
	}
	// Another replica recorded a later use: ours is older and is not written.
	later := metav1.NewTime(clk.Now().Add(time.Hour))
	_ = c.Get(context.Background(), keyOf("team-a", "reader"), &at)
	at.Status.LastUsedAt = &later
	_ = c.Status().Update(context.Background(), &at)
	f.do(req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(tok)}})
	clk.Step(2 * time.Minute)
	w.Flush(context.Background())
	_ = c.Get(context.Background(), keyOf("team-a", "reader"), &at)
	if writes.Load() != 2 || !at.Status.LastUsedAt.Equal(&later) {
		t.Fatalf("lastUsedAt went back in time: %v", at.Status.LastUsedAt)
	}
}

// TestLastUsedIsWrittenOnShutdown: a replica stopped (a rollout, a drain)
// writes the uses it saw since its last write before it exits, even inside
// the interval: otherwise every rollout sooner than --last-used-interval
// loses them, and an idleTimeout token in use can go Inactive. Seen on the
// real cluster: three auth rollouts in under a minute, lastUsedAt never
// written.
func TestLastUsedIsWrittenOnShutdown(t *testing.T) {
	f := newFixture()
	s := runtime.NewScheme()
	_ = tokensv1alpha1.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&tokensv1alpha1.ApiToken{}).
		WithObjects(&tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: "team-a"}}).Build()
	clk := clocktesting.NewFakeClock(now)
	f.h.Clock = clk
	w := &LastUsedWriter{Index: f.ix, Client: c, Clock: clk, Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()

	f.do(req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(f.tokens["reader"])}})
	clk.Step(time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var at tokensv1alpha1.ApiToken
	_ = c.Get(context.Background(), keyOf("team-a", "reader"), &at)
	if at.Status.LastUsedAt == nil {
		t.Fatal("a use seen before the shutdown was never written")
	}
}
