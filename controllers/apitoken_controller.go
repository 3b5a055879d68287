// Package controllers holds the ApiToken reconciler: it delivers tokens into
// Secrets, keeps their keyed hashes in status, and expires, regenerates,
// rotates and revokes them.
package controllers

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// ApiTokenReconciler reconciles ApiTokens.
type ApiTokenReconciler struct {
	client.Client
	// APIReader reads around the cache, to tell a foreign Secret from one
	// of ours that fell out of the label-filtered cache.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	Salt      *salt.Store
	// Generate mints tokens; token.Generate unless a test injects another.
	Generate func() (string, error)
	// MaxConcurrentReconciles bounds parallel reconciles (default 1).
	MaxConcurrentReconciles int
	// SkipGeneratedEvents records no Generated Event for a new ApiToken's
	// first token (--generated-events=false): when thousands of ApiTokens
	// are created at once, each Event is one more API write. Every other
	// Event is recorded.
	SkipGeneratedEvents bool
	// TokenMetrics says which tokens get series of their own
	// (--token-metrics; empty: TokenMetricsExpiring).
	TokenMetrics TokenMetrics
	// Cuts bounds the tokens cut without being asked (--max-cuts,
	// --cut-window, --max-cuts-percent); nil: no bound.
	Cuts *CutGuard
	// MaxSaltOverlap is the longest a planned salt rotation keeps a
	// replaced token verifying (--salt-overlap); 0: a salt rotation always
	// cuts the old tokens at once.
	MaxSaltOverlap time.Duration
	// Policies watches ApiTokenPolicies and the labels of namespaces, to
	// re-check the tokens they concern (PolicyServed: false when the
	// ApiTokenPolicy CRD is not installed).
	Policies bool

	// mismatchLogged holds the "recorded/current" salt ID pairs already
	// logged, so that a lost salt is one error line, not one per token.
	mismatchLogged sync.Map
}

// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokens,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokens/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokens/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one ApiToken's Secret and status in line with its spec:
// it runs the steps below in order, and one deferred summary computes the
// status, writes it and records its Events, also when a step failed (Ready
// then says why). Every pass re-derives the world; see decide for the
// order of checks.
func (r *ApiTokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	t := &tokensv1alpha1.ApiToken{}
	if err := r.Get(ctx, req.NamespacedName, t); err != nil {
		if apierrors.IsNotFound(err) {
			forgetMetrics(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !t.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the garbage collector removes the Secret
	}
	s := &pass{t: t, base: t.DeepCopy(), phaseBefore: t.Status.Phase, now: r.Clock.Now()}
	defer func() { result, retErr = r.summarizeAndPatch(ctx, s, retErr) }()

	for _, step := range []step{
		// A revocation is recorded before anything else is attempted:
		// neither the Secret, nor the salt, nor the rest of the spec can
		// delay it.
		r.recordRevocation,
		r.settleLeakRevocations,
		r.loadSalt,
		r.checkPolicies,
		r.parseSpec,
		r.observe,
		r.carryOut,
		// Only once the new token is in the Secret.
		r.restartTargets,
	} {
		if ended, err := step(ctx, s); err != nil || ended {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

// pass is one reconcile of one ApiToken: what its steps read and decided,
// and what the deferred summary (summarizeAndPatch) writes and records.
type pass struct {
	t *tokensv1alpha1.ApiToken
	// base is t as the API server last had it from this pass: the patch
	// base, moved forward by every status write (patchStatus).
	base *tokensv1alpha1.ApiToken
	// phaseBefore is the phase t had when the pass began.
	phaseBefore tokensv1alpha1.Phase
	now         time.Time

	salts  *salt.State
	hasher *token.Hasher
	p      policy
	// policy is what the ApiTokenPolicies say of the token (checkPolicies).
	policy policyFinding
	secret *corev1.Secret
	view   tokenView
	state  secretState
	act    action
	// b blocks the token's delivery and says why in Ready (zero: nothing).
	b blocker
	// revokedNow: this pass moved the token's hashes out of the verifying set.
	revokedNow bool

	// ended: a step ended the pass; it looks again after requeue (0: on
	// the next event) rather than at the token's next deadline.
	ended   bool
	requeue time.Duration
	// retry, when set, looks again this soon at the latest (a restart
	// target that could not be patched).
	retry time.Duration
	// untouched: the pass ended on a view it could not trust (a cache
	// behind the API server); the status is not recomputed from it.
	untouched bool

	// events and afterWrite are what the pass records once its status,
	// which says the same, is written: a pass that read a stale copy fails
	// at that write and records nothing twice.
	events     []queuedEvent
	afterWrite []func()
}

// step is one step of a pass. It reports ended to end the pass, with
// s.requeue and s.untouched saying how; an error ends it too.
type step func(ctx context.Context, s *pass) (ended bool, err error)

// end ends the pass; it looks again after requeue (0: on the next event).
func (s *pass) end(requeue time.Duration) (bool, error) {
	s.ended, s.requeue = true, requeue
	return true, nil
}

// endUntouched ends the pass without recomputing the status.
func (s *pass) endUntouched(requeue time.Duration) (bool, error) {
	s.untouched = true
	return s.end(requeue)
}

// loadSalt takes the salt the pass works with.
func (r *ApiTokenReconciler) loadSalt(_ context.Context, s *pass) (bool, error) {
	st := r.Salt.State()
	if st == nil {
		return true, errors.New("salt not loaded")
	}
	s.salts, s.hasher = st, st.Hasher()
	return false, nil
}

// parseSpec parses the spec's spans; a spec that does not parse blocks
// the token (InvalidSpec), unless it is revoked.
func (r *ApiTokenReconciler) parseSpec(_ context.Context, s *pass) (bool, error) {
	p, err := parsePolicy(&s.t.Spec)
	s.p = p
	if err != nil && !s.t.Spec.Revoked {
		s.b = blocker{tokensv1alpha1.ReasonInvalidSpec, err.Error()}
		return s.end(0)
	}
	return false, nil
}

// observe reads the token's Secret and decides what the pass does.
func (r *ApiTokenReconciler) observe(ctx context.Context, s *pass) (bool, error) {
	t := s.t
	if t.Spec.ShowOnce != nil {
		// A show-once token has no Secret: none is read, nor written.
		s.act = decideShowOnce(t, saltView{id: s.salts.ID(), replaced: s.salts.Replaces}, s.now)
		return false, nil
	}
	// A token never issued has no Secret yet: trust the cache's miss. Any
	// other token expects its Secret, so a miss is checked on the server.
	expectSecret := t.Status.IssuedAt != nil || t.Status.Phase == tokensv1alpha1.PhaseFailed || t.Status.Verification != nil
	if err := r.observeSecret(ctx, s, expectSecret); err != nil {
		return true, err
	}
	s.act = decide(t, s.p, s.state, saltView{id: s.salts.ID(), replaced: s.salts.Replaces}, s.now)
	return false, nil
}

// carryOut does what observe decided.
func (r *ApiTokenReconciler) carryOut(ctx context.Context, s *pass) (bool, error) {
	switch s.act.kind {
	case actConflict:
		return r.conflict(ctx, s, false, false)
	case actHold:
		return r.holdSalt(ctx, s)
	case actRevoke:
		return false, r.revoke(ctx, s)
	case actPromote:
		r.promote(s, sealedIssuedAt(s.t, s.secret, s.view, s.now))
		_, err := r.syncRendered(ctx, s)
		return false, err
	case actRecover:
		if ended, err := r.recoverRecord(ctx, s); ended || err != nil {
			return ended, err
		}
		_, err := r.syncRendered(ctx, s)
		return false, err
	case actIssue:
		return r.issueToken(ctx, s)
	case actMint:
		return false, r.mintShowOnce(s)
	case actPickUp:
		r.pickUp(s)
		return false, nil
	case actSaltEnded:
		return r.saltEnded(s)
	case actLeakEnded:
		return r.leakEnded(s)
	case actSync:
		if s.secret == nil {
			return false, nil
		}
		// A write of the rendered keys writes the metadata too.
		if wrote, err := r.syncRendered(ctx, s); wrote || err != nil {
			return false, err
		}
		return false, r.syncSecretMetadata(ctx, s.t, s.secret)
	}
	return false, nil
}

// SetupWithManager registers the reconciler: ApiTokens (spec, annotation
// and creation changes), their Secrets, the salt Secret, whose change
// re-queues every ApiToken, and with Policies ApiTokenPolicies (every
// ApiToken) and the labels of namespaces (their ApiTokens).
func (r *ApiTokenReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&tokensv1alpha1.ApiToken{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, firstUseRecorded, leakRevocationRecorded))).
		Owns(&corev1.Secret{}, builder.WithPredicates(notCreated)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.tokensForSalt), builder.WithPredicates(predicate.NewPredicateFuncs(r.isSaltSecret), saltDecisionChanged))
	if r.Policies {
		b = b.Watches(&tokensv1alpha1.ApiTokenPolicy{}, handler.EnqueueRequestsFromMapFunc(r.tokensForPolicy), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
			Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.tokensForNamespace), builder.WithPredicates(predicate.LabelChangedPredicate{}, notCreated))
	}
	return b.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(1, r.MaxConcurrentReconciles)}).
		Named("apitoken").
		Complete(r)
}

// notCreated passes an owned Secret's updates and deletions, not its
// creation: a creation is the echo of the pass that wrote the Secret and
// recorded its token (a second pass would find nothing to do, often from a
// cache that has not seen the status yet), or, at start, the listing of a
// Secret whose ApiToken is queued by its own listing. A Secret planted
// under an ApiToken's name is found by the pass that tries to create it.
var notCreated = predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return false }}

// firstUseRecorded passes the status update that records a first use of
// the current token (status.verification.firstUsedAt, written by the auth
// endpoint's usage writers), which ends the previous token's grace: the
// pass drops the previous hash and says so (GraceEnded).
var firstUseRecorded = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*tokensv1alpha1.ApiToken)
		cur, okNew := e.ObjectNew.(*tokensv1alpha1.ApiToken)
		if !okOld || !okNew || cur.Status.Verification == nil || cur.Status.Verification.FirstUsedAt == nil {
			return false
		}
		ov := old.Status.Verification
		return ov == nil || ov.FirstUsedAt == nil || !ov.FirstUsedAt.Equal(cur.Status.Verification.FirstUsedAt)
	},
}

// saltDecisionChanged passes the salt Secret's events that can change what
// a token's pass decides: a new Secret, or a change of its salts or of
// the salts it names as replaced. Its deletion changes nothing (the salt
// stays in memory), nor do its other annotations: re-queueing every
// ApiToken for those would only make passes on stale copies.
var saltDecisionChanged = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return true },
	DeleteFunc: func(event.DeleteEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*corev1.Secret)
		cur, okNew := e.ObjectNew.(*corev1.Secret)
		if !okOld || !okNew {
			return true
		}
		a, errA := salt.FromSecret(old)
		b, errB := salt.FromSecret(cur)
		if errA != nil || errB != nil {
			return errA == nil || errB == nil
		}
		aID, aUntil, _ := a.Overlap()
		bID, bUntil, _ := b.Overlap()
		return a.ID() != b.ID() || aID != bID || !aUntil.Equal(bUntil) || !slices.Equal(a.Replaced(), b.Replaced())
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func (r *ApiTokenReconciler) isSaltSecret(o client.Object) bool {
	ref := r.Salt.Ref()
	return o.GetNamespace() == ref.Namespace && o.GetName() == ref.Name
}

// tokensForSalt installs the salt Secret's salt and returns every ApiToken;
// each pass compares the token's record with the salt's identifier and
// re-issues it if the salt changed. It does not rely on Observe reporting
// the change, because the auth endpoint may have observed it first.
func (r *ApiTokenReconciler) tokensForSalt(ctx context.Context, o client.Object) []reconcile.Request {
	secret, ok := o.(*corev1.Secret)
	if !ok {
		return nil
	}
	if r.Salt.Observe(secret) {
		logf.FromContext(ctx).Info("Salt changed; checking every ApiToken", "secret", klog.KObj(secret), "saltID", r.Salt.State().ID())
	}
	var list tokensv1alpha1.ApiTokenList
	if err := r.List(ctx, &list); err != nil {
		logf.FromContext(ctx).Error(err, "Failed to list ApiTokens after a salt change")
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
	}
	return reqs
}
