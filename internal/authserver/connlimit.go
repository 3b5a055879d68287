package authserver

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// limitListener bounds the connections a listener serves at once, in all
// and per client address: a connection from an address that holds
// perClient already is closed at once. At the total, a new connection
// takes the slot of the connection idle longest (a kept-alive HTTP
// connection between requests, as ConnState reports it), else waits for
// one to close. Idle keep-alive connections cost a client nothing: without
// the per-address bound one host, and without the eviction eight hosts,
// held every slot for good (a request now and then restarts the idle
// timeout) while every proxy that opened a new connection waited.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	perClient int

	mu      sync.Mutex
	clients map[string]int
	idle    map[*limitedConn]time.Time

	closeOnce sync.Once
	done      chan struct{} // closed by Close: an Accept waiting for a slot returns
}

// perClientShare is the part of the bound one client address may hold:
// far above a proxy's keep-alive pool (nginx keeps 32 per worker, Envoy
// a few per thread).
const perClientShare = 8

// limitConnections wraps ln with total connections in all, total/8 (at
// least 1) per client address.
func limitConnections(ln net.Listener, total int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, total), perClient: max(1, total/perClientShare),
		clients: map[string]int{}, idle: map[*limitedConn]time.Time{}, done: make(chan struct{})}
}

// Close closes the listener and ends an Accept waiting for a slot.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := clientHost(c.RemoteAddr())
		l.mu.Lock()
		if l.clients[host] >= l.perClient {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.clients[host]++
		l.mu.Unlock()
		select {
		case l.slots <- struct{}{}:
		default:
			l.evictIdle()
			select { // at the bound with none idle: wait for a close
			case l.slots <- struct{}{}:
			case <-l.done:
				_ = c.Close()
				l.mu.Lock()
				if l.clients[host]--; l.clients[host] <= 0 {
					delete(l.clients, host)
				}
				l.mu.Unlock()
				return nil, net.ErrClosed
			}
		}
		lc := &limitedConn{Conn: c}
		lc.release = func() { l.release(host, lc) }
		return lc, nil
	}
}

// evictIdle closes the connection idle longest, if any, freeing its slot.
func (l *limitListener) evictIdle() {
	l.mu.Lock()
	var oldest *limitedConn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(l.idle, oldest)
	l.mu.Unlock()
	if oldest != nil {
		_ = oldest.Close()
	}
}

// ConnState is http.Server.ConnState: it tells the idle connections,
// which a new connection may take the slot of, from those in a request.
func (l *limitListener) ConnState(c net.Conn, state http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if state == http.StateIdle {
		l.idle[lc] = time.Now()
	} else {
		delete(l.idle, lc)
	}
	l.mu.Unlock()
}

// release frees the slot and the client's share of a closed connection.
func (l *limitListener) release(host string, c *limitedConn) {
	l.mu.Lock()
	delete(l.idle, c)
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
