package authserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/peer"
)

// syncBuffer is a bytes.Buffer safe for the writer goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuditRecordsEveryDecision: one JSON line per decision, allowed and
// refused, on every endpoint (HTTP, gRPC, TokenReview), with who, what
// and why; never a token, its hash or the salt, even when the client puts
// its token where a reason quotes it.
func TestAuditRecordsEveryDecision(t *testing.T) {
	f := newFixture()
	var out syncBuffer
	f.h.Audit = NewAuditLog(&out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.h.Audit.Start(ctx) }()
	tk := f.tokens
	sent := 0
	do := func(r req) {
		sent++
		f.do(r)
	}
	do(req{path: "/v1/auth-request/-", headers: [][2]string{bearer(tk["reader"]), {"X-Original-Method", "GET"}, {"X-Original-URL", "/api/articles/7"}, {"X-Real-IP", "203.0.113.7"}, {"X-Request-Id", "abc-1"}}})
	do(req{path: "/v1/forward-auth/namespace=team-b", headers: [][2]string{bearer(tk["writer"]), {"X-Forwarded-Method", "DELETE"}, {"X-Forwarded-Uri", "/api/articles/1"}, {"X-Forwarded-For", "198.51.100.1"}}})
	do(req{method: "GET", path: "/v1/ext-authz/-/api/" + tk["full"], headers: [][2]string{bearer(tk["expired"])}})
	do(req{method: "GET", path: "/v1/ext-authz/-/api/" + strings.ToUpper(tk["full"][:4]) + tk["full"][4:] + "/x", headers: [][2]string{bearer(tk["revoked"]), {"X-Request-Id", tk["reader"]}}})
	do(req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{{"Authorization", "Bearer atk_garbage"}}})
	sent++
	f.review(t, reviewBody("v1", tk["writer"], "content-api"), "application/json")
	sent++
	envoy := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 3, 7), Port: 51234}})
	if _, err := (&ExtAuthz{Handler: f.h}).Check(envoy, checkRequest("GET", "/api/table/data/7", map[string]string{"authorization": "Bearer " + tk["reader"]}, map[string]string{"segments": "2"})); err != nil {
		t.Fatal(err)
	}
	var lines []string
	deadline := time.Now().Add(5 * time.Second)
	for len(lines) < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		lines = strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(lines) != sent {
		t.Fatalf("%d records for %d decisions:\n%s", len(lines), sent, out.String())
	}
	want := []map[string]any{
		{"endpoint": "auth-request", "result": "valid", "status": 200.0, "namespace": "team-a", "name": "reader", "uid": "uid-reader", "scope": "articles:findOne", "audience": "content-api", "client": "203.0.113.7", "request_id": "abc-1"},
		{"endpoint": "forward-auth", "result": "insufficient_scope", "status": 403.0, "namespace": "team-b", "name": "writer", "scope": "articles:delete", "policy": "namespace=team-b", "client": "198.51.100.1", "reason": "the token does not grant articles:delete"},
		{"endpoint": "ext-authz", "result": "expired", "status": 401.0, "name": "expired", "scope": "[redacted]:find"},
		{"endpoint": "ext-authz", "result": "revoked", "status": 401.0, "name": "revoked", "scope": "[redacted]:findOne", "request_id": "[redacted]"},
		{"endpoint": "authorize", "result": "malformed", "status": 401.0, "scope": "articles:read"},
		{"endpoint": "tokenreview", "result": "valid", "status": 200.0, "name": "writer"},
		{"endpoint": "grpc-ext-authz", "result": "valid", "status": 200.0, "name": "reader", "scope": "table:data:findOne", "policy": "segments=2", "request_id": "req-1", "peer": "10.0.3.7:51234"},
	}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		if _, err := time.Parse(time.RFC3339Nano, rec["time"].(string)); err != nil {
			t.Fatalf("line %d: time %v", i, rec["time"])
		}
		for k, v := range want[i] {
			if rec[k] != v {
				t.Errorf("line %d: %s = %v, want %v (%s)", i, k, rec[k], v, line)
			}
		}
	}
	all := out.String()
	for name, tok := range tk {
		if strings.Contains(all, tok) || strings.Contains(all, f.hasher.Hash(tok).Encode()) {
			t.Fatalf("the audit log holds %s's token or its hash:\n%s", name, all)
		}
	}
	if strings.Contains(strings.ToLower(all), "atk_") || strings.Contains(all, "test-salt") {
		t.Fatalf("the audit log holds something token-shaped or the salt:\n%s", all)
	}
}

// blockingWriter never returns until released: a sink that has stalled.
type blockingWriter struct{ release chan struct{} }

func (b blockingWriter) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

// TestAuditNeverBlocks: with a stalled sink, decisions are still answered
// at once; what does not fit the buffer is dropped and counted.
func TestAuditNeverBlocks(t *testing.T) {
	f := newFixture()
	sink := blockingWriter{release: make(chan struct{})}
	f.h.Audit = NewAuditLog(sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.h.Audit.Start(ctx); close(done) }()
	before := testutil.ToFloat64(auditDropped)
	start := time.Now()
	n := auditBuffer + 500
	for i := 0; i < n; i++ {
		if w := f.do(req{path: "/v1/authorize?scope=articles:read", headers: [][2]string{bearer(f.tokens["reader"])}}); w.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	elapsed := time.Since(start)
	dropped := testutil.ToFloat64(auditDropped) - before
	// The writer may take a few hundred records into its 64 KiB write
	// buffer before the stalled sink blocks it; beyond buffer and writer,
	// every record is dropped, none waited for.
	if dropped < 1 || dropped > float64(n-auditBuffer) {
		t.Fatalf("dropped %v of %d records with a buffer of %d", dropped, n, auditBuffer)
	}
	t.Logf("%d decisions with a stalled sink in %v; %v records dropped", n, elapsed, dropped)
	cancel()
	close(sink.release)
	<-done
}

// TestOpenAuditLog: off is none; a path is created 0600 and appended to.
func TestOpenAuditLog(t *testing.T) {
	if a, c, err := OpenAuditLog("off"); a != nil || c != nil || err != nil {
		t.Fatalf("off: %v %v %v", a, c, err)
	}
	if _, _, err := OpenAuditLog("/nonexistent/dir/audit.log"); err == nil || !strings.Contains(err.Error(), "--audit-log") {
		t.Fatalf("bad path: %v", err)
	}
	fifo := t.TempDir() + "/audit.fifo"
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenAuditLog(fifo); err == nil || !strings.Contains(err.Error(), "is a FIFO that nobody reads") {
		t.Fatalf("a FIFO without a reader must fail at once, not block start-up: %v", err)
	}
	path := t.TempDir() + "/audit.jsonl"
	for i := 1; i <= 2; i++ {
		a, c, err := OpenAuditLog(path)
		if err != nil || a == nil || c == nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		a.record(auditRecord{at: time.Now(), endpoint: "authorize", d: Decision{Status: 401, Result: "missing"}})
		cancel()
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		data, err := os.ReadFile(path)
		if err != nil || strings.Count(string(data), "\n") != i {
			t.Fatalf("after %d opens: %q %v", i, data, err)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
}

// TestAuditRedaction is the attack on the redactor: a token behind "atk_",
// two tokens run together, a token without its prefix, in any field a
// client controls; none of it reaches the record.
func TestAuditRedaction(t *testing.T) {
	tok, tok2 := mustToken(), mustToken()
	bare := strings.TrimPrefix(tok, "atk_")
	for _, in := range []string{
		tok, "atk_" + tok, "ATK_" + tok, tok + tok2, "x-" + bare + "-y", "/api/x:y/atk_" + tok, "id=" + strings.ToUpper(tok[:4]) + tok[4:],
	} {
		out := redactTokens(in)
		for _, secret := range []string{tok[4:], tok2[4:], bare[:40], strings.ToLower(bare[:40])} {
			if strings.Contains(out, secret) || strings.Contains(strings.ToLower(out), strings.ToLower(secret)) {
				t.Errorf("redactTokens(%q) = %q keeps a token", in, out)
			}
		}
	}
	for _, keep := range []string{"3f1c2a9e-0d5b-4f1e-9a7c-1b2d3e4f5a6b", "0af7651916cd43dd8448eb211c80319c", "203.0.113.7, 10.0.0.1", "the token does not grant articles:delete"} {
		if redactTokens(keep) != keep {
			t.Errorf("redactTokens(%q) = %q: request ids, trace ids and addresses stay", keep, redactTokens(keep))
		}
	}
}

// TestAuditBufferStaysSmall is the attack on memory: with the sink
// stalled, requests carrying 64 KiB of client headers fill the buffer;
// each record keeps only bounded copies, so the heap does not hold the
// requests.
func TestAuditBufferStaysSmall(t *testing.T) {
	f := newFixture()
	sink := blockingWriter{release: make(chan struct{})}
	f.h.Audit = NewAuditLog(sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.h.Audit.Start(ctx); close(done) }()
	defer func() { cancel(); close(sink.release); <-done }()
	big := strings.Repeat("x-", 32<<10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 2000
	for i := 0; i < n; i++ {
		f.do(req{path: "/v1/ext-authz/-/api/" + big[:16<<10] + "/7", headers: [][2]string{bearer(f.tokens["reader"]), {"X-Request-Id", big}, {"X-Forwarded-For", big}}})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d records of requests with 144 KiB each: heap grew %d KiB", n, grown>>10)
	if grown > 16<<20 {
		t.Fatalf("the buffered records hold %d MiB: they keep what the requests sent", grown>>20)
	}
}
