package keepalive

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crier-push/crier/internal/rawio"
)

// conn is an adopted connection. Only its own goroutine reads, writes and closes it; Drain
// only wakes it.
type conn struct {
	s      *Server
	nc     net.Conn
	rc     syscall.RawConn
	remote string
	ctx    context.Context

	// in holds bytes read and not yet served, from in[start:]; out is the answer being
	// written. Both are the connection's for its life: a publisher sends many requests.
	in    []byte
	start int
	out   []byte
	w     response
	body  body

	// deadline is the read deadline set on nc (zero: none); it may be earlier than the one
	// wanted, never later, so that it is set again at most once a second (slack).
	deadline time.Time
	idle     bool // waiting for a request's first byte: Drain may close it
	open     bool // false once an answer asked to close, or a write failed

	// The state of the RawConn callbacks readSome and writeSome.
	readFn, writeFn func(fd uintptr) bool
	errno           syscall.Errno
	got             int
	pending         []byte
	waited          bool
}

// slack is how much earlier than wanted a read deadline may fire; a deadline that fires early
// is set again.
const slack = time.Second

func (s *Server) newConn(nc net.Conn, buffered []byte) (*conn, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a system connection")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &conn{s: s, nc: nc, rc: rc, remote: nc.RemoteAddr().String(), ctx: s.ctx, in: buffered, open: true}
	c.readFn, c.writeFn = c.readSome, c.writeSome
	s.track(c, true)
	return c, nil
}

// serve answers first, which net/http has parsed, and then every request that follows on the
// connection, until it closes or a request goes back to net/http.
func (c *conn) serve(first *http.Request) {
	handedBack := false
	defer func() {
		c.s.track(c, false)
		if !handedBack {
			_ = c.nc.Close()
		}
	}()
	// net/http cancels first's own context when its handler returns, which is now.
	c.serveRequest(first.WithContext(c.ctx), int(first.ContentLength))
	for c.open {
		h, n, ok := c.nextHead()
		if !ok {
			return
		}
		var u *url.URL
		if n > 0 && h.contentLength <= int64(c.s.cfg.MaxBody) && c.s.cfg.Eligible(h.method, pathOf(h.target)) {
			u, _ = url.ParseRequestURI(h.target) // nil: a target net/http refuses, and answers
		}
		if u == nil {
			// Back to net/http, with everything read and not served.
			handedBack = true
			c.handBack()
			return
		}
		c.start += n
		c.serveRequest(c.request(h, u), int(h.contentLength))
	}
}

// serveRequest serves r, whose body is the next n bytes, and writes the answer. As with
// net/http, the handler runs once the head has arrived and reads the body as it comes, by
// ReadTimeout (or the deadline it sets); what it leaves unread is read and dropped after it.
func (c *conn) serveRequest(r *http.Request, n int) {
	c.body = body{c: c, left: n, by: time.Now().Add(c.s.cfg.ReadTimeout)}
	r.Body = &c.body
	c.w.reset(c.out[:0], &c.body)
	c.s.cfg.Handler.ServeHTTP(&c.w, r)
	keep := c.body.discard() && !r.Close && !c.s.draining.Load()
	c.out = c.w.finish(keep)
	c.open = c.write(c.out) && keep && !c.w.closes
}

// handBack gives the connection to net/http with what was read and not served.
func (c *conn) handBack() {
	c.s.track(c, false)
	_ = c.nc.SetReadDeadline(time.Time{})
	c.s.handoff.give(&bufferedConn{Conn: c.nc, buf: c.in[c.start:]})
}

// nextHead waits for the next request's head. n == 0 with ok: one this package leaves to
// net/http. !ok: the connection ends (closed by the peer, timed out, or drained while idle).
func (c *conn) nextHead() (h head, n int, ok bool) {
	c.compact()
	started := time.Time{}
	for {
		h, n, err := parseHead(c.in[c.start:], c.s.cfg.MaxHeaderBytes)
		if err != nil {
			return h, 0, true
		}
		if n > 0 {
			return h, n, true
		}
		now := time.Now()
		var by time.Time
		if c.start == len(c.in) {
			c.idle = true
			by = now.Add(c.s.cfg.IdleTimeout)
		} else {
			if started.IsZero() {
				started = now
			}
			by = started.Add(c.s.cfg.HeaderTimeout)
		}
		err = c.read(by)
		c.idle = false
		if err != nil {
			return h, 0, false
		}
	}
}

// errDrained ends an idle connection's wait when the server drains.
var errDrained = errors.New("keepalive: draining")

// read reads what the socket holds into in, waiting for it until by. An error ends the
// connection: io.ErrUnexpectedEOF when the peer closed, a timeout, errDrained, or another.
func (c *conn) read(by time.Time) error {
	if len(c.in) == cap(c.in) {
		c.grow()
	}
	for {
		if c.idle && c.s.draining.Load() {
			return errDrained
		}
		c.setDeadline(by)
		if c.idle && c.s.draining.Load() { // Drain's wake-up may have come before the deadline above
			return errDrained
		}
		err := c.rc.Read(c.readFn)
		switch {
		case err == nil && c.errno == 0 && c.got > 0:
			return nil
		case err == nil && c.errno == 0:
			return io.ErrUnexpectedEOF // the peer closed
		case err == nil && c.errno == unix.EINTR:
		case err == nil:
			return c.errno
		case errors.Is(err, os.ErrDeadlineExceeded) && (by.IsZero() || time.Now().Before(by)):
			c.deadline = time.Time{} // fired early (slack, or Drain's wake-up): set it again
		case errors.Is(err, os.ErrDeadlineExceeded) && c.arrivedLate():
			return nil
		default:
			return err
		}
	}
}

// arrivedLate reads what the socket holds past the deadline. A deadline that fires early (by
// up to slack) wakes this goroutine; when it runs only after the real deadline, as on a
// starved machine, bytes that arrived in between must still count: a deadline set exactly
// would have been beaten by them.
func (c *conn) arrivedLate() bool {
	err := c.rc.Control(func(fd uintptr) { c.readSome(fd) })
	return err == nil && c.errno == 0 && c.got > 0
}

// setDeadline makes the read deadline at most by, and at most slack earlier.
func (c *conn) setDeadline(by time.Time) {
	if by.IsZero() {
		if !c.deadline.IsZero() {
			c.deadline = by
			_ = c.nc.SetReadDeadline(by)
		}
		return
	}
	if !c.deadline.IsZero() && !c.deadline.After(by) && by.Sub(c.deadline) <= slack {
		return
	}
	c.deadline = by
	_ = c.nc.SetReadDeadline(by)
}

// wake makes an idle connection's read return, so that it sees the drain.
func (c *conn) wake() { _ = c.nc.SetReadDeadline(time.Now()) }

// compact moves what is buffered to the front of in.
func (c *conn) compact() {
	if c.start == 0 {
		return
	}
	c.in = c.in[:copy(c.in, c.in[c.start:])]
	c.start = 0
}

// grow makes room in a full buffer: for a request's body, or a head up to MaxHeaderBytes.
func (c *conn) grow() {
	c.compact()
	if len(c.in) < cap(c.in) {
		return
	}
	in := make([]byte, len(c.in), 2*cap(c.in)+512)
	copy(in, c.in)
	c.in = in
}

// request builds the Request of h; serveRequest gives it its body.
func (c *conn) request(h head, u *url.URL) *http.Request {
	return (&http.Request{
		Method:        h.method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h.header,
		ContentLength: h.contentLength,
		Close:         h.close,
		Host:          h.host,
		RemoteAddr:    c.remote,
		RequestURI:    h.target,
	}).WithContext(c.ctx)
}

// write writes b whole, waiting for the peer to take it until the handler's write deadline, or
// for WriteTimeout.
func (c *conn) write(b []byte) bool {
	c.pending, c.waited = b, false
	for len(c.pending) > 0 {
		err := c.rc.Write(c.writeFn)
		switch {
		case err != nil || c.errno != 0 && c.errno != unix.EAGAIN && c.errno != unix.EINTR:
			return false
		case c.errno == unix.EAGAIN:
			// The peer does not read its answers: wait, bounded.
			c.waited = true
			by := c.w.writeBy
			if by.IsZero() {
				by = time.Now().Add(c.s.cfg.WriteTimeout)
			}
			_ = c.nc.SetWriteDeadline(by)
		}
	}
	if c.waited {
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	return true
}

// writeSome is the RawConn callback of write, a method value made once: a closure would cost
// an allocation per write. It reports done unless the socket is full after write waited once.
func (c *conn) writeSome(fd uintptr) bool {
	var n int
	n, c.errno = rawio.Send(int(fd), c.pending)
	c.pending = c.pending[n:]
	return c.errno != unix.EAGAIN || !c.waited
}

// readSome is read's RawConn callback, made once for the same reason.
func (c *conn) readSome(fd uintptr) bool {
	var n int
	n, c.errno = rawio.Read(int(fd), c.in[len(c.in):cap(c.in)])
	c.in = c.in[:len(c.in)+n]
	c.got = n
	return c.errno != unix.EAGAIN
}

// pathOf is the path of an origin-form target, as ServeMux matches it before unescaping.
func pathOf(target string) string {
	path, _, _ := strings.Cut(target, "?")
	return path
}

// body is the body of the request being served: the next left bytes of the connection.
type body struct {
	c    *conn
	left int
	by   time.Time // the read deadline; zero for none
	err  error     // sticky: the read that failed
}

func (b *body) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	c := b.c
	for c.start == len(c.in) {
		if err := c.read(b.by); err != nil {
			b.err = err
			return 0, err
		}
	}
	n := copy(p, c.in[c.start:min(len(c.in), c.start+b.left)])
	c.start += n
	b.left -= n
	return n, nil
}

func (b *body) Close() error { return nil }

// discard reads and drops what the handler left of the body, and reports whether the next
// request may follow.
func (b *body) discard() bool {
	if b.left > 0 && b.err == nil && b.by.IsZero() {
		b.by = time.Now().Add(b.c.s.cfg.ReadTimeout)
	}
	for b.left > 0 && b.err == nil {
		c := b.c
		if c.start == len(c.in) {
			b.err = c.read(b.by)
			continue
		}
		n := min(b.left, len(c.in)-c.start)
		c.start += n
		b.left -= n
	}
	return b.err == nil
}
