package authserver

import (
	"net"
	"sync"
)

// limitListener bounds the connections a listener serves at once, in all
// (past it a new connection waits in the kernel's backlog, as
// netutil.LimitListener does) and per client address: a connection from
// an address that holds perClient already is closed at once. Without the
// second bound one host holding idle keep-alive connections (which cost
// it nothing) filled every slot, and every proxy that opened a new
// connection waited out the idle timeout.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	perClient int

	mu      sync.Mutex
	clients map[string]int
}

// perClientShare is the part of the bound one client address may hold:
// far above a proxy's keep-alive pool (nginx keeps 32 per worker, Envoy
// a few per thread).
const perClientShare = 8

// limitConnections wraps ln with total connections in all, total/8 (at
// least 1) per client address.
func limitConnections(ln net.Listener, total int) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, total), perClient: max(1, total/perClientShare), clients: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		l.slots <- struct{}{}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		host := clientHost(c.RemoteAddr())
		l.mu.Lock()
		if l.clients[host] >= l.perClient {
			l.mu.Unlock()
			_ = c.Close()
			<-l.slots
			continue
		}
		l.clients[host]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, release: func() { l.release(host) }}, nil
	}
}

// release frees the slot and the client's share of a closed connection.
func (l *limitListener) release(host string) {
	l.mu.Lock()
	if l.clients[host]--; l.clients[host] <= 0 {
		delete(l.clients, host)
	}
	l.mu.Unlock()
	<-l.slots
}

func clientHost(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitedConn releases its slot once, on its first Close.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
