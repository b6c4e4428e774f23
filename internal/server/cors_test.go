package server

// The origin policy end to end (SPEC section 7): CORS for the HTTP endpoints, the WebSocket
// origin check, and what "*" does and does not allow.

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/crier-push/crier/internal/config"
)

func preflight(t testing.TB, base, path, origin, method, headers string) (*http.Response, []byte) {
	t.Helper()
	h := []string{"Origin", origin, "Access-Control-Request-Method", method}
	if headers != "" {
		h = append(h, "Access-Control-Request-Headers", headers)
	}
	return rawDo(t, "OPTIONS", base+path, nil, h...)
}

// hasToken reports whether the comma-separated values of a header field hold tok.
func hasToken(res *http.Response, field, tok string) bool {
	for _, v := range res.Header.Values(field) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), tok) {
				return true
			}
		}
	}
	return false
}

func TestCORSWithoutAllowList(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	same := ts.URL // http://127.0.0.1:PORT, the Host the server is reached at
	evil := "https://evil.example"

	res, b := preflight(t, ts.URL, "/v1/channels/x", evil, "POST", "content-type")
	checkError(t, res, b, 403, "origin_not_allowed")
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("a refused preflight allows an origin")
	}
	res, _ = preflight(t, ts.URL, "/v1/channels/x", same, "POST", "content-type")
	if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != same {
		t.Fatalf("same-origin preflight: %d %v", res.StatusCode, res.Header)
	}
	// Requests from another origin are refused, not just left unreadable: a cross-site form
	// cannot publish.
	res, b = rawDo(t, "POST", ts.URL+"/v1/channels/x", []byte("x"), "Origin", evil, "Content-Type", "text/plain")
	checkError(t, res, b, 403, "origin_not_allowed")
	res, b = rawDo(t, "GET", ts.URL+"/v1/sse?channel=x", nil, "Origin", evil)
	checkError(t, res, b, 403, "origin_not_allowed")
	res, b = rawDo(t, "GET", ts.URL+"/healthz", nil, "Origin", "null")
	checkError(t, res, b, 403, "origin_not_allowed")
	if h := history(t, ts.URL, "x", ""); h.Offset != 0 {
		t.Fatal("a refused cross-origin publish went through")
	}
	// Same origin and no Origin (curl, servers) are served, without CORS fields.
	for _, o := range []string{same, ""} {
		var hdr []string
		if o != "" {
			hdr = []string{"Origin", o}
		}
		res, b = rawDo(t, "POST", ts.URL+"/v1/channels/x", []byte("x"), append(hdr, "Content-Type", "text/plain")...)
		if res.StatusCode != 201 || res.Header.Get("Access-Control-Allow-Origin") != "" || !hasToken(res, "Vary", "Origin") {
			t.Fatalf("Origin %q: %d %v %s", o, res.StatusCode, res.Header, b)
		}
	}
	healthy(t, ts.URL)
}

func TestCORSAllowList(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) {
		c.AllowOrigins = []string{"https://app.example", "https://*.example.org"}
	})
	app := "https://app.example"
	for _, o := range []string{app, "https://a.example.org"} {
		res, b := preflight(t, ts.URL, "/v1/publish", o, "POST", "authorization, content-type, idempotency-key")
		if res.StatusCode != 204 {
			t.Fatalf("preflight from %s: %d %s", o, res.StatusCode, b)
		}
		if res.Header.Get("Access-Control-Allow-Origin") != o || res.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Fatalf("preflight from %s: %v", o, res.Header)
		}
		for _, m := range []string{"GET", "POST", "DELETE"} {
			if !hasToken(res, "Access-Control-Allow-Methods", m) {
				t.Fatalf("preflight does not allow %s: %v", m, res.Header)
			}
		}
		for _, h := range []string{"Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"} {
			if !hasToken(res, "Access-Control-Allow-Headers", h) {
				t.Fatalf("preflight does not allow %s: %v", h, res.Header)
			}
		}
		if !hasToken(res, "Vary", "Origin") || res.Header.Get("Access-Control-Max-Age") == "" {
			t.Fatalf("preflight caching fields: %v", res.Header)
		}
	}
	for _, o := range []string{"https://evil.example", "http://app.example", "https://example.org", "https://app.example.evil"} {
		res, b := preflight(t, ts.URL, "/v1/publish", o, "POST", "")
		checkError(t, res, b, 403, "origin_not_allowed")
	}

	// The answers to allowed requests carry CORS, errors included.
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/x", []byte("x"), "Origin", app, "Content-Type", "text/plain")
	if res.StatusCode != 201 || res.Header.Get("Access-Control-Allow-Origin") != app ||
		res.Header.Get("Access-Control-Allow-Credentials") != "true" || !hasToken(res, "Access-Control-Expose-Headers", "Retry-After") {
		t.Fatalf("publish from %s: %d %v %s", app, res.StatusCode, res.Header, b)
	}
	res, b = rawDo(t, "GET", ts.URL+"/v1/channels/bad$", nil, "Origin", app)
	checkError(t, res, b, 400, "invalid_channel")
	if res.Header.Get("Access-Control-Allow-Origin") != app {
		t.Fatal("an error answer lacks CORS: the page cannot read why")
	}
	// The SSE head, written on the hijacked connection, carries it too.
	req, _ := http.NewRequest("GET", ts.URL+"/v1/sse?channel=x", nil)
	req.Header.Set("Origin", app)
	sres, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sres.Body.Close()
	if sres.StatusCode != 200 || sres.Header.Get("Access-Control-Allow-Origin") != app ||
		sres.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("SSE from %s: %d %v", app, sres.StatusCode, sres.Header)
	}
	if line, err := bufio.NewReader(sres.Body).ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("SSE body starts %q, %v", line, err)
	}
	healthy(t, ts.URL)
}

func TestCORSAnyOrigin(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, func(c *config.Config) {
		c.AllowOrigins = []string{"*", "https://app.example"}
		c.AnonymousSubscribe = true
	})
	tok := mint(t, "u", nil, []string{"x"})
	res, _ := preflight(t, ts.URL, "/v1/channels/x", "https://anyone.example", "POST", "authorization")
	if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != "*" || res.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("preflight under *: %d %v", res.StatusCode, res.Header)
	}
	// Anonymous reads are open to any site.
	res, b := rawDo(t, "GET", ts.URL+"/v1/channels/x/messages", nil, "Origin", "https://anyone.example")
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("anonymous read under *: %d %v %s", res.StatusCode, res.Header, b)
	}
	// A site nobody listed cannot act with the user's cookie...
	res, b = rawDo(t, "POST", ts.URL+"/v1/channels/x", []byte("x"), "Origin", "https://anyone.example", "Cookie", "crier_token="+tok)
	expectAuthError(t, res, b, 401, "unauthorized")
	// ...a listed one can, with credentials allowed.
	res, b = rawDo(t, "POST", ts.URL+"/v1/channels/x", []byte("x"), "Origin", "https://app.example", "Cookie", "crier_token="+tok)
	if res.StatusCode != 201 || res.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("cookie from a listed origin: %d %v %s", res.StatusCode, res.Header, b)
	}
	// A token the page holds itself works from anywhere.
	res, b = rawDo(t, "POST", ts.URL+"/v1/channels/x", []byte("x"), "Origin", "https://anyone.example", "Authorization", "Bearer "+tok)
	if res.StatusCode != 201 {
		t.Fatalf("bearer token under *: %d %s", res.StatusCode, b)
	}
	healthy(t, ts.URL)
}

func TestWSOrigin(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	listed := startServer(t, func(c *config.Config) { c.AllowOrigins = []string{"https://app.example"} })
	host := strings.TrimPrefix(ts.URL, "http://")
	for _, tt := range []struct {
		base, origin string
		status       int
	}{
		{ts.URL, "", 101},                         // not a browser
		{ts.URL, "http://" + host, 101},           // same origin
		{ts.URL, "https://evil.example", 403},     // another site
		{ts.URL, "null", 403},                     // a sandboxed page or a file
		{ts.URL, "http://" + host + ".evil", 403}, // a look-alike
		{listed.URL, "https://app.example", 101},  // listed
		{listed.URL, "https://evil.example", 403}, // not listed
		{listed.URL, "https://app.example:8443", 403},
	} {
		hdr := map[string]string{}
		if tt.origin != "" {
			hdr["Origin"] = tt.origin
		}
		res, body := wsHandshake(t, tt.base+"/v1/ws?channel=news", hdr)
		if res.StatusCode != tt.status {
			t.Fatalf("Origin %q: %d, want %d: %s", tt.origin, res.StatusCode, tt.status, body)
		}
		if tt.status == 403 {
			checkError(t, res, body, 403, "origin_not_allowed")
		}
	}
	// The refused handshakes subscribed nothing (the accepted ones closed already, or soon).
	eventually(t, "refused WebSocket handshakes leave no subscriber", func() bool {
		_, out := get(t, ts.URL+"/v1/channels/news")
		return out["subscribers"] == float64(0)
	})
	healthy(t, ts.URL)
}

// TestOpenServerAnswersOnlyLoopbackHosts: without auth, a request whose Host is not a loopback
// name (what a DNS-rebinding page sends) is refused; with --insecure it is served.
func TestOpenServerAnswersOnlyLoopbackHosts(t *testing.T) {
	for _, tt := range []struct {
		host     string
		insecure bool
		status   int
	}{
		{"127.0.0.1:8080", false, http.StatusOK},
		{"localhost:8080", false, http.StatusOK},
		{"[::1]:8080", false, http.StatusOK},
		{"app.localhost", false, http.StatusOK},
		{"attacker.example:8080", false, http.StatusForbidden},
		{"10.0.0.1", false, http.StatusForbidden},
		{"attacker.example:8080", true, http.StatusOK},
	} {
		ts := startServer(t, func(c *config.Config) { c.Insecure = tt.insecure })
		req, _ := http.NewRequest("GET", ts.URL+"/healthz", nil)
		req.Host = tt.host
		status, body := do(t, req)
		if status != tt.status {
			t.Errorf("Host %s (insecure %v): status %d, want %d (%v)", tt.host, tt.insecure, status, tt.status, body)
		}
		if e, _ := body["error"].(map[string]any); status == http.StatusForbidden && e["code"] != "host_not_allowed" {
			t.Errorf("Host %s: body %v, want host_not_allowed", tt.host, body)
		}
	}
}

// TestLoopbackHost pins which Host values the open server answers: loopback addresses, with or
// without a port, and localhost names; nothing that only starts or ends like one.
func TestLoopbackHost(t *testing.T) {
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.1:8080", true},
		{"127.1.2.3:80", true},
		{"[::1]", true},
		{"[::1]:8080", true},
		{"[::ffff:127.0.0.1]:80", true},
		{"localhost", true},
		{"LOCALHOST:80", true},
		{"app.localhost", true},
		{"app.LocalHost:8080", true},
		{"", false},
		{"10.0.0.1", false},
		{"[::2]:80", false},
		{"127.0.0.1.attacker.example", false},
		{"localhost.attacker.example:80", false},
		{"attacker.example", false},
		{"[fe80::1%25lo]:80", false},
		{"localhoſt", false}, // a Unicode look-alike: strings.EqualFold would take it
		{"app.localhoſt:80", false},
	} {
		if got := loopbackHost(tt.host); got != tt.want {
			t.Errorf("loopbackHost(%q) = %v, want %v", tt.host, got, tt.want)
		}
		// A host that is answered costs nothing to check: it is every request of an open server.
		// (A refused one may allocate its parse error; its 403 costs more.)
		if !tt.want || raceEnabled { // the race detector's own allocations would count
			continue
		}
		if n := testing.AllocsPerRun(10, func() { loopbackHost(tt.host) }); n != 0 {
			t.Errorf("loopbackHost(%q): %v allocations, want none", tt.host, n)
		}
	}
}

// FuzzLoopbackHost: whatever a client puts in Host, the check does not panic, and a port does
// not change its answer.
func FuzzLoopbackHost(f *testing.F) {
	for _, seed := range []string{"127.0.0.1:8080", "[::1]", "LocalHost", "app.localhost:1", "localhoſt",
		"[::ffff:127.0.0.1]:80", "[fe80::1%25lo]:80", "::1", ":", "[", "]:", "127.0.0.1.attacker.example"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got := loopbackHost(host)
		if strings.ContainsAny(host, ":[]") {
			return // a port, or an IPv6 address: a port of ours would not be one
		}
		if withPort := loopbackHost(host + ":8080"); withPort != got {
			t.Fatalf("loopbackHost(%q) = %v, but with a port %v", host, got, withPort)
		}
	})
}
