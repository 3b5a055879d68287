// Package controllers holds the ApiToken reconciler: it delivers tokens into
// Secrets, keeps their keyed hashes in status, and expires, regenerates,
// rotates and revokes them.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
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

	// mismatchLogged holds the "recorded/current" salt ID pairs already
	// logged, so that a lost salt is one error line, not one per token.
	mismatchLogged sync.Map
}

// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokens,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokens/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tokens.apitoken.dev,resources=apitokens/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one ApiToken's Secret and status in line with its spec.
// Every pass re-derives the world; see decide for the order of checks.
func (r *ApiTokenReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	log := logf.FromContext(ctx)
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
	now := r.Clock.Now()
	base := t.DeepCopy()
	var b blocker

	defer func() {
		if retErr != nil {
			return
		}
		if err := r.patchStatus(ctx, t, base); err != nil {
			retErr = err
			result = ctrl.Result{}
		}
	}()

	// A revocation is recorded before anything else is attempted: neither
	// the Secret, nor the salt, nor the rest of the spec can delay it.
	revokedNow := false
	if t.Spec.Revoked {
		var err error
		if revokedNow, err = r.recordRevocation(ctx, t, base); err != nil {
			return ctrl.Result{}, err
		}
	}

	st := r.Salt.State()
	if st == nil {
		return ctrl.Result{}, errors.New("salt not loaded")
	}
	hasher := st.Hasher()

	p, err := parsePolicy(&t.Spec)
	if err != nil && !t.Spec.Revoked {
		b = blocker{tokensv1alpha1.ReasonInvalidSpec, err.Error()}
		r.finish(t, base, p, b, now)
		return ctrl.Result{}, nil
	}

	// A token never issued has no Secret yet: trust the cache's miss. Any
	// other token expects its Secret, so a miss is checked on the server.
	expectSecret := t.Status.IssuedAt != nil || t.Status.Phase == tokensv1alpha1.PhaseFailed || t.Status.Verification != nil
	secret, view, state, err := r.observeSecret(ctx, t, st, expectSecret)
	if err != nil {
		return ctrl.Result{}, err
	}

	act := decide(t, p, state, saltView{id: st.ID(), replaced: st.Replaces}, now)
	switch act.kind {
	case actConflict:
		return r.conflict(ctx, t, base, p, st, act, false, false, now)
	case actHold:
		recorded := recordedSaltID(t, secret)
		b = blocker{tokensv1alpha1.ReasonSaltMismatch, r.saltMismatchMessage(recorded, st)}
		first := readyReason(base) != tokensv1alpha1.ReasonSaltMismatch
		r.finish(t, base, p, b, now)
		// Recorded first (with the optimistic lock): a pass that read a
		// stale copy fails here and records no second Event.
		if err := r.patchStatus(ctx, t, base); err != nil {
			return ctrl.Result{}, err
		}
		if first {
			r.event(t, corev1.EventTypeWarning, b.reason, b.message)
		}
		r.logSaltMismatch(ctx, t, recorded, st)
		// The salt Secret's next change re-queues every ApiToken.
		return ctrl.Result{}, nil
	case actRevoke:
		if err := r.emptySecret(ctx, t, secret, view, state); err != nil {
			return ctrl.Result{}, err
		}
		if revokedNow {
			// The record's patch moved base forward, so finish sees no transition: say it here.
			msg := "The token was revoked and removed from Secret " + t.SecretName()
			if state == secretForeign {
				msg = "The token was revoked; Secret " + t.SecretName() + " is not owned by this ApiToken and was left as it is"
			}
			r.event(t, corev1.EventTypeNormal, tokensv1alpha1.ReasonRevoked, msg)
		}
	case actPromote:
		r.promote(t, p, st, sealedIssuedAt(t, secret, view, now), now)
	case actRecover:
		// Right after a first token is issued, the cache may still hold the
		// ApiToken without the status that records it: ask the API server
		// before rebuilding anything (and before an Event says so).
		stale, err := r.staleRecord(ctx, req.NamespacedName)
		if err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		if stale {
			*base = *t.DeepCopy()     // nothing to write from this stale copy
			return ctrl.Result{}, nil // the status update on its way re-queues it
		}
		r.recover(t, secret, view, hasher.SaltID(), now)
	case actIssue:
		if cutsUnasked(act.reason) || pendingRecorded(t) {
			// Destructive, or it would overwrite the record of a token
			// that may be in the Secret: taken again on a live view.
			live, ok, err := r.confirmLive(ctx, t, p, st, act)
			if err != nil {
				return ctrl.Result{}, err
			}
			if !ok {
				log.V(1).Info("Cache was behind the API server; not issuing on it", "apitoken", klog.KObj(t), "reason", act.reason)
				return ctrl.Result{RequeueAfter: staleViewRetry}, nil
			}
			if r.APIReader != nil {
				secret = live
			}
		}
		if cutsUnasked(act.reason) {
			allowed, err := r.guardCut(ctx, t, base, act.reason)
			if err != nil {
				return ctrl.Result{}, err
			}
			if !allowed {
				// A regenerate request or a repaired Secret re-queues it.
				return ctrl.Result{}, r.holdCut(ctx, t, base, p, act.reason, now)
			}
		}
		issued := lifetimeStart(t, act.reason, now)
		err := r.issue(ctx, t, base, secret, act.reason, hasher, issued)
		if errors.Is(err, errSecretExists) {
			// Not in the cache, yet there: someone else's, or ours with
			// its labels stripped. Look on the API server.
			if secret, _, state, err = r.observeSecret(ctx, t, st, true); err != nil {
				return ctrl.Result{}, err
			}
			if state == secretForeign {
				// Seen on the API server; an unasked cut was guarded above.
				return r.conflict(ctx, t, base, p, st, act, true, cutsUnasked(act.reason), now)
			}
			err = r.issue(ctx, t, base, secret, act.reason, hasher, issued)
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		r.promote(t, p, st, issued, now)
	case actSync:
		if secret != nil {
			if err := r.syncSecretMetadata(ctx, t, secret); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	r.finish(t, base, p, b, now)
	log.V(1).Info("Reconciled ApiToken", "apitoken", klog.KObj(t), "phase", t.Status.Phase, "action", act.reason)
	if next := nextDeadline(t, p, now); !next.IsZero() {
		return ctrl.Result{RequeueAfter: next.Sub(now)}, nil
	}
	return ctrl.Result{}, nil
}

// staleRecord reports whether the API server holds a verification record
// that the cached ApiToken lacks. Without a reader around the cache (unit
// tests), the cache is the truth.
func (r *ApiTokenReconciler) staleRecord(ctx context.Context, key types.NamespacedName) (bool, error) {
	if r.APIReader == nil {
		return false, nil
	}
	var live tokensv1alpha1.ApiToken
	if err := r.APIReader.Get(ctx, key, &live); err != nil {
		return false, err
	}
	return live.Status.Verification != nil && live.Status.Verification.Hash != "", nil
}

// finish computes the status and records the Events and metrics of phase
// transitions. The status itself is written by Reconcile's deferred patch.
func (r *ApiTokenReconciler) finish(t, base *tokensv1alpha1.ApiToken, p policy, b blocker, now time.Time) {
	computeStatus(t, p, b, diedAs(t, base, now), now)
	if t.Status.Phase != base.Status.Phase {
		switch t.Status.Phase {
		case tokensv1alpha1.PhaseExpired:
			r.event(t, corev1.EventTypeWarning, tokensv1alpha1.ReasonExpired, "The token expired at "+t.Status.ExpiresAt.UTC().Format(time.RFC3339))
		case tokensv1alpha1.PhaseRevoked:
			r.event(t, corev1.EventTypeNormal, tokensv1alpha1.ReasonRevoked, "The token was revoked and removed from Secret "+t.SecretName())
		case tokensv1alpha1.PhaseInactive:
			r.event(t, corev1.EventTypeWarning, tokensv1alpha1.ReasonInactive, "The token was not used for "+t.Spec.IdleTimeout+" and is refused until it is regenerated")
		case tokensv1alpha1.PhaseFailed:
			if b.reason == tokensv1alpha1.ReasonInvalidSpec {
				r.event(t, corev1.EventTypeWarning, b.reason, b.message)
			}
		}
	}
	if b.reason != tokensv1alpha1.ReasonInvalidSpec {
		r.recordGrant(t, base)
	}
	wasSoon := conditionTrue(base, tokensv1alpha1.ConditionExpiringSoon)
	if !wasSoon && conditionTrue(t, tokensv1alpha1.ConditionExpiringSoon) {
		r.event(t, corev1.EventTypeWarning, tokensv1alpha1.ReasonExpiringSoon, "The token expires at "+t.Status.ExpiresAt.UTC().Format(time.RFC3339))
	}
	var exp, soon float64
	if st := &t.Status; st.ExpiresAt != nil {
		exp = float64(st.ExpiresAt.Unix())
		soon = exp
		if st.IssuedAt != nil {
			soon = float64(token.ExpiringSoonAt(st.IssuedAt.Time, st.ExpiresAt.Time).Unix())
		}
	}
	perToken := r.TokenMetrics == TokenMetricsAll ||
		(r.TokenMetrics != TokenMetricsNone && t.Status.Phase == tokensv1alpha1.PhaseActive && conditionTrue(t, tokensv1alpha1.ConditionExpiringSoon))
	recordMetrics(t.Namespace, t.Name, t.Spec.Type, t.Status.Phase, exp, soon, t.Status.ExpiresAt != nil, perToken)
	recordSaltHeld(t.Namespace, t.Name, b.reason == tokensv1alpha1.ReasonSaltMismatch)
	recordCutHeld(t.Namespace, t.Name, b.reason == tokensv1alpha1.ReasonCutHeld)
}

// readyReason is the reason of t's Ready condition, or "".
func readyReason(t *tokensv1alpha1.ApiToken) string {
	if c := meta.FindStatusCondition(t.Status.Conditions, tokensv1alpha1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// recordedSaltID is the salt ID t's record names, else its Secret's.
func recordedSaltID(t *tokensv1alpha1.ApiToken, secret *corev1.Secret) string {
	if v := t.Status.Verification; v != nil && v.Hash != "" {
		return v.SaltID
	}
	if secret != nil {
		return secret.Annotations[tokensv1alpha1.SaltIDAnnotation]
	}
	return ""
}

// saltMismatchMessage says which salt a token records, which one the
// operator holds (by ID: never a salt), and the two ways forward.
func (r *ApiTokenReconciler) saltMismatchMessage(recorded string, st *salt.State) string {
	ref := r.Salt.Ref()
	return fmt.Sprintf("The token's hash was made with salt ID %s, but the operator's salt (Secret %s) is salt ID %s and does not name %s as replaced. "+
		"Nothing is re-issued: restore the salt Secret from your backup (the token then verifies again), or, if that salt is lost for good, "+
		"acknowledge it and every such token is re-issued: kubectl -n %s annotate secret %s %s=%s --overwrite (list every lost ID, comma-separated; docs/operations.md)",
		recorded, ref, st.ID(), recorded, ref.Namespace, ref.Name, salt.ReplacesAnnotation, recorded)
}

// logSaltMismatch logs, once per recorded and current salt pair, that
// tokens are held; the salt IDs are not secret, the salts never appear.
func (r *ApiTokenReconciler) logSaltMismatch(ctx context.Context, t *tokensv1alpha1.ApiToken, recorded string, st *salt.State) {
	if _, seen := r.mismatchLogged.LoadOrStore(recorded+"/"+st.ID(), true); seen {
		return
	}
	logf.FromContext(ctx).Error(nil, "ApiTokens record a salt that the salt Secret neither holds nor names as replaced; holding every such token (nothing is re-issued) until the salt is restored or its loss acknowledged (docs/operations.md)",
		"apitoken", klog.KObj(t), "recordedSaltID", recorded, "saltID", st.ID(), "saltSecret", r.Salt.Ref())
}

// recordGrant keeps status.granted in step with the spec, and records a
// PermissionsChanged Event when a live token's type, scopes or audience
// changed: a change of power is visible, not only in the spec's history.
func (r *ApiTokenReconciler) recordGrant(t, base *tokensv1alpha1.ApiToken) {
	g := &tokensv1alpha1.Granted{Type: t.Spec.Type, Scopes: t.Spec.Scopes, Audience: t.Spec.Audience}
	if g.Audience == "" {
		g.Audience = tokensv1alpha1.ContentAPI
	}
	prev := base.Status.Granted
	if prev != nil && !equality.Semantic.DeepEqual(prev, g) && t.Status.Phase == tokensv1alpha1.PhaseActive {
		r.event(t, corev1.EventTypeNormal, tokensv1alpha1.ReasonPermissionsChanged,
			"The token's permissions changed from "+describeGrant(prev)+" to "+describeGrant(g))
	}
	t.Status.Granted = g
}

// describeGrant says what a grant is, as an Event reads it:
// "custom [articles:read orders:*] for content-api".
func describeGrant(g *tokensv1alpha1.Granted) string {
	s := string(g.Type)
	if len(g.Scopes) > 0 {
		s += " [" + strings.Join(g.Scopes, " ") + "]"
	}
	return s + " for " + string(g.Audience)
}

func conditionTrue(t *tokensv1alpha1.ApiToken, typ string) bool {
	for _, c := range t.Status.Conditions {
		if c.Type == typ {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// observeSecret fetches the token's Secret and classifies it. With
// uncached, a Secret missing from the label-filtered cache is looked up on
// the API server, so that a foreign Secret, or one of ours whose labels
// were stripped, is seen. The view says what the Secret's token is, without
// the token (see digestToken).
func (r *ApiTokenReconciler) observeSecret(ctx context.Context, t *tokensv1alpha1.ApiToken, st *salt.State, uncached bool) (*corev1.Secret, tokenView, secretState, error) {
	key := types.NamespacedName{Namespace: t.Namespace, Name: t.SecretName()}
	secret := &corev1.Secret{}
	err := r.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) && uncached && r.APIReader != nil {
		secret, err = r.readSecretLive(ctx, key, t)
	}
	return r.classifySecret(ctx, t, st, secret, err)
}

// readSecretLive reads the Secret from the API server, metadata first: a
// foreign Secret's data is never read (it comes back with metadata only).
func (r *ApiTokenReconciler) readSecretLive(ctx context.Context, key types.NamespacedName, t *tokensv1alpha1.ApiToken) (*corev1.Secret, error) {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.APIReader.Get(ctx, key, meta); err != nil {
		return nil, err
	}
	if !controlledBy(meta, t) {
		return &corev1.Secret{ObjectMeta: meta.ObjectMeta}, nil
	}
	secret := &corev1.Secret{}
	return secret, r.APIReader.Get(ctx, key, secret)
}

// classifySecret says what secret (read with err) is to t: absent, foreign,
// or what its token matches in t's record.
func (r *ApiTokenReconciler) classifySecret(ctx context.Context, t *tokensv1alpha1.ApiToken, st *salt.State, secret *corev1.Secret, err error) (*corev1.Secret, tokenView, secretState, error) {
	if apierrors.IsNotFound(err) {
		return nil, tokenView{}, secretAbsent, nil
	}
	if err != nil {
		return nil, tokenView{}, secretAbsent, fmt.Errorf("reading Secret %s/%s: %w", t.Namespace, t.SecretName(), err)
	}
	if !controlledBy(secret, t) {
		return secret, tokenView{}, secretForeign, nil
	}
	view, err := r.viewOf(ctx, secret, t, st)
	if err != nil {
		return nil, tokenView{}, secretAbsent, err
	}
	state := classifyToken(view, t.Status.Verification)
	issuedAt := secret.Annotations[tokensv1alpha1.IssuedAtAnnotation]
	if state == secretWellFormed && (!plausibleIssuedAt(issuedAt, r.Clock.Now()) || !view.sealed) {
		state = secretUntrusted
		if id := secret.Annotations[tokensv1alpha1.SaltIDAnnotation]; id != "" && id != st.ID() && !st.Replaces(id) {
			state = secretUnknownSalt
		}
	}
	return secret, view, state, nil
}

// viewOf returns the view of the token of secret, controlled by t: the
// cached digest when it was made under the current salt, else computed
// from the token, read from the API server when the cache holds a digest
// made under another salt (right after a salt change).
func (r *ApiTokenReconciler) viewOf(ctx context.Context, secret *corev1.Secret, t *tokensv1alpha1.ApiToken, st *salt.State) (tokenView, error) {
	v, digested, ok := cachedView(secret, st.ID())
	if ok {
		return v, nil
	}
	if digested {
		if r.APIReader == nil {
			return v, fmt.Errorf("the Secret %s/%s is cached without its token, and there is no reader to fetch it", secret.Namespace, secret.Name)
		}
		live := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(secret), live); err != nil {
			return v, fmt.Errorf("reading Secret %s/%s: %w", secret.Namespace, secret.Name, err)
		}
		if !controlledBy(live, t) || live.ResourceVersion != secret.ResourceVersion {
			return v, fmt.Errorf("the Secret %s/%s changed since it was cached; retrying", secret.Namespace, secret.Name)
		}
		secret = live
	}
	return viewToken(string(secret.Data[tokensv1alpha1.SecretTokenKey]), secret, t.UID, st.Hasher()), nil
}

// issue mints a token and delivers it, in the order that keeps a valid
// token in the Secret at every step: (1) record the new hash as pending,
// so that it verifies before anyone can read it; (2) write the Secret. The
// caller then promotes the pending hash (3, the deferred status patch). A
// failure after (1) leaves the old token in the Secret and verifying; a
// failure after (2) leaves the new one, which verifies as pending and is
// promoted on the next pass.
func (r *ApiTokenReconciler) issue(ctx context.Context, t, base *tokensv1alpha1.ApiToken, secret *corev1.Secret, reason string, h *token.Hasher, issued time.Time) error {
	generate := r.Generate
	if generate == nil {
		generate = token.Generate
	}
	tok, err := generate()
	if err != nil {
		return fmt.Errorf("generating token: %w", err)
	}
	if t.Status.Verification == nil {
		t.Status.Verification = &tokensv1alpha1.Verification{}
	}
	v := t.Status.Verification
	first := v.Hash == "" && v.RevokedHash == "" && secret == nil
	v.PendingHash = h.Hash(tok).Encode()
	v.PendingReason = reason
	v.PendingRegenerate = t.Annotations[tokensv1alpha1.RegenerateAnnotation]
	// A first token has nothing to lose: if the status write after the
	// Secret fails, the next pass rebuilds the record from the Secret
	// (actRecover). Skipping step (1) saves one write per new token. A
	// token that replaces a revoked one is not first: a record with a
	// revoked hash is never rebuilt from the Secret.
	if !first {
		if err := r.patchStatus(ctx, t, base); err != nil {
			return err
		}
	}
	return r.writeSecret(ctx, t, secret, tok, issued, h)
}

// promote makes the pending hash current: the replaced hash stays valid
// for the grace period (from now, never past its own expiry, and not at all
// once expired: token.PreviousValidUntil) when the reason allows it (for a
// salt rotation, the planned rotation's overlap: saltGrace), the
// regenerate request it answers is marked handled, and issuedAt is set to
// issued (see lifetimeStart).
func (r *ApiTokenReconciler) promote(t *tokensv1alpha1.ApiToken, p policy, salts *salt.State, issued, now time.Time) {
	st := &t.Status
	v := st.Verification
	reason := v.PendingReason
	v.PreviousHash, v.PreviousValidUntil = "", nil
	var grace time.Duration
	switch {
	case keepsPrevious(reason):
		grace = p.Grace
	case reason == tokensv1alpha1.ReasonSaltRotated:
		previousID, until, _ := salts.Overlap()
		grace = saltGrace(v.SaltID, previousID, until, now, r.MaxSaltOverlap)
	}
	if grace > 0 && v.Hash != "" {
		end, finite := currentEnd(t, p)
		if until, keep := lifecycle.PreviousValidUntil(now, grace, end, finite); keep {
			v.PreviousHash, v.PreviousValidUntil = v.Hash, &metav1.Time{Time: until}
		}
	}
	v.Hash, v.SaltID = v.PendingHash, salts.ID()
	if v.PendingRegenerate != "" {
		st.LastHandledRegenerate = v.PendingRegenerate
	}
	v.PendingHash, v.PendingReason, v.PendingRegenerate = "", "", ""
	if reason != tokensv1alpha1.ReasonGenerated {
		replaced := metav1.NewTime(now.Truncate(time.Second))
		st.LastRegeneratedAt = &replaced
	}
	at := metav1.NewTime(issued.Truncate(time.Second))
	st.IssuedAt = &at
	regenerations.WithLabelValues(reason).Inc()
	eventType := corev1.EventTypeNormal
	msg := "Issued a new token into Secret " + t.SecretName()
	switch {
	case reason == tokensv1alpha1.ReasonSaltRotated && v.PreviousValidUntil != nil:
		msg = "The operator's salt was rotated (planned); " + msg + "; the replaced token verifies until " + v.PreviousValidUntil.UTC().Format(time.RFC3339)
	case reason == tokensv1alpha1.ReasonSecretConflict:
		eventType = corev1.EventTypeWarning
		msg = "The token was cut while its Secret was not owned by this ApiToken; " + msg
	case reason == tokensv1alpha1.ReasonSecretTampered, reason == tokensv1alpha1.ReasonSecretMissing, reason == tokensv1alpha1.ReasonSaltRotated, reason == tokensv1alpha1.ReasonSecretUntrusted:
		eventType = corev1.EventTypeWarning
		msg = reasonMessages[reason] + "; " + msg
	}
	if reason == tokensv1alpha1.ReasonGenerated && r.SkipGeneratedEvents {
		return
	}
	r.event(t, eventType, reason, msg)
}

var reasonMessages = map[string]string{
	tokensv1alpha1.ReasonSecretTampered: "The Secret's token no longer matched the recorded hash",
	tokensv1alpha1.ReasonSecretMissing:  "The Secret was deleted",
	tokensv1alpha1.ReasonSecretConflict: "The Secret is no longer owned by this ApiToken (its owner reference was removed or replaced)",
	tokensv1alpha1.ReasonSaltRotated:    "The salt this token was made with was replaced with no overlap (an emergency rotation, or a lost salt acknowledged), which invalidated it",
	tokensv1alpha1.ReasonSecretUntrusted: "The verification record was lost and the Secret's token was not adopted: " +
		"its " + tokensv1alpha1.IssuedAtAnnotation + " annotation is missing or in the future",
}

// recover rebuilds a lost verification record from the Secret's token,
// keeping the token and, if the Secret says so, its issue time.
func (r *ApiTokenReconciler) recover(t *tokensv1alpha1.ApiToken, secret *corev1.Secret, view tokenView, saltID string, now time.Time) {
	t.Status.Verification = &tokensv1alpha1.Verification{Hash: view.digest.Encode(), SaltID: saltID}
	at := metav1.NewTime(sealedIssuedAt(t, secret, view, now).Truncate(time.Second))
	t.Status.IssuedAt = &at
	r.event(t, corev1.EventTypeNormal, tokensv1alpha1.ReasonRecovered, "Rebuilt the verification record from Secret "+secret.Name)
}

// currentEnd returns when t's current token ends, as its status records
// it (finite false: never): at once if it already ended (phase Expired or
// Inactive) or has no issue time, else the earliest of the expiresAt
// recorded for it, its issue time plus the duration, and its idle deadline.
// The recorded expiry counts because a spec edited since (a longer
// duration) must not lengthen the life of a token being replaced.
func currentEnd(t *tokensv1alpha1.ApiToken, p policy) (time.Time, bool) {
	return lifecycle.CurrentEnd(t, p)
}

// sealedIssuedAt reads the issue time the Secret carries, if the
// operator's seal over it and the token verifies (view.sealed); otherwise
// the recorded issuedAt (never later than what was), or now for a first
// token. A Secret writer cannot choose a token's issue time.
func sealedIssuedAt(t *tokensv1alpha1.ApiToken, secret *corev1.Secret, view tokenView, now time.Time) time.Time {
	if secret != nil && view.sealed {
		a := secret.Annotations[tokensv1alpha1.IssuedAtAnnotation]
		if at, err := time.Parse(time.RFC3339, a); err == nil && plausibleIssuedAt(a, now) {
			return at
		}
	}
	if t.Status.IssuedAt != nil && t.Status.IssuedAt.Time.Before(now) {
		return t.Status.IssuedAt.Time
	}
	return now
}

// recordRevocation moves every hash of t out of the verifying set and
// writes the status at once: the revoked token (the current one, else the
// pending one) is kept as revokedHash, dead for good, so that the auth
// endpoint refuses it as "revoked" however quickly spec.revoked is set
// back and whatever happens to the Secret; the other hashes are dropped.
// issuedAt and expiresAt go with it: no token is current, and the one
// issued when revoked is set back to false starts a new lifetime. It
// reports whether a hash was moved (the revocation happened now).
func (r *ApiTokenReconciler) recordRevocation(ctx context.Context, t, base *tokensv1alpha1.ApiToken) (bool, error) {
	st := &t.Status
	v := st.Verification
	if v == nil {
		v = &tokensv1alpha1.Verification{}
	}
	moved := recordsVerifying(v)
	if !moved && st.IssuedAt == nil {
		return false, nil
	}
	revoked := v.RevokedHash
	switch {
	case v.Hash != "":
		revoked = v.Hash
	case v.PendingHash != "":
		revoked = v.PendingHash
	}
	st.Verification = &tokensv1alpha1.Verification{SaltID: v.SaltID, RevokedHash: revoked}
	st.IssuedAt, st.ExpiresAt = nil, nil
	st.Phase = tokensv1alpha1.PhaseRevoked
	return moved, r.patchStatus(ctx, t, base)
}

// emptySecret removes a revoked token from its Secret, if the Secret is
// this ApiToken's (state is what observeSecret said): a Secret it does not
// own is never written.
func (r *ApiTokenReconciler) emptySecret(ctx context.Context, t *tokensv1alpha1.ApiToken, secret *corev1.Secret, view tokenView, state secretState) error {
	if secret == nil || state == secretForeign || view.empty {
		return nil
	}
	return r.writeSecret(ctx, t, secret, "", time.Time{}, nil)
}

// desiredMetadata returns the Secret's labels and annotations: the
// template's, then the operator's own, which win. A template key that a
// Secret replicator reads (tokensv1alpha1.SecretReplicatorKey: the
// webhook refuses them) is never copied, so that no token leaves its
// namespace where the webhook did not run.
func desiredMetadata(t *tokensv1alpha1.ApiToken) (labels, annotations map[string]string) {
	labels, annotations = map[string]string{}, map[string]string{}
	if tpl := t.Spec.SecretTemplate; tpl != nil {
		for k, v := range tpl.Labels {
			if fromTemplate(k, false) {
				labels[k] = v
			}
		}
		for k, v := range tpl.Annotations {
			if fromTemplate(k, true) {
				annotations[k] = v
			}
		}
	}
	labels[tokensv1alpha1.ManagedByLabel] = tokensv1alpha1.ManagedByValue
	labels[tokensv1alpha1.ApiTokenLabel] = t.Name
	return labels, annotations
}

// writeSecret creates or updates the Secret with tok (empty: revoked) and
// the desired metadata, owned by t.
func (r *ApiTokenReconciler) writeSecret(ctx context.Context, t *tokensv1alpha1.ApiToken, secret *corev1.Secret, tok string, issued time.Time, h *token.Hasher) error {
	create := secret == nil
	if create {
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: t.SecretName()}, Type: corev1.SecretTypeOpaque}
	} else {
		var err error
		if secret, err = r.untrimmed(ctx, t, secret); err != nil {
			return err
		}
	}
	applyMetadata(t, secret)
	delete(secret.Annotations, digestKey) // the cache's, never written
	delete(secret.Annotations, tokensv1alpha1.SealAnnotation)
	delete(secret.Annotations, tokensv1alpha1.SaltIDAnnotation)
	if !issued.IsZero() {
		at := issued.UTC().Truncate(time.Second).Format(time.RFC3339)
		secret.Annotations[tokensv1alpha1.IssuedAtAnnotation] = at
		secret.Annotations[tokensv1alpha1.SealAnnotation] = sealOf(h, t, at, tok)
		secret.Annotations[tokensv1alpha1.SaltIDAnnotation] = h.SaltID()
	}
	secret.Data = map[string][]byte{tokensv1alpha1.SecretTokenKey: []byte(tok)}
	if err := controllerutil.SetControllerReference(t, secret, r.Scheme); err != nil {
		return err
	}
	var err error
	if create {
		err = r.Create(ctx, secret)
	} else {
		err = r.Update(ctx, secret)
	}
	if create && apierrors.IsAlreadyExists(err) {
		return errSecretExists
	}
	if err != nil {
		return fmt.Errorf("writing Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return nil
}

// untrimmed returns secret, or, when it is a cached copy whose metadata was
// trimmed (a Secret writer made it larger than the cache keeps, see
// digestToken), the Secret read from the API server: a write must keep
// what others added. The live Secret must be the one the pass decided on.
func (r *ApiTokenReconciler) untrimmed(ctx context.Context, t *tokensv1alpha1.ApiToken, secret *corev1.Secret) (*corev1.Secret, error) {
	if !trimmed(secret) {
		return secret, nil
	}
	if r.APIReader == nil {
		return nil, fmt.Errorf("the Secret %s/%s is cached without its metadata, and there is no reader to fetch it", secret.Namespace, secret.Name)
	}
	live := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(secret), live); err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	if !controlledBy(live, t) || live.ResourceVersion != secret.ResourceVersion {
		return nil, fmt.Errorf("the Secret %s/%s changed since it was cached; retrying", secret.Namespace, secret.Name)
	}
	return live, nil
}

// sealOf is the Secret's seal of tok issued at (RFC 3339) for t.
func sealOf(h *token.Hasher, t *tokensv1alpha1.ApiToken, at, tok string) string {
	return h.Seal(string(t.UID), at, tok)
}

// errSecretExists: the Secret was created by someone else meanwhile, or
// lives outside the cache.
var errSecretExists = errors.New("the Secret already exists")

// applyMetadata sets the desired labels and annotations on secret, keeping
// keys others added.
//
// Keys the template set before and no longer lists are removed: the
// Secret's annotation tokens.apitoken.dev/template-keys remembers which
// keys came from the template, so keys added by others stay.
func applyMetadata(t *tokensv1alpha1.ApiToken, secret *corev1.Secret) {
	labels, annotations := desiredMetadata(t)
	if secret.Labels == nil {
		secret.Labels = map[string]string{}
	}
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	prevLabels, prevAnnotations := parseTemplateKeys(secret.Annotations[tokensv1alpha1.TemplateKeysAnnotation])
	for _, k := range prevLabels {
		if _, keep := labels[k]; !keep {
			delete(secret.Labels, k)
		}
	}
	for _, k := range prevAnnotations {
		if _, keep := annotations[k]; !keep && !operatorAnnotation(k) {
			delete(secret.Annotations, k)
		}
	}
	for k, v := range labels {
		secret.Labels[k] = v
	}
	for k, v := range annotations {
		secret.Annotations[k] = v
	}
	if keys := formatTemplateKeys(t.Spec.SecretTemplate); keys != "" {
		secret.Annotations[tokensv1alpha1.TemplateKeysAnnotation] = keys
	} else {
		delete(secret.Annotations, tokensv1alpha1.TemplateKeysAnnotation)
	}
}

// operatorAnnotation reports whether k is an annotation the operator
// writes on the Secret itself (issue time, seal, salt ID, template keys):
// a template never sets nor removes one.
func operatorAnnotation(k string) bool {
	switch k {
	case tokensv1alpha1.IssuedAtAnnotation, tokensv1alpha1.SealAnnotation, tokensv1alpha1.SaltIDAnnotation, tokensv1alpha1.TemplateKeysAnnotation:
		return true
	}
	return false
}

// fromTemplate reports whether the template's label (or, with annotation,
// annotation) key k is copied onto the Secret: never one of the
// operator's own annotations, nor a key a Secret replicator reads.
func fromTemplate(k string, annotation bool) bool {
	return (!annotation || !operatorAnnotation(k)) && tokensv1alpha1.SecretReplicatorKey(k) == ""
}

// formatTemplateKeys lists the template's keys as "l:<key>" and "a:<key>",
// sorted, separated by commas (label and annotation keys hold no comma).
func formatTemplateKeys(tpl *tokensv1alpha1.SecretTemplate) string {
	if tpl == nil {
		return ""
	}
	keys := make([]string, 0, len(tpl.Labels)+len(tpl.Annotations))
	for k := range tpl.Labels {
		if fromTemplate(k, false) {
			keys = append(keys, "l:"+k)
		}
	}
	for k := range tpl.Annotations {
		if fromTemplate(k, true) {
			keys = append(keys, "a:"+k)
		}
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

func parseTemplateKeys(s string) (labels, annotations []string) {
	for _, k := range strings.Split(s, ",") {
		switch {
		case strings.HasPrefix(k, "l:"):
			labels = append(labels, k[2:])
		case strings.HasPrefix(k, "a:"):
			annotations = append(annotations, k[2:])
		}
	}
	return labels, annotations
}

// syncSecretMetadata patches the Secret's labels and annotations when the
// template's are missing from it (a patch of metadata only: the cached
// Secret holds a digest, not the token).
func (r *ApiTokenReconciler) syncSecretMetadata(ctx context.Context, t *tokensv1alpha1.ApiToken, secret *corev1.Secret) error {
	secret, err := r.untrimmed(ctx, t, secret)
	if err != nil {
		return err
	}
	want := secret.DeepCopy()
	applyMetadata(t, want)
	if equality.Semantic.DeepEqual(want.ObjectMeta, secret.ObjectMeta) {
		return nil
	}
	if err := r.Patch(ctx, want, client.MergeFromWithOptions(secret, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("updating Secret %s/%s metadata: %w", want.Namespace, want.Name, err)
	}
	return nil
}

// patchStatus writes t's status if it differs from base, with an
// optimistic lock, and moves base forward.
func (r *ApiTokenReconciler) patchStatus(ctx context.Context, t, base *tokensv1alpha1.ApiToken) error {
	if equality.Semantic.DeepEqual(base.Status, t.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, t, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patching status: %w", err)
	}
	*base = *t.DeepCopy()
	return nil
}

func (r *ApiTokenReconciler) event(t *tokensv1alpha1.ApiToken, eventType, reason, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(t, nil, eventType, reason, "Reconcile", "%s", note)
	}
}

// SetupWithManager registers the reconciler: ApiTokens (spec, annotation
// and creation changes), their Secrets, and the salt Secret, whose change
// re-queues every ApiToken.
func (r *ApiTokenReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&tokensv1alpha1.ApiToken{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}, builder.WithPredicates(notCreated)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.tokensForSalt), builder.WithPredicates(predicate.NewPredicateFuncs(r.isSaltSecret), saltDecisionChanged)).
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
