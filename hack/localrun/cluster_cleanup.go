package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

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
