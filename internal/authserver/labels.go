package authserver

import (
	"net/http"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The identity labels: an ApiToken's labels whose key starts with the
// configured prefix (--auth-identity-label-prefix, e.g.
// tokens.apitoken.dev/) travel with its identity, for the proxy's rate
// limiter and routing: label <prefix>tier: gold is the header
// X-ApiToken-Tier: gold on a 200 of every HTTP door, the same header and
// the dynamic metadata key tier on a gRPC OK, and the extra
// <prefix>tier: [gold] of a TokenReview. A tenant writes its ApiToken's
// labels, so which ones count, under which names, is decided here, once,
// when the index builds the identity; never per request.

// identityHeaderPrefix starts every identity header but X-Auth-Request-User,
// in canonical form: the header space that a client may not write into
// (foreignHeaders), whatever labels exist.
const identityHeaderPrefix = "X-Apitoken-"

// MaxIdentityLabels is the most identity labels one ApiToken carries: the
// first by key; the others are left out, so that a tenant cannot grow
// every answer, and the index, with labels.
const MaxIdentityLabels = 8

// reservedLabelNames are label names that would map onto a header this
// endpoint sets from the token itself (X-ApiToken-Name, -Namespace, -Type,
// -Scopes) or may one day (-User, -Uid, -Audience): such a label is left
// out, never allowed to replace the identity.
var reservedLabelNames = []string{"name", "namespace", "type", "scopes", "user", "uid", "audience"}

// IdentityLabel is one identity label of a token.
type IdentityLabel struct {
	// Key is the label's key (<prefix><name>), the TokenReview extra's key.
	Key string
	// Name is the part after the prefix: the dynamic metadata key.
	Name string
	// Header is X-ApiToken-<Name> title-cased, as the docs spell it.
	Header string
	// canonical is Header as net/http keys it (X-Apitoken-Tier).
	canonical string
	// values is the one value, as a header map holds it (built once).
	values []string
}

// Value is the label's value.
func (l *IdentityLabel) Value() string { return l.values[0] }

// ValidIdentityLabelPrefix says what is wrong with prefix as
// --auth-identity-label-prefix: a label key prefix, a DNS subdomain and
// a '/'; "" when it is one (or empty: off).
func ValidIdentityLabelPrefix(prefix string) string {
	if prefix == "" {
		return ""
	}
	domain, ok := strings.CutSuffix(prefix, "/")
	if !ok || domain == "" || len(validation.IsDNS1123Subdomain(domain)) > 0 {
		return "not a label key prefix (a DNS subdomain followed by /, e.g. tokens.apitoken.dev/)"
	}
	return ""
}

// identityLabels returns the identity labels of labels under prefix
// (none when prefix is empty), sorted by key, at most MaxIdentityLabels.
// A label is left out unless its name (after the prefix) is lower-case
// letters and digits in words joined by single '-' (so that no two labels
// map to one header, and no name has a '_' that a CGI upstream reads as
// '-', or a '.'), is not reserved, and its value is a valid label value
// (the API server checks that too; the index does not rely on it: CR, LF,
// non-ASCII and values over 63 bytes never reach a header).
func identityLabels(prefix string, labels map[string]string) []IdentityLabel {
	if prefix == "" || len(labels) == 0 {
		return nil
	}
	var out []IdentityLabel
	for k, v := range labels {
		name, ok := strings.CutPrefix(k, prefix)
		if !ok || !headerWord(name) || slices.Contains(reservedLabelNames, name) || len(validation.IsValidLabelValue(v)) > 0 {
			continue
		}
		header := "X-ApiToken-" + titleCase(name)
		out = append(out, IdentityLabel{Key: k, Name: name, Header: header, canonical: http.CanonicalHeaderKey(header), values: []string{v}})
	}
	slices.SortFunc(out, func(a, b IdentityLabel) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > MaxIdentityLabels {
		out = out[:MaxIdentityLabels:MaxIdentityLabels]
	}
	return out
}

// headerWord reports whether name is words of a-z and 0-9 joined by
// single '-', at most 63 bytes (a label name's bound).
func headerWord(name string) bool {
	if name == "" || len(name) > validation.LabelValueMaxLength || name[0] == '-' || name[len(name)-1] == '-' || strings.Contains(name, "--") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// titleCase upper-cases the first letter of each '-' word: rate-limit is
// Rate-Limit.
func titleCase(name string) string {
	b := []byte(name)
	for i := range b {
		if (i == 0 || b[i-1] == '-') && 'a' <= b[i] && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// labelsKey is the identity labels as one string, for sharing a Grant.
func labelsKey(labels []IdentityLabel) string {
	var b strings.Builder
	for _, l := range labels {
		b.WriteString(l.Key)
		b.WriteByte('=')
		b.WriteString(l.Value())
		b.WriteByte(0)
	}
	return b.String()
}

// labelsMetadata is the dynamic metadata of a gRPC OK for labels: one
// string field per label, by name; nil for none.
func labelsMetadata(labels []IdentityLabel) *structpb.Struct {
	if len(labels) == 0 {
		return nil
	}
	fields := make(map[string]*structpb.Value, len(labels))
	for _, l := range labels {
		fields[l.Name] = structpb.NewStringValue(l.Value())
	}
	return &structpb.Struct{Fields: fields}
}

// isIdentityHeaderSpace reports whether canonical header k is in the
// identity headers' space (X-ApiToken-*) without being one of the five
// every 200 sets: a label header, of this token or another, or one a
// label may name tomorrow. The documented proxies cannot overwrite such
// a header when the token has no such label (Envoy copies only what the
// answer carries), so a client's copy is refused, never passed on.
func isIdentityHeaderSpace(k string) bool {
	return len(k) > len(identityHeaderPrefix) && strings.HasPrefix(k, identityHeaderPrefix) && !isIdentityHeader(k)
}
