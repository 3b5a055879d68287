package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
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

// presence records which of make run's objects existed before the run;
// only the others are removed when it stops.
type presence struct {
	crd, namespace, salt bool
	// samples: name of each default token → whether it existed.
	samples map[string]bool
	// tokens is the number of ApiTokens in the cluster when the CRD exists.
	tokens int
}

func crdObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("apiextensions.k8s.io/v1")
	u.SetKind("CustomResourceDefinition")
	u.SetName(crdName)
	return u
}

// exists reports whether obj (its kind, namespace and name set) exists.
func exists(ctx context.Context, c client.Client, obj client.Object) (bool, error) {
	err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	}
	return false, err
}

func inspect(ctx context.Context, c client.Client) (presence, error) {
	p := presence{samples: map[string]bool{}}
	var err error
	if p.crd, err = exists(ctx, c, crdObject()); err != nil {
		return p, err
	}
	if p.namespace, err = exists(ctx, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}); err != nil {
		return p, err
	}
	if p.namespace {
		if p.salt, err = exists(ctx, c, saltSecret()); err != nil {
			return p, err
		}
	}
	if p.crd {
		for _, s := range samples {
			if p.samples[s.name], err = exists(ctx, c, sampleToken(s.name)); err != nil {
				return p, err
			}
		}
		var list tokensv1alpha1.ApiTokenList
		if err := c.List(ctx, &list); err != nil {
			return p, err
		}
		p.tokens = len(list.Items)
	}
	return p, nil
}

func saltSecret() *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: saltSecretName}}
}

func sampleToken(name string) *tokensv1alpha1.ApiToken {
	return &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: samplesNamespace, Name: name}}
}

// printPlan says what the run will create (and remove when it stops) and
// what it finds and leaves alone.
func printPlan(context string, p presence) {
	var create, keep []string
	if p.crd {
		keep = append(keep, "CustomResourceDefinition "+crdName)
	} else {
		create = append(create, "CustomResourceDefinition "+crdName)
	}
	switch {
	case !p.namespace:
		create = append(create, "Namespace "+operatorNamespace+" (with the salt Secret "+saltSecretName+" the operator creates in it)")
	case !p.salt:
		keep = append(keep, "Namespace "+operatorNamespace)
		create = append(create, "Secret "+operatorNamespace+"/"+saltSecretName+" (the operator creates it when it starts)")
	default:
		keep = append(keep, "Namespace "+operatorNamespace, "Secret "+operatorNamespace+"/"+saltSecretName+" (the salt; the operator uses it)")
	}
	for _, s := range samples {
		obj := fmt.Sprintf("ApiToken %s/%s", samplesNamespace, s.name)
		if p.samples[s.name] {
			keep = append(keep, obj)
		} else {
			create = append(create, obj+" and its Secret "+samplesNamespace+"/"+s.name+tokensv1alpha1.SecretNameSuffix)
		}
	}
	say(fmt.Sprintf("CLUSTER=current: in context %q this run creates, and removes when it stops:", context))
	for _, line := range create {
		say("  " + line)
	}
	if len(keep) > 0 {
		say("already there, used and left as they are:")
		for _, line := range keep {
			say("  " + line)
		}
	}
	reconciles := "every ApiToken in the cluster"
	if p.crd {
		reconciles = fmt.Sprintf("every ApiToken in the cluster (%d now)", p.tokens)
	}
	say("the operator runs on this machine with its webhooks off (the cluster cannot call it) and reconciles " + reconciles)
}

// runCurrent runs the operator against the current context of the
// kubeconfig: it prints what it will create, creates it, and on exit
// (Ctrl-C, SIGTERM, or the operator exiting) removes what was not there
// before, saying what it removed and what it left.
func runCurrent(o options) error {
	ctx := signalContext()
	cc := kubeconfig()
	raw, err := cc.RawConfig()
	if err != nil {
		return fmt.Errorf("CLUSTER=current: reading the kubeconfig: %w", err)
	}
	name := raw.CurrentContext
	if name == "" {
		return errors.New("CLUSTER=current: the kubeconfig (KUBECONFIG or ~/.kube/config) has no current context")
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("CLUSTER=current: context %q: %w", name, err)
	}
	probe := rest.CopyConfig(cfg)
	probe.Timeout = 10 * time.Second
	dc, err := discovery.NewDiscoveryClientForConfig(probe)
	if err != nil {
		return err
	}
	version, err := dc.ServerVersion()
	if err != nil {
		return fmt.Errorf("CLUSTER=current: context %q (%s) does not answer: %w", name, cfg.Host, err)
	}
	say(fmt.Sprintf("CLUSTER=current: using context %q (%s, Kubernetes %s)", name, cfg.Host, version.GitVersion))

	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	before, err := inspect(ctx, c)
	if err != nil {
		return fmt.Errorf("CLUSTER=current: looking at what exists: %w", err)
	}
	printPlan(name, before)
	defer removeCreated(cfg, before)

	root := testenv.RepoRoot()
	if !before.crd {
		if err := createCRD(ctx, c, root); err != nil {
			return err
		}
	}
	if !before.namespace {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}, client.FieldOwner("make-run")); err != nil {
			return fmt.Errorf("creating Namespace %s: %w", operatorNamespace, err)
		}
		say("created Namespace " + operatorNamespace)
	}

	op, err := startOperator(o, os.Getenv("KUBECONFIG"), []string{"--enable-webhooks=false"})
	if err != nil {
		return err
	}
	defer op.stop()
	if err := waitReady(ctx, o.authAddr, op); err != nil {
		return err
	}
	// A client made after the CRD exists, so that it knows the kind.
	tc, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	for _, s := range samples {
		if before.samples[s.name] {
			continue
		}
		if err := createSample(ctx, tc, root, s.file); err != nil {
			return err
		}
		say(fmt.Sprintf("created ApiToken %s/%s", samplesNamespace, s.name))
	}
	if !before.samples["read-only"] {
		if err := waitSampleToken(ctx, tc, op); err != nil {
			return err
		}
	}

	fmt.Printf(`
apitoken-operator is running against context %[1]q, with its webhooks off.

  operator log   %[2]s
  auth endpoint  http://%[3]s (/v1/authorize, /v1/auth-request, /v1/forward-auth, /v1/ext-authz, /v1/tokenreview)
  listening on   %[5]s

Try:

%[4]s
Press Ctrl-C to stop the operator and remove what this run created.
`, name, op.logPath, shownAddr(o.authAddr), tryLines(o.authAddr), listening(o.listen))

	return op.wait(ctx)
}

// createCRD creates the ApiToken CRD from config/crd/bases and waits until
// it is established.
func createCRD(ctx context.Context, c client.Client, root string) error {
	data, err := os.ReadFile(filepath.Join(root, "config", "crd", "bases", "tokens.apitoken.dev_apitokens.yaml")) //nolint:gosec // the repository's CRD
	if err != nil {
		return err
	}
	crd := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &crd.Object); err != nil {
		return err
	}
	if err := c.Create(ctx, crd, client.FieldOwner("make-run")); err != nil {
		return fmt.Errorf("creating CustomResourceDefinition %s: %w", crdName, err)
	}
	say("created CustomResourceDefinition " + crdName)
	deadline := time.After(time.Minute)
	for {
		got := crdObject()
		if err := c.Get(ctx, client.ObjectKeyFromObject(got), got); err == nil && established(got) {
			return nil
		}
		select {
		case <-ctx.Done():
			return errInterrupted
		case <-deadline:
			return fmt.Errorf("CustomResourceDefinition %s was not established within a minute", crdName)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// removeCreated deletes, after the operator has stopped, each of make
// run's objects that did not exist before the run, in the order that lets
// each deletion finish (tokens with their Secrets, the salt, the
// namespace, the CRD), and says what it removed and what it left and why.
// It does not use the signal context: the first Ctrl-C asked for this; a
// second one stops the process and leaves the rest.
func removeCreated(cfg *rest.Config, before presence) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		say("could not remove what this run created: " + err.Error())
		return
	}
	say("removing what this run created (Ctrl-C again leaves the rest in place)")
	var left []string
	remove := func(obj client.Object, what string, opts ...client.DeleteOption) {
		ok, err := exists(ctx, c, obj)
		if err != nil {
			left = append(left, fmt.Sprintf("%s: %v", what, err))
			return
		}
		if !ok {
			return
		}
		if err := c.Delete(ctx, obj, opts...); err != nil && !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("%s: deleting it failed: %v", what, err))
			return
		}
		if err := waitGone(ctx, c, obj, 2*time.Minute); err != nil {
			left = append(left, fmt.Sprintf("%s: still being deleted (%v); see kubectl get %s", what, err, kubectlRef(obj)))
			return
		}
		say("  deleted " + what)
	}

	for _, s := range samples {
		if !before.samples[s.name] {
			// Foreground: the token is gone once the garbage collector has
			// deleted its Secret.
			remove(sampleToken(s.name), fmt.Sprintf("ApiToken %s/%s and its Secret", samplesNamespace, s.name),
				client.PropagationPolicy(metav1.DeletePropagationForeground))
		}
	}
	if before.namespace && !before.salt {
		remove(saltSecret(), "Secret "+operatorNamespace+"/"+saltSecretName+" (the salt this run's operator created)")
	}
	if !before.namespace {
		remove(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}, "Namespace "+operatorNamespace+" (and the salt Secret in it)")
	}
	if !before.crd {
		what := "CustomResourceDefinition " + crdName
		var list tokensv1alpha1.ApiTokenList
		if err := c.List(ctx, &list); err == nil && len(list.Items) > 0 {
			what += fmt.Sprintf(" (and the %d ApiTokens created on it during the run, with their Secrets)", len(list.Items))
		}
		remove(crdObject(), what)
	}

	for _, l := range left {
		say("left: " + l)
	}
	if before.crd {
		say("left as it was: CustomResourceDefinition " + crdName + " (it existed before this run)")
	}
	if before.namespace {
		say("left as it was: Namespace " + operatorNamespace + " (it existed before this run)")
	}
	if before.salt {
		say("left as it was: Secret " + operatorNamespace + "/" + saltSecretName + " (it existed before this run)")
	}
	for _, s := range samples {
		if before.samples[s.name] {
			say(fmt.Sprintf("left as it was: ApiToken %s/%s (it existed before this run)", samplesNamespace, s.name))
		}
	}
	say("left: the Events the operator recorded (the API server deletes them after its --event-ttl, 1 hour by default)")
}

// waitGone waits until obj no longer exists.
func waitGone(ctx context.Context, c client.Client, obj client.Object, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		ok, err := exists(ctx, c, obj)
		if err == nil && !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("not gone after %s", timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// kubectlRef names obj as kubectl get takes it.
func kubectlRef(obj client.Object) string {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return "namespace " + o.Name
	case *corev1.Secret:
		return "secret " + o.Name + " -n " + o.Namespace
	case *tokensv1alpha1.ApiToken:
		return "apitoken " + o.Name + " -n " + o.Namespace
	}
	return "crd " + obj.GetName()
}
