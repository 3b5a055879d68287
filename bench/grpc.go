package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/utils/clock"

	"github.com/apitoken-operator/apitoken-operator/internal/authserver"
)

// bareAuthz answers every Check with OK and does nothing: the floor of a
// gRPC ext_authz server.
type bareAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (bareAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}, nil
}

// serveGRPC is the child process of the gRPC stage: "grpc-bare" or
// "grpc-ours" over an index of n tokens.
func serveGRPC(mode string, n int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	probe := "-"
	switch mode {
	case "grpc-bare":
		srv := grpc.NewServer()
		authv3.RegisterAuthorizationServer(srv, bareAuthz{})
		fmt.Fprintf(os.Stdout, "%s %s\n", ln.Addr(), probe)
		return srv.Serve(ln)
	case "grpc-ours":
		var ix *authserver.Index
		ix, probe = syntheticIndex(n)
		h := &authserver.Handler{Index: ix, Clock: clock.RealClock{}, Options: authserver.Options{PathPrefix: "/api", DefaultNamespaces: []string{"bench"}}}
		_ = ln.Close()
		s := &authserver.GRPCServer{Addr: ln.Addr().String(), Handler: h, Ready: func() bool { return true }}
		addr, err := s.Listen()
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stdout, "%s %s\n", addr, probe)
		return s.Start(context.Background())
	}
	return fmt.Errorf("unknown serve mode %q", mode)
}

// grpcCheck is the CheckRequest Envoy sends for GET /api/articles/7.
func grpcCheck(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Id: "bench", Method: "GET", Path: "/api/articles/7?page=2", Host: "shop.example", Scheme: "https",
		Headers: map[string]string{":method": "GET", ":path": "/api/articles/7?page=2", ":authority": "shop.example", "authorization": "Bearer " + tok,
			"user-agent": "curl/8.5.0", "accept": "*/*", "x-request-id": "3f1c2a9e-0d5b-4f1e-9a7c-1b2d3e4f5a6b", "x-forwarded-proto": "https"},
	}}}}
}

// grpcStreams is how many Checks the load keeps in flight.
const grpcStreams = 16

// grpcLoop runs grpcStreams workers, each sending the next Check as soon
// as the previous answer arrives, over one connection (as Envoy
// multiplexes its checks), for d.
func grpcLoop(addr string, req *authv3.CheckRequest, d time.Duration) loadResult {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return loadResult{errors: 1}
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	return workers(grpcStreams, d, func() bool {
		resp, err := c.Check(context.Background(), req)
		return err == nil && resp.GetStatus().GetCode() == int32(codes.OK)
	})
}

// stageGRPC compares gRPC ext_authz with a bare gRPC server that answers
// OK, and with the HTTP ext-authz endpoint, each in its own process, the
// load generator in this one.
func stageGRPC(cfg *config, r *report) error {
	bare, err := startChild("grpc-bare", 0)
	if err != nil {
		return err
	}
	defer bare.stop()
	ours, err := startChild("grpc-ours", 100_000)
	if err != nil {
		return err
	}
	defer ours.stop()
	httpOurs, err := startChild("ours", 100_000)
	if err != nil {
		return err
	}
	defer httpOurs.stop()
	httpReq := func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpOurs.addr+"/v1/ext-authz/namespace=bench/api/articles/7?page=2", nil)
		req.Header.Set("Authorization", "Bearer "+httpOurs.probe)
		return req
	}
	var bareRPS, oursRPS, httpRPS []float64
	var bareP99, oursP99, httpP99 []time.Duration
	var errs int64
	bareReq, oursReq := grpcCheck(bare.probe), grpcCheck(ours.probe)
	grpcLoop(bare.addr, bareReq, 300*time.Millisecond)
	grpcLoop(ours.addr, oursReq, 300*time.Millisecond)
	closedLoop(httpReq, 16, 300*time.Millisecond)
	for round := 0; round < cfg.rounds; round++ {
		b := grpcLoop(bare.addr, bareReq, cfg.duration)
		o := grpcLoop(ours.addr, oursReq, cfg.duration)
		h := closedLoop(httpReq, 16, cfg.duration)
		bareRPS, oursRPS, httpRPS = append(bareRPS, b.rps), append(oursRPS, o.rps), append(httpRPS, h.rps)
		bareP99, oursP99, httpP99 = append(bareP99, b.p99), append(oursP99, o.p99), append(httpP99, h.p99)
		errs += b.errors + o.errors + h.errors
	}
	var md strings.Builder
	md.WriteString("## 7. gRPC ext_authz\n\n`envoy.service.auth.v3.Authorization/Check` for `GET /api/articles/7` with a valid bearer token (as Envoy sends it: pseudo-headers and eight headers), 100,000 tokens loaded, 16 concurrent streams on one connection, next to a bare grpc-go server whose Check answers OK and does nothing, and to the HTTP ext-authz endpoint (16 keep-alive connections). Each server runs in its own process.\n\n| server | req/s | p99 | vs bare gRPC |\n| --- | --- | --- | --- |\n")
	fmt.Fprintf(&md, "| bare gRPC Check (floor) | %.0f | %v | 1.00 |\n", median(bareRPS), medianDur(bareP99).Round(time.Microsecond))
	fmt.Fprintf(&md, "| gRPC ext_authz (ours) | %.0f | %v | %.2f |\n", median(oursRPS), medianDur(oursP99).Round(time.Microsecond), median(oursRPS)/median(bareRPS))
	fmt.Fprintf(&md, "| HTTP `/v1/ext-authz` (ours) | %.0f | %v | %.2f |\n", median(httpRPS), medianDur(httpP99).Round(time.Microsecond), median(httpRPS)/median(bareRPS))
	fmt.Fprintf(&md, "\nErrors: %d. Target: gRPC ext_authz ≥ 85%% of the bare gRPC server's throughput.\n", errs)
	r.add(md.String(), fmt.Sprintf("grpc bare %7.0f/s ours %7.0f/s (%.2f) http ext-authz %7.0f/s\n", median(bareRPS), median(oursRPS), median(oursRPS)/median(bareRPS), median(httpRPS)))
	return nil
}

// stageAudit measures the audit log's cost: the same auth endpoint with
// --audit-log off and writing JSON lines to a file, at 16 connections.
func stageAudit(cfg *config, r *report) error {
	off, err := startChild("ours", 100_000)
	if err != nil {
		return err
	}
	defer off.stop()
	on, err := startChild("ours-audit", 100_000)
	if err != nil {
		return err
	}
	defer on.stop()
	offReq, onReq := authorizeRequest(off), authorizeRequest(on)
	closedLoop(offReq, 16, 300*time.Millisecond)
	closedLoop(onReq, 16, 300*time.Millisecond)
	var offRPS, onRPS []float64
	var offP99, onP99 []time.Duration
	var errs int64
	for round := 0; round < cfg.rounds; round++ {
		a := closedLoop(offReq, 16, cfg.duration)
		b := closedLoop(onReq, 16, cfg.duration)
		offRPS, onRPS = append(offRPS, a.rps), append(onRPS, b.rps)
		offP99, onP99 = append(offP99, a.p99), append(onP99, b.p99)
		errs += a.errors + b.errors
	}
	var md strings.Builder
	md.WriteString("## 8. The audit log's cost\n\n`GET /v1/authorize?scope=articles:read` with a valid token, 100,000 tokens loaded, 16 keep-alive connections: the same server with `--audit-log=off` and with `--audit-log=<file>` (one JSON line per decision, written by one goroutine from a bounded buffer), each in its own process, interleaved.\n\n| audit log | req/s | p99 | on/off |\n| --- | --- | --- | --- |\n")
	fmt.Fprintf(&md, "| off | %.0f | %v | 1.00 |\n", median(offRPS), medianDur(offP99).Round(time.Microsecond))
	fmt.Fprintf(&md, "| on (file) | %.0f | %v | %.2f |\n", median(onRPS), medianDur(onP99).Round(time.Microsecond), median(onRPS)/median(offRPS))
	fmt.Fprintf(&md, "\nErrors: %d. Target: audit on ≥ 85%% of audit off (at most 15%% slower); records that do not fit the buffer are dropped and counted, never waited for.\n", errs)
	r.add(md.String(), fmt.Sprintf("audit off %7.0f/s on %7.0f/s (%.2f)\n", median(offRPS), median(onRPS), median(onRPS)/median(offRPS)))
	return nil
}
