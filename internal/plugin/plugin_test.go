package plugin

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

func withPhase(p tokensv1alpha1.Phase, soon bool) *tokensv1alpha1.ApiToken {
	at := &tokensv1alpha1.ApiToken{Status: tokensv1alpha1.ApiTokenStatus{Phase: p}}
	st := metav1.ConditionFalse
	if soon {
		st = metav1.ConditionTrue
	}
	at.Status.Conditions = []metav1.Condition{{Type: tokensv1alpha1.ConditionExpiringSoon, Status: st}}
	return at
}

func TestFilter(t *testing.T) {
	tokens := map[string]*tokensv1alpha1.ApiToken{
		"active":   withPhase(tokensv1alpha1.PhaseActive, false),
		"soon":     withPhase(tokensv1alpha1.PhaseActive, true),
		"expired":  withPhase(tokensv1alpha1.PhaseExpired, false),
		"idle":     withPhase(tokensv1alpha1.PhaseInactive, false),
		"revoked":  withPhase(tokensv1alpha1.PhaseRevoked, false),
		"pending":  withPhase(tokensv1alpha1.PhasePending, false),
		"failed":   withPhase(tokensv1alpha1.PhaseFailed, false),
		"no-state": {},
	}
	for _, c := range []struct {
		filter Filter
		want   []string
	}{
		{Filter{}, []string{"active", "soon", "expired", "idle", "revoked", "pending", "failed", "no-state"}},
		{Filter{ExpiringSoon: true}, []string{"soon"}},
		{Filter{Inactive: true}, []string{"expired", "idle", "revoked"}},
		{Filter{ExpiringSoon: true, Inactive: true}, []string{"soon", "expired", "idle", "revoked"}},
	} {
		for name, at := range tokens {
			want := false
			for _, w := range c.want {
				want = want || w == name
			}
			if got := c.filter.Matches(at); got != want {
				t.Errorf("%s.Matches(%s) = %v, want %v", c.filter, name, got, want)
			}
		}
	}
}

func TestBuildRefusesBadFlags(t *testing.T) {
	ok := func() createOptions { return createOptions{tokenType: "read-only", duration: "30d"} }
	for _, c := range []struct {
		name string
		edit func(*createOptions)
		want string // "" for valid
	}{
		{"read-only", func(*createOptions) {}, ""},
		{"custom", func(o *createOptions) {
			o.tokenType, o.scopes = "custom", []string{"table:data:read", "orders:*", "*:read"}
		}, ""},
		{"full-access unlimited", func(o *createOptions) { o.tokenType, o.duration = "full-access", "unlimited" }, ""},
		{"go duration", func(o *createOptions) { o.duration, o.renewBefore, o.gracePeriod = "2160h", "7d", "5m" }, ""},
		{"custom without scopes", func(o *createOptions) { o.tokenType = "custom" }, "--type custom needs --scopes"},
		{"scopes on full-access", func(o *createOptions) { o.tokenType, o.scopes = "full-access", []string{"a:read"} }, "(a full-access token grants *:*)"},
		{"malformed scope", func(o *createOptions) { o.tokenType, o.scopes = "custom", []string{"Orders:read"} }, `--scopes "Orders:read": resource "Orders"`},
		{"duration in weeks", func(o *createOptions) { o.duration = "2w" }, "--duration: invalid duration"},
		{"zero duration", func(o *createOptions) { o.duration = "0d" }, "--duration: invalid duration"},
		{"bad grace", func(o *createOptions) { o.gracePeriod = "1.5m" }, "--grace-period: invalid duration"},
		{"bad presentation", func(o *createOptions) { o.presentation = "header" }, `--presentation "header"`},
		{"bad secret name", func(o *createOptions) { o.secretName = "Token_1" }, `--secret-name "Token_1"`},
		{"bad audience", func(o *createOptions) { o.audience = "billing_api" }, `--audience "billing_api"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := ok()
			c.edit(&o)
			at, err := o.build("ci", "team-a")
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("build: %v", err)
			case c.want == "" && (at.Name != "ci" || at.Namespace != "team-a" || string(at.Spec.Type) != o.tokenType):
				t.Fatalf("build = %+v", at)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("build error = %v, want it to contain %q", err, c.want)
			}
		})
	}
	o := ok()
	if _, err := o.build("Not_A_Name", "x"); err == nil || !strings.Contains(err.Error(), `NAME "Not_A_Name"`) {
		t.Errorf("a bad NAME: %v", err)
	}
}

func TestRegenerationState(t *testing.T) {
	const v = "2026-01-02T03:04:05.000000006Z"
	mk := func(f func(*tokensv1alpha1.ApiToken)) *tokensv1alpha1.ApiToken {
		at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "ci", Annotations: map[string]string{tokensv1alpha1.RegenerateAnnotation: v}}}
		at.Status.Phase = tokensv1alpha1.PhaseActive
		at.Status.LastHandledRegenerate = v
		at.Status.Verification = &tokensv1alpha1.Verification{Hash: "h"}
		f(at)
		return at
	}
	conflict := []metav1.Condition{{Type: tokensv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: tokensv1alpha1.ReasonSecretConflict, Message: "taken"}}
	for _, c := range []struct {
		name    string
		at      *tokensv1alpha1.ApiToken
		done    bool
		wantErr string
	}{
		{"handled and Active", mk(func(*tokensv1alpha1.ApiToken) {}), true, ""},
		{"not handled yet", mk(func(at *tokensv1alpha1.ApiToken) { at.Status.LastHandledRegenerate = "older" }), false, ""},
		{"pending write", mk(func(at *tokensv1alpha1.ApiToken) { at.Status.Verification.PendingHash = "p" }), false, ""},
		{"expired before handling", mk(func(at *tokensv1alpha1.ApiToken) {
			at.Status.LastHandledRegenerate, at.Status.Phase = "", tokensv1alpha1.PhaseExpired
		}), false, ""},
		{"revoked meanwhile", mk(func(at *tokensv1alpha1.ApiToken) { at.Spec.Revoked = true }), false, "was revoked while waiting"},
		{"annotation changed", mk(func(at *tokensv1alpha1.ApiToken) { at.Annotations[tokensv1alpha1.RegenerateAnnotation] = "other" }), false, "changed by someone else"},
		{"conflict", mk(func(at *tokensv1alpha1.ApiToken) {
			at.Status.LastHandledRegenerate, at.Status.Phase, at.Status.Conditions = "", tokensv1alpha1.PhaseFailed, conflict
		}), false, "cannot be regenerated: Ready=False SecretConflict: taken"},
	} {
		t.Run(c.name, func(t *testing.T) {
			done, err := regenerationState(c.at, v)
			if done != c.done || (c.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("regenerationState = %v, %v; want %v, %q", done, err, c.done, c.wantErr)
			}
		})
	}
}

func TestFreshValue(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		tokensv1alpha1.RegenerateAnnotation: "2026-01-02T03:04:05.000000006Z",
	}}}
	at.Status.LastHandledRegenerate = "2026-01-02T03:04:05.000000007Z"
	if got := freshValue(at, now); got != "2026-01-02T03:04:05.000000008Z" {
		t.Fatalf("freshValue = %q", got)
	}
}

func TestDescribe(t *testing.T) {
	gr := schema.GroupResource{Group: "tokens.apitoken.dev", Resource: "apitokens"}
	nf := describe(apierrors.NewNotFound(gr, "x"), "get", resourceFull, "team-a", "x")
	if nf.Error() != `apitoken "x" not found in namespace team-a` || !apierrors.IsNotFound(errors.Unwrap(nf)) {
		t.Errorf("not found: %v", nf)
	}
	sec := describe(apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, "x-token"), "get", "secrets", "team-a", "x-token")
	if sec.Error() != `secret "x-token" not found in namespace team-a` {
		t.Errorf("secret not found: %v", sec)
	}
	noCRD := (&apiTokenClient{server: "http://localhost:8080"}).describe(&apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: 404, Message: "the server could not find the requested resource"}},
		"list", "team-a", "")
	if !strings.HasPrefix(noCRD.Error(), "the ApiToken API (tokens.apitoken.dev/v1alpha1) is not installed in the cluster at http://localhost:8080 (the one you meant? check KUBECONFIG and --context)") {
		t.Errorf("no CRD: %v", noCRD)
	}
	forbidden := describe(apierrors.NewForbidden(gr, "x", errors.New(`User "bob" cannot get resource "apitokens"`)), "get", resourceFull, "team-a", "x")
	if !strings.HasPrefix(forbidden.Error(), `forbidden: you cannot get apitokens.tokens.apitoken.dev "x" in namespace team-a (`) ||
		!strings.Contains(forbidden.Error(), `User "bob" cannot get resource "apitokens"`) {
		t.Errorf("forbidden: %v", forbidden)
	}
	invalid := describe(apierrors.NewInvalid(schema.GroupKind{Group: "tokens.apitoken.dev", Kind: "ApiToken"}, "billing", field.ErrorList{
		field.Forbidden(field.NewPath("spec", "duration"), `ApiTokenPolicy "org-defaults": spec.duration 2160h exceeds maxDuration 720h`),
		field.Forbidden(field.NewPath("spec", "type"), `ApiTokenPolicy "org-defaults": spec.type full-access is not allowed`),
	}), "create", resourceFull, "team-a", "billing")
	if want := "apitoken \"billing\" is invalid:\n* spec.duration: Forbidden: ApiTokenPolicy \"org-defaults\": spec.duration 2160h exceeds maxDuration 720h\n* spec.type: Forbidden: ApiTokenPolicy \"org-defaults\": spec.type full-access is not allowed"; invalid.Error() != want || !apierrors.IsInvalid(invalid) {
		t.Errorf("invalid: got %q, want %q", invalid, want)
	}
	if other := errors.New("boom"); !errors.Is(describe(other, "get", resourceFull, "a", "b"), other) {
		t.Error("a non-API error is returned as is")
	}
}

func TestParseServiceRef(t *testing.T) {
	for in, want := range map[string]serviceRef{
		"apitoken-system/apitoken-operator-auth:8082": {"apitoken-system", "apitoken-operator-auth", "8082"},
		"auth/my-auth:https":                          {"auth", "my-auth", "https"},
		"my-auth":                                     {"apitoken-system", "my-auth", "8082"},
	} {
		got, err := parseServiceRef(in)
		if err != nil || got != want {
			t.Errorf("parseServiceRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ns/", "/name:1", "ns/name:", "a/b/c:1"} {
		if _, err := parseServiceRef(bad); err == nil {
			t.Errorf("parseServiceRef(%q) accepted", bad)
		}
	}
}

func TestPickPod(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "apitoken-operator-auth", Namespace: "apitoken-system"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "auth", Port: 8082, TargetPort: intstr.FromString("auth")},
			{Name: "grpc-auth", Port: 9002, TargetPort: intstr.FromInt32(19002)},
		}},
	}
	pod := func(name string, age time.Duration, phase corev1.PodPhase, ready bool) corev1.Pod {
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "apitoken-system", CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(-age))},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "auth", Ports: []corev1.ContainerPort{{Name: "auth", ContainerPort: 18082}}}}},
			Status:     corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
		}
	}
	pods := []corev1.Pod{
		pod("not-ready", 3*time.Hour, corev1.PodRunning, false),
		pod("young", time.Hour, corev1.PodRunning, true),
		pod("old", 2*time.Hour, corev1.PodRunning, true),
		pod("done", 4*time.Hour, corev1.PodSucceeded, true),
	}
	for _, c := range []struct {
		port     string
		pods     []corev1.Pod
		wantPod  string
		wantPort int32
		wantErr  string
	}{
		{"8082", pods, "old", 18082, ""},
		{"auth", pods, "old", 18082, ""},
		{"9002", pods, "old", 19002, ""},
		{"8443", pods, "", 0, `service "apitoken-operator-auth" in namespace apitoken-system has no port 8443; it has 8082 (auth), 9002 (grpc-auth)`},
		{"8082", pods[:1], "", 0, "has no running, ready pod (of 1 selected)"},
	} {
		p, port, err := pickPod(svc, c.port, c.pods)
		if p != c.wantPod || port != c.wantPort || (c.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("pickPod(%s) = %q, %d, %v; want %q, %d, %q", c.port, p, port, err, c.wantPod, c.wantPort, c.wantErr)
		}
	}
}

// TestEveryCommandHasHelpWithExamples runs --help for every command.
func TestEveryCommandHasHelpWithExamples(t *testing.T) {
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	root := NewRootCommand(streams)
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Hidden {
				continue
			}
			if sub.Example == "" || sub.Short == "" || sub.Long == "" {
				t.Errorf("%s: Short, Long and Example are required", sub.CommandPath())
			}
			walk(sub)
		}
	}
	walk(root)
	for _, c := range root.Commands() {
		if c.Name() == "help" {
			continue
		}
		out.Reset()
		root.SetArgs([]string{c.Name(), "--help"})
		if err := root.Execute(); err != nil {
			t.Errorf("%s --help: %v", c.Name(), err)
		}
		if !strings.Contains(out.String(), "kubectl apitoken "+c.Name()) || !strings.Contains(out.String(), "Examples:") {
			t.Errorf("%s --help does not show its usage and examples:\n%s", c.Name(), out.String())
		}
	}
}

func TestStatusShowsTheFirstUseThatEndsTheGrace(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	used := metav1.NewTime(now.Add(-90 * time.Second))
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "ci", Namespace: "team-a"},
		Spec: tokensv1alpha1.ApiTokenSpec{Type: tokensv1alpha1.ReadOnly, Duration: "30d",
			Rotation: &tokensv1alpha1.Rotation{GracePeriod: "1h", GraceUntilNewTokenUsed: true}},
		Status: tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{FirstUsedAt: &used}}}
	var out strings.Builder
	if err := printFields(&out, at, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`(?m)^Grace ends:\s+when the new token is first used, at the latest after the grace period$`,
		`(?m)^First used:\s+2026-12-07T11:58:30Z \(`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("no %s in\n%s", want, out.String())
		}
	}
	at.Spec.Rotation.GraceUntilNewTokenUsed, at.Status.Verification.FirstUsedAt = false, nil
	out.Reset()
	if err := printFields(&out, at, now); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "Grace ends") || strings.Contains(out.String(), "First used") {
		t.Errorf("a token without a first use says one:\n%s", out.String())
	}
}

// TestRedactDropsEveryHash: every field of status.verification that holds
// a token's digest (its name ends in Hash) is empty in what the plugin
// prints, including fields added after redact was written.
func TestRedactDropsEveryHash(t *testing.T) {
	at := &tokensv1alpha1.ApiToken{Status: tokensv1alpha1.ApiTokenStatus{Verification: &tokensv1alpha1.Verification{SaltID: "s"}}}
	v := reflect.ValueOf(at.Status.Verification).Elem()
	var hashes []string
	for i := range v.NumField() {
		if f := v.Type().Field(i); strings.HasSuffix(f.Name, "Hash") {
			v.Field(i).SetString("digest-of-" + f.Name)
			hashes = append(hashes, f.Name)
		}
	}
	if len(hashes) < 5 {
		t.Fatalf("found only %v: the test no longer sees the hash fields", hashes)
	}
	out := reflect.ValueOf(redact(at).Status.Verification).Elem()
	for _, name := range hashes {
		if got := out.FieldByName(name).String(); got != "" {
			t.Errorf("redact kept %s", name)
		}
	}
	if redact(at).Status.Verification.SaltID != "s" {
		t.Error("redact dropped saltID, which is no hash")
	}
}

// TestExpiresTextOfAMissedShowOnceToken: a show-once token nobody picked
// up never verifies, so list shows no expiry for it (it showed "in 29d").
func TestExpiresTextOfAMissedShowOnceToken(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := &tokensv1alpha1.ApiToken{Spec: tokensv1alpha1.ApiTokenSpec{Duration: "30d", ShowOnce: &tokensv1alpha1.ShowOnce{PublicKey: "k"}}}
	at.Status.IssuedAt = &metav1.Time{Time: now.Add(-time.Hour)}
	at.Status.ExpiresAt = &metav1.Time{Time: now.Add(29 * 24 * time.Hour)}
	at.Status.ShowOnce = &tokensv1alpha1.ShowOnceStatus{PickupBy: &metav1.Time{Time: now.Add(-55 * time.Minute)}}
	if got := expiresText(at, now); got != "-" {
		t.Errorf("missed: %q, want -", got)
	}
	at.Status.ShowOnce.PickedUpAt = &metav1.Time{Time: now.Add(-58 * time.Minute)}
	if got := expiresText(at, now); got != "in 29d" {
		t.Errorf("picked up: %q, want in 29d", got)
	}
}

// TestCreatedBy: the groups annotation is the webhook's JSON array, shown
// as docs/kubectl-plugin.md shows it.
func TestCreatedBy(t *testing.T) {
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		tokensv1alpha1.CreatedByAnnotation:       "alice",
		tokensv1alpha1.CreatedByGroupsAnnotation: `["team-a","system:authenticated"]`,
	}}}
	if got := createdBy(at); got != "alice (groups: team-a, system:authenticated)" {
		t.Errorf("got %q", got)
	}
	at.Annotations[tokensv1alpha1.CreatedByGroupsAnnotation] = "team-a,system:authenticated"
	if got := createdBy(at); got != "alice (groups: team-a, system:authenticated)" {
		t.Errorf("a comma-separated list: %q", got)
	}
	delete(at.Annotations, tokensv1alpha1.CreatedByGroupsAnnotation)
	if got := createdBy(at); got != "alice" {
		t.Errorf("without groups: %q", got)
	}
}
