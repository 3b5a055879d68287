// Package salt keeps the operator's token salt: it loads it from a Secret
// in the operator's namespace (creating one on first start) or from
// API_TOKEN_SALT, and holds the current keyed hasher for the reconciler and
// the auth endpoint. The salt itself is never logged.
package salt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Key is the key of the salt in its Secret.
const Key = "salt"

// EnvVar overrides the salt Secret, as Strapi's API_TOKEN_SALT does.
const EnvVar = "API_TOKEN_SALT"

// Size is the number of random bytes of a generated salt.
const Size = 64

// Store holds the current salt's hasher. It is safe for concurrent use; a
// Store whose salt is pinned (from the environment) ignores the Secret.
type Store struct {
	hasher atomic.Pointer[token.Hasher]
	pinned bool
	ref    types.NamespacedName
}

// NewStore returns a Store for the salt Secret ref.
func NewStore(ref types.NamespacedName) *Store { return &Store{ref: ref} }

// Ref names the salt Secret.
func (s *Store) Ref() types.NamespacedName { return s.ref }

// Hasher returns the hasher of the current salt, or nil before Load.
func (s *Store) Hasher() *token.Hasher { return s.hasher.Load() }

// Set installs salt and reports whether it differs from the previous one.
func (s *Store) Set(salt []byte) bool {
	h := token.NewHasher(salt)
	old := s.hasher.Swap(h)
	return old == nil || old.SaltID() != h.SaltID()
}

// Observe installs the salt held by secret if secret is the salt Secret and
// the salt is not pinned; it reports whether the salt changed. A Secret
// without a salt is ignored: the previous salt stays (fail closed: no
// token verifies with an empty key).
func (s *Store) Observe(secret *corev1.Secret) bool {
	if s.pinned || secret == nil || secret.Namespace != s.ref.Namespace || secret.Name != s.ref.Name {
		return false
	}
	v := secret.Data[Key]
	if len(v) == 0 {
		return false
	}
	return s.Set(v)
}

// ErrNoSalt is returned by Load without create when the Secret is absent.
var ErrNoSalt = errors.New("the salt Secret does not exist yet")

// Load sets the salt at start: from env when it is not empty (the Secret is
// then ignored), else from the salt Secret. With create, an absent Secret is
// created with Size random bytes, and an unlabelled one is labelled so that
// the operator's label-filtered cache sees later edits; without create
// (auth-only replicas, which may only read it), an absent Secret is
// ErrNoSalt. c must read from the API server, not a cache.
func (s *Store) Load(ctx context.Context, c client.Client, env string, create bool) error {
	if env != "" {
		s.pinned = true
		s.Set([]byte(env))
		return nil
	}
	var sec corev1.Secret
	err := c.Get(ctx, s.ref, &sec)
	switch {
	case apierrors.IsNotFound(err) && !create:
		return ErrNoSalt
	case apierrors.IsNotFound(err):
		salt := make([]byte, Size)
		if _, err := rand.Read(salt); err != nil {
			return fmt.Errorf("generating salt: %w", err)
		}
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: s.ref.Name, Namespace: s.ref.Namespace,
				Labels: map[string]string{v1alpha1.ManagedByLabel: v1alpha1.ManagedByValue},
			},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{Key: salt},
		}
		if err := c.Create(ctx, &sec); err != nil {
			if !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating salt Secret %s: %w", s.ref, err)
			}
			// Another replica created it first: use theirs.
			return s.Load(ctx, c, env, create)
		}
	case err != nil:
		return fmt.Errorf("reading salt Secret %s: %w", s.ref, err)
	case create:
		if sec.Labels[v1alpha1.ManagedByLabel] != v1alpha1.ManagedByValue {
			patch := client.MergeFrom(sec.DeepCopy())
			if sec.Labels == nil {
				sec.Labels = map[string]string{}
			}
			sec.Labels[v1alpha1.ManagedByLabel] = v1alpha1.ManagedByValue
			if err := c.Patch(ctx, &sec, patch); err != nil {
				return fmt.Errorf("labelling salt Secret %s: %w", s.ref, err)
			}
		}
	}
	if len(sec.Data[Key]) == 0 {
		return errors.New("salt Secret " + s.ref.String() + " has no non-empty key \"" + Key + "\"")
	}
	s.Set(sec.Data[Key])
	return nil
}
