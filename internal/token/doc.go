// Package token is the pure core of apitoken-operator: it generates tokens
// in a prefixed, checksummed format, parses them, computes their keyed
// hash (HMAC-SHA512 with the operator's salt), parses and matches scopes,
// and parses durations. What a token is worth in time (its expiry, grace
// and idle deadline) is internal/lifecycle's. It imports nothing from
// Kubernetes, takes the time as an argument and never logs.
package token
