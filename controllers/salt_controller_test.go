package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// saltHarness runs the SaltReconciler against a fake API server.
type saltHarness struct {
	t     *testing.T
	r     *SaltReconciler
	clock *clocktesting.FakeClock
	rec   *events.FakeRecorder
	ref   types.NamespacedName
}

func newSaltHarness(t *testing.T, objs ...*corev1.Secret) *saltHarness {
	s := testenv.Scheme()
	b := fake.NewClientBuilder().WithScheme(s)
	for _, o := range objs {
		b = b.WithObjects(o)
	}
	c := b.Build()
	h := &saltHarness{t: t, clock: clocktesting.NewFakeClock(t0), rec: events.NewFakeRecorder(100), ref: types.NamespacedName{Namespace: "system", Name: "salt"}}
	store := salt.NewStore(h.ref)
	if err := store.Load(context.Background(), c, "", true); err != nil {
		t.Fatal(err)
	}
	n := 0
	h.r = &SaltReconciler{Client: c, APIReader: c, Recorder: h.rec, Clock: h.clock, Salt: store, Overlap: time.Hour,
		Generate: func() ([]byte, error) { n++; return fmt.Appendf(nil, "generated-%d", n), nil }}
	return h
}

func (h *saltHarness) reconcile() ctrl.Result {
	h.t.Helper()
	res, err := h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: h.ref})
	if err != nil {
		h.t.Fatal(err)
	}
	if sec, err := h.get(); err == nil {
		h.r.Salt.Observe(sec) // what the watch does on every replica
	}
	return res
}

func (h *saltHarness) get() (*corev1.Secret, error) {
	var sec corev1.Secret
	err := h.r.Get(context.Background(), h.ref, &sec)
	return &sec, err
}

func (h *saltHarness) annotate(k, v string) {
	sec, err := h.get()
	if err != nil {
		h.t.Fatal(err)
	}
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Annotations[k] = v
	if err := h.r.Update(context.Background(), sec); err != nil {
		h.t.Fatal(err)
	}
}

func TestSaltReconcilerRecreatesADeletedSecretWithTheSameSalt(t *testing.T) {
	h := newSaltHarness(t)
	before, _ := h.get()
	if err := h.r.Delete(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	after, err := h.get()
	if err != nil || string(after.Data[salt.Key]) != string(before.Data[salt.Key]) || after.Labels[tokensv1alpha1.ManagedByLabel] != tokensv1alpha1.ManagedByValue {
		t.Fatalf("recreated Secret: %v", err)
	}
	// Its salt emptied: written back too.
	after.Data = map[string][]byte{}
	_ = h.r.Update(context.Background(), after)
	h.reconcile()
	if again, _ := h.get(); string(again.Data[salt.Key]) != string(before.Data[salt.Key]) {
		t.Fatal("an emptied salt was not written back")
	}
	evs := strings.Join(drain(h.rec), "\n")
	if strings.Count(evs, "Warning SaltSecretRecreated") != 2 || strings.Contains(evs, string(before.Data[salt.Key])) {
		t.Fatalf("events = %q", evs)
	}
}

func TestSaltReconcilerRotations(t *testing.T) {
	h := newSaltHarness(t)
	first := h.r.Salt.State().ID()
	h.annotate(salt.RotateAnnotation, "1")
	res := h.reconcile()
	st := h.r.Salt.State()
	if id, until, ok := st.Overlap(); !ok || id != first || !until.Equal(t0.Add(time.Hour)) || res.RequeueAfter != time.Hour {
		t.Fatalf("planned rotation: overlap %s %v %v, requeue %v", id, until, ok, res.RequeueAfter)
	}
	if gauge(t, "apitoken_salt_previous_valid_until_seconds") != float64(t0.Add(time.Hour).Unix()) {
		t.Fatal("the overlap's end is not published")
	}
	second := st.ID()

	// A second planned rotation waits for the overlap to end.
	h.annotate(salt.RotateAnnotation, "2")
	h.reconcile()
	if h.r.Salt.State().ID() != second {
		t.Fatal("a planned rotation during an overlap did not wait")
	}
	h.clock.Step(time.Hour)
	h.reconcile()
	st = h.r.Salt.State()
	if st.ID() == second || !st.Replaces(first) || !st.Replaces(second) {
		t.Fatal("the waiting rotation was not carried out at the overlap's end")
	}
	third := st.ID()

	// An emergency is instant, even during an overlap, and keeps none.
	h.annotate(salt.RotateEmergencyAnnotation, "now")
	h.reconcile()
	st = h.r.Salt.State()
	if _, _, ok := st.Overlap(); st.ID() == third || ok || !st.Replaces(third) {
		t.Fatal("the emergency rotation kept an overlap")
	}
	if gauge(t, "apitoken_salt_previous_valid_until_seconds") != 0 {
		t.Fatal("an overlap is still published")
	}

	// A weak salt of your own is not installed: the next start would
	// refuse it (salt.MinSize). The request waits for a salt that is not.
	sec, _ := h.get()
	sec.Data[salt.NextKey] = []byte("my-own-salt")
	sec.Annotations[salt.RotateAnnotation] = "3"
	_ = h.r.Update(context.Background(), sec)
	h.reconcile()
	if sec, _ := h.get(); string(sec.Data[salt.Key]) == "my-own-salt" || h.r.Salt.State().ID() != st.ID() {
		t.Fatal("a weak next salt was installed")
	}
	if events := strings.Join(drain(h.rec), "\n"); !strings.Contains(events, "SaltRotationRefused") || !strings.Contains(events, "at least 32 bytes") {
		t.Fatalf("the refused rotation is not reported: %s", events)
	}

	// A salt of your own, given as next.
	own := "my-own-salt-" + strings.Repeat("x", salt.MinSize)
	sec, _ = h.get()
	sec.Data[salt.NextKey] = []byte(own)
	_ = h.r.Update(context.Background(), sec)
	h.reconcile()
	if sec, _ := h.get(); string(sec.Data[salt.Key]) != own || sec.Data[salt.NextKey] != nil {
		t.Fatal("the next salt was not installed, or not consumed")
	}

	// The overlap ended: the previous salt is removed from the Secret.
	h.clock.Step(time.Hour)
	h.reconcile()
	if sec, _ := h.get(); sec.Data[salt.PreviousKey] != nil {
		t.Fatal("the previous salt outlived its overlap")
	}
	for _, e := range drain(h.rec) {
		if strings.Contains(e, "my-own-salt") || strings.Contains(e, "generated-") {
			t.Fatalf("an event shows a salt: %q", e)
		}
	}
}

func TestSaltReconcilerRecordsAWitnessedReplacement(t *testing.T) {
	h := newSaltHarness(t)
	first := h.r.Salt.State().ID()
	sec, _ := h.get()
	sec.Data[salt.Key] = []byte("edited-by-hand-" + strings.Repeat("x", salt.MinSize))
	_ = h.r.Update(context.Background(), sec)
	h.reconcile()
	if sec, _ := h.get(); sec.Annotations[salt.ReplacesAnnotation] != first {
		t.Fatalf("replaces = %q, want the witnessed %s", sec.Annotations[salt.ReplacesAnnotation], first)
	}
	if sec, _ := h.get(); sec.Annotations[tokensv1alpha1.SaltIDAnnotation] != h.r.Salt.State().ID() || h.r.Salt.State().ID() == first {
		t.Fatal("the salt Secret does not name its salt's ID")
	}
	// A restarted operator (no memory) still knows.
	fresh := salt.NewStore(h.ref)
	if err := fresh.Load(context.Background(), h.r.Client, "", true); err != nil || !fresh.State().Replaces(first) {
		t.Fatalf("after a restart the replaced salt is unknown: %v", err)
	}
}

func TestSaltReconcilerLeavesAnotherSecretAlone(t *testing.T) {
	h := newSaltHarness(t)
	if _, err := h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "system", Name: "other"}}); err != nil {
		t.Fatal(err)
	}
	var other corev1.Secret
	if err := h.r.Get(context.Background(), types.NamespacedName{Namespace: "system", Name: "other"}, &other); !apierrors.IsNotFound(err) {
		t.Fatal("another Secret was created")
	}
}

func drain(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// TestSaltReconcilerNeverWritesAProvidedSecret: with --salt-create=false
// the salt Secret is someone else's: an unlabelled, deleted or emptied
// one, or a rotation asked by annotation, is never written.
func TestSaltReconcilerNeverWritesAProvidedSecret(t *testing.T) {
	h := newSaltHarness(t)
	h.r.Salt.Provided = true
	h.annotate(salt.RotateAnnotation, "1")
	h.annotate(salt.RotateEmergencyAnnotation, "1")
	before, _ := h.get()
	id := h.r.Salt.State().ID()
	h.reconcile()
	if after, _ := h.get(); after.ResourceVersion != before.ResourceVersion || h.r.Salt.State().ID() != id {
		t.Fatal("a rotation asked by annotation was carried out on a provided Secret")
	}
	delete(before.Labels, tokensv1alpha1.ManagedByLabel)
	before.Data = map[string][]byte{}
	if err := h.r.Update(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if after, _ := h.get(); after.ResourceVersion != before.ResourceVersion || len(after.Data[salt.Key]) != 0 {
		t.Fatal("an emptied, unlabelled provided Secret was written")
	}
	if err := h.r.Delete(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	if _, err := h.get(); !apierrors.IsNotFound(err) {
		t.Fatalf("a deleted provided Secret was recreated: %v", err)
	}
	if h.r.Salt.State().ID() != id {
		t.Fatal("the salt in memory changed")
	}
	if evs := drain(h.rec); len(evs) != 0 {
		t.Fatalf("events = %q", evs)
	}
}
