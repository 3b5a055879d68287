package plugin

import (
	"crypto/ecdh"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/showonce"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// createOptions are the flags of create.
type createOptions struct {
	*rootOptions
	printFlags *genericclioptions.PrintFlags

	tokenType    string
	scopes       []string
	duration     string
	audience     string
	presentation string
	description  string
	secretName   string
	gracePeriod  string
	renewBefore  string
	idleTimeout  string
	dryRun       string
	showOnce     bool
	pickupWindow string
	// publicKey is the show-once key pair's public half, set by run.
	publicKey string
}

func newCreateCommand(root *rootOptions) *cobra.Command {
	o := &createOptions{rootOptions: root, printFlags: genericclioptions.NewPrintFlags("created").WithTypeSetter(scheme)}
	cmd := &cobra.Command{
		Use:   "create NAME [--type read-only|full-access|custom] [--scopes a:read,b:*] [--duration 30d] [--dry-run=client -o yaml]",
		Short: "Create an ApiToken, or print its manifest (--dry-run=client -o yaml)",
		Long: `Create an ApiToken. The operator then mints a token into the Secret
<NAME>-token (key "token"): read it with "kubectl apitoken reveal NAME".

With --dry-run=client -o yaml, nothing is sent to the cluster: the manifest
is printed, to commit to git (the GitOps way). --dry-run=server asks the API
server (and the admission webhook) to validate it without storing it.

Types: read-only (*:read), full-access (*:*), custom (exactly --scopes, at
least one). A scope is resource[:sub-resource...]:action, e.g.
articles:read, orders:*, table:data:read. Durations: 7d, 30d, 90d, unlimited,
or a span such as 36h, 1d12h, 2160h.

With --show-once, no Secret is written: the token is for use outside the
cluster (a CI system elsewhere). This command makes a key pair in memory,
creates the ApiToken with the public key, opens the token the operator
sealed to it, acknowledges the pickup, and prints the token to stdout,
once, with guidance on stderr. Only its hash is kept; a token not picked
up within --pickup-window (default 5m) never verifies.`,
		Example: `  # A manifest for git
  kubectl apitoken create ci-reader --type read-only --duration 30d --dry-run=client -o yaml > ci-reader.yaml

  # A custom token for the billing service, only as a bearer token
  kubectl apitoken create billing --type custom --scopes invoices:read,payments:* \
      --audience billing-api --presentation bearer --duration 90d -n team-a

  # Renewed automatically 7 days before expiry; the old token stays valid 10 minutes
  kubectl apitoken create ci-writer --type full-access --duration 90d --renew-before 7d --grace-period 10m

  # For a CI system outside the cluster: printed once, never in a Secret
  kubectl apitoken create external-ci --type read-only --duration 30d --show-once > token.txt`,
		Args: exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.tokenType, "type", string(tokensv1alpha1.ReadOnly), "read-only, full-access or custom")
	f.StringSliceVar(&o.scopes, "scopes", nil, "scopes of a custom token, comma-separated or repeated: articles:read,orders:*")
	f.StringVar(&o.duration, "duration", "30d", "how long each token is valid: 7d, 30d, 90d, unlimited, or a span such as 36h or 2160h")
	f.StringVar(&o.audience, "audience", "", "where the token may be presented: content-api (default), admin, kubernetes or a service name such as billing-api")
	f.StringVar(&o.presentation, "presentation", "", "how clients send it: any (default), bearer or api-key")
	f.StringVar(&o.description, "description", "", "what the token is for")
	f.StringVar(&o.secretName, "secret-name", "", "the Secret to write the token to (default NAME-token)")
	f.StringVar(&o.gracePeriod, "grace-period", "", "how long the previous token stays valid after a regeneration, e.g. 5m")
	f.StringVar(&o.renewBefore, "renew-before", "", "regenerate automatically this long before expiry, e.g. 7d")
	f.StringVar(&o.idleTimeout, "idle-timeout", "", "make the token Inactive after this long unused, e.g. 90d")
	f.BoolVar(&o.showOnce, "show-once", false, "print the token once to stdout instead of delivering it into a Secret (for use outside the cluster)")
	f.StringVar(&o.pickupWindow, "pickup-window", "", "with --show-once: how long the operator waits for the pickup, e.g. 2m (default 5m, at most 1h)")
	f.StringVar(&o.dryRun, "dry-run", "none", `"none", "client" (print, send nothing) or "server" (validate, store nothing)`)
	f.Lookup("dry-run").NoOptDefVal = "client"
	o.printFlags.AddFlags(cmd)
	return cmd
}

// dnsLabel is the shape of an audience (the CRD's rule).
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// build returns the ApiToken the flags describe, or an error naming the
// first bad flag. The API server and the webhook check again; checking
// here makes a --dry-run=client manifest one that will be accepted.
func (o *createOptions) build(name, ns string) (*tokensv1alpha1.ApiToken, error) {
	var errs []error
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		errs = append(errs, fmt.Errorf("NAME %q: %s", name, msg))
	}
	t := tokensv1alpha1.TokenType(o.tokenType)
	switch t {
	case tokensv1alpha1.ReadOnly, tokensv1alpha1.FullAccess:
		if len(o.scopes) > 0 {
			errs = append(errs, fmt.Errorf("--scopes is only allowed with --type custom (a %s token grants %s)", t, map[tokensv1alpha1.TokenType]string{tokensv1alpha1.ReadOnly: "*:read", tokensv1alpha1.FullAccess: "*:*"}[t]))
		}
	case tokensv1alpha1.Custom:
		if len(o.scopes) == 0 {
			errs = append(errs, errors.New("--type custom needs --scopes, e.g. --scopes articles:read,orders:*"))
		}
	default:
		errs = append(errs, fmt.Errorf("--type %q: must be read-only, full-access or custom", o.tokenType))
	}
	for _, s := range o.scopes {
		if _, err := token.ParseScope(s); err != nil {
			errs = append(errs, fmt.Errorf("--scopes %q: %w", s, err))
		}
	}
	if _, _, err := token.ParseDuration(o.duration); err != nil {
		errs = append(errs, fmt.Errorf("--duration: %w", err))
	}
	if o.audience != "" && (len(o.audience) > 63 || !dnsLabel.MatchString(o.audience)) {
		errs = append(errs, fmt.Errorf("--audience %q: must be a lower-case name (a DNS label) such as content-api, admin or billing-api", o.audience))
	}
	switch tokensv1alpha1.Presentation(o.presentation) {
	case "", tokensv1alpha1.AnyHeader, tokensv1alpha1.BearerHeader, tokensv1alpha1.APIKeyHeader:
	default:
		errs = append(errs, fmt.Errorf("--presentation %q: must be any, bearer or api-key", o.presentation))
	}
	if o.secretName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(o.secretName) {
			errs = append(errs, fmt.Errorf("--secret-name %q: %s", o.secretName, msg))
		}
	}
	for _, span := range []struct{ flag, value string }{
		{"--grace-period", o.gracePeriod}, {"--renew-before", o.renewBefore}, {"--idle-timeout", o.idleTimeout},
	} {
		if span.value == "" {
			continue
		}
		if _, err := token.ParseSpan(span.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", span.flag, err))
		}
	}
	if o.renewBefore != "" && o.duration == tokensv1alpha1.Unlimited {
		errs = append(errs, errors.New("--renew-before needs a finite --duration"))
	}
	errs = append(errs, o.showOnceFlagErrors()...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	at := &tokensv1alpha1.ApiToken{
		TypeMeta:   metav1.TypeMeta{APIVersion: tokensv1alpha1.GroupVersion.String(), Kind: "ApiToken"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: tokensv1alpha1.ApiTokenSpec{
			Description:  o.description,
			Type:         t,
			Scopes:       o.scopes,
			Duration:     o.duration,
			Audience:     tokensv1alpha1.Audience(o.audience),
			Presentation: tokensv1alpha1.Presentation(o.presentation),
			SecretName:   o.secretName,
			IdleTimeout:  o.idleTimeout,
		},
	}
	if o.gracePeriod != "" || o.renewBefore != "" {
		at.Spec.Rotation = &tokensv1alpha1.Rotation{GracePeriod: o.gracePeriod, RenewBefore: o.renewBefore}
	}
	if o.showOnce {
		at.Spec.ShowOnce = &tokensv1alpha1.ShowOnce{PublicKey: o.publicKey, PickupWindow: o.pickupWindow}
	}
	return at, nil
}

func (o *createOptions) run(cmd *cobra.Command, name string) error {
	switch o.dryRun {
	case "none", "client", "server":
	default:
		return fmt.Errorf(`--dry-run %q: must be "none", "client" or "server"`, o.dryRun)
	}
	if o.dryRun != "none" {
		if err := o.printFlags.Complete("%s (" + o.dryRun + " dry run)"); err != nil {
			return err
		}
	}
	printer, err := o.printFlags.ToPrinter()
	if err != nil {
		return err
	}

	if o.dryRun == "client" {
		ns, explicit, err := o.namespace()
		if err != nil {
			return err
		}
		if !explicit {
			// A manifest for git names no namespace unless asked: it is
			// applied where it is applied (kubectl create --dry-run does so).
			ns = ""
		}
		at, err := o.build(name, ns)
		if err != nil {
			return err
		}
		return printer.PrintObj(manifest(at), o.streams.Out)
	}

	s, err := o.connect()
	if err != nil {
		return err
	}
	var priv *ecdh.PrivateKey
	if o.showOnce {
		if priv, o.publicKey, err = showonce.GenerateKey(); err != nil {
			return err
		}
	}
	at, err := o.build(name, s.namespace)
	if err != nil {
		return err
	}
	created, err := s.tokens.Create(cmd.Context(), at, o.dryRun == "server")
	if err != nil {
		return err
	}
	if !o.showOnce || o.dryRun == "server" {
		return printer.PrintObj(redact(created), o.streams.Out)
	}
	// stdout carries only the token: the rest goes to stderr.
	if err := printer.PrintObj(redact(created), o.streams.ErrOut); err != nil {
		return err
	}
	tok, err := o.pickUp(cmd.Context(), s, created, priv)
	if err != nil {
		return fmt.Errorf("%w (%s %q exists without a usable token: 'kubectl delete apitoken %s -n %s')", err, kindLower, name, name, s.namespace)
	}
	o.warnf("this is the only time the token of %s %s/%s is shown: store it now (e.g. in your CI system's secret store). "+
		"No Secret holds it and it cannot be shown again; revoke it with 'kubectl apitoken revoke %s -n %s'", kindLower, s.namespace, name, name, s.namespace)
	_, err = fmt.Fprintln(o.streams.Out, tok)
	return err
}

// manifest returns at as a manifest to commit: no status, no
// creationTimestamp, only what a person would write.
func manifest(at *tokensv1alpha1.ApiToken) runtime.Object {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(at)
	if err != nil {
		return at
	}
	u := &unstructured.Unstructured{Object: obj}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u
}

// exactlyOneName is cobra.ExactArgs(1) with a message that names the
// argument.
func exactlyOneName(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return fmt.Errorf("NAME is required: %s", strings.TrimSpace(cmd.UseLine()))
	case len(args) > 1:
		return fmt.Errorf("expected one NAME, got %d: %s", len(args), strings.Join(args, " "))
	}
	return nil
}
