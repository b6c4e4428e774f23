package server

// GET /v1/stream: chunked application/x-ndjson, one envelope a line (SPEC section 5).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
)

// ndClient reads an NDJSON stream through net/http, which undoes the chunked encoding.
type ndClient struct {
	res    *http.Response
	r      *bufio.Reader
	Blanks int    // heartbeats seen
	Last   string // the last envelope's cursor
}

func openND(t testing.TB, u string) *ndClient {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("stream status %d: %s", res.StatusCode, b)
	}
	t.Cleanup(func() { res.Body.Close() })
	return &ndClient{res: res, r: bufio.NewReader(res.Body)}
}

// line returns the next line without its line feed; io.EOF at a clean end.
func (c *ndClient) line() (string, error) {
	timer := time.AfterFunc(pushWait, func() { c.res.Body.Close() })
	defer timer.Stop()
	l, err := c.r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && l == "" {
			return "", io.EOF
		}
		return l, fmt.Errorf("after %q: %w", l, err)
	}
	return strings.TrimSuffix(l, "\n"), nil
}

// next returns the next envelope, skipping heartbeats.
func (c *ndClient) next(t testing.TB) envelope {
	t.Helper()
	for {
		l, err := c.line()
		if err != nil {
			t.Fatalf("stream read: %v", err)
		}
		if l == "" {
			c.Blanks++
			continue
		}
		e := decodeEnvelope(t, []byte(l))
		c.Last = e.Cursor
		return e
	}
}

// untilEnd reads envelopes until the stream ends cleanly (its last chunk).
func (c *ndClient) untilEnd(t testing.TB) []envelope {
	t.Helper()
	var out []envelope
	for {
		l, err := c.line()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("stream did not end cleanly: %v", err)
		}
		if l == "" {
			c.Blanks++
			continue
		}
		e := decodeEnvelope(t, []byte(l))
		c.Last = e.Cursor
		out = append(out, e)
	}
}

func (c *ndClient) expectOffsets(t testing.TB, ch string, want ...uint64) {
	t.Helper()
	for _, w := range want {
		if e := c.next(t); e.Channel != ch || e.Offset != w || e.Event != "message" {
			t.Fatalf("got %s offset %d event %s, want %s offset %d", e.Channel, e.Offset, e.Event, ch, w)
		}
	}
}

// chunk is s as one chunk of a chunked body.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// ndLine is an envelope as its NDJSON line: line breaks as spaces, then a line feed.
func ndLine(env string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(env) + "\n" }

func TestStreamFraming(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	first := mustPublish(t, ts.URL, "nd", "text/plain", "before")
	c := rawGet(t, ts.URL, "/v1/stream?channel=nd")
	checkStreamHead(t, c, "application/x-ndjson")
	if te := c.Header.Get("Transfer-Encoding"); te != "chunked" {
		t.Fatalf("Transfer-Encoding %q", te)
	}
	subscriberCount(t, ts.URL, "nd", 1)
	// A live start: nothing for the message published before; each message is one chunk of
	// one line, the very envelope history serves, its line breaks (between JSON tokens) spaces.
	bodies := []struct{ ct, body string }{
		{"application/json", "{\"a\": [1,\n 2],\r\n \"b\": \"<x>\\n\"}"},
		{"text/plain", "line one\nline two\r\n"},
		{"", "\x00\x01\xff"},
	}
	for i, b := range bodies {
		mustPublish(t, ts.URL, "nd", b.ct, b.body)
		env := histEnvelope(t, ts.URL, "nd", first.Epoch, uint64(i+2))
		line := ndLine(env)
		c.expect(chunk(line))
		e := decodeEnvelope(t, []byte(line))
		if e.Cursor != fmt.Sprintf("nd@%s:%d", first.Epoch, i+2) {
			t.Fatalf("cursor %q", e.Cursor)
		}
	}
}

func TestStreamResume(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for i, mode := range []string{"cursor", "since"} {
		t.Run(mode, func(t *testing.T) {
			ch := fmt.Sprintf("ndres%d", i)
			epoch := publishSeq(t, ts.URL, ch, 5)
			q := "cursor=" + url.QueryEscape(ch+"@"+epoch+":2")
			if mode == "since" {
				q = "channel=" + ch + "&since=" + epoch + ":2"
			}
			c := openND(t, ts.URL+"/v1/stream?"+q)
			c.expectOffsets(t, ch, 3, 4, 5)
			mustPublish(t, ts.URL, ch, "text/plain", "x")
			c.expectOffsets(t, ch, 6)
			c.res.Body.Close()
			// Again from the last cursor: only what comes next.
			c = openND(t, ts.URL+"/v1/stream?cursor="+url.QueryEscape(c.Last))
			subscriberCount(t, ts.URL, ch, 1)
			mustPublish(t, ts.URL, ch, "text/plain", "x")
			c.expectOffsets(t, ch, 7)
		})
	}
}

// TestStreamResumeRace resumes while a publisher is busy: exactly what follows, in order.
func TestStreamResumeRace(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	const n = 60
	epoch := mustPublish(t, ts.URL, "ndrace", "text/plain", "x").Epoch
	var published atomic.Uint64
	published.Store(1)
	wait := keepPublishing(t, ts.URL, "ndrace", n-1, 0, &published)
	for published.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	had := published.Load()
	c := openND(t, fmt.Sprintf("%s/v1/stream?channel=ndrace&since=%s:%d", ts.URL, epoch, had))
	var got []uint64
	for len(got) == 0 || got[len(got)-1] < n {
		got = append(got, c.next(t).Offset)
	}
	wait()
	checkSeq(t, got, had+1)
}

func TestStreamMultiChannel(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ea := publishSeq(t, ts.URL, "nma", 2)
	eb := publishSeq(t, ts.URL, "nmb", 1)
	cur := fmt.Sprintf("nma@%s:1,nmb@%s:0", ea, eb)
	c := openND(t, ts.URL+"/v1/stream?cursor="+url.QueryEscape(cur))
	want := []struct {
		ch  string
		off uint64
		cur string
	}{
		{"nma", 2, fmt.Sprintf("nma@%s:2,nmb@%s:0", ea, eb)},
		{"nmb", 1, fmt.Sprintf("nma@%s:2,nmb@%s:1", ea, eb)},
	}
	for _, w := range want {
		e := c.next(t)
		if e.Channel != w.ch || e.Offset != w.off || e.Cursor != w.cur {
			t.Fatalf("got %s %d cursor %q, want %s %d cursor %q", e.Channel, e.Offset, e.Cursor, w.ch, w.off, w.cur)
		}
	}
	mustPublish(t, ts.URL, "nmb", "text/plain", "x")
	if e := c.next(t); e.Cursor != fmt.Sprintf("nma@%s:2,nmb@%s:2", ea, eb) {
		t.Fatalf("cursor %q", e.Cursor)
	}
	// The last cursor resumes both.
	c.res.Body.Close()
	mustPublish(t, ts.URL, "nma", "text/plain", "x")
	c = openND(t, ts.URL+"/v1/stream?cursor="+url.QueryEscape(c.Last))
	c.expectOffsets(t, "nma", 3)
}

func TestStreamHeartbeat(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.Heartbeat = 50 * time.Millisecond })
	c := rawGet(t, ts.URL, "/v1/stream?channel=ndhb")
	for range 3 {
		c.expect("1\r\n\n\r\n")
	}
	// A heartbeat may be under way: read up to the message's chunk.
	a := mustPublish(t, ts.URL, "ndhb", "text/plain", "x")
	line := ndLine(histEnvelope(t, ts.URL, "ndhb", a.Epoch, 1))
	got := c.until(line + "\r\n")
	if strings.Trim(strings.TrimSuffix(got, chunk(line)), "1\r\n") != "" {
		t.Fatalf("before the message: %q", got)
	}
}

// TestStreamMaxLifetime: streams end with the last chunk at their lifetime, and reconnecting
// with the last cursor loses nothing while a publisher keeps going.
func TestStreamMaxLifetime(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxLifetime = 200 * time.Millisecond })
	raw := rawGet(t, ts.URL, "/v1/stream?channel=ndlife0")
	if b := raw.end(); string(b) != "0\r\n\r\n" {
		t.Fatalf("ended with %q", b)
	}

	const n = 40
	epoch := mustPublish(t, ts.URL, "ndlife", "text/plain", "x").Epoch
	wait := keepPublishing(t, ts.URL, "ndlife", n-1, 8*time.Millisecond, nil)
	defer wait()
	var got []uint64
	cursor := "ndlife@" + epoch + ":0"
	connections := 0
	for len(got) == 0 || got[len(got)-1] < n {
		if connections > 20 {
			t.Fatalf("after %d connections, got %v", connections, got)
		}
		opened := time.Now()
		c := openND(t, ts.URL+"/v1/stream?cursor="+url.QueryEscape(cursor))
		connections++
		for _, e := range c.untilEnd(t) {
			got = append(got, e.Offset)
			cursor = e.Cursor
		}
		if age := time.Since(opened); age < 190*time.Millisecond {
			t.Fatalf("connection %d ended after %v", connections, age)
		}
	}
	if connections < 2 {
		t.Fatalf("one connection outlived its lifetime")
	}
	checkSeq(t, got, 1)
}

func TestStreamGap(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.HistorySize = 3 })
	epoch := publishSeq(t, ts.URL, "ndgap", 6)
	c := openND(t, ts.URL+"/v1/stream?channel=ndgap&since="+epoch+":1")
	g := c.next(t)
	if g.Event != "crier.gap" || g.Offset != 3 || g.Cursor != "ndgap@"+epoch+":3" || string(g.Data) != `{"reason":"history"}` {
		t.Fatalf("first envelope %+v, want crier.gap at 3", g)
	}
	c.expectOffsets(t, "ndgap", 4, 5, 6)
}

func TestStreamDrain(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	a := mustPublish(t, ts.URL, "nddrain", "text/plain", "x")
	c := openND(t, ts.URL+"/v1/stream?channel=nddrain")
	subscriberCount(t, ts.URL, "nddrain", 1)
	ts.Stop()
	envs := c.untilEnd(t)
	if len(envs) != 1 || envs[0].Event != "crier.reconnect" || envs[0].Cursor != a.Cursor || afterMS(t, envs[0]) <= 0 {
		t.Fatalf("drain sent %+v", envs)
	}
}

func TestStreamBadRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, tc := range badSubscribeRequests() {
		expectError(t, ts.URL, "/v1/stream?"+tc.query, http.StatusBadRequest, tc.code)
	}
	res, b := rawDo(t, "POST", ts.URL+"/v1/stream?channel=a", nil)
	checkError(t, res, b, http.StatusMethodNotAllowed, "method_not_allowed")
}

// TestHTTPTransportsAuth: NDJSON, multipart, iframe and poll authenticate as every subscribe
// endpoint does, before subscribing, and a stream whose token's rights end closes with its last
// item, event crier.token_expired.
func TestHTTPTransportsAuth(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	tok := mint(t, "s", []string{"news"}, nil)
	for _, p := range []string{"/v1/stream?", "/v1/multipart?", "/v1/iframe?callback=cb&", "/v1/poll?wait=0&"} {
		for _, tt := range []struct {
			query   string
			headers []string
			status  int
			code    string
		}{
			{"channel=news", nil, 401, "unauthorized"},
			{"channel=news&token=bad", nil, 401, "invalid_token"},
			{"channel=news&channel=sports", []string{"Authorization", "Bearer " + tok}, 403, "forbidden"},
		} {
			res, b := rawDo(t, "GET", ts.URL+p+tt.query, nil, tt.headers...)
			expectAuthError(t, res, b, tt.status, tt.code)
		}
	}
	if n := subscribersWithKey(t, ts.URL, "news"); n != 0 {
		t.Fatalf("%d subscribers after refused requests", n)
	}

	short, end := mintExpiring(t, 1500*time.Millisecond, []string{"news"}, nil)
	q := "channel=news&token=" + url.QueryEscape(short)
	nd := rawGet(t, ts.URL, "/v1/stream?"+q)
	mp, boundary := openMultipartRaw(t, ts.URL, q)
	ifr := openIframe(t, ts.URL, "callback=cb&"+q)
	polled := make(chan []byte, 1)
	go func() {
		res, b := rawDo(t, "GET", ts.URL+"/v1/poll?wait=30&"+q, nil)
		if res.StatusCode != 200 {
			t.Errorf("poll: %d %s", res.StatusCode, b)
		}
		polled <- b
	}()
	eventually(t, "four subscribers", func() bool { return subscribersWithKey(t, ts.URL, "news") == 4 })

	expired := func(who string, b []byte) {
		t.Helper()
		var v struct {
			Event string
			Data  struct {
				Error struct{ Code, Message string }
			}
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Event != "crier.token_expired" ||
			v.Data.Error.Code != "token_expired" || v.Data.Error.Message == "" {
			t.Fatalf("%s: last item %q", who, b)
		}
	}
	// The stream: one chunk of one line, then the last chunk.
	rest := string(nd.end())
	line, ok1 := strings.CutSuffix(rest, "0\r\n\r\n")
	size, body, ok2 := strings.Cut(line, "\r\n")
	body, ok3 := strings.CutSuffix(body, "\r\n")
	if !ok1 || !ok2 || !ok3 || size != fmt.Sprintf("%x", len(body)) || strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") {
		t.Fatalf("stream ended with %q", rest)
	}
	expired("stream", []byte(body))
	if late := time.Since(end); late < -50*time.Millisecond || late > 500*time.Millisecond {
		t.Fatalf("ended %s after the token's end", late)
	}
	h, b := rawPart(t, mp, boundary)
	if h.Get("Crier-Event") != "crier.token_expired" || h.Get("Content-Type") != "application/json" {
		t.Fatalf("multipart: %v", h)
	}
	var e struct{ Error struct{ Code string } }
	if json.Unmarshal(b, &e) != nil || e.Error.Code != "token_expired" {
		t.Fatalf("multipart: %q", b)
	}
	if rest := mp.end(); string(rest) != "--\r\n" {
		t.Fatalf("multipart ended with %q", rest)
	}
	expired("iframe", []byte(nextCall(t, ifr, "cb")))
	if rest := string(ifr.end()); rest != "<!-- closing: token_expired -->\n</body></html>\n" {
		t.Fatalf("iframe ended with %q", rest)
	}
	if b := <-polled; !strings.HasPrefix(string(b), `{"messages":[],`) {
		t.Fatalf("poll: %q", b)
	}
}
