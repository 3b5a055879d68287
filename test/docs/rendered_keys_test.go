package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/secretdata"
	webhookv1alpha1 "github.com/apitoken-operator/apitoken-operator/webhook/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRenderedKeysExampleIsAdmittedAndRenders: the example of
// docs/lifecycle.md#rendered-keys is admitted by the webhook's rules and
// renders the four keys its comments describe.
func TestRenderedKeysExampleIsAdmittedAndRenders(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "lifecycle.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "### Rendered keys")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("no yaml example under ### Rendered keys in docs/lifecycle.md")
	}
	var doc struct {
		Spec tokensv1alpha1.ApiTokenSpec `json:"spec"`
	}
	if err := yaml.UnmarshalStrict([]byte(block), &doc); err != nil {
		t.Fatalf("the example does not parse: %v", err)
	}
	at := &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: "team-a"}, Spec: doc.Spec}
	if errs, _ := webhookv1alpha1.ValidateApiToken(nil, at, time.Now()); len(errs) > 0 {
		t.Fatalf("the webhook refuses the example: %v", errs)
	}
	tok := "apitok_example"
	out, ok := secretdata.Render(doc.Spec.SecretTemplate.Data, tok, secretdata.Identity{Name: "billing", Namespace: "team-a", Audience: "billing-api"})
	want := map[string]string{"API_KEY": tok, "authorization": "Bearer " + tok, "app.env": "BILLING_TOKEN=" + tok + "\n",
		"token.json": `{"token":"apitok_example","name":"billing","namespace":"team-a","audience":"billing-api"}`}
	if !ok || len(out) != len(want) {
		t.Fatalf("rendered %d keys (ok %v), want %d", len(out), ok, len(want))
	}
	for k, v := range want {
		if string(out[k]) != v {
			t.Errorf("%s = %q, want %q", k, out[k], v)
		}
	}
}
