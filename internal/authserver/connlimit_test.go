package authserver

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestOneClientCannotTakeEveryConnection: a client address holding its
// share of idle connections gets its next ones closed at once, while
// another address is still served; a closed connection gives its slot
// back, once however often it is closed.
func TestOneClientCannotTakeEveryConnection(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitConnections(inner, 16) // 2 per client address
	defer ln.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// closedByServer reports whether the server closed c (a read ends).
	closedByServer := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && (!errors.As(err, &ne) || !ne.Timeout())
	}
	var held []net.Conn
	for range 2 {
		held = append(held, dial("127.0.0.1"))
		<-accepted
	}
	flood := dial("127.0.0.1")
	if !closedByServer(flood) {
		t.Fatal("a third connection from one address was served: one host could hold every slot")
	}
	other := dial("127.0.0.2")
	select {
	case c := <-accepted:
		_ = c.Close()
		_ = c.Close() // twice: released once
	case <-time.After(2 * time.Second):
		t.Fatal("another client address was not served")
	}
	_ = other.Close()
	l := ln
	l.mu.Lock()
	n, first := l.clients["127.0.0.2"], l.clients["127.0.0.1"]
	l.mu.Unlock()
	if n != 0 || first != 2 || len(l.slots) != 2 {
		t.Fatalf("after closing: 127.0.0.2 holds %d, 127.0.0.1 %d, %d slots taken; want 0, 2 and 2 (the held ones)", n, first, len(l.slots))
	}
	_ = held
}

// TestCloseEndsAWaitingAccept: at the bound with no idle connection, an
// Accept waits for a slot; closing the listener (a server shutting down)
// ends it, as netutil.LimitListener's does.
func TestCloseEndsAWaitingAccept(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitConnections(inner, 1)
	for _, from := range []string{"127.0.0.1", "127.0.0.3"} {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a second connection was accepted at a bound of 1: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	_ = ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end the waiting Accept")
	}
}
