package app

import (
	"context"
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// NewSaltStore returns the store of the salt in the Secret --salt-secret
// of --namespace, empty until Setup loads it. The manager's cache
// (ManagerOptions) and Setup share it. An auth-only replica needs only
// the salt, in the operator's namespace.
func NewSaltStore(o *Options) *salt.Store {
	s := salt.NewStore(o.saltRef())
	s.AllowWeak = o.AllowWeakSalt
	return s
}

func (o *Options) saltRef() types.NamespacedName {
	return types.NamespacedName{Namespace: o.Namespace, Name: o.SaltSecret}
}

// loadSalt loads the salt from its Secret, seeded by envSalt
// (API_TOKEN_SALT) when absent; the controller (create) creates the
// Secret if absent, an auth-only replica waits for it. An envSalt that
// differs from the Secret's salt is an error: the replica must not start.
func loadSalt(ctx context.Context, store *salt.Store, c client.Client, envSalt string, create bool) error {
	for {
		err := store.Load(ctx, c, envSalt, create)
		if !errors.Is(err, salt.ErrNoSalt) {
			return err
		}
		setupLog.Info("Waiting for the controller to create the salt Secret", "secret", store.Ref())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
