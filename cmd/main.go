// Command manager runs apitoken-operator: the ApiToken reconciler (leader
// only), the admission webhooks and the auth endpoint (every replica).
// Its flags are app.Options (cmd/app/options.go); app.Setup wires the
// operator, as the envtest suite of cmd/app runs it.
package main

import (
	"flag"
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/apitoken-operator/apitoken-operator/cmd/app"
)

func main() {
	opts := app.NewOptions()
	opts.AddFlags(flag.CommandLine)
	logOpts := zap.Options{Development: false}
	logOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&logOpts)))
	os.Exit(app.Run(opts))
}
