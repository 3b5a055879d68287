package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/salt"
)

// holdSalt holds a token whose record names a salt that the operator
// neither holds nor knows to be replaced (actHold): nothing is written but
// the status (Failed, SaltMismatch), which says how to go on; a Warning
// Event when the hold begins, and a log line once per salt pair. The salt
// Secret's next change re-queues every ApiToken.
func (r *ApiTokenReconciler) holdSalt(ctx context.Context, s *pass) (bool, error) {
	recorded := recordedSaltID(s.t, s.secret)
	s.b = blocker{tokensv1alpha1.ReasonSaltMismatch, r.saltMismatchMessage(recorded, s.salts)}
	if readyReason(s.base) != tokensv1alpha1.ReasonSaltMismatch {
		s.record(corev1.EventTypeWarning, s.b.reason, s.b.message)
	}
	s.afterWrite = append(s.afterWrite, func() { r.logSaltMismatch(ctx, s.t, recorded, s.salts) })
	return s.end(0)
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
