// Package v1alpha1 holds the admission webhooks of ApiToken: a pure
// ValidateApiToken, the creator-stamping defaulter, and their thin
// controller-runtime adapters.
package v1alpha1

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/secretdata"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// Limits shared with the CRD schema.
const (
	maxScopes      = 64
	maxDescription = 256
	// maxRestartTargets is spec.rotation.restartTargets' maxItems.
	maxRestartTargets = 16
)

var restartKinds = []string{string(tokensv1alpha1.RestartDeployment), string(tokensv1alpha1.RestartStatefulSet), string(tokensv1alpha1.RestartDaemonSet)}

var supportedTypes = []string{string(tokensv1alpha1.ReadOnly), string(tokensv1alpha1.FullAccess), string(tokensv1alpha1.Custom)}

// shortDuration is below kubelet's Secret refresh (about a minute): a pod
// that mounts the Secret may see a token only after it expired.
const shortDuration = time.Minute

// ValidateApiToken checks an ApiToken being created (old is nil) or
// updated at now. It returns every error with its field path, and warnings
// for what is allowed but probably a mistake (duplicate or redundant
// scopes, a duration that ends the current token at once). It repeats what
// the CRD schema checks, so that an install with the webhook gives these
// messages, and adds what the schema cannot say. One function per field
// group, in this order: grant (description, type, scopes), spans
// (lifecycle.ParseSpec), audience, Secret (or show-once delivery),
// restart targets, annotations.
func ValidateApiToken(old, at *tokensv1alpha1.ApiToken, now time.Time) (field.ErrorList, []string) {
	var errs field.ErrorList
	var warnings []string
	add := func(e field.ErrorList, w []string) {
		errs, warnings = append(errs, e...), append(warnings, w...)
	}
	add(validateGrant(&at.Spec))
	add(validateSpans(old, at, now))
	add(validateAudienceName(&at.Spec), nil)
	if at.Spec.ShowOnce != nil || (old != nil && old.Spec.ShowOnce != nil) {
		add(validateShowOnce(old, at), nil)
	} else {
		add(validateSecret(old, at), nil)
	}
	add(validateRestartTargets(&at.Spec))
	add(validateAnnotations(old, at), nil)
	return errs, warnings
}

// validateGrant checks the description, the type and the scopes, and
// warns about duplicate and redundant scopes.
func validateGrant(spec *tokensv1alpha1.ApiTokenSpec) (field.ErrorList, []string) {
	var errs field.ErrorList
	specPath := field.NewPath("spec")
	if len(spec.Description) > maxDescription {
		errs = append(errs, field.TooLong(specPath.Child("description"), "", maxDescription))
	}
	typePath, scopesPath := specPath.Child("type"), specPath.Child("scopes")
	switch spec.Type {
	case "":
		errs = append(errs, field.Required(typePath, "must be one of read-only, full-access, custom"))
	case tokensv1alpha1.ReadOnly, tokensv1alpha1.FullAccess:
		if len(spec.Scopes) > 0 {
			errs = append(errs, field.Forbidden(scopesPath, fmt.Sprintf("scopes are only allowed with type custom; a %s token grants %s", spec.Type, grantsOf(spec.Type))))
		}
	case tokensv1alpha1.Custom:
		if len(spec.Scopes) == 0 {
			errs = append(errs, field.Required(scopesPath, "a custom token must list at least one scope, e.g. articles:read"))
		}
	default:
		errs = append(errs, field.NotSupported(typePath, spec.Type, supportedTypes))
	}
	if len(spec.Scopes) > maxScopes {
		errs = append(errs, field.TooMany(scopesPath, len(spec.Scopes), maxScopes))
	}
	return validateScopes(spec.Scopes, scopesPath, errs, nil)
}

// validateSpans checks the duration, idleTimeout and rotation as the
// operator reads them (lifecycle.ParseSpec, whose errors are returned as
// they are), the grace period against the duration, that
// graceUntilNewTokenUsed has a grace to end, and that an
// idleTimeout change revives no idle token; it warns about a duration
// shorter than kubelet's Secret refresh, and one that ends the current
// token at now.
func validateSpans(old, at *tokensv1alpha1.ApiToken, now time.Time) (field.ErrorList, []string) {
	spec := &at.Spec
	s, errs := lifecycle.ParseSpec(spec)
	if err := lifecycle.GraceWithinLifetime(spec, s); err != nil {
		errs = append(errs, err)
	}
	if err := lifecycle.GraceUntilUsedNeedsGrace(spec); err != nil {
		errs = append(errs, err)
	}
	if old != nil {
		errs = append(errs, validateNoRevival(old, at, now)...)
	}
	var warnings []string
	if !s.Finite { // unlimited, or a duration that does not parse
		return errs, warnings
	}
	if s.Lifetime < shortDuration {
		warnings = append(warnings, fmt.Sprintf("spec.duration: %s is shorter than kubelet's Secret refresh (about a minute): a pod that mounts the Secret may read the token only after it expired", spec.Duration))
	}
	if old != nil && old.Spec.Duration != spec.Duration && old.Status.IssuedAt != nil && !old.Spec.Revoked &&
		s.ByDuration(old.Status.IssuedAt.Time).WorthAt(now) == lifecycle.Expired {
		warnings = append(warnings, fmt.Sprintf("spec.duration: %s expires the current token at once (issued at %s); clients using it are refused from now on", spec.Duration, old.Status.IssuedAt.UTC().Format(time.RFC3339)))
	}
	return errs, warnings
}

// validateAudienceName checks that spec.audience, when set, is a name.
func validateAudienceName(spec *tokensv1alpha1.ApiTokenSpec) field.ErrorList {
	if spec.Audience == "" {
		return nil
	}
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(string(spec.Audience)) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "audience"), spec.Audience, "must be a lower-case name such as content-api, admin or billing-api: "+msg))
	}
	return errs
}

// validateSecret checks the Secret's name (set, or defaulted from the
// ApiToken's), that it does not change, and its template: labels,
// annotations, and the data keys (secretdata.Validate, which the
// reconciler also asks).
func validateSecret(old, at *tokensv1alpha1.ApiToken) field.ErrorList {
	var errs field.ErrorList
	spec := &at.Spec
	specPath := field.NewPath("spec")
	snPath := specPath.Child("secretName")
	if spec.SecretName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(spec.SecretName) {
			errs = append(errs, field.Invalid(snPath, spec.SecretName, "must be a valid Secret name: "+msg))
		}
	} else if at.Name != "" {
		for _, msg := range validation.IsDNS1123Subdomain(at.SecretName()) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), at.Name, "the default Secret name "+at.SecretName()+" is not valid ("+msg+"); set spec.secretName"))
		}
	}
	if old != nil && old.SecretName() != at.SecretName() {
		errs = append(errs, field.Invalid(snPath, spec.SecretName, fmt.Sprintf("cannot be changed after creation (it is %q); create a new ApiToken instead", old.SecretName())))
	}
	tpl := spec.SecretTemplate
	if tpl == nil {
		return errs
	}
	tplPath := specPath.Child("secretTemplate")
	errs = append(errs, metav1validation.ValidateLabels(tpl.Labels, tplPath.Child("labels"))...)
	errs = append(errs, apivalidation.ValidateAnnotations(tpl.Annotations, tplPath.Child("annotations"))...)
	for _, k := range []string{tokensv1alpha1.ManagedByLabel, tokensv1alpha1.ApiTokenLabel} {
		if _, ok := tpl.Labels[k]; ok {
			errs = append(errs, field.Forbidden(tplPath.Child("labels").Key(k), "is set by the operator"))
		}
	}
	for _, k := range []string{tokensv1alpha1.IssuedAtAnnotation, tokensv1alpha1.TemplateKeysAnnotation, tokensv1alpha1.DataSealAnnotation} {
		if _, ok := tpl.Annotations[k]; ok {
			errs = append(errs, field.Forbidden(tplPath.Child("annotations").Key(k), "is set by the operator"))
		}
	}
	errs = append(errs, refuseReplicatorKeys(tpl.Labels, tplPath.Child("labels"))...)
	errs = append(errs, refuseReplicatorKeys(tpl.Annotations, tplPath.Child("annotations"))...)
	return append(errs, secretdata.Validate(tpl.Data, tplPath.Child("data"))...)
}

// validateRestartTargets checks spec.rotation.restartTargets: at most
// maxRestartTargets, each of a supported kind and named by a valid object
// name, none twice. Who may name them is CheckIssuing's. It warns when
// graceUntilNewTokenUsed would end the previous token's grace at the
// first restarted pod's request, while the pods not yet restarted still
// hold the previous token.
func validateRestartTargets(spec *tokensv1alpha1.ApiTokenSpec) (field.ErrorList, []string) {
	if spec.Rotation == nil || len(spec.Rotation.RestartTargets) == 0 {
		return nil, nil
	}
	var warnings []string
	if spec.Rotation.GraceUntilNewTokenUsed {
		warnings = append(warnings, "spec.rotation.graceUntilNewTokenUsed: the first restarted pod's request ends the previous token's grace, "+
			"and the pods of spec.rotation.restartTargets not yet restarted are refused until they are: leave it false for a rollout to finish within gracePeriod")
	}
	var errs field.ErrorList
	path := field.NewPath("spec", "rotation", "restartTargets")
	targets := spec.Rotation.RestartTargets
	if len(targets) > maxRestartTargets {
		errs = append(errs, field.TooMany(path, len(targets), maxRestartTargets))
	}
	for i, tg := range targets {
		p := path.Index(i)
		switch tg.Kind {
		case tokensv1alpha1.RestartDeployment, tokensv1alpha1.RestartStatefulSet, tokensv1alpha1.RestartDaemonSet:
		default:
			errs = append(errs, field.NotSupported(p.Child("kind"), tg.Kind, restartKinds))
		}
		for _, msg := range validation.IsDNS1123Subdomain(tg.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), tg.Name, "must be the name of a workload in the ApiToken's namespace: "+msg))
		}
		if slices.Contains(targets[:i], tg) {
			errs = append(errs, field.Duplicate(p, tg.String()))
		}
	}
	return errs, warnings
}

// validateAnnotations refuses keys under the API group that differ from
// ours only in case, and a change of the creator annotations, which are
// the webhook's to write.
func validateAnnotations(old, at *tokensv1alpha1.ApiToken) field.ErrorList {
	var errs field.ErrorList
	for key := range at.Annotations {
		if lower := strings.ToLower(key); lower != key && strings.HasPrefix(lower, tokensv1alpha1.GroupVersion.Group+"/") {
			errs = append(errs, field.Forbidden(field.NewPath("metadata", "annotations").Key(key), "keys under "+tokensv1alpha1.GroupVersion.Group+"/ are lower-case: this one reads like "+lower))
		}
	}
	for _, key := range []string{tokensv1alpha1.CreatedByAnnotation, tokensv1alpha1.CreatedByGroupsAnnotation} {
		if old != nil && old.Annotations[key] != at.Annotations[key] {
			errs = append(errs, field.Forbidden(field.NewPath("metadata", "annotations").Key(key), "records who created the ApiToken and cannot be changed"))
		}
	}
	return errs
}

// refuseReplicatorKeys refuses the keys of a Secret replicator
// (tokensv1alpha1.SecretReplicatorKey), in sorted order: a template that
// carries one would have the token copied out of its namespace.
func refuseReplicatorKeys(keys map[string]string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if why := tokensv1alpha1.SecretReplicatorKey(k); why != "" {
			errs = append(errs, field.Forbidden(path.Key(k), why+": a token is delivered only into its own namespace; "+
				"create an ApiToken in each namespace that needs one (docs/lifecycle.md#delivery)"))
		}
	}
	return errs
}

// validateScopes checks each scope's shape and warns about duplicates and
// scopes already granted by a wildcard in the same list.
func validateScopes(scopes []string, path *field.Path, errs field.ErrorList, warnings []string) (field.ErrorList, []string) {
	parsed := make([]token.Scope, len(scopes))
	ok := make([]bool, len(scopes))
	seen := map[string]int{}
	for i, s := range scopes {
		sc, err := token.ParseScope(s)
		if err != nil {
			errs = append(errs, field.Invalid(path.Index(i), s, err.Error()))
			continue
		}
		parsed[i], ok[i] = sc, true
		if j, dup := seen[s]; dup {
			warnings = append(warnings, fmt.Sprintf("%s: %q duplicates %s", path.Index(i), s, path.Index(j)))
			ok[i] = false
			continue
		}
		seen[s] = i
	}
	for i := range parsed {
		if !ok[i] {
			continue
		}
		for j := range parsed {
			if i != j && ok[j] && parsed[j] != parsed[i] && parsed[j].Covers(parsed[i]) {
				warnings = append(warnings, fmt.Sprintf("%s: %q is already granted by %q (%s)", path.Index(i), scopes[i], scopes[j], path.Index(j)))
				break
			}
		}
	}
	return errs, warnings
}

// ValidateSecretNameUnique refuses a Secret name that another ApiToken in
// the namespace already uses: two tokens cannot share one Secret.
func ValidateSecretNameUnique(at *tokensv1alpha1.ApiToken, others []tokensv1alpha1.ApiToken) field.ErrorList {
	for i := range others {
		o := &others[i]
		if o.Name != at.Name && o.Spec.ShowOnce == nil && o.SecretName() == at.SecretName() {
			return field.ErrorList{field.Invalid(field.NewPath("spec", "secretName"), at.SecretName(),
				fmt.Sprintf("is already used by ApiToken %s; choose another spec.secretName", o.Name))}
		}
	}
	return nil
}

func grantsOf(t tokensv1alpha1.TokenType) string {
	set, _ := token.Granted(string(t), nil)
	return set.Strings()[0]
}

// validateNoRevival refuses an idleTimeout change that would revive a
// token whose idle deadline has passed before the operator recorded it
// Inactive: an idle token comes back only by a regeneration, as an expired
// one does (status.expiresAt keeps that one ended). An old idleTimeout
// that does not parse sets no deadline: the token was worth nothing under
// it (lifecycle.Assess) rather than idle, and fixing it is allowed.
func validateNoRevival(old, at *tokensv1alpha1.ApiToken, now time.Time) field.ErrorList {
	if old.Spec.IdleTimeout == at.Spec.IdleTimeout || old.Spec.Revoked || old.Status.IssuedAt == nil {
		return nil
	}
	was, _ := lifecycle.ParseSpec(&old.Spec)
	is, _ := lifecycle.ParseSpec(&at.Spec)
	idle := was.ByIdle(&old.Status)
	deadline, ok := idle.Deadline()
	if !ok || idle.WorthAt(now) != lifecycle.Inactive {
		return nil
	}
	if is.ByIdle(&old.Status).WorthAt(now) == lifecycle.Inactive {
		return nil // still idle under the new timeout
	}
	return field.ErrorList{field.Forbidden(field.NewPath("spec", "idleTimeout"), fmt.Sprintf(
		"the token has been idle since %s: a longer or no idleTimeout would revive it; regenerate it (kubectl annotate apitoken %s %s=$(date +%%s) --overwrite) for a new token",
		deadline.UTC().Format(time.RFC3339), at.Name, tokensv1alpha1.RegenerateAnnotation))}
}

// ValidateAudience refuses an audience that is also one of the Kubernetes
// API server's (kubeAPIAudiences, the operator's --kube-api-audiences:
// k3s adds "k3s" to them, RKE2 "rke2"), other than kubernetes itself: a
// token of that audience would read as valid for the API server. It is
// refused on create and on a change of audience; an ApiToken that already
// had it gets a warning (the auth endpoint refuses it for the API server
// whatever the webhook said).
func ValidateAudience(old, at *tokensv1alpha1.ApiToken, kubeAPIAudiences []string) (field.ErrorList, []string) {
	aud := audienceOf(at)
	if aud == string(tokensv1alpha1.Kubernetes) || !slices.Contains(kubeAPIAudiences, aud) {
		return nil, nil
	}
	msg := "is also an audience of the Kubernetes API server (--kube-api-audiences); only audience kubernetes is valid there: choose another name"
	if old != nil && audienceOf(old) == aud {
		return nil, []string{"spec.audience " + aud + " " + msg}
	}
	return field.ErrorList{field.Invalid(field.NewPath("spec", "audience"), aud, msg)}, nil
}

// validateShowOnce checks a show-once token's delivery (spec.showOnce):
// a public key that can be sealed to (showonce.ParsePublicKey: 32 bytes,
// not a low-order point, which the schema cannot see), no Secret, no
// rotation, and no change of showOnce, nor a revocation undone, after
// creation.
func validateShowOnce(old, at *tokensv1alpha1.ApiToken) field.ErrorList {
	var errs field.ErrorList
	spec := &at.Spec
	p := field.NewPath("spec", "showOnce")
	if old != nil && (old.Spec.ShowOnce == nil) != (spec.ShowOnce == nil) {
		return append(errs, field.Forbidden(p, "cannot be added or removed after creation; create a new ApiToken instead"))
	}
	so := spec.ShowOnce
	if _, err := showonce.ParsePublicKey(so.PublicKey); err != nil {
		errs = append(errs, field.Invalid(p.Child("publicKey"), so.PublicKey, err.Error()))
	}
	if old != nil && *old.Spec.ShowOnce != *so {
		errs = append(errs, field.Forbidden(p, "cannot be changed after creation; create a new ApiToken instead"))
	}
	for _, f := range []struct {
		name string
		set  bool
	}{{"secretName", spec.SecretName != ""}, {"secretTemplate", spec.SecretTemplate != nil}, {"rotation", spec.Rotation != nil}} {
		if f.set {
			errs = append(errs, field.Forbidden(field.NewPath("spec", f.name), "is not allowed with showOnce: a show-once token has no Secret and is never regenerated"))
		}
	}
	if old != nil && old.Spec.Revoked && !spec.Revoked {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "revoked"), "a revoked show-once token cannot be un-revoked (nobody could pick a new token up); create a new ApiToken instead"))
	}
	return errs
}
