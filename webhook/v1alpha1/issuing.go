package v1alpha1

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// The issuing permissions, in ordinary RBAC: issuing scope resource:action
// needs verb <action> on scopes.tokens.apitoken.dev named <resource> (a "*"
// action needs verb "*", a "*" resource needs the verb on every name, and
// a nested resource such as table:data or table:* is one name, as
// written; find and findOne are also allowed by verb read, which covers
// them), and
// an audience other than content-api needs verb issue on
// audiences.tokens.apitoken.dev named after it.
const (
	scopesResource    = "scopes"
	audiencesResource = "audiences"
	issueVerb         = "issue"
)

// permission is one issuing permission a token needs, and the field that
// asks for it.
type permission struct {
	field *field.Path
	// what is issued, as a user reads it: "orders:delete", "audience admin".
	what  string
	attrs authorizationv1.ResourceAttributes
	// orVerb, when set, is a verb that allows it too (read, for find).
	orVerb string
	// act is what the token would do, as a refusal says it: "issue"
	// (default), or "restart" for a restart target.
	act string
}

// requiredPermissions lists what the requesting user must be allowed to
// issue: every scope the token grants (on create, on un-revoke, which
// issues a new token, and on a change of audience, which makes it a grant
// for another service) or grants beyond what it granted before (on other
// updates), and its audience when that is not content-api and is new or
// gets new scopes. A spec that does not parse needs nothing here: validation refuses
// it.
func requiredPermissions(old, at *tokensv1alpha1.ApiToken) []permission {
	granted, err := token.Granted(string(at.Spec.Type), at.Spec.Scopes)
	if err != nil {
		return nil
	}
	var before token.ScopeSet
	oldAudience := ""
	// Un-revoking issues a new token, and a new audience makes the token
	// a grant for another service (the pair is what it grants): both are
	// checked as a create.
	unrevoking := old != nil && old.Spec.Revoked && !at.Spec.Revoked
	if old != nil && !unrevoking && audienceOf(old) == audienceOf(at) {
		before, _ = token.Granted(string(old.Spec.Type), old.Spec.Scopes)
		oldAudience = audienceOf(old)
	}
	specPath := field.NewPath("spec")
	var out []permission
	for i, s := range granted {
		if before.Allows(s) {
			continue
		}
		p := specPath.Child("type")
		if at.Spec.Type == tokensv1alpha1.Custom {
			p = specPath.Child("scopes").Index(i)
		}
		name := s.Resource
		if name == token.Wildcard {
			name = "" // every name
		}
		perm := permission{field: p, what: s.String(), attrs: authorizationv1.ResourceAttributes{
			Namespace: at.Namespace, Verb: s.Action, Group: tokensv1alpha1.GroupVersion.Group, Resource: scopesResource, Name: name,
		}}
		if (token.Scope{Resource: s.Resource, Action: token.ActionRead}).Covers(s) && s.Action != token.ActionRead {
			perm.orVerb = token.ActionRead
		}
		out = append(out, perm)
	}
	// A new audience, or new scopes for an audience other than content-api
	// (the pair is what a token grants), need the audience's permission.
	if aud := audienceOf(at); aud != string(lifecycle.DefaultAudience) && (aud != oldAudience || len(out) > 0) {
		out = append(out, permission{field: specPath.Child("audience"), what: "audience " + aud, attrs: authorizationv1.ResourceAttributes{
			Namespace: at.Namespace, Verb: issueVerb, Group: tokensv1alpha1.GroupVersion.Group, Resource: audiencesResource, Name: aud,
		}})
	}
	return append(out, restartPermissions(old, at)...)
}

// restartPermissions lists the restart targets the requesting user must
// be allowed to patch (verb patch on the workload, by name, in the
// ApiToken's namespace): every target on create, on un-revoking and on an
// update that changes when tokens are issued (spec.duration or
// spec.rotation: a 2s token renewed every second restarts its targets
// every second, for good), and the targets any other update adds. The
// operator restarts them with its own (opt-in) RBAC, so without this a
// tenant who may edit an ApiToken could restart workloads they may not
// patch themselves. A regeneration restarts the targets already admitted
// once, and needs nothing here.
func restartPermissions(old, at *tokensv1alpha1.ApiToken) []permission {
	if at.Spec.Rotation == nil {
		return nil
	}
	var before []tokensv1alpha1.RestartTarget
	if old != nil && old.Spec.Rotation != nil && !reschedules(old, at) {
		before = old.Spec.Rotation.RestartTargets
	}
	path := field.NewPath("spec", "rotation", "restartTargets")
	var out []permission
	for i, tg := range at.Spec.Rotation.RestartTargets {
		if slices.Contains(before, tg) {
			continue
		}
		out = append(out, permission{field: path.Index(i), what: string(tg.Kind) + " " + tg.Name, act: "restart", attrs: authorizationv1.ResourceAttributes{
			Namespace: at.Namespace, Verb: "patch", Group: "apps", Resource: strings.ToLower(string(tg.Kind)) + "s", Name: tg.Name,
		}})
	}
	return out
}

// reschedules reports whether an update changes when the token's next
// tokens are issued, and so how often its restart targets restart:
// un-revoking it, or a change of spec.duration or spec.rotation other
// than its restart targets.
func reschedules(old, at *tokensv1alpha1.ApiToken) bool {
	if old.Spec.Revoked && !at.Spec.Revoked {
		return true
	}
	if old.Spec.Duration != at.Spec.Duration {
		return true
	}
	var was, is tokensv1alpha1.Rotation
	if old.Spec.Rotation != nil {
		was = *old.Spec.Rotation
	}
	if at.Spec.Rotation != nil {
		is = *at.Spec.Rotation
	}
	was.RestartTargets, is.RestartTargets = nil, nil
	return !equality.Semantic.DeepEqual(was, is)
}

func audienceOf(at *tokensv1alpha1.ApiToken) string {
	return string(lifecycle.AudienceOf(&at.Spec))
}

// needs describes the RBAC rule a permission asks for, as a refusal says it:
// `verb delete on scopes.tokens.apitoken.dev "orders"`.
func (p permission) needs() string {
	name := fmt.Sprintf("%q", p.attrs.Name)
	if p.attrs.Name == "" {
		name = "(every name)"
	}
	verb := p.attrs.Verb
	if p.orVerb != "" {
		verb += " or " + p.orVerb
	}
	return fmt.Sprintf("verb %s on %s.%s %s", verb, p.attrs.Resource, p.attrs.Group, name)
}

// User is who asks, as the admission request says.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string]authorizationv1.ExtraValue
}

// CheckIssuing asks the API server, with one SubjectAccessReview per
// permission, whether user may issue what the token would grant, and
// patch the restart targets it adds (restartPermissions). A review
// that cannot be answered refuses (fail closed).
func CheckIssuing(ctx context.Context, c client.Client, user User, old, at *tokensv1alpha1.ApiToken) field.ErrorList {
	var errs field.ErrorList
	for _, p := range requiredPermissions(old, at) {
		allowed, err := allows(ctx, c, user, p.attrs)
		if err == nil && !allowed && p.orVerb != "" {
			attrs := p.attrs
			attrs.Verb = p.orVerb
			allowed, err = allows(ctx, c, user, attrs)
		}
		act := p.act
		if act == "" {
			act = "issue"
		}
		switch {
		case err != nil:
			errs = append(errs, field.Forbidden(p.field, fmt.Sprintf("could not check whether user %s may %s %s in namespace %s (SubjectAccessReview: %v); refused", user.Name, act, p.what, at.Namespace, err)))
		case !allowed:
			errs = append(errs, field.Forbidden(p.field, fmt.Sprintf("user %s may not %s %s in namespace %s (needs %s)", user.Name, act, p.what, at.Namespace, p.needs())))
		}
	}
	return errs
}

// allows asks the API server whether user may do attrs.
func allows(ctx context.Context, c client.Client, user User, attrs authorizationv1.ResourceAttributes) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Name, UID: user.UID, Groups: user.Groups, Extra: user.Extra, ResourceAttributes: &attrs,
	}}
	if err := c.Create(ctx, sar); err != nil {
		return false, err
	}
	return sar.Status.Allowed, nil
}
