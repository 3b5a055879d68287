package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/policy"
)

// TestPolicyExampleRefusesAsDocumented: the policy and the token of
// docs/policy.md parse strictly, and the policy refuses the token with
// exactly the errors the page shows.
func TestPolicyExampleRefusesAsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "policy.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := fenced(string(b))
	if len(blocks) < 3 {
		t.Fatalf("docs/policy.md: want the policy, the refusal and the token as its first three fenced blocks, got %d", len(blocks))
	}
	var p tokensv1alpha1.ApiTokenPolicy
	if err := yaml.UnmarshalStrict([]byte(blocks[0]), &p); err != nil {
		t.Fatalf("the policy does not parse: %v", err)
	}
	var at tokensv1alpha1.ApiToken
	if err := yaml.UnmarshalStrict([]byte(blocks[2]), &at); err != nil {
		t.Fatalf("the token does not parse: %v", err)
	}
	parsed := policy.Parse(&p)
	if err := parsed.Err(); err != nil {
		t.Fatal(err)
	}
	if !parsed.Selects(map[string]string{"tenant": "true"}) || parsed.Selects(map[string]string{}) {
		t.Error(`the example policy must select the namespaces labelled tenant: "true", and only them`)
	}
	var want []string
	for _, e := range policy.Errors(parsed.Check(&at.Spec)) {
		want = append(want, "* "+e.Error())
	}
	got := strings.Split(strings.TrimSpace(blocks[1]), "\n")[1:]
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the page shows\n%s\nthe policy refuses with\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// fenced returns the contents of a page's fenced code blocks, in order.
func fenced(doc string) []string {
	var out []string
	for {
		_, rest, ok := strings.Cut(doc, "```")
		if !ok {
			return out
		}
		_, rest, _ = strings.Cut(rest, "\n")
		block, after, ok := strings.Cut(rest, "```")
		if !ok {
			return out
		}
		out = append(out, block)
		doc = after
	}
}
