// Package testredact keeps tokens out of test failure messages: imported
// (for its side effect) by every Ginkgo suite, it makes Gomega print each
// token it would show (`atk_` and 49 characters of the token alphabet) as
// its prefix and a note, so that an `Expect(fresh).NotTo(Equal(old))`
// that fails says which assertion failed without printing the token into
// CI's log. Only tests import it.
package testredact

import (
	"regexp"
	"strconv"

	"github.com/onsi/gomega/format"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// tokens matches what token.Generate makes, anywhere in a string.
var tokens = regexp.MustCompile(regexp.QuoteMeta(token.Prefix) + `[0-9A-Za-z]{` + strconv.Itoa(token.Length-len(token.Prefix)) + `}`)

// Redact replaces every token in s.
func Redact(s string) string { return tokens.ReplaceAllString(s, token.Prefix+"<a token, redacted>") }

func init() {
	format.RegisterCustomFormatter(func(v any) (string, bool) {
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case []byte:
			s = string(x)
		default:
			return "", false
		}
		if !tokens.MatchString(s) {
			return "", false
		}
		return format.Object(Redact(s), 0), true
	})
}
