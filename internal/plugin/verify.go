package plugin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/apitoken-operator/apitoken-operator/internal/lifecycle"
	"github.com/apitoken-operator/apitoken-operator/internal/token"
)

// defaultAudience is what verify asks for without --audience: an
// ApiToken's default audience.
const defaultAudience = string(lifecycle.DefaultAudience)

// The auth endpoint's Service as config/ deploys it.
const (
	defaultService   = "apitoken-system/apitoken-operator-auth:8082"
	defaultCASecret  = "apitoken-operator-auth-cert"
	tokenReviewPath  = "/v1/tokenreview"
	maxResponseBytes = 1 << 20
)

type verifyOptions struct {
	*rootOptions
	printFlags *genericclioptions.PrintFlags

	url       string
	service   string
	scheme    string
	audiences []string
	caFile    string
	caSecret  string
	insecure  bool
	timeout   time.Duration
}

func newVerifyCommand(root *rootOptions) *cobra.Command {
	o := &verifyOptions{rootOptions: root, printFlags: genericclioptions.NewPrintFlags("").WithTypeSetter(scheme)}
	cmd := &cobra.Command{
		Use:   "verify [--url URL | --service NAMESPACE/NAME:PORT]",
		Short: "Ask the auth endpoint whose token is on stdin (prints the identity, never the token)",
		Long: `Read a token from stdin and ask the operator's auth endpoint about it with a
TokenReview (POST /v1/tokenreview). Prints the identity the endpoint
answers (user apitoken:<namespace>:<name>, groups, audiences) and never
the token; exits non-zero when the token is not valid. A string that is
not a token at all (wrong prefix, length or checksum) is refused here and
never sent.

Where the endpoint is:
  --url URL           an endpoint you can reach, e.g. http://localhost:8082 (make run)
  --service NS/NAME:PORT
                      port-forward through the API server to a ready pod of
                      that Service (default ` + defaultService + `),
                      over HTTPS as config/ serves it (--scheme http if not)

TLS: --certificate-authority FILE trusts that CA; with --service and no
FILE, the CA is read from Secret ` + defaultCASecret + ` (ca.crt) in the
Service's namespace when you may read it (--ca-secret). For this command
--certificate-authority and --insecure-skip-tls-verify apply to the auth
endpoint; the API server's TLS comes from the kubeconfig.

The token must be valid for one of the --audience names, by default
content-api (the default audience of an ApiToken): for a token of another
audience, name its own (kubectl get apitoken NAME -o
jsonpath='{.spec.audience}'). A TokenReview that names no audience asks
for the Kubernetes API server's audiences, which only a token of audience
kubernetes passes, so verify always names one.`,
		Example: `  # Against make run's endpoint
  kubectl apitoken reveal read-only | kubectl apitoken verify --url http://localhost:8082

  # Through the API server to the deployed endpoint (port-forward)
  kubectl apitoken reveal ci-reader -n team-a | kubectl apitoken verify

  # A token of audience kubernetes (one the API server accepts)
  kubectl apitoken reveal kube-reader -n team-a | kubectl apitoken verify --audience kubernetes

  # A token kept in a file, for the billing-api audience, as JSON
  kubectl apitoken verify --url https://auth.example.com --certificate-authority ca.crt \
      --audience billing-api -o json < token.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.url, "url", "", "the auth endpoint's base URL, e.g. http://localhost:8082")
	f.StringVar(&o.service, "service", "", "the auth endpoint's Service as NAMESPACE/NAME:PORT, reached by port-forward (default "+defaultService+")")
	f.StringVar(&o.scheme, "scheme", "https", "with --service: https or http")
	f.StringSliceVar(&o.audiences, "audience", []string{defaultAudience}, "audiences the token must be valid for (spec.audiences of the TokenReview): the token's own")
	// These shadow kubectl's global flags of the same names: for verify
	// they are about the auth endpoint (see Long).
	f.StringVar(&o.caFile, "certificate-authority", "", "a CA file (PEM) to trust for the auth endpoint")
	f.BoolVar(&o.insecure, "insecure-skip-tls-verify", false, "do not check the auth endpoint's certificate (insecure)")
	f.StringVar(&o.caSecret, "ca-secret", defaultCASecret, "with --service: the Secret whose ca.crt the endpoint's certificate is checked against")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the endpoint")
	o.printFlags.AddFlags(cmd)
	return cmd
}

func (o *verifyOptions) run(cmd *cobra.Command) error {
	if o.url != "" && o.service != "" {
		return errors.New("--url and --service name two endpoints: give one")
	}
	var printer printers.ResourcePrinter
	if *o.printFlags.OutputFormat != "" {
		var err error
		if printer, err = o.printFlags.ToPrinter(); err != nil {
			return err
		}
	}
	tok, err := o.readToken()
	if err != nil {
		return err
	}
	if err := token.Parse(tok); err != nil {
		// The error never contains the input.
		return fmt.Errorf("the input is not an apitoken-operator token, so it was not sent: %w", err)
	}

	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	base, tlsConfig, stop, err := o.endpoint(ctx)
	if err != nil {
		return err
	}
	defer stop()

	review, err := postTokenReview(ctx, base, tlsConfig, tok, o.audiences)
	if err != nil {
		return err
	}
	if !review.Status.Authenticated {
		reason := review.Status.Error
		if reason == "" {
			reason = "not authenticated"
		}
		if !cmd.Flags().Changed("audience") && strings.Contains(reason, "audience") {
			reason += " (verify asks for audience " + defaultAudience + ": give the token's own with --audience)"
		}
		return fmt.Errorf("the token is not valid: %s", reason)
	}
	if printer != nil {
		return printer.PrintObj(review, o.streams.Out)
	}
	return printIdentity(o.streams.Out, &review.Status)
}

// readToken reads one token from stdin: the first line, trimmed. From a
// terminal it asks for it without echo.
func (o *verifyOptions) readToken() (string, error) {
	in := o.streams.In
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		_, _ = fmt.Fprint(o.streams.ErrOut, "Token (not echoed): ")
		b, err := term.ReadPassword(int(f.Fd()))
		_, _ = fmt.Fprintln(o.streams.ErrOut)
		if err != nil {
			return "", fmt.Errorf("reading the token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the token from stdin: %w", err)
	}
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", errors.New("no token on stdin: pipe one in, e.g. 'kubectl apitoken reveal NAME | kubectl apitoken verify'")
	}
	return tok, nil
}

// endpoint returns the base URL to ask and the TLS settings for it; stop
// ends a port-forward, if one was started.
func (o *verifyOptions) endpoint(ctx context.Context) (base *url.URL, tlsConfig *tls.Config, stop func(), err error) {
	stop = func() {}
	tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.insecure} //nolint:gosec // only with --insecure-skip-tls-verify
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, nil, stop, fmt.Errorf("--certificate-authority: %w", err)
		}
		if tlsConfig.RootCAs, err = certPool(pem); err != nil {
			return nil, nil, stop, fmt.Errorf("--certificate-authority %s: %w", o.caFile, err)
		}
	}
	if o.url != "" {
		u, err := url.Parse(o.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, nil, stop, fmt.Errorf("--url %q: must be an http:// or https:// URL, e.g. http://localhost:8082", o.url)
		}
		return u, tlsConfig, stop, nil
	}

	if o.scheme != "http" && o.scheme != "https" {
		return nil, nil, stop, fmt.Errorf("--scheme %q: must be https or http", o.scheme)
	}
	svc := o.service
	if svc == "" {
		svc = defaultService
	}
	ref, err := parseServiceRef(svc)
	if err != nil {
		return nil, nil, stop, err
	}
	s, err := o.connect()
	if err != nil {
		return nil, nil, stop, err
	}
	if o.service == "" {
		// The default names the Service config/ and the chart deploy: with
		// none (make run), say where the endpoint is instead of naming the
		// CA Secret or port-forward it would have used.
		if err := defaultServiceExists(ctx, s, ref); err != nil {
			return nil, nil, stop, err
		}
	}
	if o.scheme == "https" && !o.insecure && o.caFile == "" {
		if tlsConfig.RootCAs, err = caFromSecret(ctx, s, ref.namespace, o.caSecret); err != nil {
			return nil, nil, stop, fmt.Errorf("%w; or give --certificate-authority FILE (or --insecure-skip-tls-verify)", err)
		}
	}
	// The certificate names the Service, not 127.0.0.1.
	tlsConfig.ServerName = ref.name + "." + ref.namespace + ".svc"
	local, stop, err := portForward(ctx, s, ref, o.streams.ErrOut)
	if err != nil {
		return nil, nil, func() {}, err
	}
	return &url.URL{Scheme: o.scheme, Host: local}, tlsConfig, stop, nil
}

// defaultServiceExists refuses the default Service when it does not exist,
// naming --url for an operator that runs outside the cluster (make run).
// Any other error is left to the port-forward, which names it.
func defaultServiceExists(ctx context.Context, s *session, ref serviceRef) error {
	_, err := s.kube.CoreV1().Services(ref.namespace).Get(ctx, ref.name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("finding the auth endpoint: %w: no operator is deployed with its Service here; "+
		"for one that runs on this machine (make run) give its address: --url http://localhost:8082", describe(err, "get", "services", ref.namespace, ref.name))
}

// caFromSecret reads ca.crt from the Secret ns/name.
func caFromSecret(ctx context.Context, s *session, ns, name string) (*x509.CertPool, error) {
	sec, err := s.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the auth endpoint's CA: %w", describe(err, "get", "secrets", ns, name))
	}
	pool, err := certPool(sec.Data["ca.crt"])
	if err != nil {
		return nil, fmt.Errorf("the ca.crt of secret %q in namespace %s: %w", name, ns, err)
	}
	return pool, nil
}

func certPool(pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// postTokenReview POSTs a TokenReview for tok to base's /v1/tokenreview
// (base's own path, if any, comes first) and returns the answer, with the
// token removed from it.
func postTokenReview(ctx context.Context, base *url.URL, tlsConfig *tls.Config, tok string, audiences []string) (*authnv1.TokenReview, error) {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + tokenReviewPath
	u.RawQuery = ""
	body, err := json.Marshal(&authnv1.TokenReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"},
		Spec:     authnv1.TokenReviewSpec{Token: tok, Audiences: audiences},
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment}}
	resp, err := client.Do(req)
	if err != nil {
		// The request's error names the URL, never the body.
		return nil, fmt.Errorf("asking the auth endpoint: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the auth endpoint's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the auth endpoint answered %s at %s: %s", resp.Status, u.String(), strings.TrimSpace(string(data)))
	}
	review := &authnv1.TokenReview{}
	if err := json.Unmarshal(data, review); err != nil {
		return nil, fmt.Errorf("the auth endpoint's answer at %s is not a TokenReview: %w", u.String(), err)
	}
	review.Spec = authnv1.TokenReviewSpec{}
	return review, nil
}

// printIdentity writes the identity of an authenticated review.
func printIdentity(w io.Writer, st *authnv1.TokenReviewStatus) error {
	var b strings.Builder
	b.WriteString("Authenticated: true\n")
	fmt.Fprintf(&b, "User:          %s\n", st.User.Username)
	if st.User.UID != "" {
		fmt.Fprintf(&b, "UID:           %s\n", st.User.UID)
	}
	b.WriteString("Groups:")
	for i, g := range st.User.Groups {
		if i == 0 {
			fmt.Fprintf(&b, "        %s\n", g)
		} else {
			fmt.Fprintf(&b, "               %s\n", g)
		}
	}
	if len(st.User.Groups) == 0 {
		b.WriteString("        -\n")
	}
	fmt.Fprintf(&b, "Audiences:     %s\n", orDash(strings.Join(st.Audiences, ", ")))
	_, err := io.WriteString(w, b.String())
	return err
}
