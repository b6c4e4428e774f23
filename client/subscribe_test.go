package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSSE speaks Crier's SSE wire format. Each connection runs the next step of its script
// (the last step repeats); steps write with an sseConn.
type fakeSSE struct {
	t      *testing.T
	mu     sync.Mutex
	reqs   []sseRequest
	script []func(c *sseConn)
}

type sseRequest struct {
	query       url.Values
	lastEventID string
	auth        string
}

type sseConn struct {
	w   http.ResponseWriter
	r   *http.Request
	req sseRequest
}

func newFakeSSE(t *testing.T, script ...func(c *sseConn)) (*fakeSSE, *httptest.Server) {
	f := &fakeSSE{t: t, script: script}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeSSE) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/sse" || r.Header.Get("Accept") != "text/event-stream" {
		f.t.Errorf("request %s %s Accept %q", r.Method, r.URL.Path, r.Header.Get("Accept"))
	}
	req := sseRequest{r.URL.Query(), r.Header.Get("Last-Event-ID"), r.Header.Get("Authorization")}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	step := f.script[min(len(f.reqs), len(f.script))-1]
	f.mu.Unlock()
	step(&sseConn{w, r, req})
}

func (f *fakeSSE) requests() []sseRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sseRequest(nil), f.reqs...)
}

// start answers 200 with the event-stream headers, then retry: and the start id.
func (c *sseConn) start(startID string) {
	c.w.Header().Set("Content-Type", "text/event-stream")
	c.w.WriteHeader(http.StatusOK)
	c.write("retry: 1\n\n")
	if startID != "" {
		c.write("id: " + startID + "\n\n")
	}
}

func (c *sseConn) write(s string) {
	_, _ = io.WriteString(c.w, s)
	c.w.(http.Flusher).Flush()
}

// msg writes one envelope; cursor is the subscription's cursor after it ("" derives it).
func (c *sseConn) msg(ch, epoch string, off uint64, event, data, cursor string) {
	if cursor == "" {
		cursor = fmt.Sprintf("%s@%s:%d", ch, epoch, off)
	}
	env := fmt.Sprintf(`{"channel":%q,"offset":%d,"epoch":%q,"time":"2026-11-23T08:00:00.123Z","event":%q,"data":%s,"cursor":%q}`,
		ch, off, epoch, event, data, cursor)
	c.write("id: " + cursor + "\r\nevent: " + event + "\r\ndata: " + env + "\r\n\r\n")
}

func (c *sseConn) news(from, to uint64) {
	for i := from; i <= to; i++ {
		c.msg("news", "e", i, "message", fmt.Sprintf(`{"n":%d}`, i), "")
	}
}

// hold keeps the connection open, with heartbeats, until the client goes.
func (c *sseConn) hold() {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.r.Context().Done():
			return
		case <-t.C:
			c.write(": heartbeat\n")
		}
	}
}

func (c *sseConn) fail(status int, code string) {
	c.w.Header().Set("Content-Type", "application/json")
	c.w.WriteHeader(status)
	fmt.Fprintf(c.w, `{"error":{"code":%q,"message":"fake %d"}}`, code, status)
}

// collect reads n envelopes, failing the test if they take too long.
func collect(t *testing.T, sub *Subscription, n int) []Envelope {
	t.Helper()
	var got []Envelope
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case env, ok := <-sub.Events():
			if !ok {
				t.Fatalf("events closed after %d envelopes: %v", len(got), sub.Err())
			}
			got = append(got, env)
		case <-timeout:
			t.Fatalf("got %d envelopes, want %d", len(got), n)
		}
	}
	return got
}

type retryLog struct {
	mu     sync.Mutex
	errs   []error
	delays []time.Duration
}

func (l *retryLog) record(err error, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs, l.delays = append(l.errs, err), append(l.delays, d)
}

func (l *retryLog) get() ([]error, []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...), append([]time.Duration(nil), l.delays...)
}

func TestSubscribeReconnects(t *testing.T) {
	f, srv := newFakeSSE(t,
		func(c *sseConn) { // ends cleanly, as at max lifetime
			c.start("news@e:0")
			c.write(": heartbeat\n\n")
			c.news(1, 3)
		},
		func(c *sseConn) { // replays one message, then the server crashes mid-event
			c.start(c.req.lastEventID)
			c.news(3, 5)
			c.write("data: {\"chan")
			panic(http.ErrAbortHandler)
		},
		func(c *sseConn) { // drains
			c.start(c.req.lastEventID)
			c.news(6, 6)
			c.msg("news", "e", 6, EventReconnect, `{"after_ms":5}`, "")
			c.hold()
		},
		func(c *sseConn) {
			c.start(c.req.lastEventID)
			c.news(7, 10)
			c.hold()
		},
	)
	var log retryLog
	c := New(srv.URL, WithToken("tok"), WithBackoff(time.Millisecond, 10*time.Millisecond))
	sub := c.Subscribe(context.Background(), []string{"news"}, SubscribeOptions{OnRetry: log.record})
	defer sub.Close()

	got := collect(t, sub, 10)
	for i, env := range got {
		if env.Offset != uint64(i+1) || env.Channel != "news" || env.Event != "message" || string(env.Data) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Errorf("envelope %d = %+v", i, env)
		}
	}
	if got := sub.Cursor(); got != "news@e:10" {
		t.Errorf("Cursor = %q", got)
	}

	reqs := f.requests()
	wantLast := []string{"", "news@e:3", "news@e:5", "news@e:6"}
	if len(reqs) != len(wantLast) {
		t.Fatalf("%d connections, want %d", len(reqs), len(wantLast))
	}
	for i, r := range reqs {
		if r.lastEventID != wantLast[i] || r.query.Get("channel") != "news" || r.query.Has("cursor") || r.auth != "Bearer tok" {
			t.Errorf("request %d = %+v", i, r)
		}
	}
	errs, delays := log.get()
	var re *ReconnectError
	if len(errs) != 3 || !errors.Is(errs[0], errStreamEnded) || errs[1] == nil || !errors.As(errs[2], &re) {
		t.Fatalf("retries = %v", errs)
	}
	if re.After != 5*time.Millisecond || delays[2] < re.After {
		t.Errorf("reconnect after %v waited %v", re.After, delays[2])
	}
}

func TestSubscribeResumesFromCursor(t *testing.T) {
	f, srv := newFakeSSE(t, func(c *sseConn) {
		c.start("a@e:5,b@f:0")
		c.msg("a", "e", 5, "message", "1", "a@e:5,b@f:0") // already had it: dropped
		c.msg("a", "e", 6, "message", "2", "a@e:6,b@f:0")
		c.msg("b", "f", 1, "message", `"text"`, "a@e:6,b@f:1")
		c.msg("b", "f", 1, EventJoin, `{"client":"c1","user":"","transport":"sse"}`, "a@e:6,b@f:1")
		c.msg("a", "g", 0, EventGap, `{"reason":"cleared"}`, "a@g:0,b@f:1")
		c.msg("a", "g", 1, "message", "3", "a@g:1,b@f:1")
		c.hold()
	})
	sub := New(srv.URL).Subscribe(context.Background(), []string{"a", "b"}, SubscribeOptions{Cursor: "a@e:5"})
	defer sub.Close()
	got := collect(t, sub, 5)
	var seen []string
	for _, env := range got {
		seen = append(seen, fmt.Sprintf("%s %s:%d %s %s", env.Event, env.Channel, env.Offset, env.Data, env.Cursor))
	}
	want := []string{
		"message a:6 2 a@e:6,b@f:0",
		`message b:1 "text" a@e:6,b@f:1`,
		`crier.join b:1 {"client":"c1","user":"","transport":"sse"} a@e:6,b@f:1`,
		`crier.gap a:0 {"reason":"cleared"} a@g:0,b@f:1`,
		"message a:1 3 a@g:1,b@f:1",
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("envelopes:\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	if sub.Cursor() != "a@g:1,b@f:1" {
		t.Errorf("Cursor = %q", sub.Cursor())
	}
	r := f.requests()[0]
	if r.query.Get("cursor") != "a@e:5" || strings.Join(r.query["channel"], ",") != "a,b" || r.lastEventID != "" {
		t.Errorf("request = %+v", r)
	}
	if raw := string(got[0].Raw); !strings.HasPrefix(raw, `{"channel":"a","offset":6`) {
		t.Errorf("Raw = %s", raw)
	}
}

func TestSubscribeBackoff(t *testing.T) {
	const fails = 6
	f, srv := newFakeSSE(t, func(c *sseConn) {
		if len(c.r.Header.Values("Last-Event-ID")) > 1 {
			t.Error("several Last-Event-ID headers")
		}
		c.fail(http.StatusServiceUnavailable, "draining")
	})
	f.script = []func(*sseConn){}
	for range fails {
		f.script = append(f.script, func(c *sseConn) { c.fail(http.StatusServiceUnavailable, "draining") })
	}
	f.script = append(f.script, func(c *sseConn) {
		c.w.Header().Set("Content-Type", "text/event-stream")
		c.news(1, 1)
		c.hold()
	})
	var log retryLog
	base, maxDelay := 4*time.Millisecond, 32*time.Millisecond
	sub := New(srv.URL, WithBackoff(base, maxDelay)).Subscribe(context.Background(), []string{"news"},
		SubscribeOptions{OnRetry: log.record})
	defer sub.Close()
	collect(t, sub, 1)

	errs, delays := log.get()
	if len(errs) != fails {
		t.Fatalf("%d retries, want %d", len(errs), fails)
	}
	for i, d := range delays {
		ceil := min(base<<i, maxDelay)
		if d < ceil/2 || d > ceil {
			t.Errorf("delay %d = %v, want within [%v, %v]", i, d, ceil/2, ceil)
		}
		var ae *APIError
		if !errors.As(errs[i], &ae) || ae.Status != 503 || ae.Code != "draining" {
			t.Errorf("retry %d error = %v", i, errs[i])
		}
	}
}

func TestSubscribeRefused(t *testing.T) {
	tests := []struct {
		name  string
		step  func(c *sseConn)
		check func(err error) bool
	}{
		{"forbidden", func(c *sseConn) { c.fail(http.StatusForbidden, "forbidden") },
			func(err error) bool { return IsStatus(err, 403) && strings.Contains(err.Error(), "fake 403") }},
		{"bad request", func(c *sseConn) { c.fail(http.StatusBadRequest, "invalid_cursor") },
			func(err error) bool { var ae *APIError; return errors.As(err, &ae) && ae.Code == "invalid_cursor" }},
		{"not an event stream", func(c *sseConn) {
			c.w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(c.w, "<html>")
		}, func(err error) bool { var ce *contentTypeError; return errors.As(err, &ce) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFakeSSE(t, tt.step)
			sub := New(srv.URL, WithBackoff(time.Millisecond, time.Millisecond)).Subscribe(context.Background(), []string{"news"}, SubscribeOptions{})
			for range sub.Events() {
				t.Error("unexpected envelope")
			}
			if err := sub.Err(); !tt.check(err) {
				t.Errorf("Err = %v", err)
			}
			if n := len(f.requests()); n != 1 {
				t.Errorf("%d requests, want 1: a refusal is final", n)
			}
		})
	}
}

func TestSubscribeIdleTimeout(t *testing.T) {
	_, srv := newFakeSSE(t,
		func(c *sseConn) { // silent: no heartbeat
			c.start("")
			<-c.r.Context().Done()
		},
		func(c *sseConn) {
			c.start("")
			c.news(1, 1)
			c.hold()
		},
	)
	var log retryLog
	sub := New(srv.URL, WithIdleTimeout(50*time.Millisecond), WithBackoff(time.Millisecond, time.Millisecond)).
		Subscribe(context.Background(), []string{"news"}, SubscribeOptions{OnRetry: log.record})
	defer sub.Close()
	collect(t, sub, 1)
	if errs, _ := log.get(); len(errs) != 1 || !errors.Is(errs[0], errIdle) {
		t.Errorf("retries = %v", errs)
	}
}

// TestSubscribeSlowConsumer checks that a consumer slower than the idle timeout is not taken
// for a dead server.
func TestSubscribeSlowConsumer(t *testing.T) {
	f, srv := newFakeSSE(t, func(c *sseConn) {
		c.start("")
		c.news(1, 3)
		c.hold()
	})
	sub := New(srv.URL, WithIdleTimeout(150*time.Millisecond)).Subscribe(context.Background(), []string{"news"}, SubscribeOptions{})
	defer sub.Close()
	for i := range 3 {
		time.Sleep(300 * time.Millisecond)
		if env := collect(t, sub, 1)[0]; env.Offset != uint64(i+1) {
			t.Fatalf("envelope %d has offset %d", i, env.Offset)
		}
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestSubscribeEnds(t *testing.T) {
	hold := func(c *sseConn) { c.start(""); c.hold() }
	t.Run("close", func(t *testing.T) {
		_, srv := newFakeSSE(t, hold)
		sub := New(srv.URL).Subscribe(context.Background(), []string{"news"}, SubscribeOptions{})
		time.Sleep(20 * time.Millisecond)
		_ = sub.Close()
		if _, ok := <-sub.Events(); ok || sub.Err() != nil {
			t.Errorf("after Close: open=%v Err=%v", ok, sub.Err())
		}
	})
	t.Run("context", func(t *testing.T) {
		_, srv := newFakeSSE(t, hold)
		ctx, cancel := context.WithCancel(context.Background())
		sub := New(srv.URL).Subscribe(ctx, []string{"news"}, SubscribeOptions{})
		time.Sleep(20 * time.Millisecond)
		cancel()
		if _, ok := <-sub.Events(); ok || !errors.Is(sub.Err(), context.Canceled) {
			t.Errorf("after cancel: open=%v Err=%v", ok, sub.Err())
		}
	})
	t.Run("no channel", func(t *testing.T) {
		sub := New("http://127.0.0.1:1").Subscribe(context.Background(), nil, SubscribeOptions{})
		if _, ok := <-sub.Events(); ok || !errors.Is(sub.Err(), errNoChannel) {
			t.Errorf("open=%v Err=%v", ok, sub.Err())
		}
	})
	t.Run("close while server down", func(t *testing.T) {
		sub := New("http://127.0.0.1:1", WithBackoff(time.Hour, time.Hour)).Subscribe(context.Background(), []string{"x"}, SubscribeOptions{})
		time.Sleep(20 * time.Millisecond)
		_ = sub.Close()
		if sub.Err() != nil {
			t.Errorf("Err = %v", sub.Err())
		}
	})
}

func TestBackoff(t *testing.T) {
	b := backoff{base: 10 * time.Millisecond, max: 50 * time.Millisecond}
	for i, ceil := range []time.Duration{10, 20, 40, 50, 50, 50} {
		ceil *= time.Millisecond
		if d := b.next(); d < ceil/2 || d > ceil {
			t.Errorf("attempt %d: %v not in [%v, %v]", i, d, ceil/2, ceil)
		}
	}
	b.reset()
	if d := b.next(); d > 10*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
	huge := backoff{base: time.Hour, max: 1 << 62}
	for range 100 {
		if d := huge.next(); d <= 0 {
			t.Fatalf("overflow: %v", d)
		}
	}
}
