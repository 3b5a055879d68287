package salt

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

var ref = types.NamespacedName{Namespace: "apitoken-system", Name: "salt"}

// strongSalt is name made as long as MinSize asks: a salt that Load
// accepts, still told apart by its name.
func strongSalt(name string) string { return name + strings.Repeat("-", MinSize) }

var fromEnv, anotherSalt = strongSalt("from-env"), strongSalt("another-salt")

// TestLoadRefusesAWeakSalt: a salt shorter than MinSize, from
// API_TOKEN_SALT or in the Secret, stops the start with an error that
// names its source, its length and the minimum (never the salt), unless
// AllowWeak; a weak API_TOKEN_SALT never seeds the Secret.
func TestLoadRefusesAWeakSalt(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	const weak = "correct horse battery" // 21 bytes, chosen by a person
	check := func(t *testing.T, err error, source string) {
		t.Helper()
		var w *WeakSaltError
		if !errors.As(err, &w) {
			t.Fatalf("Load = %v, want a WeakSaltError", err)
		}
		for _, want := range []string{source, "21 bytes", "at least 32", "--allow-weak-salt", "docs/operations.md"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not name %q", err, want)
			}
		}
		if strings.Contains(err.Error(), weak) || strings.Contains(err.Error(), token.SaltID([]byte(weak))) {
			t.Errorf("the error shows the salt or its ID: %q", err)
		}
	}
	t.Run("API_TOKEN_SALT seeding an absent Secret", func(t *testing.T) {
		c := fake.NewClientBuilder().WithScheme(s).Build()
		st := NewStore(ref)
		check(t, st.Load(context.Background(), c, weak, true), "API_TOKEN_SALT")
		if st.State() != nil {
			t.Fatal("a weak salt was installed")
		}
		var sec corev1.Secret
		if err := c.Get(context.Background(), ref, &sec); err == nil {
			t.Fatal("a weak API_TOKEN_SALT seeded the salt Secret")
		}
		allowed := NewStore(ref)
		allowed.AllowWeak = true
		if err := allowed.Load(context.Background(), c, weak, true); err != nil || allowed.State() == nil {
			t.Fatalf("with AllowWeak: %v", err)
		}
	})
	t.Run("the Secret's salt", func(t *testing.T) {
		c := fake.NewClientBuilder().WithScheme(s).WithObjects(&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace},
			Data:       map[string][]byte{Key: []byte(weak)},
		}).Build()
		for _, create := range []bool{true, false} {
			for _, env := range []string{"", weak} {
				st := NewStore(ref)
				check(t, st.Load(context.Background(), c, env, create), `Secret `+ref.String()+` key "salt"`)
				if st.State() != nil {
					t.Fatal("a weak salt was installed")
				}
			}
		}
		allowed := NewStore(ref)
		allowed.AllowWeak = true
		if err := allowed.Load(context.Background(), c, "", false); err != nil || allowed.State() == nil {
			t.Fatalf("with AllowWeak: %v", err)
		}
	})
	t.Run("MinSize bytes are enough", func(t *testing.T) {
		c := fake.NewClientBuilder().WithScheme(s).Build()
		if err := NewStore(ref).Load(context.Background(), c, strings.Repeat("x", MinSize), true); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLoadCreatesLabelledSecretOnce(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).Build()
	st := NewStore(ref)
	if err := st.Load(context.Background(), c, "", true); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(context.Background(), ref, &sec); err != nil {
		t.Fatal(err)
	}
	if len(sec.Data[Key]) != Size || sec.Labels["app.kubernetes.io/managed-by"] != "apitoken-operator" {
		t.Fatalf("salt Secret = %d bytes, labels %v", len(sec.Data[Key]), sec.Labels)
	}
	if st.Hasher().SaltID() != token.SaltID(sec.Data[Key]) {
		t.Fatal("the store does not use the Secret's salt")
	}
	// A second replica reads the same salt.
	st2 := NewStore(ref)
	if err := st2.Load(context.Background(), c, "", true); err != nil || st2.Hasher().SaltID() != st.Hasher().SaltID() {
		t.Fatalf("second load: %v", err)
	}
}

func TestLoadLabelsAnExistingSecretAndRefusesAnEmptyOne(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace},
		Data:       map[string][]byte{Key: []byte(strongSalt("given"))},
	}).Build()
	st := NewStore(ref)
	if err := st.Load(context.Background(), c, "", true); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	_ = c.Get(context.Background(), ref, &sec)
	if sec.Labels["app.kubernetes.io/managed-by"] != "apitoken-operator" || st.Hasher().SaltID() != token.SaltID([]byte(strongSalt("given"))) {
		t.Fatal("existing Secret not labelled or not used")
	}
	empty := fake.NewClientBuilder().WithScheme(s).WithObjects(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace}}).Build()
	if err := NewStore(ref).Load(context.Background(), empty, "", true); err == nil {
		t.Fatal("an empty salt was accepted")
	}
}

func TestEnvSeedsTheSecretAndMustAgreeWithIt(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).Build()
	st := NewStore(ref)
	if err := st.Load(context.Background(), c, fromEnv, true); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(context.Background(), ref, &sec); err != nil || string(sec.Data[Key]) != fromEnv {
		t.Fatalf("the absent Secret was not seeded from the environment: %v", err)
	}
	if err := NewStore(ref).Load(context.Background(), c, fromEnv, true); err != nil {
		t.Fatalf("an agreeing environment was refused: %v", err)
	}
	// A replica rolled out with another API_TOKEN_SALT refuses to start,
	// naming both sources (by salt ID, never by salt).
	other := NewStore(ref)
	err := other.Load(context.Background(), c, anotherSalt, true)
	var mismatch *EnvMismatchError
	if !errors.As(err, &mismatch) || other.State() != nil {
		t.Fatalf("Load with a disagreeing environment = %v", err)
	}
	for _, want := range []string{"API_TOKEN_SALT", "Secret " + ref.String(), token.SaltID([]byte(anotherSalt)), token.SaltID([]byte(fromEnv))} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %q", err, want)
		}
	}
	for _, secret := range []string{anotherSalt, fromEnv} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a salt: %q", err)
		}
	}
	// An auth-only replica (no create) checks too.
	if err := NewStore(ref).Load(context.Background(), c, anotherSalt, false); !errors.As(err, &mismatch) {
		t.Fatalf("an auth-only replica with a disagreeing environment: %v", err)
	}
}

func TestObserveFollowsTheSecret(t *testing.T) {
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace}, Data: map[string][]byte{Key: []byte("x")}}
	free := NewStore(ref)
	free.Set([]byte("a"))
	if !free.Observe(other) || free.Observe(other) {
		t.Fatal("Observe should report a change once")
	}
	if free.Observe(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "else", Namespace: ref.Namespace}, Data: map[string][]byte{Key: []byte("y")}}) {
		t.Fatal("another Secret changed the salt")
	}
	if free.Observe(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace}}) || free.Hasher().SaltID() != token.SaltID([]byte("x")) {
		t.Fatal("an emptied Secret cleared the salt")
	}
	// The change from "a" to "x" was seen: "a" is known to be replaced.
	if !free.State().Replaces(token.SaltID([]byte("a"))) || free.State().Replaces(token.SaltID([]byte("never"))) {
		t.Fatal("a witnessed replacement is not known, or an unknown salt is")
	}
}

func TestLoadWithoutCreateWaitsForTheSecret(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).Build()
	if err := NewStore(ref).Load(context.Background(), c, "", false); !errors.Is(err, ErrNoSalt) {
		t.Fatalf("Load without create = %v, want ErrNoSalt", err)
	}
	var sec corev1.Secret
	if err := c.Get(context.Background(), ref, &sec); err == nil {
		t.Fatal("a reader created the salt Secret")
	}
}

// TestAStaleCopyOfTheSaltSecretNeverUndoesARestore: every event handler of
// the shared informer (the salt watcher, the ApiToken reconciler's watch,
// the salt reconciler) is fed from its own queue, so one may hand the
// Store a copy of the salt Secret older than one another already
// installed. Installing it would put back the salt the restore replaced
// and record the restored one as "seen replaced": the next pass would then
// re-issue every token made with the restored salt (SaltRotated).
func TestAStaleCopyOfTheSaltSecretNeverUndoesARestore(t *testing.T) {
	meta := func(rv string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace, UID: "u1", ResourceVersion: rv}
	}
	fresh := &corev1.Secret{ObjectMeta: meta("100"), Data: map[string][]byte{Key: []byte("fresh")}}
	restored := &corev1.Secret{ObjectMeta: meta("101"), Data: map[string][]byte{Key: []byte("restored")}}
	s := NewStore(ref)
	s.Observe(fresh)
	if !s.Observe(restored) {
		t.Fatal("the restore was not installed")
	}
	// The ApiToken reconciler's handler, behind, sees the fresh salt again.
	if s.Observe(fresh) {
		t.Fatal("a stale copy of the salt Secret changed the salt back")
	}
	if id := s.State().ID(); id != token.SaltID([]byte("restored")) {
		t.Fatalf("current salt = %s, want the restored one", id)
	}
	if s.State().Replaces(token.SaltID([]byte("restored"))) {
		t.Fatal("the restored salt is recorded as replaced: its tokens would be re-issued")
	}
	if !s.State().Replaces(token.SaltID([]byte("fresh"))) {
		t.Fatal("the salt the restore replaced is not known as replaced")
	}
	// A later version (and a recreated Secret, whose version is later
	// too) is installed as before.
	later := &corev1.Secret{ObjectMeta: meta("102"), Data: map[string][]byte{Key: []byte("next")}}
	if !s.Observe(later) {
		t.Fatal("a later version was not installed")
	}
	// A Secret whose version cannot be compared (not from etcd) is
	// installed: nothing to order it by.
	if !s.Observe(&corev1.Secret{ObjectMeta: meta(""), Data: map[string][]byte{Key: []byte("unversioned")}}) {
		t.Fatal("an unversioned Secret was not installed")
	}
}
