package plugin

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

// newRevokeCommand returns revoke (revoke true) or unrevoke (false).
func newRevokeCommand(root *rootOptions, revoke bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: invalid at once, removed from its Secret (spec.revoked: true)",
		Long: `Set spec.revoked to true: the operator makes the token invalid at once
(every replica of the auth endpoint within about a second), removes it from
the Secret and lists the ApiToken as Revoked. The record stays; unrevoke
issues a new token (the revoked one never comes back).`,
		Example: `  kubectl apitoken revoke ci-reader -n team-a

  # The same without the plugin:
  kubectl patch apitoken ci-reader -n team-a --type=merge -p '{"spec":{"revoked":true}}'`,
		Args: exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			return root.setRevoked(cmd.Context(), args[0], revoke)
		},
	}
	if !revoke {
		cmd.Use = "unrevoke NAME"
		cmd.Short = "Issue a new token for a revoked ApiToken (spec.revoked: false)"
		cmd.Long = `Set spec.revoked back to false: the operator issues a brand-new token
into the Secret (Event Unrevoked). The revoked token stays invalid.`
		cmd.Example = `  kubectl apitoken unrevoke ci-reader -n team-a
  kubectl apitoken status ci-reader -n team-a

  # The same without the plugin:
  kubectl patch apitoken ci-reader -n team-a --type=merge -p '{"spec":{"revoked":false}}'`
	}
	return cmd
}

func (o *rootOptions) setRevoked(ctx context.Context, name string, revoke bool) error {
	s, at, err := o.connectTo(ctx, name)
	if err != nil {
		return err
	}
	verb := map[bool]string{true: "revoked", false: "unrevoked"}[revoke]
	if at.Spec.Revoked == revoke {
		state := "is already revoked"
		if !revoke {
			state = "is not revoked"
		}
		_, _ = fmt.Fprintf(o.streams.Out, "%s/%s %s (unchanged)\n", objectPrefix, name, state)
		return nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]bool{"revoked": revoke}})
	if err != nil {
		return err
	}
	if _, err := s.tokens.MergePatch(ctx, s.namespace, name, patch); err != nil {
		return err
	}
	switch {
	case revoke && at.Spec.ShowOnce != nil:
		_, _ = fmt.Fprintf(o.streams.Out, "%s/%s %s: the show-once token is refused from now on, for good\n", objectPrefix, name, verb)
	case revoke:
		_, _ = fmt.Fprintf(o.streams.Out, "%s/%s %s: the token is refused from now on and removed from Secret %s\n", objectPrefix, name, verb, at.SecretName())
	default:
		_, _ = fmt.Fprintf(o.streams.Out, "%s/%s %s: the operator issues a new token into Secret %s\n", objectPrefix, name, verb, at.SecretName())
	}
	return nil
}
