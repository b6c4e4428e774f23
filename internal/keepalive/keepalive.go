// Package keepalive serves the requests that follow a publish on a kept-alive HTTP/1.1
// connection without net/http's work per request.
//
// A publisher posts one request after another on one connection. net/http spends on each of
// them a parse into a fresh Request, deadline timers set and reset, a goroutine that watches
// the connection while the handler runs, and blocking system calls that wake the runtime's
// monitor thread: about half of the server's CPU for a small publish. Server, set in front of the
// handler, takes over (hijacks) a plain HTTP/1.1 connection at its first eligible request and
// from then on reads, parses and answers its requests itself, with raw non-blocking system calls
// and the runtime's poller, through the same handler. Whatever it does not take (another method
// or path, a chunked body, Expect, Upgrade, HTTP/1.0, TLS, anything unusual) goes back to
// net/http with the bytes already read, through Listener, so the answers never differ.
package keepalive

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets up a Server.
type Config struct {
	// Handler serves every request, adopted or not.
	Handler http.Handler
	// Eligible says which requests an adopted connection serves itself; net/http serves the
	// rest. Their answers must be plain: no Flush, no Hijack, no streaming.
	Eligible func(method, path string) bool
	// HeaderTimeout bounds the time from a request's first byte to the end of its head, and
	// ReadTimeout the time from there to the end of its body.
	HeaderTimeout, ReadTimeout time.Duration
	// IdleTimeout bounds the time between an answer and the next request.
	IdleTimeout time.Duration
	// WriteTimeout bounds the time an answer may wait for the peer to take it.
	WriteTimeout time.Duration
	// MaxHeaderBytes and MaxBody bound what a request may hold; larger ones go to net/http.
	MaxHeaderBytes, MaxBody int
}

// Server adopts connections; it is the http.Handler to give net/http.
type Server struct {
	cfg     Config
	handoff *listener
	ctx     context.Context
	cancel  context.CancelFunc

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining atomic.Bool
}

// New returns a Server for cfg. Serve its Listener with the same http.Server.
func New(cfg Config) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, handoff: newListener(), ctx: ctx, cancel: cancel, conns: map[*conn]struct{}{}}
}

// Listener returns the listener through which adopted connections go back to net/http.
func (s *Server) Listener() net.Listener { return s.handoff }

// ServeHTTP adopts r's connection when r is eligible, and serves r.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.adoptable(r) {
		s.cfg.Handler.ServeHTTP(w, r)
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.cfg.Handler.ServeHTTP(w, r)
		return
	}
	// What net/http read past the head is in brw; a connection handed back earlier may hold
	// more, read before that.
	buffered := make([]byte, brw.Reader.Buffered(), max(brw.Reader.Buffered(), 4<<10))
	_, _ = brw.Reader.Read(buffered)
	if bc, ok := nc.(*bufferedConn); ok {
		buffered = append(buffered, bc.buf...)
		nc = bc.Conn
	}
	c, err := s.newConn(nc, buffered)
	if err != nil {
		// Not a TCP connection: answer r alone and close (the peer reconnects).
		s.answerAndClose(nc, buffered, r)
		return
	}
	// Served here, in net/http's goroutine for the connection, until the connection ends.
	c.serve(r)
}

// answerAndClose serves r on a connection that offers no system connection to read raw, and
// closes it. (net/http's listeners give TCP connections, which do.)
func (s *Server) answerAndClose(nc net.Conn, buffered []byte, r *http.Request) {
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
	r = r.WithContext(s.ctx)
	r.Body = io.NopCloser(io.LimitReader(io.MultiReader(bytes.NewReader(buffered), nc), r.ContentLength))
	var w response
	w.reset(nil, &body{})
	s.cfg.Handler.ServeHTTP(&w, r)
	_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	_, _ = nc.Write(w.finish(false))
}

// adoptable reports whether r may be served here, with its connection.
func (s *Server) adoptable(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.ProtoMinor == 1 && r.TLS == nil && !r.Close &&
		len(r.TransferEncoding) == 0 && r.ContentLength >= 0 && r.ContentLength <= int64(s.cfg.MaxBody) &&
		r.Header.Get("Expect") == "" && r.Header.Get("Upgrade") == "" &&
		!s.draining.Load() && s.cfg.Eligible(r.Method, r.URL.Path)
}

// Drain closes the idle adopted connections, and makes the others close after the answer
// they are writing; later requests are left to net/http.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.wake()
	}
}

// Close ends Drain: adopted connections still open close now.
func (s *Server) Close() {
	s.Drain()
	s.cancel()
	_ = s.handoff.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
}

// Open is the number of adopted connections.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) track(c *conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// listener hands connections back to net/http.
type listener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newListener() *listener {
	return &listener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *listener) Addr() net.Addr { return handoffAddr{} }

// give hands nc to net/http, or closes it once the listener has closed.
func (l *listener) give(nc net.Conn) {
	select {
	case l.conns <- nc:
	case <-l.done:
		_ = nc.Close()
	}
}

type handoffAddr struct{}

func (handoffAddr) Network() string { return "keepalive" }
func (handoffAddr) String() string  { return "keepalive-handoff" }

// bufferedConn is a connection handed back with bytes already read from it, which come first.
type bufferedConn struct {
	net.Conn
	buf []byte
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
