package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/apitoken-operator/apitoken-operator/internal/testenv"
)

// runCurrent runs the operator against the current context of the
// kubeconfig: it prints what it will create, creates it, and on exit
// (Ctrl-C, SIGTERM, or the operator exiting) removes what was not there
// before, saying what it removed and what it left.
func runCurrent(o options) error {
	ctx := signalContext()
	name, cfg, err := currentContext()
	if err != nil {
		return err
	}

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
