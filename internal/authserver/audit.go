package authserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// auditBuffer is how many records wait for the writer; beyond it records
// are dropped (and counted), never waited for.
const auditBuffer = 8192

var auditDropped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "apitoken_audit_records_dropped_total",
	Help: "Audit records dropped because the audit log's writer fell behind (its buffer was full).",
})

func init() { metrics.Registry.MustRegister(auditDropped) }

// auditSource is what the proxy reported about the client: its address
// (proxyClient, envoySource), the request id, and the address of the peer
// that asked (the proxy).
type auditSource struct{ client, requestID, peer string }

// proxyClient is the client's address as the proxy in front of endpoint
// sets it, overwriting whatever the client sent, or "" where that proxy
// sets none (the record then names only the peer). It never reads a
// header that the proxy passes on from the client as it came:
//
//   - auth-request (nginx auth_request, ingress-nginx auth-url):
//     X-Real-IP, which ingress-nginx sets to $remote_addr and the
//     documented nginx snippet sets with proxy_set_header (which replaces
//     a client's copy); nginx passes a client's X-Forwarded-For on.
//   - forward-auth (Traefik ForwardAuth, Caddy forward_auth): the last
//     address in X-Forwarded-For, which the proxy wrote itself (both
//     replace a client's list, or, told to trust the hop in front, append
//     to it); both pass a client's X-Real-IP on.
//   - ext-authz (Envoy over HTTP), authorize, tokenreview: none. Envoy's
//     check carries only the allowed headers, as the client sent them;
//     the explicit endpoint's and TokenReview's caller is the peer.
//
// A value that is not one IP address is not what a proxy writes: "".
func proxyClient(endpoint string, hd http.Header) string {
	var v string
	switch endpoint {
	case "auth-request":
		vs := hd.Values("X-Real-Ip")
		if len(vs) != 1 {
			return ""
		}
		v = vs[0]
	case "forward-auth":
		vs := hd.Values("X-Forwarded-For")
		if len(vs) == 0 {
			return ""
		}
		last := vs[len(vs)-1]
		v = last[strings.LastIndexByte(last, ',')+1:]
	default:
		return ""
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(v))
	if err != nil {
		return ""
	}
	return addr.String()
}

// envoySource is the client's address of a gRPC check: Envoy's own
// attributes.source (the downstream connection's address), never a
// header of the request, which the client may have written.
func envoySource(attrs *authv3.AttributeContext) string {
	return attrs.GetSource().GetAddress().GetSocketAddress().GetAddress()
}

// auditRecord is one decision, as the audit log keeps it: never the
// token, its hash or the salt.
type auditRecord struct {
	at       time.Time
	endpoint string
	d        Decision
	policy   Policy
	src      auditSource
}

// Bounds of what one queued record keeps of what a client sent: a full
// buffer of records must stay small whatever the requests held (a path
// or a header can be 64 KiB).
const (
	maxAuditReason = 512
	maxAuditField  = 256
)

// bounded is s cut to at most n bytes and copied, so that a record never
// pins a client's large header or path in memory.
func bounded(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.Clone(s)
}

// AuditLog writes one JSON line per decision (allowed and refused) to its
// own stream. Recording never blocks a request: records go through a
// bounded buffer to one writer, and are dropped (and counted in
// apitoken_audit_records_dropped_total) when it is full.
type AuditLog struct {
	ch chan auditRecord
	w  io.Writer
}

// OpenAuditLog returns the audit log for --audit-log: "stdout", a file
// path (appended to, created 0600), or "off" / "" for none (nil).
func OpenAuditLog(dest string) (*AuditLog, io.Closer, error) {
	switch dest {
	case "", "off":
		return nil, nil, nil
	case "stdout":
		return NewAuditLog(os.Stdout), nil, nil
	}
	// O_NONBLOCK: opening a FIFO that nobody reads fails at once instead
	// of blocking start-up (no effect on a regular file).
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, 0o600) //nolint:gosec // the path the operator's administrator chose
	if errors.Is(err, syscall.ENXIO) {
		return nil, nil, fmt.Errorf("--audit-log: %s is a FIFO that nobody reads: start its reader first", dest)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--audit-log: %w", err)
	}
	return NewAuditLog(f), f, nil
}

// NewAuditLog returns an audit log that writes to w once Start runs.
func NewAuditLog(w io.Writer) *AuditLog {
	return &AuditLog{ch: make(chan auditRecord, auditBuffer), w: w}
}

// NeedLeaderElection is false: every replica audits its own decisions.
func (a *AuditLog) NeedLeaderElection() bool { return false }

// Start writes records until ctx ends, then writes what is buffered.
func (a *AuditLog) Start(ctx context.Context) error {
	bw := bufio.NewWriterSize(a.w, 64<<10)
	var line []byte
	write := func(r *auditRecord) {
		line = r.appendJSON(line[:0])
		_, _ = bw.Write(line)
	}
	for {
		select {
		case r := <-a.ch:
			write(&r)
			// Drain what is waiting, then flush once.
			for n := len(a.ch); n > 0; n-- {
				r := <-a.ch
				write(&r)
			}
			_ = bw.Flush()
		case <-ctx.Done():
			// Write what is buffered, but do not hang shutdown on a sink
			// that stalled: what is not written in time is counted dropped.
			n := len(a.ch)
			done := make(chan error, 1)
			go func() {
				for i := n; i > 0; i-- {
					r := <-a.ch
					write(&r)
				}
				done <- bw.Flush()
			}()
			select {
			case err := <-done:
				return err
			case <-time.After(auditShutdownWait):
				auditDropped.Add(float64(n))
				return errors.New("the audit log's sink did not take the last records within " + auditShutdownWait.String())
			}
		}
	}
}

// auditShutdownWait bounds the final write at shutdown.
const auditShutdownWait = 2 * time.Second

// record queues one decision, or drops it when the buffer is full.
func (a *AuditLog) record(r auditRecord) {
	select {
	case a.ch <- r:
	default:
		auditDropped.Inc()
	}
}

// audit records a decision when an audit log is configured.
func (h *Handler) audit(endpoint string, req *Request, d *Decision, src auditSource) {
	if h.Audit == nil {
		return
	}
	// Keep only what the record writes, bounded and copied: the Decision's
	// challenge and any string that may share memory with the request.
	rd := Decision{Status: d.Status, Result: d.Result, Identity: d.Identity, Audience: d.Audience, Reason: bounded(d.Reason, maxAuditReason),
		Required: token.Scope{Resource: bounded(d.Required.Resource, maxAuditField), Action: bounded(d.Required.Action, maxAuditField)}}
	src = auditSource{client: bounded(src.client, maxAuditField), requestID: bounded(src.requestID, maxAuditField), peer: bounded(src.peer, maxAuditField)}
	h.Audit.record(auditRecord{at: time.Now(), endpoint: endpoint, d: rd, policy: req.Policy, src: src})
}

// appendJSON appends the record as one JSON line. Every value a client
// controls (a derived scope names its path segment, the reason quotes its
// path; its headers) is scrubbed of anything shaped like a token, in any
// case (a derived resource is lower-cased).
func (r *auditRecord) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = r.at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","endpoint":`...)
	b = appendString(b, r.endpoint)
	b = append(b, `,"result":`...)
	b = appendString(b, r.d.Result)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.d.Status), 10)
	if id := r.d.Identity; id != nil {
		b = append(b, `,"namespace":`...)
		b = appendString(b, id.Namespace)
		b = append(b, `,"name":`...)
		b = appendString(b, id.Name)
		b = append(b, `,"uid":`...)
		b = appendString(b, id.UID)
	}
	if r.d.Required != (token.Scope{}) {
		// A derived scope names the client's path segment.
		b = append(b, `,"scope":`...)
		b = appendString(b, redactTokens(r.d.Required.String()))
	}
	if r.d.Audience != "" {
		b = append(b, `,"audience":`...)
		b = appendString(b, r.d.Audience)
	}
	if p := r.policy.String(); p != "" {
		b = append(b, `,"policy":`...)
		b = appendString(b, redactTokens(p))
	}
	for _, f := range [...]struct{ k, v string }{
		{"reason", r.d.Reason}, {"client", r.src.client}, {"request_id", r.src.requestID}, {"peer", r.src.peer},
	} {
		if f.v != "" {
			b = append(b, `,"`...)
			b = append(b, f.k...)
			b = append(b, `":`...)
			b = appendString(b, redactTokens(f.v))
		}
	}
	return append(b, "}\n"...)
}

// String is the policy as a policy segment would spell it ("" for none).
func (p Policy) String() string {
	var parts []string
	if p.Scope != nil {
		parts = append(parts, "scope="+p.Scope.String())
	}
	if p.Resource != "" {
		parts = append(parts, "resource="+p.Resource)
	}
	if p.Segments != 0 {
		parts = append(parts, "segments="+strconv.Itoa(p.Segments))
	}
	if p.Audience != "" {
		parts = append(parts, "audience="+p.Audience)
	}
	if len(p.Namespaces) > 0 {
		parts = append(parts, "namespace="+strings.Join(p.Namespaces, "+"))
	}
	return strings.Join(parts, ",")
}

// redactTokens replaces anything shaped like a token with [redacted]: the
// prefix, in any case, with the run of letters, digits and '_' after it
// (so that "atk_" before a token hides the token too), and any run of
// letters and digits as long as a token's random part (without its
// public prefix, that part is the token).
func redactTokens(s string) string {
	if !needsRedaction(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if j := i + len(token.Prefix); j <= len(s) && strings.EqualFold(s[i:j], token.Prefix) {
			for j < len(s) && (isAlnum(s[j]) || s[j] == '_') {
				j++
			}
			b.WriteString("[redacted]")
			i = j
			continue
		}
		if isAlnum(s[i]) {
			j := i
			for j < len(s) && isAlnum(s[j]) {
				j++
			}
			if j-i >= minTokenRun {
				b.WriteString("[redacted]")
			} else {
				b.WriteString(s[i:j])
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// minTokenRun is the shortest run of letters and digits redacted as a
// token without its prefix: a little under the random part (43) and
// checksum (6), above a hex trace id or a UUID's groups.
const minTokenRun = 40

// needsRedaction reports whether redactTokens would change s, without
// allocating.
func needsRedaction(s string) bool {
	if indexPrefix(s) >= 0 {
		return true
	}
	run := 0
	for i := 0; i < len(s); i++ {
		if isAlnum(s[i]) {
			if run++; run >= minTokenRun {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// indexPrefix is the index of token.Prefix in s, ASCII case-insensitive,
// or -1.
func indexPrefix(s string) int {
	for i := 0; i+len(token.Prefix) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(token.Prefix)], token.Prefix) {
			return i
		}
	}
	return -1
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
