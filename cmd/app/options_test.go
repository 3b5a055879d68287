package app

import (
	"flag"
	"reflect"
	"strings"
	"testing"
)

// TestValidateNamesTheFlag: each refused value is refused before anything
// starts, with an error that names its flag and exit code 2.
func TestValidateNamesTheFlag(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*Options)
		flag string
	}{
		{"token metrics", func(o *Options) { o.TokenMetrics = "some" }, "--token-metrics"},
		{"a default namespace that is no name", func(o *Options) { o.AuthDefaultNamespaces = "team-a,Team_B" }, "--auth-default-namespaces"},
		{"an identity label prefix without its /", func(o *Options) { o.AuthIdentityLabelPrefix = "tokens.apitoken.dev" }, "--auth-identity-label-prefix"},
		{"an identity label prefix that is no domain", func(o *Options) { o.AuthIdentityLabelPrefix = "Tokens_Apitoken/" }, "--auth-identity-label-prefix"},
		{"usage reporters on an auth-only replica", func(o *Options) {
			o.UsageReporters, o.EnableController = "system:serviceaccount:apitoken-system:apitoken-auth", false
		}, "--usage-reporters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := NewOptions()
			c.set(o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), c.flag) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, c.flag)
			}
			if code := logExit(err); code != exitUsage {
				t.Fatalf("exit code %d, want %d", code, exitUsage)
			}
		})
	}
	for _, ns := range []string{"", "*", "team-a, team-b"} {
		o := NewOptions()
		o.AuthDefaultNamespaces = ns
		if err := o.Validate(); err != nil {
			t.Errorf("--auth-default-namespaces=%q: %v", ns, err)
		}
	}
}

// TestAddFlagsDefaultsAreNewOptions: parsing no flags leaves the options
// as NewOptions made them, and each flag sets its own field.
func TestAddFlagsDefaultsAreNewOptions(t *testing.T) {
	parse := func(args ...string) *Options {
		o := NewOptions()
		fs := flag.NewFlagSet("manager", flag.ContinueOnError)
		o.AddFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o
	}
	if got, want := parse(), NewOptions(); !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults after parsing no flags:\n%+v\nwant\n%+v", got, want)
	}
	if o := parse("--auth-identity-label-prefix=tokens.apitoken.dev/"); o.AuthIdentityLabelPrefix != "tokens.apitoken.dev/" || o.Validate() != nil {
		t.Fatalf("--auth-identity-label-prefix: %q %v", o.AuthIdentityLabelPrefix, o.Validate())
	}
	if NewOptions().AuthIdentityLabelPrefix != "" {
		t.Fatal("identity labels are on by default")
	}
	o := parse("--namespace=ops", "--salt-secret=s", "--max-cuts=3", "--cut-window=1m", "--enable-controller=false", "--grpc-auth-bind-address=0")
	if o.Namespace != "ops" || o.SaltSecret != "s" || o.Cuts.Max != 3 || o.Cuts.Window.String() != "1m0s" || o.EnableController || o.GRPCAuthAddr != "0" {
		t.Fatalf("flags not bound to their fields: %+v", o)
	}
	if o.webhooks() || o.leaderElection() {
		t.Fatal("an auth-only replica serves webhooks or takes part in leader election")
	}
}
