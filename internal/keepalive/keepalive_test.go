package keepalive

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// echo answers with who served the request (keepalive or net/http) and what it saw. A query
// status=N answers N; sleep=D sleeps first; big=N writes N bytes.
func echo(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("skip") { // leaves the body unread
		w.Header().Set("X-By", "skipped")
		return
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, os.ErrDeadlineExceeded) {
			status = http.StatusRequestTimeout
		}
		http.Error(w, "body: "+err.Error(), status)
		return
	}
	q := r.URL.Query()
	if d, err := time.ParseDuration(q.Get("sleep")); err == nil {
		time.Sleep(d)
	}
	by := "net/http"
	if _, ok := w.(*response); ok {
		by = "keepalive"
	}
	if n, err := strconv.Atoi(q.Get("big")); err == nil {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write([]byte(strings.Repeat("x", n)))
		return
	}
	w.Header().Set("X-By", by)
	w.Header().Set("X-Echo", r.Header.Get("X-Test"))
	w.Header().Set("Content-Type", "text/plain")
	if s, err := strconv.Atoi(q.Get("status")); err == nil {
		w.WriteHeader(s)
	}
	fmt.Fprintf(w, "%s %s %s host=%s remote=%t body=%s", by, r.Method, r.URL.RequestURI(), r.Host, r.RemoteAddr != "", b)
}

type testServer struct {
	addr string
	ka   *Server
	hs   *http.Server
}

func start(t *testing.T, mutate func(*Config)) *testServer {
	t.Helper()
	cfg := Config{
		Handler:        http.HandlerFunc(echo),
		Eligible:       func(method, path string) bool { return method == http.MethodPost && strings.HasPrefix(path, "/pub") },
		HeaderTimeout:  2 * time.Second,
		ReadTimeout:    2 * time.Second,
		IdleTimeout:    5 * time.Second,
		WriteTimeout:   2 * time.Second,
		MaxHeaderBytes: 4 << 10,
		MaxBody:        64 << 10,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ka := New(cfg)
	hs := &http.Server{Handler: ka, MaxHeaderBytes: cfg.MaxHeaderBytes, ReadHeaderTimeout: cfg.HeaderTimeout, IdleTimeout: cfg.IdleTimeout}
	go func() { _ = hs.Serve(ln) }()
	go func() { _ = hs.Serve(ka.Listener()) }()
	t.Cleanup(func() {
		_ = hs.Close()
		ka.Close()
	})
	return &testServer{addr: ln.Addr().String(), ka: ka, hs: hs}
}

type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (ts *testServer) dial(t *testing.T) *client {
	t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatal(err)
	}
}

// answer reads one answer: its status, X-By, body, and whether it closes the connection.
func (c *client) answer() (status int, by, body string, closes bool) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(c.br, nil)
	for err == nil && res.StatusCode < 200 { // 100 Continue
		res, err = http.ReadResponse(c.br, nil)
	}
	if err != nil {
		c.t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("answer's body: %v", err)
	}
	return res.StatusCode, res.Header.Get("X-By"), string(b), res.Close
}

// closed reports whether the server closed the connection within d.
func (c *client) closed(d time.Duration) bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	_, err := c.br.ReadByte()
	return errors.Is(err, io.EOF)
}

func post(path, body string, extra ...string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: example\r\n" + strings.Join(extra, "") +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func TestAdoptsAfterFirstPublish(t *testing.T) {
	t.Parallel()
	ts := start(t, nil)
	c := ts.dial(t)
	for i := range 5 {
		body := fmt.Sprintf("m%d", i)
		c.send(post("/pub/a?x=1", body, "X-Test: t"+body+"\r\n"))
		status, by, got, closes := c.answer()
		want := fmt.Sprintf("keepalive POST /pub/a?x=1 host=example remote=true body=%s", body)
		if status != 200 || by != "keepalive" || got != want || closes {
			t.Fatalf("answer %d: %d %q %q closes=%t, want 200 keepalive %q", i, status, by, got, closes, want)
		}
	}
	if n := ts.ka.Open(); n != 1 {
		t.Fatalf("%d adopted connections, want 1", n)
	}
}

func TestPipelinedInOrder(t *testing.T) {
	t.Parallel()
	ts := start(t, nil)
	c := ts.dial(t)
	var all strings.Builder
	for i := range 20 {
		all.WriteString(post("/pub/p", strconv.Itoa(i)))
	}
	c.send(all.String())
	for i := range 20 {
		_, by, got, _ := c.answer()
		if want := "keepalive POST /pub/p host=example remote=true body=" + strconv.Itoa(i); got != want || by != "keepalive" {
			t.Fatalf("answer %d: %q by %s, want %q", i, got, by, want)
		}
	}
}

// What the package does not take goes back to net/http on the same connection, answered as
// net/http answers it; an eligible request after it is adopted again.
func TestHandsBackWhatItDoesNotTake(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, request string
		status        int
		by            string // "" for an answer net/http writes itself (no handler)
	}{
		{"another method", "GET /pub/a HTTP/1.1\r\nHost: example\r\n\r\n", 200, "net/http"},
		{"another path", post("/other", "x"), 200, "net/http"},
		{"chunked body", "POST /pub/a HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", 200, "net/http"},
		{"a target net/http refuses", post("/pub/%zz", "x"), 400, ""},
		{"no Host", "POST /pub/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, ""},
		// Eligible requests that net/http parses are adopted again at once: net/http takes
		// heads 4 KiB past MaxHeaderBytes.
		{"a head larger than MaxHeaderBytes", post("/pub/a", "x", "X-Big: "+strings.Repeat("b", 5000)+"\r\n"), 200, "keepalive"},
		{"a body too large", post("/pub/a", strings.Repeat("b", 70<<10)), 200, "net/http"},
		{"a bare LF", "POST /pub/a HTTP/1.1\r\nHost: example\nContent-Length: 0\r\n\r\n", 200, "keepalive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := start(t, nil)
			c := ts.dial(t)
			c.send(post("/pub/first", "1"))
			if _, by, _, _ := c.answer(); by != "keepalive" {
				t.Fatalf("first publish served by %q", by)
			}
			c.send(tc.request)
			status, by, body, closes := c.answer()
			if status != tc.status || by != tc.by {
				t.Fatalf("got %d by %q (%.80q), want %d by %q", status, by, body, tc.status, tc.by)
			}
			if closes {
				if !c.closed(2 * time.Second) {
					t.Fatal("answer said close, connection stayed open")
				}
				return
			}
			c.send(post("/pub/again", "2"))
			if _, by, got, _ := c.answer(); by != "keepalive" || !strings.HasSuffix(got, "body=2") {
				t.Fatalf("publish after the hand-back: %q by %q", got, by)
			}
		})
	}
}

func TestNotAdopted(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, request string }{
		{"HTTP/1.0", "POST /pub/a HTTP/1.0\r\nHost: example\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx"},
		{"Connection: close", post("/pub/a", "x", "Connection: close\r\n")},
		{"Expect", post("/pub/a", "x", "Expect: 100-continue\r\n")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := start(t, nil)
			c := ts.dial(t)
			c.send(tc.request)
			if _, by, got, _ := c.answer(); by != "net/http" || !strings.HasSuffix(got, "body=x") {
				t.Fatalf("%q by %q, want net/http", got, by)
			}
			if n := ts.ka.Open(); n != 0 {
				t.Fatalf("%d adopted", n)
			}
		})
	}
}

func TestConnectionCloseAfterAdoption(t *testing.T) {
	t.Parallel()
	ts := start(t, nil)
	c := ts.dial(t)
	c.send(post("/pub/a", "1"))
	c.answer()
	c.send(post("/pub/a", "2", "Connection: close\r\n"))
	if _, by, _, closes := c.answer(); by != "keepalive" || !closes {
		t.Fatalf("by %q, closes %t: want keepalive's answer with Connection: close", by, closes)
	}
	if !c.closed(2 * time.Second) {
		t.Fatal("connection stayed open")
	}
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	ts := start(t, func(cfg *Config) {
		cfg.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/pub/nocontent":
				w.Header().Set("X-A", "1")
				w.WriteHeader(http.StatusNoContent)
				if _, err := w.Write([]byte("no")); !errors.Is(err, http.ErrBodyNotAllowed) {
					t.Errorf("Write after 204: %v", err)
				}
			case "/pub/sniff":
				_, _ = w.Write([]byte("<html><body>hi</body></html>"))
			case "/pub/inject":
				w.Header().Set("X-A", "a\r\nX-Injected: 1")
				w.WriteHeader(http.StatusCreated)
			case "/pub/informational":
				w.WriteHeader(http.StatusContinue)
				w.WriteHeader(http.StatusAccepted)
				w.WriteHeader(http.StatusTeapot) // a second final status is ignored, as net/http does
			}
		})
	})
	c := ts.dial(t)
	get := func(path string) *http.Response {
		t.Helper()
		c.send(post(path, ""))
		_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(res.Body)
		return res
	}
	get("/pub/sniff") // adopts
	if res := get("/pub/nocontent"); res.StatusCode != 204 || res.Header.Get("X-A") != "1" || res.Header.Get("Content-Length") != "" || res.Header.Get("Date") == "" {
		t.Fatalf("204: %v %v", res.Status, res.Header)
	}
	if res := get("/pub/sniff"); res.Header.Get("Content-Type") != "text/html; charset=utf-8" || res.ContentLength != 28 {
		t.Fatalf("sniffed: %v, length %d", res.Header, res.ContentLength)
	}
	if res := get("/pub/inject"); res.StatusCode != 201 || res.Header.Get("X-Injected") != "" {
		t.Fatalf("a value with CR LF added a field: %v", res.Header)
	}
	if res := get("/pub/informational"); res.StatusCode != 202 {
		t.Fatalf("status %d, want 202", res.StatusCode)
	}
}

// The handler reads the body as it arrives; what it leaves unread is dropped, and the next
// request follows.
func TestBodyInPiecesAndUnread(t *testing.T) {
	t.Parallel()
	ts := start(t, nil)
	c := ts.dial(t)
	c.send(post("/pub/a", "1"))
	c.answer()
	body := strings.Repeat("0123456789", 3000)
	c.send("POST /pub/a HTTP/1.1\r\nHost: example\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	for i := 0; i < len(body); i += 7000 {
		time.Sleep(20 * time.Millisecond)
		c.send(body[i:min(len(body), i+7000)])
	}
	if _, by, got, _ := c.answer(); by != "keepalive" || !strings.HasSuffix(got, "body="+body) {
		t.Fatalf("body in pieces: by %q, %d bytes back", by, len(got))
	}
	c.send(post("/pub/a?skip", body) + post("/pub/a", "after"))
	if _, by, _, closes := c.answer(); by != "skipped" || closes {
		t.Fatalf("unread body: by %q, closes %t", by, closes)
	}
	if _, _, got, _ := c.answer(); !strings.HasSuffix(got, "body=after") {
		t.Fatalf("after an unread body: %q", got)
	}
}

// A body that stops arriving reaches the handler as a timeout after ReadTimeout, and its answer
// closes the connection.
func TestStalledBody(t *testing.T) {
	t.Parallel()
	ts := start(t, func(cfg *Config) { cfg.ReadTimeout = 200 * time.Millisecond })
	c := ts.dial(t)
	c.send(post("/pub/a", "1"))
	c.answer()
	start := time.Now()
	c.send("POST /pub/a HTTP/1.1\r\nHost: example\r\nContent-Length: 10\r\n\r\n12345")
	status, by, body, closes := c.answer()
	if status != http.StatusRequestTimeout || by != "" || !closes || !strings.Contains(body, "timeout") {
		t.Fatalf("%d %q by %q closes=%t, want 408 closing", status, body, by, closes)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("answered after %s", took)
	}
	if !c.closed(time.Second) {
		t.Fatal("connection stayed open")
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		next string // sent after an adopted publish; then the server should close
	}{
		{"idle", ""},
		{"a head that does not end", "POST /pub/a HTTP/1.1\r\nHost: exam"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := start(t, func(cfg *Config) {
				cfg.IdleTimeout = 300 * time.Millisecond
				cfg.HeaderTimeout = 300 * time.Millisecond
			})
			c := ts.dial(t)
			c.send(post("/pub/a", "1"))
			c.answer()
			start := time.Now()
			if tc.next != "" {
				c.send(tc.next)
			}
			if !c.closed(3 * time.Second) {
				t.Fatal("still open")
			}
			if took := time.Since(start); took < 250*time.Millisecond {
				t.Fatalf("closed after %s, before the timeout", took)
			}
			waitOpen(t, ts.ka, 0)
		})
	}
}

// A connection kept busy with requests is not cut by the idle timeout's deadline, which is
// set at most once a second.
func TestBusyConnectionOutlivesIdleTimeout(t *testing.T) {
	t.Parallel()
	ts := start(t, func(cfg *Config) { cfg.IdleTimeout = time.Second })
	c := ts.dial(t)
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		c.send(post("/pub/a", strconv.Itoa(i)))
		if _, by, _, closes := c.answer(); closes || i > 0 && by != "keepalive" {
			t.Fatalf("request %d: by %q, closes %t", i, by, closes)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestDrain(t *testing.T) {
	t.Parallel()
	ts := start(t, nil)
	idle, busy := ts.dial(t), ts.dial(t)
	idle.send(post("/pub/a", "1"))
	idle.answer()
	busy.send(post("/pub/a", "1"))
	busy.answer()
	busy.send(post("/pub/a?sleep=300ms", "2"))
	time.Sleep(100 * time.Millisecond) // the request is in its handler
	ts.ka.Drain()
	if !idle.closed(time.Second) {
		t.Fatal("an idle adopted connection stayed open after Drain")
	}
	if _, by, got, closes := busy.answer(); by != "keepalive" || !closes || !strings.HasSuffix(got, "body=2") {
		t.Fatalf("busy connection: %q by %q closes %t, want its answer, closing", got, by, closes)
	}
	if !busy.closed(time.Second) {
		t.Fatal("busy connection stayed open after its answer")
	}
	// A new connection is served by net/http, and not adopted.
	c := ts.dial(t)
	c.send(post("/pub/a", "3"))
	if _, by, _, _ := c.answer(); by != "net/http" {
		t.Fatalf("after Drain: served by %q", by)
	}
	waitOpen(t, ts.ka, 0)
}

// An answer the peer does not read waits up to WriteTimeout; read late, it arrives whole.
func TestSlowReader(t *testing.T) {
	t.Parallel()
	const big = 16 << 20
	ts := start(t, func(cfg *Config) { cfg.WriteTimeout = 3 * time.Second })
	c := ts.dial(t)
	c.send(post("/pub/a", "1"))
	c.answer()
	c.send(post("/pub/a?big="+strconv.Itoa(big), ""))
	time.Sleep(300 * time.Millisecond) // the socket's buffers fill
	if status, _, body, _ := c.answer(); status != 200 || len(body) != big {
		t.Fatalf("%d, %d bytes, want 200 and %d", status, len(body), big)
	}

	ts = start(t, func(cfg *Config) { cfg.WriteTimeout = 200 * time.Millisecond })
	c = ts.dial(t)
	c.send(post("/pub/a", "1"))
	c.answer()
	c.send(post("/pub/a?big="+strconv.Itoa(big), ""))
	waitOpen(t, ts.ka, 0) // given up after WriteTimeout
}

// A connection that cannot be read raw (not a system connection) is answered once and closed.
func TestNotASystemConnection(t *testing.T) {
	t.Parallel()
	ts := start(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ts.hs.Serve(opaqueListener{ln}) }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.send(post("/pub/a", "1"))
	if status, by, _, closes := c.answer(); status != 200 || by != "keepalive" || !closes {
		t.Fatalf("%d by %q closes %t", status, by, closes)
	}
}

type opaqueListener struct{ net.Listener }

func (l opaqueListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	return struct{ net.Conn }{nc}, err
}

func TestManyConnections(t *testing.T) {
	t.Parallel()
	ts := start(t, nil)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ts.dial(t)
			for j := range 50 {
				body := fmt.Sprintf("%d-%d", i, j)
				c.send(post("/pub/m", body))
				if _, _, got, _ := c.answer(); !strings.HasSuffix(got, "body="+body) {
					t.Errorf("got %q, want body %s", got, body)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func waitOpen(t *testing.T, ka *Server, want int) {
	t.Helper()
	for range 300 {
		if ka.Open() == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d adopted connections, want %d", ka.Open(), want)
}

// Bytes that are in the socket when a read's deadline has passed still count: a deadline
// fired early wakes the reader, and a starved machine may run it only after the real one.
func TestReadPastDeadlineTakesWhatArrived(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{})
	c, err := s.newConn(nc, make([]byte, 0, 64))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := peer.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the bytes are in the socket
	if err := c.read(time.Now().Add(-time.Millisecond)); err != nil || string(c.in) != "late" {
		t.Fatalf("read past its deadline: %v, %q; want the bytes that had arrived", err, c.in)
	}
	if err := c.read(time.Now().Add(-time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline with nothing there: %v, want a timeout", err)
	}
}
