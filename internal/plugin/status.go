package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/cli-runtime/pkg/printers"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
)

// maxEvents is how many of the latest Events status shows.
const maxEvents = 10

func newStatusCommand(root *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a token's phase, conditions, lifetime, last use, creator and recent Events",
		Long: `Show what the operator says about an ApiToken: its phase and conditions,
when the token was issued and expires, when it was last used at the auth
endpoint, the grace window of the previous token after a regeneration, who
created it (the admission webhook's tokens.apitoken.dev/created-by and
created-by-groups annotations), and its ` + fmt.Sprint(maxEvents) + ` latest Events
(events.k8s.io/v1). Events are skipped with a note when you may not list
them.`,
		Example: `  kubectl apitoken status ci-reader -n team-a`,
		Args:    exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			return root.status(cmd.Context(), args[0])
		},
	}
}

func (o *rootOptions) status(ctx context.Context, name string) error {
	s, at, err := o.connectTo(ctx, name)
	if err != nil {
		return err
	}
	events, evErr := tokenEvents(ctx, s, at)
	return printStatus(o.streams.Out, at, events, evErr, time.Now())
}

// tokenEvents returns the Events regarding at, oldest first, at most
// maxEvents of the latest.
func tokenEvents(ctx context.Context, s *session, at *tokensv1alpha1.ApiToken) ([]eventsv1.Event, error) {
	sel := fields.Set{"regarding.kind": "ApiToken", "regarding.name": at.Name}.AsSelector().String()
	list, err := s.kube.EventsV1().Events(at.Namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, describe(err, "list", "events.events.k8s.io", at.Namespace, "")
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		// An earlier ApiToken of the same name is another object.
		if e.Regarding.UID != "" && e.Regarding.UID != at.UID {
			continue
		}
		out = append(out, e)
	}
	sort.SliceStable(out, func(i, j int) bool { return eventTime(&out[i]).Before(eventTime(&out[j])) })
	if len(out) > maxEvents {
		out = out[len(out)-maxEvents:]
	}
	return out, nil
}

// eventTime is when an Event was last seen.
func eventTime(e *eventsv1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.DeprecatedLastTimestamp.IsZero():
		return e.DeprecatedLastTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// printStatus writes the status report of at: its fields, conditions and
// Events.
func printStatus(w io.Writer, at *tokensv1alpha1.ApiToken, events []eventsv1.Event, evErr error, now time.Time) error {
	if err := printFields(w, at, now); err != nil {
		return err
	}
	if err := printConditions(w, at.Status.Conditions, now); err != nil {
		return err
	}
	return printEvents(w, events, evErr, now)
}

// printFields writes at's spec and status, one aligned "Key: value" line
// each.
func printFields(w io.Writer, at *tokensv1alpha1.ApiToken, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	line := func(k, v string) { _, _ = fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	when := func(t *metav1.Time, none string) string {
		if t == nil {
			return none
		}
		return fmt.Sprintf("%s (%s)", t.UTC().Format(time.RFC3339), relative(t.Time, now))
	}

	line("Name", at.Name)
	line("Namespace", at.Namespace)
	line("Phase", phaseText(at))
	line("Type", string(at.Spec.Type))
	if at.Spec.Type == tokensv1alpha1.Custom {
		line("Scopes", strings.Join(at.Spec.Scopes, ", "))
	}
	line("Audience", orDash(string(at.Spec.Audience)))
	line("Presentation", orDash(string(at.Spec.Presentation)))
	if at.Spec.Description != "" {
		line("Description", at.Spec.Description)
	}
	line("Duration", at.Spec.Duration)
	if r := at.Spec.Rotation; r != nil {
		line("Grace period", orDash(r.GracePeriod))
		line("Renew before", orDash(r.RenewBefore))
		if r.GraceUntilNewTokenUsed {
			line("Grace ends", "when the new token is first used, at the latest after the grace period")
		}
	}
	if at.Spec.IdleTimeout != "" {
		line("Idle timeout", at.Spec.IdleTimeout)
	}
	line("Revoked", fmt.Sprint(at.Spec.Revoked))
	line("Secret", at.SecretName()+" (key "+tokensv1alpha1.SecretTokenKey+")")
	st := &at.Status
	line("Issued", when(st.IssuedAt, "-"))
	expires := expiresText(at, now)
	if st.ExpiresAt != nil && expires != "-" {
		expires = when(st.ExpiresAt, "")
	}
	line("Expires", expires)
	line("Last used", when(st.LastUsedAt, "never"))
	line("Last regenerated", when(st.LastRegeneratedAt, "never"))
	if v := st.Verification; v != nil && v.FirstUsedAt != nil {
		line("First used", when(v.FirstUsedAt, ""))
	}
	if v := st.Verification; v != nil && v.PreviousValidUntil != nil {
		line("Previous token valid until", when(v.PreviousValidUntil, ""))
	}
	if v := at.Annotations[tokensv1alpha1.RegenerateAnnotation]; v != "" {
		handled := "handled"
		if v != st.LastHandledRegenerate {
			handled = "not handled yet"
		}
		line("Regenerate requested", fmt.Sprintf("%s (%s)", v, handled))
	}
	line("Created by", createdBy(at))
	line("Created", when(&at.CreationTimestamp, "-"))
	if st.ObservedGeneration != 0 && st.ObservedGeneration != at.Generation {
		line("Observed generation", fmt.Sprintf("%d of %d (the operator has not seen the latest spec yet)", st.ObservedGeneration, at.Generation))
	}
	return tw.Flush()
}

// printConditions writes the conditions as a table, or says there are none.
func printConditions(w io.Writer, conditions []metav1.Condition, now time.Time) error {
	_, _ = fmt.Fprintln(w, "Conditions:")
	if len(conditions) == 0 {
		_, _ = fmt.Fprintln(w, "  none (the operator has not reconciled this token yet)")
		return nil
	}
	tw := printers.GetNewTabWriter(w)
	_, _ = fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, c := range conditions {
		_, _ = fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, ago(c.LastTransitionTime.Time, now), c.Message)
	}
	return tw.Flush()
}

// printEvents writes the Events as a table, or says why there are none.
func printEvents(w io.Writer, events []eventsv1.Event, evErr error, now time.Time) error {
	_, _ = fmt.Fprintln(w, "Events:")
	switch {
	case evErr != nil:
		_, _ = fmt.Fprintf(w, "  not shown: %v\n", evErr)
	case len(events) == 0:
		_, _ = fmt.Fprintln(w, "  none")
	default:
		tw := printers.GetNewTabWriter(w)
		_, _ = fmt.Fprintln(tw, "  LAST SEEN\tTYPE\tREASON\tMESSAGE")
		for i := range events {
			e := &events[i]
			_, _ = fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", ago(eventTime(e), now), e.Type, e.Reason, strings.TrimSpace(e.Note))
		}
		return tw.Flush()
	}
	return nil
}

// createdBy is the creator the webhook stamped, with their groups (a JSON
// array in CreatedByGroupsAnnotation): "alice (groups: team-a,
// system:authenticated)".
func createdBy(at *tokensv1alpha1.ApiToken) string {
	out := orDash(at.Annotations[tokensv1alpha1.CreatedByAnnotation])
	g := at.Annotations[tokensv1alpha1.CreatedByGroupsAnnotation]
	if g == "" {
		return out
	}
	var groups []string
	if err := json.Unmarshal([]byte(g), &groups); err != nil {
		groups = strings.Split(g, ",") // not the webhook's JSON: a list as written
	}
	return out + " (groups: " + strings.Join(groups, ", ") + ")"
}
