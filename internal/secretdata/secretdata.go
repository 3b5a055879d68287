// Package secretdata renders the keys of an ApiToken's
// spec.secretTemplate.data from its token and identity, and validates
// them. It is pure: the webhook refuses what Validate refuses, the
// reconciler renders with Render, and neither logs what it renders.
//
// The vocabulary is closed (four formats, one optional variable name): a
// tenant chooses key names and formats, never text that is evaluated, so
// a template reaches nothing but the token and its identity, and what it
// renders is bounded (MaxKeys keys of at most MaxRenderedSize bytes).
package secretdata

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// MaxKeys is the most keys secretTemplate.data may list (also the CRD
// schema's maxProperties).
const MaxKeys = 16

// DefaultVariable is the variable name of format env when none is given.
const DefaultVariable = "API_TOKEN"

// maxVariable bounds an env variable name (also the CRD schema's).
const maxVariable = 63

// MaxRenderedSize bounds one rendered value: the json format with the
// longest name (253), namespace (63) and audience (63) and a token of at
// most maxToken bytes, escaped, stays below it.
const MaxRenderedSize = 2048

// Identity is what a rendering may say besides the token.
type Identity struct {
	Name, Namespace, Audience string
	// ExpiresAt is when the token expires; zero for an unlimited token.
	ExpiresAt time.Time
}

// Validate checks the keys and formats of data (at path): each key a
// valid Secret key that is not "token" (it would replace the raw token,
// which every workload reading "token" and the operator's tamper check
// rely on), a known format, a variable only for env and a valid name, at
// most MaxKeys keys. Errors come in key order.
func Validate(data map[string]tokensv1alpha1.SecretDataKey, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(data) > MaxKeys {
		errs = append(errs, field.TooMany(path, len(data), MaxKeys))
	}
	formats := []string{string(tokensv1alpha1.FormatToken), string(tokensv1alpha1.FormatBearer), string(tokensv1alpha1.FormatEnv), string(tokensv1alpha1.FormatJSON)}
	for _, k := range slices.Sorted(maps.Keys(data)) {
		d, kp := data[k], path.Key(k)
		if k == tokensv1alpha1.SecretTokenKey {
			errs = append(errs, field.Forbidden(kp, `the key "token" always holds the raw token (workloads and the operator's tamper check read it); choose another key name`))
			continue
		}
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(path, k, "must be a valid Secret key: "+msg))
		}
		if !slices.Contains(formats, string(d.Format)) {
			errs = append(errs, field.NotSupported(kp.Child("format"), d.Format, formats))
		}
		if d.Variable == "" {
			continue
		}
		if d.Format != tokensv1alpha1.FormatEnv {
			errs = append(errs, field.Forbidden(kp.Child("variable"), "variable is only allowed with format env"))
		} else if !validVariable(d.Variable) {
			errs = append(errs, field.Invalid(kp.Child("variable"), d.Variable, "must be an environment variable name: a letter or '_', then letters, digits or '_', at most 63"))
		}
	}
	return errs
}

func validVariable(v string) bool {
	if v == "" || len(v) > maxVariable || (v[0] >= '0' && v[0] <= '9') {
		return false
	}
	for _, c := range v {
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Render returns the value of each key of data for tok and id: every key
// empty when tok is empty (revoked). A key Validate refuses is not
// rendered (ok false): the caller writes nothing on such a spec.
func Render(data map[string]tokensv1alpha1.SecretDataKey, tok string, id Identity) (out map[string][]byte, ok bool) {
	if len(Validate(data, field.NewPath("data"))) > 0 {
		return nil, false
	}
	out = make(map[string][]byte, len(data))
	for k, d := range data {
		out[k] = []byte(render(d, tok, id))
	}
	return out, true
}

func render(d tokensv1alpha1.SecretDataKey, tok string, id Identity) string {
	if tok == "" {
		return ""
	}
	switch d.Format {
	case tokensv1alpha1.FormatBearer:
		return "Bearer " + tok
	case tokensv1alpha1.FormatEnv:
		v := d.Variable
		if v == "" {
			v = DefaultVariable
		}
		return v + "=" + tok + "\n"
	case tokensv1alpha1.FormatJSON:
		doc := struct {
			Token     string `json:"token"`
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
			Audience  string `json:"audience"`
			ExpiresAt string `json:"expiresAt,omitempty"`
		}{tok, id.Name, id.Namespace, id.Audience, ""}
		if !id.ExpiresAt.IsZero() {
			doc.ExpiresAt = id.ExpiresAt.UTC().Format(time.RFC3339)
		}
		b, err := json.Marshal(doc)
		if err != nil {
			return ""
		}
		return string(b)
	}
	return tok
}

// Fingerprint says what Render renders for data and id, without the
// token: equal fingerprints render equal keys for the same token. A
// revoked token's renderings (all empty) do not depend on id. No data:
// the empty string.
func Fingerprint(data map[string]tokensv1alpha1.SecretDataKey, id Identity, revoked bool) string {
	if len(data) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(data)) {
		d := data[k]
		for _, p := range []string{k, string(d.Format), d.Variable} {
			b.WriteString(strconv.Itoa(len(p)) + ":" + p)
		}
	}
	if !revoked {
		exp := ""
		if !id.ExpiresAt.IsZero() {
			exp = id.ExpiresAt.UTC().Format(time.RFC3339)
		}
		for _, p := range []string{id.Name, id.Namespace, id.Audience, exp} {
			b.WriteString(strconv.Itoa(len(p)) + ":" + p)
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:16])
}
