package server

// GET /v1/iframe?callback=NAME: script streaming in a hidden iframe (SPEC section 5).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/transport/iframe"
)

// scriptRE is one call of the iframe: <script>parent.NAME(JSON);</script> and a line feed.
var scriptRE = regexp.MustCompile(`^<script>parent\.([A-Za-z0-9_$.]+)\((.*)\);</script>\n$`)

// openIframe subscribes over a raw connection and reads the head and the prelude.
func openIframe(t testing.TB, base, query string) *rawConn {
	t.Helper()
	c := rawGet(t, base, "/v1/iframe?"+query)
	checkStreamHead(t, c, "text/html; charset=utf-8")
	c.expect(string(iframe.Prelude))
	return c
}

// nextCall reads the next script call, skipping heartbeat comments; it checks the callback and
// returns the envelope's JSON as written.
func nextCall(t testing.TB, c *rawConn, callback string) string {
	t.Helper()
	for {
		line := c.until("\n")
		if line == "<!---->\n" {
			continue
		}
		m := scriptRE.FindStringSubmatch(line)
		if m == nil || m[1] != callback {
			t.Fatalf("not a call of %s: %q", callback, line)
		}
		return m[2]
	}
}

// scriptSafe is what the iframe must make of JSON: <, >, &, U+2028, U+2029 escaped.
func scriptSafe(s string) string {
	return strings.NewReplacer("<", `\u003c`, ">", `\u003e`, "&", `\u0026`, "\u2028", `\u2028`, "\u2029", `\u2029`).Replace(s)
}

func TestIframeFraming(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	if len(iframe.Prelude) < 2048 || !strings.Contains(string(iframe.Prelude), "<!--") {
		t.Fatalf("prelude of %d bytes", len(iframe.Prelude))
	}
	first := mustPublish(t, ts.URL, "ifr", "text/plain", "before")
	c := openIframe(t, ts.URL, "channel=ifr&callback=app.feed.push")
	subscriberCount(t, ts.URL, "ifr", 1)
	bodies := []struct{ ct, body string }{
		{"text/plain", "</script><script>alert(1)</script><!-- & \u2028\u2029 >"},
		{"application/json", `{"html":"</script>","amp":"&amp;","ls":"` + "\u2028" + `"}`},
		{"", "\x00<>"},
	}
	for i, b := range bodies {
		mustPublish(t, ts.URL, "ifr", b.ct, b.body)
		env := histEnvelope(t, ts.URL, "ifr", first.Epoch, uint64(i+2))
		want := "<script>parent.app.feed.push(" + scriptSafe(env) + ");</script>\n"
		c.expect(want)
		if strings.ContainsAny(want[len("<script>"):len(want)-len("</script>\n")], "<>&\u2028\u2029") {
			t.Fatalf("unescaped in %q", want)
		}
		// The JSON is the same value.
		var a, b any
		_ = json.Unmarshal([]byte(env), &a)
		if err := json.Unmarshal([]byte(scriptSafe(env)), &b); err != nil || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("escaped JSON %s is another value (%v)", scriptSafe(env), err)
		}
	}
}

func TestIframeCallbackNames(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	bad := []string{"", "1a", "a-b", "a..b", ".a", "a.", "a.b.c.d.e", "alert(1)", "a b", "a;b", "é",
		"a[0]", strings.Repeat("a", 65), "a." + strings.Repeat("b", 65), "%3Cscript%3E"}
	for _, name := range bad {
		expectError(t, ts.URL, "/v1/iframe?channel=ifc&callback="+url.QueryEscape(name), http.StatusBadRequest, "invalid_callback")
	}
	expectError(t, ts.URL, "/v1/iframe?channel=ifc", http.StatusBadRequest, "invalid_callback")
	expectError(t, ts.URL, "/v1/iframe?channel=ifc&callback=a&callback=b", http.StatusBadRequest, "invalid_callback")
	good := []string{"a", "$", "_", "onMessage", "crier.push", "$a.b_c.d1.e$", strings.Repeat("x", 64),
		strings.Join([]string{strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64), strings.Repeat("d", 64)}, ".")}
	for _, name := range good {
		c := openIframe(t, ts.URL, "channel=ifc&callback="+url.QueryEscape(name))
		c.nc.Close()
	}
}

func TestIframeBadRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, tc := range badSubscribeRequests() {
		expectError(t, ts.URL, "/v1/iframe?callback=cb&"+tc.query, http.StatusBadRequest, tc.code)
	}
}

func TestIframeResume(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ea := publishSeq(t, ts.URL, "ira", 3)
	eb := publishSeq(t, ts.URL, "irb", 1)
	c := openIframe(t, ts.URL, "callback=cb&cursor="+url.QueryEscape(fmt.Sprintf("ira@%s:1,irb@%s:1", ea, eb)))
	var last envelope
	for _, want := range []uint64{2, 3} {
		last = decodeEnvelope(t, []byte(nextCall(t, c, "cb")))
		if last.Channel != "ira" || last.Offset != want || last.Cursor != fmt.Sprintf("ira@%s:%d,irb@%s:1", ea, want, eb) {
			t.Fatalf("got %+v", last)
		}
	}
	c.nc.Close()
	mustPublish(t, ts.URL, "irb", "text/plain", "x")
	c = openIframe(t, ts.URL, "callback=cb&cursor="+url.QueryEscape(last.Cursor))
	if e := decodeEnvelope(t, []byte(nextCall(t, c, "cb"))); e.Channel != "irb" || e.Offset != 2 {
		t.Fatalf("after resuming: %+v", e)
	}
}

// TestIframeHeartbeatAndLifetime: HTML comments while idle; at the lifetime a comment naming
// the reason and the document's end.
func TestIframeHeartbeatAndLifetime(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) {
		c.Heartbeat = 40 * time.Millisecond
		c.MaxLifetime = 300 * time.Millisecond
	})
	c := openIframe(t, ts.URL, "channel=ifhb&callback=cb")
	c.expect("<!---->\n<!---->\n")
	rest := string(c.end())
	rest = strings.ReplaceAll(rest, "<!---->\n", "")
	if rest != "<!-- closing: max_lifetime -->\n</body></html>\n" {
		t.Fatalf("ended with %q", rest)
	}
}

func TestIframeDrain(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	a := mustPublish(t, ts.URL, "ifdr", "text/plain", "x")
	c := openIframe(t, ts.URL, "channel=ifdr&callback=cb")
	subscriberCount(t, ts.URL, "ifdr", 1)
	ts.Stop()
	e := decodeEnvelope(t, []byte(nextCall(t, c, "cb")))
	if e.Event != "crier.reconnect" || e.Cursor != a.Cursor {
		t.Fatalf("drain sent %+v", e)
	}
	if rest := string(c.end()); rest != "<!-- closing: draining -->\n</body></html>\n" {
		t.Fatalf("ended with %q", rest)
	}
}
