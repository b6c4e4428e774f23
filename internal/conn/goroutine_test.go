package conn

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// pipePeer takes the server end of a net.Pipe, which is no TCP connection: the goroutine
// backend serves it. It returns the client end.
func pipePeer(t *testing.T, s *Server, p Protocol, buffered string) (*Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { b.Close() })
	c, err := s.Take(a, p)
	if err != nil {
		t.Fatalf("Take(pipe): %v", err)
	}
	if c.Attached() {
		t.Fatal("a hijacked connection says it is attached")
	}
	if err := s.Start(c, []byte(buffered)); err != nil {
		t.Fatal(err)
	}
	return c, b
}

func TestGoroutineBackend(t *testing.T) {
	s := newTestServer(t, Config{Heartbeat: 40 * time.Millisecond})
	p := newProto()
	c, peer := pipePeer(t, s, p, "early ")
	var got bytes.Buffer
	c.Send([]byte("hello\n"))
	c.Deliver(frame(1))
	readUntil(t, peer, &got, "hello\nF1\n", 2*time.Second)
	readUntil(t, peer, &got, "HB\n", 2*time.Second) // idle: heartbeats
	if _, err := peer.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return p.Reads() == "early late" })
	if s.Open() != 1 {
		t.Fatalf("Open() = %d", s.Open())
	}
	c.Close(ReasonDrain)
	if b := string(readToEOF(t, peer, 2*time.Second)); !strings.HasSuffix(b, "BYE draining\n") {
		t.Fatalf("ended with %q", b)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonDrain {
		t.Fatalf("Closed with %+v", r)
	}
	eventually(t, func() bool { return s.Open() == 0 })
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestGoroutineBackendPeerCloses(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	_, peer := pipePeer(t, s, p, "")
	peer.Close()
	if r := p.waitClosed(t, time.Second); r != ReasonPeer {
		t.Fatalf("Closed with %+v", r)
	}
}

func TestGoroutineBackendLifetime(t *testing.T) {
	s := newTestServer(t, Config{MaxLifetime: 100 * time.Millisecond})
	p := newProto()
	_, peer := pipePeer(t, s, p, "")
	start := time.Now()
	b := readToEOF(t, peer, 2*time.Second)
	if string(b) != "BYE max_lifetime\n" || time.Since(start) < 90*time.Millisecond {
		t.Fatalf("after %v: %q", time.Since(start), b)
	}
}

// A peer that takes nothing: its write times out and the connection closes as stuck.
func TestGoroutineBackendStuck(t *testing.T) {
	s := newTestServer(t, Config{WriteTimeout: 100 * time.Millisecond})
	p := newProto()
	c, _ := pipePeer(t, s, p, "")
	c.Send([]byte("nobody reads this"))
	if r := p.waitClosed(t, 2*time.Second); r != ReasonStuck {
		t.Fatalf("Closed with %+v", r)
	}
}

// A peer that is behind (its write blocked) past its queue limit is closed as slow at once,
// not after the write timeout.
func TestGoroutineBackendSlow(t *testing.T) {
	s := newTestServer(t, Config{WriteTimeout: 10 * time.Second, Limits: Limits{QueueItems: 4, QueueBytes: 1 << 20}})
	p := newProto()
	c, _ := pipePeer(t, s, p, "")
	c.Send([]byte("blocks"))
	eventually(t, func() bool { return c.writingSince.Load() != 0 })
	time.Sleep(stallAfter + 10*time.Millisecond)
	start := time.Now()
	for i := range 10 {
		c.Deliver(frame(uint64(i + 1)))
	}
	if r := p.waitClosed(t, 2*time.Second); r != ReasonSlow || time.Since(start) > time.Second {
		t.Fatalf("Closed with %+v after %v", r, time.Since(start))
	}
	if s.SlowDisconnects() != 1 {
		t.Fatalf("SlowDisconnects() = %d", s.SlowDisconnects())
	}
}

// headedProto chooses its head when it first writes: 201 with X-Rendered.
type headedProto struct {
	*testProto
	quiet bool // no goodbye
}

func (p *headedProto) WriteHead(h http.Header) int {
	h.Set("X-Head", "chosen")
	if p.quiet {
		return http.StatusNoContent
	}
	return http.StatusCreated
}

func (p *headedProto) Goodbye(dst []byte, reason Reason) []byte {
	if p.quiet {
		return dst
	}
	return p.testProto.Goodbye(dst, reason)
}

// attachServer serves requests with handle over TLS with HTTP/2, or plain HTTP/1.1.
func attachServer(t *testing.T, h2 bool, handle func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *http.Client) {
	t.Helper()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(handle))
	if h2 {
		ts.EnableHTTP2 = true
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	return ts, ts.Client()
}

// noHijack hides the ResponseWriter's Hijacker, as a wrapper without Unwrap does.
type noHijack struct{ http.ResponseWriter }

func (w noHijack) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

func TestAttach(t *testing.T) {
	for _, tc := range []struct {
		name string
		h2   bool
	}{{"http2", true}, {"http1-unhijackable", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, Config{Heartbeat: 40 * time.Millisecond})
			p := newProto()
			conns := make(chan *Conn, 1)
			served := make(chan struct{})
			ts, client := attachServer(t, tc.h2, func(w http.ResponseWriter, r *http.Request) {
				defer close(served)
				if !tc.h2 {
					w = noHijack{w}
				}
				c, buffered, err := s.Accept(w, r, p)
				if err != nil || !c.Attached() || buffered != nil {
					t.Errorf("Accept: %v, attached %v", err, c != nil && c.Attached())
					return
				}
				w.Header().Set("Content-Type", "text/plain")
				c.Send([]byte("first\n"))
				if err := s.Start(c, nil); err != nil {
					t.Error(err)
					return
				}
				c.Deliver(frame(7))
				conns <- c
				s.Serve(c)
			})
			res, err := client.Get(ts.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if want := map[bool]int{true: 2, false: 1}[tc.h2]; res.ProtoMajor != want || res.StatusCode != 200 ||
				res.Header.Get("Content-Type") != "text/plain" {
				t.Fatalf("%s %d %v", res.Proto, res.StatusCode, res.Header)
			}
			c := <-conns
			br := bufio.NewReader(res.Body)
			for _, want := range []string{"first\n", "F7\n", "HB\n"} {
				if line, err := br.ReadString('\n'); line != want {
					t.Fatalf("line %q (%v), want %q", line, err, want)
				}
			}
			if s.Serving() != 1 {
				t.Fatalf("Serving() = %d", s.Serving())
			}
			c.Close(ReasonLifetime)
			rest, err := io.ReadAll(br)
			for strings.HasPrefix(string(rest), "HB\n") {
				rest = rest[3:]
			}
			if err != nil || string(rest) != "BYE max_lifetime\n" {
				t.Fatalf("ended with %q (%v)", rest, err)
			}
			<-served
			if r := p.waitClosed(t, time.Second); r != ReasonLifetime {
				t.Fatalf("Closed with %+v", r)
			}
			if s.Serving() != 0 || s.Open() != 0 {
				t.Fatalf("Serving() = %d, Open() = %d", s.Serving(), s.Open())
			}
		})
	}
}

// The peer going away ends an attached connection and its handler.
func TestAttachPeerGone(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	served := make(chan struct{})
	ts, client := attachServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		c := s.Attach(w, r, p)
		_ = s.Start(c, nil)
		c.Send([]byte("hi\n"))
		s.Serve(c)
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL, nil)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(res.Body).ReadString('\n'); line != "hi\n" {
		t.Fatalf("read %q", line)
	}
	cancel()
	res.Body.Close()
	if r := p.waitClosed(t, 2*time.Second); r != ReasonPeer {
		t.Fatalf("Closed with %+v", r)
	}
	select {
	case <-served:
	case <-time.After(2 * time.Second):
		t.Fatal("the handler did not return")
	}
}

// A Headed protocol's head waits for its first bytes, or for its close when it writes none.
func TestAttachHeaded(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		s := newTestServer(t, Config{})
		p := &headedProto{testProto: newProto(), quiet: quiet}
		conns := make(chan *Conn, 1)
		ts, client := attachServer(t, true, func(w http.ResponseWriter, r *http.Request) {
			c := s.Attach(w, r, p)
			_ = s.Start(c, nil)
			conns <- c
			s.Serve(c)
		})
		got := make(chan *http.Response, 1)
		go func() {
			res, err := client.Get(ts.URL)
			if err != nil {
				t.Error(err)
				close(got)
				return
			}
			got <- res
		}()
		c := <-conns
		select {
		case <-got:
			t.Fatal("the head was written before anything else")
		case <-time.After(50 * time.Millisecond):
		}
		if !quiet {
			c.Send([]byte("answer\n"))
		}
		c.Close(ReasonDrain)
		res := <-got
		if res == nil {
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		want, wantBody := http.StatusCreated, "answer\nBYE draining\n"
		if quiet {
			want, wantBody = http.StatusNoContent, ""
		}
		if res.StatusCode != want || res.Header.Get("X-Head") != "chosen" || string(b) != wantBody {
			t.Fatalf("quiet %v: %d %v %q", quiet, res.StatusCode, res.Header, b)
		}
	}
}

// Over plain HTTP/1.1, Accept hijacks into the epoll backend.
func TestAcceptHijacks(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	ts, _ := attachServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		c, buffered, err := s.Accept(w, r, p)
		if err != nil || c.Attached() {
			t.Errorf("Accept: %v", err)
			return
		}
		c.Send([]byte("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nraw\n"))
		_ = s.Start(c, buffered)
		c.Close(ReasonDrain)
		s.Serve(c) // returns at once
	})
	res, err := http.Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "raw\nBYE draining\n" {
		t.Fatalf("body %q", b)
	}
}
