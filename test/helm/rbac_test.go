package helm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

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
	as := "--as=system:serviceaccount:" + ns + ":apitoken-operator"
	event := fmt.Sprintf(`apiVersion: v1
kind: Event
metadata: {name: apitoken-operator-leader.1, namespace: %s}
involvedObject: {apiVersion: coordination.k8s.io/v1, kind: Lease, namespace: %[1]s, name: apitoken-operator.tokens.apitoken.dev}
reason: LeaderElection
message: became leader
type: Normal
source: {component: apitoken-operator}
count: 1
`, ns)
	if out, err := kubectlErrOut(event, "--kubeconfig", kc, as, "create", "-f", "-"); err != nil {
		t.Fatalf("creating a core/v1 Event as the operator's ServiceAccount: %v\n%s", err, out)
	}
	if out, err := kubectlErrOut("", "--kubeconfig", kc, as, "-n", ns, "patch", "events.v1.", "apitoken-operator-leader.1", "--type=merge", "-p", `{"count":2}`); err != nil {
		t.Fatalf("patching it: %v\n%s", err, out)
	}
	if out, err := kubectlErrOut("", "--kubeconfig", kc, as, "-n", "default", "auth", "can-i", "create", "events"); err == nil || !strings.Contains(out, "no") {
		t.Errorf("the operator may create Events outside its namespace: %v %s", err, out)
	}
}
