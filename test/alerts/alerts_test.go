// Package alerts tests the alerting rules that ship in config/prometheus
// with the real promtool (built by hack/tools.sh): `promtool check rules`
// on the shipped rules and `promtool test rules` on synthetic series.
package alerts

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// promtool returns the path of the promtool binary (installed once per
// machine and version by hack/tools.sh).
func promtool(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "tools.sh"), "promtool").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("hack/tools.sh promtool: %v\n%s", err, exit.Stderr)
		}
		t.Fatalf("hack/tools.sh promtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// rulesDir writes the PrometheusRule's spec.groups as a plain rules file,
// with the promtool tests next to it, and returns the directory.
func rulesDir(t *testing.T) string {
	t.Helper()
	root := testenv.RepoRoot()
	data, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Kind string         `json:"kind"`
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &rule); err != nil || rule.Kind != "PrometheusRule" || rule.Spec["groups"] == nil {
		t.Fatalf("config/prometheus/alerts.yaml is not a PrometheusRule with groups: %v", err)
	}
	groups, err := yaml.Marshal(rule.Spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), groups, 0o600); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join(root, "config", "prometheus", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestShippedRulesCheck: promtool check rules on the shipped rules.
func TestShippedRulesCheck(t *testing.T) {
	bin, dir := promtool(t), rulesDir(t)
	out := run(t, dir, bin, "check", "rules", "rules.yaml")
	if !strings.Contains(out, "SUCCESS: 12 rules found") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
}

// TestRulesFireAndStayQuiet: promtool test rules, where every alert fires
// on the series that mean trouble and stays quiet on healthy ones.
func TestRulesFireAndStayQuiet(t *testing.T) {
	bin, dir := promtool(t), rulesDir(t)
	out := run(t, dir, bin, "test", "rules", "alerts_test.yaml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	// Every alert of the file is exercised by the tests.
	rules, _ := os.ReadFile(filepath.Join(dir, "rules.yaml"))
	tests, _ := os.ReadFile(filepath.Join(dir, "alerts_test.yaml"))
	for _, line := range strings.Split(string(rules), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert: "); ok {
			if !strings.Contains(string(tests), "alertname: "+name) {
				t.Errorf("alert %s has no promtool test", name)
			}
		}
	}
}

// TestOperatorMonitorGivesTheTokenNamespaceBack: the rules match the
// ApiToken series on their namespace label, which a ServiceMonitor target's
// own namespace label takes (the token's is renamed exported_namespace); the
// operator's ServiceMonitor must move it back, or ApiTokenExpiringSoon names
// apitoken-system for every token.
func TestOperatorMonitorGivesTheTokenNamespaceBack(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "prometheus", "monitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type relabel struct {
		SourceLabels []string `json:"sourceLabels"`
		Regex        string   `json:"regex"`
		TargetLabel  string   `json:"targetLabel"`
		Action       string   `json:"action"`
	}
	type serviceMonitor struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Endpoints []struct {
				MetricRelabelings []relabel `json:"metricRelabelings"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	monitors := map[string]*serviceMonitor{}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var m serviceMonitor
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatal(err)
		}
		if m.Kind == "ServiceMonitor" {
			monitors[m.Metadata.Name] = &m
		}
	}
	want := []relabel{
		{SourceLabels: []string{"exported_namespace"}, Regex: "(.+)", TargetLabel: "namespace", Action: "replace"},
		{Regex: "exported_namespace", Action: "labeldrop"},
	}
	// The auth-only replicas hold apitoken_replaced_token_presented_total,
	// which ApiTokenReplacedTokenPresented matches on the token's namespace.
	for _, name := range []string{"apitoken-operator", "apitoken-auth"} {
		monitor := monitors[name]
		if monitor == nil || len(monitor.Spec.Endpoints) != 1 {
			t.Fatalf("no ServiceMonitor %s with one endpoint in config/prometheus/monitor.yaml", name)
		}
		if got := monitor.Spec.Endpoints[0].MetricRelabelings; !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: metricRelabelings = %+v, want %+v", name, got, want)
		}
	}
}
