package main

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

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
