package v1alpha1

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
)

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// +kubebuilder:webhook:path=/mutate-tokens-apitoken-dev-v1alpha1-apitoken,mutating=true,failurePolicy=fail,sideEffects=None,groups=tokens.apitoken.dev,resources=apitokens,verbs=create;update,versions=v1alpha1,name=mapitoken-v1alpha1.tokens.apitoken.dev,admissionReviewVersions=v1,patch=`{"timeoutSeconds":5,"matchConditions":[{"name":"not-metadata-only-or-revoke","expression":"!(request.operation == 'UPDATE' && ['tokens.apitoken.dev/created-by', 'tokens.apitoken.dev/created-by-groups'].all(k, object.metadata.?annotations[?k] == oldObject.metadata.?annotations[?k]) && (object.spec == oldObject.spec || (has(object.spec.revoked) && object.spec.revoked == true && object.spec.filter(k, k != 'revoked').size() == oldObject.spec.filter(k, k != 'revoked').size() && object.spec.filter(k, k != 'revoked').all(k, k in oldObject.spec && object.spec[k] == oldObject.spec[k]))))"}]}`
// +kubebuilder:webhook:path=/validate-tokens-apitoken-dev-v1alpha1-apitoken,mutating=false,failurePolicy=fail,sideEffects=None,groups=tokens.apitoken.dev,resources=apitokens,verbs=create;update,versions=v1alpha1,name=vapitoken-v1alpha1.tokens.apitoken.dev,admissionReviewVersions=v1,patch=`{"timeoutSeconds":5,"matchConditions":[{"name":"not-metadata-only-or-revoke","expression":"!(request.operation == 'UPDATE' && ['tokens.apitoken.dev/created-by', 'tokens.apitoken.dev/created-by-groups'].all(k, object.metadata.?annotations[?k] == oldObject.metadata.?annotations[?k]) && (object.spec == oldObject.spec || (has(object.spec.revoked) && object.spec.revoked == true && object.spec.filter(k, k != 'revoked').size() == oldObject.spec.filter(k, k != 'revoked').size() && object.spec.filter(k, k != 'revoked').all(k, k in oldObject.spec && object.spec[k] == oldObject.spec[k]))))"}]}`

// Both webhooks skip an update that changes no spec field (annotations
// such as the regenerate request, labels) or only sets spec.revoked to
// true, with created-by and created-by-groups unchanged (matchConditions): revoking and
// regenerating never wait on the webhook, even while it is down. They time
// out after 5 seconds.

// SetupWebhookWithManager registers the defaulting and validating
// webhooks; kubeAPIAudiences are the API server's audiences
// (--kube-api-audiences), which no audience but kubernetes may be named.
func SetupWebhookWithManager(mgr ctrl.Manager, kubeAPIAudiences []string) error {
	return ctrl.NewWebhookManagedBy(mgr, &tokensv1alpha1.ApiToken{}).
		WithDefaulter(&Defaulter{}).
		WithValidator(&Validator{Reader: mgr.GetClient(), Authorizer: mgr.GetClient(), KubeAPIAudiences: kubeAPIAudiences}).
		Complete()
}

// Defaulter stamps the creator and fills defaults, so that
// `kubectl get -o yaml` shows what is in force.
type Defaulter struct{}

var _ admission.Defaulter[*tokensv1alpha1.ApiToken] = &Defaulter{}

// Default sets tokens.apitoken.dev/created-by to the requesting user and
// tokens.apitoken.dev/created-by-groups to their groups on create,
// overwriting any value sent, and on update restores the values the object
// had, so the record can be neither forged nor changed. It fills
// spec.secretName (but for a show-once token, which has no Secret) and
// spec.audience when unset.
func (d *Defaulter) Default(ctx context.Context, at *tokensv1alpha1.ApiToken) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return fmt.Errorf("reading the admission request: %w", err)
	}
	if req.OldObject.Raw == nil {
		setCreator(at, req.UserInfo.Username, groupsRecord(req.UserInfo.Groups))
	} else {
		var old tokensv1alpha1.ApiToken
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return fmt.Errorf("decoding the old object: %w", err)
		}
		setCreator(at, old.Annotations[tokensv1alpha1.CreatedByAnnotation], old.Annotations[tokensv1alpha1.CreatedByGroupsAnnotation])
		if old.Spec.SecretName == "" && at.Spec.SecretName == "" && at.Spec.ShowOnce == nil {
			// Created before the webhook: keep the default it already uses.
			at.Spec.SecretName = old.SecretName()
		}
	}
	if at.Spec.SecretName == "" && at.Name != "" && at.Spec.ShowOnce == nil {
		// A show-once token has no Secret, so no Secret name.
		at.Spec.SecretName = at.SecretName()
	}
	if at.Spec.Audience == "" {
		at.Spec.Audience = lifecycle.DefaultAudience
	}
	return nil
}

// groupsRecord is the created-by-groups value: the groups as a JSON array,
// so that a group name with a comma cannot read as two groups.
func groupsRecord(groups []string) string {
	if len(groups) == 0 {
		return ""
	}
	b, err := json.Marshal(groups)
	if err != nil {
		return ""
	}
	return string(b)
}

// setCreator sets (or, for an empty value, removes) the created-by and
// created-by-groups annotations.
func setCreator(at *tokensv1alpha1.ApiToken, user, groups string) {
	for key, value := range map[string]string{tokensv1alpha1.CreatedByAnnotation: user, tokensv1alpha1.CreatedByGroupsAnnotation: groups} {
		if value == "" {
			delete(at.Annotations, key)
			continue
		}
		if at.Annotations == nil {
			at.Annotations = map[string]string{}
		}
		at.Annotations[key] = value
	}
}

// Validator adapts ValidateApiToken to admission, and checks that the
// requesting user may issue what the token grants (CheckIssuing).
type Validator struct {
	// Reader lists the namespace's ApiTokens to keep Secret names unique,
	// and reads the ApiTokenPolicies and the namespace (CheckPolicies).
	Reader client.Reader
	// Authorizer creates the SubjectAccessReviews of CheckIssuing.
	Authorizer client.Client
	// KubeAPIAudiences are the API server's audiences (ValidateAudience).
	KubeAPIAudiences []string
}

var _ admission.Validator[*tokensv1alpha1.ApiToken] = &Validator{}

// ValidateCreate validates a new ApiToken.
func (v *Validator) ValidateCreate(ctx context.Context, at *tokensv1alpha1.ApiToken) (admission.Warnings, error) {
	return v.validate(ctx, nil, at)
}

// ValidateUpdate validates a changed ApiToken.
func (v *Validator) ValidateUpdate(ctx context.Context, old, at *tokensv1alpha1.ApiToken) (admission.Warnings, error) {
	return v.validate(ctx, old, at)
}

// ValidateDelete allows every deletion.
func (v *Validator) ValidateDelete(context.Context, *tokensv1alpha1.ApiToken) (admission.Warnings, error) {
	return nil, nil
}

func (v *Validator) validate(ctx context.Context, old, at *tokensv1alpha1.ApiToken) (admission.Warnings, error) {
	errs, warnings := ValidateApiToken(old, at, time.Now())
	audErrs, audWarnings := ValidateAudience(old, at, v.KubeAPIAudiences)
	errs, warnings = append(errs, audErrs...), append(warnings, audWarnings...)
	if len(errs) == 0 && v.Authorizer != nil {
		req, err := admission.RequestFromContext(ctx)
		if err != nil {
			return warnings, apierrors.NewInternalError(fmt.Errorf("reading the admission request: %w", err))
		}
		errs = append(errs, CheckIssuing(ctx, v.Authorizer, userOf(req.UserInfo), old, at)...)
	}
	if v.Reader != nil && at.Spec.ShowOnce == nil && (old == nil || old.SecretName() != at.SecretName()) {
		var list tokensv1alpha1.ApiTokenList
		if err := v.Reader.List(ctx, &list, client.InNamespace(at.Namespace)); err != nil {
			return warnings, apierrors.NewInternalError(fmt.Errorf("listing ApiTokens to check spec.secretName: %w", err))
		}
		errs = append(errs, ValidateSecretNameUnique(at, list.Items)...)
	}
	if v.Reader != nil {
		policyErrs, err := CheckPolicies(ctx, v.Reader, old, at)
		if err != nil {
			return warnings, apierrors.NewInternalError(fmt.Errorf("checking the ApiTokenPolicies: %w", err))
		}
		errs = append(errs, policyErrs...)
	}
	if len(errs) == 0 {
		return warnings, nil
	}
	return warnings, apierrors.NewInvalid(tokensv1alpha1.GroupVersion.WithKind("ApiToken").GroupKind(), at.Name, errs)
}

// userOf is the admission request's user, as a SubjectAccessReview takes it.
func userOf(u authenticationv1.UserInfo) User {
	extra := make(map[string]authorizationv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	return User{Name: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra}
}
