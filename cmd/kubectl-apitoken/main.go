// Command kubectl-apitoken is the kubectl plugin for apitoken-operator's
// ApiTokens. Copied onto PATH (or installed with krew), kubectl runs it as
// "kubectl apitoken".
package main

import (
	"fmt"
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/apitoken-operator/apitoken-operator/internal/plugin"
)

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	if err := plugin.NewRootCommand(streams).Execute(); err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
