// Package policy is the one place that says whether an ApiToken's spec
// keeps to the platform's ApiTokenPolicies: the admission webhook refuses
// what breaks them (Errors, and on update only what an edit makes worse:
// NewOnUpdate), and the reconcilers report the existing tokens that break
// them. It is pure: it takes the policies and the namespace's labels, and
// reads the token's spans through lifecycle.ParseSpec.
package policy

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// The rules a Violation names.
const (
	RuleUnreadable         = "unreadable"
	RuleMaxDuration        = "maxDuration"
	RuleMaxIdleTimeout     = "maxIdleTimeout"
	RuleAllowedTypes       = "allowedTypes"
	RuleAllowedAudiences   = "allowedAudiences"
	RuleRequireRenewBefore = "requireRenewBefore"
	RuleMaxTokens          = "maxTokensPerNamespace"
)

// Policy is an ApiTokenPolicy, parsed (Parse).
type Policy struct {
	// Name is the ApiTokenPolicy's name.
	Name string
	// err is why the policy could not be parsed: it then selects every
	// namespace and refuses every token (fail closed).
	err      error
	selector labels.Selector
	spec     tokensv1alpha1.ApiTokenPolicySpec
	maxLife  time.Duration
	maxIdle  time.Duration
}

// Parse parses an ApiTokenPolicy. A policy that does not parse (a bad
// selector, a span the schema let through) is kept, and refuses every
// token of every namespace, naming the policy and the error: a ceiling
// that cannot be read is not lifted.
func Parse(p *tokensv1alpha1.ApiTokenPolicy) Policy {
	out := Policy{Name: p.Name, spec: p.Spec, selector: labels.Everything()}
	fail := func(err error) Policy { out.err = err; return out }
	if sel := p.Spec.NamespaceSelector; sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return fail(fmt.Errorf("spec.namespaceSelector: %w", err))
		}
		out.selector = s
	}
	var err error
	if v := p.Spec.MaxDuration; v != "" {
		if out.maxLife, err = token.ParseSpan(v); err != nil {
			return fail(fmt.Errorf("spec.maxDuration: %w", err))
		}
	}
	if v := p.Spec.MaxIdleTimeout; v != "" {
		if out.maxIdle, err = token.ParseSpan(v); err != nil {
			return fail(fmt.Errorf("spec.maxIdleTimeout: %w", err))
		}
	}
	return out
}

// ParseAll parses every policy of a list.
func ParseAll(items []tokensv1alpha1.ApiTokenPolicy) []Policy {
	out := make([]Policy, len(items))
	for i := range items {
		out[i] = Parse(&items[i])
	}
	return out
}

// Err is why the policy could not be parsed; nil if it was.
func (p Policy) Err() error { return p.err }

// Selects reports whether the policy caps the tokens of a namespace with
// these labels. A policy that did not parse selects every namespace.
func (p Policy) Selects(namespaceLabels map[string]string) bool {
	return p.err != nil || p.selector.Matches(labels.Set(namespaceLabels))
}

// MaxTokens is maxTokensPerNamespace (ok false: unset).
func (p Policy) MaxTokens() (n int, ok bool) {
	if p.spec.MaxTokensPerNamespace == nil {
		return 0, false
	}
	return int(*p.spec.MaxTokensPerNamespace), true
}

// Violation is one rule of one policy that a token breaks.
type Violation struct {
	// Policy is the ApiTokenPolicy's name; Rule the rule (Rule*).
	Policy, Rule string
	// Field is the token's field that breaks it.
	Field *field.Path
	// Detail says how, naming the field and the rule's value.
	Detail string
	// measure orders two violations of a span rule (longer is worse;
	// none or unlimited is the worst); value is the token's value for
	// the allowed-list rules.
	measure time.Duration
	value   string
}

// String is the violation as a condition, an Event or a refusal says it:
// `ApiTokenPolicy "org-defaults": spec.duration 2160h exceeds maxDuration 720h`.
func (v Violation) String() string {
	return fmt.Sprintf("ApiTokenPolicy %q: %s", v.Policy, v.Detail)
}

// Check returns the rules of p that a token of this spec breaks (but for
// maxTokensPerNamespace, which is CheckCount's). A spec whose spans do not
// parse breaks none here: the webhook refuses it, the reconciler reports it
// as InvalidSpec.
func (p Policy) Check(spec *tokensv1alpha1.ApiTokenSpec) []Violation {
	if p.err != nil {
		return []Violation{{Policy: p.Name, Rule: RuleUnreadable, Field: field.NewPath("spec"),
			Detail: fmt.Sprintf("the policy cannot be read (%v), so it refuses every token; fix or delete it", p.err)}}
	}
	s, errs := lifecycle.ParseSpec(spec)
	if len(errs) > 0 || !s.Readable() {
		return nil
	}
	var out []Violation
	add := func(v Violation) { v.Policy = p.Name; out = append(out, v) }
	specPath := field.NewPath("spec")
	if p.spec.MaxDuration != "" {
		switch {
		case !s.Finite:
			add(Violation{Rule: RuleMaxDuration, Field: specPath.Child("duration"), measure: math.MaxInt64,
				Detail: fmt.Sprintf("spec.duration unlimited is not allowed: maxDuration %s requires tokens to expire", p.spec.MaxDuration)})
		case s.Lifetime > p.maxLife:
			add(Violation{Rule: RuleMaxDuration, Field: specPath.Child("duration"), measure: s.Lifetime,
				Detail: fmt.Sprintf("spec.duration %s exceeds maxDuration %s", spec.Duration, p.spec.MaxDuration)})
		}
	}
	if p.spec.MaxIdleTimeout != "" {
		switch {
		case s.Idle <= 0:
			add(Violation{Rule: RuleMaxIdleTimeout, Field: specPath.Child("idleTimeout"), measure: math.MaxInt64,
				Detail: fmt.Sprintf("spec.idleTimeout is required: maxIdleTimeout %s", p.spec.MaxIdleTimeout)})
		case s.Idle > p.maxIdle:
			add(Violation{Rule: RuleMaxIdleTimeout, Field: specPath.Child("idleTimeout"), measure: s.Idle,
				Detail: fmt.Sprintf("spec.idleTimeout %s exceeds maxIdleTimeout %s", spec.IdleTimeout, p.spec.MaxIdleTimeout)})
		}
	}
	if len(p.spec.AllowedTypes) > 0 && !slices.Contains(p.spec.AllowedTypes, spec.Type) {
		add(Violation{Rule: RuleAllowedTypes, Field: specPath.Child("type"), value: string(spec.Type),
			Detail: fmt.Sprintf("spec.type %s is not allowed (allowedTypes: %s)", spec.Type, joined(p.spec.AllowedTypes))})
	}
	if aud := s.Audience; len(p.spec.AllowedAudiences) > 0 && !slices.Contains(p.spec.AllowedAudiences, aud) {
		add(Violation{Rule: RuleAllowedAudiences, Field: specPath.Child("audience"), value: string(aud),
			Detail: fmt.Sprintf("spec.audience %s is not allowed (allowedAudiences: %s)", aud, joined(p.spec.AllowedAudiences))})
	}
	switch {
	case p.spec.RequireRenewBefore && s.Finite && spec.ShowOnce != nil:
		// Never renewed: nobody could pick a renewed token up.
		add(Violation{Rule: RuleRequireRenewBefore, Field: specPath.Child("showOnce"),
			Detail: "a show-once token of finite duration is never renewed, and requireRenewBefore requires renewal (spec.rotation.renewBefore, which showOnce does not allow)"})
	case p.spec.RequireRenewBefore && s.Finite && s.RenewBefore <= 0:
		add(Violation{Rule: RuleRequireRenewBefore, Field: specPath.Child("rotation", "renewBefore"),
			Detail: "spec.rotation.renewBefore is required for a token of finite duration (requireRenewBefore)"})
	}
	return out
}

// CheckCount returns the violation of maxTokensPerNamespace by a new token
// in a namespace that holds count ApiTokens already, or nil.
func (p Policy) CheckCount(namespace string, count int) *Violation {
	max, ok := p.MaxTokens()
	if !ok || p.err != nil || count < max {
		return nil
	}
	return &Violation{Policy: p.Name, Rule: RuleMaxTokens, Field: field.NewPath("metadata", "namespace"),
		Detail: fmt.Sprintf("namespace %s holds %d ApiTokens, and maxTokensPerNamespace is %d", namespace, count, max)}
}

// Evaluate returns the violations of every policy that selects a
// namespace with these labels.
func Evaluate(policies []Policy, namespaceLabels map[string]string, spec *tokensv1alpha1.ApiTokenSpec) []Violation {
	var out []Violation
	for _, p := range policies {
		if p.Selects(namespaceLabels) {
			out = append(out, p.Check(spec)...)
		}
	}
	return out
}

// NewOnUpdate returns the violations of an updated spec (now) that the
// spec before it (before) did not already have at least as badly: an edit
// of a token that breaks a policy is allowed as long as it makes no rule
// worse (a shorter, still too long, duration; any change of another
// field), so that its owner can fix it and nothing else is held up.
func NewOnUpdate(before, now []Violation) []Violation {
	var out []Violation
	for _, v := range now {
		if !slices.ContainsFunc(before, func(b Violation) bool { return v.noWorseThan(b) }) {
			out = append(out, v)
		}
	}
	return out
}

// noWorseThan reports whether v breaks the same rule of the same policy
// as b, no worse.
func (v Violation) noWorseThan(b Violation) bool {
	return v.Policy == b.Policy && v.Rule == b.Rule && v.measure <= b.measure && v.value == b.value
}

// Errors turns violations into the field errors a refusal lists.
func Errors(vs []Violation) field.ErrorList {
	out := make(field.ErrorList, 0, len(vs))
	for _, v := range vs {
		out = append(out, field.Forbidden(v.Field, v.String()))
	}
	return out
}

// Message joins violations into one condition or Event message.
func Message(vs []Violation) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return strings.Join(parts, "; ")
}

func joined[T ~string](items []T) string {
	parts := make([]string, len(items))
	for i, s := range items {
		parts[i] = string(s)
	}
	return strings.Join(parts, ", ")
}
