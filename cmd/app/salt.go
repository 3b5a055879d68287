package app

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// NewSaltStore returns the store of the salt in the Secret --salt-secret
// of --namespace, empty until Setup loads it. The manager's cache
// (ManagerOptions) and Setup share it. An auth-only replica needs only
// the salt, in the operator's namespace.
func NewSaltStore(o *Options) *salt.Store {
	s := salt.NewStore(o.saltRef())
	s.AllowWeak, s.Provided = o.AllowWeakSalt, !o.SaltCreate
	return s
}

func (o *Options) saltRef() types.NamespacedName {
	return types.NamespacedName{Namespace: o.Namespace, Name: o.SaltSecret}
}

// loadSalt loads the salt from its Secret, seeded by envSalt
// (API_TOKEN_SALT) when absent; the controller creates the Secret if absent
// (unless --salt-create=false), an auth-only replica waits for it, and so
// does every replica for a Secret someone else provides (the controller
// recording why as an Event). An envSalt that differs from the Secret's
// salt is an error: the replica must not start.
func loadSalt(ctx context.Context, store *salt.Store, mgr manager.Manager, envSalt string, controller bool) error {
	var rec events.EventRecorder // an auth-only replica writes no Event
	if controller {
		rec = mgr.GetEventRecorder("apitoken-operator")
	}
	return store.Wait(logf.IntoContext(ctx, setupLog), mgr.GetAPIReader().(client.Client), envSalt, controller, rec, 2*time.Second)
}
