package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeconfig loads the kubeconfig as kubectl does (KUBECONFIG, else
// ~/.kube/config), without prompting.
func kubeconfig() clientcmd.ClientConfig {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
}

// reachableContext reports the kubeconfig's current context and its
// server when that server answers GET /version within 3 seconds. The
// request is anonymous: no credential is sent and no credential plugin
// runs. Any HTTP answer, even 401, counts as reachable.
func reachableContext() (name, server string, ok bool) {
	cc := kubeconfig()
	raw, err := cc.RawConfig()
	if err != nil || raw.CurrentContext == "" {
		return "", "", false
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return "", "", false
	}
	anon := rest.AnonymousClientConfig(cfg)
	anon.Timeout = 3 * time.Second
	hc, err := rest.HTTPClientFor(anon)
	if err != nil {
		return "", "", false
	}
	resp, err := hc.Get(strings.TrimSuffix(cfg.Host, "/") + "/version")
	if err != nil {
		return "", "", false
	}
	_ = resp.Body.Close()
	return raw.CurrentContext, cfg.Host, true
}

// currentContext is the kubeconfig's current context and its client
// configuration, once its server has answered (said with its version).
func currentContext() (string, *rest.Config, error) {
	cc := kubeconfig()
	raw, err := cc.RawConfig()
	if err != nil {
		return "", nil, fmt.Errorf("CLUSTER=current: reading the kubeconfig: %w", err)
	}
	name := raw.CurrentContext
	if name == "" {
		return "", nil, errors.New("CLUSTER=current: the kubeconfig (KUBECONFIG or ~/.kube/config) has no current context")
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return "", nil, fmt.Errorf("CLUSTER=current: context %q: %w", name, err)
	}
	probe := rest.CopyConfig(cfg)
	probe.Timeout = 10 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(probe)
	if err != nil {
		return "", nil, err
	}
	version, err := dc.ServerVersion()
	if err != nil {
		return "", nil, fmt.Errorf("CLUSTER=current: context %q (%s) does not answer: %w", name, cfg.Host, err)
	}
	say(fmt.Sprintf("CLUSTER=current: using context %q (%s, Kubernetes %s)", name, cfg.Host, version.GitVersion))
	return name, cfg, nil
}
