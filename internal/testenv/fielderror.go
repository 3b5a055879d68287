package testenv

import (
	"regexp"
	"strings"

	"github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
)

// quotedValue is the value a field error quotes: `Invalid value: "v": `.
var quotedValue = regexp.MustCompile(`Invalid value: "(?:[^"\\]|\\.)*"(: |$)`)

// ContainFieldError matches an API server's error holding want, a field
// error as the default kube-apiserver (1.37) words it, e.g.
// `spec.scopes[1]: Invalid value: "orders": must be ...`. kube-apiserver
// 1.33 words the error of a CRD validation rule (CEL) with the type of the
// value instead of the value (`Invalid value: "string": must be ...`,
// `Invalid value: "object": ...` where 1.37 quotes none): that wording
// matches too, with the same field path and message, so that make test-k8s
// runs the same expectations against the older server.
func ContainFieldError(want string) types.GomegaMatcher {
	matchers := []types.GomegaMatcher{gomega.ContainSubstring(want)}
	var older []string
	if quotedValue.MatchString(want) {
		for _, typ := range []string{"string", "object", "integer", "array", "number", "boolean"} {
			older = append(older, quotedValue.ReplaceAllString(want, `Invalid value: "`+typ+`"${1}`))
		}
	} else if i := strings.Index(want, "Invalid value: "); i >= 0 {
		older = append(older, want[:i]+`Invalid value: "object": `+want[i+len("Invalid value: "):])
	}
	for _, o := range older {
		matchers = append(matchers, gomega.ContainSubstring(o))
	}
	return gomega.Or(matchers...)
}
