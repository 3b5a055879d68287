package authserver

import (
	"net/url"
	"strings"
)

// normalPath checks the original request-target a proxy reported and
// returns its path, percent-decoded. The target is a path ("/api/a?q",
// nginx's $request_uri, Traefik's and Caddy's X-Forwarded-Uri, Envoy's
// :path) or an absolute http(s) URL (ingress-nginx's X-Original-URL); the
// query is dropped once it is known to hold no method override
// (queryMethodOverride).
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
	p, query, _ := strings.Cut(p, "?")
	if p == "" {
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
	if problem := queryMethodOverride(query); problem != "" {
		return "", problem
	}
	decoded, err := url.PathUnescape(p)
	if err != nil {
		return "", "has a malformed percent-encoding"
	}
	return decoded, ""
}

// queryMethodOverride names the first parameter of a raw query that is a
// method override (methodOverride), or "". A parameter's name is read as
// the frameworks read it: split on '&' and ';' (Rack 2, older Python),
// percent-decoded with '+' for a space, up to a '[' (PHP and Rack read
// a[...] as a), and also as PHP reads it, with leading spaces dropped and
// '.' and ' ' as '_' (PHP's $_GET['_method'] for ?.method=).
func queryMethodOverride(query string) string {
	for query != "" {
		var kv string
		if i := strings.IndexAny(query, "&;"); i >= 0 {
			kv, query = query[:i], query[i+1:]
		} else {
			kv, query = query, ""
		}
		name, _, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(name, "%+") {
			if u, err := url.QueryUnescape(name); err == nil {
				name = u
			}
		}
		if hasCtl(name) {
			// PHP cuts a name at a NUL (?_method%00=DELETE is its
			// $_GET['_method']); frameworks disagree on the rest.
			return "has a query parameter whose name holds a control character, which is refused: an upstream may read it as another parameter"
		}
		name, _, _ = strings.Cut(name, "[")
		php := strings.TrimLeft(name, " ")
		if strings.ContainsAny(php, ". ") {
			php = strings.Map(func(r rune) rune {
				if r == '.' || r == ' ' {
					return '_'
				}
				return r
			}, php)
		}
		what := "has the query parameter " + quoted(name) + ", which"
		if problem := methodOverrideRefused(what, name); problem != "" {
			return problem
		}
		if o := methodOverride(php); o != "" {
			return what + " is refused: an upstream may read it as " + o
		}
	}
	return ""
}

// hasCtl reports whether s holds an ASCII control character (NUL to US,
// or DEL).
func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
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
