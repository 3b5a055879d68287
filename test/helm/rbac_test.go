package helm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// rulesGrant reports whether rules grant verb on resource of group.
func rulesGrant(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if len(r.ResourceNames) == 0 && contains(r.APIGroups, group) && contains(r.Resources, resource) && contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// TestLeaderElectionRoleGrantsCoreEvents: controller-runtime's leader
// election records its Events (LeaderElection) through core/v1, not
// events.k8s.io: the namespaced leader-election Role of the chart and of
// config/rbac grants create and patch on core events, and no ClusterRole
// of the operator needs to.
func TestLeaderElectionRoleGrantsCoreEvents(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "leader_election_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, objs := range map[string]objects{"chart": render(t), "config/rbac": parse(t, string(data))} {
		var role rbacv1.Role
		toTyped(t, objs.get("Role", "apitoken-operator-leader-election"), &role)
		for _, verb := range []string{"create", "patch"} {
			if !rulesGrant(role.Rules, "", "events", verb) {
				t.Errorf("%s: Role %s/%s does not grant %s on core/v1 events: %v", name, role.Namespace, role.Name, verb, role.Rules)
			}
		}
		if role.Namespace != namespace {
			t.Errorf("%s: the leader-election Role is in namespace %q", name, role.Namespace)
		}
	}
}

// TestLeaderElectionEventsAllowedByTheShippedRBAC applies the chart's
// leader-election Role and RoleBinding to a real kube-apiserver (RBAC
// authorization) in a namespace of its own, and creates and patches a
// core/v1 Event there as the operator's ServiceAccount, as
// controller-runtime's leader election does.
func TestLeaderElectionEventsAllowedByTheShippedRBAC(t *testing.T) {
	kc := cluster(t)
	const ns = "apitoken-events"
	kubectl(t, "", "--kubeconfig", kc, "create", "namespace", ns)
	var rbac objects
	for _, o := range parse(t, helm(t, "template", release, chartDir, "--namespace", ns)) {
		if (o.GetKind() == "Role" || o.GetKind() == "RoleBinding") && o.GetName() == "apitoken-operator-leader-election" {
			rbac = append(rbac, o)
		}
	}
	if len(rbac) != 2 {
		t.Fatalf("the leader-election Role and RoleBinding: %v", rbac.keys())
	}
	kubectl(t, rbac.yamlStream(t), "--kubeconfig", kc, "apply", "--server-side", "-f", "-")
	// As the operator's ServiceAccount, through client-go's core/v1 Events
	// client, as client-go's event sink (controller-runtime's leader
	// election recorder) creates and then patches them.
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":apitoken-operator"}
	events := kubernetes.NewForConfigOrDie(cfg).CoreV1().Events(ns)
	ctx := context.Background()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "apitoken-operator-leader.1", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: ns, Name: "apitoken-operator.tokens.apitoken.dev"},
		Reason:         "LeaderElection", Message: "became leader", Type: corev1.EventTypeNormal,
		Source: corev1.EventSource{Component: "apitoken-operator"}, Count: 1,
	}
	if _, err := events.Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a core/v1 Event as the operator's ServiceAccount: %v", err)
	}
	if _, err := events.Patch(ctx, ev.Name, types.StrategicMergePatchType, []byte(`{"count":2}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching it: %v", err)
	}
	ev.Namespace = "default"
	if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("creating an Event outside the operator's namespace: %v, want Forbidden", err)
	}
}

// TestRestartTargetsRoleIsOptIn: by default no role of the chart, nor of
// config/rbac, lets the operator patch workloads (apps); with
// restartTargets.enabled a ClusterRole grants get and patch on
// Deployments, StatefulSets and DaemonSets, bound in every namespace, or
// only in restartTargets.namespaces. Applied to a real kube-apiserver
// (RBAC authorization), it lets the operator's ServiceAccount patch a
// Deployment in a listed namespace and in no other.
func TestRestartTargetsRoleIsOptIn(t *testing.T) {
	appsVerbs := func(objs objects) []string {
		var out []string
		for _, o := range objs {
			if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
				continue
			}
			var role rbacv1.ClusterRole
			toTyped(t, o, &role)
			for _, r := range role.Rules {
				if contains(r.APIGroups, "apps") || contains(r.APIGroups, "*") {
					out = append(out, o.GetName())
				}
			}
		}
		return out
	}
	config, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := appsVerbs(render(t)); len(got) != 0 {
		t.Errorf("the chart's defaults grant apps verbs in %v", got)
	}
	if got := appsVerbs(parse(t, string(config))); len(got) != 0 {
		t.Errorf("config/rbac/role.yaml grants apps verbs in %v", got)
	}

	all := render(t, "--set", "restartTargets.enabled=true")
	var role rbacv1.ClusterRole
	toTyped(t, all.get("ClusterRole", "apitoken-operator-restart-targets"), &role)
	for _, res := range []string{"deployments", "statefulsets", "daemonsets"} {
		for _, verb := range []string{"get", "patch"} {
			if !rulesGrant(role.Rules, "apps", res, verb) {
				t.Errorf("the restart-targets ClusterRole does not grant %s on %s.apps: %v", verb, res, role.Rules)
			}
		}
		if rulesGrant(role.Rules, "apps", res, "update") || rulesGrant(role.Rules, "apps", res, "delete") {
			t.Errorf("the restart-targets ClusterRole grants more than get and patch on %s: %v", res, role.Rules)
		}
	}
	if all.get("ClusterRoleBinding", "apitoken-operator-restart-targets") == nil {
		t.Errorf("no ClusterRoleBinding without restartTargets.namespaces: %v", all.keys())
	}

	kc := cluster(t)
	const team, other = "restart-team-a", "restart-team-b"
	for _, ns := range []string{namespace, team, other} {
		_, _ = kubectlErrOut("", "--kubeconfig", kc, "create", "namespace", ns) // the cluster's other tests may have made it
	}
	scoped := render(t, "--set", "restartTargets.enabled=true", "--set", "restartTargets.namespaces={"+team+"}")
	if scoped.get("ClusterRoleBinding", "apitoken-operator-restart-targets") != nil {
		t.Errorf("a ClusterRoleBinding with restartTargets.namespaces: %v", scoped.keys())
	}
	var rbac objects
	for _, o := range scoped {
		if o.GetName() == "apitoken-operator-restart-targets" {
			rbac = append(rbac, o)
		}
	}
	if len(rbac) != 2 || rbac.get("RoleBinding", "apitoken-operator-restart-targets").GetNamespace() != team {
		t.Fatalf("the restart-targets ClusterRole and a RoleBinding in %s: %v", team, rbac.keys())
	}
	kubectl(t, rbac.yamlStream(t), "--kubeconfig", kc, "apply", "--server-side", "-f", "-")
	for ns, want := range map[string]string{team: "yes", other: "no"} {
		out, _ := kubectlErrOut("", "--kubeconfig", kc, "auth", "can-i", "patch", "deployments.apps/api", "-n", ns,
			"--as", "system:serviceaccount:"+namespace+":apitoken-operator")
		if got, _, _ := strings.Cut(strings.TrimSpace(out), "\n"); got != want {
			t.Errorf("the operator may patch a Deployment in %s: %q, want %q", ns, got, want)
		}
	}
}
