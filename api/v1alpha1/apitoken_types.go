package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The rule on spec.revoked below lets it go back to false only once the
// operator has recorded the revocation: no hash left in the verifying set
// of status.verification, which the API server reads from the stored
// status. A revocation undone before the operator saw it (a GitOps
// self-heal, a backlog, a failover) would otherwise leave the revoked
// token in the record, valid again.

// ApiToken is an API token delivered into a Secret and verified by the
// operator's auth endpoint.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec.revoked) || !oldSelf.spec.revoked || (has(self.spec.revoked) && self.spec.revoked) || !has(self.status) || !has(self.status.verification) || ((!has(self.status.verification.hash) || size(self.status.verification.hash) == 0) && (!has(self.status.verification.pendingHash) || size(self.status.verification.pendingHash) == 0) && (!has(self.status.verification.previousHash) || size(self.status.verification.previousHash) == 0))",message="cannot be set back to false until the operator has recorded the revocation (status.phase Revoked); retry in a moment: un-revoking then issues a new token",fieldPath=".spec.revoked",reason=FieldValueForbidden
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=at;apitok,categories=tokens
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Expires",type=string,JSONPath=`.status.expiresAt`
// +kubebuilder:printcolumn:name="Last Used",type=date,JSONPath=`.status.lastUsedAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Presentation",type=string,JSONPath=`.spec.presentation`,priority=1
// +kubebuilder:printcolumn:name="Audience",type=string,JSONPath=`.spec.audience`,priority=1
// +kubebuilder:printcolumn:name="Created By",type=string,JSONPath=`.metadata.annotations.tokens\.apitoken\.dev/created-by`,priority=1
// +kubebuilder:printcolumn:name="Description",type=string,JSONPath=`.spec.description`,priority=1
type ApiToken struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired token.
	// +required
	Spec ApiTokenSpec `json:"spec"`

	// status is written by the operator.
	// +optional
	Status ApiTokenStatus `json:"status,omitempty"`
}

// ApiTokenList is a list of ApiTokens.
// +kubebuilder:object:root=true
type ApiTokenList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ApiToken `json:"items"`
}

// SecretName returns the name of the token's Secret: spec.secretName, or
// <name>-token when unset.
func (t *ApiToken) SecretName() string {
	if t.Spec.SecretName != "" {
		return t.Spec.SecretName
	}
	return t.Name + SecretNameSuffix
}
