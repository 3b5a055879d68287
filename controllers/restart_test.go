package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// workloadPatches counts the reconciler's patches of workloads and, while
// forbidden is set, refuses them as an API server does for an operator
// without the opt-in restart-targets role.
type workloadPatches struct {
	client.Client
	forbidden bool
	patches   int
}

func (w *workloadPatches) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if _, ok := obj.(*appsv1.Deployment); ok {
		w.patches++
		if w.forbidden {
			return apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, obj.GetName(), errors.New(`User "system:serviceaccount:apitoken-system:apitoken-operator" cannot patch resource "deployments"`))
		}
	}
	return w.Client.Patch(ctx, obj, patch, opts...)
}

var restartSpec = tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", Rotation: &tokensv1alpha1.Rotation{
	GracePeriod: "5m", RestartTargets: []tokensv1alpha1.RestartTarget{{Kind: tokensv1alpha1.RestartDeployment, Name: "api"}},
}}

func newRestartHarness(t *testing.T) (*harness, *workloadPatches) {
	deploy := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "ns"}}
	h := newHarness(t, restartSpec, deploy)
	w := &workloadPatches{Client: h.r.Client}
	h.r.Client = w
	return h, w
}

func (h *harness) restartedFor() string {
	h.t.Helper()
	var d appsv1.Deployment
	if err := h.c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "api"}, &d); err != nil {
		h.t.Fatal(err)
	}
	return d.Spec.Template.Annotations[tokensv1alpha1.RestartedForAnnotation]
}

// TestRestartForbiddenNeverBlocksTheToken: an operator without the opt-in
// role delivers the new token all the same, says which permission it
// lacks (condition and one Warning), and tries again after restartRetry,
// not at once; once granted, the restart happens, once.
func TestRestartForbiddenNeverBlocksTheToken(t *testing.T) {
	h, w := newRestartHarness(t)
	h.mustReconcile()
	old := h.secretToken()
	h.events()
	w.forbidden = true
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	res := h.mustReconcile()
	at := h.token()
	cur := h.secretToken()
	switch {
	case cur == old || !h.verifies(cur):
		t.Fatal("the new token was not delivered")
	case !h.verifies(old):
		t.Fatal("the previous token lost its grace")
	case at.Status.Phase != tokensv1alpha1.PhaseActive:
		t.Fatalf("phase = %s", at.Status.Phase)
	case res.RequeueAfter != restartRetry:
		t.Fatalf("RequeueAfter = %v, want %v", res.RequeueAfter, restartRetry)
	case at.Status.Restarts == nil || len(at.Status.Restarts.Pending) != 1:
		t.Fatalf("restarts = %+v", at.Status.Restarts)
	}
	c := meta.FindStatusCondition(at.Status.Conditions, tokensv1alpha1.ConditionTargetsRestarted)
	wantMsg := "Deployment/api: the operator may not patch deployments.apps in namespace ns"
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != tokensv1alpha1.ReasonRestartFailed || !strings.Contains(c.Message, wantMsg) {
		t.Fatalf("condition = %+v", c)
	}
	warnings := func() int {
		n := 0
		for _, e := range h.events() {
			if strings.HasPrefix(e, "Warning RestartFailed") && strings.Contains(e, wantMsg) {
				n++
			}
		}
		return n
	}
	if n := warnings(); n != 1 {
		t.Fatalf("%d RestartFailed Warnings, want 1", n)
	}
	// Tried again, refused again: no second Warning for the same refusal.
	h.clock.Step(restartRetry)
	h.mustReconcile()
	if n := warnings(); n != 0 || w.patches != 2 {
		t.Fatalf("second refusal: %d Warnings, %d patches", n, w.patches)
	}

	w.forbidden = false
	h.clock.Step(restartRetry)
	res = h.mustReconcile()
	at = h.token()
	c = meta.FindStatusCondition(at.Status.Conditions, tokensv1alpha1.ConditionTargetsRestarted)
	if got := h.restartedFor(); got != "tok/"+at.Status.Restarts.ForToken || len(at.Status.Restarts.Pending) != 0 {
		t.Fatalf("restarted for %q, restarts %+v", got, at.Status.Restarts)
	}
	if c == nil || c.Status != metav1.ConditionTrue || res.RequeueAfter == restartRetry {
		t.Fatalf("condition = %+v, RequeueAfter = %v", c, res.RequeueAfter)
	}
	h.mustReconcile()
	if w.patches != 3 {
		t.Fatalf("%d patches, want 3: a pass after the restart patched again", w.patches)
	}
}

// TestRestartAfterCrashPatchesTheSameValue: a pass that restarted its
// targets but failed to write the status is followed by one that patches
// the same value (no second rollout: the pod template is unchanged), since
// the value was recorded with the pending token, before the Secret.
func TestRestartAfterCrashPatchesTheSameValue(t *testing.T) {
	h, w := newRestartHarness(t)
	h.mustReconcile()
	if w.patches != 0 || h.token().Status.Restarts != nil {
		t.Fatalf("the first token restarted: %d patches", w.patches)
	}
	h.annotate(tokensv1alpha1.RegenerateAnnotation, "1")
	h.clock.Step(time.Minute)
	h.failWrite = 3 // the pending record, the Secret, then the status
	if _, err := h.reconcile(); !errors.Is(err, errInjected) {
		t.Fatalf("reconcile = %v, want the injected error", err)
	}
	first := h.restartedFor()
	if first == "" || w.patches != 1 {
		t.Fatalf("no restart before the failed status write (%d patches)", w.patches)
	}
	h.clock.Step(time.Minute)
	h.mustReconcile()
	if got := h.restartedFor(); got != first {
		t.Fatalf("the retry restarted with %q, then %q: a second rollout", first, got)
	}
	if rs := h.token().Status.Restarts; rs == nil || len(rs.Pending) != 0 || "tok/"+rs.ForToken != first {
		t.Fatalf("restarts = %+v", rs)
	}
}

// TestLeakRevocationRestartsTheTargets: a token presented as leaked at
// /v1/revoke is replaced with no grace, so the workloads that read it
// from an environment variable hold a refused token until they restart:
// the targets are restarted for the new token, once, as after any
// replacement.
func TestLeakRevocationRestartsTheTargets(t *testing.T) {
	h, w := newRestartHarness(t)
	h.mustReconcile()
	leaked := h.secretToken()
	h.recordLeak(h.token().Status.Verification.Hash)
	h.mustReconcile()
	at := h.token()
	fresh := h.secretToken()
	switch {
	case fresh == leaked || !h.verifies(fresh) || h.verifies(leaked):
		t.Fatal("the leak revocation did not replace the token")
	case at.Status.Restarts == nil || at.Status.Restarts.ForToken == "" || len(at.Status.Restarts.Pending) != 0:
		t.Fatalf("restarts = %+v, want the targets restarted for the new token", at.Status.Restarts)
	case h.restartedFor() != "tok/"+at.Status.Restarts.ForToken:
		t.Fatalf("the Deployment was restarted for %q, want tok/%s", h.restartedFor(), at.Status.Restarts.ForToken)
	}
	patches := w.patches
	h.mustReconcile()
	if w.patches != patches || h.secretToken() != fresh {
		t.Fatalf("a second pass patched again (%d -> %d patches) or rotated", patches, w.patches)
	}
}
