package conn

// The goroutine backend: connections that epoll cannot own, with the same Conn, Protocol, queue,
// limits, heartbeats, lifetime, goodbye and drain as the epoll backend.
//
//   - A hijacked connection that is not plain TCP (TLS with HTTP/1.1, where a WebSocket or an
//     SSE stream is hijacked as over plain TCP) gets one goroutine that reads it, handing its
//     bytes to Protocol.Read, and one that writes it.
//   - A request that cannot be hijacked (HTTP/2, or a ResponseWriter wrapped without Unwrap) is
//     attached: its bytes go to the http.ResponseWriter, flushed with http.ResponseController,
//     by the handler's own goroutine, which runs Serve while the request lives. The response
//     head is written through the ResponseWriter, so the protocol renders the body only (see
//     Conn.Attached and Headed). The request's context ending is the peer closing.
//
// Writes block, bounded by Config.WriteTimeout as a write deadline: a peer that takes nothing
// for that long is closed as stuck. A write that has been blocked for stallAfter counts as the
// peer being behind, which is what a socket refusing bytes means on the epoll backend: the queue
// limits then apply without the burst allowance.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// stallAfter is how long a blocked write takes before the peer counts as behind.
const stallAfter = 20 * time.Millisecond

// Headed is implemented by a protocol that chooses its own response head on an attached
// connection, such as a long poll whose status and ETag are known only when it answers.
// WriteHead runs on the writer just before the connection's first bytes are written, or as it
// closes when it writes none; it sets h and returns the status. The head of any other protocol
// is 200 with the header fields set before Start, which writes it at once.
type Headed interface {
	WriteHead(h http.Header) int
}

// goOut is the goroutine backend's side of a Conn.
type goOut struct {
	w        io.Writer
	flush    func() error
	deadline func(time.Time) error
	nc       net.Conn            // a hijacked connection; nil when attached
	rw       http.ResponseWriter // an attached connection's; nil when hijacked
	ctx      context.Context     // an attached connection's request context
	headed   Headed              // an attached connection's protocol, when it is one
	headDone bool                // writer-owned: the head is written

	wake      chan struct{} // the connection has something to write
	done      chan struct{} // closed once the connection is finished
	closeOnce sync.Once

	// mu orders deadlines: the writer's before each write, and interrupt's, which ends the
	// write under way and fails those after it. Deadlines are set only while the writer runs:
	// an attached connection's ResponseWriter is not ours once Serve has returned.
	mu          sync.Mutex
	running     bool
	interrupted bool
}

// interrupt ends the write under way, if any, and fails the next ones.
func (o *goOut) interrupt() { o.stop(true) }

// stop fails the writes after it, and with now the write under way.
func (o *goOut) stop(now bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.interrupted = true
	if now && o.running {
		_ = o.deadline(time.Now())
	}
}

// setRunning marks the writer running or not.
func (o *goOut) setRunning(on bool) {
	o.mu.Lock()
	o.running = on
	o.mu.Unlock()
}

// errInterrupted fails the writes of a connection whose writer was interrupted.
var errInterrupted = errors.New("write interrupted")

func (o *goOut) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// close ends the connection; writing says whether a write is under way, which is then ended
// too (a past deadline resets an HTTP/2 stream, so not otherwise: a stream whose writer closes
// it after its goodbye ends cleanly).
func (o *goOut) close(writing bool) {
	o.closeOnce.Do(func() {
		close(o.done)
		if o.nc != nil {
			_ = o.nc.Close()
			return
		}
		o.stop(writing)
	})
}

// needsHead reports whether an attached, Headed connection has not written its head yet.
// Writer-owned; false on other connections and on a nil goOut (the epoll backend).
func (o *goOut) needsHead() bool {
	return o != nil && o.headed != nil && !o.headDone
}

func (s *Server) takeConn(nc net.Conn, proto Protocol) *Conn {
	c := s.newConn(-1, proto)
	c.out = &goOut{w: nc, flush: func() error { return nil }, deadline: nc.SetWriteDeadline, nc: nc,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.viaOut = true
	return c
}

// Attach returns a connection whose bytes go to w, the ResponseWriter of r: the backend of
// requests that cannot be hijacked (HTTP/2). Set the response's header fields before Start,
// which writes the head (unless proto is Headed); then, after subscribing, call Serve on the
// handler's goroutine, which writes until the connection ends. Nothing is written before Start.
func (s *Server) Attach(w http.ResponseWriter, r *http.Request, proto Protocol) *Conn {
	rc := http.NewResponseController(w)
	c := s.newConn(-1, proto)
	o := &goOut{w: w, flush: rc.Flush, deadline: rc.SetWriteDeadline, rw: w, ctx: r.Context(),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if h, ok := proto.(Headed); ok {
		o.headed = h
	}
	c.out, c.viaOut = o, true
	return c
}

// Accept takes the connection of r for proto: hijacked (see Take) when net/http allows it,
// with buffered the bytes it had read past the request; otherwise (HTTP/2) attached to w (see
// Attach). Conn.Attached tells which. On error nothing is left to answer: the connection was
// hijacked and is closed.
func (s *Server) Accept(w http.ResponseWriter, r *http.Request, proto Protocol) (c *Conn, buffered []byte, err error) {
	nc, brw, err := http.NewResponseController(w).Hijack()
	if errors.Is(err, http.ErrNotSupported) {
		return s.Attach(w, r, proto), nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		buffered, _ = brw.Reader.Peek(n)
	}
	c, err = s.Take(nc, proto)
	if err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	return c, buffered, nil
}

// Attached reports whether the connection writes through an http.ResponseWriter (see Attach):
// its protocol then renders the response body only, the head being the ResponseWriter's.
func (c *Conn) Attached() bool { return c.out != nil && c.out.rw != nil }

// startOut starts a goroutine-backed connection once it is registered: an attached one writes
// its head, a hijacked one gets its reader and writer goroutines.
func (s *Server) startOut(c *Conn) {
	o := c.out
	if o.rw != nil {
		if o.headed == nil {
			o.headDone = true
			_ = o.deadline(time.Now().Add(s.cfg.WriteTimeout))
			o.rw.WriteHeader(http.StatusOK)
			if err := o.flush(); err != nil {
				s.finish(c, writeReason(err))
			}
		}
		return
	}
	o.setRunning(true)
	go s.runWriter(c, nil)
	go s.readLoop(c, o.nc)
}

// Serve runs an attached connection's writer on the calling goroutine, the request's handler,
// until the connection ends. It returns at once for any other connection.
func (s *Server) Serve(c *Conn) {
	if !c.Attached() {
		return
	}
	s.serving.Add(1)
	defer s.serving.Add(-1)
	c.out.setRunning(true)
	s.runWriter(c, c.out.ctx.Done())
	// An HTTP/1.1 connection outlives its request: no deadline of ours may reach the next.
	_ = c.out.deadline(time.Time{})
}

// Serving reports how many request handlers are running Serve: streams, not requests under way.
func (s *Server) Serving() int64 { return s.serving.Load() }

var outScratch = sync.Pool{New: func() any { return &scratch{buf: make([]byte, 0, 16<<10)} }}

// runWriter writes c whenever it has something to write, until it is finished or the peer
// goes (peerGone).
func (s *Server) runWriter(c *Conn, peerGone <-chan struct{}) {
	o := c.out
	defer o.setRunning(false)
	for {
		select {
		case <-o.wake:
			sc := outScratch.Get().(*scratch)
			c.flush(sc)
			if cap(sc.buf) <= 1<<20 {
				outScratch.Put(sc)
			}
		case <-o.done:
			return
		case <-peerGone:
			s.finish(c, ReasonPeer)
			return
		}
	}
}

// readLoop hands what the peer sends to the protocol until the connection ends.
func (s *Server) readLoop(c *Conn, nc net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := nc.Read(buf)
		if n > 0 {
			if rerr := c.proto.Read(c, buf[:n]); rerr != nil {
				c.Close(readReason(rerr))
			}
		}
		if err != nil {
			reason := ReasonIO
			if errors.Is(err, io.EOF) {
				reason = ReasonPeer
			}
			s.finish(c, reason) // nothing when it is finished already (nc closed)
			return
		}
	}
}

// writeOut writes b on the goroutine backend: all of it, or an error.
func (c *Conn) writeOut(b []byte) (int, error) {
	o := c.out
	now := time.Now()
	o.mu.Lock()
	if o.interrupted {
		o.mu.Unlock()
		return 0, errInterrupted
	}
	_ = o.deadline(now.Add(c.server.cfg.WriteTimeout))
	o.mu.Unlock()
	c.writingSince.Store(now.UnixNano())
	defer c.writingSince.Store(0)
	if o.needsHead() {
		o.headDone = true
		o.rw.WriteHeader(o.headed.WriteHead(o.rw.Header()))
	}
	var n int
	var err error
	if len(b) > 0 {
		n, err = o.w.Write(b)
	}
	if err == nil {
		err = o.flush()
	}
	if n > 0 {
		c.lastWrite.Store(c.server.clock.Load())
		if hook := c.server.onWrite; hook != nil {
			hook(c, b[:n])
		}
	}
	return n, err
}

// writeReason is why a connection whose write failed closes.
func writeReason(err error) Reason {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ReasonStuck
	}
	return ReasonIO
}
