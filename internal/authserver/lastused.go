package authserver

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// LastUsedWriter writes status.lastUsedAt off the request path: every
// Interval it patches each ApiToken used since its last write, so a token
// costs at most one write per Interval however many requests it serves.
type LastUsedWriter struct {
	Index    *Index
	Client   client.Client
	Clock    clock.PassiveClock
	Interval time.Duration
}

// Start runs until ctx ends. It is a manager.Runnable on every replica.
func (w *LastUsedWriter) Start(ctx context.Context) error {
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.Flush(ctx)
		}
	}
}

// NeedLeaderElection is false: each replica writes the uses it saw.
func (w *LastUsedWriter) NeedLeaderElection() bool { return false }

// Flush writes lastUsedAt for every token used since its last write and
// whose last write is at least Interval old.
func (w *LastUsedWriter) Flush(ctx context.Context) {
	now := w.Clock.Now().UnixNano()
	w.Index.forEachUsage(func(u *usage) {
		seen := u.lastSeen.Load()
		if seen == 0 || seen <= u.writtenSeen.Load() || now-u.writtenAt.Load() < int64(w.Interval) {
			return
		}
		err := w.write(ctx, u.key, time.Unix(0, seen))
		switch {
		case err == nil:
			lastUsedWrites.WithLabelValues("ok").Inc()
		case apierrors.IsNotFound(err):
		default:
			lastUsedWrites.WithLabelValues("error").Inc()
			logf.FromContext(ctx).Error(err, "Failed to record last use", "apitoken", klog.KRef(u.key.Namespace, u.key.Name))
			return // retried at the next tick
		}
		u.writtenSeen.Store(seen)
		u.writtenAt.Store(now)
	})
}

// write patches status.lastUsedAt to at, unless the ApiToken (read from
// the cache) already records a use as late: another replica may have
// written a later one, and the value never goes back in time.
func (w *LastUsedWriter) write(ctx context.Context, key types.NamespacedName, at time.Time) error {
	at = at.UTC().Truncate(time.Second)
	obj := &tokensv1alpha1.ApiToken{}
	if err := w.Client.Get(ctx, key, obj); err != nil {
		return err
	}
	if last := obj.Status.LastUsedAt; last != nil && !last.Time.Before(at) {
		return nil
	}
	patch := fmt.Sprintf(`{"status":{"lastUsedAt":%q}}`, at.Format(time.RFC3339))
	return w.Client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))
}
