package keepalive

import (
	"bytes"
	"errors"
	"net/http"
	"net/textproto"
	"strings"
)

// errUnsupported marks a request this package leaves to net/http: anything outside the strict
// form parseHead takes. It is never an answer: net/http reads the same bytes and answers them as
// it would have (its errors included).
var errUnsupported = errors.New("keepalive: request left to net/http")

// head is the line and header fields of one request.
type head struct {
	method        string
	target        string // origin form: the path and the query
	host          string
	header        http.Header
	contentLength int64
	close         bool // Connection: close
}

const (
	maxHeaderFields   = 100
	maxContentLenDigs = 15 // up to about a petabyte; limits are far smaller
)

var headEnd = []byte("\r\n\r\n")

// parseHead parses the request head at the start of b. n is its length through the blank line
// that ends it, or 0 when b does not hold all of it yet (nor maxBytes of it). It takes only:
//
//	method SP origin-form SP "HTTP/1.1" CRLF
//	*( field-name ":" OWS field-value OWS CRLF )
//	CRLF
//
// with exactly one Host, at most one Content-Length (digits), no Transfer-Encoding, Expect or
// Upgrade, no line folding, no bare CR or LF and no control byte but HTAB in a value. Anything
// else is errUnsupported.
func parseHead(b []byte, maxBytes int) (h head, n int, err error) {
	end := bytes.Index(b, headEnd)
	scan := b
	if end >= 0 {
		scan = b[:end+2]
	}
	if bareLF(scan) {
		// net/http takes a bare LF for a line's end: so must the wait for the head's end.
		return h, 0, errUnsupported
	}
	if end < 0 {
		if len(b) >= maxBytes {
			return h, 0, errUnsupported
		}
		return h, 0, nil
	}
	n = end + len(headEnd)
	if n > maxBytes {
		return h, 0, errUnsupported
	}
	// One string for the whole head: the fields alias it, and handlers may keep them.
	s := string(b[:end+2])
	line, s, _ := strings.Cut(s, "\r\n")
	if !h.parseRequestLine(line) {
		return h, 0, errUnsupported
	}
	fields := strings.Count(s, "\r\n")
	if fields > maxHeaderFields {
		return h, 0, errUnsupported
	}
	h.header = make(http.Header, fields)
	values := make([]string, fields) // one array for every field's []string, as net/http does
	sawLength := false
	for i := 0; s != ""; i++ {
		line, s, _ = strings.Cut(s, "\r\n")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !token(name) {
			return h, 0, errUnsupported // no colon, an empty or odd name, or a folded line
		}
		value = strings.Trim(value, " \t")
		if !fieldValue(value) {
			return h, 0, errUnsupported
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			if h.host != "" || !validHost(value) {
				return h, 0, errUnsupported
			}
			h.host = value
			continue // in Request.Host only, as net/http has it
		case "Content-Length":
			if sawLength || !digits(value) {
				return h, 0, errUnsupported
			}
			sawLength = true
			for _, c := range []byte(value) {
				h.contentLength = h.contentLength*10 + int64(c-'0')
			}
		case "Transfer-Encoding", "Expect", "Upgrade":
			return h, 0, errUnsupported
		case "Connection":
			h.close = h.close || hasToken(value, "close")
		}
		if prev := h.header[key]; prev != nil {
			h.header[key] = append(prev, value) // a repeated field; its cap of 1 makes append copy
			continue
		}
		values[i] = value
		h.header[key] = values[i : i+1 : i+1]
	}
	if h.host == "" {
		return h, 0, errUnsupported
	}
	// As net/http's fixPragmaCacheControl: HTTP/1.0's Pragma: no-cache means Cache-Control too.
	if p := h.header["Pragma"]; len(p) > 0 && p[0] == "no-cache" && h.header["Cache-Control"] == nil {
		h.header["Cache-Control"] = []string{"no-cache"}
	}
	return h, n, nil
}

// bareLF reports whether b holds an LF that no CR precedes.
func bareLF(b []byte) bool {
	for i := bytes.IndexByte(b, '\n'); i >= 0; {
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		j := bytes.IndexByte(b[i+1:], '\n')
		if j < 0 {
			return false
		}
		i += 1 + j
	}
	return false
}

// validHost reports whether a Host value is one net/http's server takes: the bytes of a
// host name, an IP literal and a port.
func validHost(v string) bool { return v != "" && alnumOr(v, "!$%&'()*+,-.:;=[]_~") }

// parseRequestLine takes "method SP origin-form SP HTTP/1.1".
func (h *head) parseRequestLine(line string) bool {
	method, rest, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || version != "HTTP/1.1" || !token(method) || target == "" || target[0] != '/' {
		return false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	h.method, h.target = method, target
	return true
}

// token reports whether s is an RFC 9110 token: a method or a field name.
func token(s string) bool { return s != "" && alnumOr(s, "!#$%&'*+-.^_`|~") }

// alnumOr reports whether every byte of s is an ASCII letter or digit, or one of extra.
func alnumOr(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// fieldValue reports whether s holds no control byte but HTAB.
func fieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func digits(s string) bool {
	if s == "" || len(s) > maxContentLenDigs {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds tok (lower case), without ASCII
// case: as net/http, which takes no Unicode look-alike ("clo\u017fe") for it.
func hasToken(v, tok string) bool {
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		if t = strings.Trim(t, " \t"); len(t) == len(tok) && asciiLowerEqual(t, tok) {
			return true
		}
	}
	return false
}

// asciiLowerEqual reports whether s, of tok's length, is tok (lower case) without ASCII case.
func asciiLowerEqual(s, tok string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != tok[i] {
			return false
		}
	}
	return true
}
