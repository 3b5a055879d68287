package cluster

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	namespace = "apitoken-system"
	release   = "apitoken"
	// imageRepo and imageTag name the image of `make image` in the cluster.
	imageRepo = "localhost/apitoken-operator"
	imageTag  = "e2e"
	// podsReady bounds the time from an install to every pod Ready.
	podsReady = 3 * time.Minute
	// authService is the name the auth endpoint's certificate is valid for.
	authService = "apitoken-operator-auth." + namespace + ".svc"
)

// TestCluster installs the operator the two ways users do, one after the
// other, and checks each install on the real node. The steps depend on
// each other, so they are subtests of one test, in order.
func TestCluster(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	if !step(t, "node Ready", checkNodeReady) {
		return
	}
	if !step(t, "make image and import it into containerd", buildAndImportImage) {
		return
	}
	if !step(t, "helm install", helmInstall) {
		return
	}
	if !checkInstall(t, "helm", "team-helm") {
		return
	}
	step(t, "helm: cluster DNS answers the Services' names, and nothing else", func(t *testing.T) { checkDNS(t, "team-helm") })
	step(t, "helm: kubectl --token auth whoami through the deployed auth Service", func(t *testing.T) { checkWhoami(t, "team-helm") })
	step(t, "helm: kubectl apitoken verify through a port-forward", func(t *testing.T) { checkPluginVerify(t, "team-helm") })
	step(t, "helm: the proxies' attack table through an in-cluster Caddy", checkCaddy)
	step(t, "helm: rollout restarts under a steady client loop", func(t *testing.T) { rolloutsUnderLoad(t, "team-helm") })
	step(t, "helm: helm upgrade to a new image tag under a steady client loop", func(t *testing.T) { helmUpgradeUnderLoad(t, "team-helm") })
	step(t, "helm: kubelet and containerd killed and restarted under a steady client loop", func(t *testing.T) { nodeRestartUnderLoad(t, "team-helm") })
	step(t, "helm: a revoke during a rollout is refused by every replica", func(t *testing.T) { revokeDuringRollout(t, "team-helm") })
	step(t, "helm: the workload's use reaches status.lastUsedAt (NetworkPolicy on)", func(t *testing.T) { checkLastUsed(t, "team-helm") })
	step(t, "helm: a restart target rolls with the new token after a regeneration", func(t *testing.T) { checkRestartTargets(t, "team-helm") })
	step(t, "helm: the cluster's memory", printMemory)
	if !step(t, "helm uninstall", helmUninstall) {
		return
	}
	if !step(t, "kubectl apply -k config/default", kustomizeInstall) {
		return
	}
	checkInstall(t, "config-default", "team-kustomize")
}

func checkNodeReady(t *testing.T) {
	out := mustKubectl(t, "", "get", "node", clusterEnv["NODE_NAME"], "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if out != "True" {
		t.Fatalf("node %s Ready=%q", clusterEnv["NODE_NAME"], out)
	}
	t.Log(mustKubectl(t, "", "get", "nodes", "-o", "wide"))
}

func buildAndImportImage(t *testing.T) {
	start := time.Now()
	out, err := script(20*time.Minute, "make", "image", "IMG="+imageRepo+":"+imageTag)
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, tail(out, 30))
	}
	record("make image", time.Since(start))
	tar := filepath.Join(repo, "bin", "apitoken-operator-image.tar")
	start = time.Now()
	if out, err := script(2*time.Minute, "ctr", "--address", clusterEnv["CTR_ADDRESS"], "-n", "k8s.io", "images", "import", tar); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", tar, err, out)
	}
	record("ctr images import (operator)", time.Since(start))
	out, err = script(time.Minute, "ctr", "--address", clusterEnv["CTR_ADDRESS"], "-n", "k8s.io", "images", "ls", "-q")
	if err != nil || !strings.Contains(out, imageRepo+":"+imageTag) {
		t.Fatalf("containerd does not list %s:%s (%v):\n%s", imageRepo, imageTag, err, out)
	}
}

// installStart is when the install being checked began (helm install,
// kubectl apply -k), for the time to every pod Ready.
var installStart time.Time

// helmInstall installs the chart with its defaults but the image, the
// certificates and two settings for kube-apiserver's webhook token
// authentication: the auth Service's ClusterIP is the one the API server
// was started pointing at (AUTH_CLUSTER_IP), and the auth endpoint's
// certificate is the one hack/cluster.sh up made for it (an existing
// Secret, auth.tls.source=secret: the API server read its CA at start,
// before any chart was installed). The webhooks' certificate is Helm's.
// The NetworkPolicy is on, admitting the API server's address. The auth
// replicas run with --auth-path-prefix=/api, as docs/auth-endpoint.md's
// proxy snippets ask (checkCaddy).
func helmInstall(t *testing.T) {
	if _, err := kubectl("", "create", "namespace", namespace); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		t.Fatal(err)
	}
	dir := clusterEnv["AUTH_TLS_DIR"]
	mustKubectl(t, "", "-n", namespace, "create", "secret", "generic", "apitoken-operator-auth-cert", "--type=kubernetes.io/tls",
		"--from-file=tls.crt="+filepath.Join(dir, "tls.crt"), "--from-file=tls.key="+filepath.Join(dir, "tls.key"),
		"--from-file=ca.crt="+filepath.Join(dir, "ca.crt"))
	installStart = time.Now()
	out, err := helm("install", release, "charts/apitoken-operator", "-n", namespace, "--create-namespace",
		"--set", "image.repository="+imageRepo, "--set", "image.tag="+imageTag, "--set", "image.pullPolicy=Never",
		"--set", "auth.tls.source=secret", "--set", "auth.service.clusterIP="+clusterEnv["AUTH_CLUSTER_IP"],
		"--set", "webhook.certificate.source=helm",
		"--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={"+clusterEnv["NODE_IP"]+"/32}",
		"--set-json", `auth.extraArgs=["--auth-path-prefix=/api"]`)
	if err != nil {
		t.Fatal(err)
	}
	record("helm install (the command)", time.Since(installStart))
	t.Log(tail(out, 5))
	ip := mustKubectl(t, "", "-n", namespace, "get", "service", "apitoken-operator-auth", "-o", "jsonpath={.spec.clusterIP}")
	if ip != clusterEnv["AUTH_CLUSTER_IP"] {
		t.Fatalf("Service apitoken-operator-auth has ClusterIP %s, want %s (auth.service.clusterIP)", ip, clusterEnv["AUTH_CLUSTER_IP"])
	}
}

// helmUninstall removes the release; the CRD (crds/), the namespace and
// the salt stay, as docs/deploy.md says.
func helmUninstall(t *testing.T) {
	if _, err := helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "2m"); err != nil {
		t.Fatal(err)
	}
	if err := eventually(2*time.Minute, time.Second, func() error {
		out, err := kubectl("", "-n", namespace, "get", "pods", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("pods left: %s", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// checkInstall runs the checks every install must pass, as subtests.
func checkInstall(t *testing.T, install, tenant string) bool {
	t.Helper()
	if !step(t, install+": every pod Ready, 0 restarts", checkPodsReady) {
		return false
	}
	took := time.Since(installStart)
	record(install+": from the install's start to every pod Ready", took)
	note(fmt.Sprintf("%s: every pod Ready %.1fs after the install began", install, took.Seconds()))
	if !step(t, install+": the webhooks refuse a bad ApiToken, a good one goes Active", func(t *testing.T) { checkWebhooks(t, tenant) }) {
		return false
	}
	return step(t, install+": a workload calls the auth Service by ClusterIP with its mounted token", func(t *testing.T) { checkWorkload(t, tenant) })
}

type podList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Status struct {
			Phase      string `json:"phase"`
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
			ContainerStatuses []struct {
				Name         string `json:"name"`
				Ready        bool   `json:"ready"`
				RestartCount int    `json:"restartCount"`
			} `json:"containerStatuses"`
		} `json:"status"`
	} `json:"items"`
}

func pods(ns string, selector ...string) (podList, error) {
	args := []string{"-n", ns, "get", "pods", "-o", "json"}
	if len(selector) > 0 {
		args = append(args, "-l", strings.Join(selector, ","))
	}
	var l podList
	out, err := kubectl("", args...)
	if err != nil {
		return l, err
	}
	return l, json.Unmarshal([]byte(out), &l)
}

// checkPodsReady waits (at most podsReady, printed) for the operator's and
// the auth replicas' pods to be Ready, then requires 0 restarts.
func checkPodsReady(t *testing.T) {
	start := time.Now()
	var last podList
	err := eventually(podsReady, time.Second, func() error {
		l, err := pods(namespace)
		if err != nil {
			return err
		}
		last = l
		if len(l.Items) < 4 {
			return fmt.Errorf("%d pods, want 4 (2 operator, 2 auth)", len(l.Items))
		}
		for _, p := range l.Items {
			ready := false
			for _, c := range p.Status.Conditions {
				ready = ready || (c.Type == "Ready" && c.Status == "True")
			}
			if !ready {
				return fmt.Errorf("pod %s is %s and not Ready", p.Metadata.Name, p.Status.Phase)
			}
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("pods Ready after %s (bound %s)", took.Round(100*time.Millisecond), podsReady)
	record(t.Name()+" (until every pod Ready)", took)
	if err != nil {
		out, _ := kubectl("", "-n", namespace, "get", "pods,events", "-o", "wide")
		t.Fatalf("%v\n%s", err, out)
	}
	for _, p := range last.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount != 0 {
				logs, _ := kubectl("", "-n", namespace, "logs", p.Metadata.Name, "-c", c.Name, "--previous", "--tail", "30")
				t.Errorf("pod %s container %s restarted %d times; its previous run ended with:\n%s", p.Metadata.Name, c.Name, c.RestartCount, logs)
			}
		}
	}
}

// checkWebhooks creates a good ApiToken and one that only the deployed
// validating webhook can refuse (a Secret name another ApiToken holds: the
// schema cannot know), so kube-apiserver must have reached the webhook
// through its Service.
func checkWebhooks(t *testing.T, tenant string) {
	if _, err := kubectl("", "create", "namespace", tenant); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		t.Fatal(err)
	}
	// The chart's NetworkPolicy admits auth clients from namespaces so
	// labelled (no CNI here enforces it, but the workload is set up as one
	// that does would need).
	mustKubectl(t, "", "label", "--overwrite", "namespace", tenant, "tokens.apitoken.dev/auth-client=true")
	good := fmt.Sprintf(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: reader, namespace: %s}
spec: {type: custom, scopes: ["articles:read"], duration: 1h, secretName: reader-credentials}
`, tenant)
	// The webhooks' endpoints may lag the pods' readiness by a kube-proxy sync.
	if err := eventually(30*time.Second, time.Second, func() error {
		_, err := kubectl(good, "apply", "-f", "-")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := eventually(time.Minute, 500*time.Millisecond, func() error {
		phase, err := kubectl("", "-n", tenant, "get", "apitoken", "reader", "-o", "jsonpath={.status.phase}")
		if err != nil {
			return err
		}
		if phase != "Active" {
			return fmt.Errorf("phase %q, want Active", phase)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	creator := mustKubectl(t, "", "-n", tenant, "get", "apitoken", "reader", "-o", `jsonpath={.metadata.annotations.tokens\.apitoken\.dev/created-by}`)
	if creator == "" {
		t.Errorf("the mutating webhook did not stamp tokens.apitoken.dev/created-by")
	}
	bad := fmt.Sprintf(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: thief, namespace: %s}
spec: {type: read-only, duration: 1h, secretName: reader-credentials}
`, tenant)
	_, err := kubectl(bad, "apply", "-f", "-")
	want := `is already used by ApiToken reader`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("an ApiToken taking another's Secret: got %v, want a refusal saying %q", err, want)
	}
	t.Logf("refused by the deployed webhook: %s", lastLine(err.Error()))
}

// firstUse is when checkWorkload began to use each tenant's token.
var firstUse = map[string]time.Time{}

// checkWorkload runs a pod that mounts the token Secret and the CA of the
// auth certificate (copied from the documented Secret into a ConfigMap of
// the tenant's namespace) and calls the auth Service over HTTPS by its
// ClusterIP: 200 for a scope the token grants, 403 for one it does not.
func checkWorkload(t *testing.T, tenant string) {
	ca := mustKubectl(t, "", "-n", namespace, "get", "secret", "apitoken-operator-auth-cert", "-o", `jsonpath={.data.ca\.crt}`)
	caPEM, err := base64.StdEncoding.DecodeString(ca)
	if err != nil || !strings.Contains(string(caPEM), "BEGIN CERTIFICATE") {
		t.Fatalf("Secret apitoken-operator-auth-cert has no PEM ca.crt (%v)", err)
	}
	caFile := filepath.Join(scratch, tenant+"-ca.crt")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "", "-n", tenant, "create", "configmap", "auth-ca", "--from-file=ca.crt="+caFile)
	mustKubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: workload, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: %s
    imagePullPolicy: Never
    args: [sleep]
    securityContext: {runAsUser: 65532, runAsNonRoot: true, allowPrivilegeEscalation: false}
    volumeMounts:
    - {name: token, mountPath: /token, readOnly: true}
    - {name: ca, mountPath: /ca, readOnly: true}
  volumes:
  - {name: token, secret: {secretName: reader-credentials}}
  - {name: ca, configMap: {name: auth-ca}}
`, tenant, clusterEnv["CLIENT_IMAGE"]), "apply", "-f", "-")
	mustKubectl(t, "", "-n", tenant, "wait", "--for=condition=Ready", "pod/workload", "--timeout=90s")
	ip := mustKubectl(t, "", "-n", namespace, "get", "service", "apitoken-operator-auth", "-o", "jsonpath={.spec.clusterIP}")
	call := func(scope string) (int, string, error) {
		out, err := kubectl("", "-n", tenant, "exec", "workload", "--", "/client", "get",
			"-cacert", "/ca/ca.crt", "-servername", authService, "-token-file", "/token/token",
			fmt.Sprintf("https://%s:8082/v1/authorize?scope=%s&namespace=%s", ip, scope, tenant))
		if err != nil {
			return 0, "", err
		}
		code, body, _ := strings.Cut(out, "\n")
		n, err := strconv.Atoi(code)
		return n, strings.TrimSpace(body), err
	}
	// The auth replicas see the new token once their cache has it.
	firstUse[tenant] = time.Now()
	if err := eventually(30*time.Second, 500*time.Millisecond, func() error {
		code, body, err := call("articles:read")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("in scope: %d %s, want 200", code, body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	code, body, err := call("orders:write")
	if err != nil {
		t.Fatal(err)
	}
	if code != 403 {
		t.Fatalf("out of scope: %d %s, want 403", code, body)
	}
	t.Logf("https://%s:8082 (%s): articles:read 200, orders:write 403 (%s)", ip, authService, body)
}
