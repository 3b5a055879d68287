package authserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with serial n.
func writeCert(t *testing.T, certFile, keyFile string, n int64) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: "auth"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	// Key first, then certificate, each replaced in one rename, as a
	// Secret volume update does.
	for file, data := range map[string][]byte{
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	} {
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServerReloadsItsCertificate: cert-manager renews the auth endpoint's
// certificate in place; the endpoint serves the new one without a restart,
// and offers HTTP/1.1 only unless HTTP/2 is enabled.
func TestServerReloadsItsCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, certFile, keyFile, 1)
	f := newFixture()
	srv := &Server{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, Handler: f.h,
		Cache: &informertest.FakeInformers{Scheme: testenv.Scheme()}}
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	defer func() { cancel(); <-done }()

	serial := func(protos ...string) (int64, string) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr.String(), &tls.Config{InsecureSkipVerify: true, NextProtos: protos})
		if err != nil {
			return 0, ""
		}
		defer conn.Close()
		st := conn.ConnectionState()
		return st.PeerCertificates[0].SerialNumber.Int64(), st.NegotiatedProtocol
	}
	deadline := time.Now().Add(10 * time.Second)
	for s, _ := serial(); s != 1; s, _ = serial() {
		if time.Now().After(deadline) {
			t.Fatalf("the first certificate was not served (serial %d)", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, proto := serial("h2", "http/1.1"); proto != "http/1.1" {
		t.Fatalf("negotiated %q with HTTP/2 off, want http/1.1", proto)
	}
	writeCert(t, certFile, keyFile, 2)
	deadline = time.Now().Add(10 * time.Second)
	for s, _ := serial(); s != 2; s, _ = serial() {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not served within 10s (serial %d)", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
