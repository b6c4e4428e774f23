// Package conn is Crier's connection layer for long-lived push connections. A connection taken
// over from net/http costs no goroutine and no buffer while idle: its socket sits in an epoll set
// watched by one poller goroutine, frames wait in a bounded queue of pointers to shared frames,
// and a small pool of writer goroutines renders and writes each connection's queue in one
// syscall, with buffers borrowed from a pool only while writing.
package conn

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crier-push/crier/internal/hub"
	"golang.org/x/sys/unix"
)

// Item is one thing queued for a connection: a shared frame, or bytes of its own (a reply).
type Item struct {
	Frame     *hub.Frame
	Raw       []byte
	Heartbeat bool // the protocol's keep-alive, queued by the timer
	Note      any  // a protocol's own marker, handed back to Render in queue order
}

func (it *Item) size() int {
	if it.Frame != nil {
		return len(it.Frame.Envelope) + 2*len(it.Frame.Cursor) + 64
	}
	return len(it.Raw)
}

// Protocol is what a transport plugs into a connection. Render, Heartbeat and Goodbye run on a
// writer goroutine, never two at once for one connection; Read runs on the poller goroutine.
type Protocol interface {
	// Render appends the wire bytes of it to dst. done asks to close once they are written.
	Render(dst []byte, it *Item) (out []byte, done bool)
	// Heartbeat appends a keep-alive to dst (dst unchanged: none).
	Heartbeat(dst []byte) []byte
	// Goodbye appends what is written last when the server closes for reason.
	Goodbye(dst []byte, reason Reason) []byte
	// Read handles bytes from the peer; it must copy what it keeps. An error closes.
	Read(c *Conn, data []byte) error
	// Closed releases the connection's subscriptions. Called once, after the socket is closed.
	Closed(c *Conn, reason Reason)
}

// Reason says why a connection closes.
type Reason struct {
	Code    string // snake_case, as in the API's JSON errors
	Message string
	// WSCode is the WebSocket close code, for that transport.
	WSCode uint16
}

// Reasons the connection layer itself closes for.
var (
	ReasonSlow     = Reason{Code: "slow_subscriber", Message: "queue limit reached; resume from your cursor", WSCode: 1008}
	ReasonLifetime = Reason{Code: "max_lifetime", Message: "maximum connection lifetime reached; resume from your cursor", WSCode: 1000}
	ReasonDrain    = Reason{Code: "draining", Message: "server is shutting down; resume from your cursor", WSCode: 1001}
	ReasonPeer     = Reason{Code: "peer_closed", Message: "closed by peer"}
	ReasonIO       = Reason{Code: "io_error", Message: "connection error"}
	ReasonStuck    = Reason{Code: "write_timeout", Message: "peer stopped reading", WSCode: 1008}
)

// Limits bound one connection's queue.
type Limits struct {
	QueueItems int
	QueueBytes int
}

// Conn is one long-lived connection.
type Conn struct {
	fd       int
	gen      int32 // tells this connection's epoll events from those of an earlier one on fd
	server   *Server
	proto    Protocol
	worker   *worker
	idx      int // in server.conns
	created  time.Time
	deadline int64 // unix nanoseconds of the maximum lifetime; 0: none

	mu         sync.Mutex
	queue      []Item
	queueBytes int
	scheduled  bool   // on a worker's ready list
	unwritten  []byte // bytes the socket refused; the socket owes an EPOLLOUT
	stuckSince int64  // when unwritten appeared
	closing    bool   // no more items; close once written
	reason     Reason
	closed     bool

	lastWrite atomic.Int64 // unix nanoseconds
	// Value is the transport's per-connection state.
	Value any
}

// Deliver implements hub.Sink: it queues the frame.
func (c *Conn) Deliver(f *hub.Frame) { c.Enqueue(Item{Frame: f}) }

// Send queues bytes of the connection's own, such as a reply to a command.
func (c *Conn) Send(b []byte) { c.Enqueue(Item{Raw: b}) }

// Enqueue queues an item.
func (c *Conn) Enqueue(it Item) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.queueBytes += it.size()
	if len(c.queue) >= c.server.limits.QueueItems || c.queueBytes > c.server.limits.QueueBytes {
		// A slow subscriber: drop what waits, say why, and close. It resumes from its cursor.
		clear(c.queue)
		c.queue = c.queue[:0]
		c.queueBytes = 0
		c.closing, c.reason = true, ReasonSlow
		c.server.metrics.slow.Add(1)
		c.scheduleLocked()
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, it)
	c.scheduleLocked()
	c.mu.Unlock()
}

// scheduleLocked puts the connection on its worker's ready list unless it is there already or
// waiting for the socket to drain. Caller holds c.mu.
func (c *Conn) scheduleLocked() {
	if c.scheduled || c.closed || (len(c.unwritten) > 0 && !c.closing) {
		return
	}
	c.scheduled = true
	c.worker.push(c)
}

// Close writes the protocol's goodbye for reason, then closes. Safe to call more than once.
func (c *Conn) Close(reason Reason) {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.reason = true, reason
	}
	c.scheduleLocked()
	c.mu.Unlock()
}

// Age returns how long the connection has been open.
func (c *Conn) Age() time.Duration { return time.Since(c.created) }

// flush runs on a worker: it writes what the socket still owes, then renders and writes the
// queue in as few syscalls as the socket allows.
func (c *Conn) flush(buf *[]byte) {
	c.mu.Lock()
	c.scheduled = false
	if c.closed {
		c.mu.Unlock()
		return
	}
	if len(c.unwritten) > 0 {
		pending := c.unwritten
		c.mu.Unlock()
		n, err := c.write(pending)
		c.mu.Lock()
		if err != nil {
			c.mu.Unlock()
			c.server.finish(c, ReasonIO)
			return
		}
		if n < len(pending) {
			c.unwritten = pending[n:]
			force := c.closing
			c.mu.Unlock()
			if force {
				c.server.finish(c, c.reason)
			}
			return
		}
		c.unwritten, c.stuckSince = nil, 0
	}
	items := c.queue
	c.queue = c.queue[len(c.queue):] // the rest of the array stays for appends while we write
	c.queueBytes = 0
	closing, reason := c.closing, c.reason
	c.mu.Unlock()

	out := (*buf)[:0]
	done := false
	for i := range items {
		var d bool
		if items[i].Heartbeat {
			out = c.proto.Heartbeat(out)
			continue
		}
		out, d = c.proto.Render(out, &items[i])
		items[i] = Item{}
		if d {
			done = true
		}
	}
	if closing && reason != ReasonPeer {
		out = c.proto.Goodbye(out, reason)
	}
	*buf = out
	c.mu.Lock()
	// Reclaim the queue's array when nothing was appended meanwhile, and drop it when large, so
	// that an idle connection keeps no more than a few slots.
	if len(c.queue) == 0 {
		if cap(items) <= 16 {
			c.queue = items[:0]
		} else {
			c.queue = nil
		}
	}
	c.mu.Unlock()
	if len(out) > 0 {
		n, err := c.write(out)
		if err != nil {
			c.server.finish(c, ReasonIO)
			return
		}
		c.lastWrite.Store(time.Now().UnixNano())
		if n < len(out) {
			c.mu.Lock()
			c.unwritten = append([]byte(nil), out[n:]...)
			c.stuckSince = time.Now().UnixNano()
			c.mu.Unlock()
			if !closing && !done {
				return // EPOLLOUT will schedule us again
			}
		}
	}
	if done && !closing {
		c.mu.Lock()
		c.closing, c.reason = true, ReasonDrain
		c.mu.Unlock()
		closing = true
	}
	if closing {
		c.server.finish(c, c.reason)
		return
	}
	c.mu.Lock()
	if len(c.queue) > 0 || c.closing {
		c.scheduleLocked()
	}
	c.mu.Unlock()
}

// write writes b to the socket without blocking; it returns how much the socket took.
func (c *Conn) write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(c.fd, b[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == nil:
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return n, nil
		default:
			return n, err
		}
	}
	return n, nil
}
