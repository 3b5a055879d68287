package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTheChartsREADMEIsInStep: the committed README is what the chart's
// values.yaml and values.schema.json make.
func TestTheChartsREADMEIsInStep(t *testing.T) {
	chart := filepath.Join("..", "..", "charts", "apitoken-operator")
	values, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	schemaJSON, err := os.ReadFile(filepath.Join(chart, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := render(values, schemaJSON)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(chart, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("charts/apitoken-operator/README.md is not what values.yaml and values.schema.json make: run make chart")
	}
	for _, v := range []string{"| `crds.keep` | boolean | `true` |", "| `operator.serviceAccount.automount` | boolean | `true` |", "| `webhook.port` | integer | `9443` |"} {
		if !bytes.Contains(want, []byte(v)) {
			t.Errorf("the README lacks the row %q", v)
		}
	}
}

const goodSchema = `{"type": "object", "additionalProperties": false, "required": ["a", "g"],
  "properties": {
    "a": {"type": "integer"},
    "g": {"type": "object", "additionalProperties": false, "required": ["b"], "properties": {"b": {"$ref": "#/definitions/s"}}}},
  "definitions": {"s": {"type": "string", "enum": ["x", "y"]}}}`

// TestRender: each value is a row with its type, default and comment; the
// files disagreeing fails, naming the value.
func TestRender(t *testing.T) {
	out, err := render([]byte("# a's comment\na: 1\n# The group.\ng:\n  # b is\n  # <b>.\n  b: x\n"), []byte(goodSchema))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| `a` | integer | `1` | a's comment |", "### g\n\nThe group.\n", "| `g.b` | string (\"x\", \"y\") | `\"x\"` | b is &lt;b&gt;. |"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	for _, tc := range []struct{ values, schema, want string }{
		{"a: 1\n# g\ng:\n  # b\n  b: x\n", goodSchema, "a: no comment in values.yaml"},
		{"# a\na: 1\n# g\ng:\n  # b\n  b: x\n  # c\n  c: 2\n", goodSchema, "g.c: in values.yaml, not in the schema"},
		{"# a\na: 1\n# g\ng: {}\n", goodSchema, "g.b: in the schema, not in values.yaml"},
		{"# a\na: 1\n# g\ng:\n  # b\n  b: x\n", strings.Replace(goodSchema, `"additionalProperties": false, "required": ["b"]`, `"required": ["b"]`, 1), "g: the schema does not set additionalProperties: false"},
		{"# a\na: 1\n# g\ng:\n  # b\n  b: x\n", strings.Replace(goodSchema, `"required": ["a", "g"]`, `"required": ["g"]`, 1), ".a: not required by the schema"},
	} {
		_, err := render([]byte(tc.values), []byte(tc.schema))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: want an error saying %q, got %v", tc.values, tc.want, err)
		}
	}
}
