package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// samples are the default tokens (config/samples), applied in samplesNamespace.
var samples = []struct{ file, name string }{
	{"tokens_v1alpha1_apitoken_full_access.yaml", "full-access"},
	{"tokens_v1alpha1_apitoken_read_only.yaml", "read-only"},
}

// createSample creates the ApiToken of a config/samples file in samplesNamespace.
func createSample(ctx context.Context, c client.Client, root, file string) error {
	data, err := os.ReadFile(filepath.Join(root, "config", "samples", file)) //nolint:gosec // the repository's samples
	if err != nil {
		return err
	}
	var at tokensv1alpha1.ApiToken
	if err := yaml.UnmarshalStrict(data, &at); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	at.Namespace = samplesNamespace
	if err := c.Create(ctx, &at, client.FieldOwner("make-run")); err != nil {
		return fmt.Errorf("applying %s: %w", file, err)
	}
	return nil
}

// waitSampleToken waits until the read-only sample's Secret holds a token.
func waitSampleToken(ctx context.Context, c client.Client, op *operator) error {
	var secret corev1.Secret
	for {
		err := c.Get(ctx, types.NamespacedName{Namespace: samplesNamespace, Name: "read-only-token"}, &secret)
		if err == nil && len(secret.Data[tokensv1alpha1.SecretTokenKey]) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errInterrupted
		case err := <-op.exited:
			op.exited <- err
			return op.exitError(err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sampleToken(name string) *tokensv1alpha1.ApiToken {
	return &tokensv1alpha1.ApiToken{ObjectMeta: metav1.ObjectMeta{Namespace: samplesNamespace, Name: name}}
}
