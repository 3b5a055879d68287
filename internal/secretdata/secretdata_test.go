package secretdata

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

const tok = "apitok_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH_checksum"

var id = Identity{Name: "ci-reader", Namespace: "team-a", Audience: "billing-api", ExpiresAt: time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)}

func TestRender(t *testing.T) {
	data := map[string]tokensv1alpha1.SecretDataKey{
		"API_KEY":       {Format: tokensv1alpha1.FormatToken},
		"authorization": {Format: tokensv1alpha1.FormatBearer},
		"app.env":       {Format: tokensv1alpha1.FormatEnv, Variable: "BILLING_TOKEN"},
		"default.env":   {Format: tokensv1alpha1.FormatEnv},
		"token.json":    {Format: tokensv1alpha1.FormatJSON},
	}
	out, ok := Render(data, tok, id)
	if !ok {
		t.Fatal("a valid template was not rendered")
	}
	want := map[string]string{
		"API_KEY":       tok,
		"authorization": "Bearer " + tok,
		"app.env":       "BILLING_TOKEN=" + tok + "\n",
		"default.env":   "API_TOKEN=" + tok + "\n",
		"token.json":    `{"token":"` + tok + `","name":"ci-reader","namespace":"team-a","audience":"billing-api","expiresAt":"2027-01-02T03:04:05Z"}`,
	}
	if len(out) != len(want) {
		t.Fatalf("rendered %d keys, want %d", len(out), len(want))
	}
	for k, v := range want {
		if string(out[k]) != v {
			t.Errorf("%s = %q, want %q", k, out[k], v)
		}
	}
	// Unlimited: no expiresAt.
	unlimited := id
	unlimited.ExpiresAt = time.Time{}
	out, _ = Render(data, tok, unlimited)
	var doc map[string]string
	if err := json.Unmarshal(out["token.json"], &doc); err != nil || doc["token"] != tok {
		t.Fatalf("json %q: %v", out["token.json"], err)
	}
	if _, has := doc["expiresAt"]; has {
		t.Fatalf("an unlimited token's json has expiresAt: %q", out["token.json"])
	}
	// Revoked: every key present and empty.
	out, _ = Render(data, "", id)
	for k := range data {
		if v, has := out[k]; !has || len(v) != 0 {
			t.Errorf("revoked: %s = %q (present %v), want empty", k, v, has)
		}
	}
}

// TestRenderIsBounded: the longest identity the API allows, in every
// format and every key, stays below MaxRenderedSize per key and
// MaxKeys*MaxRenderedSize in all; a name that needs JSON escaping stays
// inside its string.
func TestRenderIsBounded(t *testing.T) {
	long := Identity{Name: strings.Repeat("a", 253), Namespace: strings.Repeat("b", 63), Audience: strings.Repeat("c", 63), ExpiresAt: id.ExpiresAt}
	data := map[string]tokensv1alpha1.SecretDataKey{}
	for i := range MaxKeys {
		data[strings.Repeat("k", 240)+string(rune('a'+i))] = tokensv1alpha1.SecretDataKey{Format: tokensv1alpha1.FormatJSON}
	}
	data[strings.Repeat("e", 253)] = tokensv1alpha1.SecretDataKey{Format: tokensv1alpha1.FormatEnv, Variable: strings.Repeat("V", 63)}
	delete(data, strings.Repeat("k", 240)+"a")
	out, ok := Render(data, tok, long)
	if !ok {
		t.Fatal(Validate(data, field.NewPath("data")))
	}
	for k, v := range out {
		if len(v) > MaxRenderedSize {
			t.Errorf("%s renders %d bytes, over %d", k, len(v), MaxRenderedSize)
		}
	}
	quoted := id
	quoted.Name = `x","token":"forged`
	out, _ = Render(map[string]tokensv1alpha1.SecretDataKey{"j": {Format: tokensv1alpha1.FormatJSON}}, tok, quoted)
	var doc map[string]string
	if err := json.Unmarshal(out["j"], &doc); err != nil || doc["token"] != tok || doc["name"] != quoted.Name {
		t.Fatalf("json %q: a name broke out of its string", out["j"])
	}
}

func TestValidate(t *testing.T) {
	tooMany := map[string]tokensv1alpha1.SecretDataKey{}
	for i := range MaxKeys + 1 {
		tooMany[string(rune('a'+i))] = tokensv1alpha1.SecretDataKey{Format: tokensv1alpha1.FormatToken}
	}
	for name, c := range map[string]struct {
		data map[string]tokensv1alpha1.SecretDataKey
		want string
	}{
		"key shadows token":         {map[string]tokensv1alpha1.SecretDataKey{"token": {Format: tokensv1alpha1.FormatBearer}}, `data[token]: Forbidden: the key "token" always holds the raw token`},
		"key token as token too":    {map[string]tokensv1alpha1.SecretDataKey{"token": {Format: tokensv1alpha1.FormatToken}}, `data[token]: Forbidden`},
		"key with a slash":          {map[string]tokensv1alpha1.SecretDataKey{"../etc/passwd": {Format: tokensv1alpha1.FormatToken}}, `data: Invalid value: "../etc/passwd": must be a valid Secret key`},
		"key with a space":          {map[string]tokensv1alpha1.SecretDataKey{"API KEY": {Format: tokensv1alpha1.FormatToken}}, `data: Invalid value: "API KEY": must be a valid Secret key`},
		"key dot-dot":               {map[string]tokensv1alpha1.SecretDataKey{"..": {Format: tokensv1alpha1.FormatToken}}, `data: Invalid value: "..": must be a valid Secret key`},
		"empty key":                 {map[string]tokensv1alpha1.SecretDataKey{"": {Format: tokensv1alpha1.FormatToken}}, `data: Invalid value: "": must be a valid Secret key`},
		"unknown format":            {map[string]tokensv1alpha1.SecretDataKey{"k": {Format: "{{.Token}}"}}, `data[k].format: Unsupported value: "{{.Token}}"`},
		"variable on a bearer":      {map[string]tokensv1alpha1.SecretDataKey{"k": {Format: tokensv1alpha1.FormatBearer, Variable: "X"}}, `data[k].variable: Forbidden: variable is only allowed with format env`},
		"variable with a newline":   {map[string]tokensv1alpha1.SecretDataKey{"k": {Format: tokensv1alpha1.FormatEnv, Variable: "A\nB=1"}}, `data[k].variable: Invalid value: "A\nB=1": must be an environment variable name`},
		"variable starting a digit": {map[string]tokensv1alpha1.SecretDataKey{"k": {Format: tokensv1alpha1.FormatEnv, Variable: "1X"}}, `data[k].variable: Invalid value: "1X"`},
		"too many keys":             {tooMany, "data: Too many: 17: must have at most 16 items"},
	} {
		errs := Validate(c.data, field.NewPath("data"))
		if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), c.want) {
			t.Errorf("%s: errors %v, want %q", name, errs, c.want)
		}
		if _, ok := Render(c.data, tok, id); ok {
			t.Errorf("%s: rendered a template Validate refuses", name)
		}
	}
	if errs := Validate(map[string]tokensv1alpha1.SecretDataKey{"API_KEY": {Format: tokensv1alpha1.FormatToken}, "a.env": {Format: tokensv1alpha1.FormatEnv, Variable: "_X1"}}, field.NewPath("data")); len(errs) != 0 {
		t.Fatalf("a valid template refused: %v", errs)
	}
}

// TestFingerprint: every input of a rendering but the token changes the
// fingerprint; a revoked token's does not depend on the identity.
func TestFingerprint(t *testing.T) {
	data := map[string]tokensv1alpha1.SecretDataKey{"k": {Format: tokensv1alpha1.FormatEnv, Variable: "A"}}
	base := Fingerprint(data, id, false)
	if base == "" || Fingerprint(nil, id, false) != "" {
		t.Fatal("fingerprint of data empty, or of no data not empty")
	}
	later := id
	later.ExpiresAt = later.ExpiresAt.Add(time.Second)
	other := id
	other.Audience = "admin"
	for name, fp := range map[string]string{
		"variable":  Fingerprint(map[string]tokensv1alpha1.SecretDataKey{"k": {Format: tokensv1alpha1.FormatEnv, Variable: "B"}}, id, false),
		"format":    Fingerprint(map[string]tokensv1alpha1.SecretDataKey{"k": {Format: tokensv1alpha1.FormatToken}}, id, false),
		"key":       Fingerprint(map[string]tokensv1alpha1.SecretDataKey{"l": {Format: tokensv1alpha1.FormatEnv, Variable: "A"}}, id, false),
		"expiresAt": Fingerprint(data, later, false),
		"audience":  Fingerprint(data, other, false),
		"revoked":   Fingerprint(data, id, true),
	} {
		if fp == base {
			t.Errorf("a different %s gives the same fingerprint", name)
		}
	}
	if Fingerprint(data, id, true) != Fingerprint(data, other, true) {
		t.Error("a revoked token's fingerprint depends on its identity")
	}
}
