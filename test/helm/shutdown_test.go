package helm

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestShutdownDelayFitsTheGracePeriod: both Deployments run with
// --shutdown-delay (readiness off and serving on after SIGTERM), and their
// terminationGracePeriodSeconds outlasts the delay and the drain (at most
// 10 s), so kubelet's SIGKILL never cuts a request in flight; likewise
// for a longer delay.
func TestShutdownDelayFitsTheGracePeriod(t *testing.T) {
	const drain = 10
	for _, delay := range []int{5, 20} {
		objs := render(t, "--set", fmt.Sprintf("shutdownDelaySeconds=%d", delay))
		for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
			dep := objs.get("Deployment", d)
			containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
			args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
			if want := fmt.Sprintf("--shutdown-delay=%ds", delay); !contains(args, want) {
				t.Errorf("Deployment %s: no %s in %v", d, want, args)
			}
			v, ok, _ := unstructured.NestedFieldNoCopy(dep.Object, "spec", "template", "spec", "terminationGracePeriodSeconds")
			grace, _ := v.(float64) // a JSON number, as parsed
			if !ok || grace <= float64(delay+drain) {
				t.Errorf("Deployment %s: terminationGracePeriodSeconds %v (set: %t), want more than the delay %d s and the drain %d s", d, grace, ok, delay, drain)
			}
		}
	}
}
