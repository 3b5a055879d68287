// Command chart-readme writes the chart's README.md from its values.yaml
// (each value's comment and default) and values.schema.json (each value's
// type), so that the README cannot drift from the values: `make chart`
// runs it, and `make verify` fails when its output is not committed.
//
//	go run ./hack/chart-readme -chart charts/apitoken-operator
//
// A schema object with required properties is a group of the chart's
// values (crds, operator, operator.serviceAccount): its values are listed
// one by one. Any other value, a Kubernetes shape such as resources or a
// probe's timings included, is one row. It fails, naming the value, when
// the two files disagree: a value without a comment or without a type, a
// value of a group the schema lacks or a property of a group values.yaml
// lacks, or a group that does not refuse unknown properties
// (additionalProperties: false) or does not require each of its
// properties (so that an upgrade with --reuse-values, which drops a newer
// chart's defaults, is refused).
package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/template"

	"go.yaml.in/yaml/v3"
)

//go:embed README.md.tmpl
var readmeTemplate string

func main() {
	chart := flag.String("chart", "charts/apitoken-operator", "The chart's directory.")
	flag.Parse()
	if err := run(*chart); err != nil {
		fmt.Fprintln(os.Stderr, "chart-readme:", err)
		os.Exit(1)
	}
}

func run(chart string) error {
	dir, err := os.OpenRoot(chart)
	if err != nil {
		return err
	}
	defer dir.Close()
	values, err := dir.ReadFile("values.yaml")
	if err != nil {
		return err
	}
	schemaJSON, err := dir.ReadFile("values.schema.json")
	if err != nil {
		return err
	}
	readme, err := render(values, schemaJSON)
	if err != nil {
		return err
	}
	return dir.WriteFile("README.md", readme, 0o644)
}

// schema is the part of a JSON Schema this program reads.
type schema struct {
	Ref                  string             `json:"$ref"`
	Type                 any                `json:"type"`
	Properties           map[string]*schema `json:"properties"`
	Required             []string           `json:"required"`
	AdditionalProperties any                `json:"additionalProperties"`
	Enum                 []any              `json:"enum"`
	Definitions          map[string]*schema `json:"definitions"`
}

// group says whether the schema is a group of the chart's values rather
// than one value.
func (s *schema) group() bool { return len(s.Properties) > 0 && len(s.Required) > 0 }

// resolve follows a local $ref (#/definitions/NAME).
func (s *schema) resolve(root *schema) (*schema, error) {
	if s.Ref == "" {
		return s, nil
	}
	name, ok := strings.CutPrefix(s.Ref, "#/definitions/")
	if !ok || root.Definitions[name] == nil {
		return nil, fmt.Errorf("unknown $ref %q", s.Ref)
	}
	return root.Definitions[name].resolve(root)
}

// typeName is the schema's type as the README shows it.
func (s *schema) typeName() string {
	var types []string
	switch t := s.Type.(type) {
	case string:
		types = []string{t}
	case []any:
		for _, v := range t {
			types = append(types, fmt.Sprint(v))
		}
	}
	name := strings.Join(types, " or ")
	if len(s.Enum) > 0 {
		var values []string
		for _, v := range s.Enum {
			values = append(values, fmt.Sprintf("%q", v))
		}
		name += " (" + strings.Join(values, ", ") + ")"
	}
	return name
}

// row is one line of a values table.
type row struct {
	Key, Type, Default, Description string
}

// section is a top-level group, or General for the top-level values that
// are not groups.
type section struct {
	Name, Description string
	Rows              []row
}

func render(valuesYAML, schemaJSON []byte) ([]byte, error) {
	var root schema
	if err := json.Unmarshal(schemaJSON, &root); err != nil {
		return nil, fmt.Errorf("values.schema.json: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(valuesYAML, &doc); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("values.yaml is not a mapping")
	}
	general := section{Name: "General"}
	sections := []section{}
	var errs []error
	top := doc.Content[0]
	if err := checkObject("", &root, top); err != nil {
		errs = append(errs, err)
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		key, value := top.Content[i], top.Content[i+1]
		s, err := root.Properties[key.Value].resolve(&root)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key.Value, err))
			continue
		}
		if !s.group() {
			r, err := leaf(key.Value, key, value, s)
			if err != nil {
				errs = append(errs, err)
			}
			general.Rows = append(general.Rows, r)
			continue
		}
		sec := section{Name: key.Value, Description: strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(comment(key))}
		if sec.Description == "" {
			errs = append(errs, fmt.Errorf("%s: no comment in values.yaml", key.Value))
		}
		rows, err := object(key.Value, value, s, &root)
		if err != nil {
			errs = append(errs, err)
		}
		sec.Rows = rows
		sections = append(sections, sec)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	tmpl, err := template.New("README.md").Parse(readmeTemplate)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	err = tmpl.Execute(&out, map[string]any{"Sections": append([]section{general}, sections...)})
	return out.Bytes(), err
}

// object returns the rows of the values of a group: one per value, and
// for a group in it a row for it (its comment) then theirs.
func object(path string, node *yaml.Node, s, root *schema) ([]row, error) {
	if err := checkObject(path, s, node); err != nil {
		return nil, err
	}
	var rows []row
	var errs []error
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, value := node.Content[i], node.Content[i+1]
		p := path + "." + key.Value
		child, err := s.Properties[key.Value].resolve(root)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		if !child.group() {
			r, err := leaf(p, key, value, child)
			if err != nil {
				errs = append(errs, err)
			}
			rows = append(rows, r)
			continue
		}
		if comment(key) == "" {
			errs = append(errs, fmt.Errorf("%s: no comment in values.yaml", p))
		}
		rows = append(rows, row{Key: p, Type: "object", Description: cell(comment(key))})
		sub, err := object(p, value, child, root)
		if err != nil {
			errs = append(errs, err)
		}
		rows = append(rows, sub...)
	}
	return rows, errors.Join(errs...)
}

// checkObject checks that a group of the schema and its mapping in
// values.yaml name the same values, and that the schema refuses others and
// requires each.
func checkObject(path string, s *schema, node *yaml.Node) error {
	name := path
	if name == "" {
		name = "the top level"
	}
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: values.yaml has no mapping where the schema has properties", name)
	}
	var errs []error
	if s.AdditionalProperties != false {
		errs = append(errs, fmt.Errorf("%s: the schema does not set additionalProperties: false", name))
	}
	var keys []string
	for i := 0; i+1 < len(node.Content); i += 2 {
		keys = append(keys, node.Content[i].Value)
		if s.Properties[node.Content[i].Value] == nil {
			errs = append(errs, fmt.Errorf("%s.%s: in values.yaml, not in the schema", path, node.Content[i].Value))
		}
	}
	for p := range s.Properties {
		if !slices.Contains(keys, p) {
			errs = append(errs, fmt.Errorf("%s.%s: in the schema, not in values.yaml", path, p))
		}
		if !slices.Contains(s.Required, p) {
			errs = append(errs, fmt.Errorf("%s.%s: not required by the schema", path, p))
		}
	}
	return errors.Join(errs...)
}

// leaf returns the row of a value: its type, default and comment.
func leaf(path string, key, value *yaml.Node, s *schema) (row, error) {
	var v any
	if err := value.Decode(&v); err != nil {
		return row{}, fmt.Errorf("%s: %w", path, err)
	}
	def, err := json.Marshal(v)
	if err != nil {
		return row{}, fmt.Errorf("%s: %w", path, err)
	}
	r := row{Key: path, Type: s.typeName(), Default: "`" + strings.ReplaceAll(string(def), "|", `\|`) + "`", Description: cell(comment(key))}
	if r.Description == "" {
		return r, fmt.Errorf("%s: no comment in values.yaml", path)
	}
	if r.Type == "" {
		return r, fmt.Errorf("%s: no type in the schema", path)
	}
	return r, nil
}

// comment returns a key's comment in values.yaml, without the #s.
func comment(key *yaml.Node) string {
	var lines []string
	for _, l := range strings.Split(key.HeadComment, "\n") {
		l = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(l), "#"), " ")
		lines = append(lines, l)
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// cell makes a comment one Markdown table cell: lines joined, a blank line
// a line break, and <, > and | escaped.
func cell(text string) string {
	text = strings.NewReplacer("<", "&lt;", ">", "&gt;", "|", `\|`).Replace(text)
	var paragraphs []string
	for _, p := range strings.Split(text, "\n\n") {
		paragraphs = append(paragraphs, strings.Join(strings.Fields(p), " "))
	}
	return strings.Join(paragraphs, "<br><br>")
}
