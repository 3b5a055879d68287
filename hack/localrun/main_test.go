package main

import (
	"flag"
	"net"
	"strings"
	"testing"

	"github.com/apitoken-operator/apitoken-operator/cmd/app"
)

// operatorListenFlags are the operator's flags that open a port by
// default, read from its options (cmd/app) so that a new one cannot be
// missed: every -bind-address flag whose default is not empty or 0.
func operatorListenFlags(t *testing.T) []string {
	t.Helper()
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	app.NewOptions().AddFlags(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasSuffix(f.Name, "-bind-address") && f.DefValue != "" && f.DefValue != "0" {
			names = append(names, f.Name)
		}
	})
	for _, want := range []string{"auth-bind-address", "grpc-auth-bind-address", "metrics-bind-address", "health-probe-bind-address"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Fatalf("cmd/app has no %s flag with a default (found %v): update this test", want, names)
		}
	}
	return names
}

// lastValues maps each --name=value to its last value, as Go's flag
// package reads a repeated flag.
func lastValues(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			out[name] = value
		}
	}
	return out
}

// TestOperatorListensOnLoopbackByDefault: make run's operator opens every
// port it listens on (auth 8082, gRPC 9002, metrics 8080, probes 8081, the
// webhooks) on 127.0.0.1 only, unless -listen-address widens it; the
// user's flags after -- still win.
func TestOperatorListensOnLoopbackByDefault(t *testing.T) {
	listen := operatorListenFlags(t)
	for _, c := range []struct {
		args []string
		host string
	}{
		{nil, "127.0.0.1"},
		{[]string{"-listen-address=0.0.0.0"}, "0.0.0.0"},
		{[]string{"-listen-address=::"}, "::"},
	} {
		o, _, err := parseFlags(c.args)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		got := lastValues(o.args(o.webhookArgs(9443, "/certs")))
		for _, name := range listen {
			v, ok := got[name]
			if !ok {
				t.Errorf("%v: make run leaves --%s at the operator's default, which listens on every interface", c.args, name)
				continue
			}
			if host, _, err := net.SplitHostPort(v); err != nil || host != c.host {
				t.Errorf("%v: --%s=%s, want host %s", c.args, name, v, c.host)
			}
		}
		if got["webhook-host"] != c.host {
			t.Errorf("%v: --webhook-host=%q, want %s", c.args, got["webhook-host"], c.host)
		}
	}
	o, _, err := parseFlags([]string{"-auth-bind-address=127.0.0.1:18082", "--", "--metrics-bind-address=0"})
	if err != nil {
		t.Fatal(err)
	}
	got := lastValues(o.args(nil))
	if got["auth-bind-address"] != "127.0.0.1:18082" || got["metrics-bind-address"] != "0" || got["grpc-auth-bind-address"] != "127.0.0.1:9002" {
		t.Errorf("explicit addresses are not kept: %v", got)
	}
}

// TestCheckPortsNamesATakenPort: a port the operator would listen on that
// another process holds (a second make run) is refused before the operator
// starts, naming the address and its flag; free ports, and a metrics
// endpoint turned off, pass. Every listening flag of the operator is
// checked.
func TestCheckPortsNamesATakenPort(t *testing.T) {
	for _, name := range operatorListenFlags(t) {
		if !strings.Contains(strings.Join(bindFlags, " "), "--"+name) {
			t.Errorf("checkPorts does not check --%s", name)
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	_ = free.Close()

	err = checkPorts([]string{"--auth-bind-address=" + freeAddr, "--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:1", "--health-probe-bind-address=" + taken.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "--health-probe-bind-address="+taken.Addr().String()) ||
		strings.Contains(err.Error(), freeAddr+" (") {
		t.Fatalf("got %v, want the taken probe address named, and only it", err)
	}
	if err := checkPorts([]string{"--auth-bind-address=" + freeAddr, "--metrics-bind-address=0"}); err != nil {
		t.Fatalf("free ports refused: %v", err)
	}
}
