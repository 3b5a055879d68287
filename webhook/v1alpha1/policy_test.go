package v1alpha1

import (
	"context"
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// failingReader answers every read with err.
type failingReader struct{ err error }

func (f failingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return f.err
}

func (f failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return f.err
}

func TestCheckPoliciesFailsClosed(t *testing.T) {
	at := validToken()
	errs, err := CheckPolicies(context.Background(), failingReader{errors.New("cache not synced")}, nil, at)
	if err == nil || len(errs) != 0 {
		t.Fatalf("a policy read that fails must refuse: errs %v, err %v", errs, err)
	}
}

func TestCheckPoliciesWithoutTheCRD(t *testing.T) {
	noKind := &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "tokens.apitoken.dev", Kind: "ApiTokenPolicy"}, SearchedVersions: []string{"v1alpha1"}}
	errs, err := CheckPolicies(context.Background(), failingReader{noKind}, nil, validToken())
	if err != nil || len(errs) != 0 {
		t.Fatalf("without the ApiTokenPolicy CRD no policy exists: errs %v, err %v", errs, err)
	}
}
