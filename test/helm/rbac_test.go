package helm

import (
	"context"
	"os"
	"path/filepath"
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
