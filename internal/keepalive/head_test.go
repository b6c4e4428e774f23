package keepalive

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// headWithFields is a GET head with Host and then k-1 more fields: k fields in all.
func headWithFields(k int) string {
	var sb strings.Builder
	sb.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for i := 1; i < k; i++ {
		fmt.Fprintf(&sb, "X-F%d: v\r\n", i)
	}
	sb.WriteString("\r\n")
	return sb.String()
}

func TestParseHead(t *testing.T) {
	const post = "POST /v1/channels/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
	const get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

	tests := []struct {
		name     string
		in       string // the head, when it is accepted
		body     string // bytes after the head, which n must not count
		maxBytes int    // 0: 4096
		want     *head  // nil: n == 0, and err as below; else n == len(in)
		err      error  // with want == nil: nil for an incomplete head, or errUnsupported
	}{
		// Accepted heads.
		{
			name: "plain POST",
			in:   post, body: "hello",
			want: &head{method: "POST", target: "/v1/channels/a", host: "x", contentLength: 5,
				header: http.Header{"Content-Length": {"5"}}},
		},
		{
			name: "lower-case names are canonicalised",
			in:   "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nx-trace-id: t\r\n\r\n", body: "abc",
			want: &head{method: "POST", target: "/a", host: "x", contentLength: 3,
				header: http.Header{"Content-Length": {"3"}, "X-Trace-Id": {"t"}}},
		},
		{
			name: "OWS around values is trimmed",
			in:   "GET / HTTP/1.1\r\nHost: \t x \t\r\nContent-Length:\t7 \r\nX-A:a b\t\r\nX-B: \r\n\r\n",
			want: &head{method: "GET", target: "/", host: "x", contentLength: 7,
				header: http.Header{"Content-Length": {"7"}, "X-A": {"a b"}, "X-B": {""}}},
		},
		{
			name: "query in the target",
			in:   "GET /v1/channels/a?since=3&x=%20y HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
			want: &head{method: "GET", target: "/v1/channels/a?since=3&x=%20y", host: "example.com:8080"},
		},
		{
			// Fields share one backing array: appending the second X-A value must not
			// overwrite the value of X-B, the field after it.
			name: "repeated field",
			in:   "GET / HTTP/1.1\r\nX-A: 1\r\nX-A: 2\r\nX-B: 3\r\nHost: x\r\nX-C: 4\r\n\r\n",
			want: &head{method: "GET", target: "/", host: "x",
				header: http.Header{"X-A": {"1", "2"}, "X-B": {"3"}, "X-C": {"4"}}},
		},
		{
			name: "no Content-Length",
			in:   get, body: "GET / HTTP/1.1\r\n",
			want: &head{method: "GET", target: "/", host: "x"},
		},
		{
			name: "15-digit Content-Length",
			in:   "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999\r\n\r\n",
			want: &head{method: "PUT", target: "/", host: "x", contentLength: 999999999999999},
		},
		{
			name: "Content-Length with leading zeros",
			in:   "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\n",
			want: &head{method: "PUT", target: "/", host: "x", contentLength: 7},
		},
		{
			name: "Connection keep-alive, Close",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
			want: &head{method: "GET", target: "/", host: "x", close: true,
				header: http.Header{"Connection": {"keep-alive, Close"}}},
		},
		{
			name: "close in a second Connection field",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nconnection: close\r\n\r\n",
			want: &head{method: "GET", target: "/", host: "x", close: true},
		},
		{
			name: "Connection keep-alive",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
			want: &head{method: "GET", target: "/", host: "x"},
		},
		{
			name: "Connection closed is not close",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nConnection: closed, xclose\r\n\r\n",
			want: &head{method: "GET", target: "/", host: "x"},
		},
		{
			// net/http compares tokens ASCII-only: U+017F (ſ) folds to s under Unicode rules
			// but does not make "cloſe" close.
			name: "Connection with a non-ASCII look-alike of close",
			in:   "GET / HTTP/1.1\r\nHost: x\r\nConnection: clo\u017fe\r\n\r\n",
			want: &head{method: "GET", target: "/", host: "x"},
		},
		{
			name: "token method, obs-text in a value",
			in:   "M-SEARCH /a/b/../c HTTP/1.1\r\nHost: x\r\nX-U: caf\xc3\xa9\r\n\r\n",
			want: &head{method: "M-SEARCH", target: "/a/b/../c", host: "x",
				header: http.Header{"X-U": {"caf\xc3\xa9"}}},
		},
		{
			name: "100 fields",
			in:   headWithFields(100),
			want: &head{method: "GET", target: "/", host: "x", header: http.Header{"X-F99": {"v"}}},
		},
		{
			name: "head of exactly maxBytes", in: get, maxBytes: len(get),
			want: &head{method: "GET", target: "/", host: "x"},
		},

		// Incomplete heads: wait for more.
		{name: "empty", in: ""},
		{name: "part of the request line", in: "POST /v1/chan"},
		{name: "request line only", in: "POST /v1/channels/a HTTP/1.1\r\n"},
		{name: "ends in a field", in: post[:len(post)-4]},
		{name: "ends in CRLF", in: post[:len(post)-2]},
		{name: "ends in CRLF CR", in: post[:len(post)-1]},
		{name: "one byte under maxBytes", in: post[:len(post)-1], maxBytes: len(post)},

		// Too long.
		{name: "incomplete at maxBytes", in: post[:len(post)-1], maxBytes: len(post) - 1, err: errUnsupported},
		{name: "incomplete past maxBytes", in: post[:len(post)-1], maxBytes: 8, err: errUnsupported},
		{name: "head over maxBytes", in: post, maxBytes: len(post) - 1, err: errUnsupported},

		// Request lines left to net/http.
		{name: "HTTP/1.0", in: "GET / HTTP/1.0\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "HTTP/2.0", in: "GET / HTTP/2.0\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "lower-case version", in: "GET / http/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "absolute-form target", in: "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "asterisk target", in: "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "authority target", in: "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "space in the target", in: "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "tab in the target", in: "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "control byte in the target", in: "GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "DEL in the target", in: "GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "non-ASCII in the target", in: "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "empty method", in: " / HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "method with a slash", in: "GE/T / HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "no target", in: "GET HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "method only", in: "GET\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "empty request line", in: "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "two spaces", in: "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "two spaces before the version", in: "GET /  HTTP/1.1\r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "trailing space", in: "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "bare LF after the request line", in: "GET / HTTP/1.1\nHost: x\r\n\r\n", err: errUnsupported},
		// net/http takes LF alone as a line's end: these are whole requests to it, and waiting
		// for a CRLFCRLF that never comes would leave the client without an answer.
		{name: "LF line ends", in: "GET / HTTP/1.1\nHost: x\n\n", err: errUnsupported},
		{name: "LF ending the head", in: "GET / HTTP/1.1\r\nHost: x\r\n\n", err: errUnsupported},
		{name: "LF ending the last field", in: "GET / HTTP/1.1\r\nHost: x\n\r\n", err: errUnsupported},

		// Fields left to net/http.
		{name: "no Host", in: "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", err: errUnsupported},
		{name: "no fields", in: "GET / HTTP/1.1\r\n\r\n", err: errUnsupported},
		{name: "two Host fields", in: "GET / HTTP/1.1\r\nHost: x\r\nhost: x\r\n\r\n", err: errUnsupported},
		{name: "empty Host", in: "GET / HTTP/1.1\r\nHost: \t\r\n\r\n", err: errUnsupported},
		{name: "empty Host then Host", in: "GET / HTTP/1.1\r\nHost:\r\nHost: x\r\n\r\n", err: errUnsupported},
		// net/http's server answers 400 to a Host with a byte outside httpguts.ValidHostHeader.
		{name: "space in Host", in: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", err: errUnsupported},
		{name: "slash in Host", in: "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", err: errUnsupported},
		{name: "non-ASCII Host", in: "GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", err: errUnsupported},
		{name: "two Content-Length fields", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", err: errUnsupported},
		{name: "two equal Content-Length fields", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n", err: errUnsupported},
		{name: "Content-Length list", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n", err: errUnsupported},
		{name: "empty Content-Length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", err: errUnsupported},
		{name: "non-digit Content-Length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n", err: errUnsupported},
		{name: "plus-signed Content-Length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", err: errUnsupported},
		{name: "negative Content-Length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", err: errUnsupported},
		{name: "16-digit Content-Length", in: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\n", err: errUnsupported},
		{name: "Transfer-Encoding", in: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", err: errUnsupported},
		{name: "Transfer-Encoding identity", in: "POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: identity\r\nContent-Length: 1\r\n\r\n", err: errUnsupported},
		{name: "Expect", in: "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", err: errUnsupported},
		{name: "Upgrade", in: "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", err: errUnsupported},
		{name: "folded line, space", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", err: errUnsupported},
		{name: "folded line, tab", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\t2\r\n\r\n", err: errUnsupported},
		{name: "first field folded", in: "GET / HTTP/1.1\r\n Host: x\r\n\r\n", err: errUnsupported},
		{name: "field without colon", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", err: errUnsupported},
		{name: "empty field name", in: "GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n", err: errUnsupported},
		{name: "space before the colon", in: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", err: errUnsupported},
		{name: "space in a field name", in: "GET / HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n", err: errUnsupported},
		{name: "bare LF in the head", in: "GET / HTTP/1.1\r\nHost: x\nFoo: y\r\n\r\n", err: errUnsupported},
		{name: "bare LF ending a field", in: "GET / HTTP/1.1\r\nFoo: y\nHost: x\r\n\r\n", err: errUnsupported},
		{name: "bare CR in a value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", err: errUnsupported},
		{name: "bare CR ending a value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\r\n\r\n", err: errUnsupported},
		{name: "NUL in a value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", err: errUnsupported},
		{name: "DEL in a value", in: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", err: errUnsupported},
		{name: "NUL in Host", in: "GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n", err: errUnsupported},
		{name: "101 fields", in: headWithFields(101), err: errUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxBytes := tt.maxBytes
			if maxBytes == 0 {
				maxBytes = 4096
			}
			h, n, err := parseHead([]byte(tt.in+tt.body), maxBytes)
			if tt.want == nil {
				if n != 0 || !errors.Is(err, tt.err) { // errors.Is(err, nil) means err == nil
					t.Fatalf("parseHead(%q) = n %d, err %v; want n 0, err %v", tt.in, n, err, tt.err)
				}
				return
			}
			if n != len(tt.in) || err != nil {
				t.Fatalf("parseHead(%q) = n %d, err %v; want n %d, err nil", tt.in+tt.body, n, err, len(tt.in))
			}
			w := tt.want
			if h.method != w.method || h.target != w.target || h.host != w.host ||
				h.contentLength != w.contentLength || h.close != w.close {
				t.Errorf("parseHead(%q) = method %q target %q host %q contentLength %d close %v;\n"+
					"want method %q target %q host %q contentLength %d close %v", tt.in,
					h.method, h.target, h.host, h.contentLength, h.close,
					w.method, w.target, w.host, w.contentLength, w.close)
			}
			for k, v := range w.header {
				if got := h.header[k]; !reflect.DeepEqual(got, v) {
					t.Errorf("header[%q] = %q; want %q", k, got, v)
				}
			}
		})
	}
}

// TestParseHeadAppend checks that a handler adding to a field of the head it was given does not
// overwrite the value of another field: they share one array.
func TestParseHeadAppend(t *testing.T) {
	h, _, err := parseHead([]byte("GET / HTTP/1.1\r\nX-A: 1\r\nX-B: 2\r\nHost: x\r\n\r\n"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	h.header.Add("X-A", "1b")
	h.header["X-B"] = append(h.header["X-B"], "2b")
	for k, want := range map[string][]string{"X-A": {"1", "1b"}, "X-B": {"2", "2b"}} {
		if got := h.header[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("header[%q] = %q; want %q", k, got, want)
		}
	}
}

// TestParseHeadHostNotInHeader checks that Host is not among the fields: the head's header
// becomes the Request's Header, and net/http promotes Host to Request.Host and removes it.
func TestParseHeadHostNotInHeader(t *testing.T) {
	h, _, err := parseHead([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if h.host != "x" || h.header["Host"] != nil {
		t.Errorf("host %q, header %q; want host \"x\" and no Host field", h.host, h.header)
	}
}

// TestParseHeadOwnsFields checks that the head does not alias b: the caller reuses its buffer
// while handlers may keep the fields.
func TestParseHeadOwnsFields(t *testing.T) {
	b := []byte("POST /a?b HTTP/1.1\r\nHost: x\r\nX-A: y\r\nContent-Length: 0\r\n\r\n")
	h, _, err := parseHead(b, 4096)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if h.method != "POST" || h.target != "/a?b" || h.host != "x" || h.header.Get("X-A") != "y" {
		t.Errorf("after clearing b: %+v", h)
	}
}

func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"POST /v1/channels/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"GET /a?b=c HTTP/1.1\r\nhost: example.com:80\r\nconnection: keep-alive, close\r\n\r\n",
		"GET / HTTP/1.1\r\nX-A: 1\r\nX-A: 2\r\nX-B: \t3 \r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n",
		"PUT /%41 HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 007\r\nPragma: no-cache\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: clo\u017fe\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\nFoo: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: 1\r\n 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"\r\n\r\n",
		headWithFields(100),
	} {
		f.Add([]byte(s), uint16(4096))
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, b []byte, limit uint16) {
		maxBytes := int(limit)
		h, n, err := parseHead(b, maxBytes)
		if err != nil {
			if !errors.Is(err, errUnsupported) || n != 0 {
				t.Fatalf("n %d, err %v; want n 0 with errUnsupported", n, err)
			}
			return
		}
		if n == 0 {
			// Incomplete: no blank line yet, and fewer than maxBytes bytes.
			if bytes.Contains(b, headEnd) || len(b) >= maxBytes {
				t.Fatalf("n 0, err nil for %d bytes (maxBytes %d) holding CRLFCRLF %v",
					len(b), maxBytes, bytes.Contains(b, headEnd))
			}
			// Nor may it wait for more of a request net/http already has whole: the client
			// would wait for its answer as long. net/http, reading a connection, sees lines
			// only once their LF has come.
			lines := b[:bytes.LastIndexByte(b, '\n')+1]
			if _, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(lines))); err == nil {
				t.Fatalf("waits for more of %q, a whole request to net/http", b)
			}
			return
		}

		// The head's bounds.
		if n > len(b) || n > maxBytes {
			t.Fatalf("n %d, len(b) %d, maxBytes %d", n, len(b), maxBytes)
		}
		if !bytes.HasSuffix(b[:n], headEnd) || bytes.Index(b, headEnd)+len(headEnd) != n {
			t.Fatalf("n %d does not end at the first CRLFCRLF of %q", n, b)
		}
		for _, k := range []int{0, n - 3, n - 2, n - 1} { // ends in \r, \r\n, \r\n\r
			if _, pn, perr := parseHead(b[:k], maxBytes); pn != 0 || perr != nil {
				t.Fatalf("prefix %q of an accepted head: n %d, err %v; want 0, nil", b[:k], pn, perr)
			}
		}

		// The head's fields.
		if h.host == "" {
			t.Fatal("empty host")
		}
		if line := h.method + " " + h.target + " HTTP/1.1\r\n"; !bytes.HasPrefix(b, []byte(line)) {
			t.Fatalf("request line %q is not a prefix of %q", line, b)
		}
		if h.contentLength < 0 {
			t.Fatalf("contentLength %d", h.contentLength)
		}
		for k, vv := range h.header {
			if k != textproto.CanonicalMIMEHeaderKey(k) {
				t.Fatalf("header key %q is not canonical", k)
			}
			for _, v := range vv {
				if strings.ContainsAny(v, "\r\n") || strings.Trim(v, " \t") != v {
					t.Fatalf("header %q value %q", k, v)
				}
			}
		}

		// The head must not alias b.
		want := h
		again := bytes.Clone(b)
		clear(b)
		if h, _, _ := parseHead(again, maxBytes); !reflect.DeepEqual(h, want) {
			t.Fatalf("after clearing b, head %+v; parsed again %+v", want, h)
		}

		// net/http is the reference for what is accepted. The caller parses the target with
		// url.ParseRequestURI and leaves any it refuses (e.g. "/%zz") to net/http, so those are
		// not compared here.
		if _, err := url.ParseRequestURI(h.target); err != nil {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(again[:n])))
		if err != nil {
			t.Fatalf("net/http refuses %q: %v", again[:n], err)
		}
		if r.Method != h.method || r.RequestURI != h.target || r.Host != h.host ||
			r.ContentLength != h.contentLength || r.Close != h.close {
			t.Fatalf("for %q\nnet/http: method %q target %q host %q contentLength %d close %v\n"+
				"parseHead: method %q target %q host %q contentLength %d close %v", again[:n],
				r.Method, r.RequestURI, r.Host, r.ContentLength, r.Close,
				h.method, h.target, h.host, h.contentLength, h.close)
		}
		// Header is the Request's Header, as net/http's: Host moved to Request.Host, and
		// Cache-Control: no-cache added for a Pragma: no-cache without it.
		if !reflect.DeepEqual(map[string][]string(r.Header), map[string][]string(h.header)) {
			t.Fatalf("for %q\nnet/http header %q\nparseHead header %q", again[:n], r.Header, h.header)
		}
		// ReadRequest leaves the Host check to http.Server, which answers 400 to one it deems
		// malformed.
		if !validHostHeader(h.host) {
			t.Fatalf("net/http's server refuses Host %q", h.host)
		}
	})
}

// validHostHeader is httpguts.ValidHostHeader, which http.Server applies to the Host field,
// written from its table of allowed bytes.
func validHostHeader(h string) bool {
	const allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + "!$%&'()*+,-.:;=[]_~"
	return strings.IndexFunc(h, func(r rune) bool { return !strings.ContainsRune(allowed, r) }) < 0
}
