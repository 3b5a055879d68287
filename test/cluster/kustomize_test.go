package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// kustomizeInstall installs config/default (through
// testdata/config-default, which only sets the image). cert-manager does
// not run here (its controller is not built on this machine), so the suite
// serves its two kinds as stubs and does what cert-manager would: it writes
// the two certificate Secrets config/certmanager asks for, and the CA
// injector's caBundle into both webhook configurations.
func kustomizeInstall(t *testing.T) {
	installStart = time.Now()
	mustKubectl(t, "", "apply", "-f", "testdata/cert-manager-stub-crds.yaml")
	mustKubectl(t, "", "wait", "--for=condition=Established", "crd/issuers.cert-manager.io", "crd/certificates.cert-manager.io", "--timeout=60s")
	webhookCA := certSecret(t, "apitoken-operator-webhook-cert", "apitoken-operator-webhook")
	certSecret(t, "apitoken-operator-auth-cert", "apitoken-operator-auth", "apitoken-operator-usage")
	// Helm's CRD stays after helm uninstall: apply takes its fields over.
	mustKubectl(t, "", "apply", "--server-side", "--force-conflicts", "-k", "testdata/config-default")
	for _, kind := range []string{"mutatingwebhookconfiguration/apitoken-operator-mutating", "validatingwebhookconfiguration/apitoken-operator-validating"} {
		out := mustKubectl(t, "", "get", kind, "-o", "json")
		var cfg struct {
			Webhooks []json.RawMessage `json:"webhooks"`
		}
		if err := json.Unmarshal([]byte(out), &cfg); err != nil {
			t.Fatal(err)
		}
		var ops []string
		for i := range cfg.Webhooks {
			ops = append(ops, fmt.Sprintf(`{"op":"add","path":"/webhooks/%d/clientConfig/caBundle","value":%q}`, i, base64.StdEncoding.EncodeToString(webhookCA)))
		}
		mustKubectl(t, "", "patch", kind, "--type=json", "-p", "["+strings.Join(ops, ",")+"]")
	}
}

// certSecret writes Secret name (tls.crt, tls.key, ca.crt) in the
// operator's namespace, as a cert-manager self-signed Issuer would, valid
// for the services' .svc and .svc.cluster.local names, and returns its CA.
func certSecret(t *testing.T, name string, services ...string) []byte {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + "-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var dns []string
	for _, s := range services {
		dns = append(dns, s+"."+namespace+".svc", s+"."+namespace+".svc.cluster.local")
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dns[0]}, DNSNames: dns,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	secret := map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"data": map[string]string{
			"tls.crt": base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			"tls.key": base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})),
			"ca.crt":  base64.StdEncoding.EncodeToString(caPEM),
		},
	}
	b, _ := json.Marshal(secret)
	mustKubectl(t, string(b), "apply", "-f", "-")
	return caPEM
}
