// Package v1alpha1 contains the API types of the tokens.apitoken.dev group.
// +kubebuilder:object:generate=true
// +groupName=tokens.apitoken.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the ApiToken API.
	GroupVersion = schema.GroupVersion{Group: "tokens.apitoken.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group version.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this group version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ApiToken{}, &ApiTokenList{}, &ApiTokenPolicy{}, &ApiTokenPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
