package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// checkRestartTargets runs what docs/lifecycle.md#restart-targets
// describes on a real node: the chart's opt-in role (restartTargets.enabled)
// for the tenant's namespace, a Deployment whose pod reads the token from an
// environment variable, named in spec.rotation.restartTargets. A
// regeneration rolls it: kube-controller-manager replaces the pod, the new
// pod holds the new token (the auth Service answers it 200), and the
// previous token, still in its grace, is valid while the rollout runs.
func checkRestartTargets(t *testing.T, tenant string) {
	out, err := helm("upgrade", release, "charts/apitoken-operator", "-n", namespace, "--reuse-values",
		"--set", "restartTargets.enabled=true", "--set", "restartTargets.namespaces={"+tenant+"}")
	if err != nil {
		t.Fatal(err)
	}
	t.Log(strings.SplitN(strings.TrimSpace(out), "\n", 2)[0])
	mustKubectl(t, fmt.Sprintf(`apiVersion: tokens.apitoken.dev/v1alpha1
kind: ApiToken
metadata: {name: env-reader, namespace: %s}
spec:
  type: custom
  scopes: ["articles:read"]
  duration: 1h
  rotation:
    gracePeriod: 5m
    restartTargets: [{kind: Deployment, name: env-reader}]
`, tenant), "apply", "-f", "-")
	if err := eventually(30*time.Second, 500*time.Millisecond, func() error {
		_, err := kubectl("", "-n", tenant, "get", "secret", "env-reader-token")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: env-reader, namespace: %s}
spec:
  replicas: 1
  selector: {matchLabels: {app: env-reader}}
  template:
    metadata: {labels: {app: env-reader}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: client
        image: %s
        imagePullPolicy: Never
        args: [sleep]
        env:
        - name: TOKEN
          valueFrom: {secretKeyRef: {name: env-reader-token, key: token}}
        securityContext: {runAsUser: 65532, runAsNonRoot: true, allowPrivilegeEscalation: false}
        volumeMounts: [{name: ca, mountPath: /ca, readOnly: true}]
      volumes: [{name: ca, configMap: {name: auth-ca}}] # checkWorkload's copy of the auth CA
`, tenant, clusterEnv["CLIENT_IMAGE"]), "apply", "-f", "-")
	mustKubectl(t, "", "-n", tenant, "rollout", "status", "deployment/env-reader", "--timeout=90s")
	before := mustKubectl(t, "", "-n", tenant, "get", "pods", "-l", "app=env-reader", "-o", "jsonpath={.items[*].metadata.name}")
	old := secretToken(t, tenant, "env-reader-token")
	if got := mustKubectl(t, "", "-n", tenant, "exec", before, "--", "/client", "getenv", "TOKEN"); got != old {
		t.Fatal("the pod's TOKEN is not the Secret's token")
	}

	start := time.Now()
	mustKubectl(t, "", "-n", tenant, "annotate", "apitoken", "env-reader", tokensv1alpha1.RegenerateAnnotation+"=1")
	var pod, tok string
	if err := eventually(90*time.Second, time.Second, func() error {
		tok = secretToken(t, tenant, "env-reader-token")
		if tok == old {
			return fmt.Errorf("the Secret still holds the first token")
		}
		mark, err := kubectl("", "-n", tenant, "get", "deployment", "env-reader", "-o",
			`jsonpath={.spec.template.metadata.annotations.tokens\.apitoken\.dev/restarted-for}`)
		if err != nil {
			return err
		}
		if mark == "" {
			return fmt.Errorf("the Deployment's pod template has no %s", tokensv1alpha1.RestartedForAnnotation)
		}
		if _, err := kubectl("", "-n", tenant, "rollout", "status", "deployment/env-reader", "--timeout=5s"); err != nil {
			return err
		}
		pod, err = kubectl("", "-n", tenant, "get", "pods", "-l", "app=env-reader", "--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}")
		if err != nil || pod == before || strings.Contains(pod, " ") {
			return fmt.Errorf("pods %q (before: %s)", pod, before)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	record("restart target rolled after a regeneration", time.Since(start))
	if got := mustKubectl(t, "", "-n", tenant, "exec", pod, "--", "/client", "getenv", "TOKEN"); got != tok {
		t.Fatal("the restarted pod's TOKEN is not the Secret's new token")
	}
	ip := mustKubectl(t, "", "-n", namespace, "get", "service", "apitoken-operator-auth", "-o", "jsonpath={.spec.clusterIP}")
	url := fmt.Sprintf("https://%s:8082/v1/authorize?scope=articles:read&namespace=%s", ip, tenant)
	// The new pod calls the auth Service with the token it was started with.
	if err := eventually(30*time.Second, 500*time.Millisecond, func() error {
		got, err := kubectl("", "-n", tenant, "exec", pod, "--", "/client", "get", "-cacert", "/ca/ca.crt", "-servername", authService, "-token-env", "TOKEN", url)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(got, "200") {
			return fmt.Errorf("the new pod's token: %q, want 200", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cond := mustKubectl(t, "", "-n", tenant, "get", "apitoken", "env-reader", "-o", `jsonpath={.status.conditions[?(@.type=="TargetsRestarted")].status}`)
	if cond != "True" {
		t.Fatalf("TargetsRestarted = %q, want True", cond)
	}
	t.Logf("regenerated, the Deployment rolled (%s -> %s) in %s; the new pod's token answered 200", before, pod, time.Since(start).Round(time.Second))
}
