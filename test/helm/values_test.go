package helm

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// podSpec returns the pod template's spec of a Deployment.
func podSpec(t *testing.T, objs objects, deployment string) map[string]any {
	t.Helper()
	d := objs.get("Deployment", deployment)
	if d == nil {
		t.Fatalf("no Deployment %s", deployment)
	}
	spec, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
	return spec
}

// container returns the first container of a Deployment's pods.
func container(t *testing.T, objs objects, deployment string) map[string]any {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(podSpec(t, objs, deployment), "containers")
	return containers[0].(map[string]any)
}

func containerArgs(t *testing.T, objs objects, deployment string) []string {
	t.Helper()
	args, _, _ := unstructured.NestedStringSlice(container(t, objs, deployment), "args")
	return args
}

// subjects returns the ServiceAccounts a (Cluster)RoleBinding binds, as namespace/name.
func subjects(t *testing.T, objs objects, kind, name string) []string {
	t.Helper()
	b := objs.get(kind, name)
	if b == nil {
		t.Fatalf("no %s %s", kind, name)
	}
	list, _, _ := unstructured.NestedSlice(b.Object, "subjects")
	var out []string
	for _, s := range list {
		s := s.(map[string]any)
		out = append(out, fmt.Sprintf("%s/%s", s["namespace"], s["name"]))
	}
	return out
}

// checkPlatformValues checks ci/platform-values.yaml: every value it sets
// reaches the objects.
func checkPlatformValues(t *testing.T, objs objects) {
	t.Helper()
	const digest = "sha256:0f3ec5ba8b0c0bb2a5f0a6cbc7b1e5fa4d3c2b1a09f8e7d6c5b4a39281706f5e"
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		dep := objs.get("Deployment", d)
		if image := container(t, objs, d)["image"]; image != "ghcr.io/apitoken-operator/apitoken-operator:v0.1.0@"+digest {
			t.Errorf("Deployment %s: image %v, want the tag and the digest", d, image)
		}
		if v, _, _ := unstructured.NestedFieldNoCopy(dep.Object, "spec", "revisionHistoryLimit"); fmt.Sprint(v) != "3" {
			t.Errorf("Deployment %s: revisionHistoryLimit %v", d, v)
		}
		if l, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "template", "metadata", "labels"); l["team"] != "platform" || l["app.kubernetes.io/name"] != d {
			t.Errorf("Deployment %s: pod template labels %v, want commonLabels and the name", d, l)
		}
		if sel, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "selector", "matchLabels"); len(sel) != 1 {
			t.Errorf("Deployment %s: commonLabels reached the selector %v", d, sel)
		}
		if !contains(containerArgs(t, objs, d), "--audit-log=/var/log/apitoken/audit.log") {
			t.Errorf("Deployment %s: no --audit-log to the file", d)
		}
		mounts := fmt.Sprint(container(t, objs, d)["volumeMounts"])
		volumes := fmt.Sprint(podSpec(t, objs, d)["volumes"])
		if !strings.Contains(mounts, "mountPath:/var/log/apitoken name:audit") || !strings.Contains(volumes, "emptyDir:map[] name:audit") || !strings.Contains(mounts, "name:auth-tls") {
			t.Errorf("Deployment %s: the audit volume is not mounted beside the chart's: mounts %s volumes %s", d, mounts, volumes)
		}
	}
	for _, o := range objs {
		if o.GetName() != "apitoken-proxy-settings" && o.GetLabels()["team"] != "platform" {
			t.Errorf("%s lacks commonLabels", key(o))
		}
	}

	op := objs.get("Deployment", "apitoken-operator")
	if s, _, _ := unstructured.NestedString(op.Object, "spec", "strategy", "type"); s != "RollingUpdate" {
		t.Errorf("operator strategy %q", s)
	}
	if u, _, _ := unstructured.NestedFieldNoCopy(op.Object, "spec", "strategy", "rollingUpdate", "maxUnavailable"); fmt.Sprint(u) != "0" {
		t.Errorf("operator strategy maxUnavailable %v", u)
	}
	spec := podSpec(t, objs, "apitoken-operator")
	if spec["hostNetwork"] != true || spec["dnsPolicy"] != "ClusterFirstWithHostNet" {
		t.Errorf("webhook.hostNetwork: hostNetwork %v, dnsPolicy %v", spec["hostNetwork"], spec["dnsPolicy"])
	}
	if _, ok := podSpec(t, objs, "apitoken-auth")["hostNetwork"]; ok {
		t.Error("webhook.hostNetwork put the auth-only replicas on the node's network")
	}
	if !contains(containerArgs(t, objs, "apitoken-operator"), "--webhook-port=10260") || !strings.Contains(fmt.Sprint(container(t, objs, "apitoken-operator")["ports"]), "containerPort:10260 name:webhook") {
		t.Errorf("webhook.port: args %v ports %v", containerArgs(t, objs, "apitoken-operator"), container(t, objs, "apitoken-operator")["ports"])
	}
	probe, _, _ := unstructured.NestedMap(container(t, objs, "apitoken-operator"), "livenessProbe")
	if diff := cmp.Diff(map[string]any{
		"httpGet":             map[string]any{"path": "/healthz", "port": "probes"},
		"initialDelaySeconds": float64(5), "periodSeconds": float64(10), "timeoutSeconds": float64(2), "failureThreshold": float64(6),
	}, probe); diff != "" {
		t.Errorf("operator liveness probe (-want +got):\n%s", diff)
	}
	probe, _, _ = unstructured.NestedMap(container(t, objs, "apitoken-auth"), "readinessProbe")
	if diff := cmp.Diff(map[string]any{
		"httpGet":       map[string]any{"path": "/readyz", "port": "auth", "scheme": "HTTPS"},
		"periodSeconds": float64(2), "failureThreshold": float64(2),
	}, probe); diff != "" {
		t.Errorf("auth readiness probe (-want +got):\n%s", diff)
	}

	// The auth replicas' ServiceAccount, named: everything that names it follows.
	if sa := objs.get("ServiceAccount", "apitoken-verifier"); sa == nil || sa.GetAnnotations()["eks.amazonaws.com/role-arn"] == "" {
		t.Errorf("ServiceAccount apitoken-verifier with its IAM annotation: %v", sa)
	}
	if objs.get("ServiceAccount", "apitoken-auth") != nil {
		t.Error("ServiceAccount apitoken-auth rendered besides apitoken-verifier")
	}
	if sa := objs.get("ServiceAccount", "apitoken-operator"); sa == nil || sa.GetAnnotations()["eks.amazonaws.com/role-arn"] != "arn:aws:iam::111122223333:role/apitoken-operator" {
		t.Errorf("ServiceAccount apitoken-operator's annotations: %v", sa)
	}
	if got := podSpec(t, objs, "apitoken-auth")["serviceAccountName"]; got != "apitoken-verifier" {
		t.Errorf("apitoken-auth runs as %v", got)
	}
	for _, b := range [][2]string{{"ClusterRoleBinding", "apitoken-auth"}, {"RoleBinding", "apitoken-auth-salt-reader"}} {
		if got := subjects(t, objs, b[0], b[1]); fmt.Sprint(got) != "[apitoken-system/apitoken-verifier]" {
			t.Errorf("%s %s binds %v", b[0], b[1], got)
		}
	}
	if !contains(containerArgs(t, objs, "apitoken-operator"), "--usage-reporters=system:serviceaccount:apitoken-system:apitoken-verifier") {
		t.Errorf("the operator does not accept usage reports from apitoken-verifier: %v", containerArgs(t, objs, "apitoken-operator"))
	}

	cm := objs.get("ConfigMap", "apitoken-proxy-settings")
	if cm == nil || cm.GetNamespace() != namespace {
		t.Fatalf("extraObjects: ConfigMap apitoken-proxy-settings in %s: %v", namespace, cm)
	}
	if url, _, _ := unstructured.NestedString(cm.Object, "data", "authURL"); url != "https://apitoken-operator-auth.apitoken-system.svc:8082/v1/auth-request" {
		t.Errorf("extraObjects: the string was not rendered with tpl: %q", url)
	}
}

// TestServiceAccountValues: serviceAccount.create=false renders no
// ServiceAccount and the pods, bindings, Secret policy and usage reports
// name the one given; automount=false turns the token mount off on the
// pods and the ServiceAccount.
func TestServiceAccountValues(t *testing.T) {
	objs := render(t, "--set", "operator.serviceAccount.create=false", "--set", "operator.serviceAccount.name=ops-identity",
		"--set", "auth.serviceAccount.create=false")
	for _, o := range objs {
		if o.GetKind() == "ServiceAccount" {
			t.Errorf("%s rendered with serviceAccount.create=false", key(o))
		}
	}
	if got := podSpec(t, objs, "apitoken-operator")["serviceAccountName"]; got != "ops-identity" {
		t.Errorf("the operator runs as %v", got)
	}
	if got := podSpec(t, objs, "apitoken-auth")["serviceAccountName"]; got != "apitoken-auth" {
		t.Errorf("the auth replicas run as %v, want the default name", got)
	}
	for _, b := range [][2]string{{"ClusterRoleBinding", "apitoken-operator-manager"}, {"ClusterRoleBinding", "apitoken-operator-metrics-auth"}, {"RoleBinding", "apitoken-operator-leader-election"}} {
		if got := subjects(t, objs, b[0], b[1]); fmt.Sprint(got) != "[apitoken-system/ops-identity]" {
			t.Errorf("%s %s binds %v", b[0], b[1], got)
		}
	}
	if !strings.Contains(fmt.Sprint(objs.get("ValidatingAdmissionPolicy", "apitoken-operator-own-secrets").Object), "system:serviceaccount:apitoken-system:ops-identity") {
		t.Error("the Secret policy does not match the operator's ServiceAccount ops-identity")
	}

	objs = render(t, "--set", "operator.serviceAccount.automount=false", "--set", "auth.serviceAccount.automount=false")
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		if got, ok := podSpec(t, objs, d)["automountServiceAccountToken"]; !ok || got != false {
			t.Errorf("Deployment %s: automountServiceAccountToken %v", d, got)
		}
		if got, _, _ := unstructured.NestedFieldNoCopy(objs.get("ServiceAccount", d).Object, "automountServiceAccountToken"); got != false {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken %v", d, got)
		}
	}
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		if _, ok := podSpec(t, render(t), d)["automountServiceAccountToken"]; ok {
			t.Errorf("by default Deployment %s sets automountServiceAccountToken", d)
		}
	}
}

// TestSecurityContextsStayRestrictedAndAreOverridable: by default both
// pods and containers are restricted (non-root, RuntimeDefault seccomp, no
// privilege escalation, no capabilities, read-only root); a value set
// replaces only its key, and null removes one.
func TestSecurityContextsStayRestrictedAndAreOverridable(t *testing.T) {
	wantPod := map[string]any{"runAsNonRoot": true, "seccompProfile": map[string]any{"type": "RuntimeDefault"}}
	wantContainer := map[string]any{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": map[string]any{"drop": []any{"ALL"}}}
	defaults := render(t)
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		if diff := cmp.Diff(wantPod, podSpec(t, defaults, d)["securityContext"]); diff != "" {
			t.Errorf("Deployment %s: pod securityContext (-want +got):\n%s", d, diff)
		}
		if diff := cmp.Diff(wantContainer, container(t, defaults, d)["securityContext"]); diff != "" {
			t.Errorf("Deployment %s: container securityContext (-want +got):\n%s", d, diff)
		}
	}
	objs := render(t, "--set", "operator.podSecurityContext.runAsUser=65532", "--set", "auth.containerSecurityContext.readOnlyRootFilesystem=null",
		"--set", "auth.podSecurityContext.fsGroup=65532")
	if got := podSpec(t, objs, "apitoken-operator")["securityContext"].(map[string]any); fmt.Sprint(got["runAsUser"]) != "65532" || got["runAsNonRoot"] != true {
		t.Errorf("operator pod securityContext %v", got)
	}
	if got := container(t, objs, "apitoken-auth")["securityContext"].(map[string]any); got["readOnlyRootFilesystem"] != nil || got["allowPrivilegeEscalation"] != false {
		t.Errorf("auth container securityContext %v", got)
	}
	if got := podSpec(t, objs, "apitoken-auth")["securityContext"].(map[string]any); fmt.Sprint(got["fsGroup"]) != "65532" {
		t.Errorf("auth pod securityContext %v", got)
	}
}

// TestNamespaceOverride: every namespaced object goes to namespaceOverride,
// and what names the namespace (certificates' names, bindings, the Secret
// policy, the usage reports) follows it.
func TestNamespaceOverride(t *testing.T) {
	const ns = "platform-tokens"
	objs := render(t, "--set", "namespaceOverride="+ns, "--set", "auth.tls.source=helm")
	for _, o := range objs {
		if o.GetNamespace() != "" && o.GetNamespace() != ns {
			t.Errorf("%s: not in %s", key(o), ns)
		}
	}
	if got := subjects(t, objs, "ClusterRoleBinding", "apitoken-operator-manager"); fmt.Sprint(got) != "["+ns+"/apitoken-operator]" {
		t.Errorf("the manager binding names %v", got)
	}
	if !contains(containerArgs(t, objs, "apitoken-operator"), "--usage-reporters=system:serviceaccount:"+ns+":apitoken-auth") ||
		!contains(containerArgs(t, objs, "apitoken-auth"), "--report-usage-to=https://apitoken-operator-usage."+ns+".svc:8082/v1/usage") {
		t.Error("the usage reports do not name the namespace")
	}
	s := objs.get("Secret", "apitoken-operator-auth-cert")
	verifyCert(t, secretData(t, s, "tls.crt"), secretData(t, s, "ca.crt"), "apitoken-operator-auth."+ns+".svc")
	if !strings.Contains(fmt.Sprint(objs.get("ValidatingAdmissionPolicy", "apitoken-operator-own-secrets").Object), "request.namespace == '"+ns+"'") {
		t.Error("the Secret policy does not name the salt's namespace")
	}
}

// TestCommonLabelsOnEveryObjectAndPodTemplate: commonLabels are on every
// object, and on both pod templates, never in a selector.
func TestCommonLabelsOnEveryObjectAndPodTemplate(t *testing.T) {
	objs := render(t, "--set-string", "commonLabels.cost-center=42", "--values", filepath.Join(chartDir, "ci", "auth-tls-values.yaml"))
	for _, o := range objs {
		if o.GetLabels()["cost-center"] != "42" {
			t.Errorf("%s lacks commonLabels", key(o))
		}
	}
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		dep := objs.get("Deployment", d)
		if l, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "template", "metadata", "labels"); l["cost-center"] != "42" {
			t.Errorf("Deployment %s: pod labels %v", d, l)
		}
		if l, _, _ := unstructured.NestedStringMap(dep.Object, "spec", "selector", "matchLabels"); fmt.Sprint(l) != "map[app.kubernetes.io/name:"+d+"]" {
			t.Errorf("Deployment %s: selector %v", d, l)
		}
	}
}
