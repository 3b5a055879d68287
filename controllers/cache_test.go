package controllers

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// tokenSecret is a token Secret as the operator writes it, sealed with h.
func tokenSecret(h *token.Hasher, owner types.UID, tok string) *corev1.Secret {
	at := "2026-01-02T03:04:05Z"
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tok-token", Namespace: "ns",
			Annotations: map[string]string{
				tokensv1alpha1.IssuedAtAnnotation: at,
				tokensv1alpha1.SealAnnotation:     h.Seal(string(owner), at, tok),
				tokensv1alpha1.SaltIDAnnotation:   h.SaltID(),
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: tokensv1alpha1.GroupVersion.String(), Kind: "ApiToken", Name: "tok", UID: owner, Controller: ptr.To(true)}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "apitoken-operator"}},
		},
		Data: map[string][]byte{tokensv1alpha1.SecretTokenKey: []byte(tok)},
	}
}

// TestCachedSecretHoldsNoToken: the cache keeps a token Secret's metadata
// and a digest; the token itself never reaches the operator's cache, and
// the digest says what a pass decides on.
func TestCachedSecretHoldsNoToken(t *testing.T) {
	store := salt.NewStore(types.NamespacedName{Namespace: "system", Name: "salt"})
	store.Set([]byte("first-salt"))
	h := store.State().Hasher()
	transform := digestToken(store)
	tok, err := token.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cache := func(s *corev1.Secret) *corev1.Secret {
		t.Helper()
		out, err := transform(s)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*corev1.Secret)
	}

	cached := cache(tokenSecret(h, "uid-1", tok))
	if cached.Data != nil {
		t.Fatalf("cached data keys %v, want none", keys(cached.Data))
	}
	if strings.Contains(cached.Annotations[digestKey], tok) || len(cached.ManagedFields) != 0 {
		t.Fatal("the cached Secret holds the token or its managed fields")
	}
	v, digested, ok := cachedView(cached, h.SaltID())
	if !digested || !ok || !v.wellFormed || !v.sealed || v.empty || !v.digest.Equal(h.Hash(tok)) {
		t.Fatalf("view %+v digested %v ok %v: want a sealed, well-formed token with its keyed hash", v, digested, ok)
	}
	if want := viewToken(tok, tokenSecret(h, "uid-1", tok), "uid-1", h); v != want {
		t.Fatalf("cached view %+v differs from the view of the Secret itself %+v", v, want)
	}

	// A seal made for another ApiToken, or a token swapped under the seal,
	// does not hold.
	moved := tokenSecret(h, "uid-other", tok)
	moved.OwnerReferences[0].UID = "uid-1"
	if v, _, _ := cachedView(cache(moved), h.SaltID()); v.sealed {
		t.Fatal("a seal bound to another ApiToken holds")
	}
	swapped := tokenSecret(h, "uid-1", tok)
	other, _ := token.Generate()
	swapped.Data[tokensv1alpha1.SecretTokenKey] = []byte(other)
	if v, _, _ := cachedView(cache(swapped), h.SaltID()); v.sealed || v.digest.Equal(h.Hash(tok)) {
		t.Fatal("a swapped token keeps the seal or the digest of the one it replaced")
	}
	if v, _, _ := cachedView(cache(tokenSecret(h, "uid-1", "")), h.SaltID()); !v.empty || v.wellFormed {
		t.Fatalf("revoked (empty) token seen as %+v", v)
	}
	if v, _, _ := cachedView(cache(tokenSecret(h, "uid-1", "not-a-token")), h.SaltID()); v.wellFormed || v.empty {
		t.Fatalf("malformed token seen as %+v", v)
	}

	// A token Secret grown past maxCachedMetadata keeps the operator's
	// metadata only, and says so.
	grown := tokenSecret(h, "uid-1", tok)
	grown.Labels = map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue, tokensv1alpha1.ApiTokenLabel: "tok", "theirs": "x"}
	grown.Annotations["example.com/theirs"] = strings.Repeat("x", maxCachedMetadata)
	grown.Finalizers = []string{"example.com/theirs"}
	grown.OwnerReferences = append(grown.OwnerReferences, metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "uid-x"})
	got := cache(grown)
	if !trimmed(got) || got.Annotations["example.com/theirs"] != "" || len(got.Labels) != 2 || len(got.OwnerReferences) != 1 || got.Finalizers != nil || got.Size() > 1024 {
		t.Fatalf("a grown token Secret was cached with %d B: %+v", got.Size(), got.ObjectMeta)
	}
	if v, _, ok := cachedView(got, h.SaltID()); !ok || !v.sealed || !v.digest.Equal(h.Hash(tok)) || got.Annotations[tokensv1alpha1.IssuedAtAnnotation] == "" {
		t.Fatalf("a grown token Secret lost its view %+v (ok %v) or its issue time", v, ok)
	}
	if trimmed(cached) {
		t.Fatal("a token Secret of ordinary size was trimmed")
	}
	// A controller reference that names the ApiToken's UID but another
	// kind is not an ApiToken's: the Secret is foreign, to the cache and
	// to the reconciler alike.
	otherKind := tokenSecret(h, "uid-1", tok)
	otherKind.OwnerReferences[0].Kind = "ConfigMap"
	taken := controlledBy(otherKind, &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{UID: "uid-1"}})
	if got := cache(otherKind); got.Data != nil || got.Annotations != nil || taken {
		t.Fatal("a Secret controlled by another kind with the ApiToken's UID was taken for the ApiToken's")
	}

	// Under another salt the digest is not trusted: the pass reads the Secret.
	store.Set([]byte("second-salt"))
	if _, digested, ok := cachedView(cached, store.State().ID()); !digested || ok {
		t.Fatalf("a digest made under the previous salt was trusted (digested %v ok %v)", digested, ok)
	}

	// The salt Secret is cached as it is.
	saltSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "salt", Namespace: "system"}, Data: map[string][]byte{"salt": []byte("s")}}
	if got := cache(saltSecret); string(got.Data["salt"]) != "s" || len(got.Data) != 1 {
		t.Fatalf("the salt Secret was changed in the cache: %v", keys(got.Data))
	}

	// Any other labelled Secret, however large, is cached as metadata only.
	if got := cache(foreignSecret()); got.Data != nil || got.Annotations != nil || got.OwnerReferences != nil || got.Finalizers != nil ||
		len(got.Labels) != 1 || got.Name != "theirs" || got.UID != "uid-theirs" || got.ResourceVersion != "7" || got.Size() > 256 {
		t.Fatalf("a foreign Secret was cached with more than its metadata (%d B): %+v", got.Size(), got.ObjectMeta)
	}
}

// foreignSecret is a labelled Secret no ApiToken owns, filled as a tenant
// could fill it.
func foreignSecret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: "ns", UID: "uid-theirs", ResourceVersion: "7",
			Labels:          map[string]string{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue, "bulk": strings.Repeat("x", 63)},
			Annotations:     map[string]string{"example.com/bulk": strings.Repeat("x", 100<<10)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "uid-x", Controller: ptr.To(true)}},
			Finalizers:      []string{"example.com/bulk"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Data: map[string][]byte{"token": make([]byte, 500<<10)},
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestCachedApiTokenDropsTheApplyRecord: kubectl's client-side apply record
// (a copy of the spec) and managed fields are not cached; every other
// annotation the reconciler reads is.
func TestCachedApiTokenDropsTheApplyRecord(t *testing.T) {
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "tok", Namespace: "ns",
		Annotations:   map[string]string{corev1.LastAppliedConfigAnnotation: `{"spec":{}}`, tokensv1alpha1.RegenerateAnnotation: "1"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	out, err := stripApplyRecord(at)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*tokensv1alpha1.ApiToken)
	if _, kept := got.Annotations[corev1.LastAppliedConfigAnnotation]; kept || len(got.ManagedFields) != 0 {
		t.Fatalf("cached with %v and %d managed fields", got.Annotations, len(got.ManagedFields))
	}
	if got.Annotations[tokensv1alpha1.RegenerateAnnotation] != "1" {
		t.Fatal("the regenerate annotation was dropped")
	}
}

// TestCacheTransformsAreIdempotent: client-go may apply a cache's
// transform twice to the same object (an informer's initial sync over a
// watch-list stream transforms into the reflector's temporary store, then
// again when that store is replaced into the informer's queue), so every
// transform CacheOptions installs must leave its own output as it is.
// Before the fix the Secret digest, applied to its own output, digested an
// empty token: every Secret of a restarted operator looked tampered. A
// foreign Secret reduced to its metadata, and a token Secret trimmed to the
// operator's, are their own output too.
func TestCacheTransformsAreIdempotent(t *testing.T) {
	store := salt.NewStore(types.NamespacedName{Namespace: "system", Name: "salt"})
	store.Set([]byte("first-salt"))
	h := store.State().Hasher()
	tok, err := token.Generate()
	if err != nil {
		t.Fatal(err)
	}
	apiToken := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "tok", Namespace: "ns", UID: "uid-1",
		Annotations:   map[string]string{corev1.LastAppliedConfigAnnotation: `{"spec":{}}`, tokensv1alpha1.RegenerateAnnotation: "1"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:   tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d"},
		Status: tokensv1alpha1.ApiTokenStatus{Phase: tokensv1alpha1.PhaseActive, Verification: &tokensv1alpha1.Verification{Hash: h.Hash(tok).Encode(), SaltID: h.SaltID()}}}
	objects := map[string]func() any{
		"token Secret":     func() any { return tokenSecret(h, "uid-1", tok) },
		"revoked Secret":   func() any { return tokenSecret(h, "uid-1", "") },
		"malformed Secret": func() any { return tokenSecret(h, "uid-1", "not-a-token") },
		"foreign Secret":   func() any { return foreignSecret() },
		"rendered Secret":  func() any { return renderedSecret(h, "uid-1", tok) },
		"tampered rendered Secret": func() any {
			s := renderedSecret(h, "uid-1", tok)
			s.Data["API_KEY"] = []byte("edited")
			return s
		},
		"grown token Secret": func() any {
			s := tokenSecret(h, "uid-1", tok)
			s.Annotations["example.com/theirs"] = strings.Repeat("x", maxCachedMetadata)
			return s
		},
		"salt Secret": func() any {
			return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "salt", Namespace: "system"}, Data: map[string][]byte{"salt": []byte("s")}}
		},
		"ApiToken": func() any { return apiToken.DeepCopy() },
	}
	options := map[string]cache.Options{
		"operator":         CacheOptions(types.NamespacedName{}, store, nil),
		"auth-only":        CacheOptions(store.Ref(), nil, authserver.IndexTransform("")),
		"operator no salt": CacheOptions(types.NamespacedName{}, salt.NewStore(store.Ref()), nil),
	}
	for name, opts := range options {
		transforms := map[string]toolscache.TransformFunc{"default": opts.DefaultTransform}
		for obj, by := range opts.ByObject {
			if by.Transform != nil {
				transforms[fmt.Sprintf("%T", obj)] = by.Transform
			}
		}
		for tname, transform := range transforms {
			for oname, object := range objects {
				once, err := transform(object())
				if err != nil {
					t.Fatal(err)
				}
				twice, err := transform(deepCopy(once))
				if err != nil {
					t.Fatal(err)
				}
				if !equality.Semantic.DeepEqual(once, twice) {
					t.Errorf("%s cache, %s transform, %s: applied to its own output it changed it:\nonce  %+v\ntwice %+v", name, tname, oname, once, twice)
				}
			}
		}
	}
}

func deepCopy(o any) any {
	if r, ok := o.(runtime.Object); ok {
		return r.DeepCopyObject()
	}
	return o
}

// renderedSecret is tokenSecret with a rendered key and its data seal, as
// writeSecret writes them.
func renderedSecret(h *token.Hasher, owner types.UID, tok string) *corev1.Secret {
	s := tokenSecret(h, owner, tok)
	s.Data["API_KEY"] = []byte(tok)
	s.Annotations[tokensv1alpha1.DataSealAnnotation] = "fp." + dataMAC(h, owner, "fp", s)
	return s
}

// TestCachedSecretHoldsNoRendering: the cache keeps none of the rendered
// keys, only whether their data seal held; a cached copy digested again
// keeps what the first digest said (client-go may transform twice).
func TestCachedSecretHoldsNoRendering(t *testing.T) {
	store := salt.NewStore(types.NamespacedName{Namespace: "system", Name: "salt"})
	store.Set([]byte("first-salt"))
	h := store.State().Hasher()
	transform := digestToken(store)
	tok, err := token.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		edit     func(*corev1.Secret)
		rendered bool
	}{
		"as written":            {func(*corev1.Secret) {}, true},
		"a rendered key edited": {func(s *corev1.Secret) { s.Data["API_KEY"] = []byte("x") }, false},
		"a key added":           {func(s *corev1.Secret) { s.Data["more"] = []byte("x") }, false},
		"the token swapped":     {func(s *corev1.Secret) { s.Data["token"] = []byte("x") }, false},
		"another owner":         {func(s *corev1.Secret) { s.OwnerReferences[0].UID = "uid-2" }, false},
	} {
		s := renderedSecret(h, "uid-1", tok)
		c.edit(s)
		once, err := transform(s)
		if err != nil {
			t.Fatal(err)
		}
		cached := once.(*corev1.Secret)
		if cached.Data != nil {
			t.Fatalf("%s: cached data keys %v, want none", name, keys(cached.Data))
		}
		v, _, ok := cachedView(cached, h.SaltID())
		if !ok || v.rendered != c.rendered {
			t.Errorf("%s: cached view rendered %v (ok %v), want %v", name, v.rendered, ok, c.rendered)
		}
		twice, _ := transform(cached.DeepCopy())
		if v2, _, _ := cachedView(twice.(*corev1.Secret), h.SaltID()); v2 != v {
			t.Errorf("%s: digested twice, the view changed from %+v to %+v", name, v, v2)
		}
	}
}
