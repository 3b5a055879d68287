package authserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// RevokeForwarder forwards the revocation requests an auth-only replica
// receives to an operator replica's RevokePath, with the client's
// address, authenticated with the replica's ServiceAccount token as usage
// reports are (re-read at each request, as the kubelet rotates it).
type RevokeForwarder struct {
	URL       string
	TokenFile string
	Client    *http.Client
}

// RevokeURL is the operator replicas' RevokePath beside usageURL, their
// UsagePath (--report-usage-to): the same scheme, host and port.
func RevokeURL(usageURL string) string {
	u, err := url.Parse(usageURL)
	if err != nil {
		return usageURL // refused by Forward's request, as by the reporter's
	}
	u.Path = strings.TrimSuffix(u.Path, UsagePath) + RevokePath
	u.RawPath, u.RawQuery = "", ""
	return u.String()
}

// Forward sends the request; an error: it was not recorded.
func (f *RevokeForwarder) Forward(ctx context.Context, tok, clientAddr string) error {
	sa, err := os.ReadFile(f.TokenFile)
	if err != nil {
		return fmt.Errorf("reading the ServiceAccount token: %w", err)
	}
	body, err := json.Marshal(revokeRequest{Token: &tok, Client: clientAddr})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(sa)))
	resp, err := f.Client.Do(req)
	if err != nil {
		// The error names the URL and the cause, never the body.
		return fmt.Errorf("forwarding a revocation request to %s: %w", f.URL, unwrapURLError(err))
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("forwarding a revocation request to %s: %s: %s", f.URL, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// unwrapURLError drops net/url's wrapper, which repeats the method and URL.
func unwrapURLError(err error) error {
	if ue, ok := err.(interface{ Unwrap() error }); ok && ue.Unwrap() != nil {
		return ue.Unwrap()
	}
	return err
}
