// Package docs checks that the documentation names only what exists: every
// flag (--name), chart value (auth.tls.source), metric (apitoken_*) and
// annotation or label key (tokens.apitoken.dev/*) named in docs/, the
// README and the chart's README is one that the code, config/ or the chart
// has. It is grep-level: it reads names where they are written, not what
// the sentence around them says, so that a renamed flag, a value that
// moved or a metric that went cannot stay in a page.
package docs

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// page is a documentation file's lines.
type page struct {
	name  string
	lines []string
}

// pages returns docs/*.md, README.md and the chart's README.md.
func pages(t *testing.T) []page {
	t.Helper()
	root := testenv.RepoRoot()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	files = append(files, filepath.Join(root, "README.md"), filepath.Join(root, "charts", "apitoken-operator", "README.md"))
	var out []page
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		out = append(out, page{name: rel, lines: strings.Split(string(data), "\n")})
	}
	return out
}

// names returns re's first group of each match in line that no character
// of notAfter precedes (so that a name inside a longer one, such as
// apitoken_user in $apitoken_user, is not taken for it).
func names(re *regexp.Regexp, line, notAfter string) []string {
	var out []string
	for _, m := range re.FindAllStringSubmatchIndex(line, -1) {
		if m[0] > 0 && strings.ContainsRune(notAfter, rune(line[m[0]-1])) {
			continue
		}
		out = append(out, line[m[2]:m[3]])
	}
	return out
}

// goSources returns the contents of the non-test Go files under dirs.
func goSources(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(testenv.RepoRoot(), dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			data, err := os.ReadFile(path)
			out[path] = string(data)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// flagDefinition matches a flag defined with the standard library's flag
// package or pflag: flag.StringVar(&x, "name", ...), f.BoolVarP(&x,
// "name", ...), fs.Var(&v, "name", ...).
var flagDefinition = regexp.MustCompile(`\b(?:flag|f|fs|cmd\.Flags\(\)|cmd\.PersistentFlags\(\))\.[A-Z][A-Za-z0-9]*\((?:&[^,()]+,\s*)?"([a-z][a-z0-9-]*)"`)

// ourFlags returns the flags of the operator (cmd/, with
// controller-runtime's zap flags), the kubectl plugin (internal/plugin)
// and hack/run-local.sh (hack/localrun).
func ourFlags(t *testing.T) map[string]bool {
	t.Helper()
	sources := goSources(t, "cmd", "internal/plugin", "hack/localrun")
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/controller-runtime").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/controller-runtime: %v", err)
	}
	zap, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "pkg", "log", "zap", "zap.go"))
	if err != nil {
		t.Fatal(err)
	}
	sources["controller-runtime zap.go"] = string(zap)
	flags := map[string]bool{}
	for _, src := range sources {
		for _, m := range flagDefinition.FindAllStringSubmatch(src, -1) {
			flags[m[1]] = true
		}
	}
	for _, f := range []string{"max-cuts", "audit-log", "zap-log-level", "scopes", "wait", "auth-bind-address"} {
		if !flags[f] {
			t.Fatalf("found no definition of --%s: the flag pattern no longer matches the code", f)
		}
	}
	return flags
}

// foreignFlags are the other programs' flags the pages name, with the
// program: a flag named in docs/ is one of these or one of ours.
var foreignFlags = map[string]string{
	"api-audiences": "kube-apiserver", "authentication-token-webhook-cache-ttl": "kube-apiserver",
	"authentication-token-webhook-config-file": "kube-apiserver", "authentication-token-webhook-version": "kube-apiserver",
	"etcd-servers-overrides": "kube-apiserver", "event-ttl": "kube-apiserver", "service-account-issuer": "kube-apiserver",
	"token-auth-file": "kube-apiserver", "version": "kube-apiserver", "quota-backend-bytes": "etcd", "cleanup": "kube-proxy",
	"as": "kubectl", "as-group": "kubectl", "cascade": "kubectl", "context": "kubectl", "kubeconfig": "kubectl", "field-manager": "kubectl",
	"field-selector": "kubectl", "force-conflicts": "kubectl", "from-file": "kubectl", "overwrite": "kubectl",
	"patch-file": "kubectl", "prefix": "kubectl", "raw": "kubectl", "request-timeout": "kubectl", "server-side": "kubectl",
	"tail": "kubectl", "token": "kubectl", "for": "kubectl wait", "dry-run": "kubectl", "namespace": "kubectl",
	"clusterrole": "kubectl create clusterrolebinding", "serviceaccount": "kubectl create clusterrolebinding",
	"manifest": "kubectl krew", "archive": "kubectl krew",
	"create-namespace": "helm", "install": "helm upgrade", "reset-then-reuse-values": "helm", "reuse-values": "helm",
	"set": "helm", "strict": "helm lint", "take-ownership": "helm", "plain-http": "helm push, helm install oci://",
	"connect-to": "curl", "cacert": "curl",
	"with-source": "flux", "watch-label-selector": "flux's controllers", "auth-token-audiences": "kube-rbac-proxy",
	"help": "every program",
}

// TestEveryFlagNamedInTheDocsExists: each --flag a page names is a flag of
// the operator, the kubectl plugin or hack/run-local.sh, or of a program
// listed in foreignFlags.
func TestEveryFlagNamedInTheDocsExists(t *testing.T) {
	ours := ourFlags(t)
	re := regexp.MustCompile(`--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)`)
	used := map[string]bool{}
	for _, p := range pages(t) {
		for i, line := range p.lines {
			for _, f := range names(re, line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") {
				used[f] = true
				if !ours[f] && foreignFlags[f] == "" {
					t.Errorf("%s:%d names --%s, which is no flag of the operator (cmd/), the kubectl plugin (internal/plugin) or hack/run-local.sh, nor of a program in foreignFlags", p.name, i+1, f)
				}
			}
		}
	}
	for f, program := range foreignFlags {
		if !used[f] {
			t.Errorf("foreignFlags lists --%s (%s), which no page names: remove it", f, program)
		}
	}
}

// schemaNode is the part of values.schema.json this test reads.
type schemaNode struct {
	Ref                  string                 `json:"$ref"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties any                    `json:"additionalProperties"`
	Definitions          map[string]*schemaNode `json:"definitions"`
}

func (s *schemaNode) resolve(root *schemaNode) *schemaNode {
	for s != nil && s.Ref != "" {
		s = root.Definitions[strings.TrimPrefix(s.Ref, "#/definitions/")]
	}
	return s
}

// valueExists says whether the chart has the value path: each part a
// property of the schema, until a value whose keys are yours (labels,
// resources, a selector's matchLabels).
func valueExists(root *schemaNode, path string) bool {
	s := root
	for _, part := range strings.Split(path, ".") {
		s = s.resolve(root)
		if s == nil {
			return false
		}
		if next, ok := s.Properties[part]; ok {
			s = next
			continue
		}
		return s.AdditionalProperties != nil && s.AdditionalProperties != false
	}
	return true
}

// TestEveryChartValueNamedInTheDocsExists: each chart value a page names
// (auth.tls.source, crds.keep=false, and `.resources` after
// `operator.replicas` on the same line) is a value of the chart's
// values.schema.json.
func TestEveryChartValueNamedInTheDocsExists(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "charts", "apitoken-operator", "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var root schemaNode
	if err := json.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var top []string
	for k := range root.Properties {
		top = append(top, regexp.QuoteMeta(k))
	}
	sort.Strings(top)
	full := regexp.MustCompile(`((?:` + strings.Join(top, "|") + `)(?:\.[A-Za-z0-9_-]+)+)`)
	relative := regexp.MustCompile("`(\\.[A-Za-z][A-Za-z0-9]*(?:\\.[A-Za-z][A-Za-z0-9]*)*)`")
	files := regexp.MustCompile(`\.(ya?ml|md|go|json|txt|tpl|sh|tgz|tar|gz)$`)
	found := 0
	for _, p := range pages(t) {
		for i, line := range p.lines {
			// The group of the last full path on the line, for `.name` after it.
			group := ""
			for _, m := range relativeOrFull(full, relative, line) {
				path := m
				if strings.HasPrefix(m, ".") {
					if group == "" {
						continue
					}
					path = group + m
				} else {
					if files.MatchString(m) {
						continue
					}
					group = m[:strings.LastIndex(m, ".")]
				}
				found++
				if !valueExists(&root, path) {
					t.Errorf("%s:%d names the chart value %s, which values.schema.json does not have", p.name, i+1, path)
				}
			}
		}
	}
	if found < 50 {
		t.Fatalf("found %d chart values in the pages: the pattern no longer matches them", found)
	}
}

// relativeOrFull returns, in the order of the line, the full value paths
// (not inside a longer name: apitoken-operator-auth.apitoken-system.svc is
// no value) and the `.relative` ones.
func relativeOrFull(full, relative *regexp.Regexp, line string) []string {
	type hit struct {
		at   int
		text string
	}
	var hits []hit
	for _, m := range full.FindAllStringSubmatchIndex(line, -1) {
		if m[2] > 0 && strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-./_$", rune(line[m[2]-1])) {
			continue
		}
		hits = append(hits, hit{m[2], strings.TrimRight(line[m[2]:m[3]], ".")})
	}
	for _, m := range relative.FindAllStringSubmatchIndex(line, -1) {
		hits = append(hits, hit{m[2], line[m[2]:m[3]]})
	}
	sort.Slice(hits, func(a, b int) bool { return hits[a].at < hits[b].at })
	var out []string
	for _, h := range hits {
		if strings.Contains(h.text[1:], ".") || strings.HasPrefix(h.text, ".") {
			out = append(out, h.text)
		}
	}
	return out
}

// TestEveryMetricNamedInTheDocsExists: each apitoken_* metric a page names
// is registered by the operator (a Name: "apitoken_..." of its Go code), a
// histogram's _bucket, _sum and _count included.
func TestEveryMetricNamedInTheDocsExists(t *testing.T) {
	defined := map[string]bool{}
	re := regexp.MustCompile(`Name:\s*"(apitoken_[a-z0-9_]+)"`)
	for _, src := range goSources(t, "cmd", "controllers", "internal", "webhook") {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			defined[m[1]] = true
		}
	}
	if !defined["apitoken_verifications_total"] || len(defined) < 10 {
		t.Fatalf("found %d metric definitions: the pattern no longer matches the code", len(defined))
	}
	metric := regexp.MustCompile(`(apitoken_[a-z0-9_]*[a-z0-9])`)
	goFile := regexp.MustCompile(`apitoken_[a-z0-9_]*\.go\b`) // controllers/apitoken_status.go is no metric
	found := 0
	for _, p := range pages(t) {
		for i, line := range p.lines {
			line = goFile.ReplaceAllString(line, "")
			for _, m := range names(metric, line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./$") {
				found++
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && defined[b] {
						base = b
					}
				}
				if !defined[base] {
					t.Errorf("%s:%d names the metric %s, which the operator does not register", p.name, i+1, m)
				}
			}
		}
	}
	if found < 20 {
		t.Fatalf("found %d metric names in the pages: the pattern no longer matches them", found)
	}
}

// TestEveryAnnotationNamedInTheDocsExists: each tokens.apitoken.dev/ key
// (annotation, label, API version) a page names is written in the code,
// config/ or the chart.
func TestEveryAnnotationNamedInTheDocsExists(t *testing.T) {
	root := testenv.RepoRoot()
	var corpus strings.Builder
	for _, src := range goSources(t, "api", "cmd", "controllers", "internal", "webhook") {
		corpus.WriteString(src)
	}
	for _, dir := range []string{"config", filepath.Join("charts", "apitoken-operator")} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || filepath.Base(path) == "README.md" {
				return err
			}
			data, err := os.ReadFile(path)
			corpus.Write(data)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	key := regexp.MustCompile(`(tokens\.apitoken\.dev/[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)`)
	known := map[string]bool{}
	for _, m := range key.FindAllString(corpus.String(), -1) {
		known[m] = true
	}
	found := 0
	for _, p := range pages(t) {
		for i, line := range p.lines {
			for _, k := range names(key, line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") {
				found++
				if !known[k] {
					t.Errorf("%s:%d names %s, which neither the code, config/ nor the chart has", p.name, i+1, k)
				}
			}
		}
	}
	if found < 20 {
		t.Fatalf("found %d tokens.apitoken.dev/ keys in the pages: the pattern no longer matches them", found)
	}
}
