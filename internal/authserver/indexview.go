package authserver

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// IndexView is the part of an ApiToken that the auth endpoint decides on
// and an auth-only replica writes from (status.lastUsedAt): its identity,
// the spec that makes its Grant, revocation, its spans (duration, idle
// timeout and rotation: lifecycle.ParseSpec reads them all), and the
// status that says which hashes verify until when. An auth-only replica
// caches ApiTokens as this view (IndexTransform), not whole: conditions,
// messages, annotations, labels not under labelPrefix (the identity
// labels', --auth-identity-label-prefix; "": none) and the Secret's
// template are not kept. Index.Upsert reads nothing else;
// TestIndexViewDecidesAlike holds it to that.
func IndexView(at *tokensv1alpha1.ApiToken, labelPrefix string) *tokensv1alpha1.ApiToken {
	var labels map[string]string
	for k, v := range at.Labels {
		if labelPrefix != "" && strings.HasPrefix(k, labelPrefix) {
			if labels == nil {
				labels = map[string]string{}
			}
			labels[k] = v
		}
	}
	return &tokensv1alpha1.ApiToken{
		TypeMeta: at.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: at.Name, Namespace: at.Namespace, UID: at.UID, Labels: labels,
			ResourceVersion: at.ResourceVersion, Generation: at.Generation, DeletionTimestamp: at.DeletionTimestamp},
		Spec: tokensv1alpha1.ApiTokenSpec{Type: at.Spec.Type, Scopes: at.Spec.Scopes, Audience: at.Spec.Audience,
			Presentation: at.Spec.Presentation, Duration: at.Spec.Duration, IdleTimeout: at.Spec.IdleTimeout, Rotation: at.Spec.Rotation, Revoked: at.Spec.Revoked},
		Status: tokensv1alpha1.ApiTokenStatus{Phase: at.Status.Phase, IssuedAt: at.Status.IssuedAt, ExpiresAt: at.Status.ExpiresAt,
			LastUsedAt: at.Status.LastUsedAt, Verification: at.Status.Verification},
	}
}

// IndexTransform is the cache transform of an auth-only replica's
// ApiTokens: IndexView with the identity labels under labelPrefix. Other
// objects pass unchanged.
func IndexTransform(labelPrefix string) func(any) (any, error) {
	return func(in any) (any, error) {
		if at, ok := in.(*tokensv1alpha1.ApiToken); ok {
			return IndexView(at, labelPrefix), nil
		}
		return in, nil
	}
}
