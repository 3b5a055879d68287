package plugin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	watchtools "k8s.io/client-go/tools/watch"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

type regenerateOptions struct {
	*rootOptions
	wait    bool
	timeout time.Duration
}

func newRegenerateCommand(root *rootOptions) *cobra.Command {
	o := &regenerateOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "regenerate NAME [--wait [--timeout 1m]]",
		Short: "Issue a new token (sets the regenerate annotation to a fresh value)",
		Long: `Ask the operator for a new token: sets the annotation
tokens.apitoken.dev/regenerate to a fresh value (the time, in RFC 3339 with
nanoseconds), which the operator acts on once. The new token starts a new
lifetime; the previous one stays valid for spec.rotation.gracePeriod.

With --wait, waits until the operator has handled that value, the token is
Active and its Secret holds a token other than the one it held before (the
two are compared in memory, never printed). Reading the Secret needs "get"
on secrets.`,
		Example: `  kubectl apitoken regenerate ci-reader
  kubectl apitoken regenerate ci-reader --wait --timeout 2m

  # The same without the plugin:
  kubectl annotate apitoken ci-reader tokens.apitoken.dev/regenerate="$(date +%s)" --overwrite`,
		Args: exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args[0])
		},
	}
	cmd.Flags().BoolVar(&o.wait, "wait", false, "wait until the Secret holds the new token and the token is Active")
	cmd.Flags().DurationVar(&o.timeout, "timeout", time.Minute, "how long --wait waits")
	return cmd
}

func (o *regenerateOptions) run(ctx context.Context, name string) error {
	s, at, err := o.connectTo(ctx, name)
	if err != nil {
		return err
	}
	if at.Spec.ShowOnce != nil {
		return fmt.Errorf("%s %q in namespace %s is a show-once token: it is never regenerated (nobody could pick a new one up); revoke it and create a new one with 'kubectl apitoken create --show-once'",
			kindLower, name, s.namespace)
	}
	if at.Spec.Revoked {
		return fmt.Errorf("%s %q in namespace %s is revoked: a regeneration issues no token; 'kubectl apitoken unrevoke %s -n %s' issues a new one",
			kindLower, name, s.namespace, name, s.namespace)
	}
	if at.Status.Phase == tokensv1alpha1.PhaseFailed {
		return fmt.Errorf("%s %q in namespace %s cannot be regenerated: %s", kindLower, name, s.namespace, readyText(at))
	}
	var previous []byte
	if o.wait {
		if previous, err = secretToken(ctx, s, at); err != nil && !isNotFound(err) {
			return fmt.Errorf("--wait compares the Secret's token before and after: %w", err)
		}
	}

	value := freshValue(at, time.Now())
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{tokensv1alpha1.RegenerateAnnotation: value}},
	})
	if err != nil {
		return err
	}
	if at, err = s.tokens.MergePatch(ctx, s.namespace, name, patch); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(o.streams.Out, "%s/%s regeneration requested (%s=%s)\n", objectPrefix, name, tokensv1alpha1.RegenerateAnnotation, value)
	if !o.wait {
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	done, err := o.waitRegenerated(ctx, s, at, value, previous)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("%s/%s regenerated: Secret %s holds a new token, phase %s", objectPrefix, name, done.SecretName(), done.Status.Phase)
	if v := done.Status.Verification; v != nil && v.PreviousValidUntil != nil {
		msg += fmt.Sprintf("; the previous token stays valid until %s", v.PreviousValidUntil.UTC().Format(time.RFC3339))
	}
	_, _ = fmt.Fprintln(o.streams.Out, msg)
	return nil
}

// freshValue returns a regenerate annotation value the token has not seen:
// the time with nanoseconds, which no earlier request of this clock holds.
func freshValue(at *tokensv1alpha1.ApiToken, now time.Time) string {
	for {
		v := now.UTC().Format(time.RFC3339Nano)
		if v != at.Annotations[tokensv1alpha1.RegenerateAnnotation] && v != at.Status.LastHandledRegenerate {
			return v
		}
		now = now.Add(time.Nanosecond)
	}
}

// regenerationState says where the request for value stands: done (the
// value handled, Active, nothing pending), failed (an error that waiting
// will not cure), or neither.
func regenerationState(at *tokensv1alpha1.ApiToken, value string) (done bool, failed error) {
	st := at.Status
	switch {
	case at.Spec.Revoked || st.Phase == tokensv1alpha1.PhaseRevoked:
		return false, fmt.Errorf("%s %q was revoked while waiting: it has no token", kindLower, at.Name)
	case at.Annotations[tokensv1alpha1.RegenerateAnnotation] != value:
		return false, fmt.Errorf("%s %q: the regenerate annotation was changed by someone else while waiting (now %q)",
			kindLower, at.Name, at.Annotations[tokensv1alpha1.RegenerateAnnotation])
	case st.LastHandledRegenerate != value:
		if st.Phase == tokensv1alpha1.PhaseFailed {
			return false, fmt.Errorf("%s %q cannot be regenerated: %s", kindLower, at.Name, readyText(at))
		}
		return false, nil
	case st.Verification != nil && st.Verification.PendingHash != "":
		return false, nil
	case st.Phase == tokensv1alpha1.PhaseActive:
		return true, nil
	case st.Phase == tokensv1alpha1.PhaseFailed:
		return false, fmt.Errorf("%s %q was regenerated but is Failed: %s", kindLower, at.Name, readyText(at))
	}
	return false, nil
}

// waitRegenerated watches the ApiToken until regenerationState says done
// and the Secret's token differs from previous.
func (o *regenerateOptions) waitRegenerated(ctx context.Context, s *session, at *tokensv1alpha1.ApiToken, value string, previous []byte) (*tokensv1alpha1.ApiToken, error) {
	check := func(at *tokensv1alpha1.ApiToken) (bool, error) {
		done, err := regenerationState(at, value)
		if !done || err != nil {
			return false, err
		}
		current, err := secretToken(ctx, s, at)
		if err != nil {
			if isNotFound(err) {
				return false, nil
			}
			return false, err
		}
		return len(current) > 0 && subtle.ConstantTimeCompare(current, previous) == 0, nil
	}
	timedOut := func(last *tokensv1alpha1.ApiToken) error {
		return fmt.Errorf("timed out after %s waiting for %s %q to be regenerated (phase %s; %s); is the operator running?",
			o.timeout, kindLower, last.Name, orDash(string(last.Status.Phase)), readyText(last))
	}
	return watchUntil(ctx, s, at, check, timedOut)
}

// watchUntil watches the ApiToken at until check says done (or fails),
// starting from at, and returns it as check last saw it. A watch that
// closes or expires is started again from a fresh GET; once ctx is done,
// the error is timedOut's, of the last copy seen.
func watchUntil(ctx context.Context, s *session, at *tokensv1alpha1.ApiToken, check func(*tokensv1alpha1.ApiToken) (bool, error), timedOut func(last *tokensv1alpha1.ApiToken) error) (*tokensv1alpha1.ApiToken, error) {
	last := at
	seen := func(at *tokensv1alpha1.ApiToken) (bool, error) {
		last = at
		return check(at)
	}
	for {
		if ok, err := seen(last); ok || err != nil {
			if ctx.Err() != nil {
				return nil, timedOut(last)
			}
			return last, err
		}
		w, err := s.tokens.Watch(ctx, last.Namespace, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", last.Name).String(),
			ResourceVersion: last.ResourceVersion,
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, timedOut(last)
			}
			return nil, err
		}
		_, err = watchtools.UntilWithoutRetry(ctx, w, func(ev watch.Event) (bool, error) {
			switch ev.Type {
			case watch.Deleted:
				return false, fmt.Errorf("%s %q was deleted while waiting", kindLower, last.Name)
			case watch.Error:
				// Most often "too old resource version": watch again.
				return false, errRewatch
			}
			t, ok := ev.Object.(*tokensv1alpha1.ApiToken)
			if !ok {
				return false, nil
			}
			return seen(t)
		})
		switch {
		case ctx.Err() != nil:
			return nil, timedOut(last)
		case err == nil:
			return last, nil
		case errors.Is(err, watchtools.ErrWatchClosed) || errors.Is(err, errRewatch):
			fresh, gerr := s.tokens.Get(ctx, last.Namespace, last.Name)
			if gerr != nil {
				if ctx.Err() != nil {
					return nil, timedOut(last)
				}
				return nil, gerr
			}
			last = fresh
		default:
			return nil, err
		}
	}
}

// errRewatch ends a watch that must be started again from a fresh GET.
var errRewatch = errors.New("watch again")

// secretToken returns the token in at's Secret, after checking that the
// Secret is the one the operator manages for at (owned by it). It returns
// an empty token for a Secret whose token was removed (revoked).
func secretToken(ctx context.Context, s *session, at *tokensv1alpha1.ApiToken) ([]byte, error) {
	name := at.SecretName()
	sec, err := s.kube.CoreV1().Secrets(at.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, describe(err, "get", "secrets", at.Namespace, name)
	}
	if !ownedBy(sec, at) {
		return nil, fmt.Errorf("secret %q in namespace %s is not the token Secret of %s %q: it is not owned by it (%s)",
			name, at.Namespace, kindLower, at.Name, readyText(at))
	}
	return sec.Data[tokensv1alpha1.SecretTokenKey], nil
}

// ownedBy reports whether at is the controller of sec.
func ownedBy(sec *corev1.Secret, at *tokensv1alpha1.ApiToken) bool {
	ref := metav1.GetControllerOfNoCopy(sec)
	return ref != nil && ref.UID == at.UID
}

func isNotFound(err error) bool {
	var nf *notFoundError
	return errors.As(err, &nf)
}

// readyText is the Ready condition as "Ready=False SecretConflict: message".
func readyText(at *tokensv1alpha1.ApiToken) string {
	c := meta.FindStatusCondition(at.Status.Conditions, tokensv1alpha1.ConditionReady)
	if c == nil {
		return "no Ready condition yet"
	}
	return fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
}
