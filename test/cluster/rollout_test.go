package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

// rolloutsUnderLoad restarts the auth Deployment, then the operator's, then
// deletes the leader's pod, each under load (underLoad).
func rolloutsUnderLoad(t *testing.T, tenant string) {
	for _, sc := range []loadScenario{
		{"rollout restart apitoken-auth", func() error {
			_, err := kubectl("", "-n", namespace, "rollout", "restart", "deployment/apitoken-auth")
			return err
		}, []string{"apitoken-auth"}},
		{"rollout restart apitoken-operator", func() error {
			_, err := kubectl("", "-n", namespace, "rollout", "restart", "deployment/apitoken-operator")
			return err
		}, []string{"apitoken-operator"}},
		{"delete the leader's pod", deleteLeaderPod, []string{"apitoken-operator"}},
	} {
		t.Run(sc.name, func(t *testing.T) { underLoad(t, tenant, sc) })
	}
}

// loadScenario is a change made while the loops run: act, then wait for
// the deployments' rollouts.
type loadScenario struct {
	name        string
	act         func() error
	deployments []string
}

// tableNamespaces are the namespaces of the proxies' attack table tokens
// (checkCaddy), whose tokens a rollout must not re-issue either.
var tableNamespaces = []string{"team-a", "team-b", "team-c"}

// underLoad runs sc while the workload pod sends two steady loops of valid
// requests (each every 20 ms) to the auth Service by ClusterIP: one over
// kept-alive connections (as most proxies send), one with a new connection
// for every request (so kube-proxy routes each one afresh, terminating pods
// included); and, once checkCaddy has run, a third through the in-cluster
// Caddy from this machine (forward_auth to the auth Service, kept-alive).
// Every request must succeed, and no token may change its hash or have an
// Event of a re-issue (issue 30: an upgrade never logs clients out).
func underLoad(t *testing.T, tenant string, sc loadScenario) {
	ip := mustKubectl(t, "", "-n", namespace, "get", "service", "apitoken-operator-auth", "-o", "jsonpath={.spec.clusterIP}")
	url := fmt.Sprintf("https://%s:8082/v1/authorize?scope=articles:read&namespace=%s", ip, tenant)
	namespaces := append([]string{tenant}, tableNamespaces...)
	hashes := map[string]map[string]string{}
	for _, ns := range namespaces {
		hashes[ns] = tokenHashes(t, ns)
	}
	if hashes[tenant]["reader"] == "" {
		t.Fatalf("ApiToken %s/reader records no hash", tenant)
	}
	stopFile := "/tmp/stop-" + strings.ReplaceAll(sc.name, " ", "-")
	modes := []string{"kept-alive", "new-connections"}
	loops := map[string]*background{}
	for _, mode := range modes {
		loop, err := startKubectl("-n", tenant, "exec", "workload", "--", "/client", "loop",
			"-cacert", "/ca/ca.crt", "-servername", authService, "-token-file", "/token/token",
			"-new-connections="+strconv.FormatBool(mode == "new-connections"),
			"-interval", "20ms", "-timeout", "2s", "-duration", "5m", "-stop-file", stopFile+"-"+mode, url)
		if err != nil {
			t.Fatal(err)
		}
		loops[mode] = loop
	}
	var viaCaddy *proxyLoop
	if caddyReader.addr != "" {
		viaCaddy = startProxyLoop(caddyReader.addr, caddyReader.token)
	}
	time.Sleep(3 * time.Second)
	start := time.Now()
	actErr := sc.act()
	var statusErr error
	for _, d := range sc.deployments {
		if actErr == nil && statusErr == nil {
			_, statusErr = kubectl("", "-n", namespace, "rollout", "status", "deployment/"+d, "--timeout=3m")
		}
	}
	took := time.Since(start)
	record(t.Name()+" (rollout)", took)
	time.Sleep(3 * time.Second)
	summaries := map[string]loopSummary{}
	var loopErrs []string
	for _, mode := range modes {
		_, touchErr := kubectl("", "-n", tenant, "exec", "workload", "--", "/client", "touch", stopFile+"-"+mode)
		out, waitErr := loops[mode].wait(30 * time.Second)
		var s loopSummary
		if touchErr != nil || waitErr != nil {
			loopErrs = append(loopErrs, fmt.Sprintf("%s: %v %v\n%s", mode, touchErr, waitErr, out))
		} else if err := json.Unmarshal([]byte(lastLine(out)), &s); err != nil {
			loopErrs = append(loopErrs, fmt.Sprintf("%s: printed %q: %v", mode, out, err))
		}
		summaries[mode] = s
	}
	if viaCaddy != nil {
		modes = append(modes, "through-caddy")
		summaries["through-caddy"] = viaCaddy.end()
	}
	if actErr != nil || statusErr != nil {
		t.Fatalf("%s: %v %v", sc.name, actErr, statusErr)
	}
	if len(loopErrs) > 0 {
		t.Fatalf("a client loop did not end cleanly: %s", strings.Join(loopErrs, "; "))
	}
	t.Logf("%s: deployment %s available again after %s", sc.name, strings.Join(sc.deployments, ", "), took.Round(100*time.Millisecond))
	reissued := 0
	for _, ns := range namespaces {
		now := tokenHashes(t, ns)
		for name, h := range hashes[ns] {
			if now[name] != h {
				reissued++
				t.Errorf("%s re-issued the untouched token %s/%s (its hash changed)", sc.name, ns, name)
			}
		}
		reasons := mustKubectl(t, "", "-n", ns, "get", "events", "--field-selector", "involvedObject.kind=ApiToken", "-o", `jsonpath={range .items[*]}{.reason}{"\n"}{end}`)
		for _, r := range strings.Fields(reasons) {
			switch r {
			case "Regenerated", "SaltRotated", "SecretMissing", "SecretTampered", "SecretUntrusted", "CutHeld":
				t.Errorf("an Event %s on an ApiToken of %s", r, ns)
			}
		}
	}
	for _, mode := range modes {
		s := summaries[mode]
		t.Logf("  %s loop: %s", mode, s)
		failed := s.total() - s.Counts["200"]
		note(fmt.Sprintf("%s, %s loop: %s; refused %d, re-issued tokens %d", sc.name, mode, s, failed, reissued))
		if s.Counts["200"] == 0 {
			t.Errorf("no request of the %s loop succeeded during %s: %s", mode, sc.name, s)
		}
		if failed > 0 {
			t.Errorf("%d of %d valid requests of the %s loop failed during %s: %s", failed, s.total(), mode, sc.name, s)
		}
	}
	// The pods the rollout made must be Ready before the next one.
	checkPodsReady(t)
}

// proxyLoop sends a valid request through the in-cluster Caddy every 20 ms
// from this machine, over kept-alive connections, until end.
type proxyLoop struct {
	stop chan struct{}
	done chan loopSummary
}

func startProxyLoop(addr, tok string) *proxyLoop {
	l := &proxyLoop{stop: make(chan struct{}), done: make(chan loopSummary, 1)}
	go func() {
		tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
		s := loopSummary{Counts: map[string]int{}, Errors: map[string]int{}, Bodies: map[string]string{}}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				l.done <- s
				return
			case <-tick.C:
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/articles/1", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := c.Do(req)
			if err != nil {
				s.Counts["error"]++
				s.Errors[err.Error()]++
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			_ = resp.Body.Close()
			code := strconv.Itoa(resp.StatusCode)
			s.Counts[code]++
			if _, seen := s.Bodies[code]; !seen && resp.StatusCode != 200 {
				s.Bodies[code] = string(body)
			}
		}
	}()
	return l
}

// end stops the loop and returns its summary.
func (l *proxyLoop) end() loopSummary {
	close(l.stop)
	return <-l.done
}

// deleteLeaderPod deletes the pod holding the operator's leader lease, as
// `kubectl delete pod` does (a graceful termination).
func deleteLeaderPod() error {
	holder, err := kubectl("", "-n", namespace, "get", "lease", "apitoken-operator.tokens.apitoken.dev", "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		return err
	}
	pod, _, ok := strings.Cut(holder, "_")
	if !ok || pod == "" {
		return fmt.Errorf("lease holder %q names no pod", holder)
	}
	if _, err = kubectl("", "-n", namespace, "delete", "pod", pod, "--wait=false"); err != nil {
		return err
	}
	// The lease moves to another pod (the deleted one releases it on its
	// way out), and the Deployment makes a new pod: rollout status follows.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		h, _ := kubectl("", "-n", namespace, "get", "lease", "apitoken-operator.tokens.apitoken.dev", "-o", "jsonpath={.spec.holderIdentity}")
		if p, _, _ := strings.Cut(h, "_"); p != "" && p != pod {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the lease still names pod %s a minute after its deletion", pod)
}
