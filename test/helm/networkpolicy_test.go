package helm

import (
	"os"
	"path/filepath"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// peer is one client pod as a NetworkPolicy sees it.
type peer struct {
	namespace       string
	podLabels       map[string]string
	namespaceLabels map[string]string
}

// admits reports whether np admits traffic from p to a pod with labels
// to in np's namespace on TCP port, by the NetworkPolicy rules of
// networking.k8s.io/v1 (ipBlock peers are not pods: they admit none here).
func admits(t *testing.T, np *networkingv1.NetworkPolicy, p peer, to map[string]string, port int) bool {
	t.Helper()
	selects := func(s *metav1.LabelSelector, l map[string]string) bool {
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Fatalf("NetworkPolicy %s: %v", np.Name, err)
		}
		return sel.Matches(labels.Set(l))
	}
	if !selects(&np.Spec.PodSelector, to) {
		return false
	}
	for _, rule := range np.Spec.Ingress {
		portOK := len(rule.Ports) == 0
		for _, rp := range rule.Ports {
			if rp.Port == nil || (rp.Port.IntValue() == port && (rp.Protocol == nil || *rp.Protocol == "TCP")) {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(rule.From) == 0 {
			return true
		}
		for _, f := range rule.From {
			switch {
			case f.IPBlock != nil:
			case f.NamespaceSelector == nil && f.PodSelector != nil:
				if p.namespace == np.Namespace && selects(f.PodSelector, p.podLabels) {
					return true
				}
			case f.NamespaceSelector != nil:
				if selects(f.NamespaceSelector, p.namespaceLabels) && (f.PodSelector == nil || selects(f.PodSelector, p.podLabels)) {
					return true
				}
			}
		}
	}
	return false
}

func toTyped(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if u == nil {
		t.Fatal("object not rendered")
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("%s: %v", key(u), err)
	}
}

// podLabels returns the labels of a Deployment's pods.
func podLabels(t *testing.T, objs objects, deployment string) map[string]string {
	t.Helper()
	d := objs.get("Deployment", deployment)
	if d == nil {
		t.Fatalf("no Deployment %s", deployment)
	}
	l, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
	return l
}

// policies returns the NetworkPolicies among objs.
func policies(t *testing.T, objs objects) []*networkingv1.NetworkPolicy {
	t.Helper()
	var out []*networkingv1.NetworkPolicy
	for _, u := range objs {
		if u.GetKind() == "NetworkPolicy" {
			np := &networkingv1.NetworkPolicy{}
			toTyped(t, u, np)
			out = append(out, np)
		}
	}
	if len(out) == 0 {
		t.Fatal("no NetworkPolicy rendered")
	}
	return out
}

// reaches reports whether p reaches a pod with labels to on port under
// nps: a pod that no policy selects takes any traffic; one that some do
// takes what one of those admits.
func reaches(t *testing.T, nps []*networkingv1.NetworkPolicy, p peer, to map[string]string, port int) bool {
	t.Helper()
	isolated := false
	for _, np := range nps {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatalf("NetworkPolicy %s: %v", np.Name, err)
		}
		if !sel.Matches(labels.Set(to)) {
			continue
		}
		isolated = true
		if admits(t, np, p, to, port) {
			return true
		}
	}
	return !isolated
}

// TestNetworkPolicyAdmitsTheAuthReplicasUsageReports: with the chart's
// NetworkPolicies (and config/networkpolicy's), the auth-only replicas reach
// the operator's replicas on the usage port (8082, /v1/usage), with no
// label on their namespace; pods in other namespaces, other pods of the
// release namespace, and the auth endpoint's clients do not: the
// operator's port 8082 is reached only from the release's auth pods (and
// the API server's addresses), while its clients reach the auth pods.
// With auth.enabled=false the operator's replicas serve the clients.
func TestNetworkPolicyAdmitsTheAuthReplicasUsageReports(t *testing.T) {
	cidr := []string{"--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={203.0.113.0/24}"}
	objs := render(t, cidr...)
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "networkpolicy", "networkpolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	operator, auth := podLabels(t, objs, "apitoken-operator"), podLabels(t, objs, "apitoken-auth")
	client := peer{namespace: "ingress", podLabels: map[string]string{"app": "proxy"}, namespaceLabels: map[string]string{"tokens.apitoken.dev/auth-client": "true"}}
	for name, nps := range map[string][]*networkingv1.NetworkPolicy{"chart": policies(t, objs), "config/networkpolicy": policies(t, parse(t, string(data)))} {
		authPod := peer{namespace: namespace, podLabels: auth, namespaceLabels: map[string]string{"kubernetes.io/metadata.name": namespace}}
		if !reaches(t, nps, authPod, operator, 8082) {
			t.Errorf("%s: the NetworkPolicy drops the auth replicas' usage reports to the operator's port 8082", name)
		}
		elsewhere := authPod
		elsewhere.namespace, elsewhere.namespaceLabels = "team-a", map[string]string{"kubernetes.io/metadata.name": "team-a"}
		if reaches(t, nps, elsewhere, operator, 8082) {
			t.Errorf("%s: pods labelled as the auth replicas in an unlabelled namespace reach port 8082", name)
		}
		other := peer{namespace: namespace, podLabels: map[string]string{"app": "other"}, namespaceLabels: authPod.namespaceLabels}
		if reaches(t, nps, other, operator, 8082) {
			t.Errorf("%s: any pod of the release namespace reaches port 8082", name)
		}
		if reaches(t, nps, authPod, operator, 9443) {
			t.Errorf("%s: the auth replicas reach the webhooks", name)
		}
		if !reaches(t, nps, client, auth, 8082) || !reaches(t, nps, client, auth, 9002) {
			t.Errorf("%s: a labelled client namespace no longer reaches the auth endpoint", name)
		}
		if reaches(t, nps, client, operator, 8082) || reaches(t, nps, client, operator, 9002) {
			t.Errorf("%s: the auth endpoint's clients reach the operator's replicas (and /v1/usage) on 8082 or 9002", name)
		}
	}

	// Without auth replicas the operator's serve the auth endpoint.
	nps := policies(t, render(t, append(cidr, "--set", "auth.enabled=false")...))
	if !reaches(t, nps, client, operator, 8082) || !reaches(t, nps, client, operator, 9002) {
		t.Error("auth.enabled=false: a labelled client namespace does not reach the operator's auth endpoint")
	}
}
