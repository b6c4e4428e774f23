package origin

import (
	"net/http"
	"strings"
	"testing"
)

func req(host string, origins ...string) *http.Request {
	r := &http.Request{Method: "GET", Host: host, Header: http.Header{}}
	for _, o := range origins {
		r.Header.Add("Origin", o)
	}
	return r
}

func TestCheck(t *testing.T) {
	listed, err := Parse([]string{"https://app.example.com", "HTTP://LocalHost:3000/", "https://*.example.org", "http://[::1]:8080"})
	if err != nil {
		t.Fatal(err)
	}
	star, err := Parse([]string{"https://app.example.com", "*"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		list   *List
		host   string
		origin []string
		want   Verdict
	}{
		// Without a list: same origin or no Origin only.
		{nil, "crier.example:8080", nil, Absent},
		{nil, "crier.example:8080", []string{"http://crier.example:8080"}, Same},
		{nil, "Crier.Example:8080", []string{"http://crier.EXAMPLE:8080"}, Same},
		{nil, "crier.example", []string{"https://crier.example"}, Same}, // behind a TLS terminator
		{nil, "crier.example", []string{"https://crier.example:443"}, Same},
		{nil, "crier.example", []string{"http://crier.example"}, Same},
		{nil, "crier.example:443", []string{"https://crier.example"}, Same},
		{nil, "crier.example:8080", []string{"http://crier.example:8081"}, Refused},
		{nil, "crier.example:8080", []string{"http://evil.example:8080"}, Refused},
		{nil, "crier.example", []string{"https://crier.example:8443"}, Refused},
		{nil, "crier.example", []string{"null"}, Refused},
		{nil, "crier.example", []string{""}, Refused},
		{nil, "crier.example", []string{"https://crier.example/path"}, Refused},
		{nil, "crier.example", []string{"https://user@crier.example"}, Refused},
		{nil, "crier.example", []string{"http://crier.example", "http://evil.example"}, Refused},
		{nil, "*.example", []string{"http://*.example"}, Refused},
		{nil, "[::1]:8080", []string{"http://[::1]:8080"}, Same},
		{nil, "[::1]:8080", []string{"http://[0:0::1]:8080"}, Same},
		// A list.
		{listed, "crier.example", []string{"https://app.example.com"}, Listed},
		{listed, "crier.example", []string{"https://APP.example.com:443"}, Listed},
		{listed, "crier.example", []string{"http://app.example.com"}, Refused}, // another scheme
		{listed, "crier.example", []string{"https://app.example.com:8443"}, Refused},
		{listed, "crier.example", []string{"http://localhost:3000"}, Listed},
		{listed, "crier.example", []string{"http://localhost:3001"}, Refused},
		{listed, "crier.example", []string{"https://a.example.org"}, Listed},
		{listed, "crier.example", []string{"https://a.b.example.org"}, Listed},
		{listed, "crier.example", []string{"https://example.org"}, Refused},
		{listed, "crier.example", []string{"https://.example.org"}, Refused},
		{listed, "crier.example", []string{"https://a..example.org"}, Refused},
		{listed, "crier.example", []string{"https://evilexample.org"}, Refused},
		{listed, "crier.example", []string{"https://example.org.evil.com"}, Refused},
		{listed, "crier.example", []string{"http://a.example.org"}, Refused},
		{listed, "crier.example", []string{"https://*.example.org"}, Refused},
		{listed, "crier.example", []string{"http://[::1]:8080"}, Listed},
		{listed, "crier.example", []string{"null"}, Refused},
		{listed, "crier.example", []string{"https://crier.example"}, Same},
		// "*": anyone, but only listed origins get credentials.
		{star, "crier.example", []string{"https://app.example.com"}, Listed},
		{star, "crier.example", []string{"https://evil.example"}, Any},
		{star, "crier.example", []string{"null"}, Any},
		{star, "crier.example", nil, Absent},
	} {
		got, _ := tt.list.Check(req(tt.host, tt.origin...))
		if got != tt.want {
			t.Errorf("list %v, Host %q, Origin %q: %d, want %d", tt.list, tt.host, tt.origin, got, tt.want)
		}
		if got.Allowed() != (tt.want != Refused) {
			t.Errorf("Allowed(%d) wrong", got)
		}
	}
	if (*List)(nil).Configured() || !listed.Configured() || !star.Configured() {
		t.Error("Configured")
	}
}

func TestParseRefuses(t *testing.T) {
	for _, s := range []string{"example.com", "https://", "https://a.example/x", "https://a*.example", "https://*", "https://*.",
		"https://a.*.example", "https://a.example:0", "https://a.example:65536", "https://a.example:08", "https://a.example:",
		"https://a b.example", "1https://a.example", "https://[::1", "https://[zz]", "https://user@host", "https://a.example?q",
		"null", "**"} {
		if _, err := Parse([]string{s}); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
	for _, s := range []string{"*", "https://a.example", "https://a.example/", "http://127.0.0.1:8080", "https://*.a.example",
		"http://[2001:db8::1]", "chrome-extension://abcdef"} {
		if _, err := Parse([]string{s}); err != nil {
			t.Errorf("Parse(%q): %v", s, err)
		}
	}
}

// FuzzOrigin: parsing never panics; the canonical form of an origin is itself canonical and
// names the same origin; a list of one exact origin allows exactly the origins with its
// canonical form, and never one it does not spell.
func FuzzOrigin(f *testing.F) {
	for _, s := range []string{"https://app.example.com", "http://localhost:3000", "HTTPS://A.EXAMPLE:443", "null",
		"http://[::1]:80", "https://*.example.org", "https://a.b.example.org", "ftp://x", "https://a:b@c"} {
		f.Add(s, "https://a.example.org", "crier.example:8080")
	}
	f.Fuzz(func(t *testing.T, entry, origin, host string) {
		if c, ok := Canonical(origin); ok {
			c2, ok2 := Canonical(c)
			if !ok2 || c2 != c {
				t.Fatalf("Canonical(%q) = %q, which canonicalizes to %q, %v", origin, c, c2, ok2)
			}
		}
		l, err := Parse([]string{entry})
		if err != nil {
			return
		}
		v, _ := l.Check(req(host, origin))
		if v == Any && entry != "*" && strings.TrimSpace(entry) != "*" {
			t.Fatalf("entry %q allowed %q through *", entry, origin)
		}
		if v != Listed {
			return
		}
		co, ok := Canonical(origin)
		if !ok {
			t.Fatalf("entry %q listed %q, which is no origin", entry, origin)
		}
		ce, ok := Canonical(strings.TrimSuffix(strings.TrimSpace(entry), "/"))
		if !ok {
			t.Fatalf("entry %q does not parse but lists %q", entry, origin)
		}
		if strings.Contains(ce, "*") {
			// A wildcard: the origin ends with the entry's suffix and has the same scheme.
			scheme, rest, _ := strings.Cut(ce, "://*")
			if !strings.HasPrefix(co, scheme+"://") || !strings.HasSuffix(co, rest) || strings.Contains(co, "*") {
				t.Fatalf("wildcard %q listed %q", entry, origin)
			}
			return
		}
		if co != ce {
			t.Fatalf("entry %q (%q) listed %q (%q)", entry, ce, origin, co)
		}
	})
}
