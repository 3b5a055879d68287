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
		Data:       map[string][]byte{Key: []byte("given")},
	}).Build()
	st := NewStore(ref)
	if err := st.Load(context.Background(), c, "", true); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	_ = c.Get(context.Background(), ref, &sec)
	if sec.Labels["app.kubernetes.io/managed-by"] != "apitoken-operator" || st.Hasher().SaltID() != token.SaltID([]byte("given")) {
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
	if err := st.Load(context.Background(), c, "from-env", true); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(context.Background(), ref, &sec); err != nil || string(sec.Data[Key]) != "from-env" {
		t.Fatalf("the absent Secret was not seeded from the environment: %v", err)
	}
	if err := NewStore(ref).Load(context.Background(), c, "from-env", true); err != nil {
		t.Fatalf("an agreeing environment was refused: %v", err)
	}
	// A replica rolled out with another API_TOKEN_SALT refuses to start,
	// naming both sources (by salt ID, never by salt).
	other := NewStore(ref)
	err := other.Load(context.Background(), c, "another-salt", true)
	var mismatch *EnvMismatchError
	if !errors.As(err, &mismatch) || other.State() != nil {
		t.Fatalf("Load with a disagreeing environment = %v", err)
	}
	for _, want := range []string{"API_TOKEN_SALT", "Secret " + ref.String(), token.SaltID([]byte("another-salt")), token.SaltID([]byte("from-env"))} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %q", err, want)
		}
	}
	for _, secret := range []string{"another-salt", "from-env"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a salt: %q", err)
		}
	}
	// An auth-only replica (no create) checks too.
	if err := NewStore(ref).Load(context.Background(), c, "another-salt", false); !errors.As(err, &mismatch) {
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
