package server

// Limits end to end (SPEC section 7): connections in all and per IP, the publish rate per
// token and per IP, request bodies, the slowloris timeouts, and the memory a subscriber that
// stops reading may cost.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/config"
)

func TestTooManyConnectionsPerIP(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxConnsPerIP = 2 })
	first := openSSE(t, ts.URL+"/v1/sse?channel=news")
	second := wsOpen(t, ts.URL, "channel=news")
	second.sync()

	res, b := rawDo(t, "GET", ts.URL+"/v1/sse?channel=news", nil)
	checkError(t, res, b, 429, "too_many_connections")
	res, b = wsHandshake(t, ts.URL+"/v1/ws?channel=news", nil)
	checkError(t, res, b, 429, "too_many_connections")
	if !strings.Contains(string(b), "your address") {
		t.Fatalf("the reason does not say which limit: %s", b)
	}
	// Plain requests are not streaming connections: they still work, and the two streams too.
	healthy(t, ts.URL)
	mustPublish(t, ts.URL, "news", "text/plain", "hi")
	if e := first.NextEnvelope(t); e.Offset != 1 {
		t.Fatalf("SSE got %+v", e)
	}
	if e := second.envelope(); e.Offset != 1 {
		t.Fatalf("WS got %+v", e)
	}
	// A connection that ends gives its place back.
	first.res.Body.Close()
	eventually(t, "a place frees up", func() bool {
		res, _ := wsHandshake(t, ts.URL+"/v1/ws?channel=news", nil)
		return res.StatusCode == 101
	})
}

func TestTooManyConnectionsInAll(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxConns = 1 })
	c := openSSE(t, ts.URL+"/v1/sse?channel=news")
	// A stream subscribes before its head is written: a client that has the head is counted.
	subscribers := func() any { _, out := get(t, ts.URL+"/v1/channels/news"); return out["subscribers"] }
	if n := subscribers(); n != float64(1) {
		t.Fatalf("subscribers %v once the first stream's head came", n)
	}
	res, b := rawDo(t, "GET", ts.URL+"/v1/sse?channel=news", nil)
	checkError(t, res, b, 429, "too_many_connections")
	if !strings.Contains(string(b), "this server") {
		t.Fatalf("the reason does not say which limit: %s", b)
	}
	// A refused request left no subscription behind.
	if n := subscribers(); n != float64(1) {
		t.Fatalf("subscribers %v", n)
	}
	_ = c
	healthy(t, ts.URL)
}

func TestPublishRate(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, func(c *config.Config) {
		c.PublishRate = "2/m" // a burst of 2, then one every 30 s: nothing refills during the test
		c.TrustedProxies = []string{"127.0.0.1"}
	})
	alice, bob := mint(t, "alice", nil, []string{"**"}), mint(t, "bob", nil, []string{"**"})
	pub := func(cred, ip string) (*http.Response, []byte) {
		return rawDo(t, "POST", ts.URL+"/v1/channels/rate", []byte("x"), "Content-Type", "text/plain",
			"Authorization", "Bearer "+cred, "X-Forwarded-For", ip)
	}
	for i := range 2 {
		if res, b := pub(alice, "192.0.2.1"); res.StatusCode != 201 {
			t.Fatalf("publish %d within the burst: %d %s", i, res.StatusCode, b)
		}
	}
	limited := func(res *http.Response, b []byte) {
		t.Helper()
		checkError(t, res, b, 429, "rate_limited")
		if ra := res.Header.Get("Retry-After"); ra != "30" {
			t.Fatalf("Retry-After %q, want 30", ra)
		}
	}
	limited(pub(alice, "192.0.2.1"))
	limited(pub(alice, "192.0.2.2")) // per token, wherever it comes from
	limited(pub(bob, "192.0.2.1"))   // per IP, whoever publishes
	if res, b := pub(bob, "192.0.2.3"); res.StatusCode != 201 {
		t.Fatalf("bob from elsewhere: %d %s", res.StatusCode, b)
	}
	if res, b := pub(testAPIKey, "192.0.2.1"); res.StatusCode != 201 {
		t.Fatalf("API keys are not limited: %d %s", res.StatusCode, b)
	}
	// IPv6 clients count by their /64.
	carol := mint(t, "carol", nil, []string{"**"})
	dave := mint(t, "dave", nil, []string{"**"})
	pub(carol, "2001:db8::1")
	pub(carol, "2001:db8::2")
	limited(pub(dave, "2001:db8::ffff"))

	// A batch takes what is left and refuses the rest one by one; nothing left is a 429.
	erin := mint(t, "erin", nil, []string{"**"})
	batch := []byte(`{"messages":[{"channel":"rate","data":1},{"channel":"rate","data":2},{"channel":"rate","data":3}]}`)
	res, b := rawDo(t, "POST", ts.URL+"/v1/publish", batch, "Authorization", "Bearer "+erin, "X-Forwarded-For", "192.0.2.9")
	var out struct {
		Results []struct {
			Offset uint64
			Error  *struct{ Code string }
		}
	}
	if res.StatusCode != 200 || json.Unmarshal(b, &out) != nil || len(out.Results) != 3 || out.Results[1].Offset == 0 ||
		out.Results[2].Error == nil || out.Results[2].Error.Code != "rate_limited" {
		t.Fatalf("batch over the rate: %d %s", res.StatusCode, b)
	}
	res, b = rawDo(t, "POST", ts.URL+"/v1/publish", batch, "Authorization", "Bearer "+erin, "X-Forwarded-For", "192.0.2.10")
	limited(res, b)

	// The WebSocket publish op shares the limits.
	frank := mint(t, "frank", nil, []string{"**"})
	p := wsDial(t, ts.URL+"/v1/ws?token="+url.QueryEscape(frank), http.Header{"X-Forwarded-For": {"192.0.2.20"}})
	p.ok(map[string]any{"id": 1, "op": "publish", "channel": "rate", "data": 1})
	p.ok(map[string]any{"id": 2, "op": "publish", "channel": "rate", "data": 2})
	wsExpectError(t, p, map[string]any{"id": 3, "op": "publish", "channel": "rate", "data": 3}, "rate_limited")
	p.sync() // the connection stays open
	healthy(t, ts.URL)
}

func TestBodyLimits(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxMessageSize = 1000 })
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/x", bytes.Repeat([]byte("a"), 1001), "Content-Type", "text/plain")
	checkError(t, res, b, 413, "message_too_large")
	mustPublish(t, ts.URL, "x", "text/plain", strings.Repeat("a", 1000))
	// A batch may hold config.BatchBodyFactor messages' worth, at least config.MinBatchBody.
	big := `{"messages":[{"channel":"x","data":"` + strings.Repeat("a", config.MinBatchBody) + `"}]}`
	res, b = rawDo(t, "POST", ts.URL+"/v1/publish", []byte(big), "Content-Type", "application/json")
	checkError(t, res, b, 413, "message_too_large")
	// Without a Content-Length (chunked), the limit holds as well.
	req, _ := http.NewRequest("POST", ts.URL+"/v1/channels/x", io.MultiReader(strings.NewReader(strings.Repeat("b", 600)), strings.NewReader(strings.Repeat("b", 600))))
	req.ContentLength = -1
	res2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res2.Body)
	res2.Body.Close()
	checkError(t, res2, b, 413, "message_too_large")
	if h := history(t, ts.URL, "x", ""); h.Offset != 1 {
		t.Fatalf("offset %d after refused bodies", h.Offset)
	}
	healthy(t, ts.URL)
}

// dialRaw opens a TCP connection to the server.
func dialRaw(t testing.TB, base string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// closedWithin reads nc until the server closes it, which must happen between min and max
// from now; it returns what was read.
func closedWithin(t testing.TB, nc net.Conn, min, max time.Duration) []byte {
	t.Helper()
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(max + time.Second))
	b, err := io.ReadAll(nc)
	took := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("still open after %s", took)
	}
	if took < min || took > max {
		t.Fatalf("closed after %s, want between %s and %s", took, min, max)
	}
	return b
}

func TestHeaderTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.HeaderTimeout = 300 * time.Millisecond })
	nc := dialRaw(t, ts.URL)
	// Half a header, then nothing: the slowloris.
	if _, err := io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	b := closedWithin(t, nc, 200*time.Millisecond, 1500*time.Millisecond)
	if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 408")) {
		t.Fatalf("answer to a timed-out header: %q", b)
	}
	healthy(t, ts.URL)
}

func TestReadTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.ReadTimeout = 300 * time.Millisecond })
	nc := dialRaw(t, ts.URL)
	// A body that promises 100 bytes and sends 10.
	if _, err := io.WriteString(nc, "POST /v1/channels/slow HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"+
		"Content-Length: 100\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(2 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	checkError(t, res, b, 408, "request_timeout")
	if took := time.Since(start); took < 200*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("answered after %s", took)
	}
	if h := history(t, ts.URL, "slow", ""); h.Offset != 0 {
		t.Fatal("a stalled body was published")
	}
	healthy(t, ts.URL)
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.IdleTimeout = 300 * time.Millisecond })
	nc := dialRaw(t, ts.URL)
	br := bufio.NewReader(nc)
	if _, err := io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", res, err)
	}
	_, _ = io.ReadAll(res.Body)
	// Kept alive, then closed once idle for the timeout.
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(2 * time.Second))
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("idle connection: read %d, %v", n, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("idle connection closed after %s", took)
	}
}

func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.WriteTimeout = 300 * time.Millisecond })
	const size, count = 64 << 10, 120 // 7.5 MiB of history: more than the kernel buffers between the two ends
	payload := strings.Repeat("w", size)
	for range count {
		mustPublish(t, ts.URL, "big", "text/plain", payload)
	}
	// A client that asks and does not read: the answer is cut after the write timeout.
	nc := dialRawSubscriber(t, ts.URL, "GET /v1/channels/big/messages?limit=120 HTTP/1.1\r\nHost: localhost\r\n\r\n")
	time.Sleep(600 * time.Millisecond)
	got := readAllFromServer(t, nc, 2*time.Second)
	if len(got) >= size*count {
		t.Fatalf("read %d bytes of an answer of more than %d from a client that did not read", len(got), size*count)
	}
	healthy(t, ts.URL)
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestSlowSubscriberMemory: a subscriber that stops reading while 50 MB is published on its
// channel is cut off, the others get everything, and the server's live heap stays within a few
// MB of where it started (SPEC section 3: a slow subscriber never grows memory without bound).
func TestSlowSubscriberMemory(t *testing.T) {
	// Not parallel: the heap is the whole process's.
	const (
		ch   = "mem"
		size = 64 << 10
	)
	count := int64(800) // 50 MiB
	if raceEnabled {
		count = 400 // the race detector's readers are several times slower; 25 MiB is past the cut too
	}
	ts := startServer(t, func(c *config.Config) {
		c.HistorySize = 1 // history is not what is measured
		c.QueueBytes = 2 << 20
	})
	var sseGot, wsGot atomic.Int64
	var readers sync.WaitGroup
	fastSSE := openSSE(t, ts.URL+"/v1/sse?channel="+ch)
	fastWS := dialWSBuffered(t, ts.URL+"/v1/ws?channel="+ch)
	readers.Go(func() {
		for sseGot.Load() < count {
			if _, err := fastSSE.Next(); err != nil {
				return
			}
			sseGot.Add(1)
		}
	})
	readers.Go(func() {
		for wsGot.Load() < count {
			f, err := fastWS.frame()
			if err != nil {
				return
			}
			if f.op == ws.OpText && bytes.HasPrefix(f.payload, []byte(`{"channel"`)) {
				wsGot.Add(1)
			}
		}
	})
	slow := dialRawSubscriber(t, ts.URL, "GET /v1/sse?channel="+ch+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
	subscriberCount(t, ts.URL, ch, 3)

	base := heapInUse()
	var peak atomic.Uint64
	payload := strings.Repeat("m", size)
	var published atomic.Int64
	var pubs sync.WaitGroup
	for range 2 {
		pubs.Go(func() {
			client := &http.Client{}
			for published.Load() < count {
				n := published.Add(1)
				if n > count {
					return
				}
				// The fast subscribers read at their pace: keep them within a few messages,
				// so that what grows is only what the slow one is owed.
				for n-min(sseGot.Load(), wsGot.Load()) > 16 {
					time.Sleep(100 * time.Microsecond)
				}
				res, err := client.Post(ts.URL+"/v1/channels/"+ch, "text/plain", strings.NewReader(payload))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 201 {
					t.Errorf("publish %d: %d", n, res.StatusCode)
					return
				}
				if n%100 == 0 {
					h := heapInUse()
					for p := peak.Load(); h > p && !peak.CompareAndSwap(p, h); p = peak.Load() {
					}
				}
			}
		})
	}
	pubs.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for sseGot.Load() < count || wsGot.Load() < count {
		if time.Now().After(deadline) {
			t.Fatalf("the fast subscribers got %d (SSE) and %d (WS) of %d", sseGot.Load(), wsGot.Load(), count)
		}
		time.Sleep(5 * time.Millisecond)
	}
	readers.Wait()
	// The slow one was cut off, with a reason, and let go of.
	if n := ts.Server.conns.SlowDisconnects(); n != 1 {
		t.Fatalf("SlowDisconnects = %d, want the one slow subscriber", n)
	}
	subscriberCount(t, ts.URL, ch, 2)
	end := heapInUse()
	mb := func(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	t.Logf("live heap: %s at the start, %s at the peak, %s at the end, after %d MiB published",
		mb(base), mb(peak.Load()), mb(end), count*size>>20)
	// The slow subscriber's queue is bounded by --queue-bytes (2 MiB here); the fast ones'
	// queues hold what the loopback has not taken yet.
	limit := uint64(12 << 20)
	if raceEnabled {
		limit *= 2 // the race detector's readers fall further behind
	}
	if peak.Load() > base+limit {
		t.Fatalf("live heap grew from %s to %s while publishing", mb(base), mb(peak.Load()))
	}
	if end > base+4<<20 {
		t.Fatalf("live heap grew from %s to %s", mb(base), mb(end))
	}
	b := readAllFromServer(t, slow, 5*time.Second)
	if !bytes.Contains(b, []byte(": closing: slow_subscriber")) && len(b) == 0 {
		t.Fatal("the slow subscriber got nothing")
	}
	healthy(t, ts.URL)
}
