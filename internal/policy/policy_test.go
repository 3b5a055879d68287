package policy

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

func ptr[T any](v T) *T { return &v }

func spec(mutate func(*tokensv1alpha1.ApiTokenSpec)) *tokensv1alpha1.ApiTokenSpec {
	s := &tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d", IdleTimeout: "7d",
		Rotation: &tokensv1alpha1.Rotation{RenewBefore: "3d"}}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func orgDefaults() Policy {
	return Parse(&tokensv1alpha1.ApiTokenPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "org-defaults"},
		Spec: tokensv1alpha1.ApiTokenPolicySpec{
			MaxDuration: "720h", MaxIdleTimeout: "30d",
			AllowedTypes:       []tokensv1alpha1.TokenType{tokensv1alpha1.ReadOnly, tokensv1alpha1.Custom},
			AllowedAudiences:   []tokensv1alpha1.Audience{tokensv1alpha1.ContentAPI, "billing-api"},
			RequireRenewBefore: true, MaxTokensPerNamespace: ptr[int32](2),
		},
	})
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*tokensv1alpha1.ApiTokenSpec)
		want   string // "" for none
	}{
		{"compliant", nil, ""},
		{"the longest duration allowed", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "30d" }, ""},
		{"too long", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" },
			`ApiTokenPolicy "org-defaults": spec.duration 2160h exceeds maxDuration 720h`},
		{"unlimited", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration, s.Rotation = "unlimited", nil },
			`ApiTokenPolicy "org-defaults": spec.duration unlimited is not allowed: maxDuration 720h requires tokens to expire`},
		{"no idle timeout", func(s *tokensv1alpha1.ApiTokenSpec) { s.IdleTimeout = "" },
			`ApiTokenPolicy "org-defaults": spec.idleTimeout is required: maxIdleTimeout 30d`},
		{"idle timeout too long", func(s *tokensv1alpha1.ApiTokenSpec) { s.IdleTimeout = "31d" },
			`ApiTokenPolicy "org-defaults": spec.idleTimeout 31d exceeds maxIdleTimeout 30d`},
		{"type", func(s *tokensv1alpha1.ApiTokenSpec) { s.Type = tokensv1alpha1.FullAccess },
			`ApiTokenPolicy "org-defaults": spec.type full-access is not allowed (allowedTypes: read-only, custom)`},
		{"audience", func(s *tokensv1alpha1.ApiTokenSpec) { s.Audience = tokensv1alpha1.Admin },
			`ApiTokenPolicy "org-defaults": spec.audience admin is not allowed (allowedAudiences: content-api, billing-api)`},
		{"the default audience is content-api", func(s *tokensv1alpha1.ApiTokenSpec) { s.Audience = "" }, ""},
		{"no renewBefore", func(s *tokensv1alpha1.ApiTokenSpec) { s.Rotation = nil },
			`ApiTokenPolicy "org-defaults": spec.rotation.renewBefore is required for a token of finite duration (requireRenewBefore)`},
		{"a show-once token, which is never renewed", func(s *tokensv1alpha1.ApiTokenSpec) {
			s.Rotation, s.ShowOnce = nil, &tokensv1alpha1.ShowOnce{PublicKey: "k"}
		}, `ApiTokenPolicy "org-defaults": a show-once token of finite duration is never renewed, and requireRenewBefore requires renewal (spec.rotation.renewBefore, which showOnce does not allow)`},
		{"an unreadable spec is the webhook's and InvalidSpec's", func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "forever" }, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Message(orgDefaults().Check(spec(c.mutate)))
			if got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestErrorsNameThePolicyAndTheField(t *testing.T) {
	errs := Errors(orgDefaults().Check(spec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" })))
	if len(errs) != 1 || errs[0].Field != "spec.duration" ||
		!strings.Contains(errs[0].Error(), `spec.duration: Forbidden: ApiTokenPolicy "org-defaults": spec.duration 2160h exceeds maxDuration 720h`) {
		t.Fatalf("got %v", errs)
	}
}

func TestRequireRenewBeforeSparesUnlimited(t *testing.T) {
	p := Parse(&tokensv1alpha1.ApiTokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "renew"},
		Spec: tokensv1alpha1.ApiTokenPolicySpec{RequireRenewBefore: true}})
	if vs := p.Check(spec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration, s.Rotation = "unlimited", nil })); len(vs) != 0 {
		t.Fatalf("an unlimited token cannot renew: got %v", vs)
	}
}

func TestSelects(t *testing.T) {
	team := map[string]string{"team": "payments", "kubernetes.io/metadata.name": "pay"}
	other := map[string]string{"kubernetes.io/metadata.name": "other"}
	for _, c := range []struct {
		name        string
		sel         *metav1.LabelSelector
		team, other bool
		unreadable  bool
	}{
		{"unset: every namespace", nil, true, true, false},
		{"empty: every namespace", &metav1.LabelSelector{}, true, true, false},
		{"by label", &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}, true, false, false},
		{"a bad selector selects every namespace (fail closed)",
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn}}}, true, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := Parse(&tokensv1alpha1.ApiTokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"},
				Spec: tokensv1alpha1.ApiTokenPolicySpec{NamespaceSelector: c.sel, MaxDuration: "30d"}})
			if p.Selects(team) != c.team || p.Selects(other) != c.other || (p.Err() != nil) != c.unreadable {
				t.Fatalf("selects team %v, other %v, err %v", p.Selects(team), p.Selects(other), p.Err())
			}
			if c.unreadable {
				if vs := p.Check(spec(nil)); len(vs) != 1 || !strings.Contains(vs[0].String(), `ApiTokenPolicy "p": the policy cannot be read`) {
					t.Fatalf("an unreadable policy must refuse: %v", vs)
				}
			}
		})
	}
}

func TestEvaluateOnlySelectingPolicies(t *testing.T) {
	narrow := Parse(&tokensv1alpha1.ApiTokenPolicy{ObjectMeta: metav1.ObjectMeta{Name: "payments"},
		Spec: tokensv1alpha1.ApiTokenPolicySpec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}, MaxDuration: "1d"}})
	s := spec(func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" })
	if got := Message(Evaluate([]Policy{orgDefaults(), narrow}, map[string]string{"team": "web"}, s)); got != `ApiTokenPolicy "org-defaults": spec.duration 2160h exceeds maxDuration 720h` {
		t.Fatalf("got %q", got)
	}
	if got := Evaluate([]Policy{orgDefaults(), narrow}, map[string]string{"team": "payments"}, s); len(got) != 2 {
		t.Fatalf("both policies select payments: %v", got)
	}
}

func TestCheckCount(t *testing.T) {
	p := orgDefaults()
	if v := p.CheckCount("pay", 1); v != nil {
		t.Fatalf("1 of 2: %v", v)
	}
	v := p.CheckCount("pay", 2)
	if v == nil || v.String() != `ApiTokenPolicy "org-defaults": namespace pay holds 2 ApiTokens, and maxTokensPerNamespace is 2` {
		t.Fatalf("got %v", v)
	}
}

func TestNewOnUpdate(t *testing.T) {
	p := orgDefaults()
	check := func(m func(*tokensv1alpha1.ApiTokenSpec)) []Violation { return p.Check(spec(m)) }
	long := func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "2160h" }
	for _, c := range []struct {
		name          string
		before, after func(*tokensv1alpha1.ApiTokenSpec)
		refused       int
	}{
		{"an unrelated edit of a token that breaks a rule", long, func(s *tokensv1alpha1.ApiTokenSpec) { long(s); s.Description = "x" }, 0},
		{"shorter, still too long", long, func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "60d" }, 0},
		{"longer", long, func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration = "3000h" }, 1},
		{"to unlimited", long, func(s *tokensv1alpha1.ApiTokenSpec) { s.Duration, s.Rotation = "unlimited", nil }, 1},
		{"a new rule broken", long, func(s *tokensv1alpha1.ApiTokenSpec) { long(s); s.Type = tokensv1alpha1.FullAccess }, 1},
		{"from one refused type to another", func(s *tokensv1alpha1.ApiTokenSpec) { s.Type = tokensv1alpha1.FullAccess },
			func(s *tokensv1alpha1.ApiTokenSpec) { s.Type = "other" }, 1},
		{"a compliant token made non-compliant", nil, long, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := NewOnUpdate(check(c.before), check(c.after)); len(got) != c.refused {
				t.Fatalf("refused %v, want %d", got, c.refused)
			}
		})
	}
}
