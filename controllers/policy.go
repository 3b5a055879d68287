package controllers

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/secretdata"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// policy is an ApiToken's spec, parsed (lifecycle.ParseSpec).
type policy = lifecycle.Spec

// parsePolicy parses the spec's spans and rotation rules (as the webhook
// does: lifecycle.ParseSpec), its scopes and its Secret's data keys
// (secretdata.Validate). The CRD schema and the
// webhook refuse bad specs; this is the last line for an install without
// the webhook, and its error names the field.
func parsePolicy(spec *tokensv1alpha1.ApiTokenSpec) (policy, error) {
	p, errs := lifecycle.ParseSpec(spec)
	if len(errs) > 0 {
		return p, errs.ToAggregate()
	}
	if _, err := token.Granted(string(spec.Type), spec.Scopes); err != nil {
		return p, field.Invalid(field.NewPath("spec", "scopes"), spec.Scopes, err.Error())
	}
	if so := spec.ShowOnce; so != nil {
		if _, err := showonce.ParsePublicKey(so.PublicKey); err != nil {
			return p, field.Invalid(field.NewPath("spec", "showOnce", "publicKey"), so.PublicKey, err.Error())
		}
	}
	if tpl := spec.SecretTemplate; tpl != nil {
		if errs := secretdata.Validate(tpl.Data, field.NewPath("spec", "secretTemplate", "data")); len(errs) > 0 {
			return p, errs.ToAggregate()
		}
	}
	return p, nil
}
