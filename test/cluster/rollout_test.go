package cluster

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// loopSummary is what `/client loop` prints: the count of each status
// code (and "error" for a request that got no response) and the errors.
type loopSummary struct {
	Counts map[string]int    `json:"counts"`
	Errors map[string]int    `json:"errors"`
	Bodies map[string]string `json:"bodies"`
}

func (s loopSummary) total() int {
	n := 0
	for _, c := range s.Counts {
		n += c
	}
	return n
}

func (s loopSummary) String() string {
	total, fivexx := 0, 0
	for k, n := range s.Counts {
		total += n
		if strings.HasPrefix(k, "5") {
			fivexx += n
		}
	}
	var errs []string
	for e, n := range s.Errors {
		errs = append(errs, fmt.Sprintf("%dx %q", n, e))
	}
	for code, b := range s.Bodies {
		errs = append(errs, fmt.Sprintf("first %s: %q", code, b))
	}
	sort.Strings(errs)
	return fmt.Sprintf("requests %d, 200 %d, refused/no response %d, 5xx %d, 403 %d, 401 %d (%s)",
		total, s.Counts["200"], s.Counts["error"], fivexx, s.Counts["403"], s.Counts["401"], strings.Join(errs, "; "))
}

// rolloutsUnderLoad restarts the auth Deployment, then the operator's,
// while the workload pod sends two steady loops of valid requests (each
// every 20 ms) to the auth Service by ClusterIP: one over kept-alive
// connections (as most proxies send), one with a new connection for every
// request (so kube-proxy routes each one afresh, terminating pods included).
// It prints what each loop saw.
//
// It reports the failed requests without failing on them: they are the
// known failures of issue 23 (the auth server closes its listener on
// SIGTERM with no readiness drop or preStop, among others), which are being
// fixed apart. It fails only when a loop or a rollout does not work at all.
func rolloutsUnderLoad(t *testing.T, tenant string) {
	ip := mustKubectl(t, "", "-n", namespace, "get", "service", "apitoken-operator-auth", "-o", "jsonpath={.spec.clusterIP}")
	url := fmt.Sprintf("https://%s:8082/v1/authorize?scope=articles:read&namespace=%s", ip, tenant)
	for _, d := range []string{"apitoken-auth", "apitoken-operator"} {
		t.Run(d, func(t *testing.T) {
			modes := []string{"kept-alive", "new-connections"}
			loops := map[string]*background{}
			for _, mode := range modes {
				loop, err := startKubectl("-n", tenant, "exec", "workload", "--", "/client", "loop",
					"-cacert", "/ca/ca.crt", "-servername", authService, "-token-file", "/token/token",
					"-new-connections="+strconv.FormatBool(mode == "new-connections"),
					"-interval", "20ms", "-timeout", "2s", "-duration", "5m", "-stop-file", "/tmp/stop-"+d+"-"+mode, url)
				if err != nil {
					t.Fatal(err)
				}
				loops[mode] = loop
			}
			time.Sleep(3 * time.Second)
			start := time.Now()
			_, restartErr := kubectl("", "-n", namespace, "rollout", "restart", "deployment/"+d)
			var statusErr error
			if restartErr == nil {
				_, statusErr = kubectl("", "-n", namespace, "rollout", "status", "deployment/"+d, "--timeout=3m")
			}
			took := time.Since(start)
			record(t.Name()+" (rollout)", took)
			time.Sleep(3 * time.Second)
			summaries := map[string]loopSummary{}
			var loopErrs []string
			for _, mode := range modes {
				_, touchErr := kubectl("", "-n", tenant, "exec", "workload", "--", "/client", "touch", "/tmp/stop-"+d+"-"+mode)
				out, waitErr := loops[mode].wait(30 * time.Second)
				var s loopSummary
				if touchErr != nil || waitErr != nil {
					loopErrs = append(loopErrs, fmt.Sprintf("%s: %v %v\n%s", mode, touchErr, waitErr, out))
				} else if err := json.Unmarshal([]byte(lastLine(out)), &s); err != nil {
					loopErrs = append(loopErrs, fmt.Sprintf("%s: printed %q: %v", mode, out, err))
				}
				summaries[mode] = s
			}
			if restartErr != nil || statusErr != nil {
				t.Fatalf("rollout of %s: %v %v", d, restartErr, statusErr)
			}
			if len(loopErrs) > 0 {
				t.Fatalf("a client loop did not end cleanly: %s", strings.Join(loopErrs, "; "))
			}
			t.Logf("rollout restart of deployment/%s took %s", d, took.Round(100*time.Millisecond))
			for _, mode := range modes {
				s := summaries[mode]
				t.Logf("  %s loop: %s", mode, s)
				note(fmt.Sprintf("rollout restart %s, %s loop: %s", d, mode, s))
				if s.Counts["200"] == 0 {
					t.Errorf("no request of the %s loop succeeded during the rollout of %s: %s", mode, d, s)
				}
				if failed := s.total() - s.Counts["200"]; failed > 0 {
					t.Logf("KNOWN FAILURE (issue 23, being fixed apart): %d of %d valid requests of the %s loop failed during the rollout of %s", failed, s.total(), mode, d)
				}
			}
			// The pods the rollout made must be Ready before the next one.
			checkPodsReady(t)
		})
	}
}
