package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/config"
)

// sseWait bounds how long a test waits for one event: a guard against hangs, generous for a
// loaded machine (events normally arrive within milliseconds).
const sseWait = 5 * time.Second

// nextEvent returns the next SSE event with data, failing the test after sseWait.
func nextEvent(t testing.TB, c *sseClient) sseEvent {
	t.Helper()
	timer := time.AfterFunc(sseWait, func() { c.res.Body.Close() })
	ev, err := c.Next()
	if !timer.Stop() {
		t.Fatalf("no SSE event within %v", sseWait)
	}
	if err != nil {
		t.Fatalf("SSE read: %v", err)
	}
	return ev
}

// nextEnv returns the next event's envelope, checking that the SSE id is the envelope's cursor
// and the SSE event its event.
func nextEnv(t testing.TB, c *sseClient) envelope {
	t.Helper()
	ev := nextEvent(t, c)
	var e envelope
	if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
		t.Fatalf("SSE data is not an envelope: %q", ev.Data)
	}
	if ev.ID != e.Cursor || ev.Event != e.Event {
		t.Fatalf("SSE id %q event %q, envelope cursor %q event %q", ev.ID, ev.Event, e.Cursor, e.Event)
	}
	return e
}

// expectOffsets reads len(want) envelopes of ch and checks their offsets.
func expectOffsets(t testing.TB, c *sseClient, ch string, want ...uint64) {
	t.Helper()
	for _, w := range want {
		e := nextEnv(t, c)
		if e.Channel != ch || e.Offset != w || e.Event != "message" {
			t.Fatalf("got %s offset %d event %s, want %s offset %d", e.Channel, e.Offset, e.Event, ch, w)
		}
	}
}

// readLine reads one raw line of the stream, without its newline.
func readLine(t testing.TB, c *sseClient) string {
	t.Helper()
	timer := time.AfterFunc(sseWait, func() { c.res.Body.Close() })
	line, err := c.r.ReadString('\n')
	if !timer.Stop() {
		t.Fatalf("no SSE line within %v", sseWait)
	}
	if err != nil {
		t.Fatalf("SSE read: %v (after %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

// parseCursor parses an SSE id into channel → position.
func parseCursor(t testing.TB, s string) map[string]channel.Position {
	t.Helper()
	cur, err := channel.ParseCursor(s)
	if err != nil {
		t.Fatalf("cursor %q: %v", s, err)
	}
	m := map[string]channel.Position{}
	for _, e := range cur {
		m[e.Channel] = e.Position
	}
	return m
}

func TestSSEFraming(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.SSERetry = 1500 * time.Millisecond })
	first := mustPublish(t, ts.URL, "fr", "text/plain", "before")
	c := openSSE(t, ts.URL+"/v1/sse?channel=fr")
	h := c.res.Header
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := h.Get("Cache-Control"); !strings.Contains(cc, "no-cache") {
		t.Errorf("Cache-Control %q", cc)
	}
	if xa := h.Get("X-Accel-Buffering"); xa != "no" {
		t.Errorf("X-Accel-Buffering %q", xa)
	}
	// retry: first, then the start position as an id without data (a live start: the
	// message published before is not sent).
	want := []string{"retry: 1500", "", "id: " + first.Cursor, ""}
	for _, w := range want {
		if got := readLine(t, c); got != w {
			t.Fatalf("line %q, want %q", got, w)
		}
	}
	body := `{"b": [1, 2],  "a": "<x>"}`
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/fr?event=upd", []byte(body), "Content-Type", "application/json")
	if res.StatusCode != 201 {
		t.Fatalf("publish: %d %s", res.StatusCode, b)
	}
	// The data line is the very envelope history serves, with the body as published.
	env := history(t, ts.URL, "fr", "since="+first.Epoch+":1").Messages[0]
	if !strings.Contains(string(env), `"data":`+body+`,`) {
		t.Fatalf("envelope %s does not hold the body verbatim", env)
	}
	want = []string{"id: fr@" + first.Epoch + ":2", "event: upd", "data: " + string(env), ""}
	for _, w := range want {
		if got := readLine(t, c); got != w {
			t.Fatalf("line %q, want %q", got, w)
		}
	}
	// Plain messages say event: message; binary ones carry base64 in the same envelope.
	mustPublish(t, ts.URL, "fr", "", "\x00\x01")
	ev := nextEvent(t, c)
	if ev.Event != "message" {
		t.Fatalf("event %q", ev.Event)
	}
	var e envelope
	_ = json.Unmarshal([]byte(ev.Data), &e)
	if string(e.Data) != `"AAE="` || e.Encoding != "base64" || e.ContentType != "application/octet-stream" || e.Offset != 3 {
		t.Fatalf("binary envelope %s", ev.Data)
	}
}

// TestSSEMultilineJSON: a JSON body published with line breaks is sent as published, over
// several data: lines that EventSource joins with "\n" (a CR, which SSE cannot carry, arrives
// as LF: JSON whitespace, so the value is the same).
func TestSSEMultilineJSON(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	tests := []struct{ body, want string }{
		{"{\n  \"a\": [1,\n 2],\n  \"b\": \"x\"\n}\n", "{\n  \"a\": [1,\n 2],\n  \"b\": \"x\"\n}\n"},
		{"{\r\n\"a\": 1\r\n}", "{\n\"a\": 1\n}"},
		{"[1,\r2]", "[1,\n2]"},
	}
	for _, multi := range []bool{false, true} {
		u := "/v1/sse?channel=ml"
		if multi {
			u += "&channel=ml2"
		}
		c := openSSE(t, ts.URL+u)
		if multi {
			eventually(t, "ml2 subscribed", func() bool { return info(t, ts.URL, "ml2").Subscribers == 1 })
		} else {
			eventually(t, "ml subscribed", func() bool { return info(t, ts.URL, "ml").Subscribers == 1 })
		}
		for _, tt := range tests {
			mustPublish(t, ts.URL, "ml", "application/json", tt.body)
			ev := nextEvent(t, c)
			var e envelope
			if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
				t.Fatalf("multi %v: data %q is not an envelope: %v", multi, ev.Data, err)
			}
			// Checked in the event's text: json.RawMessage would drop trailing whitespace.
			if !strings.Contains(ev.Data, `"data":`+tt.want+`,"cursor":`) || ev.ID != e.Cursor {
				t.Fatalf("multi %v: event data %q, want the body %q", multi, ev.Data, tt.want)
			}
		}
		// The stream is still in step afterwards.
		mustPublish(t, ts.URL, "ml", "text/plain", "after")
		if e := nextEnv(t, c); string(e.Data) != `"after"` {
			t.Fatalf("after multiline events: %+v", e)
		}
		c.res.Body.Close()
		eventually(t, "unsubscribed", func() bool { return info(t, ts.URL, "ml").Subscribers == 0 })
	}
}

func TestSSEMultiChannel(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	pa := mustPublish(t, ts.URL, "ma", "text/plain", "a1")
	c := openSSE(t, ts.URL+"/v1/sse?channel=ma&channel=mb")
	eventually(t, "both subscribed", func() bool { return info(t, ts.URL, "mb").Subscribers == 1 })
	eb := info(t, ts.URL, "mb").Epoch
	steps := []struct {
		ch     string
		offset uint64
		want   map[string]uint64
	}{
		{"ma", 2, map[string]uint64{"ma": 2, "mb": 0}},
		{"mb", 1, map[string]uint64{"ma": 2, "mb": 1}},
		{"ma", 3, map[string]uint64{"ma": 3, "mb": 1}},
	}
	for _, s := range steps {
		mustPublish(t, ts.URL, s.ch, "text/plain", "x")
		e := nextEnv(t, c)
		if e.Channel != s.ch || e.Offset != s.offset {
			t.Fatalf("got %s:%d, want %s:%d", e.Channel, e.Offset, s.ch, s.offset)
		}
		cur := parseCursor(t, e.Cursor)
		if len(cur) != 2 || cur["ma"] != (channel.Position{Epoch: pa.Epoch, Offset: s.want["ma"]}) ||
			cur["mb"] != (channel.Position{Epoch: eb, Offset: s.want["mb"]}) {
			t.Fatalf("combined cursor %q, want ma:%d mb:%d", e.Cursor, s.want["ma"], s.want["mb"])
		}
	}
	last := c.LastID
	c.res.Body.Close()
	// Missed on both channels while away; the combined cursor resumes both.
	mustPublish(t, ts.URL, "mb", "text/plain", "x")
	mustPublish(t, ts.URL, "ma", "text/plain", "x")
	mustPublish(t, ts.URL, "mb", "text/plain", "x")
	for _, u := range []string{"/v1/sse?channel=ma&channel=mb", "/v1/sse"} {
		c = openSSE(t, ts.URL+u, "Last-Event-ID", last)
		got := map[string][]uint64{}
		for range 3 {
			e := nextEnv(t, c)
			got[e.Channel] = append(got[e.Channel], e.Offset)
		}
		if !slices.Equal(got["ma"], []uint64{4}) || !slices.Equal(got["mb"], []uint64{2, 3}) {
			t.Fatalf("%s: resumed with %v", u, got)
		}
		c.res.Body.Close()
	}
	c = openSSE(t, ts.URL+"/v1/sse?cursor="+url.QueryEscape(last))
	for range 3 {
		nextEnv(t, c)
	}
	mustPublish(t, ts.URL, "ma", "text/plain", "x")
	if e := nextEnv(t, c); e.Channel != "ma" || e.Offset != 5 {
		t.Fatalf("live after resume: %s:%d", e.Channel, e.Offset)
	}
}

// TestSSECursorNamesEveryResumedChannel: while the first channel of a cursor replays its
// history, the ids already name every channel the cursor resumes, so that a reconnect with
// Last-Event-ID (which replaces the URL's cursor) keeps them all.
func TestSSECursorNamesEveryResumedChannel(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	var ea, eb string
	for range 5 {
		ea = mustPublish(t, ts.URL, "ra", "text/plain", "x").Epoch
	}
	for range 3 {
		eb = mustPublish(t, ts.URL, "rb", "text/plain", "x").Epoch
	}
	cur := fmt.Sprintf("ra@%s:1,rb@%s:1", ea, eb)
	c := openSSE(t, ts.URL+"/v1/sse?cursor="+url.QueryEscape(cur))
	e := nextEnv(t, c)
	if e.Channel != "ra" || e.Offset != 2 {
		t.Fatalf("first event %s:%d", e.Channel, e.Offset)
	}
	if got := parseCursor(t, e.Cursor); got["rb"] != (channel.Position{Epoch: eb, Offset: 1}) || len(got) != 2 {
		t.Fatalf("first id %q does not name rb@%s:1", e.Cursor, eb)
	}
	c.res.Body.Close()
	// EventSource reconnects to the same URL with the id it last saw.
	c = openSSE(t, ts.URL+"/v1/sse?cursor="+url.QueryEscape(cur), "Last-Event-ID", e.Cursor)
	got := map[string][]uint64{}
	for range 5 {
		e := nextEnv(t, c)
		got[e.Channel] = append(got[e.Channel], e.Offset)
	}
	if !slices.Equal(got["ra"], []uint64{3, 4, 5}) || !slices.Equal(got["rb"], []uint64{2, 3}) {
		t.Fatalf("after reconnect: %v", got)
	}
}

// tryPublish publishes "x" and returns its offset; unlike mustPublish it may run off the test's
// goroutine (a missing offset then shows as a hole in what the subscriber gets).
func tryPublish(base, ch string) (uint64, error) {
	res, err := http.Post(base+"/v1/channels/"+ch, "text/plain", strings.NewReader("x"))
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var a publishAnswer
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil || res.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("publish: status %d, %v", res.StatusCode, err)
	}
	return a.Offset, nil
}

// resumeURL builds the subscribe request of each way to resume ch after pos.
func resumeURL(mode, ch string, pos channel.Position) (path string, header []string) {
	cur := ch + "@" + pos.String()
	switch mode {
	case "last-event-id":
		return "/v1/sse?channel=" + ch, []string{"Last-Event-ID", cur}
	case "cursor":
		return "/v1/sse?cursor=" + url.QueryEscape(cur), nil
	case "since":
		return "/v1/sse?channel=" + ch + "&since=" + pos.String(), nil
	case "eventsource-since":
		// EventSource reconnects to its original URL and adds Last-Event-ID, which is newer.
		return "/v1/sse?channel=" + ch + "&since=" + pos.Epoch + ":0", []string{"Last-Event-ID", cur}
	case "eventsource-cursor":
		return "/v1/sse?cursor=" + url.QueryEscape(ch+"@"+pos.Epoch+":0"), []string{"Last-Event-ID", cur}
	}
	panic(mode)
}

var resumeModes = []string{"last-event-id", "cursor", "since", "eventsource-since", "eventsource-cursor"}

func TestSSEResume(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for i, mode := range resumeModes {
		t.Run(mode, func(t *testing.T) {
			ch := fmt.Sprintf("res%d", i)
			var epoch string
			for range 5 {
				epoch = mustPublish(t, ts.URL, ch, "text/plain", "x").Epoch
			}
			path, hdr := resumeURL(mode, ch, channel.Position{Epoch: epoch, Offset: 2})
			c := openSSE(t, ts.URL+path, hdr...)
			expectOffsets(t, c, ch, 3, 4, 5)
			mustPublish(t, ts.URL, ch, "text/plain", "x")
			expectOffsets(t, c, ch, 6)
			// Resuming from the latest position gives only what comes next.
			c.res.Body.Close()
			path, hdr = resumeURL(mode, ch, channel.Position{Epoch: epoch, Offset: 6})
			c = openSSE(t, ts.URL+path, hdr...)
			mustPublish(t, ts.URL, ch, "text/plain", "x")
			expectOffsets(t, c, ch, 7)
		})
	}
}

// TestSSEResumeRace subscribes with a position while a publisher is busy on the channel: what
// the subscriber had plus what it gets must be exactly 1..n, in order.
func TestSSEResumeRace(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	const n = 60
	for i, mode := range resumeModes {
		for round := range 2 {
			ch := fmt.Sprintf("race%d-%d", i, round)
			epoch := mustPublish(t, ts.URL, ch, "text/plain", "x").Epoch
			var published atomic.Uint64
			published.Store(1)
			var pubErr atomic.Pointer[error] // a failed publish: offset n would never come
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range n - 1 {
					off, err := tryPublish(ts.URL, ch)
					if err != nil {
						pubErr.CompareAndSwap(nil, &err)
						continue
					}
					published.Store(off)
				}
			}()
			// Resume from wherever the publisher is (varying with the round).
			for published.Load() < uint64(5+round*15) {
				time.Sleep(time.Millisecond)
			}
			had := published.Load()
			path, hdr := resumeURL(mode, ch, channel.Position{Epoch: epoch, Offset: had})
			c := openSSE(t, ts.URL+path, hdr...)
			var got []uint64
			for len(got) == 0 || got[len(got)-1] < n {
				if err := pubErr.Load(); err != nil {
					t.Fatalf("%s: %v", mode, *err)
				}
				e := nextEnv(t, c)
				if e.Event != "message" {
					t.Fatalf("%s: unexpected %s at %d", mode, e.Event, e.Offset)
				}
				got = append(got, e.Offset)
			}
			<-done
			for j, o := range got {
				if o != had+uint64(j)+1 {
					t.Fatalf("%s: had 1..%d, then got %v", mode, had, got)
				}
			}
			c.res.Body.Close()
		}
	}
}

// TestSSEResumeRaceMulti resumes two channels with one cursor while both are being published
// to: each channel's events continue exactly after the cursor's position, in order, to the end.
func TestSSEResumeRaceMulti(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	const n = 40
	chans := []string{"rma", "rmb"}
	epochs := map[string]string{}
	var published [2]atomic.Uint64
	for i, ch := range chans {
		epochs[ch] = mustPublish(t, ts.URL, ch, "text/plain", "x").Epoch
		published[i].Store(1)
	}
	done := make(chan struct{}, len(chans))
	for i, ch := range chans {
		go func() {
			defer func() { done <- struct{}{} }()
			for range n - 1 {
				if off, err := tryPublish(ts.URL, ch); err == nil {
					published[i].Store(off)
				}
			}
		}()
	}
	for published[0].Load() < 8 || published[1].Load() < 8 {
		time.Sleep(time.Millisecond)
	}
	had := map[string]uint64{}
	var parts []string
	for i, ch := range chans {
		had[ch] = published[i].Load()
		parts = append(parts, fmt.Sprintf("%s@%s:%d", ch, epochs[ch], had[ch]))
	}
	c := openSSE(t, ts.URL+"/v1/sse?cursor="+url.QueryEscape(strings.Join(parts, ",")))
	got := map[string][]uint64{}
	for len(got["rma"]) < int(n-had["rma"]) || len(got["rmb"]) < int(n-had["rmb"]) {
		e := nextEnv(t, c)
		want := had[e.Channel] + uint64(len(got[e.Channel])) + 1
		if e.Offset != want || e.Event != "message" {
			t.Fatalf("%s: had %d, got %v then %s %d", e.Channel, had[e.Channel], got[e.Channel], e.Event, e.Offset)
		}
		got[e.Channel] = append(got[e.Channel], e.Offset)
		cur := parseCursor(t, e.Cursor)
		if len(cur) != 2 || cur[e.Channel].Offset != e.Offset {
			t.Fatalf("cursor %q after %s:%d", e.Cursor, e.Channel, e.Offset)
		}
	}
	<-done
	<-done
}

func TestSSEGap(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.HistorySize = 3 })
	tests := []struct {
		name    string
		since   func(epoch string) string
		gapAt   uint64
		reason  string
		replays []uint64
	}{
		{"trimmed", func(e string) string { return e + ":1" }, 3, "history", []uint64{4, 5, 6}},
		{"trimmed from zero", func(e string) string { return e + ":0" }, 3, "history", []uint64{4, 5, 6}},
		{"unknown epoch", func(string) string { return "gone:4" }, 6, "epoch", nil},
		{"future offset", func(e string) string { return e + ":99" }, 6, "epoch", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := fmt.Sprintf("gap%d", i)
			var epoch string
			for range 6 {
				epoch = mustPublish(t, ts.URL, ch, "text/plain", "x").Epoch
			}
			for _, mode := range []string{"since", "cursor"} {
				var c *sseClient
				if mode == "since" {
					c = openSSE(t, ts.URL+"/v1/sse?channel="+ch+"&since="+tt.since(epoch))
				} else {
					c = openSSE(t, ts.URL+"/v1/sse?cursor="+ch+"@"+tt.since(epoch))
				}
				g := nextEnv(t, c)
				if g.Event != "crier.gap" || g.Channel != ch || g.Epoch != epoch || g.Offset != tt.gapAt ||
					g.Cursor != fmt.Sprintf("%s@%s:%d", ch, epoch, tt.gapAt) {
					t.Fatalf("%s: first event %+v, want crier.gap at %s:%d", mode, g, epoch, tt.gapAt)
				}
				var data struct{ Reason string }
				if err := json.Unmarshal(g.Data, &data); err != nil || data.Reason != tt.reason {
					t.Fatalf("%s: gap data %s, want reason %s", mode, g.Data, tt.reason)
				}
				expectOffsets(t, c, ch, tt.replays...)
				c.res.Body.Close()
			}
			c := openSSE(t, ts.URL+"/v1/sse?channel="+ch+"&since="+tt.since(epoch))
			nextEnv(t, c)
			expectOffsets(t, c, ch, tt.replays...)
			mustPublish(t, ts.URL, ch, "text/plain", "x")
			expectOffsets(t, c, ch, 7)
		})
	}

	t.Run("clear while subscribed", func(t *testing.T) {
		old := mustPublish(t, ts.URL, "gapclr", "text/plain", "x")
		c := openSSE(t, ts.URL+"/v1/sse?channel=gapclr")
		eventually(t, "subscribed", func() bool { return info(t, ts.URL, "gapclr").Subscribers == 1 })
		res, b := rawDo(t, "DELETE", ts.URL+"/v1/channels/gapclr/messages", nil)
		if res.StatusCode != 200 {
			t.Fatalf("clear: %d %s", res.StatusCode, b)
		}
		g := nextEnv(t, c)
		if g.Event != "crier.gap" || g.Epoch == old.Epoch || g.Offset != 0 {
			t.Fatalf("after clear: %+v", g)
		}
		a := mustPublish(t, ts.URL, "gapclr", "text/plain", "x")
		e := nextEnv(t, c)
		if e.Epoch != g.Epoch || e.Offset != 1 || a.Epoch != g.Epoch {
			t.Fatalf("after clear: %+v", e)
		}
	})
}

func TestSSECursorWithChannels(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	a := mustPublish(t, ts.URL, "ca", "text/plain", "x")
	mustPublish(t, ts.URL, "ca", "text/plain", "x")
	mustPublish(t, ts.URL, "cb", "text/plain", "x")
	mustPublish(t, ts.URL, "cb", "text/plain", "x")

	// cb is listed but not in the cursor: it starts live; ca resumes after 1.
	c := openSSE(t, ts.URL+"/v1/sse?cursor="+url.QueryEscape("ca@"+a.Epoch+":1")+"&channel=cb&channel=ca")
	expectOffsets(t, c, "ca", 2)
	eventually(t, "cb subscribed", func() bool { return info(t, ts.URL, "cb").Subscribers == 1 })
	mustPublish(t, ts.URL, "cb", "text/plain", "x")
	expectOffsets(t, c, "cb", 3)
	c.res.Body.Close()

	// A cursor alone subscribes to the channels it names, and only those.
	c = openSSE(t, ts.URL+"/v1/sse?cursor="+url.QueryEscape("ca@"+a.Epoch+":2"))
	eventually(t, "ca subscribed", func() bool { return info(t, ts.URL, "ca").Subscribers == 1 })
	mustPublish(t, ts.URL, "cb", "text/plain", "x")
	mustPublish(t, ts.URL, "ca", "text/plain", "x")
	expectOffsets(t, c, "ca", 3)
	if n := info(t, ts.URL, "cb").Subscribers; n != 0 {
		t.Fatalf("cb has %d subscribers", n)
	}
}

func TestSSEHeartbeat(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.Heartbeat = 50 * time.Millisecond })
	c := openSSE(t, ts.URL+"/v1/sse?channel=hb")
	if got := readLine(t, c); !strings.HasPrefix(got, "retry: ") {
		t.Fatalf("first line %q", got)
	}
	readLine(t, c)
	if got := readLine(t, c); !strings.HasPrefix(got, "id: hb@") {
		t.Fatalf("start line %q", got)
	}
	readLine(t, c)
	// While idle: comment lines, each ending an (empty) event.
	for range 3 {
		if got := readLine(t, c); got != ":" {
			t.Fatalf("heartbeat line %q", got)
		}
		if got := readLine(t, c); got != "" {
			t.Fatalf("after heartbeat %q", got)
		}
	}
	mustPublish(t, ts.URL, "hb", "text/plain", "x")
	expectOffsets(t, c, "hb", 1)
}

// TestSSEMaxLifetime: streams end cleanly at their lifetime, say why, and reconnecting with the
// last id loses nothing while a publisher keeps going.
func TestSSEMaxLifetime(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxLifetime = 200 * time.Millisecond })
	const n = 50
	mustPublish(t, ts.URL, "life", "text/plain", "x")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n - 1 {
			_, _ = tryPublish(ts.URL, "life")
			time.Sleep(8 * time.Millisecond)
		}
	}()
	defer func() { <-done }()
	var got []uint64
	lastID, connections := "", 0
	start := time.Now()
	for len(got) == 0 || got[len(got)-1] < n {
		if time.Since(start) > 10*time.Second { // a guard against hangs; normally ~0.7 s
			t.Fatalf("after %d connections, got %v", connections, got)
		}
		// The lifetime runs from when the server takes the connection, after this.
		opened := time.Now()
		var c *sseClient
		if lastID == "" {
			c = openSSE(t, ts.URL+"/v1/sse?channel=life&since="+history(t, ts.URL, "life", "").Epoch+":0")
		} else {
			c = openSSE(t, ts.URL+"/v1/sse?channel=life", "Last-Event-ID", lastID)
		}
		connections++
		// Read the raw stream to its end.
		var ev sseEvent
		var comments []string
		timer := time.AfterFunc(sseWait, func() { c.res.Body.Close() })
		for {
			line, err := c.r.ReadString('\n')
			if errors.Is(err, io.EOF) && line == "" {
				break
			}
			if err != nil {
				t.Fatalf("stream did not end cleanly: %v", err)
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev.ID != "" {
					lastID = ev.ID
				}
				if ev.HasData {
					var e envelope
					_ = json.Unmarshal([]byte(ev.Data), &e)
					got = append(got, e.Offset)
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				comments = append(comments, line)
			case strings.HasPrefix(line, "id: "):
				ev.ID = line[4:]
			case strings.HasPrefix(line, "data: "):
				ev.Data, ev.HasData = line[6:], true
			}
		}
		if !timer.Stop() {
			t.Fatal("stream outlived its lifetime")
		}
		if age := time.Since(opened); age < 200*time.Millisecond {
			t.Fatalf("connection %d ended after %v, lifetime 200ms; comments %q, got %v", connections, age, comments, got)
		}
		if len(comments) == 0 || comments[len(comments)-1] != ": closing: max_lifetime" {
			t.Fatalf("stream ended with comments %q", comments)
		}
		c.res.Body.Close()
	}
	if connections < 2 {
		t.Fatalf("only %d connection(s) over %v", connections, time.Since(start))
	}
	for i, o := range got {
		if o != uint64(i+1) {
			t.Fatalf("over %d connections got %v", connections, got)
		}
	}
}

func TestSSEPresence(t *testing.T) {
	t.Parallel()
	on := true
	ts := startServer(t, func(c *config.Config) {
		c.Namespaces = map[string]config.Namespace{"room": {Presence: &on}}
	})
	pos := mustPublish(t, ts.URL, "room:p", "text/plain", "x")
	type who struct{ Client, User, Transport string }
	presenceEvent := func(c *sseClient, event string) who {
		t.Helper()
		e := nextEnv(t, c)
		if e.Event != event || e.Channel != "room:p" || e.Epoch != pos.Epoch || e.Offset != 1 {
			t.Fatalf("got %+v, want %s at %s", e, event, pos.Cursor)
		}
		var w who
		if err := json.Unmarshal(e.Data, &w); err != nil || w.Client == "" || w.Transport != "sse" {
			t.Fatalf("%s data %s", event, e.Data)
		}
		return w
	}
	a := openSSE(t, ts.URL+"/v1/sse?channel=room:p")
	self := presenceEvent(a, "crier.join")
	b := openSSE(t, ts.URL+"/v1/sse?channel=room:p")
	other := presenceEvent(a, "crier.join")
	if other == self {
		t.Fatalf("two subscribers share client id %q", self.Client)
	}
	if w := presenceEvent(b, "crier.join"); w != other {
		t.Fatalf("b's own join %+v, a saw %+v", w, other)
	}
	b.res.Body.Close()
	if w := presenceEvent(a, "crier.leave"); w != other {
		t.Fatalf("leave %+v, want %+v", w, other)
	}
	// Presence events stand at the channel's position without moving it.
	mustPublish(t, ts.URL, "room:p", "text/plain", "x")
	expectOffsets(t, a, "room:p", 2)
	if h := history(t, ts.URL, "room:p", ""); h.Offset != 2 || len(h.Messages) != 2 {
		t.Fatalf("presence events reached history: %s", h.raw)
	}
	// Without presence in the namespace, no such events.
	c := openSSE(t, ts.URL+"/v1/sse?channel=lobby")
	d := openSSE(t, ts.URL+"/v1/sse?channel=lobby")
	eventually(t, "two subscribers", func() bool { return info(t, ts.URL, "lobby").Subscribers == 2 })
	d.res.Body.Close()
	eventually(t, "one subscriber", func() bool { return info(t, ts.URL, "lobby").Subscribers == 1 })
	mustPublish(t, ts.URL, "lobby", "text/plain", "x")
	expectOffsets(t, c, "lobby", 1)
}
