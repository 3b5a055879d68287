package salt

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func saltSecret(salt string, annotations map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace, Annotations: annotations},
		Data:       map[string][]byte{Key: []byte(salt)},
	}
}

func mustState(t *testing.T, sec *corev1.Secret) *State {
	t.Helper()
	st, err := FromSecret(sec)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestPlannedRotationKeepsThePreviousSaltUntilTheOverlapEnds(t *testing.T) {
	sec := saltSecret("old-salt", map[string]string{RotateAnnotation: "1"})
	if Requested(sec) != Planned {
		t.Fatal("a planned rotation was not seen")
	}
	Rotate(sec, []byte("new-salt"), t0, time.Hour)
	if Requested(sec) != NoRequest || sec.Annotations[RotateHandledAnnotation] != "1" {
		t.Fatal("the request was not marked handled")
	}
	st := mustState(t, sec)
	oldID := token.SaltID([]byte("old-salt"))
	if st.ID() != token.SaltID([]byte("new-salt")) || !st.Replaces(oldID) || sec.Annotations[ReplacesAnnotation] != oldID {
		t.Fatalf("state %v replaces %v", st, st.Replaced())
	}
	id, until, ok := st.Overlap()
	if !ok || id != oldID || !until.Equal(t0.Add(time.Hour)) {
		t.Fatalf("overlap = %s %v %v", id, until, ok)
	}
	if p := st.PreviousAt(until.Add(-time.Second)); p == nil || p.SaltID() != oldID {
		t.Fatal("the previous salt does not verify during the overlap")
	}
	if st.PreviousAt(until) != nil {
		t.Fatal("the previous salt verifies at the overlap's end")
	}
	if PruneExpired(sec, until.Add(-time.Second)) {
		t.Fatal("pruned during the overlap")
	}
	if !PruneExpired(sec, until) || sec.Data[PreviousKey] != nil || sec.Annotations[PreviousSealAnnotation] != "" {
		t.Fatal("the previous salt was not removed after the overlap")
	}
	if st := mustState(t, sec); !st.Replaces(oldID) {
		t.Fatal("the replaced salt was forgotten with the previous one")
	}
}

func TestEmergencyRotationKeepsNoPreviousSalt(t *testing.T) {
	sec := saltSecret("old-salt", map[string]string{RotateAnnotation: "1", RotateEmergencyAnnotation: "2"})
	if Requested(sec) != Emergency {
		t.Fatal("emergency must win over planned")
	}
	Rotate(sec, []byte("new-salt"), t0, 0)
	st := mustState(t, sec)
	if _, _, ok := st.Overlap(); ok || sec.Data[PreviousKey] != nil {
		t.Fatal("an emergency rotation kept the previous salt")
	}
	if !st.Replaces(token.SaltID([]byte("old-salt"))) || Requested(sec) != NoRequest {
		t.Fatal("not recorded as replaced, or not handled")
	}
	// An emergency during a planned overlap drops the previous salt too.
	sec = saltSecret("a", map[string]string{})
	Rotate(sec, []byte("b"), t0, time.Hour)
	Rotate(sec, []byte("c"), t0, 0)
	if st := mustState(t, sec); st.PreviousAt(t0) != nil || !st.Replaces(token.SaltID([]byte("a"))) || !st.Replaces(token.SaltID([]byte("b"))) {
		t.Fatal("the planned rotation's previous salt survived an emergency one")
	}
}

// TestAForgedPreviousSaltIsIgnored: someone who may write the salt Secret
// but does not know the current salt cannot make a salt of their choice
// (or an old, compromised one) verify again.
func TestAForgedPreviousSaltIsIgnored(t *testing.T) {
	until := t0.Add(24 * time.Hour).Format(time.RFC3339)
	forged := func(seal string) *corev1.Secret {
		sec := saltSecret("current", map[string]string{PreviousUntilAnnotation: until, PreviousSealAnnotation: seal})
		sec.Data[PreviousKey] = []byte("chosen")
		return sec
	}
	for name, sec := range map[string]*corev1.Secret{
		"no seal":                   forged(""),
		"sealed with another salt":  forged(token.NewHasher([]byte("chosen")).Seal(previousSealParts(token.SaltID([]byte("chosen")), until)...)),
		"seal for another deadline": forged(token.NewHasher([]byte("current")).Seal(previousSealParts(token.SaltID([]byte("chosen")), t0.Format(time.RFC3339))...)),
		"malformed deadline": func() *corev1.Secret {
			s := forged(token.NewHasher([]byte("current")).Seal(previousSealParts(token.SaltID([]byte("chosen")), "soon")...))
			s.Annotations[PreviousUntilAnnotation] = "soon"
			return s
		}(),
	} {
		st := mustState(t, sec)
		if st.PreviousAt(t0) != nil || st.Replaces(token.SaltID([]byte("chosen"))) || st.IgnoredPrevious() == "" {
			t.Errorf("%s: the previous salt is used", name)
		}
		if PruneExpired(sec, t0.Add(48*time.Hour)) {
			t.Errorf("%s: an unsealed previous salt was removed (it is reported, not destroyed)", name)
		}
	}
	// Changing the current salt by hand voids the previous one's seal.
	sec := saltSecret("a", nil)
	Rotate(sec, []byte("b"), t0, time.Hour)
	sec.Data[Key] = []byte("edited")
	if mustState(t, sec).PreviousAt(t0) != nil {
		t.Fatal("a previous salt survived a hand edit of the current one")
	}
}

func TestNameReplacedAndTheSecretRoundTrip(t *testing.T) {
	sec := saltSecret("cur", map[string]string{ReplacesAnnotation: "0123456789abcdef, not-an-id"})
	self := token.SaltID([]byte("cur"))
	if !NameReplaced(sec, []string{"fedcba9876543210", self, "0123456789abcdef"}) {
		t.Fatal("a new ID was not added")
	}
	if got := sec.Annotations[ReplacesAnnotation]; got != "fedcba9876543210,0123456789abcdef" {
		t.Fatalf("replaces = %q", got)
	}
	if NameReplaced(sec, []string{"fedcba9876543210"}) {
		t.Fatal("an ID already named was added again")
	}
	Rotate(sec, []byte("next"), t0, time.Hour)
	st := mustState(t, sec)
	back := mustState(t, st.Secret(ref))
	if !bytes.Equal(back.salt, []byte("next")) || !bytes.Equal(back.prevSalt, []byte("cur")) || back.PreviousAt(t0) == nil ||
		strings.Join(back.Replaced(), ",") != strings.Join(st.Replaced(), ",") {
		t.Fatal("the recreated Secret does not hold the same salts")
	}
}

func TestAStatePrintsItsIDNeverItsSalt(t *testing.T) {
	sec := saltSecret("very-secret-salt", nil)
	Rotate(sec, []byte("another-secret-salt"), t0, time.Hour)
	st := mustState(t, sec)
	for _, f := range []string{"%v", "%+v", "%s"} {
		out := fmt.Sprintf(f, st)
		if strings.Contains(out, "secret-salt") || !strings.Contains(out, st.ID()) {
			t.Errorf("%s prints %q", f, out)
		}
	}
}

func TestGenerateIsPrintableAndFresh(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate()
	if len(a) != Size || bytes.Equal(a, b) || strings.ContainsAny(string(a), "\x00\n =") {
		t.Fatalf("generated %d bytes", len(a))
	}
}
