package authserver

import (
	"net/url"
	"strings"
)

// normalPath checks the original request-target a proxy reported and
// returns its path, percent-decoded. The target is a path ("/api/a?q",
// nginx's $request_uri, Traefik's and Caddy's X-Forwarded-Uri, Envoy's
// :path) or an absolute http(s) URL (ingress-nginx's X-Original-URL); the
// query is dropped.
//
// Anything an upstream might read differently from us is refused, never
// guessed at: dot segments, empty segments (except one trailing slash),
// a backslash, ';' path parameters, a fragment, control characters,
// spaces or raw non-ASCII bytes, and percent-encodings of '/', '\', '.',
// ';', '%' or control characters. problem names what was wrong.
func normalPath(target string) (path, problem string) {
	p := target
	if scheme, rest, ok := strings.Cut(p, "://"); ok && !strings.Contains(scheme, "/") {
		if !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
			return "", "is an absolute URL with scheme " + quoted(scheme) + ", not http or https"
		}
		i := strings.IndexAny(rest, "/?")
		host := rest
		if i >= 0 {
			host, p = rest[:i], rest[i:]
		} else {
			p = "/"
		}
		if host == "" || strings.ContainsAny(host, "\\@%#;\"' \t") || hasControl(host) {
			return "", "has a malformed host"
		}
		if p[0] == '?' {
			p = "/" + p
		}
	}
	if p, _, _ = strings.Cut(p, "?"); p == "" {
		return "", "is empty"
	}
	if p[0] != '/' {
		return "", "is not a path starting with /"
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f:
			return "", "contains a control character"
		case c >= 0x80:
			return "", "contains a raw non-ASCII byte (percent-encode it)"
		case c == ' ':
			return "", "contains a space"
		case c == '\\':
			return "", `contains a backslash`
		case c == ';':
			return "", "contains ';' (path parameters are not accepted)"
		case c == '#':
			return "", "contains a fragment"
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", "has a malformed percent-encoding"
			}
			switch d := unhex(p[i+1])<<4 | unhex(p[i+2]); {
			case d == '/' || d == '\\' || d == '.' || d == ';' || d == '%':
				return "", "contains an encoded " + quoted(string(rune(d))) + " (" + p[i:i+3] + ")"
			case d < 0x20 || d == 0x7f:
				return "", "contains an encoded control character (" + p[i:i+3] + ")"
			}
			i += 2
		}
	}
	for rest := p[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "." || seg == "..":
			return "", "has a dot segment (" + seg + ")"
		case seg == "" && more:
			return "", "has an empty segment (//)"
		}
		if !more {
			break
		}
		rest = tail
	}
	decoded, err := url.PathUnescape(p)
	if err != nil {
		return "", "has a malformed percent-encoding"
	}
	return decoded, ""
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
