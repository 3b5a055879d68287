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
	log := logf.FromContext(ctx)
	ref := w.Store.Ref()
	observe := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok || s.Namespace != ref.Namespace || s.Name != ref.Name {
			return
		}
		if w.Store.Observe(s) {
			log.Info("Installed a new salt", "secret", klog.KObj(s), "saltID", w.Store.State().ID())
		}
	}
	// A deleted (or unlabelled) salt Secret changes nothing here: the salt
	// stays in memory and the leader recreates the Secret with it.
	deleted := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*corev1.Secret); ok && s.Namespace == ref.Namespace && s.Name == ref.Name {
			log.Info("The salt Secret is gone from the cache; keeping the salt in memory", "secret", klog.KObj(s))
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
		DeleteFunc: deleted,
	}); err != nil {
		return fmt.Errorf("salt watcher: %w", err)
	}
	<-ctx.Done()
	return nil
}
