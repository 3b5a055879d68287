package plugin

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// serviceRef is NAMESPACE/NAME:PORT; port is a number or a port name.
type serviceRef struct {
	namespace, name, port string
}

// parseServiceRef parses NAMESPACE/NAME:PORT (NAME:PORT means namespace
// apitoken-system; PORT defaults to 8082).
func parseServiceRef(s string) (serviceRef, error) {
	ref := serviceRef{namespace: "apitoken-system", port: "8082"}
	rest := s
	if ns, after, ok := strings.Cut(rest, "/"); ok {
		ref.namespace, rest = ns, after
	}
	if name, port, ok := strings.Cut(rest, ":"); ok {
		rest, ref.port = name, port
	}
	ref.name = rest
	if ref.namespace == "" || ref.name == "" || ref.port == "" || strings.ContainsAny(ref.name, "/:") {
		return serviceRef{}, fmt.Errorf("--service %q: must be NAMESPACE/NAME:PORT, e.g. %s", s, defaultService)
	}
	return ref, nil
}

// pickPod chooses the pod a port-forward to svc's port goes to, as kubectl
// port-forward svc/NAME does: a running, ready pod of the Service's
// selector (the oldest first, for a stable choice), and the container port
// that the Service port's targetPort names.
func pickPod(svc *corev1.Service, port string, pods []corev1.Pod) (pod string, podPort int32, err error) {
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Name == port || strconv.Itoa(int(p.Port)) == port {
			sp = p
			break
		}
	}
	if sp == nil {
		var have []string
		for _, p := range svc.Spec.Ports {
			have = append(have, fmt.Sprintf("%d (%s)", p.Port, p.Name))
		}
		return "", 0, fmt.Errorf("service %q in namespace %s has no port %s; it has %s", svc.Name, svc.Namespace, port, orDash(strings.Join(have, ", ")))
	}
	ready := make([]corev1.Pod, 0, len(pods))
	for _, p := range pods {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		return "", 0, fmt.Errorf("service %q in namespace %s has no running, ready pod (of %d selected): is the auth endpoint deployed and ready?", svc.Name, svc.Namespace, len(pods))
	}
	sort.SliceStable(ready, func(i, j int) bool {
		ti, tj := ready[i].CreationTimestamp, ready[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return ready[i].Name < ready[j].Name
	})
	chosen := &ready[0]
	target := sp.TargetPort
	switch {
	case target.Type == intstr.String && target.StrVal != "":
		for _, c := range chosen.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == target.StrVal {
					return chosen.Name, cp.ContainerPort, nil
				}
			}
		}
		return "", 0, fmt.Errorf("pod %q in namespace %s has no container port named %q (the targetPort of service %q port %d)",
			chosen.Name, chosen.Namespace, target.StrVal, svc.Name, sp.Port)
	case target.Type == intstr.Int && target.IntVal != 0:
		return chosen.Name, target.IntVal, nil
	}
	return chosen.Name, sp.Port, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// portForward forwards a local port on 127.0.0.1 to a ready pod of the
// Service ref, through the API server (websocket, falling back to SPDY, as
// kubectl does). It returns the local address and a function that ends the
// forward.
func portForward(ctx context.Context, s *session, ref serviceRef, errOut io.Writer) (local string, stop func(), err error) {
	svc, err := s.kube.CoreV1().Services(ref.namespace).Get(ctx, ref.name, metav1.GetOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("finding the auth endpoint: %w", describe(err, "get", "services", ref.namespace, ref.name))
	}
	if len(svc.Spec.Selector) == 0 {
		return "", nil, fmt.Errorf("service %q in namespace %s has no selector: port-forward needs one; use --url", ref.name, ref.namespace)
	}
	pods, err := s.kube.CoreV1().Pods(ref.namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return "", nil, fmt.Errorf("finding the auth endpoint's pods: %w", describe(err, "list", "pods", ref.namespace, ""))
	}
	pod, podPort, err := pickPod(svc, ref.port, pods.Items)
	if err != nil {
		return "", nil, err
	}

	req := s.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(ref.namespace).Name(pod).SubResource("portforward")
	transport, upgrader, err := spdy.RoundTripperFor(s.config)
	if err != nil {
		return "", nil, err
	}
	spdyDialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, req.URL())
	tunnel, err := portforward.NewSPDYOverWebsocketDialerForStreaming(req.URL(), s.config)
	if err != nil {
		return "", nil, err
	}
	dialer := portforward.NewFallbackDialerForStreaming(tunnel, spdyDialer, func(err error) bool {
		return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
	})

	fwCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ready := make(chan struct{})
	fw, err := portforward.NewOnAddressesForStreamingWithContext(fwCtx, dialer, []string{"127.0.0.1"},
		[]string{"0:" + strconv.Itoa(int(podPort))}, ready, io.Discard, errOut)
	if err != nil {
		cancel()
		return "", nil, err
	}
	failed := make(chan error, 1)
	go func() { failed <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		cancel()
		return "", nil, fmt.Errorf("port-forward to pod %q in namespace %s (port %d): %w", pod, ref.namespace, podPort, describePortForward(err, ref.namespace, pod))
	case <-ctx.Done():
		cancel()
		return "", nil, fmt.Errorf("port-forward to pod %q in namespace %s: %w", pod, ref.namespace, ctx.Err())
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		cancel()
		return "", nil, fmt.Errorf("port-forward to pod %q: no local port: %w", pod, err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))), cancel, nil
}

// describePortForward adds which permission a refused port-forward needs.
func describePortForward(err error, ns, pod string) error {
	if strings.Contains(err.Error(), "Forbidden") || strings.Contains(err.Error(), "forbidden") {
		return fmt.Errorf("forbidden: you cannot create pods/portforward for pod %q in namespace %s (%w)", pod, ns, err)
	}
	return err
}
