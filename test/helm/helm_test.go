// Package helm tests the Helm chart charts/apitoken-operator with the real
// helm (built once per machine by hack/tools.sh) and a real kube-apiserver
// (envtest): helm lint; helm template for the defaults and each values
// file of charts/apitoken-operator/ci, every object applied with a
// server-side dry run; the defaults against what kustomize builds from
// config/; and helm install and upgrade with the certificates Helm
// generates.
package helm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

const (
	release   = "apitoken-operator"
	namespace = "apitoken-system"
)

var (
	chartDir = filepath.Join(testenv.RepoRoot(), "charts", "apitoken-operator")

	helmOnce sync.Once
	helmBin  string
	helmErr  error

	kubectlOnce sync.Once
	kubectlBin  string
	kubectlErr  error

	// helmHome keeps helm's cache, config and data out of the user's.
	helmHome string
)

func TestMain(m *testing.M) {
	var err error
	if helmHome, err = os.MkdirTemp("", "apitoken-helm-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	stopCluster()
	_ = os.RemoveAll(helmHome)
	os.Exit(code)
}

// tool runs one of the repository's tool scripts and returns the path it prints.
func tool(script string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", script), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/%s %s: %w\n%s", script, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// helm runs the helm binary with args and returns its stdout; it fails the
// test on a non-zero exit, with stderr.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := helmErrOut(args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func helmErrOut(args ...string) (string, error) {
	helmOnce.Do(func() { helmBin, helmErr = tool("tools.sh", "helm") })
	if helmErr != nil {
		return "", helmErr
	}
	cmd := exec.Command(helmBin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(helmHome, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(helmHome, "config"),
		"HELM_DATA_HOME="+filepath.Join(helmHome, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// kubectl runs kubectl (from PATH, or built from Go modules by
// hack/envtest-binaries.sh as test/e2e does) with stdin and returns stdout.
func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectlErrOut(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectlErrOut(stdin string, args ...string) (string, error) {
	kubectlOnce.Do(func() {
		if kubectlBin, kubectlErr = exec.LookPath("kubectl"); kubectlErr == nil {
			return
		}
		var dir string
		dir, kubectlErr = tool("envtest-binaries.sh", "kubectl")
		kubectlBin = filepath.Join(dir, "kubectl")
	})
	if kubectlErr != nil {
		return "", kubectlErr
	}
	cmd := exec.Command(kubectlBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// valuesFiles returns the documented values files (charts/apitoken-operator/ci).
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("expected the five documented values files in %s/ci, found %v", chartDir, files)
	}
	return files
}

// render runs helm template for the release in namespace with args (values
// files, --set) and returns the objects.
func render(t *testing.T, args ...string) objects {
	t.Helper()
	return parse(t, helm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...))
}

// objects is the objects of a multi-document YAML stream.
type objects []*unstructured.Unstructured

func parse(t *testing.T, manifests string) objects {
	t.Helper()
	var out objects
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("parsing manifests: %v", err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// key names an object: kind namespace/name.
func key(u *unstructured.Unstructured) string {
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
}

// get returns the object of that kind and name, or nil.
func (o objects) get(kind, name string) *unstructured.Unstructured {
	for _, u := range o {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

// keys returns the sorted keys of the objects.
func (o objects) keys() []string {
	var out []string
	for _, u := range o {
		out = append(out, key(u))
	}
	sort.Strings(out)
	return out
}

// yamlStream joins objects back into one YAML stream.
func (o objects) yamlStream(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, u := range o {
		data, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(data)
		b.WriteString("\n")
	}
	return b.String()
}

func TestLint(t *testing.T) {
	for _, f := range append([]string{""}, valuesFiles(t)...) {
		name, args := "defaults", []string{"lint", "--strict", chartDir}
		if f != "" {
			name, args = filepath.Base(f), append(args, "--values", f)
		}
		t.Run(name, func(t *testing.T) {
			out := helm(t, args...)
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("helm lint:\n%s", out)
			}
			if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Fatalf("helm lint warns:\n%s", out)
			}
		})
	}
}

// TestRefusedValues: values that cannot work fail the rendering with a
// message that says what to set.
func TestRefusedValues(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"webhook.certificate.source=vault", `at '/webhook/certificate/source': value must be one of 'certManager', 'helm', 'secret'`},
		{"auth.tls.source=none", `at '/auth/tls/source': value must be one of 'certManager', 'helm', 'secret'`},
		{"webhook.certificate.source=secret", "webhook.certificate.source secret needs webhook.certificate.caBundle"},
		{"networkPolicy.enabled=true", "networkPolicy.enabled needs networkPolicy.apiServerCIDRs"},
		{"fullnameOverride=tokens", "fullnameOverride and nameOverride are not supported: the objects' names are fixed"},
		{"nameOverride=tokens", "a cluster runs one release"},
	} {
		out, err := helmErrOut("template", release, chartDir, "--namespace", namespace, "--set", tc.set)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("--set %s: want a failure saying %q, got %v:\n%s", tc.set, tc.want, err, out)
		}
	}
}

// TestSchemaRefusesTyposAndWrongTypes: values.schema.json refuses an
// unknown value (a typo) and a value of the wrong type or form, at every
// level, naming its path, in helm template and helm lint --strict, from
// --set and from a values file; --skip-schema-validation aside, the
// templates' own checks still refuse a certificate source they cannot
// render.
func TestSchemaRefusesTyposAndWrongTypes(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"replicas: 2", `at '': additional properties 'replicas' not allowed`},
		{"auth: {replicaz: 3}", `at '/auth': additional properties 'replicaz' not allowed`},
		{"operator: {serviceAcount: {create: false}}", `at '/operator': additional properties 'serviceAcount' not allowed`},
		{"operator: {livenessProbe: {periodSecond: 3}}", `at '/operator/livenessProbe': additional properties 'periodSecond' not allowed`},
		{"crds: {keeps: false}", `at '/crds': additional properties 'keeps' not allowed`},
		{"auth: {replicas: three}", `at '/auth/replicas': got string, want integer`},
		{`operator: {replicas: "2"}`, `at '/operator/replicas': got string, want integer`},
		{"crds: {enabled: yes-please}", `at '/crds/enabled': got string, want boolean`},
		{"operator: {serviceAccount: {annotations: []}}", `at '/operator/serviceAccount/annotations': got array, want object`},
		{"commonLabels: {cost-center: 42}", `at '/commonLabels/cost-center': got number, want string`},
		{"webhook: {port: 70000}", `at '/webhook/port': maximum`},
		{"image: {digest: latest}", `at '/image/digest': 'latest' does not match pattern`},
		{"auth: {extraArgs: [auth-path-prefix=/api]}", `at '/auth/extraArgs/0': 'auth-path-prefix=/api' does not match pattern`},
		{"operator: {revisionHistoryLimit: -1}", `at '/operator/revisionHistoryLimit': minimum`},
		{"certManager: {issuerRef: {kind: ClusterIssuer}}", `at '/certManager/issuerRef': properties 'name' required, if 'kind' exists`},
	} {
		file := filepath.Join(t.TempDir(), "bad-values.yaml")
		if err := os.WriteFile(file, []byte(tc.values+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"template", release, chartDir, "--namespace", namespace, "--values", file},
			{"lint", "--strict", chartDir, "--values", file},
		} {
			out, err := helmErrOut(args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("helm %s with %q: want a refusal saying %q, got %v:\n%s", args[0], tc.values, tc.want, err, out)
			}
		}
	}
	out, err := helmErrOut("template", release, chartDir, "--namespace", namespace, "--set", "operator.replicaCount=3")
	if err == nil || !strings.Contains(out, `at '/operator': additional properties 'replicaCount' not allowed`) {
		t.Errorf("--set operator.replicaCount=3: want the schema's refusal naming it, got %v:\n%s", err, out)
	}
	out, err = helmErrOut("template", release, chartDir, "--namespace", namespace, "--skip-schema-validation", "--set", "auth.tls.source=vault")
	if err == nil || !strings.Contains(out, `auth.tls.source must be one of certManager, helm, secret, not "vault"`) {
		t.Errorf("without the schema: want the template's refusal, got %v:\n%s", err, out)
	}
}
