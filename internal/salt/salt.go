// Package salt keeps the operator's token salt: it loads it from a Secret
// in the operator's namespace (creating one on first start, from
// API_TOKEN_SALT if set), follows that Secret on every replica, and holds
// the current keyed hasher (and, during a planned rotation, the previous
// one) for the reconciler and the auth endpoint. The salt itself is never
// logged.
package salt

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// EnvVar seeds the salt Secret, as Strapi's API_TOKEN_SALT sets the salt.
// The Secret stays the one source every replica reads: a replica whose
// API_TOKEN_SALT differs from the Secret's salt refuses to start.
const EnvVar = "API_TOKEN_SALT"

// Size is the length of a generated salt.
const Size = 64

// MinSize is the length below which a salt (set by hand or from
// API_TOKEN_SALT) is refused at start (WeakSaltError), unless the store
// allows weak salts.
const MinSize = 32

// maxWitnessed bounds the IDs a Store remembers as replaced.
const maxWitnessed = 16

// Store holds the current salt State. Reads are lock-free; installs are
// serialised. It is safe for concurrent use.
type Store struct {
	// AllowWeak lets Load start with a salt shorter than MinSize (the
	// operator's --allow-weak-salt), reporting it instead of refusing it.
	AllowWeak bool
	// Provided: someone else provides the salt Secret (the operator's
	// --salt-create=false, the chart's salt.existingSecret, e.g. a secret
	// manager). Load then never creates, labels or writes it, and waits
	// while it is absent, holds no salt or lacks the managed-by label; the
	// salt reconciler only reads it.
	Provided bool

	state atomic.Pointer[State]
	ref   types.NamespacedName

	mu sync.Mutex
	// witnessed are the IDs of salts this process had installed and saw
	// replaced by a change of the Secret: tokens recorded under them are
	// re-issued (the operator saw the change happen), and the leader
	// writes them into the Secret's ReplacesAnnotation so that a restart
	// knows too.
	witnessed []string
	// version is the resourceVersion of the salt Secret last installed:
	// a copy older than it is never installed (see Observe).
	version string
	// waiting is why Wait is waiting for the salt Secret, "" otherwise.
	waiting string
}

// NewStore returns a Store for the salt Secret ref.
func NewStore(ref types.NamespacedName) *Store { return &Store{ref: ref} }

// Ref names the salt Secret.
func (s *Store) Ref() types.NamespacedName { return s.ref }

// State returns the current state, or nil before Load.
func (s *Store) State() *State { return s.state.Load() }

// Hasher returns the hasher of the current salt, or nil before Load.
func (s *Store) Hasher() *token.Hasher {
	if st := s.state.Load(); st != nil {
		return st.current
	}
	return nil
}

// PreviousHasher returns the previous salt's hasher while a planned
// rotation's overlap runs at now, else nil.
func (s *Store) PreviousHasher(now time.Time) *token.Hasher {
	if st := s.state.Load(); st != nil {
		return st.PreviousAt(now)
	}
	return nil
}

// Witnessed returns the IDs of salts this process saw replaced.
func (s *Store) Witnessed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.witnessed)
}

// Set installs a bare salt (no previous one) and reports whether the
// current salt changed.
func (s *Store) Set(salt []byte) bool {
	return s.install(&State{current: token.NewHasher(salt), salt: slices.Clone(salt)}, "")
}

// install makes st, read from the salt Secret at resourceVersion version
// ("" for none), current and reports whether the salt changed. A salt it
// replaces that st does not already name is remembered as witnessed.
//
// A state read from a version older than the one installed last is
// dropped: each event handler of the shared informer has its own queue,
// so the salt watcher, the ApiToken reconciler's watch and the salt
// reconciler may each hand over a copy of the Secret that another already
// saw superseded. Installing it would put back the salt a restore
// replaced and remember the restored salt as replaced, so that the next
// pass re-issues every token made with it. Versions are compared as the
// API server defines them (KEP-5504); one that is not comparable (a
// storage that does not promise it) is installed, as before.
func (s *Store) install(st *State, version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if version != "" && s.version != "" {
		if c, err := resourceversion.CompareResourceVersion(version, s.version); err == nil && c < 0 {
			return false
		}
	}
	if version != "" {
		s.version = version
	}
	old := s.state.Load()
	changed := old == nil || old.ID() != st.ID()
	if old != nil && changed && !st.Replaces(old.ID()) && !slices.Contains(s.witnessed, old.ID()) {
		s.witnessed = append([]string{old.ID()}, s.witnessed...)
		if len(s.witnessed) > maxWitnessed {
			s.witnessed = s.witnessed[:maxWitnessed]
		}
	}
	s.state.Store(st.withWitnessed(s.witnessed))
	return changed
}

// Observe installs the state held by secret if secret is the salt Secret;
// it reports whether the current salt changed. A Secret without a salt is
// ignored: the previous state stays (fail closed: no token verifies with
// an empty key, and the leader writes the salt back); so is a copy older
// than the one installed last.
func (s *Store) Observe(secret *corev1.Secret) bool {
	if secret == nil || secret.Namespace != s.ref.Namespace || secret.Name != s.ref.Name {
		return false
	}
	st, err := FromSecret(secret)
	if err != nil {
		return false
	}
	return s.install(st, secret.ResourceVersion)
}

// WeakSaltError: the salt is shorter than MinSize. Every ApiToken's
// status publishes the salt's ID (an HMAC keyed with it), so a short or
// human-chosen salt can be guessed offline by anyone who reads one. It
// names the salt's source and length, never the salt or its ID.
type WeakSaltError struct {
	// Source is where the salt came from: API_TOKEN_SALT, or the Secret's key.
	Source string
	Bytes  int
}

func (e *WeakSaltError) Error() string {
	return fmt.Sprintf("%s holds a salt of %d bytes; a salt must be at least %d bytes: its ID, published in every ApiToken's status, "+
		"lets anyone who reads one test guesses of a short salt offline. Refusing to start: set %s to a generated salt "+
		"(at least %d random bytes, e.g. head -c 48 /dev/urandom | base64), or start once with --allow-weak-salt and rotate the salt (docs/operations.md#a-weak-salt)",
		e.Source, e.Bytes, MinSize, EnvVar, MinSize)
}

// ErrNoSalt is returned by Load without create when the Secret is absent.
var ErrNoSalt = errors.New("the salt Secret does not exist yet")

// WaitingError: the salt Secret cannot be loaded yet, and a replica waits
// for it (errors.Is(err, ErrNoSalt)): it is absent and the replica does not
// create it, or, Provided, it holds no salt or lacks the managed-by label.
// Why says what is missing and who adds it; it never holds the salt.
type WaitingError struct {
	Secret types.NamespacedName
	Why    string
	// uid is the Secret's when it exists; action names what it lacks
	// (the Event's action: one Event series per reason).
	uid    types.UID
	action string
}

func (e *WaitingError) Error() string {
	return fmt.Sprintf("waiting for the salt Secret %s: %s", e.Secret, e.Why)
}

// Is makes a WaitingError an ErrNoSalt.
func (e *WaitingError) Is(target error) bool { return target == ErrNoSalt }

// EnvMismatchError: API_TOKEN_SALT and the salt Secret hold different
// salts. It names both sources by their salt IDs, never by their salts.
type EnvMismatchError struct {
	Secret       types.NamespacedName
	EnvID, SecID string
}

func (e *EnvMismatchError) Error() string {
	return fmt.Sprintf("%s (salt ID %s) and Secret %s key %q (salt ID %s) hold different salts; "+
		"refusing to start, so that no two replicas verify with different salts: "+
		"set %s to the Secret's salt, or remove %s to use the Secret (docs/operations.md)",
		EnvVar, e.EnvID, e.Secret, Key, e.SecID, EnvVar, EnvVar)
}

// Load sets the salt at start from the salt Secret. With create, an
// absent Secret is created, holding env if it is not empty, else Size
// random characters, and an unlabelled one is labelled so that the
// operator's label-filtered cache sees later edits; without create
// (auth-only replicas, which may only read it), an absent Secret is
// ErrNoSalt. A non-empty env must equal the Secret's salt (compared in
// constant time): otherwise Load returns an *EnvMismatchError and the
// replica must not start. A salt shorter than MinSize, in env or in the
// Secret, is a *WeakSaltError (a weak env never seeds the Secret) unless
// AllowWeak. c must read from the API server, not a cache.
//
// A Provided Secret is never created nor labelled, whatever create says:
// Load waits (a *WaitingError) while it is absent, holds no salt, or lacks
// the managed-by label, which the operator's cache selects Secrets by and
// so would not see the Secret's later changes (rotations) without.
func (s *Store) Load(ctx context.Context, c client.Client, env string, create bool) error {
	create = create && !s.Provided
	var sec corev1.Secret
	err := c.Get(ctx, s.ref, &sec)
	switch {
	case apierrors.IsNotFound(err) && s.Provided:
		return &WaitingError{Secret: s.ref, action: "WaitForSecret", Why: "it does not exist; --salt-create=false (the chart's salt.existingSecret) says someone else provides it, " +
			"so the operator never creates it: create it, or have your secret manager write it (docs/operations.md#a-salt-from-a-secret-manager)"}
	case apierrors.IsNotFound(err) && !create:
		return &WaitingError{Secret: s.ref, action: "WaitForSecret", Why: "it does not exist yet: the operator's controller replica creates it on its first start"}
	case apierrors.IsNotFound(err):
		salt := []byte(env)
		if env == "" {
			if salt, err = Generate(); err != nil {
				return err
			}
		} else if len(salt) < MinSize && !s.AllowWeak {
			// Checked before the Secret is made, so that it never holds it.
			return &WeakSaltError{Source: EnvVar, Bytes: len(salt)}
		}
		st := &State{current: token.NewHasher(salt), salt: salt}
		sec = *st.Secret(s.ref)
		if err := c.Create(ctx, &sec); err != nil {
			if !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating salt Secret %s: %w", s.ref, err)
			}
			// Another replica created it first: use theirs.
			return s.Load(ctx, c, env, create)
		}
	case err != nil:
		return fmt.Errorf("reading salt Secret %s: %w", s.ref, err)
	case s.Provided && len(sec.Data[Key]) == 0:
		return &WaitingError{Secret: s.ref, uid: sec.UID, action: "WaitForSalt", Why: fmt.Sprintf("it has no non-empty key %q; the operator never writes a Secret someone else provides (--salt-create=false): put the salt there", Key)}
	case s.Provided && sec.Labels[v1alpha1.ManagedByLabel] != v1alpha1.ManagedByValue:
		return &WaitingError{Secret: s.ref, uid: sec.UID, action: "WaitForLabel", Why: fmt.Sprintf("it lacks the label %s=%s, without which the operator does not see its changes; "+
			"the operator never writes a Secret someone else provides (--salt-create=false): add the label where the Secret is made (docs/operations.md#a-salt-from-a-secret-manager)",
			v1alpha1.ManagedByLabel, v1alpha1.ManagedByValue)}
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
	st, err := FromSecret(&sec)
	if err != nil {
		return fmt.Errorf("salt Secret %s %w", s.ref, err)
	}
	if env != "" && subtle.ConstantTimeCompare([]byte(env), st.salt) != 1 {
		return &EnvMismatchError{Secret: s.ref, EnvID: token.SaltID([]byte(env)), SecID: st.ID()}
	}
	if len(st.salt) < MinSize {
		if !s.AllowWeak {
			return &WeakSaltError{Source: fmt.Sprintf("Secret %s key %q", s.ref, Key), Bytes: len(st.salt)}
		}
		logf.FromContext(ctx).Error(nil, "The salt is short (started with --allow-weak-salt): anyone who reads its ID in an ApiToken's status can test guesses of it offline; rotate to a generated salt (docs/operations.md#a-weak-salt)",
			"secret", s.ref, "bytes", len(st.salt), "minimum", MinSize)
	}
	s.install(st, sec.ResourceVersion)
	return nil
}
