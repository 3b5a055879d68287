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
// the rotation asked for.
func (r *SaltReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	ref := r.Salt.Ref()
	if req.NamespacedName != ref {
		return ctrl.Result{}, nil
	}
	st := r.Salt.State()
	if st == nil {
		return ctrl.Result{}, errors.New("salt not loaded")
	}
	if r.Salt.Provided {
		// --salt-create=false: someone else writes the Secret. It is only
		// read (the salt watcher installs what it holds); deleted or
		// emptied, the salt stays in memory and nothing is written back.
		return ctrl.Result{}, nil
	}
	var sec corev1.Secret
	err := r.Get(ctx, ref, &sec)
	if apierrors.IsNotFound(err) {
		// Gone from the cache: deleted, or its label was removed.
		if err = r.APIReader.Get(ctx, ref, &sec); apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.recreate(ctx, st)
		}
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("reading salt Secret %s: %w", ref, err)
		}
		patch := client.MergeFrom(sec.DeepCopy())
		if sec.Labels == nil {
			sec.Labels = map[string]string{}
		}
		sec.Labels[tokensv1alpha1.ManagedByLabel] = tokensv1alpha1.ManagedByValue
		log.Info("Labelled the salt Secret again, so that every replica keeps following it", "secret", klog.KObj(&sec))
		return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, &sec, patch))
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("reading salt Secret %s: %w", ref, err)
	}
	if len(sec.Data[salt.Key]) == 0 {
		return ctrl.Result{}, r.restoreEmptied(ctx, &sec, st)
	}

	// Install what this pass sees first, so that a salt replaced by an
	// edit is among the witnessed ones recorded below.
	r.Salt.Observe(&sec)
	now := r.Clock.Now()
	want := sec.DeepCopy()
	var note func()
	cur, err := salt.FromSecret(want)
	if err != nil {
		return ctrl.Result{}, err
	}
	_, until, overlapping := cur.Overlap()
	overlapping = overlapping && now.Before(until)
	asked := salt.Requested(want)
	if n := len(want.Data[salt.NextKey]); asked != salt.NoRequest && n > 0 && n < salt.MinSize && !r.Salt.AllowWeak {
		// Installed, it would stop every replica's next start (salt.Load
		// refuses it): the request waits for a next salt that is long enough.
		log.Error(nil, "Refused to rotate to a weak salt", "secret", klog.KObj(&sec), "bytes", n, "minimum", salt.MinSize)
		r.event(&sec, corev1.EventTypeWarning, ReasonSaltRotationRefused, fmt.Sprintf(
			"The rotation was not carried out: the Secret's %q salt is %d bytes, and a salt must be at least %d bytes (docs/operations.md#a-weak-salt); put a longer one there, or remove it to have one generated",
			salt.NextKey, n, salt.MinSize))
		asked = salt.NoRequest
	}
	switch req := asked; {
	case req == salt.Emergency || (req == salt.Planned && r.Overlap <= 0):
		if err := r.rotate(want, now, 0); err != nil {
			return ctrl.Result{}, err
		}
		note = func() {
			saltRotations.WithLabelValues("emergency").Inc()
			msg := fmt.Sprintf("Emergency rotation: salt ID %s replaced salt ID %s with no overlap; every token stopped verifying and is re-issued", idOf(want), cur.ID())
			log.Info("Rotated the salt (emergency)", "secret", klog.KObj(want), "saltID", idOf(want), "replacedSaltID", cur.ID())
			r.event(want, corev1.EventTypeWarning, ReasonSaltRotationEmergency, msg)
		}
	case req == salt.Planned && overlapping:
		// A second planned rotation now would drop the previous salt
		// before every token has moved off it: wait (requeued at its end).
		r.event(&sec, corev1.EventTypeNormal, ReasonSaltRotationWaiting, "A planned rotation waits until the running overlap ends at "+until.UTC().Format(time.RFC3339))
	case req == salt.Planned:
		if err := r.rotate(want, now, r.Overlap); err != nil {
			return ctrl.Result{}, err
		}
		next, err := salt.FromSecret(want)
		if err != nil {
			return ctrl.Result{}, err
		}
		_, end, _ := next.Overlap()
		note = func() {
			saltRotations.WithLabelValues("planned").Inc()
			msg := fmt.Sprintf("Planned rotation: salt ID %s replaced salt ID %s; tokens made with the previous salt verify until %s while every token is re-issued", next.ID(), cur.ID(), end.UTC().Format(time.RFC3339))
			log.Info("Rotated the salt (planned)", "secret", klog.KObj(want), "saltID", next.ID(), "replacedSaltID", cur.ID(), "previousValidUntil", end)
			r.event(want, corev1.EventTypeNormal, ReasonSaltRotationPlanned, msg)
		}
	}
	recorded := salt.NameReplaced(want, r.Salt.Witnessed())
	pruned := salt.PruneExpired(want, now)
	// For people: which salt this is (a backup says so too); never trusted.
	labelled := false
	if id := idOf(want); want.Annotations[tokensv1alpha1.SaltIDAnnotation] != id {
		if want.Annotations == nil {
			want.Annotations = map[string]string{}
		}
		want.Annotations[tokensv1alpha1.SaltIDAnnotation], labelled = id, true
	}
	if note != nil || recorded || pruned || labelled {
		if err := r.Update(ctx, want); err != nil {
			return ctrl.Result{}, fmt.Errorf("updating salt Secret %s: %w", ref, err)
		}
		if note != nil {
			note()
		}
		if pruned {
			log.Info("Removed the previous salt: its overlap ended", "secret", klog.KObj(want))
			r.event(want, corev1.EventTypeNormal, ReasonPreviousSaltRemoved, "The planned rotation's overlap ended; the previous salt was removed and no longer verifies")
		}
	}
	after, err := salt.FromSecret(want)
	if err != nil {
		return ctrl.Result{}, err
	}
	if why := after.IgnoredPrevious(); why != "" {
		log.Error(nil, "The salt Secret holds a previous salt the operator does not use", "secret", klog.KObj(want), "why", why)
		r.event(want, corev1.EventTypeWarning, ReasonPreviousSaltIgnored, "The Secret's previous salt is not used: "+why)
	}
	if _, end, ok := after.Overlap(); ok && now.Before(end) {
		saltPreviousValidUntil.Set(float64(end.Unix()))
		return ctrl.Result{RequeueAfter: end.Sub(now)}, nil
	}
	saltPreviousValidUntil.Set(0)
	return ctrl.Result{}, nil
}

// rotate installs a new salt in sec: the Secret's own next salt if it
// holds one, else a generated one.
func (r *SaltReconciler) rotate(sec *corev1.Secret, now time.Time, overlap time.Duration) error {
	next := sec.Data[salt.NextKey]
	if len(next) == 0 {
		generate := r.Generate
		if generate == nil {
			generate = salt.Generate
		}
		var err error
		if next, err = generate(); err != nil {
			return err
		}
	}
	salt.Rotate(sec, next, now, overlap)
	return nil
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
