package server

// GET /v1/poll?wait=N: long polling and polling (SPEC section 5).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
)

type pollAnswer struct {
	Messages []json.RawMessage `json:"messages"`
	Cursor   string            `json:"cursor"`
}

// doPoll sends GET /v1/poll?query with the header pairs given. A 200 must be a poll answer
// whose ETag is its cursor; a 304 must have no body.
func doPoll(t testing.TB, base, query string, header ...string) (*http.Response, pollAnswer, []byte) {
	t.Helper()
	res, b := rawDo(t, "GET", base+"/v1/poll?"+query, nil, header...)
	var a pollAnswer
	switch res.StatusCode {
	case http.StatusOK:
		checkKeys(t, b, "messages", "cursor")
		if err := json.Unmarshal(b, &a); err != nil || a.Messages == nil {
			t.Fatalf("poll answer %q (%v)", b, err)
		}
		if res.Header.Get("Content-Type") != "application/json" || res.Header.Get("Content-Length") != fmt.Sprint(len(b)) {
			t.Fatalf("poll answer head %v", res.Header)
		}
		if res.Header.Get("ETag") != `"`+a.Cursor+`"` {
			t.Fatalf("ETag %q, cursor %q", res.Header.Get("ETag"), a.Cursor)
		}
	case http.StatusNotModified:
		if len(b) != 0 {
			t.Fatalf("304 with a body: %q", b)
		}
	default:
		t.Fatalf("poll %s: %d %s", query, res.StatusCode, b)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	return res, a, b
}

func (a pollAnswer) offsets(t testing.TB) []uint64 {
	t.Helper()
	var out []uint64
	for _, m := range a.Messages {
		e := decodeEnvelope(t, m)
		if e.Cursor == "" {
			t.Fatalf("envelope without cursor: %s", m)
		}
		out = append(out, e.Offset)
	}
	return out
}

func TestPollImmediate(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	a := mustPublish(t, ts.URL, "pa", "text/plain", "x")
	// A live start: nothing, and the current cursor, at once; the connection stays open.
	res, _, b := doPoll(t, ts.URL, "channel=pa&wait=0")
	if string(b) != `{"messages":[],"cursor":"`+a.Cursor+`"}` || res.Close {
		t.Fatalf("live poll: %q, close %v", b, res.Close)
	}
	// Nothing new since the ETag: 304, weak or strong, in a list or alone.
	for _, inm := range []string{`"` + a.Cursor + `"`, `W/"` + a.Cursor + `"`, `"other", "` + a.Cursor + `"`, `*`} {
		res, _, _ = doPoll(t, ts.URL, "channel=pa&wait=0", "If-None-Match", inm)
		if res.StatusCode != http.StatusNotModified || res.Header.Get("ETag") != `"`+a.Cursor+`"` {
			t.Fatalf("If-None-Match %s: %d %v", inm, res.StatusCode, res.Header)
		}
	}
	if res, _, _ = doPoll(t, ts.URL, "channel=pa&wait=0", "If-None-Match", `"pa@other:1"`); res.StatusCode != 200 {
		t.Fatalf("another ETag: %d", res.StatusCode)
	}
	// What follows the cursor, byte for byte as history serves it.
	mustPublish(t, ts.URL, "pa", "application/json", `{"n": 2}`)
	env := histEnvelope(t, ts.URL, "pa", a.Epoch, 2)
	for _, q := range []string{"cursor=" + url.QueryEscape(a.Cursor), "channel=pa&since=" + a.Epoch + ":1"} {
		res, _, b = doPoll(t, ts.URL, q+"&wait=0", "If-None-Match", `"`+a.Cursor+`"`)
		if res.StatusCode != 200 || string(b) != `{"messages":[`+env+`],"cursor":"pa@`+a.Epoch+`:2"}` {
			t.Fatalf("%s: %d %q", q, res.StatusCode, b)
		}
	}
	// wait=N answers at once too when something is there.
	start := time.Now()
	if _, p, _ := doPoll(t, ts.URL, "wait=30&cursor="+url.QueryEscape(a.Cursor)); len(p.Messages) != 1 || time.Since(start) > time.Second {
		t.Fatalf("long poll with a message waiting: %+v after %v", p, time.Since(start))
	}
}

// TestPollLongWait: a poll at the latest position waits, off net/http in the connection layer,
// and answers as soon as a message is published.
func TestPollLongWait(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	a := mustPublish(t, ts.URL, "pl", "text/plain", "x")
	type result struct {
		res     *http.Response
		b       []byte
		elapsed time.Duration
	}
	got := make(chan result, 1)
	start := time.Now()
	go func() {
		res, b := rawDo(t, "GET", ts.URL+"/v1/poll?wait=5&cursor="+url.QueryEscape(a.Cursor), nil)
		got <- result{res, b, time.Since(start)}
	}()
	subscriberCount(t, ts.URL, "pl", 1)
	if n := ts.Server.conns.Open(); n != 1 {
		t.Fatalf("%d connections in the connection layer, want the waiting poll", n)
	}
	time.Sleep(100 * time.Millisecond)
	mustPublish(t, ts.URL, "pl", "text/plain", "y")
	r := <-got
	env := histEnvelope(t, ts.URL, "pl", a.Epoch, 2)
	if r.res.StatusCode != 200 || string(r.b) != `{"messages":[`+env+`],"cursor":"pl@`+a.Epoch+`:2"}` {
		t.Fatalf("long poll: %d %q", r.res.StatusCode, r.b)
	}
	if r.elapsed < 100*time.Millisecond || r.elapsed > time.Second {
		t.Fatalf("answered after %v", r.elapsed)
	}
	if !r.res.Close || r.res.Header.Get("ETag") != `"pl@`+a.Epoch+`:2"` || r.res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("head %v, close %v", r.res.Header, r.res.Close)
	}
	subscriberCount(t, ts.URL, "pl", 0)
}

// TestPollWaitTimeout: after wait seconds, no messages and the same cursor, or 304.
func TestPollWaitTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	a := mustPublish(t, ts.URL, "pt", "text/plain", "x")
	type result struct {
		res     *http.Response
		b       []byte
		elapsed time.Duration
	}
	results := make(chan result, 2)
	for _, inm := range []string{"", `"` + a.Cursor + `"`} {
		go func() {
			start := time.Now()
			var hdr []string
			if inm != "" {
				hdr = []string{"If-None-Match", inm}
			}
			res, b := rawDo(t, "GET", ts.URL+"/v1/poll?wait=1&channel=pt", nil, hdr...)
			results <- result{res, b, time.Since(start)}
		}()
	}
	seen := map[int]bool{}
	for range 2 {
		r := <-results
		if r.elapsed < time.Second || r.elapsed > 1700*time.Millisecond {
			t.Fatalf("answered after %v", r.elapsed)
		}
		switch r.res.StatusCode {
		case 200:
			if string(r.b) != `{"messages":[],"cursor":"`+a.Cursor+`"}` {
				t.Fatalf("after the wait: %q", r.b)
			}
		case 304:
			if len(r.b) != 0 {
				t.Fatalf("304 with %q", r.b)
			}
		}
		if r.res.Header.Get("ETag") != `"`+a.Cursor+`"` {
			t.Fatalf("ETag %q", r.res.Header.Get("ETag"))
		}
		seen[r.res.StatusCode] = true
	}
	if !seen[200] || !seen[304] {
		t.Fatalf("statuses %v", seen)
	}
}

func TestPollBatch(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	msgs := make([]string, 150)
	for i := range msgs {
		msgs[i] = fmt.Sprintf(`{"channel":"pb","data":%d}`, i+1)
	}
	res, b := rawDo(t, "POST", ts.URL+"/v1/publish", []byte(`{"messages":[`+strings.Join(msgs, ",")+`]}`), "Content-Type", "application/json")
	if res.StatusCode != 200 {
		t.Fatalf("batch: %d %s", res.StatusCode, b)
	}
	epoch := info(t, ts.URL, "pb").Epoch
	_, p, _ := doPoll(t, ts.URL, "wait=0&channel=pb&since="+epoch+":0")
	got := p.offsets(t)
	if len(got) != 100 || p.Cursor != "pb@"+epoch+":100" {
		t.Fatalf("first answer: %d messages, cursor %s", len(got), p.Cursor)
	}
	checkSeq(t, got, 1)
	_, p, _ = doPoll(t, ts.URL, "wait=0&cursor="+url.QueryEscape(p.Cursor))
	if got = p.offsets(t); len(got) != 50 || p.Cursor != "pb@"+epoch+":150" {
		t.Fatalf("second answer: %v, cursor %s", got, p.Cursor)
	}
	checkSeq(t, got, 101)
}

// TestPollResumeRace chains long polls, each from the cursor of the one before, while a
// publisher is busy: every message, once, in order.
func TestPollResumeRace(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	const n = 60
	epoch := mustPublish(t, ts.URL, "pr", "text/plain", "x").Epoch
	var published atomic.Uint64
	wait := keepPublishing(t, ts.URL, "pr", n-1, time.Millisecond, &published)
	defer wait()
	cursor := "pr@" + epoch + ":0"
	var got []uint64
	polls := 0
	for len(got) == 0 || got[len(got)-1] < n {
		if polls++; polls > 200 {
			t.Fatalf("after %d polls: %v", polls, got)
		}
		_, p, _ := doPoll(t, ts.URL, "wait=5&cursor="+url.QueryEscape(cursor))
		got = append(got, p.offsets(t)...)
		cursor = p.Cursor
	}
	checkSeq(t, got, 1)
}

func TestPollMultiChannel(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ea := publishSeq(t, ts.URL, "pma", 2)
	eb := publishSeq(t, ts.URL, "pmb", 1)
	_, p, _ := doPoll(t, ts.URL, "wait=0&cursor="+url.QueryEscape(fmt.Sprintf("pma@%s:1,pmb@%s:0", ea, eb)))
	want := []string{fmt.Sprintf("pma@%s:2,pmb@%s:0", ea, eb), fmt.Sprintf("pma@%s:2,pmb@%s:1", ea, eb)}
	if len(p.Messages) != 2 || p.Cursor != want[1] {
		t.Fatalf("answer %+v", p)
	}
	for i, m := range p.Messages {
		if e := decodeEnvelope(t, m); e.Cursor != want[i] {
			t.Fatalf("message %d cursor %q, want %q", i, e.Cursor, want[i])
		}
	}
	// Channels listed beside the cursor start live.
	_, p, _ = doPoll(t, ts.URL, "wait=0&channel=pmc&cursor="+url.QueryEscape(p.Cursor))
	if len(p.Messages) != 0 || !strings.HasPrefix(p.Cursor, want[1]+",pmc@") {
		t.Fatalf("with a live channel: %+v", p)
	}
}

func TestPollGap(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.HistorySize = 3 })
	epoch := publishSeq(t, ts.URL, "pg", 6)
	for _, since := range []string{epoch + ":1", "gone:4"} {
		_, p, _ := doPoll(t, ts.URL, "wait=0&channel=pg&since="+since)
		g := decodeEnvelope(t, p.Messages[0])
		if g.Event != "crier.gap" || g.Epoch != epoch {
			t.Fatalf("since %s: first %+v", since, g)
		}
		if since == "gone:4" {
			if len(p.Messages) != 1 || g.Offset != 6 || p.Cursor != "pg@"+epoch+":6" {
				t.Fatalf("unknown epoch: %+v", p)
			}
			continue
		}
		if got := p.offsets(t); fmt.Sprint(got) != "[3 4 5 6]" || p.Cursor != "pg@"+epoch+":6" {
			t.Fatalf("trimmed: %v cursor %s", got, p.Cursor)
		}
	}
}

// TestPollEnds: a waiting poll answers with what it has at the connection's lifetime, and with
// crier.reconnect at the drain.
func TestPollEnds(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxLifetime = 200 * time.Millisecond })
	a := mustPublish(t, ts.URL, "pe", "text/plain", "x")
	start := time.Now()
	_, p, _ := doPoll(t, ts.URL, "wait=30&channel=pe")
	if len(p.Messages) != 0 || p.Cursor != a.Cursor || time.Since(start) < 190*time.Millisecond || time.Since(start) > time.Second {
		t.Fatalf("at the lifetime: %+v after %v", p, time.Since(start))
	}

	ts2 := startServer(t, nil)
	b := mustPublish(t, ts2.URL, "pe", "text/plain", "x")
	got := make(chan pollAnswer, 1)
	go func() {
		_, p, _ := doPoll(t, ts2.URL, "wait=30&channel=pe")
		got <- p
	}()
	subscriberCount(t, ts2.URL, "pe", 1)
	ts2.Stop()
	p = <-got
	if len(p.Messages) != 1 || p.Cursor != b.Cursor {
		t.Fatalf("at the drain: %+v", p)
	}
	if e := decodeEnvelope(t, p.Messages[0]); e.Event != "crier.reconnect" || afterMS(t, e) <= 0 {
		t.Fatalf("at the drain: %+v", e)
	}
}

// TestPollPresence: presence events are not delivered to polls, so that polls neither answer
// themselves (their own join) nor one another.
func TestPollPresence(t *testing.T) {
	t.Parallel()
	on := true
	ts := startServer(t, func(c *config.Config) {
		c.Namespaces = map[string]config.Namespace{"room": {Presence: &on}}
	})
	a := mustPublish(t, ts.URL, "room:pp", "text/plain", "x")
	if _, p, _ := doPoll(t, ts.URL, "wait=0&channel=room:pp"); len(p.Messages) != 0 {
		t.Fatalf("a poll got %s", p.Messages)
	}
	got := make(chan pollAnswer, 1)
	go func() {
		_, p, _ := doPoll(t, ts.URL, "wait=1&cursor="+url.QueryEscape(a.Cursor))
		got <- p
	}()
	subscriberCount(t, ts.URL, "room:pp", 1)
	other := openSSE(t, ts.URL+"/v1/sse?channel=room:pp") // joins
	subscriberCount(t, ts.URL, "room:pp", 2)
	other.res.Body.Close() // leaves
	mustPublish(t, ts.URL, "room:pp", "text/plain", "y")
	p := <-got
	if got := p.offsets(t); fmt.Sprint(got) != "[2]" {
		t.Fatalf("the poll got %s", p.Messages)
	}
}

func TestPollBadRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, w := range []string{"61", "-1", "1.5", "", "abc", "1s", "100", "0x1"} {
		expectError(t, ts.URL, "/v1/poll?channel=pbad&wait="+url.QueryEscape(w), http.StatusBadRequest, "invalid_wait")
	}
	expectError(t, ts.URL, "/v1/poll?channel=pbad&wait=1&wait=2", http.StatusBadRequest, "invalid_wait")
	for _, tc := range badSubscribeRequests() {
		expectError(t, ts.URL, "/v1/poll?wait=0&"+tc.query, http.StatusBadRequest, tc.code)
	}
}
