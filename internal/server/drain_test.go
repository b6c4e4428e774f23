package server

// The drain on SIGTERM (SPEC section 8), in process: cmd/crier cancels Serve's context on
// SIGTERM, which is what these tests do.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/store/bolt"
)

// rawHTTP is an HTTP/1.1 client connection driven by hand, to hold a request half sent.
type rawHTTP struct {
	nc net.Conn
	br *bufio.Reader
}

func dialRawHTTP(t testing.TB, base string) *rawHTTP {
	t.Helper()
	u, _ := url.Parse(base)
	nc, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawHTTP{nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawHTTP) write(t testing.TB, s string) {
	t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		t.Fatal(err)
	}
}

// response reads one response, body included.
func (c *rawHTTP) response(t testing.TB, method string) (*http.Response, []byte) {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

// afterMS returns data.after_ms of a crier.reconnect envelope.
func afterMS(t testing.TB, e envelope) int64 {
	t.Helper()
	var d struct {
		AfterMS *int64 `json:"after_ms"`
	}
	if err := json.Unmarshal(e.Data, &d); err != nil || d.AfterMS == nil {
		t.Fatalf("crier.reconnect data %s has no after_ms", e.Data)
	}
	return *d.AfterMS
}

// sseUntilEnd reads envelopes until the stream ends.
func sseUntilEnd(t testing.TB, c *sseClient) []envelope {
	t.Helper()
	var out []envelope
	for {
		ev, err := c.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("SSE read: %v", err)
		}
		var e envelope
		if err := json.Unmarshal([]byte(ev.Data), &e); err != nil || ev.ID != e.Cursor || ev.Event != e.Event {
			t.Fatalf("SSE event %+v (%v)", ev, err)
		}
		out = append(out, e)
	}
}

// wsUntilEnd reads envelopes until the close frame, then checks that the connection ends.
func wsUntilEnd(t testing.TB, c *wsBuffered) (envs []envelope, code ws.StatusCode, reason string) {
	t.Helper()
	for {
		f, err := c.frame()
		if err != nil {
			t.Fatalf("WS read: %v after %d envelopes, no close frame", err, len(envs))
		}
		switch f.op {
		case ws.OpText:
			var e envelope
			if err := json.Unmarshal(f.payload, &e); err != nil {
				t.Fatalf("WS text %q", f.payload)
			}
			envs = append(envs, e)
		case ws.OpClose:
			code, reason = ws.ParseCloseFrameData(f.payload)
			if _, err := c.frame(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the close frame: %v, want the connection to end", err)
			}
			return envs, code, reason
		}
	}
}

// parseCursorText maps a cursor's channels to EPOCH:OFFSET.
func parseCursorText(cur string) map[string]string {
	out := map[string]string{}
	for entry := range strings.SplitSeq(cur, ",") {
		if ch, pos, ok := strings.Cut(entry, "@"); ok {
			out[ch] = pos
		}
	}
	return out
}

func TestDrain(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, func(c *config.Config) {
		c.Memory = false // the durable store, reopened below to find the in-flight publish
		c.DataDir = dir
	})
	const a, b = "drain:a", "drain:b"

	// Subscribers of every kind: SSE on one channel and on two, WebSocket by query and by command.
	sseA := openSSE(t, ts.URL+"/v1/sse?channel="+a)
	sseAB := openSSE(t, ts.URL+"/v1/sse?channel="+a+"&channel="+b)
	wsA := dialWSBuffered(t, ts.URL+"/v1/ws?channel="+a)
	wsB := dialWSBuffered(t, ts.URL+"/v1/ws")
	if _, err := wsB.nc.Write(maskedText(`{"id":1,"op":"subscribe","channel":"` + b + `"}`)); err != nil {
		t.Fatal(err)
	}
	subscriberCount(t, ts.URL, a, 3)
	subscriberCount(t, ts.URL, b, 2)
	first := map[string]publishAnswerDrain{}
	for _, ch := range []string{a, b} {
		first[ch] = publishDrain(t, ts.URL, ch, `{"n":1}`)
	}
	if e := sseA.NextEnvelope(t); e.Channel != a || e.Offset != 1 {
		t.Fatalf("sseA got %+v", e)
	}
	for range 2 {
		if e := sseAB.NextEnvelope(t); e.Offset != 1 {
			t.Fatalf("sseAB got %+v", e)
		}
	}
	for _, c := range []*wsBuffered{wsA, wsB} {
		if e, err := c.envelope(); err != nil || e.Offset != 1 {
			t.Fatalf("WS got %+v (%v)", e, err)
		}
	}

	// A connection that is open and idle, and a publish under way: its head is read and its
	// handler waits for the body (the 100 Continue says so).
	idle := dialRawHTTP(t, ts.URL)
	idle.write(t, "GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	if res, body := idle.response(t, "GET"); res.StatusCode != 200 {
		t.Fatalf("/readyz before the drain: %d %s", res.StatusCode, body)
	}
	const inflight = `{"n":2,"in":"flight"}`
	pub := dialRawHTTP(t, ts.URL)
	pub.write(t, "POST /v1/channels/"+a+" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"+
		"Expect: 100-continue\r\nContent-Length: "+itoa(len(inflight))+"\r\n\r\n")
	_ = pub.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := pub.br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("expected 100 Continue, got %q (%v)", line, err)
	}
	if _, err := pub.br.ReadString('\n'); err != nil { // the blank line ending the 100
		t.Fatal(err)
	}

	// SIGTERM.
	ts.cancel()

	// No new connections: once the listener is closed, connecting is refused.
	addr := strings.TrimPrefix(ts.URL, "http://")
	deadline := time.Now().Add(3 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		switch {
		case err == nil:
			nc.Close()
		case errors.Is(err, syscall.ECONNRESET):
			// Connected as the listener closed, with the connection still in its backlog.
		case !errors.Is(err, syscall.ECONNREFUSED):
			t.Fatalf("connecting while draining: %v, want connection refused", err)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted while draining")
		}
		time.Sleep(2 * time.Millisecond)
	}

	// Readiness fails, on a connection that was already open.
	idle.write(t, "GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	res, body := idle.response(t, "GET")
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"draining"`) {
		t.Fatalf("/readyz while draining: %d %s", res.StatusCode, body)
	}
	if !res.Close {
		t.Fatal("an answer while draining does not close the connection")
	}

	// The publish under way finishes, and is acknowledged.
	pub.write(t, inflight)
	res, body = pub.response(t, "POST")
	var ack publishAnswerDrain
	if err := json.Unmarshal(body, &ack); err != nil || res.StatusCode != http.StatusCreated || ack.Offset != 2 {
		t.Fatalf("the publish under way: %d %s", res.StatusCode, body)
	}

	// Every subscriber gets what was published, then crier.reconnect standing where it stands,
	// then its connection ends.
	checkReconnect := func(who string, envs []envelope, wantOffsets map[string]uint64) {
		t.Helper()
		if len(envs) == 0 {
			t.Fatalf("%s: no crier.reconnect", who)
		}
		rec := envs[len(envs)-1]
		if rec.Event != "crier.reconnect" {
			t.Fatalf("%s: last event %q, want crier.reconnect (got %d envelopes)", who, rec.Event, len(envs))
		}
		if ms := afterMS(t, rec); ms <= 0 {
			t.Fatalf("%s: after_ms = %d", who, ms)
		}
		cur := parseCursorText(rec.Cursor)
		if len(cur) != len(wantOffsets) {
			t.Fatalf("%s: reconnect cursor %q", who, rec.Cursor)
		}
		for ch, off := range wantOffsets {
			if want := first[ch].Epoch + ":" + itoa(int(off)); cur[ch] != want {
				t.Fatalf("%s: reconnect cursor %q, want %s at %s", who, rec.Cursor, ch, want)
			}
		}
		for _, e := range envs[:len(envs)-1] {
			if e.Event == "crier.reconnect" {
				continue // one per channel may come before the connection ends
			}
			if e.Channel != a || e.Offset != 2 || string(e.Data) != inflight {
				t.Fatalf("%s: before the reconnect, %+v", who, e)
			}
		}
	}
	checkReconnect("SSE on a", sseUntilEnd(t, sseA), map[string]uint64{a: 2})
	checkReconnect("SSE on a and b", sseUntilEnd(t, sseAB), map[string]uint64{a: 2, b: 1})
	for who, c := range map[string]*wsBuffered{"WS on a": wsA, "WS on b": wsB} {
		envs, code, reason := wsUntilEnd(t, c)
		want := map[string]uint64{a: 2}
		if who == "WS on b" {
			want = map[string]uint64{b: 1}
		}
		checkReconnect(who, envs, want)
		if code != ws.StatusGoingAway || !strings.HasPrefix(reason, "draining") {
			t.Fatalf("%s: close %d %q, want 1001 draining", who, code, reason)
		}
	}

	// Serve returns, and the acknowledged publish is in the store.
	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		ts.cancel = nil
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	st, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h, err := st.Read(context.Background(), a, first[a].Epoch, 1, 0)
	if err != nil || len(h.Messages) != 1 || h.Messages[0].Offset != 2 || string(h.Messages[0].Data) != inflight {
		t.Fatalf("history of %s after the drain: %+v (%v)", a, h, err)
	}
}

// TestDrainIdleConnections: a connection with no subscription is closed with a goodbye too,
// at once.
func TestDrainIdleConnections(t *testing.T) {
	ts := startServer(t, nil)
	bare := dialWSBuffered(t, ts.URL+"/v1/ws")
	if _, err := bare.nc.Write(maskedText(`{"id":1,"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := bare.frame(); err != nil || f.op != ws.OpText {
		t.Fatalf("ping reply: %v %v", f.op, err)
	}
	start := time.Now()
	ts.Stop()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("draining a node with one idle WebSocket took %s", d)
	}
	envs, code, _ := wsUntilEnd(t, bare)
	if len(envs) != 0 || code != ws.StatusGoingAway {
		t.Fatalf("an idle WebSocket got %d envelopes and close %d", len(envs), code)
	}
	if n := ts.Server.conns.Open(); n != 0 {
		t.Fatalf("%d connections left open", n)
	}
}

type publishAnswerDrain struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
	Cursor  string `json:"cursor"`
}

func publishDrain(t testing.TB, base, ch, body string) publishAnswerDrain {
	t.Helper()
	res, err := http.Post(base+"/v1/channels/"+ch, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out publishAnswerDrain
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("publish on %s: %d (%v)", ch, res.StatusCode, err)
	}
	return out
}

// maskedText is a client text frame.
func maskedText(s string) []byte {
	p := []byte(s)
	mask := [4]byte{1, 2, 3, 4}
	var h []byte
	w := appenderDrain{&h}
	_ = ws.WriteHeader(w, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: int64(len(p))})
	ws.Cipher(p, mask, 0)
	return append(h, p...)
}

type appenderDrain struct{ b *[]byte }

func (a appenderDrain) Write(p []byte) (int, error) { *a.b = append(*a.b, p...); return len(p), nil }

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// TestDrainKeptAlivePublishers: a publisher's kept-alive connection, which internal/keepalive
// serves after its first publish, is closed at once by the drain when idle; one with a publish
// under way gets its answer, with Connection: close, and the publish is kept.
func TestDrainKeptAlivePublishers(t *testing.T) {
	ts := startServer(t, nil)
	idle, busy := dialRawHTTP(t, ts.URL), dialRawHTTP(t, ts.URL)
	pub := func(c *rawHTTP, body string) {
		c.write(t, "POST /v1/channels/kept HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: "+
			itoa(len(body))+"\r\n\r\n"+body)
	}
	for _, c := range []*rawHTTP{idle, busy} {
		for i := range 2 {
			pub(c, "m"+itoa(i))
			if res, b := c.response(t, "POST"); res.StatusCode != http.StatusCreated || res.Close {
				t.Fatalf("publish: %d %s (close %t)", res.StatusCode, b, res.Close)
			}
		}
	}
	if v := metricValue(t, ts.URL, "crier_publisher_connections"); v != 2 {
		t.Fatalf("crier_publisher_connections %v, want 2", v)
	}
	// Half a publish: its body has not all arrived when the drain starts.
	busy.write(t, "POST /v1/channels/kept HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nla")
	time.Sleep(50 * time.Millisecond)
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		ts.Stop()
		close(stopped)
	}()
	_ = idle.nc.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idle.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle publisher connection: %v, want closed", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("idle publisher connection closed after %s", d)
	}
	busy.write(t, "st")
	res, b := busy.response(t, "POST")
	if res.StatusCode != http.StatusCreated || !res.Close {
		t.Fatalf("publish under way during the drain: %d %s (close %t), want 201 closing", res.StatusCode, b, res.Close)
	}
	<-stopped
	if n := ts.Server.ka.Open(); n != 0 {
		t.Fatalf("%d adopted connections left", n)
	}
}
