package controllers

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// CacheOptions returns the manager's cache settings: only the operator's
// own Secrets (labelled managed-by apitoken-operator: the token Secrets and
// the salt) are cached, and no object keeps its managed fields (nor an
// ApiToken kubectl's apply record), so memory grows with ApiTokens, not
// with the cluster's Secrets. With salts set, a
// token Secret is cached without its token: digestToken keeps what the
// reconciler decides on instead. With salt set (an auth-only replica), only
// the salt Secret itself is cached (watched by name, so that its Role can
// name it in resourceNames). tokenView, when set, replaces how ApiTokens
// are cached (an auth-only replica: authserver.IndexTransform, what its
// index decides on).
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
)

// digestToken returns the token Secrets' cache transform: the token is
// replaced with a digest (annotation digestKey) of what the reconciler decides on,
// under the salt current at that moment: its keyed hash, whether it is
// well-formed and whether the Secret's seal holds (bound to the
// controlling ApiToken's UID, as observeSecret checks it). The operator
// then holds no token in memory, and a pass that finds the digest made
// under another salt reads the Secret from the API server. Other Secrets
// (the salt) are cached as they are.
//
// The transform is idempotent, as client-go requires: an informer's initial
// sync over a watch-list stream applies it twice to every object (into the
// reflector's temporary store, then again when that store replaces the
// informer's queue), as does a relist. A Secret that already carries the
// digest is its own output (no object from the API server can carry
// digestKey) and is left as it is; digesting it again would digest no
// token and make every Secret look tampered.
func digestToken(salts *salt.Store) toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	return func(in any) (any, error) {
		out, err := strip(in)
		s, ok := out.(*corev1.Secret)
		if err != nil || !ok {
			return out, err
		}
		if _, digested := s.Annotations[digestKey]; digested {
			return s, nil
		}
		owner := metav1.GetControllerOfNoCopy(s)
		if owner == nil || owner.Kind != "ApiToken" {
			return s, nil
		}
		d := encodeDigest(s, owner.UID, salts.State())
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[digestKey] = string(d)
		s.Data = nil
		return s, nil
	}
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
	// digest is the token's keyed hash (zero when not well-formed).
	digest token.Digest
}

// viewToken computes the view of tok, the token of Secret s controlled by
// the ApiToken with UID owner.
func viewToken(tok string, s *corev1.Secret, owner types.UID, h *token.Hasher) tokenView {
	v := tokenView{empty: tok == ""}
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
	copy(v.digest[:], b[2+n:])
	return v, true, true
}
