package helm

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

const crdName = "apitokens.tokens.apitoken.dev"

// previousChartCommit is the last commit whose chart installs the CRD from
// crds/ (chart 0.1.0), which Helm installs once and never upgrades: the
// chart that installs upgrade from.
const previousChartCommit = "fa90efdc7e849ada78e05d24e217e00e4659dcc7"

// previousChart writes the chart of previousChartCommit into a temporary
// directory (git archive) and returns its path.
func previousChart(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("git", "-C", testenv.RepoRoot(), "archive", "--format=tar", previousChartCommit, "charts/apitoken-operator")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	archive, err := cmd.Output()
	if err != nil {
		t.Fatalf("git archive %s (the previous chart; a shallow clone lacks it: git fetch --unshallow): %v\n%s", previousChartCommit, err, stderr.String())
	}
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) {
			t.Fatalf("git archive: path %q outside the archive", h.Name)
		}
		data, err := io.ReadAll(io.LimitReader(tr, 1<<22))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	chart := filepath.Join(dir, "charts", "apitoken-operator")
	if _, err := os.Stat(filepath.Join(chart, "crds", "tokens.apitoken.dev_apitokens.yaml")); err != nil {
		t.Fatalf("the chart of %s has no CRD in crds/: %v", previousChartCommit, err)
	}
	return chart
}

// copyChart copies the chart under test into a temporary directory.
func copyChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "apitoken-operator")
	err := filepath.WalkDir(chartDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(chartDir, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// addedField is the property added to the CRD's spec between the previous
// chart and the one upgraded to, as a release that adds a field does.
const addedField = "upgradeProbe"

// chartWithAddedCRDField returns a copy of the chart under test whose CRD
// has spec.upgradeProbe besides what config/ generates.
func chartWithAddedCRDField(t *testing.T) string {
	t.Helper()
	dir := copyChart(t)
	path := filepath.Join(dir, "files", "crds", "tokens.apitoken.dev_apitokens.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &crd.Object); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		if err := unstructured.SetNestedField(v.(map[string]any), map[string]any{
			"type": "string", "description": "upgradeProbe is added by test/helm to check that helm upgrade upgrades the CRD.",
		}, "schema", "openAPIV3Schema", "properties", "spec", "properties", addedField); err != nil {
			t.Fatal(err)
		}
	}
	if err := unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"); err != nil {
		t.Fatal(err)
	}
	if data, err = yaml.Marshal(crd.Object); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// getCRD returns the ApiToken CRD as the API server has it, or nil.
func getCRD(t *testing.T, kc string) *unstructured.Unstructured {
	t.Helper()
	out, err := kubectlErrOut("", "--kubeconfig", kc, "get", "crd", crdName, "-o", "json", "--ignore-not-found")
	if err != nil {
		t.Fatalf("kubectl get crd: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) == "" {
		return nil
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(out), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

// hasSpecField says whether every served version of the CRD has spec.<field>.
func hasSpecField(crd *unstructured.Unstructured, field string) bool {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		if _, ok, _ := unstructured.NestedMap(v.(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties", field); !ok {
			return false
		}
	}
	return len(versions) > 0
}

// policyCRDName is the chart's other CRD, ApiTokenPolicy's.
const policyCRDName = "apitokenpolicies.tokens.apitoken.dev"

// deleteCRD deletes the chart's CRDs (and so every ApiToken and
// ApiTokenPolicy), so that the next test starts from a cluster without
// them.
func deleteCRD(t *testing.T, kc string) {
	t.Helper()
	kubectl(t, "", "--kubeconfig", kc, "delete", "crd", crdName, policyCRDName, "--ignore-not-found", "--wait")
}

// adoptionCommands are the commands docs/deploy.md gives to let Helm adopt
// a CRD that the previous chart's crds/ (or kubectl) created, for a release
// in namespace ns: Helm refuses to update an object that lacks its
// ownership label and annotations.
func adoptionCommands(ns string) [][]string {
	return [][]string{
		{"label", "crd", crdName, "app.kubernetes.io/managed-by=Helm", "--overwrite"},
		{"annotate", "crd", crdName, "meta.helm.sh/release-name=" + release, "meta.helm.sh/release-namespace=" + ns, "--overwrite"},
	}
}

// TestHelmUpgradeFromThePreviousChartUpgradesTheCRD installs the previous
// chart (its CRD in crds/) into a real API server, creates an ApiToken,
// and upgrades to this chart with a field added to the CRD: Helm refuses
// until the CRD is Helm's (the label and annotations of docs/deploy.md, or
// helm upgrade --take-ownership), and with --reuse-values (the schema
// names the values it lacks), and then the upgrade upgrades the CRD in
// place (same uid, the new field served, annotated keep), the ApiToken
// stays, and it survives helm uninstall. With crds.keep=false, helm
// uninstall deletes the CRD.
func TestHelmUpgradeFromThePreviousChartUpgradesTheCRD(t *testing.T) {
	kc := cluster(t)
	previous, next := previousChart(t), chartWithAddedCRDField(t)
	deploy, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range adoptionCommands("apitoken-system") {
		if cmd := "kubectl " + strings.Join(c, " "); !bytes.Contains(deploy, []byte(cmd)) {
			t.Errorf("docs/deploy.md does not give %q, which this test runs", cmd)
		}
	}

	for _, tc := range []struct {
		name, ns string
		adopt    func(t *testing.T, ns string) []string // helm upgrade's extra arguments
	}{
		{"the CRD labelled and annotated for Helm", "apitoken-upgrade-a", func(t *testing.T, ns string) []string {
			for _, c := range adoptionCommands(ns) {
				kubectl(t, "", append([]string{"--kubeconfig", kc}, c...)...)
			}
			return nil
		}},
		{"helm upgrade --take-ownership", "apitoken-upgrade-b", func(*testing.T, string) []string {
			return []string{"--take-ownership"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := tc.ns
			deleteCRD(t, kc)
			helm(t, "install", release, previous, "--kubeconfig", kc, "--namespace", ns, "--create-namespace",
				"--values", filepath.Join(previous, "ci", "self-managed-certs-values.yaml"))
			t.Cleanup(func() {
				_, _ = helmErrOut("uninstall", release, "--kubeconfig", kc, "--namespace", ns)
				deleteCRD(t, kc)
			})
			before := getCRD(t, kc)
			if before == nil {
				t.Fatal("the previous chart installed no CRD")
			}
			if owner := before.GetAnnotations()["meta.helm.sh/release-name"]; owner != "" || hasSpecField(before, addedField) {
				t.Fatalf("the previous chart's CRD: owned by release %q, spec.%s present: %t; want crds/'s: no owner, no such field", owner, addedField, hasSpecField(before, addedField))
			}

			// An ApiToken to outlive the upgrade. Nothing serves the
			// webhooks here: their configurations go, and the upgrade
			// puts them back.
			kubectl(t, "", "--kubeconfig", kc, "delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "-l", "app.kubernetes.io/instance="+release)
			kubectl(t, `apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: survivor, namespace: `+ns+`}
spec: {type: read-only, duration: 30d}
`, "--kubeconfig", kc, "create", "-f", "-")

			// As docs/deploy.md upgrades: the release's values, on this
			// chart's defaults.
			upgrade := []string{"upgrade", release, next, "--kubeconfig", kc, "--namespace", ns, "--reset-then-reuse-values"}
			out, err := helmErrOut(upgrade...)
			if err == nil || !strings.Contains(out, crdName) || !strings.Contains(out, "invalid ownership metadata") {
				t.Fatalf("helm upgrade with the CRD of crds/ not yet Helm's: want the refusal naming it (invalid ownership metadata), got %v:\n%s", err, out)
			}
			if hasSpecField(getCRD(t, kc), addedField) {
				t.Fatal("the refused upgrade changed the CRD")
			}

			extra := tc.adopt(t, ns)
			// --reuse-values keeps the previous chart's values and drops
			// this chart's defaults: the schema refuses it, naming them.
			reuse := append([]string{"upgrade", release, next, "--kubeconfig", kc, "--namespace", ns, "--reuse-values"}, extra...)
			if out, err := helmErrOut(reuse...); err == nil || !strings.Contains(out, "missing properties") || !strings.Contains(out, "'crds'") {
				t.Errorf("helm upgrade --reuse-values from the previous chart: want the schema's refusal naming crds, got %v:\n%s", err, out)
			}
			helm(t, append(upgrade, extra...)...)
			after := getCRD(t, kc)
			if after.GetUID() != before.GetUID() {
				t.Errorf("the CRD was replaced (uid %s, was %s): every ApiToken went with it", after.GetUID(), before.GetUID())
			}
			if !hasSpecField(after, addedField) {
				t.Errorf("helm upgrade did not upgrade the CRD: no spec.%s", addedField)
			}
			if a := after.GetAnnotations(); a["helm.sh/resource-policy"] != "keep" || a["meta.helm.sh/release-name"] != release || a["meta.helm.sh/release-namespace"] != ns {
				t.Errorf("the upgraded CRD's annotations: %v", a)
			}
			kubectl(t, "", "--kubeconfig", kc, "-n", ns, "get", "apitoken", "survivor")
			kubectl(t, "", "--kubeconfig", kc, "get", "validatingwebhookconfiguration", "apitoken-operator-validating")
			// The release's values were kept: Helm's certificates, no cert-manager.
			kubectl(t, "", "--kubeconfig", kc, "-n", ns, "get", "secret", "apitoken-operator-webhook-cert")
			if out := kubectl(t, "", "--kubeconfig", kc, "-n", ns, "get", "certificates.cert-manager.io", "-o", "name"); strings.TrimSpace(out) != "" {
				t.Errorf("the upgrade lost the release's values (auth.tls.source=helm): %s", out)
			}

			t.Log("a later upgrade needs nothing")
			helm(t, upgrade...)

			t.Log("helm uninstall keeps the CRD and the ApiToken")
			helm(t, "uninstall", release, "--kubeconfig", kc, "--namespace", ns)
			if kept := getCRD(t, kc); kept == nil || kept.GetUID() != before.GetUID() {
				t.Fatal("helm uninstall deleted the CRD (crds.keep)")
			}
			kubectl(t, "", "--kubeconfig", kc, "-n", ns, "get", "apitoken", "survivor")
		})
	}

	t.Run("crds.keep=false: helm uninstall deletes the CRD", func(t *testing.T) {
		const ns = "apitoken-upgrade-c"
		deleteCRD(t, kc)
		t.Cleanup(func() { deleteCRD(t, kc) })
		helm(t, "install", release, chartDir, "--kubeconfig", kc, "--namespace", ns, "--create-namespace",
			"--values", filepath.Join(chartDir, "ci", "self-managed-certs-values.yaml"), "--set", "crds.keep=false")
		crd := getCRD(t, kc)
		if crd == nil || crd.GetAnnotations()["helm.sh/resource-policy"] != "" {
			t.Fatalf("crds.keep=false: the installed CRD %v", crd)
		}
		helm(t, "uninstall", release, "--kubeconfig", kc, "--namespace", ns, "--wait")
		if getCRD(t, kc) != nil {
			t.Error("crds.keep=false: helm uninstall left the CRD")
		}
	})
}

// TestCRDValues: the CRD is rendered by default, annotated keep and
// labelled as the chart's objects are; crds.keep=false leaves out the
// annotation, crds.enabled=false the CRD.
func TestCRDValues(t *testing.T) {
	crd := render(t).get("CustomResourceDefinition", crdName)
	if crd == nil {
		t.Fatal("the defaults render no CRD")
	}
	if a := crd.GetAnnotations(); a["helm.sh/resource-policy"] != "keep" || a["controller-gen.kubebuilder.io/version"] == "" {
		t.Errorf("the CRD's annotations %v: want helm.sh/resource-policy: keep and controller-gen's", a)
	}
	if l := crd.GetLabels(); l["app.kubernetes.io/instance"] != release || l["helm.sh/chart"] == "" {
		t.Errorf("the CRD's labels %v", l)
	}
	if crd := render(t, "--set", "crds.keep=false").get("CustomResourceDefinition", crdName); crd == nil || crd.GetAnnotations()["helm.sh/resource-policy"] != "" {
		t.Errorf("crds.keep=false: %v", crd)
	}
	if crd := render(t, "--set", "crds.enabled=false").get("CustomResourceDefinition", crdName); crd != nil {
		t.Error("crds.enabled=false renders the CRD")
	}
}
