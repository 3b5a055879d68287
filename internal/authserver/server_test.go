package authserver

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// TestServerReloadsItsCertificate: cert-manager renews the auth endpoint's
// certificate in place; the endpoint serves the new one without a restart,
// and offers HTTP/1.1 only unless HTTP/2 is enabled.
func TestServerReloadsItsCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := testenv.WriteSelfSignedCert(certFile, keyFile, 1); err != nil {
		t.Fatal(err)
	}
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
	if err := testenv.WriteSelfSignedCert(certFile, keyFile, 2); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for s, _ := serial(); s != 2; s, _ = serial() {
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate was not served within 10s (serial %d)", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
