package testredact

import (
	"strings"
	"testing"

	"github.com/onsi/gomega"
	"github.com/onsi/gomega/format"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// TestAFailureNeverPrintsAToken: the messages of the matchers the suites
// compare tokens with carry no token, as strings and as bytes.
func TestAFailureNeverPrintsAToken(t *testing.T) {
	a, err := token.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := token.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var messages []string
	g := gomega.NewGomega(func(message string, _ ...int) { messages = append(messages, message) })
	g.Expect(a).To(gomega.Equal(b))
	g.Expect(a).NotTo(gomega.Equal(a))
	g.Expect([]byte("Bearer " + a)).To(gomega.BeEmpty())
	g.Expect(map[string]string{"token": a}).To(gomega.BeEmpty())
	if len(messages) != 4 {
		t.Fatalf("%d failures, want 4", len(messages))
	}
	// Equal of two strings shows only a few characters around the first
	// difference (Gomega's truncated diff); every other message says
	// the token was redacted.
	for i, m := range messages {
		for _, tok := range []string{a, b} {
			for j := len(token.Prefix); j+12 <= len(tok); j++ {
				if strings.Contains(m, tok[j:j+12]) {
					t.Fatalf("a failure printed 12 characters of a token:\n%s", m)
				}
			}
		}
		if i > 0 && !strings.Contains(m, "redacted") {
			t.Errorf("no note of the redaction in:\n%s", m)
		}
	}
	if got := format.Object("no token here", 0); !strings.Contains(got, "no token here") {
		t.Errorf("a string without a token changed: %s", got)
	}
}
