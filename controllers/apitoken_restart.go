package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// restartRetry is how long a pass waits before it tries again a restart
// target it could not patch (a permission not granted, an API error): a
// missing permission never makes a hot loop, and never holds the token.
const restartRetry = 5 * time.Minute

// prepareRestarts marks the token about to be issued as one its restart
// targets are restarted for (issue calls it for every token but the
// first, with the pending record that is written before the Secret): a
// new forToken, and every target of the spec pending. Without restart
// targets it clears status.restarts.
func prepareRestarts(t *tokensv1alpha1.ApiToken, now time.Time) {
	targets := restartTargetsOf(t)
	if len(targets) == 0 {
		t.Status.Restarts = nil
		return
	}
	rs := t.Status.Restarts
	if rs == nil {
		rs = &tokensv1alpha1.Restarts{}
		t.Status.Restarts = rs
	}
	rs.Serial++
	rs.ForToken = fmt.Sprintf("%d@%s", rs.Serial, now.UTC().Format(time.RFC3339))
	rs.Pending = make([]string, len(targets))
	for i, tg := range targets {
		rs.Pending[i] = tg.String()
	}
}

func restartTargetsOf(t *tokensv1alpha1.ApiToken) []tokensv1alpha1.RestartTarget {
	if t.Spec.Rotation == nil {
		return nil
	}
	return t.Spec.Rotation.RestartTargets
}

// restartTargets is the last step of a pass: once the current token is in
// the Secret (this pass wrote it, promoted it, or found it there), it
// restarts each target still pending for it (restart), in the ApiToken's
// namespace only, and records the outcome in status.restarts, the
// TargetsRestarted condition and Events. A missing target is dropped
// with a Warning; one that cannot be patched stays pending, is reported,
// and is tried again after restartRetry. It never fails the pass: the
// token is delivered whatever happens to its workloads.
func (r *ApiTokenReconciler) restartTargets(ctx context.Context, s *pass) (bool, error) {
	t := s.t
	targets := restartTargetsOf(t)
	if len(targets) == 0 {
		t.Status.Restarts = nil
		meta.RemoveStatusCondition(&t.Status.Conditions, tokensv1alpha1.ConditionTargetsRestarted)
		return false, nil
	}
	rs := t.Status.Restarts
	if rs == nil || len(rs.Pending) == 0 || !currentInSecret(s) {
		return false, nil
	}
	value := t.Name + "/" + rs.ForToken
	var restarted, missing, failed, pending []string
	for _, tg := range targets {
		name := tg.String()
		if !slices.Contains(rs.Pending, name) {
			continue
		}
		err := r.restart(ctx, t.Namespace, tg, value)
		switch {
		case err == nil:
			restarted = append(restarted, name)
		case apierrors.IsNotFound(err):
			missing = append(missing, name)
			s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonRestartTargetMissing,
				name+" does not exist in namespace "+t.Namespace+"; it was not restarted for the new token (created later, it starts with it)")
		default:
			logf.FromContext(ctx).Info("Could not restart a restart target", "apitoken", klog.KObj(t), "target", name, "error", err.Error())
			failed = append(failed, restartFailure(tg, t.Namespace, err))
			pending = append(pending, name)
		}
	}
	rs.Pending = pending
	if len(restarted) > 0 {
		s.record(corev1.EventTypeNormal, tokensv1alpha1.ReasonTargetsRestarted,
			"Restarted "+strings.Join(restarted, ", ")+" after the new token reached Secret "+t.SecretName())
	}
	c := metav1.Condition{
		Type: tokensv1alpha1.ConditionTargetsRestarted, Status: metav1.ConditionTrue, ObservedGeneration: t.Generation,
		Reason: tokensv1alpha1.ReasonTargetsRestarted, Message: "Restarted for token " + rs.ForToken + ": " + strings.Join(restarted, ", "),
	}
	if len(restarted) == 0 {
		c.Message = "Nothing restarted for token " + rs.ForToken
	}
	if len(missing) > 0 {
		c.Message += "; not found, not restarted: " + strings.Join(missing, ", ")
	}
	if len(failed) > 0 {
		c.Status, c.Reason = metav1.ConditionFalse, tokensv1alpha1.ReasonRestartFailed
		c.Message = "Not restarted for token " + rs.ForToken + " (tried again in " + restartRetry.String() + "): " + strings.Join(failed, "; ")
		if old := meta.FindStatusCondition(s.base.Status.Conditions, c.Type); old == nil || old.Message != c.Message {
			s.record(corev1.EventTypeWarning, tokensv1alpha1.ReasonRestartFailed, c.Message)
		}
		s.retry = restartRetry
	}
	setCondition(&t.Status, c, s.now)
	return false, nil
}

// currentInSecret reports whether the pass leaves the current token in the
// Secret, not revoked and with no token pending: it issued or promoted it,
// rebuilt its record from the Secret, or found the Secret holding it.
func currentInSecret(s *pass) bool {
	v := s.t.Status.Verification
	if s.t.Spec.Revoked || v == nil || v.Hash == "" || v.PendingHash != "" {
		return false
	}
	switch s.act.kind {
	case actIssue, actPromote, actRecover:
		return true
	case actSync:
		return s.state == secretMatchesCurrent
	}
	return false
}

// restart patches the pod template of target in namespace with the
// RestartedForAnnotation value, as `kubectl rollout restart` patches
// kubectl.kubernetes.io/restartedAt: the workload controller rolls its
// pods, which read the Secret's new token when they start. The same value
// patched again changes nothing, so a pass repeated after a crash restarts
// nothing twice.
func (r *ApiTokenReconciler) restart(ctx context.Context, namespace string, target tokensv1alpha1.RestartTarget, value string) error {
	var obj client.Object
	switch target.Kind {
	case tokensv1alpha1.RestartDeployment:
		obj = &appsv1.Deployment{}
	case tokensv1alpha1.RestartStatefulSet:
		obj = &appsv1.StatefulSet{}
	case tokensv1alpha1.RestartDaemonSet:
		obj = &appsv1.DaemonSet{}
	default:
		return fmt.Errorf("unknown kind %q", target.Kind)
	}
	obj.SetNamespace(namespace)
	obj.SetName(target.Name)
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{tokensv1alpha1.RestartedForAnnotation: value},
	}}}})
	if err != nil {
		return err
	}
	return r.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch))
}

// restartFailure says why target could not be restarted, naming the
// permission the operator lacks when the API server refused it.
func restartFailure(target tokensv1alpha1.RestartTarget, namespace string, err error) string {
	if apierrors.IsForbidden(err) {
		return fmt.Sprintf("%s: the operator may not patch %ss.apps in namespace %s (grant it the opt-in restart-targets role: docs/lifecycle.md#restart-targets)",
			target, strings.ToLower(string(target.Kind)), namespace)
	}
	return fmt.Sprintf("%s: %v", target, err)
}
