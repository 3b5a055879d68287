package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// CacheOptions returns the manager's cache settings: only the operator's
// own Secrets (labelled managed-by apitoken-operator: the token Secrets and
// the salt) are cached, and no object keeps its managed fields, so memory
// grows with ApiTokens, not with the cluster's Secrets. With saltNamespace
// set (an auth-only replica), only that namespace's Secrets are cached.
func CacheOptions(saltNamespace string) cache.Options {
	secrets := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue})}
	if saltNamespace != "" {
		secrets.Namespaces = map[string]cache.Config{saltNamespace: {}}
	}
	return cache.Options{
		ByObject:         map[client.Object]cache.ByObject{&corev1.Secret{}: secrets},
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}
