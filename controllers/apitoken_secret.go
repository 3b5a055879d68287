package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// observeSecret fetches the token's Secret and classifies it into s
// (secret, view, state). With uncached, a Secret missing from the
// label-filtered cache is looked up on the API server, so that a foreign
// Secret, or one of ours whose labels were stripped, is seen. The view
// says what the Secret's token is, without the token (see digestToken).
func (r *ApiTokenReconciler) observeSecret(ctx context.Context, s *pass, uncached bool) error {
	t := s.t
	key := types.NamespacedName{Namespace: t.Namespace, Name: t.SecretName()}
	secret := &corev1.Secret{}
	err := r.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) && uncached && r.APIReader != nil {
		secret, err = r.readSecretLive(ctx, key, t)
	}
	s.secret, s.view, s.state, err = r.classifySecret(ctx, t, s.salts, secret, err)
	return err
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

// emptySecret removes a revoked token from its Secret, if the Secret is
// this ApiToken's (s.state is what observeSecret said): a Secret it does
// not own is never written.
func (r *ApiTokenReconciler) emptySecret(ctx context.Context, s *pass) error {
	if s.secret == nil || s.state == secretForeign || (s.view.empty && renderingCurrent(s.t, s.p, s.secret, s.view)) {
		return nil
	}
	return r.writeSecret(ctx, s, s.secret, "", time.Time{})
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

// writeSecret creates or updates the Secret of s.t with tok (empty:
// revoked), its renderings (renderData) and the desired metadata, owned by
// s.t.
func (r *ApiTokenReconciler) writeSecret(ctx context.Context, s *pass, secret *corev1.Secret, tok string, issued time.Time) error {
	t, h := s.t, s.hasher
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
	if err := renderData(secret, t, s.p, tok, issued, h); err != nil {
		return err
	}
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
// writes on the Secret itself (issue time, seals, salt ID, template keys):
// a template never sets nor removes one.
func operatorAnnotation(k string) bool {
	switch k {
	case tokensv1alpha1.IssuedAtAnnotation, tokensv1alpha1.SealAnnotation, tokensv1alpha1.SaltIDAnnotation, tokensv1alpha1.TemplateKeysAnnotation,
		tokensv1alpha1.DataSealAnnotation:
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
