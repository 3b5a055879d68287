// Package v1alpha1 contains the API types of the tokens.apitoken.dev group.
// +kubebuilder:object:generate=true
// +groupName=tokens.apitoken.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the ApiToken API.
	GroupVersion = schema.GroupVersion{Group: "tokens.apitoken.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this group version.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
