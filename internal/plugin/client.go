package plugin

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// resource is the ApiToken resource as kubectl names it.
const (
	resource     = "apitokens"
	resourceFull = "apitokens.tokens.apitoken.dev"
	// kindLower is how messages name an ApiToken ("apitoken \"x\" ...").
	kindLower = "apitoken"
	// objectPrefix starts "apitoken.tokens.apitoken.dev/x created", as
	// kubectl's name printer writes it.
	objectPrefix = "apitoken.tokens.apitoken.dev"
)

// scheme knows the built-in types and ApiToken: the printers use it to set
// apiVersion and kind, the REST client to decode.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(tokensv1alpha1.AddToScheme(s))
	return s
}()

var parameterCodec = runtime.NewParameterCodec(scheme)

// apiTokenClient is a typed client for ApiTokens, the way a generated
// clientset builds one on client-go's REST client.
type apiTokenClient struct {
	rc rest.Interface
	// server is the API server's address, named when the API is missing
	// there (most often: not the cluster that was meant).
	server string
}

func newAPITokenClient(base *rest.Config) (*apiTokenClient, error) {
	cfg := rest.CopyConfig(base)
	gv := tokensv1alpha1.GroupVersion
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	cfg.ContentType = runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &apiTokenClient{rc: rc, server: base.Host}, nil
}

// Get returns the ApiToken ns/name; errors name it (see describe).
func (c *apiTokenClient) Get(ctx context.Context, ns, name string) (*tokensv1alpha1.ApiToken, error) {
	at := &tokensv1alpha1.ApiToken{}
	err := c.rc.Get().Namespace(ns).Resource(resource).Name(name).Do(ctx).Into(at)
	if err != nil {
		return nil, c.describe(err, "get", ns, name)
	}
	return at, nil
}

// List returns the ApiTokens of ns ("" for every namespace).
func (c *apiTokenClient) List(ctx context.Context, ns string, opts metav1.ListOptions) (*tokensv1alpha1.ApiTokenList, error) {
	list := &tokensv1alpha1.ApiTokenList{}
	err := c.rc.Get().Namespace(ns).Resource(resource).VersionedParams(&opts, parameterCodec).Do(ctx).Into(list)
	if err != nil {
		return nil, c.describe(err, "list", ns, "")
	}
	return list, nil
}

// Create creates at; with serverDryRun, the API server validates and
// defaults it (webhooks included) without storing it.
func (c *apiTokenClient) Create(ctx context.Context, at *tokensv1alpha1.ApiToken, serverDryRun bool) (*tokensv1alpha1.ApiToken, error) {
	opts := metav1.CreateOptions{FieldManager: "kubectl-apitoken"}
	if serverDryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	out := &tokensv1alpha1.ApiToken{}
	err := c.rc.Post().Namespace(at.Namespace).Resource(resource).VersionedParams(&opts, parameterCodec).Body(at).Do(ctx).Into(out)
	if err != nil {
		return nil, c.describe(err, "create", at.Namespace, at.Name)
	}
	return out, nil
}

// MergePatch applies a JSON merge patch to ns/name.
func (c *apiTokenClient) MergePatch(ctx context.Context, ns, name string, patch []byte) (*tokensv1alpha1.ApiToken, error) {
	opts := metav1.PatchOptions{FieldManager: "kubectl-apitoken"}
	out := &tokensv1alpha1.ApiToken{}
	err := c.rc.Patch(types.MergePatchType).Namespace(ns).Resource(resource).Name(name).
		VersionedParams(&opts, parameterCodec).Body(patch).Do(ctx).Into(out)
	if err != nil {
		return nil, c.describe(err, "patch", ns, name)
	}
	return out, nil
}

// Watch watches the ApiTokens of ns selected by opts.
func (c *apiTokenClient) Watch(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	w, err := c.rc.Get().Namespace(ns).Resource(resource).VersionedParams(&opts, parameterCodec).Watch(ctx)
	if err != nil {
		return nil, c.describe(err, "watch", ns, "")
	}
	return w, nil
}

// describe is describe for the ApiToken API of c's server.
func (c *apiTokenClient) describe(err error, verb, ns, name string) error {
	if notInstalled(err) {
		return fmt.Errorf("the ApiToken API (%s/%s) is not installed in the cluster at %s (the one you meant? check KUBECONFIG and --context): install the CRD (make install, or kubectl apply -f config/crd/bases): %w",
			tokensv1alpha1.GroupVersion.Group, tokensv1alpha1.GroupVersion.Version, c.server, err)
	}
	return describe(err, verb, resourceFull, ns, name)
}

// notInstalled reports whether err says the resource itself, not an
// object of it, is unknown to the server.
func notInstalled(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !apierrors.IsNotFound(err) {
		return false
	}
	d := status.Status().Details
	return d == nil || d.Name == ""
}

// describe turns an API error into a message that names the object and,
// for a refusal, the verb and resource that were forbidden:
//
//	apitoken "x" not found in namespace team-a
//	forbidden: cannot get secrets in namespace team-a (User "bob" cannot get resource "secrets" ...)
func describe(err error, verb, res, ns, name string) error {
	if err == nil {
		return nil
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return err
	}
	where := "in namespace " + ns
	if ns == "" {
		where = "in any namespace"
	}
	short := shortName(res)
	switch {
	case notInstalled(err):
		return err // the resource is unknown: apiTokenClient.describe names the API
	case apierrors.IsNotFound(err):
		return &notFoundError{kind: short, name: name, namespace: ns, err: err}
	case apierrors.IsForbidden(err):
		what := res
		if name != "" {
			what = fmt.Sprintf("%s %q", res, name)
		}
		return fmt.Errorf("forbidden: you cannot %s %s %s (%s)", verb, what, where, status.Status().Message)
	case apierrors.IsInvalid(err) && status.Status().Details != nil && len(status.Status().Details.Causes) > 0:
		// One cause a line, as kubectl apply prints them.
		d := status.Status().Details
		msg := fmt.Sprintf("%s %q is invalid:", short, d.Name)
		for _, c := range d.Causes {
			msg += "\n* " + c.Field + ": " + c.Message
		}
		return &reworded{msg: msg, err: err}
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("unauthorized: the API server did not accept your credentials (%s)", status.Status().Message)
	}
	return err
}

// reworded is an API error said another way; errors.As still finds the
// API status under it.
type reworded struct {
	msg string
	err error
}

func (e *reworded) Error() string { return e.msg }
func (e *reworded) Unwrap() error { return e.err }

// notFoundError says which object does not exist.
type notFoundError struct {
	kind, name, namespace string
	err                   error
}

func (e *notFoundError) Error() string {
	return fmt.Sprintf("%s %q not found in namespace %s", e.kind, e.name, e.namespace)
}

func (e *notFoundError) Unwrap() error { return e.err }

// shortName returns "apitoken" for apitokens.tokens.apitoken.dev and
// "secret" for secrets.
func shortName(res string) string {
	switch res {
	case resourceFull:
		return kindLower
	case "secrets":
		return "secret"
	case "services":
		return "service"
	case "pods":
		return "pod"
	}
	return res
}
