package authserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
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

// TestServerBoundsItsConnections is the security report's memory growth:
// connections that send headers and never finish them each hold their
// buffers. At MaxConnections a new connection takes the slot of one idle
// between requests (a keep-alive client's); with none idle it waits (it
// is not served) and is answered once a held one closes. A request whose
// headers pass the header limit is answered 431.
func TestServerBoundsItsConnections(t *testing.T) {
	f := newFixture()
	const limit = 8
	srv := &Server{Addr: "127.0.0.1:0", Handler: f.h, MaxConnections: limit,
		Cache: &informertest.FakeInformers{Scheme: testenv.Scheme()}}
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	defer func() { cancel(); <-done }()
	url := "http://" + addr.String() + "/healthz"
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for get() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the endpoint did not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The keep-alive client holds one connection; fill the others with
	// headers that never end, each from its own loopback address (one
	// address may hold only an eighth of the bound: limitConnections).
	from := 10
	dial := func() (net.Conn, error) {
		from++
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(from))}}
		return d.Dial("tcp", addr.String())
	}
	held := make([]net.Conn, 0, limit-1)
	for range limit - 1 {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 30<<10))); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(200 * time.Millisecond) // let the server take them in

	// At the bound, a new connection takes the slot of the one idle
	// between requests (the keep-alive client's), never of one in a
	// request: kept-alive idle connections cost a client nothing, and
	// several hosts holding them must not shut everyone else out.
	taker, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer taker.Close()
	if _, err := taker.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	trd := bufio.NewReader(taker)
	_ = taker.SetReadDeadline(time.Now().Add(3 * time.Second))
	if line, err := trd.ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("a new connection at the bound, with one idle: %q %v", line, err)
	}
	// Now every slot in a request (the taker leaves, a filler starts a
	// request it never finishes): a further connection waits, until one
	// closes.
	_ = taker.Close()
	time.Sleep(100 * time.Millisecond) // the server sees it close
	filler, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	if _, err := filler.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: a")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	waiting, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	if _, err := waiting.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(waiting)
	_ = waiting.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if line, err := rd.ReadString('\n'); err == nil {
		t.Fatalf("connection %d of %d, none idle, was answered %q", limit+1, limit, line)
	}
	_ = held[0].Close()
	_ = waiting.SetReadDeadline(time.Now().Add(3 * time.Second))
	if line, err := rd.ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("the waiting connection, once one closed: %q %v", line, err)
	}
	for _, c := range append(held[1:], waiting, filler) {
		_ = c.Close()
	}

	big, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	_, _ = big.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 80<<10) + "\r\n\r\n"))
	_ = big.SetReadDeadline(time.Now().Add(3 * time.Second))
	if line, err := bufio.NewReader(big).ReadString('\n'); err != nil || !strings.Contains(line, "431") {
		t.Fatalf("80 KiB of headers: %q %v", line, err)
	}
}
