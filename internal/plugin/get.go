package plugin

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	tokensv1alpha1 "github.com/apitoken-operator/apitoken-operator/api/v1alpha1"
	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
)

// getOptions are the flags of get and list.
type getOptions struct {
	*rootOptions
	printFlags    *genericclioptions.PrintFlags
	allNamespaces bool
	selector      string
	filter        Filter
}

func newGetCommand(root *rootOptions) *cobra.Command {
	o := &getOptions{rootOptions: root, printFlags: genericclioptions.NewPrintFlags("").WithTypeSetter(scheme)}
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "Show one ApiToken, or list them (as list does)",
		Long: `Show an ApiToken, or with no NAME list the ApiTokens of the namespace
(-A: of every namespace), as "kubectl get apitokens" does but with the
expiry and last use in words, and filters for the tokens that need
attention. -o yaml and -o json print the objects without their hashes.`,
		Example: `  kubectl apitoken get ci-reader
  kubectl apitoken get ci-reader -o yaml
  kubectl apitoken get -A --expiring-soon`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				return o.runOne(cmd, args[0])
			}
			return o.runList(cmd)
		},
	}
	o.addFlags(cmd)
	return cmd
}

func newListCommand(root *rootOptions) *cobra.Command {
	o := &getOptions{rootOptions: root, printFlags: genericclioptions.NewPrintFlags("").WithTypeSetter(scheme)}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List ApiTokens, optionally only those expiring soon or inactive",
		Long: `List the ApiTokens of the namespace (-A: of every namespace).

--expiring-soon keeps the tokens whose ExpiringSoon condition is True (an
Active token within 7 days of expiry, or within the last fifth of a shorter
lifetime). --inactive keeps the tokens that no longer verify: phase
Expired, Inactive (unused for spec.idleTimeout) or Revoked. Given both, a
token that matches either is listed.`,
		Example: `  # Tokens that need attention, in every namespace
  kubectl apitoken list -A --expiring-soon --inactive

  # As JSON, for a script
  kubectl apitoken list -n team-a -o json

  # Only names
  kubectl apitoken list --inactive -o name`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.runList(cmd)
		},
	}
	o.addFlags(cmd)
	return cmd
}

func (o *getOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list the ApiTokens of every namespace")
	f.StringVarP(&o.selector, "selector", "l", "", "label selector, e.g. team=payments")
	f.BoolVar(&o.filter.ExpiringSoon, "expiring-soon", false, "only tokens whose ExpiringSoon condition is True")
	f.BoolVar(&o.filter.Inactive, "inactive", false, "only tokens that no longer verify: phase Expired, Inactive or Revoked")
	o.printFlags.AddFlags(cmd)
	// "wide" is the table with more columns, as kubectl's.
	f.Lookup("output").Usage = "Output format: wide, json, yaml, name, jsonpath=..., go-template=... (default: a table)"
}

// tableOutput reports whether -o asks for the table (plain or wide).
func (o *getOptions) tableOutput() (bool, bool) {
	out := *o.printFlags.OutputFormat
	return out == "" || out == "wide", out == "wide"
}

func (o *getOptions) runOne(cmd *cobra.Command, name string) error {
	if o.filter.Any() || o.allNamespaces || o.selector != "" {
		return errors.New("--expiring-soon, --inactive, -A and -l select from a list: drop NAME, or use 'kubectl apitoken list'")
	}
	s, err := o.connect()
	if err != nil {
		return err
	}
	at, err := s.tokens.Get(cmd.Context(), s.namespace, name)
	if err != nil {
		return err
	}
	if table, wide := o.tableOutput(); table {
		return printTable(o.streams.Out, []tokensv1alpha1.ApiToken{*at}, false, wide, time.Now())
	}
	printer, err := o.printFlags.ToPrinter()
	if err != nil {
		return err
	}
	return printer.PrintObj(redact(at), o.streams.Out)
}

func (o *getOptions) runList(cmd *cobra.Command) error {
	table, wide := o.tableOutput()
	var printer printers.ResourcePrinter
	if !table {
		var err error
		if printer, err = o.printFlags.ToPrinter(); err != nil {
			return err
		}
	}
	s, err := o.connect()
	if err != nil {
		return err
	}
	ns := s.namespace
	if o.allNamespaces {
		ns = ""
	}
	list, err := s.tokens.List(cmd.Context(), ns, metav1.ListOptions{LabelSelector: o.selector})
	if err != nil {
		return err
	}
	items := o.filter.Apply(list.Items)
	sort.SliceStable(items, func(i, j int) bool {
		if items[i].Namespace != items[j].Namespace {
			return items[i].Namespace < items[j].Namespace
		}
		return items[i].Name < items[j].Name
	})
	if !table {
		out := &tokensv1alpha1.ApiTokenList{ListMeta: metav1.ListMeta{ResourceVersion: list.ResourceVersion}}
		for i := range items {
			out.Items = append(out.Items, *redact(&items[i]))
		}
		if *o.printFlags.OutputFormat == "name" {
			// The name printer takes one object at a time.
			for i := range out.Items {
				if err := printer.PrintObj(&out.Items[i], o.streams.Out); err != nil {
					return err
				}
			}
			return nil
		}
		return printer.PrintObj(out, o.streams.Out)
	}
	if len(items) == 0 {
		where := "in namespace " + ns
		if ns == "" {
			where = "in any namespace"
		}
		match := ""
		if o.filter.Any() {
			match = " matching " + o.filter.String()
		}
		_, _ = fmt.Fprintf(o.streams.ErrOut, "No ApiTokens%s found %s.\n", match, where)
		return nil
	}
	return printTable(o.streams.Out, items, o.allNamespaces, wide, time.Now())
}

// Filter selects ApiTokens by what their status says; the zero Filter
// keeps every token.
type Filter struct {
	// ExpiringSoon keeps tokens whose ExpiringSoon condition is True.
	ExpiringSoon bool
	// Inactive keeps tokens that no longer verify: phase Expired,
	// Inactive or Revoked.
	Inactive bool
}

// Any reports whether the filter selects anything.
func (f Filter) Any() bool { return f.ExpiringSoon || f.Inactive }

// String names the filter's flags.
func (f Filter) String() string {
	var parts []string
	if f.ExpiringSoon {
		parts = append(parts, "--expiring-soon")
	}
	if f.Inactive {
		parts = append(parts, "--inactive")
	}
	return strings.Join(parts, " or ")
}

// Matches reports whether at passes the filter: with both flags, a token
// that matches either.
func (f Filter) Matches(at *tokensv1alpha1.ApiToken) bool {
	if !f.Any() {
		return true
	}
	return (f.ExpiringSoon && IsExpiringSoon(at)) || (f.Inactive && IsInactive(at))
}

// Apply returns the tokens that pass the filter.
func (f Filter) Apply(items []tokensv1alpha1.ApiToken) []tokensv1alpha1.ApiToken {
	var out []tokensv1alpha1.ApiToken
	for i := range items {
		if f.Matches(&items[i]) {
			out = append(out, items[i])
		}
	}
	return out
}

// IsExpiringSoon reports whether the operator set the token's
// ExpiringSoon condition to True.
func IsExpiringSoon(at *tokensv1alpha1.ApiToken) bool {
	return meta.IsStatusConditionTrue(at.Status.Conditions, tokensv1alpha1.ConditionExpiringSoon)
}

// IsInactive reports whether the token no longer verifies by its phase:
// Expired, Inactive (idle) or Revoked.
func IsInactive(at *tokensv1alpha1.ApiToken) bool {
	switch at.Status.Phase {
	case tokensv1alpha1.PhaseExpired, tokensv1alpha1.PhaseInactive, tokensv1alpha1.PhaseRevoked:
		return true
	}
	return false
}

// printTable writes tokens as kubectl's table: NAME TYPE PHASE EXPIRES
// LAST USED AGE, NAMESPACE first with -A, more columns when wide.
func printTable(w io.Writer, items []tokensv1alpha1.ApiToken, withNamespace, wide bool, now time.Time) error {
	tw := printers.GetNewTabWriter(w)
	cols := []string{"NAME", "TYPE", "PHASE", "EXPIRES", "LAST USED", "AGE"}
	if withNamespace {
		cols = append([]string{"NAMESPACE"}, cols...)
	}
	if wide {
		cols = append(cols, "AUDIENCE", "PRESENTATION", "SECRET", "CREATED BY", "DESCRIPTION")
	}
	_, _ = fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for i := range items {
		at := &items[i]
		row := []string{at.Name, string(at.Spec.Type), phaseText(at), expiresText(at, now), lastUsedText(at, now), ago(at.CreationTimestamp.Time, now)}
		if withNamespace {
			row = append([]string{at.Namespace}, row...)
		}
		if wide {
			row = append(row, orDash(string(at.Spec.Audience)), orDash(string(at.Spec.Presentation)), at.SecretName(),
				orDash(at.Annotations[tokensv1alpha1.CreatedByAnnotation]), orDash(at.Spec.Description))
		}
		_, _ = fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// phaseText is the phase, with ExpiringSoon when that condition is True.
func phaseText(at *tokensv1alpha1.ApiToken) string {
	p := string(at.Status.Phase)
	if p == "" {
		p = string(tokensv1alpha1.PhasePending)
	}
	if IsExpiringSoon(at) {
		p += " (ExpiringSoon)"
	}
	return p
}

// expiresText says when the token expires: "in 29d", "2d ago", "never";
// "-" when there is no token (pending or revoked) or none that will ever
// verify (a show-once token nobody picked up).
func expiresText(at *tokensv1alpha1.ApiToken, now time.Time) string {
	missed := func() bool { state, _ := lifecycle.Pickup(at, now); return state == lifecycle.Missed }
	switch {
	case at.Spec.Revoked || at.Status.Phase == tokensv1alpha1.PhaseRevoked || missed():
		return "-"
	case at.Status.ExpiresAt != nil:
		return relative(at.Status.ExpiresAt.Time, now)
	case at.Spec.Duration == tokensv1alpha1.Unlimited && at.Status.IssuedAt != nil:
		return "never"
	}
	return "-"
}

func lastUsedText(at *tokensv1alpha1.ApiToken, now time.Time) string {
	if at.Status.LastUsedAt == nil {
		return "never"
	}
	return relative(at.Status.LastUsedAt.Time, now)
}

// relative says "in 5m" for a future instant and "5m ago" for a past one.
func relative(t, now time.Time) string {
	if t.After(now) {
		return "in " + duration.HumanDuration(t.Sub(now))
	}
	return duration.HumanDuration(now.Sub(t)) + " ago"
}

// ago is kubectl's AGE: "5m".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(now.Sub(t))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// redact returns a copy of at, typed (apiVersion and kind set), without
// its hashes: the plugin never prints a token's hashes ("kubectl get -o
// yaml" does, for whoever may read the status). The printers drop the
// managed fields unless --show-managed-fields.
func redact(at *tokensv1alpha1.ApiToken) *tokensv1alpha1.ApiToken {
	out := at.DeepCopy()
	out.APIVersion, out.Kind = tokensv1alpha1.GroupVersion.String(), "ApiToken"
	if v := out.Status.Verification; v != nil {
		v.Hash, v.PendingHash, v.PreviousHash, v.ReplacedHash, v.RevokedHash = "", "", "", "", ""
	}
	return out
}
