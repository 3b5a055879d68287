package helm

import (
	"net"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestAuthCertificateIPAddressesAndClusterIP: auth.service.clusterIP fixes
// the auth Service's ClusterIP, and the auth certificate carries it (and
// auth.tls.ipAddresses) as IP SANs, from cert-manager and from Helm, so
// that kube-apiserver's webhook token authentication can call the Service
// by ClusterIP over HTTPS.
func TestAuthCertificateIPAddressesAndClusterIP(t *testing.T) {
	const clusterIP, extra = "10.96.0.50", "192.0.2.7"
	set := []string{"--set", "auth.service.clusterIP=" + clusterIP, "--set", "auth.tls.ipAddresses={" + extra + "}"}

	objs := render(t, set...)
	if got, _, _ := unstructured.NestedString(objs.get("Service", "apitoken-operator-auth").Object, "spec", "clusterIP"); got != clusterIP {
		t.Errorf("Service apitoken-operator-auth: clusterIP %q, want %s", got, clusterIP)
	}
	ips, _, _ := unstructured.NestedStringSlice(objs.get("Certificate", "apitoken-operator-auth-cert").Object, "spec", "ipAddresses")
	if !contains(ips, clusterIP) || !contains(ips, extra) || len(ips) != 2 {
		t.Errorf("cert-manager Certificate apitoken-operator-auth-cert: ipAddresses %v, want %s and %s", ips, clusterIP, extra)
	}
	if dns, _, _ := unstructured.NestedStringSlice(objs.get("Certificate", "apitoken-operator-auth-cert").Object, "spec", "dnsNames"); !contains(dns, "apitoken-operator-auth.apitoken-system.svc") {
		t.Errorf("the Certificate lost its DNS names: %v", dns)
	}

	generated := render(t, append(set, "--set", "auth.tls.source=helm")...)
	s := generated.get("Secret", "apitoken-operator-auth-cert")
	if s == nil {
		t.Fatal("no Secret apitoken-operator-auth-cert with auth.tls.source=helm")
	}
	for _, host := range []string{clusterIP, extra, "apitoken-operator-auth.apitoken-system.svc", "apitoken-operator-usage.apitoken-system.svc"} {
		cert := verifyCert(t, secretData(t, s, "tls.crt"), secretData(t, s, "ca.crt"), host)
		if net.ParseIP(host) != nil && len(cert.IPAddresses) != 2 {
			t.Errorf("the generated certificate's IP SANs: %v", cert.IPAddresses)
		}
	}

	defaults := render(t)
	if got, ok, _ := unstructured.NestedString(defaults.get("Service", "apitoken-operator-auth").Object, "spec", "clusterIP"); ok {
		t.Errorf("by default the auth Service sets clusterIP %q; the API server should choose", got)
	}
	if ips, ok, _ := unstructured.NestedFieldNoCopy(defaults.get("Certificate", "apitoken-operator-auth-cert").Object, "spec", "ipAddresses"); ok {
		t.Errorf("by default the auth certificate has IP SANs %v", ips)
	}
	s = render(t, "--set", "auth.tls.source=helm").get("Secret", "apitoken-operator-auth-cert")
	if cert := verifyCert(t, secretData(t, s, "tls.crt"), secretData(t, s, "ca.crt"), "apitoken-operator-auth.apitoken-system.svc"); len(cert.IPAddresses) != 0 {
		t.Errorf("by default the generated certificate has IP SANs %v", cert.IPAddresses)
	}

	out, err := helmErrOut("template", release, chartDir, "--namespace", namespace, "--set", "auth.service.clusterIP=not-an-ip")
	if err == nil || !strings.Contains(out, "auth.service.clusterIP") {
		t.Errorf("auth.service.clusterIP=not-an-ip: want a failure naming the value, got %v:\n%s", err, out)
	}
}
