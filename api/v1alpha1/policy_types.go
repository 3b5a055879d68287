package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ApiTokenPolicy is a platform team's ceiling on the ApiTokens of the
// namespaces it selects, on top of the issuing ceiling (the creator's
// RBAC): the admission webhook refuses a create or a spec change that
// breaks any rule of any policy that selects the token's namespace, naming
// the policy; a token that exists already and breaks a rule is reported
// (its PolicyCompliant condition, a Warning Event), never cut. See
// docs/policy.md.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=atp,categories=tokens
// +kubebuilder:printcolumn:name="Max Duration",type=string,JSONPath=`.spec.maxDuration`
// +kubebuilder:printcolumn:name="Non-compliant",type=integer,JSONPath=`.status.nonCompliantTokens`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ApiTokenPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the ceiling.
	// +required
	Spec ApiTokenPolicySpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status ApiTokenPolicyStatus `json:"status,omitempty"`
}

// ApiTokenPolicySpec is what every ApiToken of the selected namespaces
// must keep to. An unset rule allows anything.
// +kubebuilder:validation:XValidation:rule="has(self.maxDuration) || has(self.maxIdleTimeout) || has(self.allowedTypes) || has(self.allowedAudiences) || (has(self.requireRenewBefore) && self.requireRenewBefore) || has(self.maxTokensPerNamespace)",message="a policy must set at least one rule"
type ApiTokenPolicySpec struct {
	// namespaceSelector selects the namespaces whose ApiTokens the policy
	// caps, by their labels (kubernetes.io/metadata.name names one).
	// Unset or empty: every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// maxDuration is the longest spec.duration a token may have, a span
	// as spec.duration takes it ("30d", "720h"). Setting it also refuses
	// duration "unlimited": a token must expire.
	// +optional
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^((0|[1-9][0-9]*)d)?((0|[1-9][0-9]*)h)?((0|[1-9][0-9]*)m)?((0|[1-9][0-9]*)s)?$') && self.matches('[1-9]')",message="must be a positive span of days, hours, minutes and seconds, such as 30d, 90d, 720h or 1h30m"
	MaxDuration string `json:"maxDuration,omitempty"`

	// maxIdleTimeout is the longest spec.idleTimeout a token may have.
	// Setting it also makes idleTimeout required: a token unused that
	// long stops working.
	// +optional
	// +kubebuilder:validation:MaxLength=24
	// +kubebuilder:validation:XValidation:rule="self.matches('^((0|[1-9][0-9]*)d)?((0|[1-9][0-9]*)h)?((0|[1-9][0-9]*)m)?((0|[1-9][0-9]*)s)?$') && self.matches('[1-9]')",message="must be a positive span of days, hours, minutes and seconds, such as 30d, 90d, 720h or 1h30m"
	MaxIdleTimeout string `json:"maxIdleTimeout,omitempty"`

	// allowedTypes lists the spec.type values a token may have; unset:
	// any.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	AllowedTypes []TokenType `json:"allowedTypes,omitempty"`

	// allowedAudiences lists the audiences a token may name (spec.audience,
	// content-api when unset); unset: any.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	AllowedAudiences []Audience `json:"allowedAudiences,omitempty"`

	// requireRenewBefore makes spec.rotation.renewBefore required for a
	// token of finite duration, so that it is renewed before it expires.
	// +optional
	RequireRenewBefore bool `json:"requireRenewBefore,omitempty"`

	// maxTokensPerNamespace is the most ApiTokens (revoked ones included)
	// one selected namespace may hold: a create beyond it is refused. The
	// count is taken at admission from the operator's cache, so concurrent
	// creates can pass it by a few; a ResourceQuota on
	// count/apitokens.tokens.apitoken.dev is exact (docs/policy.md).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxTokensPerNamespace *int32 `json:"maxTokensPerNamespace,omitempty"`
}

// ApiTokenPolicyStatus is what the operator found the policy's tokens to
// be.
type ApiTokenPolicyStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// nonCompliantTokens counts the ApiTokens of the selected namespaces
	// (not revoked) that break a rule of the policy: they were created
	// before it, or before its latest change. They keep working; each has
	// PolicyCompliant False.
	// +optional
	NonCompliantTokens int32 `json:"nonCompliantTokens"`

	// conditions: Compliant (False while a token, or a namespace's count of
	// tokens, breaks the policy).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ApiTokenPolicyList is a list of ApiTokenPolicies.
// +kubebuilder:object:root=true
type ApiTokenPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ApiTokenPolicy `json:"items"`
}
