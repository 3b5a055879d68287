package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	platformpolicy "github.com/apitoken-operator/apitoken-operator/internal/policy"
)

// policyPass is a pass over a token of duration 2160h under a policy of
// maxDuration 720h (selected) or none, with the status before it.
func policyPass(t *testing.T, selected bool, before *metav1.Condition) *pass {
	t.Helper()
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "long", Namespace: "ns"},
		Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "2160h"}}
	if before != nil {
		at.Status.Conditions = []metav1.Condition{*before}
	}
	s := &pass{t: at, base: at.DeepCopy(), now: time.Unix(1_800_000_000, 0)}
	if selected {
		p := platformpolicy.Parse(&tokensv1alpha1.ApiTokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "short"},
			Spec: tokensv1alpha1.ApiTokenPolicySpec{MaxDuration: "720h"}})
		s.policy = policyFinding{selected: true, violations: p.Check(&at.Spec)}
	}
	return s
}

func TestSetPolicyConditionRecordsOneEvent(t *testing.T) {
	s := policyPass(t, true, nil)
	setPolicyCondition(s)
	c := meta.FindStatusCondition(s.t.Status.Conditions, tokensv1alpha1.ConditionPolicyCompliant)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != tokensv1alpha1.ReasonPolicyViolation {
		t.Fatalf("condition %+v", c)
	}
	if len(s.events) != 1 || s.events[0].reason != tokensv1alpha1.ReasonPolicyViolation || s.events[0].eventType != "Warning" {
		t.Fatalf("events %+v", s.events)
	}

	again := policyPass(t, true, c)
	setPolicyCondition(again)
	if len(again.events) != 0 {
		t.Fatalf("a pass that finds the same violation records no second Event: %+v", again.events)
	}
	if got := meta.FindStatusCondition(again.t.Status.Conditions, tokensv1alpha1.ConditionPolicyCompliant); !got.LastTransitionTime.Equal(&c.LastTransitionTime) {
		t.Fatal("the condition did not transition")
	}
}

func TestSetPolicyConditionWithoutAPolicy(t *testing.T) {
	s := policyPass(t, false, &metav1.Condition{Type: tokensv1alpha1.ConditionPolicyCompliant, Status: metav1.ConditionFalse, Reason: tokensv1alpha1.ReasonPolicyViolation})
	setPolicyCondition(s)
	if c := meta.FindStatusCondition(s.t.Status.Conditions, tokensv1alpha1.ConditionPolicyCompliant); c != nil || len(s.events) != 0 {
		t.Fatalf("no policy selects the token: condition %+v, events %+v", c, s.events)
	}
}

func TestSetPolicyConditionRevokedKeepsToEveryPolicy(t *testing.T) {
	s := policyPass(t, true, nil)
	s.t.Spec.Revoked = true
	setPolicyCondition(s)
	if c := meta.FindStatusCondition(s.t.Status.Conditions, tokensv1alpha1.ConditionPolicyCompliant); c == nil || c.Status != metav1.ConditionTrue || len(s.events) != 0 {
		t.Fatalf("condition %+v, events %+v", c, s.events)
	}
}
