package helm

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

var (
	clusterOnce sync.Once
	env         *testenv.Env
	kubeconfig  string
	clusterErr  error
)

// cluster starts (once) a real kube-apiserver and etcd with the
// cert-manager and Prometheus Operator kinds as stubs and namespace
// apitoken-system, and returns a kubeconfig for it. It has no ApiToken
// CRD: the chart installs it (templates/crds.yaml), and each test that
// installs the chart deletes it at the end, so that the next one starts
// from a cluster without it. It fails the test when it cannot; it never
// skips.
func cluster(t *testing.T) string {
	t.Helper()
	clusterOnce.Do(func() {
		if env, clusterErr = testenv.Start(testenv.Options{WithoutCRDs: true}); clusterErr != nil {
			return
		}
		kubeconfig = filepath.Join(helmHome, "kubeconfig")
		if clusterErr = env.WriteKubeconfig(kubeconfig, "helm-test-admin"); clusterErr != nil {
			return
		}
		if out, err := kubectlErrOut(stubCRDs, "--kubeconfig", kubeconfig, "apply", "-f", "-"); err != nil {
			clusterErr = fmt.Errorf("creating the stub CRDs: %w\n%s", err, out)
			return
		}
		if out, err := kubectlErrOut("", "--kubeconfig", kubeconfig, "create", "namespace", namespace); err != nil {
			clusterErr = fmt.Errorf("creating namespace %s: %w\n%s", namespace, err, out)
			return
		}
		// The stub kinds are served once their CRDs are established.
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := kubectlErrOut("", "--kubeconfig", kubeconfig, "get", "certificates.cert-manager.io,servicemonitors.monitoring.coreos.com,prometheusrules.monitoring.coreos.com", "-A")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				clusterErr = fmt.Errorf("the stub CRDs are not served: %w\n%s", err, out)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	if clusterErr != nil {
		t.Fatalf("starting the API server: %v", clusterErr)
	}
	return kubeconfig
}

func stopCluster() {
	if env != nil {
		_ = env.Stop()
	}
}

// stubCRDs stand in for cert-manager's and the Prometheus Operator's CRDs
// (as in test/e2e): the kinds exist and accept any object, which is what a
// server-side dry run needs.
var stubCRDs = strings.Join([]string{
	stubCRD("cert-manager.io", "Certificate", "certificates"),
	stubCRD("cert-manager.io", "Issuer", "issuers"),
	stubCRD("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
	stubCRD("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
}, "---\n")

func stubCRD(group, kind, plural string) string {
	version := "v1"
	return fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %[3]s.%[1]s}
spec:
  group: %[1]s
  names: {kind: %[2]s, plural: %[3]s, singular: %[4]s, listKind: %[2]sList}
  scope: Namespaced
  versions:
  - name: %[5]s
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`, group, kind, plural, strings.ToLower(kind), version)
}

var dryRunApplied = regexp.MustCompile(`(?m)^\S+ serverside-applied \(server dry run\)$`)

// TestEveryValuesFileAppliesWithAServerSideDryRun renders the chart (its
// CRD included) for the defaults and for each documented values file, and
// applies every object to a real kube-apiserver with a server-side dry
// run: the API server validates each against its schema (and the CRD's).
func TestEveryValuesFileAppliesWithAServerSideDryRun(t *testing.T) {
	kc := cluster(t)
	for _, f := range append([]string{""}, valuesFiles(t)...) {
		name := "defaults"
		var args []string
		if f != "" {
			name = filepath.Base(f)
			args = append(args, "--values", f)
		}
		t.Run(name, func(t *testing.T) {
			objs := render(t, args...)
			out := kubectl(t, objs.yamlStream(t), "--kubeconfig", kc, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-")
			if n := len(dryRunApplied.FindAllString(out, -1)); n != len(objs) {
				t.Fatalf("%d objects rendered, %d applied with a server dry run:\n%s", len(objs), n, out)
			}
			t.Logf("%d objects applied with a server-side dry run", len(objs))
			checkValuesFile(t, name, objs)
		})
	}
}

// checkValuesFile checks what each documented values file is documented to do.
func checkValuesFile(t *testing.T, name string, objs objects) {
	t.Helper()
	args := func(deployment string) []string {
		d := objs.get("Deployment", deployment)
		if d == nil {
			t.Fatalf("no Deployment %s", deployment)
		}
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		a, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
		return a
	}
	authSelector := func() string {
		s, _, _ := unstructured.NestedString(objs.get("Service", "apitoken-operator-auth").Object, "spec", "selector", "app.kubernetes.io/name")
		return s
	}
	switch name {
	case "auth-tls-values.yaml":
		if got := authSelector(); got != "apitoken-auth" {
			t.Errorf("Service apitoken-operator-auth selects %s, want apitoken-auth", got)
		}
		replicas, _, _ := unstructured.NestedFieldNoCopy(objs.get("Deployment", "apitoken-auth").Object, "spec", "replicas")
		if fmt.Sprint(replicas) != "3" {
			t.Errorf("apitoken-auth has %v replicas, want 3", replicas)
		}
		cert := objs.get("Certificate", "apitoken-operator-auth-cert")
		dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
		issuer, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
		if !contains(dnsNames, "apitoken-auth.example.internal") || !contains(dnsNames, "apitoken-operator-usage.apitoken-system.svc") {
			t.Errorf("auth certificate names %v", dnsNames)
		}
		if issuer["kind"] != "ClusterIssuer" || issuer["name"] != "internal-ca" || objs.get("Issuer", "apitoken-operator-selfsigned") != nil {
			t.Errorf("auth certificate issuer %v; the self-signed Issuer is rendered: %t", issuer, objs.get("Issuer", "apitoken-operator-selfsigned") != nil)
		}
		for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
			if !contains(args(d), "--salt-secret=apitoken-salt") {
				t.Errorf("Deployment %s does not read the salt from Secret apitoken-salt: %v", d, args(d))
			}
		}
		names, _, _ := unstructured.NestedSlice(objs.get("Role", "apitoken-auth-salt-reader").Object, "rules")
		if fmt.Sprint(names) != "[map[apiGroups:[] resourceNames:[apitoken-salt] resources:[secrets] verbs:[get list watch]]]" {
			t.Errorf("the auth replicas' salt Role: %v", names)
		}
		if !strings.Contains(fmt.Sprint(objs.get("ValidatingAdmissionPolicy", "apitoken-operator-own-secrets").Object), "object.metadata.name == 'apitoken-salt'") {
			t.Error("the Secret policy does not let the operator write Secret apitoken-salt")
		}
		if !contains(args("apitoken-auth"), "--auth-path-prefix=/api") || !contains(args("apitoken-operator"), "--max-concurrent-reconciles=8") {
			t.Error("extraArgs are not passed")
		}
		rules := fmt.Sprint(objs.get("PrometheusRule", "apitoken-operator").Object)
		for _, alert := range []string{"ApiTokenAuthEndpointDown", "ApiTokenExpiringSoon", "ApiTokenAuthReplicasReduced"} {
			if !strings.Contains(rules, "alert:"+alert) {
				t.Errorf("the PrometheusRule has no alert %s", alert)
			}
		}
		if objs.get("ServiceMonitor", "apitoken-auth") == nil || objs.get("NetworkPolicy", "apitoken-operator") == nil {
			t.Error("the ServiceMonitors or the NetworkPolicy are missing")
		}
	case "self-managed-certs-values.yaml":
		for _, kind := range []string{"Certificate", "Issuer"} {
			for _, o := range objs {
				if o.GetKind() == kind {
					t.Errorf("%s rendered without cert-manager", key(o))
				}
			}
		}
		checkGeneratedCertificates(t, objs)
	case "platform-values.yaml":
		checkPlatformValues(t, objs)
	case "single-deployment-values.yaml":
		if got := authSelector(); got != "apitoken-operator" {
			t.Errorf("Service apitoken-operator-auth selects %s, want apitoken-operator", got)
		}
		for _, o := range objs {
			if strings.Contains(o.GetName(), "apitoken-auth") || strings.Contains(o.GetName(), "-usage") {
				t.Errorf("%s rendered without the auth-only replicas", key(o))
			}
		}
		for _, a := range args("apitoken-operator") {
			if strings.HasPrefix(a, "--usage-reporters") {
				t.Errorf("%s without the auth-only replicas", a)
			}
		}
		if !contains(args("apitoken-operator"), "--auth-default-namespaces=default") {
			t.Errorf("args: %v", args("apitoken-operator"))
		}
		webhooks, _, _ := unstructured.NestedSlice(objs.get("ValidatingWebhookConfiguration", "apitoken-operator-validating").Object, "webhooks")
		if ca, _, _ := unstructured.NestedString(webhooks[0].(map[string]any), "clientConfig", "caBundle"); ca == "" {
			t.Error("no caBundle from webhook.certificate.caBundle")
		}
		monitored := render(t, "--values", filepath.Join(chartDir, "ci", name), "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true")
		if monitored.get("ServiceMonitor", "apitoken-auth") != nil || monitored.get("ServiceMonitor", "apitoken-operator") == nil {
			t.Error("without the auth-only replicas: the auth ServiceMonitor is rendered, or the operator's is not")
		}
		if rules := fmt.Sprint(monitored.get("PrometheusRule", "apitoken-operator").Object); strings.Contains(rules, "ApiTokenAuthEndpointDown") || !strings.Contains(rules, "ApiTokenOperatorDown") {
			t.Error("without the auth-only replicas: ApiTokenAuthEndpointDown is rendered, or ApiTokenOperatorDown is not")
		}
	}
}

// checkGeneratedCertificates checks the certificates Helm generated: each
// Secret's certificate is signed by its ca.crt for the Service names, the
// webhook configurations carry that CA, and the pods a checksum of them.
func checkGeneratedCertificates(t *testing.T, objs objects) {
	t.Helper()
	for secret, host := range map[string]string{
		"apitoken-operator-webhook-cert": "apitoken-operator-webhook.apitoken-system.svc",
		"apitoken-operator-auth-cert":    "apitoken-operator-usage.apitoken-system.svc",
	} {
		s := objs.get("Secret", secret)
		if s == nil {
			t.Fatalf("no Secret %s", secret)
		}
		verifyCert(t, secretData(t, s, "tls.crt"), secretData(t, s, "ca.crt"), host)
		if s.GetAnnotations()["tokens.apitoken.dev/not-after"] == "" {
			t.Errorf("Secret %s has no not-after annotation", secret)
		}
	}
	ca := base64.StdEncoding.EncodeToString(secretData(t, objs.get("Secret", "apitoken-operator-webhook-cert"), "ca.crt"))
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, o := range objs {
			if o.GetKind() != kind {
				continue
			}
			if len(o.GetAnnotations()) != 0 {
				t.Errorf("%s: annotations %v without cert-manager", key(o), o.GetAnnotations())
			}
			webhooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
			if got, _, _ := unstructured.NestedString(webhooks[0].(map[string]any), "clientConfig", "caBundle"); got != ca {
				t.Errorf("%s: the caBundle is not the webhook Secret's ca.crt", key(o))
			}
		}
	}
	for _, d := range []string{"apitoken-operator", "apitoken-auth"} {
		if checksum(objs, d) == "" {
			t.Errorf("Deployment %s has no checksum/certificates annotation", d)
		}
	}
}

func checksum(objs objects, deployment string) string {
	s, _, _ := unstructured.NestedString(objs.get("Deployment", deployment).Object, "spec", "template", "metadata", "annotations", "checksum/certificates")
	return s
}

func secretData(t *testing.T, s *unstructured.Unstructured, k string) []byte {
	t.Helper()
	v, _, _ := unstructured.NestedString(s.Object, "data", k)
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) == 0 {
		t.Fatalf("Secret %s key %s: %q %v", s.GetName(), k, v, err)
	}
	return b
}

// verifyCert checks that certPEM is valid for host, signed by a CA of caPEM.
func verifyCert(t *testing.T, certPEM, caPEM []byte, host string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA in ca.crt")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
		t.Errorf("certificate for %s: %v", host, err)
	}
	return cert
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestHelmInstallKeepsAndRenewsGeneratedCertificates installs the chart
// with the certificates Helm generates into a real API server, and
// upgrades it: an upgrade keeps them (Helm reads them back with lookup);
// one within renewBeforeDays of their expiry makes new ones, with the
// previous CA still in ca.crt and the caBundle while the pods roll.
// helm uninstall keeps the CRD (crds.keep). A second release is refused.
func TestHelmInstallKeepsAndRenewsGeneratedCertificates(t *testing.T) {
	kc := cluster(t)
	const ns = "apitoken-helm"
	values := filepath.Join(chartDir, "ci", "self-managed-certs-values.yaml")
	// Its own namespace, so the Secret names of other tests' dry runs do
	// not meet these; the cluster-wide objects are the chart's either way.
	install := helm(t, "install", release, chartDir, "--kubeconfig", kc, "--namespace", ns, "--create-namespace", "--values", values)
	for _, want := range []string{
		"STATUS: deployed",
		"kubectl -n " + ns + " rollout status deployment/apitoken-auth",
		"TOKEN=$(kubectl get secret ci-reader-token -n team-a -o jsonpath='{.data.token}' | base64 -d)",
		`"https://apitoken-operator-auth.` + ns + `.svc:8082/v1/authorize?scope=articles:read&namespace=team-a"`,
		"kubectl apitoken verify --service " + ns + "/apitoken-operator-auth:8082",
		"renewed only by a `helm upgrade`",
	} {
		if !strings.Contains(install, want) {
			t.Errorf("helm install's notes lack %q:\n%s", want, install)
		}
	}
	t.Cleanup(func() {
		out := helm(t, "uninstall", release, "--kubeconfig", kc, "--namespace", ns)
		if !strings.Contains(out, "uninstalled") {
			t.Errorf("helm uninstall: %s", out)
		}
		kubectl(t, "", "--kubeconfig", kc, "get", "crd", crdName)
		deleteCRD(t, kc)
	})

	state := func() (objs objects) {
		for _, kind := range []string{"secret", "deployment"} {
			objs = append(objs, parse(t, kubectl(t, "", "--kubeconfig", kc, "-n", ns, "get", kind, "-o", "yaml"))...)
		}
		list := parse(t, kubectl(t, "", "--kubeconfig", kc, "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "yaml"))
		for _, l := range list {
			items, _, _ := unstructured.NestedSlice(l.Object, "items")
			for _, i := range items {
				objs = append(objs, &unstructured.Unstructured{Object: i.(map[string]any)})
			}
		}
		var flat objects
		for _, o := range objs {
			if items, ok, _ := unstructured.NestedSlice(o.Object, "items"); ok {
				for _, i := range items {
					flat = append(flat, &unstructured.Unstructured{Object: i.(map[string]any)})
				}
				continue
			}
			flat = append(flat, o)
		}
		return flat
	}
	t.Log("a second release in the cluster is refused, naming the first")
	for _, other := range [][2]string{{"apitoken-operator-2", ns}, {release, "apitoken-helm-2"}} {
		out, err := helmErrOut("install", other[0], chartDir, "--kubeconfig", kc, "--namespace", other[1], "--create-namespace", "--values", values)
		if want := "apitoken-operator is installed in this cluster already, by release " + release + " in namespace " + ns; err == nil || !strings.Contains(out, want) {
			t.Errorf("helm install %s -n %s beside the release: want a refusal saying %q, got %v:\n%s", other[0], other[1], want, err, out)
		}
	}

	// The rendered Secrets name the release namespace in their certificates.
	installed := state()
	checkInstalled := func(objs objects) {
		t.Helper()
		for secret, host := range map[string]string{
			"apitoken-operator-webhook-cert": "apitoken-operator-webhook." + ns + ".svc",
			"apitoken-operator-auth-cert":    "apitoken-operator-usage." + ns + ".svc",
		} {
			s := objs.get("Secret", secret)
			verifyCert(t, secretData(t, s, "tls.crt"), secretData(t, s, "ca.crt"), host)
		}
		ca := base64.StdEncoding.EncodeToString(secretData(t, objs.get("Secret", "apitoken-operator-webhook-cert"), "ca.crt"))
		webhooks, _, _ := unstructured.NestedSlice(objs.get("ValidatingWebhookConfiguration", "apitoken-operator-validating").Object, "webhooks")
		if got, _, _ := unstructured.NestedString(webhooks[0].(map[string]any), "clientConfig", "caBundle"); got != ca {
			t.Error("the caBundle is not the webhook Secret's ca.crt")
		}
	}
	checkInstalled(installed)
	crt := func(objs objects, secret string) string {
		return string(secretData(t, objs.get("Secret", secret), "tls.crt"))
	}

	t.Log("an upgrade keeps the certificates, and the pods")
	helm(t, "upgrade", release, chartDir, "--kubeconfig", kc, "--namespace", ns, "--values", values)
	upgraded := state()
	checkInstalled(upgraded)
	for _, s := range []string{"apitoken-operator-webhook-cert", "apitoken-operator-auth-cert"} {
		if crt(upgraded, s) != crt(installed, s) {
			t.Errorf("helm upgrade replaced the certificate of Secret %s", s)
		}
	}
	if checksum(upgraded, "apitoken-operator") != checksum(installed, "apitoken-operator") {
		t.Error("helm upgrade changed the pods' checksum/certificates (a rollout for nothing)")
	}

	t.Log("an upgrade within renewBeforeDays of the expiry renews them")
	soon := time.Now().Add(10 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, s := range []string{"apitoken-operator-webhook-cert", "apitoken-operator-auth-cert"} {
		kubectl(t, "", "--kubeconfig", kc, "-n", ns, "annotate", "secret", s, "--overwrite", "tokens.apitoken.dev/not-after="+soon)
	}
	helm(t, "upgrade", release, chartDir, "--kubeconfig", kc, "--namespace", ns, "--values", values)
	renewed := state()
	checkInstalled(renewed)
	for _, s := range []string{"apitoken-operator-webhook-cert", "apitoken-operator-auth-cert"} {
		if crt(renewed, s) == crt(installed, s) {
			t.Errorf("helm upgrade kept the certificate of Secret %s, %s from its expiry", s, soon)
		}
		// The old certificate, still served by the pods until they roll,
		// verifies against the new ca.crt (and so the new caBundle).
		verifyCert(t, []byte(crt(installed, s)), secretData(t, renewed.get("Secret", s), "ca.crt"), map[string]string{
			"apitoken-operator-webhook-cert": "apitoken-operator-webhook." + ns + ".svc",
			"apitoken-operator-auth-cert":    "apitoken-operator-usage." + ns + ".svc",
		}[s])
		if n := strings.Count(string(secretData(t, renewed.get("Secret", s), "ca.crt")), "BEGIN CERTIFICATE"); n != 2 {
			t.Errorf("Secret %s's ca.crt holds %d CAs, want the new and the previous", s, n)
		}
		notAfter := renewed.get("Secret", s).GetAnnotations()["tokens.apitoken.dev/not-after"]
		if at, err := time.Parse(time.RFC3339, notAfter); err != nil || at.Before(time.Now().Add(700*24*time.Hour)) {
			t.Errorf("Secret %s: not-after %q, want about 730 days from now", s, notAfter)
		}
	}
	if checksum(renewed, "apitoken-operator") == checksum(installed, "apitoken-operator") {
		t.Error("new certificates did not change the pods' checksum/certificates (no rollout)")
	}

	t.Log("an upgrade that adds an IP SAN to the auth certificate makes a new one, and keeps the webhook's")
	helm(t, "upgrade", release, chartDir, "--kubeconfig", kc, "--namespace", ns, "--values", values, "--set", "auth.tls.ipAddresses={192.0.2.7}")
	withIP := state()
	checkInstalled(withIP)
	if crt(withIP, "apitoken-operator-webhook-cert") != crt(renewed, "apitoken-operator-webhook-cert") {
		t.Error("adding an IP SAN to the auth certificate replaced the webhook's")
	}
	s := withIP.get("Secret", "apitoken-operator-auth-cert")
	if cert := verifyCert(t, secretData(t, s, "tls.crt"), secretData(t, s, "ca.crt"), "192.0.2.7"); len(cert.IPAddresses) != 1 {
		t.Errorf("the auth certificate after the upgrade: IP SANs %v, want 192.0.2.7", cert.IPAddresses)
	}
	verifyCert(t, []byte(crt(renewed, "apitoken-operator-auth-cert")), secretData(t, s, "ca.crt"), "apitoken-operator-usage."+ns+".svc")
	if os.Getenv("APITOKEN_HELM_KEEP") != "" {
		t.Logf("kubeconfig: %s", kc)
	}
}
