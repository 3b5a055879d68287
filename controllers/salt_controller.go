package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// Reasons of the Events recorded on the salt Secret.
const (
	// ReasonSaltSecretRecreated: the salt Secret was deleted (or its salt
	// emptied) and was written back with the same salt.
	ReasonSaltSecretRecreated = "SaltSecretRecreated"
	// ReasonSaltRotationPlanned: a planned rotation installed a new salt;
	// the previous one verifies until the overlap ends.
	ReasonSaltRotationPlanned = "SaltRotationPlanned"
	// ReasonSaltRotationEmergency: an emergency rotation installed a new
	// salt; every token stopped verifying at once and is re-issued.
	ReasonSaltRotationEmergency = "SaltRotationEmergency"
	// ReasonSaltRotationWaiting: a planned rotation waits for the running
	// overlap to end.
	ReasonSaltRotationWaiting = "SaltRotationWaiting"
	// ReasonSaltRotationRefused: a rotation was asked for with a next salt
	// shorter than salt.MinSize; it waits for a longer one.
	ReasonSaltRotationRefused = "SaltRotationRefused"
	// ReasonPreviousSaltRemoved: the overlap ended; the previous salt was
	// removed from the Secret.
	ReasonPreviousSaltRemoved = "PreviousSaltRemoved"
	// ReasonPreviousSaltIgnored: the Secret holds a previous salt that the
	// operator did not seal; it is not used.
	ReasonPreviousSaltIgnored = "PreviousSaltIgnored"
)

// DefaultSaltOverlap is how long a planned rotation keeps the previous
// salt verifying: time to re-issue every token, for kubelet to refresh
// every mounted Secret (a minute or two) and for clients to reload.
const DefaultSaltOverlap = time.Hour

// SaltReconciler looks after the salt Secret on the leader: it writes the
// Secret back with the same salt when it is deleted or emptied, carries
// out the planned and emergency rotations asked for by annotation, records
// in the Secret which salts the current one replaced (and, for people,
// the current salt's ID), and removes the previous salt when its overlap
// ends. It never changes the salt on its
// own. Every ApiToken is re-checked by the ApiToken reconciler, which
// watches the same Secret.
type SaltReconciler struct {
	client.Client
	// APIReader reads around the label-filtered cache, to tell a deleted
	// salt Secret from one whose label was removed.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	Salt      *salt.Store
	// Overlap is how long a planned rotation keeps the previous salt
	// verifying (cmd/main.go: --salt-overlap, DefaultSaltOverlap); 0: none,
	// a planned rotation is then an emergency one.
	Overlap time.Duration
	// Generate returns a new salt; salt.Generate unless a test injects one.
	Generate func() ([]byte, error)
}

// Reconcile brings the salt Secret in line with the salt in memory and
// the rotation asked for, in the steps below; the Secret is written once,
// by updateSaltSecret, but for the steps that write it back when it lost
// its label or its salt (and end the pass).
func (r *SaltReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if req.NamespacedName != r.Salt.Ref() {
		return ctrl.Result{}, nil
	}
	s := &saltPass{}
	for _, step := range []saltStep{
		r.loadSalt,
		r.readSaltSecret,
		r.askedRotation,
		r.rotateAsked,
		r.recordSalts,
		r.updateSaltSecret,
		r.reportSalt,
	} {
		if ended, err := step(ctx, s); err != nil || ended {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

// saltPass is one reconcile of the salt Secret: what its steps read and
// decided.
type saltPass struct {
	// st is the salt in memory.
	st *salt.State
	// sec is the salt Secret as read; want, as it is to be written.
	sec  corev1.Secret
	want *corev1.Secret
	// cur is the salt want holds before a rotation.
	cur *salt.State
	now time.Time
	// asked is the rotation asked for and carried out; overlapping: a
	// planned rotation's overlap runs until until.
	asked       salt.Request
	overlapping bool
	until       time.Time
	// rotated counts, logs and records the rotation once it is written.
	rotated func()
	// changed: want differs from sec; pruned: an ended overlap's previous
	// salt was removed from it.
	changed, pruned bool
	// requeue is when the pass looks again: the running overlap's end.
	requeue time.Duration
}

// saltStep is one step of a saltPass; ended or an error ends the pass.
type saltStep func(ctx context.Context, s *saltPass) (ended bool, err error)

// loadSalt takes the salt in memory; a Secret someone else provides
// (--salt-create=false) ends the pass: the operator never writes it.
func (r *SaltReconciler) loadSalt(_ context.Context, s *saltPass) (bool, error) {
	if s.st = r.Salt.State(); s.st == nil {
		return true, errors.New("salt not loaded")
	}
	// --salt-create=false: someone else writes the Secret. It is only read
	// (the salt watcher installs what it holds); deleted or emptied, the
	// salt stays in memory and nothing is written back.
	return r.Salt.Provided, nil
}

// readSaltSecret reads the salt Secret; one that is gone from the cache is
// labelled again or recreated, one whose salt was removed is restored,
// and either ends the pass.
func (r *SaltReconciler) readSaltSecret(ctx context.Context, s *saltPass) (bool, error) {
	ref := r.Salt.Ref()
	err := r.Get(ctx, ref, &s.sec)
	if apierrors.IsNotFound(err) {
		return true, r.relabelOrRecreate(ctx, s)
	}
	if err != nil {
		return true, fmt.Errorf("reading salt Secret %s: %w", ref, err)
	}
	if len(s.sec.Data[salt.Key]) == 0 {
		return true, r.restoreEmptied(ctx, &s.sec, s.st)
	}
	return false, nil
}

// relabelOrRecreate handles a salt Secret gone from the cache: deleted
// (recreated with the same salt), or its label was removed (labelled
// again, so that every replica keeps following it).
func (r *SaltReconciler) relabelOrRecreate(ctx context.Context, s *saltPass) error {
	ref, sec := r.Salt.Ref(), &s.sec
	err := r.APIReader.Get(ctx, ref, sec)
	if apierrors.IsNotFound(err) {
		return r.recreate(ctx, s.st)
	}
	if err != nil {
		return fmt.Errorf("reading salt Secret %s: %w", ref, err)
	}
	patch := client.MergeFrom(sec.DeepCopy())
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	sec.Labels[tokensv1alpha1.ManagedByLabel] = tokensv1alpha1.ManagedByValue
	logf.FromContext(ctx).Info("Labelled the salt Secret again, so that every replica keeps following it", "secret", klog.KObj(sec))
	return client.IgnoreNotFound(r.Patch(ctx, sec, patch))
}

// recreate writes the deleted salt Secret back from memory: the same salt
// bytes, previous salt and annotations, so that no token breaks.
func (r *SaltReconciler) recreate(ctx context.Context, st *salt.State) error {
	sec := st.Secret(r.Salt.Ref())
	if err := r.Create(ctx, sec); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("recreating salt Secret %s: created meanwhile by someone else; looking again", r.Salt.Ref())
		}
		return fmt.Errorf("recreating salt Secret %s: %w", r.Salt.Ref(), err)
	}
	saltSecretRecreations.Inc()
	logf.FromContext(ctx).Error(nil, "The salt Secret was deleted; recreated it with the same salt, so no token was re-issued. Deleting it never rotates the salt: see docs/operations.md", "secret", klog.KObj(sec), "saltID", st.ID())
	r.event(sec, corev1.EventTypeWarning, ReasonSaltSecretRecreated, "The salt Secret was deleted and was recreated with the same salt (salt ID "+st.ID()+"); no token was re-issued")
	return nil
}

// restoreEmptied writes the salt in memory back into a salt Secret whose
// salt was removed, keeping whatever else it holds.
func (r *SaltReconciler) restoreEmptied(ctx context.Context, sec *corev1.Secret, st *salt.State) error {
	want := st.Secret(r.Salt.Ref())
	sec.Data = want.Data
	for k, v := range want.Annotations {
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[k] = v
	}
	if err := r.Update(ctx, sec); err != nil {
		return fmt.Errorf("restoring salt Secret %s: %w", r.Salt.Ref(), err)
	}
	saltSecretRecreations.Inc()
	logf.FromContext(ctx).Error(nil, "The salt Secret's salt was removed; wrote the same salt back, so no token was re-issued", "secret", klog.KObj(sec), "saltID", st.ID())
	r.event(sec, corev1.EventTypeWarning, ReasonSaltSecretRecreated, "The salt Secret's salt was removed and was written back (salt ID "+st.ID()+"); no token was re-issued")
	return nil
}

func (r *SaltReconciler) event(sec *corev1.Secret, eventType, reason, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(sec, nil, eventType, reason, "Reconcile", "%s", note)
	}
}

// idOf is the salt ID of the salt sec holds.
func idOf(sec *corev1.Secret) string {
	st, err := salt.FromSecret(sec)
	if err != nil {
		return ""
	}
	return st.ID()
}

// SetupWithManager registers the reconciler for the salt Secret only.
func (r *SaltReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	ref := r.Salt.Ref()
	isSalt := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == ref.Namespace && o.GetName() == ref.Name
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Secret{}, builder.WithPredicates(isSalt)).
		Named("salt").
		Complete(r)
}
