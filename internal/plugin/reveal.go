package plugin

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

func newRevealCommand(root *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "reveal NAME",
		Short: "Print the token from its Secret (stdout only, with a warning on stderr)",
		Long: `Print the token of an ApiToken, read from its Secret (key "token"), to
stdout followed by a newline, and a warning to stderr. Nothing else is
printed or logged, so that "reveal NAME | ..." and "$(kubectl apitoken
reveal NAME)" carry only the token.

A revoked token has none: reveal says so and exits non-zero. A Secret that
the ApiToken does not own (a conflict) is never read out. Needs "get" on
the ApiToken and on secrets.`,
		Example: `  kubectl apitoken reveal ci-reader > token.txt
  TOKEN=$(kubectl apitoken reveal ci-reader)
  kubectl apitoken reveal ci-reader | kubectl apitoken verify --url http://localhost:8082

  # The same without the plugin:
  kubectl get secret ci-reader-token -o jsonpath='{.data.token}' | base64 -d`,
		Args: exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			return root.reveal(cmd.Context(), args[0])
		},
	}
}

func (o *rootOptions) reveal(ctx context.Context, name string) error {
	s, at, err := o.connectTo(ctx, name)
	if err != nil {
		return err
	}
	if at.Spec.ShowOnce != nil {
		return fmt.Errorf("%s %q in namespace %s is a show-once token: it was shown once to its creator by 'kubectl apitoken create --show-once' and no Secret holds it",
			kindLower, name, s.namespace)
	}
	if at.Spec.Revoked || at.Status.Phase == tokensv1alpha1.PhaseRevoked {
		return fmt.Errorf("%s %q in namespace %s is revoked and has no token: 'kubectl apitoken unrevoke %s -n %s' issues a new one",
			kindLower, name, s.namespace, name, s.namespace)
	}
	tok, err := secretToken(ctx, s, at)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%s %q in namespace %s has no token yet (phase %s): %w",
				kindLower, name, s.namespace, orDash(string(at.Status.Phase)), err)
		}
		return err
	}
	if len(tok) == 0 {
		return fmt.Errorf("%s %q in namespace %s has no token: Secret %s holds none (phase %s; %s)",
			kindLower, name, s.namespace, at.SecretName(), orDash(string(at.Status.Phase)), readyText(at))
	}
	o.warnf("printing the token of %s %s/%s (Secret %s): anyone who sees this output can use it", kindLower, s.namespace, name, at.SecretName())
	switch at.Status.Phase {
	case tokensv1alpha1.PhaseActive:
	case tokensv1alpha1.PhaseExpired, tokensv1alpha1.PhaseInactive:
		o.warnf("the token is %s and is refused; 'kubectl apitoken regenerate %s' issues a new one", at.Status.Phase, name)
	default:
		o.warnf("the token is %s (%s)", orDash(string(at.Status.Phase)), readyText(at))
	}
	if _, err := o.streams.Out.Write(append(tok, '\n')); err != nil {
		return fmt.Errorf("writing the token to stdout: %w", err)
	}
	return nil
}
