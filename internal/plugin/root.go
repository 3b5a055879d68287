// Package plugin implements kubectl-apitoken, the kubectl plugin for
// ApiTokens: create (or print a manifest for git), list with filters,
// regenerate and wait for the new token, revoke, reveal, verify against the
// auth endpoint and show a token's status and Events.
//
// Every command takes kubectl's connection flags (genericclioptions) and
// writes to the IOStreams it was built with, so tests run it in-process. A
// token is printed only by reveal, to stdout; no command prints a token's
// hashes, and verify never prints the token it checks.
package plugin

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// rootOptions holds what every command shares: the connection flags and
// the streams.
type rootOptions struct {
	configFlags *genericclioptions.ConfigFlags
	streams     genericiooptions.IOStreams
}

// NewRootCommand returns the kubectl-apitoken command with its
// subcommands, writing to streams. main calls it with the process's
// streams; tests call it with buffers.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &rootOptions{configFlags: genericclioptions.NewConfigFlags(true), streams: streams}
	cmd := &cobra.Command{
		Use:   "kubectl-apitoken",
		Short: "Create, list, regenerate, revoke, reveal and verify ApiTokens",
		Long: `kubectl apitoken manages the API tokens of apitoken-operator (ApiToken,
tokens.apitoken.dev/v1alpha1): the operator mints each token into a Secret,
keeps only a keyed hash, and answers at its auth endpoint whether a token
is valid.

The connection flags are kubectl's (--kubeconfig, --context, -n/--namespace,
--as, ...). Only "reveal" prints a token, to stdout; nothing prints a
token's hashes.`,
		Example: `  # The GitOps way: print a manifest to commit
  kubectl apitoken create ci-reader --type read-only --duration 30d --dry-run=client -o yaml

  # Tokens that need attention, in every namespace
  kubectl apitoken list -A --expiring-soon --inactive

  # Issue a new token, wait for it, and check it at the auth endpoint
  kubectl apitoken regenerate ci-reader --wait
  kubectl apitoken reveal ci-reader | kubectl apitoken verify --url http://localhost:8082`,
		Annotations: map[string]string{
			// Help and usage say "kubectl apitoken", as kubectl runs it.
			cobra.CommandDisplayNameAnnotation: "kubectl apitoken",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.CompletionOptions.HiddenDefaultCmd = true
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	o.configFlags.AddFlags(cmd.PersistentFlags())

	cmd.AddCommand(
		newCreateCommand(o),
		newGetCommand(o),
		newListCommand(o),
		newRegenerateCommand(o),
		newRevokeCommand(o, true),
		newRevokeCommand(o, false),
		newRevealCommand(o),
		newVerifyCommand(o),
		newStatusCommand(o),
	)
	return cmd
}

// session is what a command needs to talk to the API server.
type session struct {
	config *rest.Config
	tokens *apiTokenClient
	kube   kubernetes.Interface
	// namespace is -n, the context's namespace, or "default"; explicit
	// says whether -n set it.
	namespace string
	explicit  bool
}

// connect builds the clients from the connection flags.
// connectTo connects and reads the ApiToken name in the session's
// namespace, as every command on one token starts.
func (o *rootOptions) connectTo(ctx context.Context, name string) (*session, *tokensv1alpha1.ApiToken, error) {
	s, err := o.connect()
	if err != nil {
		return nil, nil, err
	}
	at, err := s.tokens.Get(ctx, s.namespace, name)
	if err != nil {
		return nil, nil, err
	}
	return s, at, nil
}

func (o *rootOptions) connect() (*session, error) {
	ns, explicit, err := o.configFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	cfg, err := o.configFlags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubectl-apitoken"
	cfg.WarningHandler = rest.NewWarningWriter(o.streams.ErrOut, rest.WarningWriterOptions{Deduplicate: true})
	tokens, err := newAPITokenClient(cfg)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &session{config: cfg, tokens: tokens, kube: kube, namespace: ns, explicit: explicit}, nil
}

// namespace returns the namespace of -n or the kubeconfig's context,
// without connecting (for --dry-run=client).
func (o *rootOptions) namespace() (ns string, explicit bool, err error) {
	return o.configFlags.ToRawKubeConfigLoader().Namespace()
}

// warnf writes a warning line to stderr, as kubectl does.
func (o *rootOptions) warnf(format string, args ...any) {
	_, _ = fmt.Fprintf(o.streams.ErrOut, "Warning: "+format+"\n", args...)
}
