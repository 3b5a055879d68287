package salt

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Watcher keeps a Store in step with its salt Secret on every replica, so
// that the auth endpoint of a replica that is not the leader also sees a
// new salt. It is a manager.Runnable that needs no leader election.
type Watcher struct {
	Store *Store
	Cache cache.Cache
}

// NeedLeaderElection is false: every replica verifies tokens.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start registers the handler and waits for ctx to end.
func (w *Watcher) Start(ctx context.Context) error {
	inf, err := w.Cache.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("salt watcher: %w", err)
	}
	observe := func(obj any) {
		if s, ok := obj.(*corev1.Secret); ok && w.Store.Observe(s) {
			logf.FromContext(ctx).Info("Installed a new salt", "secret", klog.KObj(s))
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		return fmt.Errorf("salt watcher: %w", err)
	}
	<-ctx.Done()
	return nil
}
