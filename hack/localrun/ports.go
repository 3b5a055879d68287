package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
)

// bindFlags are the operator's flags that name an address it listens on
// at a fixed port (the webhook's port is picked free by the control plane).
var bindFlags = []string{"--auth-bind-address", "--grpc-auth-bind-address", "--metrics-bind-address", "--health-probe-bind-address"}

// checkPorts fails, naming the flag and the address, if an address the
// operator would listen on (as args set it: the last of a flag wins) is
// taken: another make run, most often. Without it, a second make run got
// its readiness from the first one's auth endpoint and failed later, on
// the webhook, with the cause only in the operator's log.
func checkPorts(args []string) error {
	addrs := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(a, "=")
		if ok && strings.HasPrefix(name, "--") {
			addrs[name] = value
		}
	}
	var busy []string
	for _, flag := range bindFlags {
		addr := addrs[flag]
		if addr == "" || addr == "0" {
			continue // unset, or turned off (--metrics-bind-address=0)
		}
		l, err := net.Listen("tcp", addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			busy = append(busy, fmt.Sprintf("%s (%s=%s)", addr, flag, addr))
			continue
		}
		if err == nil {
			_ = l.Close()
		}
	}
	if len(busy) == 0 {
		return nil
	}
	return fmt.Errorf("the operator's ports are taken: %s, by another process (a second make run?). "+
		"Stop it, or move every port: hack/run-local.sh -auth-bind-address=127.0.0.1:18082 -- "+
		"--grpc-auth-bind-address=127.0.0.1:19002 --metrics-bind-address=127.0.0.1:18080 --health-probe-bind-address=127.0.0.1:18081 "+
		"(docs/development.md, make run)", strings.Join(busy, ", "))
}
