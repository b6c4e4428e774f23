// Package origin is Crier's web-origin policy (SPEC section 7): the --allow-origin list, and
// which requests' Origin it allows. The HTTP server uses it for CORS and to refuse
// cross-origin requests it does not allow; the WebSocket transport checks it before upgrading.
package origin

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// List is the --allow-origin list: the web origins, beside the server's own, whose pages
// may use Crier from a browser. The zero value (and nil) allows only same-origin requests and
// those without an Origin header (non-browser clients).
//
// An entry is an origin as browsers send it, "https://app.example.com" or
// "http://localhost:3000" (scheme and host compared without case, default ports implied, one
// trailing "/" ignored), "https://*.example.com" for every subdomain (one or more labels, not
// example.com itself), or "*" for every origin. An origin allowed only by "*" gets CORS
// without credentials, and its requests' cookies are not used as credentials: "*" lets any
// site read what anonymous users may read, never act as a logged-in user.
type List struct {
	any   bool
	exact map[string]bool
	wild  []wildOrigin
}

type wildOrigin struct {
	scheme, suffix, port string // suffix starts with '.'
}

// Verdict is what Check makes of a request's Origin.
type Verdict uint8

const (
	// Absent: no Origin header, so no browser's cross-origin request.
	Absent Verdict = iota
	// Same: the request's own origin (its Host).
	Same
	// Listed: an origin named in the list; CORS with credentials.
	Listed
	// Any: allowed only by "*"; CORS without credentials, cookies ignored.
	Any
	// Refused: another origin; answered 403 origin_not_allowed.
	Refused
)

// Allowed reports whether requests of this verdict are served.
func (v Verdict) Allowed() bool { return v != Refused }

// Parse parses the --allow-origin list.
func Parse(list []string) (*List, error) {
	o := &List{exact: map[string]bool{}}
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "*" {
			o.any = true
			continue
		}
		scheme, host, port, ok := parseOrigin(strings.TrimSuffix(s, "/"))
		if !ok {
			return nil, fmt.Errorf("%q is not an origin like https://app.example.com, https://*.example.com or *", s)
		}
		if rest, wild := strings.CutPrefix(host, "*."); wild {
			if rest == "" || strings.Contains(rest, "*") {
				return nil, fmt.Errorf("%q: * stands only for whole leading labels, as in https://*.example.com", s)
			}
			o.wild = append(o.wild, wildOrigin{scheme: scheme, suffix: "." + rest, port: port})
			continue
		}
		if strings.Contains(host, "*") {
			return nil, fmt.Errorf("%q: * stands only for whole leading labels, as in https://*.example.com", s)
		}
		o.exact[canonicalOrigin(scheme, host, port)] = true
	}
	return o, nil
}

// Configured reports whether any origin beside the server's own is allowed.
func (o *List) Configured() bool {
	return o != nil && (o.any || len(o.exact) > 0 || len(o.wild) > 0)
}

// Check classifies r's Origin header and returns it (as sent) when there is one.
func (o *List) Check(r *http.Request) (Verdict, string) {
	vals := r.Header.Values("Origin")
	if len(vals) == 0 {
		return Absent, ""
	}
	origin := vals[0]
	if len(vals) > 1 {
		return Refused, origin
	}
	scheme, host, port, ok := parseOrigin(origin)
	ok = ok && !strings.Contains(host, "*")
	switch {
	case ok && sameOrigin(scheme, host, port, r.Host):
		return Same, origin
	case ok && o.lists(scheme, host, port):
		return Listed, origin
	case o != nil && o.any:
		return Any, origin
	}
	return Refused, origin
}

func (o *List) lists(scheme, host, port string) bool {
	if o == nil {
		return false
	}
	if o.exact[canonicalOrigin(scheme, host, port)] {
		return true
	}
	for _, w := range o.wild {
		if w.scheme != scheme || w.port != port || !strings.HasSuffix(host, w.suffix) {
			continue
		}
		// One or more whole labels before the suffix, none of them empty.
		if sub := host[:len(host)-len(w.suffix)]; sub != "" && sub[0] != '.' && sub[len(sub)-1] != '.' && !strings.Contains(sub, "..") {
			return true
		}
	}
	return false
}

// sameOrigin reports whether the origin names the host the request was sent to. The Host
// header carries no scheme: a Host without a port stands for the origin scheme's default.
func sameOrigin(scheme, host, port, reqHost string) bool {
	h, p, ok := splitHost(strings.ToLower(reqHost))
	if !ok || h != host {
		return false
	}
	if p == "" {
		p = defaultPort(scheme)
	}
	if port == "" {
		port = defaultPort(scheme)
	}
	return p == port
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http", "ws":
		return "80"
	case "https", "wss":
		return "443"
	}
	return ""
}

func canonicalOrigin(scheme, host, port string) string {
	if port == "" {
		return scheme + "://" + host
	}
	return scheme + "://" + host + ":" + port
}

// Canonical returns the form an origin is compared in, or false when s is not one:
// lower case, the scheme's default port dropped.
func Canonical(s string) (string, bool) {
	scheme, host, port, ok := parseOrigin(s)
	if !ok {
		return "", false
	}
	return canonicalOrigin(scheme, host, port), true
}

// parseOrigin splits "scheme://host[:port]" (RFC 6454's serialization) into its lower-case
// parts, the port empty when absent or the scheme's default. Anything more (a path, user
// info, a query) or less is not an origin. "*" may appear in the host, for the list's
// wildcards; Check refuses it in requests.
func parseOrigin(s string) (scheme, host, port string, ok bool) {
	scheme, rest, found := strings.Cut(s, "://")
	if !found || !validScheme(scheme) || len(s) > 2048 {
		return "", "", "", false
	}
	scheme = strings.ToLower(scheme)
	host, port, ok = splitHost(strings.ToLower(rest))
	if !ok || host == "" {
		return "", "", "", false
	}
	if port == defaultPort(scheme) {
		port = ""
	}
	return scheme, host, port, true
}

func validScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// splitHost splits "host[:port]" or "[v6][:port]" (already lower case) and checks both parts:
// a host name of letters, digits, '-', '_', '.' and '*', or a bracketed IPv6 address; a port
// of 1 to 65535 in decimal, without leading zeros.
func splitHost(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", false
		}
		host, s = "["+a.String()+"]", s[end+1:]
		if s == "" {
			return host, "", true
		}
		if s[0] != ':' {
			return "", "", false
		}
		port = s[1:]
	} else {
		host, port, _ = strings.Cut(s, ":")
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_' && c != '*' {
				return "", "", false
			}
		}
		if strings.Contains(s, ":") && port == "" {
			return "", "", false
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
			return "", "", false
		}
	}
	return host, port, true
}
