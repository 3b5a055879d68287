// Command client is the cluster suite's workload image (test/cluster): it
// sleeps until killed (the pod's main process), and `kubectl exec`s of
// `/client get` make HTTPS requests from inside the pod network, since the
// image has no shell and no curl.
//
//	/client sleep
//	/client get -cacert /ca/ca.crt -servername auth.ns.svc -token-file /token/token URL
//	/client loop -cacert ... -token-file ... -interval 20ms -duration 5m -stop-file /tmp/stop URL
//	/client touch /tmp/stop
//	/client resolve NAME...
//	/client cat FILE
//
// get prints the status code on its first line and the body after it. loop
// requests URL every interval until duration has passed, the stop file
// exists (`/client touch` makes it) or SIGTERM, and prints one JSON summary:
// the count of each status and of transport errors, and the first body of
// each status but 200. resolve looks each name up with the pod's resolver
// (its /etc/resolv.conf: the cluster DNS) and prints NAME ADDRESS...; it
// fails if one does not resolve.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type options struct {
	caCert, serverName, tokenFile, tokenEnv, header string
	timeout                                         time.Duration
	newConnections                                  bool
}

func (o *options) register(fs *flag.FlagSet) {
	fs.StringVar(&o.caCert, "cacert", "", "PEM file of the CA to trust (default: the system pool)")
	fs.StringVar(&o.serverName, "servername", "", "the name to verify the server's certificate for (default: the URL's host)")
	fs.StringVar(&o.tokenFile, "token-file", "", "send the file's content as Authorization: Bearer")
	fs.StringVar(&o.tokenEnv, "token-env", "", "send the environment variable's value as Authorization: Bearer")
	fs.StringVar(&o.header, "header", "Authorization", "the header the token goes in (Bearer prefix only for Authorization)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "per-request timeout")
	fs.BoolVar(&o.newConnections, "new-connections", false, "a new connection for every request (no keep-alive)")
}

func (o *options) client() (*http.Client, error) {
	cfg := &tls.Config{ServerName: o.serverName, MinVersion: tls.VersionTLS12}
	if o.caCert != "" {
		pem, err := os.ReadFile(o.caCert)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", o.caCert)
		}
	}
	return &http.Client{
		Timeout:   o.timeout,
		Transport: &http.Transport{TLSClientConfig: cfg, Proxy: nil, MaxIdleConnsPerHost: 4, DisableKeepAlives: o.newConnections},
	}, nil
}

func (o *options) request(url string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	tok := os.Getenv(o.tokenEnv)
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return nil, err
		}
		tok = strings.TrimSpace(string(b))
	}
	if o.tokenFile != "" || o.tokenEnv != "" {
		if o.header == "Authorization" {
			tok = "Bearer " + tok
		}
		req.Header.Set(o.header, tok)
	}
	return req, nil
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	var o options
	o.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("get: one URL expected")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	req, err := o.request(fs.Arg(0))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	fmt.Printf("%d\n%s\n", resp.StatusCode, body)
	return nil
}

func loop(args []string) error {
	fs := flag.NewFlagSet("loop", flag.ContinueOnError)
	var o options
	o.register(fs)
	interval := fs.Duration("interval", 20*time.Millisecond, "time between the starts of two requests")
	duration := fs.Duration("duration", time.Minute, "how long to run at most")
	stopFile := fs.String("stop-file", "", "stop once this file exists")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("loop: one URL expected")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	counts := map[string]int{}
	errs := map[string]int{}
	bodies := map[string]string{}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for ctx.Err() == nil {
		if *stopFile != "" {
			if _, err := os.Stat(*stopFile); err == nil {
				break
			}
		}
		req, err := o.request(fs.Arg(0))
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			counts["error"]++
			msg := err.Error()
			if len(msg) > 120 {
				msg = msg[len(msg)-120:]
			}
			errs[msg]++
		} else {
			code := fmt.Sprint(resp.StatusCode)
			if _, seen := bodies[code]; !seen && resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
				bodies[code] = strings.TrimSpace(string(b))
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			counts[code]++
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"counts": counts, "errors": errs, "bodies": bodies})
}

func resolve(names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("resolve: a name expected")
	}
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, n)
		cancel()
		if err != nil {
			return err
		}
		fmt.Println(n, strings.Join(addrs, " "))
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: client sleep | get [flags] URL | loop [flags] URL | touch PATH | resolve NAME... | cat FILE | getenv NAME")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
	case "get":
		err = get(os.Args[2:])
	case "loop":
		err = loop(os.Args[2:])
	case "resolve":
		err = resolve(os.Args[2:])
	case "getenv":
		if len(os.Args) != 3 {
			err = fmt.Errorf("getenv: one name expected")
		} else {
			fmt.Print(os.Getenv(os.Args[2])) // exactly the value: kubectl exec passes it on as is
		}
	case "cat":
		var b []byte
		if len(os.Args) != 3 {
			err = fmt.Errorf("cat: one path expected")
		} else if b, err = os.ReadFile(os.Args[2]); err == nil { //nolint:gosec // a test image: the suite names the file it reads
			_, err = os.Stdout.Write(b)
		}
	case "touch":
		if len(os.Args) != 3 {
			err = fmt.Errorf("touch: one path expected")
		} else {
			err = os.WriteFile(os.Args[2], nil, 0o600) //nolint:gosec // a test image: the suite names the stop file
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}
