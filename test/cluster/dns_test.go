package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// checkDNS resolves the Services' names from the workload pod, with its
// resolv.conf as kubelet wrote it (clusterDNS, the cluster.local search
// path): each name must give the Service's ClusterIP, and a name outside
// the cluster must not resolve (CoreDNS has no forward plugin: nothing
// leaves the machine).
func checkDNS(t *testing.T, tenant string) {
	want := map[string]string{}
	for _, svc := range []string{"apitoken-operator-usage", "apitoken-operator-auth"} {
		want[svc+"."+namespace+".svc"] = mustKubectl(t, "", "-n", namespace, "get", "service", svc, "-o", "jsonpath={.spec.clusterIP}")
	}
	want["kubernetes.default"] = mustKubectl(t, "", "-n", "default", "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
	want["apitoken-operator-webhook."+namespace+".svc.cluster.local"] = mustKubectl(t, "", "-n", namespace, "get", "service", "apitoken-operator-webhook", "-o", "jsonpath={.spec.clusterIP}")
	args := []string{"-n", tenant, "exec", "workload", "--", "/client", "resolve"}
	for name := range want {
		args = append(args, name)
	}
	out := mustKubectl(t, "", args...)
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if name, addrs, ok := strings.Cut(l, " "); ok {
			got[name] = addrs
		}
	}
	for name, ip := range want {
		if got[name] != ip {
			t.Errorf("%s resolved to %q in the workload pod, want the ClusterIP %s", name, got[name], ip)
		}
	}
	t.Logf("resolved in the pod:\n%s", out)
	if out, err := kubectl("", "-n", tenant, "exec", "workload", "--", "/client", "resolve", "example.com"); err == nil {
		t.Errorf("example.com resolved in the pod (%s): the cluster DNS must not forward", strings.TrimSpace(out))
	}
	resolv := mustKubectl(t, "", "-n", tenant, "exec", "workload", "--", "/client", "cat", "/etc/resolv.conf")
	if !strings.Contains(resolv, "nameserver "+clusterEnv["DNS_IP"]) || !strings.Contains(resolv, tenant+".svc.cluster.local") {
		t.Errorf("the pod's resolv.conf does not name the cluster DNS %s and the search path:\n%s", clusterEnv["DNS_IP"], resolv)
	}
}

// checkLastUsed waits for the workload's use of its token to reach
// status.lastUsedAt. The auth-only replicas that see the requests report
// them every --last-used-interval (1m, the default) to
// https://apitoken-operator-usage.<ns>.svc (a name only the cluster DNS
// resolves), and an operator replica writes the status; the chart's
// NetworkPolicy is on and admits those reports. No CNI here enforces
// NetworkPolicy (the bridge plugin does not), so this shows the reports
// are routed and accepted, not that the policy lets them through: test/helm
// checks the rendered policy admits the auth pods to the usage port.
// Steps before this one have kept the token in use for minutes.
func checkLastUsed(t *testing.T, tenant string) {
	since := firstUse[tenant].Truncate(time.Second)
	var last string
	err := eventually(3*time.Minute, 2*time.Second, func() error {
		out, err := kubectl("", "-n", tenant, "get", "apitoken", "reader", "-o", "jsonpath={.status.lastUsedAt}")
		if err != nil {
			return err
		}
		last = out
		if out == "" {
			return fmt.Errorf("status.lastUsedAt is empty")
		}
		at, err := time.Parse(time.RFC3339, out)
		if err != nil {
			return err
		}
		if at.Before(since) {
			return fmt.Errorf("status.lastUsedAt %s is before the workload's first use at %s", out, since.UTC().Format(time.RFC3339))
		}
		return nil
	})
	if err != nil {
		logs, _ := kubectl("", "-n", namespace, "logs", "deployment/apitoken-auth", "--tail", "20")
		t.Fatalf("%v\nan auth replica's log:\n%s", err, logs)
	}
	t.Logf("status.lastUsedAt %s (the workload first used the token at %s)", last, since.UTC().Format(time.RFC3339))
	note(fmt.Sprintf("lastUsedAt written in-cluster through the usage Service's DNS name: %s", last))
}
