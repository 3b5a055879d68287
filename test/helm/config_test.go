package helm

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// TestChartCopiesConfig: what hack/helm-chart.sh copies from config/ is
// committed as it is there: the CRD (files/crds, rendered by
// templates/crds.yaml; no crds/ folder), the reconciler's RBAC rules, the
// webhook configurations and the alerting rules.
func TestChartCopiesConfig(t *testing.T) {
	root := testenv.RepoRoot()
	pairs := map[string]string{
		"config/rbac/role.yaml":         "charts/apitoken-operator/files/manager-role.yaml",
		"config/webhook/manifests.yaml": "charts/apitoken-operator/files/webhook-manifests.yaml",
	}
	monitoring, err := filepath.Glob(filepath.Join(root, "config", "prometheus", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rules := false
	for _, f := range monitoring {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?m)^kind: PrometheusRule$`).Match(data) {
			pairs["config/prometheus/"+filepath.Base(f)] = "charts/apitoken-operator/files/prometheus-rules.yaml"
			rules = true
		}
	}
	if _, err := os.Stat(filepath.Join(chartDir, "files", "prometheus-rules.yaml")); !rules && err == nil {
		t.Error("charts/apitoken-operator/files/prometheus-rules.yaml has no PrometheusRule of config/prometheus: run make chart")
	}
	crds, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRD in config/crd/bases: %v", err)
	}
	for _, crd := range crds {
		pairs["config/crd/bases/"+filepath.Base(crd)] = "charts/apitoken-operator/files/crds/" + filepath.Base(crd)
	}
	inChart, err := filepath.Glob(filepath.Join(chartDir, "files", "crds", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inChart) != len(crds) {
		t.Errorf("charts/apitoken-operator/files/crds has %d files, config/crd/bases %d: run make chart", len(inChart), len(crds))
	}
	if _, err := os.Stat(filepath.Join(chartDir, "crds")); err == nil {
		t.Error("charts/apitoken-operator/crds exists: Helm installs crds/ once and never upgrades it; the CRD is templates/crds.yaml's")
	}
	for from, to := range pairs {
		want, err := os.ReadFile(filepath.Join(root, from))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, to))
		if err != nil {
			t.Errorf("%s: %v: run make chart", to, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s: run make chart", to, from)
		}
	}
}

// TestDefaultsInstallWhatConfigInstalls renders the chart with its default
// values and kustomize's build of
// config/default, and compares every object, field by field; and the same
// with the ServiceMonitors, the PrometheusRule and the NetworkPolicy on,
// against config/default, config/prometheus and config/networkpolicy, and
// with restartTargets on, against config/restart-targets. The
// only differences are the ones listed in normalizeConfig and
// normalizeChart, each with its reason.
func TestDefaultsInstallWhatConfigInstalls(t *testing.T) {
	root := testenv.RepoRoot()
	kustomize := func(dir string) objects {
		return parse(t, kubectl(t, "", "kustomize", filepath.Join(root, "config", dir)))
	}
	t.Run("config/default", func(t *testing.T) {
		compare(t, kustomize("default"), render(t))
	})
	t.Run("config/default, config/prometheus and config/networkpolicy", func(t *testing.T) {
		want := append(append(kustomize("default"), kustomize("prometheus")...), kustomize("networkpolicy")...)
		got := render(t,
			"--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
			"--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={203.0.113.0/24}")
		compare(t, want, got)
	})
	t.Run("config/default and config/restart-targets", func(t *testing.T) {
		compare(t, append(kustomize("default"), kustomize("restart-targets")...), render(t, "--set", "restartTargets.enabled=true"))
	})
}

func compare(t *testing.T, config, chart objects) {
	t.Helper()
	config, chart = normalizeConfig(t, config), normalizeChart(chart)
	if diff := cmp.Diff(config.keys(), chart.keys()); diff != "" {
		t.Fatalf("the chart's objects (+) differ from config's (-):\n%s", diff)
	}
	for _, want := range config {
		got := chart.get(want.GetKind(), want.GetName())
		if diff := cmp.Diff(want.Object, got.Object); diff != "" {
			t.Errorf("%s: the chart's (+) differs from config's (-):\n%s", key(want), diff)
		}
	}
}

// normalizeConfig makes config/'s objects what the chart is meant to
// install:
//   - no Namespace: `helm install --create-namespace` creates it (label it
//     pod-security.kubernetes.io/enforce=restricted, docs/deploy.md);
//   - ClusterRole manager-role is apitoken-operator-manager: controller-gen's
//     name is shared by every kubebuilder project, the chart's is not.
func normalizeConfig(t *testing.T, in objects) objects {
	t.Helper()
	var out objects
	for _, u := range in {
		switch {
		case u.GetKind() == "Namespace":
			if u.GetName() != namespace {
				t.Fatalf("config/ creates namespace %s", u.GetName())
			}
			continue
		case u.GetKind() == "ClusterRole" && u.GetName() == "manager-role":
			u.SetName("apitoken-operator-manager")
		case u.GetKind() == "ClusterRoleBinding" && u.GetName() == "apitoken-operator-manager":
			if err := unstructured.SetNestedField(u.Object, "apitoken-operator-manager", "roleRef", "name"); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, u)
	}
	return out
}

// chartLabels are the labels every chart object carries and config/'s
// do not: Helm's and Kubernetes' recommended labels.
var chartLabels = []string{
	"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of",
	"app.kubernetes.io/version", "helm.sh/chart",
}

// normalizeChart drops from the chart's objects what config/'s leave to
// the API server or do not carry: the labels above, imagePullPolicy
// IfNotPresent (the API server's default for an image with a tag other
// than latest), and the CRD's helm.sh/resource-policy: keep (crds.keep:
// Helm's, which kubectl ignores).
func normalizeChart(in objects) objects {
	for _, u := range in {
		if u.GetKind() == "CustomResourceDefinition" {
			annotations := u.GetAnnotations()
			delete(annotations, "helm.sh/resource-policy")
			u.SetAnnotations(annotations)
		}
		labels := u.GetLabels()
		for _, l := range chartLabels {
			delete(labels, l)
		}
		if len(labels) == 0 {
			unstructured.RemoveNestedField(u.Object, "metadata", "labels")
		} else {
			u.SetLabels(labels)
		}
		if u.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			if c := c.(map[string]any); c["imagePullPolicy"] == "IfNotPresent" && !strings.HasSuffix(c["image"].(string), ":latest") {
				delete(c, "imagePullPolicy")
			}
		}
		_ = unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
	}
	return in
}
