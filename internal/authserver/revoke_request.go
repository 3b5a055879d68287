package authserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
)

// readRevokeRequest reads r's body: one JSON object with a token, and a
// client address only when forwarded. code != 0: refused, with msg.
func readRevokeRequest(w http.ResponseWriter, r *http.Request, forwarded bool) (req revokeRequest, code int, msg string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRevokeBody))
	if err == nil {
		err = exactKeys(body, "token", "client")
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&req)
		if err == nil && dec.More() {
			err = errors.New("more than one object")
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return req, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over %d bytes", maxRevokeBody)
	case err != nil || req.Token == nil:
		return req, http.StatusBadRequest, "the body must be one JSON object: {\"token\": \"...\"}"
	case forwarded != (req.Client != ""):
		return req, http.StatusBadRequest, "the body must be one JSON object: {\"token\": \"...\"}"
	}
	if forwarded {
		addr, err := netip.ParseAddr(req.Client)
		if err != nil {
			return req, http.StatusBadRequest, "a forwarded request names its client by IP address"
		}
		req.Client = addr.String()
	}
	return req, 0, ""
}

// exactKeys fails unless body is a JSON object whose keys are among
// allowed, spelt exactly so and each once: encoding/json matches keys
// regardless of case and keeps the last of a repeated one, so that a
// proxy or WAF in front could read another token than the one revoked.
func exactKeys(body []byte, allowed ...string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		key, ok := t.(string)
		if err != nil || !ok || !slices.Contains(allowed, key) || seen[key] {
			return errors.New("a key that is not the request's, or one named twice")
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}
