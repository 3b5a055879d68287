package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// CacheOptions returns the manager's cache settings: only the operator's
// own Secrets (labelled managed-by apitoken-operator: the token Secrets and
// the salt) are cached, and no object keeps its managed fields, so memory
// grows with ApiTokens, not with the cluster's Secrets. With salt set (an
// auth-only replica), only the salt Secret itself is cached (watched by
// name, so that its Role can name it in resourceNames).
func CacheOptions(salt types.NamespacedName) cache.Options {
	secrets := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{tokensv1alpha1.ManagedByLabel: tokensv1alpha1.ManagedByValue})}
	if salt.Name != "" {
		secrets.Namespaces = map[string]cache.Config{salt.Namespace: {}}
		secrets.Field = fields.OneTermEqualSelector("metadata.name", salt.Name)
	}
	return cache.Options{
		ByObject:         map[client.Object]cache.ByObject{&corev1.Secret{}: secrets},
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}
