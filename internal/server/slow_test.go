package server

// Slow subscribers, end to end (SPEC section 3): a subscriber that stops reading is
// disconnected with a reason once past its queue limit, never slows the others, and resumes
// from its cursor.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/crier-push/crier/internal/config"
)

// dialRawSubscriber opens a TCP connection with a small receive buffer, sends request, and
// returns without reading anything: a subscriber that stopped reading.
func dialRawSubscriber(t testing.TB, base, request string) *net.TCPConn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := io.WriteString(nc, request); err != nil {
		t.Fatal(err)
	}
	return nc.(*net.TCPConn)
}

const wsUpgradeHead = "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// readAllFromServer reads c until the server closes it; it fails if the server does not.
func readAllFromServer(t testing.TB, c *net.TCPConn, within time.Duration) []byte {
	t.Helper()
	_ = c.SetReadBuffer(1 << 20) // read quickly what the server had written
	_ = c.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("the server did not close the connection: %v after %d bytes", err, len(b))
	}
	return b
}

// subscriberCount waits until the channel has n subscribers on the node.
func subscriberCount(t testing.TB, base, ch string, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		_, out := get(t, base+"/v1/channels/"+ch)
		got, _ := out["subscribers"].(float64)
		if int(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s has %v subscribers, want %d", ch, out["subscribers"], n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// parseRawSSE parses a response as a raw client saw it: the head, then events; an event cut
// off by the close is ignored. It returns the envelopes of whole events and the comments.
func parseRawSSE(t testing.TB, b []byte) (envs []envelope, comments []string) {
	t.Helper()
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) {
		t.Fatalf("not an SSE response: %q", b[:min(len(b), 200)])
	}
	blocks := strings.Split(string(body), "\n\n")
	for _, block := range blocks[:len(blocks)-1] { // the last one is unterminated
		var id string
		for line := range strings.SplitSeq(block, "\n") {
			switch {
			case strings.HasPrefix(line, ":"):
				comments = append(comments, line)
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "data: "):
				var e envelope
				if err := json.Unmarshal([]byte(line[6:]), &e); err != nil {
					t.Fatalf("SSE data is not an envelope: %v", err)
				}
				if e.Cursor != id {
					t.Fatalf("SSE id %q != cursor %q", id, e.Cursor)
				}
				envs = append(envs, e)
			}
		}
	}
	return envs, comments
}

// rawWSFrame is one frame a raw client read.
type rawWSFrame struct {
	op      ws.OpCode
	payload []byte
}

// parseRawWS parses what a raw WebSocket client saw: the 101, then whole frames; a frame cut
// off by the close ends it.
func parseRawWS(t testing.TB, b []byte) []rawWSFrame {
	t.Helper()
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		t.Fatalf("not a WebSocket handshake answer: %q", b[:min(len(b), 200)])
	}
	var frames []rawWSFrame
	r := bytes.NewReader(body)
	for r.Len() > 0 {
		h, err := ws.ReadHeader(r)
		if err != nil || int64(r.Len()) < h.Length {
			break
		}
		if h.Masked {
			t.Fatal("the server masked a frame")
		}
		p := make([]byte, h.Length)
		_, _ = io.ReadFull(r, p)
		frames = append(frames, rawWSFrame{op: h.OpCode, payload: p})
	}
	return frames
}

// wsBuffered is a WebSocket client that keeps what the handshake read past the 101.
type wsBuffered struct {
	nc net.Conn
	r  io.Reader
}

func dialWSBuffered(t testing.TB, rawURL string) *wsBuffered {
	t.Helper()
	p := wsDial(t, rawURL, nil)
	return &wsBuffered{nc: p.nc, r: p.r}
}

// frame reads the next frame.
func (c *wsBuffered) frame() (rawWSFrame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		return rawWSFrame{}, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return rawWSFrame{}, err
	}
	return rawWSFrame{op: h.OpCode, payload: p}, nil
}

// envelope reads text frames until one is an envelope (replies carry "ok").
func (c *wsBuffered) envelope() (envelope, error) {
	for {
		f, err := c.frame()
		if err != nil {
			return envelope{}, err
		}
		switch f.op {
		case ws.OpText:
		case ws.OpPing, ws.OpPong:
			continue
		default:
			return envelope{}, fmt.Errorf("frame %v: %q", f.op, f.payload)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(f.payload, &m); err != nil {
			return envelope{}, fmt.Errorf("not JSON: %q", f.payload)
		}
		if _, reply := m["ok"]; reply {
			continue
		}
		var e envelope
		if err := json.Unmarshal(f.payload, &e); err != nil {
			return envelope{}, err
		}
		return e, nil
	}
}

// checkRun checks that envs are one channel's offsets from first on, gap-free.
func checkRun(t testing.TB, who string, envs []envelope, first uint64) {
	t.Helper()
	for i, e := range envs {
		if e.Offset != first+uint64(i) {
			t.Fatalf("%s: envelope %d has offset %d, want %d", who, i, e.Offset, first+uint64(i))
		}
	}
}

func TestSlowSubscribers(t *testing.T) {
	const (
		ch        = "slow:lane"
		size      = 32 << 10
		queueSize = 64
		queueB    = 512 << 10
	)
	ts := startServer(t, func(c *config.Config) {
		c.QueueSize = queueSize
		c.QueueBytes = queueB
		c.HistorySize = 100000
	})

	// Fast subscribers read all along.
	fastSSE := openSSE(t, ts.URL+"/v1/sse?channel="+ch)
	fastWS := dialWSBuffered(t, ts.URL+"/v1/ws?channel="+ch)
	// Each reads into its channel all along; an error ends it.
	type got struct {
		env envelope
		err error
	}
	fastSSEc, fastWSc := make(chan got, 100000), make(chan got, 100000)
	go func() {
		for {
			ev, err := fastSSE.Next()
			var e envelope
			if err == nil {
				err = json.Unmarshal([]byte(ev.Data), &e)
			}
			fastSSEc <- got{e, err}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			_ = fastWS.nc.SetReadDeadline(time.Now().Add(time.Minute))
			e, err := fastWS.envelope()
			fastWSc <- got{e, err}
			if err != nil {
				return
			}
		}
	}()

	// Slow subscribers send their request and never read.
	path := "/v1/sse?channel=" + url.QueryEscape(ch)
	slowSSE := dialRawSubscriber(t, ts.URL, "GET "+path+" HTTP/1.1\r\nHost: localhost\r\n\r\n")
	path = "/v1/ws?channel=" + url.QueryEscape(ch)
	slowWS := dialRawSubscriber(t, ts.URL, "GET "+path+" HTTP/1.1\r\nHost: localhost\r\n"+wsUpgradeHead)
	subscriberCount(t, ts.URL, ch, 4)
	conns := ts.Server.conns
	if n := conns.SlowDisconnects(); n != 0 {
		t.Fatalf("SlowDisconnects = %d before any publish", n)
	}

	// Publish until both slow subscribers are cut off; the kernel takes megabytes of what a
	// peer does not read before the server's queue fills.
	payload := strings.Repeat("a", size)
	var n uint64
	start := time.Now()
	for conns.SlowDisconnects() < 2 {
		if n > 2000 {
			t.Fatalf("after %d publishes (%d MiB), SlowDisconnects = %d", n, n*size>>20, conns.SlowDisconnects())
		}
		n++
		if st, out := publish(t, ts.URL, ch, "text/plain", payload); st != 201 || out["offset"] != float64(n) {
			t.Fatalf("publish %d: %d %v", n, st, out)
		}
	}
	// Some more, that the slow ones will only get by resuming.
	for range 5 {
		n++
		if st, _ := publish(t, ts.URL, ch, "text/plain", payload); st != 201 {
			t.Fatalf("publish %d: %d", n, st)
		}
	}
	t.Logf("both slow subscribers cut off after %d publishes of %d KiB in %s", n-5, size>>10, time.Since(start).Round(time.Millisecond))

	// The fast ones got everything, in order, promptly.
	for who, c := range map[string]chan got{"fast SSE": fastSSEc, "fast WS": fastWSc} {
		var envs []envelope
		for len(envs) < int(n) {
			select {
			case g := <-c:
				if g.err != nil {
					t.Fatalf("%s: %v after %d envelopes", who, g.err, len(envs))
				}
				envs = append(envs, g.env)
			case <-time.After(5 * time.Second):
				t.Fatalf("%s fell behind: %d envelopes of %d", who, len(envs), n)
			}
		}
		checkRun(t, who, envs, 1)
	}

	// The server let go of the slow ones: their subscriptions and connections are gone, and
	// nothing of theirs is held.
	subscriberCount(t, ts.URL, ch, 2)
	if open := conns.Open(); open != 2 {
		t.Fatalf("%d connections open, want the 2 fast ones", open)
	}
	if v := slowMetric(t, ts.URL, "crier_slow_disconnects_total"); v != 2 {
		t.Fatalf("crier_slow_disconnects_total = %v", v)
	}

	// Each slow one finds its connection closed by the server, after whole messages and
	// perhaps part of one, and resumes from the last cursor it has.
	sseEnvs, comments := parseRawSSE(t, readAllFromServer(t, slowSSE, 5*time.Second))
	if len(sseEnvs) == 0 {
		t.Fatal("the slow SSE subscriber got no whole message")
	}
	checkRun(t, "slow SSE", sseEnvs, 1)
	for _, c := range comments {
		if strings.HasPrefix(c, ": closing") && c != ": closing: slow_subscriber" {
			t.Fatalf("slow SSE goodbye %q", c)
		}
	}
	lastSSE := sseEnvs[len(sseEnvs)-1]
	resumed := openSSE(t, ts.URL+"/v1/sse?cursor="+url.QueryEscape(lastSSE.Cursor))
	var rest []envelope
	for len(rest) == 0 || rest[len(rest)-1].Offset < n {
		rest = append(rest, resumed.NextEnvelope(t))
	}
	checkRun(t, "resumed SSE", rest, lastSSE.Offset+1)

	frames := parseRawWS(t, readAllFromServer(t, slowWS, 5*time.Second))
	var wsEnvs []envelope
	for i, f := range frames {
		switch f.op {
		case ws.OpText:
			var e envelope
			if err := json.Unmarshal(f.payload, &e); err != nil {
				t.Fatalf("slow WS frame %d: %q", i, f.payload)
			}
			wsEnvs = append(wsEnvs, e)
		case ws.OpClose:
			// Written only if the socket had room for it: then 1008 with the reason.
			code, reason := ws.ParseCloseFrameData(f.payload)
			if code != 1008 || !strings.HasPrefix(reason, "slow_subscriber") || i != len(frames)-1 {
				t.Fatalf("slow WS close frame %d %q (frame %d of %d)", code, reason, i, len(frames))
			}
		default:
			t.Fatalf("slow WS frame %v", f.op)
		}
	}
	if len(wsEnvs) == 0 {
		t.Fatal("the slow WS subscriber got no whole message")
	}
	checkRun(t, "slow WS", wsEnvs, 1)
	lastWS := wsEnvs[len(wsEnvs)-1]
	wsResumed := dialWSBuffered(t, ts.URL+"/v1/ws?cursor="+url.QueryEscape(lastWS.Cursor))
	rest = rest[:0]
	for len(rest) == 0 || rest[len(rest)-1].Offset < n {
		e, err := wsResumed.envelope()
		if err != nil {
			t.Fatalf("resumed WS: %v after %d envelopes", err, len(rest))
		}
		rest = append(rest, e)
	}
	checkRun(t, "resumed WS", rest, lastWS.Offset+1)
	if n := conns.SlowDisconnects(); n != 2 {
		t.Fatalf("SlowDisconnects = %d at the end", n)
	}
}

// slowMetric reads one unlabelled value from /metrics.
func slowMetric(t testing.TB, base, name string) float64 {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		var v float64
		if strings.HasPrefix(sc.Text(), name+" ") {
			if _, err := fmt.Sscan(strings.TrimPrefix(sc.Text(), name+" "), &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}
