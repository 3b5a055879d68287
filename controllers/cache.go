package controllers

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// CacheOptions returns the manager's cache settings: only Secrets
// labelled managed-by apitoken-operator (the token Secrets and the salt)
// are cached, and no object keeps its managed fields (nor an ApiToken
// kubectl's apply record), so memory grows with ApiTokens, not with the
// cluster's Secrets. With salts set, a token Secret is cached without its
// token (digestToken keeps what the reconciler decides on instead), and a
// labelled Secret that no ApiToken controls as metadata only: anyone may
// label a Secret, and it costs the operator a few hundred bytes, whatever
// it holds. With salt set (an auth-only replica), only the salt Secret
// itself is cached (watched by name, so that its Role can name it in
// resourceNames). tokenView, when set, replaces how ApiTokens are cached
// (an auth-only replica: authserver.IndexTransform, what its index decides
// on).
func CacheOptions(saltRef types.NamespacedName, salts *salt.Store, tokenView toolscache.TransformFunc) cache.Options {
	secrets := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue})}
	// The reconciler reads every field of an ApiToken but the client-side
	// apply record, a copy of the spec.
	tokens := cache.ByObject{Transform: stripApplyRecord}
	if saltRef.Name != "" {
		secrets.Namespaces = map[string]cache.Config{saltRef.Namespace: {}}
		secrets.Field = fields.OneTermEqualSelector("metadata.name", saltRef.Name)
	}
	if tokenView != nil {
		tokens.Transform = tokenView
	}
	if salts != nil {
		secrets.Transform = digestToken(salts)
	}
	return cache.Options{
		ByObject:         map[client.Object]cache.ByObject{&corev1.Secret{}: secrets, &tokensv1alpha1.ApiToken{}: tokens},
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}

// stripApplyRecord drops managed fields and kubectl's
// last-applied-configuration annotation (a copy of the object as last
// applied client-side: about as large as the spec) from a cached object.
func stripApplyRecord(in any) (any, error) {
	out, err := cache.TransformStripManagedFields()(in)
	if o, ok := out.(metav1.Object); ok && err == nil {
		if a := o.GetAnnotations(); a[corev1.LastAppliedConfigAnnotation] != "" {
			delete(a, corev1.LastAppliedConfigAnnotation)
		}
	}
	return out, err
}

// digestKey is the annotation that stands in the cached copy of a token
// Secret for its data. No object on the API server can carry it (an
// annotation key holds no space), so a Secret read from the API server is
// never taken for a cached one, and a write of a cached copy that kept it
// would be refused, not stored.
const digestKey = "apitoken-operator digest"

// Flags of a digest.
const (
	digestEmpty      byte = 1 << iota // no token (revoked)
	digestWellFormed                  // the token parses
	digestSealed                      // the Secret's seal over it, its issue time and its ApiToken holds
	digestTrimmed                     // the cached metadata is the operator's only (trimMetadata)
	digestRendered                    // the Secret's data seal holds over its data (dataSealed)
)

// digestToken returns the Secrets' cache transform. The label selector is
// all the API server can filter a watch on, so anyone who may create a
// Secret can put one in the cache: what the cache holds of a Secret is
// bounded, whatever its writer put in it.
//
//   - The salt Secret is cached as it is.
//   - A Secret controlled by an ApiToken has its token replaced with a
//     digest (annotation digestKey) of what the reconciler decides on,
//     under the salt current at that moment: its keyed hash, whether it is
//     well-formed, whether the Secret's seal holds (bound to the
//     controlling ApiToken's UID, as observeSecret checks it), and whether
//     its data seal holds over its other keys (spec.secretTemplate.data's
//     renderings, which the cache never holds). The
//     operator then holds no token in memory, and a pass that finds the
//     digest made under another salt reads the Secret from the API server.
//     Its other data is dropped, and so is its metadata beyond the
//     operator's own when it is larger than maxCachedMetadata (flag
//     digestTrimmed: a pass that writes it reads it live first).
//   - Any other Secret (carrying the label, owned by no ApiToken) is
//     cached as metadata only (metadataOnly): enough to see that it is
//     there and not owned, which is all a pass decides on it.
//
// The transform is idempotent, as client-go requires: an informer's initial
// sync over a watch-list stream applies it twice to every object (into the
// reflector's temporary store, then again when that store replaces the
// informer's queue), as does a relist. A Secret that already carries the
// digest is its own output (no object from the API server can carry
// digestKey) and is left as it is; digesting it again would digest no
// token and make every Secret look tampered. metadataOnly and
// trimMetadata keep only what they keep, so their output is their own.
func digestToken(salts *salt.Store) toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	saltRef := salts.Ref()
	return func(in any) (any, error) {
		out, err := strip(in)
		s, ok := out.(*corev1.Secret)
		if err != nil || !ok {
			return out, err
		}
		if s.Namespace == saltRef.Namespace && s.Name == saltRef.Name {
			return s, nil
		}
		if _, digested := s.Annotations[digestKey]; digested {
			return s, nil
		}
		owner := apiTokenController(s)
		if owner == nil {
			metadataOnly(s)
			return s, nil
		}
		d := encodeDigest(s, owner.UID, salts.State())
		s.Data = nil
		if metadataSize(s) > maxCachedMetadata {
			d[0] |= digestTrimmed
			trimMetadata(s)
		}
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[digestKey] = string(d)
		return s, nil
	}
}

// maxCachedMetadata bounds the labels, annotations, owner references and
// finalizers the cache keeps of a Secret an ApiToken controls: the
// operator writes a few hundred bytes and a secretTemplate's keys; a
// Secret writer can add up to what the API server stores in one object.
const maxCachedMetadata = 16 << 10

// maxOperatorAnnotation bounds each operator annotation a trimmed Secret
// keeps (the operator writes an RFC 3339 time, a salt ID, a seal).
const maxOperatorAnnotation = 256

// apiTokenController returns o's controller reference if it names an
// ApiToken, else nil.
func apiTokenController(o metav1.Object) *metav1.OwnerReference {
	ref := metav1.GetControllerOfNoCopy(o)
	if ref == nil || ref.Kind != "ApiToken" {
		return nil
	}
	if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != tokensv1alpha1.GroupVersion.Group {
		return nil
	}
	return ref
}

// controlledBy reports whether o's controller is the ApiToken t: the
// reference names an ApiToken and t's UID.
func controlledBy(o metav1.Object, t *tokensv1alpha1.ApiToken) bool {
	ref := apiTokenController(o)
	return ref != nil && ref.UID == t.UID
}

// metadataOnly reduces a Secret no ApiToken controls to what tells it
// apart: its name, identity and versions, type, and the operator's labels;
// no data, annotation, owner reference or finalizer.
func metadataOnly(s *corev1.Secret) {
	s.Data, s.StringData = nil, nil
	s.Labels = operatorLabels(s.Labels)
	s.Annotations, s.OwnerReferences, s.Finalizers = nil, nil, nil
}

// trimMetadata reduces the metadata of a Secret an ApiToken controls to
// the operator's own: its labels, its short annotations, and the
// controller reference.
func trimMetadata(s *corev1.Secret) {
	s.Labels = operatorLabels(s.Labels)
	var kept map[string]string
	for k, v := range s.Annotations {
		if operatorAnnotation(k) && len(v) <= maxOperatorAnnotation {
			if kept == nil {
				kept = map[string]string{}
			}
			kept[k] = v
		}
	}
	s.Annotations = kept
	if ref := metav1.GetControllerOf(s); ref != nil {
		s.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	s.Finalizers = nil
}

// operatorLabels returns the operator's labels among l (nil if none).
func operatorLabels(l map[string]string) map[string]string {
	var out map[string]string
	for _, k := range []string{tokensv1alpha1.ManagedByLabel, tokensv1alpha1.ApiTokenLabel} {
		if v, ok := l[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// metadataSize is roughly what s's labels, annotations, owner references
// and finalizers take.
func metadataSize(s *corev1.Secret) int {
	n := 0
	for k, v := range s.Labels {
		n += len(k) + len(v)
	}
	for k, v := range s.Annotations {
		n += len(k) + len(v)
	}
	for _, r := range s.OwnerReferences {
		n += len(r.APIVersion) + len(r.Kind) + len(r.Name) + len(r.UID) + 8
	}
	for _, f := range s.Finalizers {
		n += len(f)
	}
	return n
}

// trimmed reports whether s is a cached copy whose metadata was trimmed
// (trimMetadata): a write must start from the Secret read live.
func trimmed(s *corev1.Secret) bool {
	d, ok := s.Annotations[digestKey]
	return ok && len(d) > 0 && d[0]&digestTrimmed != 0
}

// encodeDigest is flags, the salt ID's length and the salt ID, then the
// keyed hash; under no salt (not loaded yet) only the flags, which no pass
// trusts.
func encodeDigest(s *corev1.Secret, owner types.UID, st *salt.State) []byte {
	tok := string(s.Data[tokensv1alpha1.SecretTokenKey])
	if st == nil {
		return []byte{0}
	}
	v := viewToken(tok, s, owner, st.Hasher())
	var flags byte
	if v.empty {
		flags |= digestEmpty
	}
	if v.wellFormed {
		flags |= digestWellFormed
	}
	if v.sealed {
		flags |= digestSealed
	}
	if v.rendered {
		flags |= digestRendered
	}
	id := st.ID()
	if len(id) > 255 {
		return []byte{0} // not encodable: every pass reads the Secret
	}
	b := make([]byte, 0, 2+len(id)+token.DigestSize)
	b = append(b, flags, byte(len(id))) //nolint:gosec // at most 255, checked above
	b = append(b, id...)
	return append(b, v.digest[:]...)
}

// tokenView is what the reconciler decides on about a Secret's token: none
// of it is the token.
type tokenView struct {
	empty, wellFormed bool
	// sealed: the Secret's seal over the token, its issued-at annotation
	// and its controlling ApiToken holds.
	sealed bool
	// rendered: the Secret's data seal holds over its data, rendered keys
	// included (dataSealed); what they were rendered from is the seal's
	// fingerprint, which the cache keeps (renderingCurrent).
	rendered bool
	// digest is the token's keyed hash (zero when not well-formed).
	digest token.Digest
}

// viewToken computes the view of tok, the token of Secret s controlled by
// the ApiToken with UID owner.
func viewToken(tok string, s *corev1.Secret, owner types.UID, h *token.Hasher) tokenView {
	v := tokenView{empty: tok == "", rendered: dataSealed(s, owner, h)}
	if token.Parse(tok) != nil {
		return v
	}
	v.wellFormed, v.digest = true, h.Hash(tok)
	at := s.Annotations[tokensv1alpha1.IssuedAtAnnotation]
	v.sealed = h.VerifySeal(s.Annotations[tokensv1alpha1.SealAnnotation], string(owner), at, tok)
	return v
}

// cachedView reads the view a cached Secret carries, if it was made under
// saltID; ok is false when the Secret carries its token instead (not from
// the cache) or a digest made under another salt.
func cachedView(s *corev1.Secret, saltID string) (v tokenView, digested, ok bool) {
	b, digested := s.Annotations[digestKey]
	if !digested || len(b) < 2 {
		return v, digested, false
	}
	flags, n := b[0], int(b[1])
	if len(b) != 2+n+token.DigestSize || b[2:2+n] != saltID {
		return v, true, false
	}
	v.empty, v.wellFormed, v.sealed = flags&digestEmpty != 0, flags&digestWellFormed != 0, flags&digestSealed != 0
	v.rendered = flags&digestRendered != 0
	copy(v.digest[:], b[2+n:])
	return v, true, true
}
