// Package conn is Crier's connection layer for long-lived push connections. A connection taken
// over from net/http costs no goroutine and no buffer while idle: its socket sits in an epoll set
// watched by one poller goroutine, frames wait in a bounded queue of pointers to shared frames,
// and a small pool of writer goroutines renders and writes each connection's queue in one
// syscall, with buffers borrowed from a pool only while writing. Connections that epoll cannot
// own (TLS, HTTP/2 streams) are served by the goroutine backend (goroutine.go) with the same
// queue, limits, heartbeats, lifetime and goodbye.
package conn

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/rawio"
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

// keepSlots is the largest queue array a connection keeps between flushes: what fits the
// allocator's 1 KiB size class (append rounds 16 slots up to 18), so that bursts of up to that
// many items queue and flush without allocating, and an idle connection holds at most 1 KiB.
const keepSlots = 1024 / int(unsafe.Sizeof(Item{}))

// Protocol is what a transport plugs into a connection. Render, Heartbeat and Goodbye run on a
// writer goroutine, never two at once for one connection; Read runs on the poller goroutine (on
// the goroutine backend, the connection's reader), never two at once either.
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

// Limits bound one connection's queue: the items waiting to be written, and their bytes.
//
// They apply while the peer is behind, that is while the socket refuses bytes: a connection
// whose queue then passes either closes with ReasonSlow. While the socket takes everything, a
// burst may queue up to BurstFactor times as much, so that a subscriber resuming from its cursor
// can take its catch-up (queued all at once) without being cut off for it, and resume again.
type Limits struct {
	QueueItems int
	QueueBytes int
}

// BurstFactor bounds a queue whatever the socket does: BurstFactor times Limits.
const BurstFactor = 16

// Conn is one long-lived connection.
type Conn struct {
	// The fields a delivery touches come first, in as few cache lines as they fit: a fanout to
	// 10,000 connections touches each twice (to queue, then to write), with the connections far
	// out of the cache. Enqueue reads the first 128 bytes; flush and its write the first 192.
	mu         sync.Mutex
	queue      []Item
	queueBytes int
	worker     *worker
	server     *Server
	started    bool // Start has registered it; nothing is written before
	// scheduled: on a ready list or being flushed. A connection is flushed by one goroutine at a
	// time, whichever took it off a list, so its bytes leave in queue order.
	scheduled bool
	writable  bool // an EPOLLOUT came since the last write began
	closing   bool // no more items; close once written
	closed    bool
	blocked   bool // unwritten holds bytes: Enqueue need not read the slice's line to know
	viaOut    bool // out is set (the goroutine backend), from before Start on

	// one is the queue's array while it holds one item, the common case of a subscriber that
	// keeps up: that item then lives beside the queue, not in an array of its own that a
	// delivery would miss in the cache twice more. A flush moves it out to its scratch, so
	// the slot is free again at once.
	one [1]Item
	fd  int

	proto     Protocol
	lastWrite atomic.Int64 // unix nanoseconds, to the timer's tick (Server.clock)
	// stuckSince is when the socket last refused bytes without taking any since; 0: it takes
	// them. Written under mu, read by the timer without it.
	stuckSince atomic.Int64
	// fdMu guards the descriptor's use against its close: every read, write and epoll_ctl on fd
	// holds it for reading, and the close for writing, so that no syscall ever reaches a
	// descriptor number the kernel has handed to another connection meanwhile.
	fdMu     sync.RWMutex
	fdClosed bool // under fdMu
	final    bool // the goodbye is rendered: close once unwritten is written

	// What a delivery does not read: the rarer paths' state. A flush knows from blocked
	// whether unwritten holds bytes, and a write from viaOut whether out is set.
	unwritten []byte // bytes the socket refused; the socket owes an EPOLLOUT (blocked)
	// out is the goroutine backend's writer (see goroutine.go); nil on the epoll backend.
	out *goOut
	// writingSince is when the goroutine backend's write under way began; 0: none.
	writingSince atomic.Int64
	reason       Reason

	gen      int32 // tells this connection's epoll events from those of an earlier one on fd
	idx      int   // in server.conns, once started
	lane     int   // index of worker in server.workers; -1 on the goroutine backend
	created  time.Time
	deadline int64 // unix nanoseconds of the maximum lifetime; 0: none
	// Value is the transport's per-connection state.
	Value any
	// A whole number of cache lines, so that every connection starts a line (the allocator
	// lays out objects of 384 bytes at multiples of 64): otherwise every other connection's
	// first 128 bytes span three lines.
	_ [40]byte
}

// Deliver implements hub.Sink: it queues the frame.
func (c *Conn) Deliver(f *hub.Frame) { c.Enqueue(Item{Frame: f}) }

// Warm implements hub.Warmer: it loads one word of each of the three lines a delivery and its
// flush read, words that never change or are atomic, and the protocol's state when it can.
func (c *Conn) Warm() uintptr {
	x := uintptr(unsafe.Pointer(c.server)) + uintptr(c.fd) + uintptr(c.lastWrite.Load())
	if w, ok := c.proto.(hub.Warmer); ok {
		x += w.Warm()
	}
	return x
}

// Lane implements hub.Laned: the writer that writes the connection, -1 on the goroutine
// backend, whose connections have their own.
func (c *Conn) Lane() int { return c.lane }

// Send queues bytes of the connection's own, such as a reply to a command.
func (c *Conn) Send(b []byte) { c.Enqueue(Item{Raw: b}) }

// Enqueue queues an item.
func (c *Conn) Enqueue(it Item) { c.enqueue(it, nil) }

// enqueue queues an item. r, when not nil, is the runner of c's own writer, walking: c then
// goes on that runner's list, which takes no lock.
func (c *Conn) enqueue(it Item, r *runner) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.queueBytes += it.size()
	lim := &c.server.limits
	f := 1
	if !c.behindLocked() {
		f = BurstFactor // the peer takes all it is sent: the writer is just behind
	}
	if len(c.queue) >= f*lim.QueueItems || c.queueBytes > f*lim.QueueBytes {
		// A slow subscriber: drop what waits, say why, and close. It resumes from its cursor.
		clear(c.queue)
		c.queue = c.queue[:0]
		c.queueBytes = 0
		c.closing, c.reason = true, ReasonSlow
		c.server.metrics.slow.Add(1)
		c.scheduleLocked(r)
		c.mu.Unlock()
		if c.viaOut && c.writingSince.Load() != 0 {
			// The goroutine backend's writer is blocked on the peer: end its write, as the
			// epoll backend gives up on a socket that refuses bytes. Not here, under the hub's
			// lock: an HTTP/2 stream reset waits for its connection's goroutine.
			go c.out.interrupt()
		}
		return
	}
	switch {
	case cap(c.queue) == 0:
		c.queue = append(c.one[:0], it)
	case len(c.queue) == 1 && unsafe.SliceData(c.queue) == &c.one[0]:
		// A second item: the queue moves to an array, and the slot lets go of its item.
		c.queue = append(c.queue, it)
		c.one[0] = Item{}
	default:
		c.queue = append(c.queue, it)
	}
	c.scheduleLocked(r)
	c.mu.Unlock()
}

// scheduleLocked puts the connection on a ready list unless it is there already, not started,
// or waiting for the socket to drain: r's when not nil (c's writer's runner, on its own
// goroutine), else its worker's. Caller holds c.mu.
func (c *Conn) scheduleLocked(r *runner) {
	if c.blocked && !c.closing {
		return // EPOLLOUT will schedule it
	}
	c.pushLocked(r)
}

// pushLocked puts the connection on a ready list, as scheduleLocked. Caller holds c.mu.
func (c *Conn) pushLocked(r *runner) {
	if c.scheduled || c.closed || !c.started {
		return
	}
	c.scheduled = true
	switch {
	case c.viaOut:
		c.out.signal()
	case r != nil:
		r.walked = append(r.walked, c)
	default:
		c.worker.push(c)
	}
}

// behindLocked reports whether the peer is behind: the socket refuses bytes, or on the
// goroutine backend a write has been blocked for a while. Caller holds c.mu.
func (c *Conn) behindLocked() bool {
	if c.blocked {
		return true
	}
	if !c.viaOut {
		return false
	}
	if since := c.writingSince.Load(); since != 0 {
		return time.Now().UnixNano()-since > int64(stallAfter)
	}
	return false
}

// Close writes the protocol's goodbye for reason, then closes. Safe to call more than once.
func (c *Conn) Close(reason Reason) {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.reason = true, reason
	}
	c.scheduleLocked(nil)
	c.mu.Unlock()
}

// Age returns how long the connection has been open.
func (c *Conn) Age() time.Duration { return time.Since(c.created) }

// scratch is what a goroutine that flushes connections keeps between flushes: the buffer it
// renders into, and a slot for the item it takes out of a connection's own.
type scratch struct {
	buf []byte
	one [1]Item
}

// flush runs on whichever goroutine took c off a ready list (a worker, or a publisher, see
// Server.Batch): it writes what the socket still owes, then renders and writes the queue in one
// syscall when the socket takes it all.
func (c *Conn) flush(sc *scratch) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.blocked {
		pending := c.unwritten
		c.writable = false
		c.mu.Unlock()
		n, err := c.write(pending)
		if err != nil {
			c.server.finish(c, c.failed(err))
			return
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		if n < len(pending) {
			giveUp := c.blockedLocked(pending[n:], n > 0)
			reason := c.reason
			c.mu.Unlock()
			if giveUp {
				c.server.finish(c, reason)
			}
			return
		}
		c.unwritten, c.blocked = nil, false
		c.stuckSince.Store(0)
		if c.final {
			reason := c.reason
			c.mu.Unlock()
			c.server.finish(c, reason)
			return
		}
	}
	items := c.queue
	inline := len(items) > 0 && unsafe.SliceData(items) == &c.one[0]
	if inline {
		// The item moves to the scratch slot: the connection's is free again for an item
		// queued meanwhile, and nothing is to be taken back after the write.
		sc.one[0], c.one[0] = c.one[0], Item{}
		items = sc.one[:]
		c.queue = nil
	} else {
		c.queue = c.queue[len(c.queue):] // the rest of the array stays for appends while we write
	}
	c.queueBytes = 0
	closing := c.closing
	// The write below is the last one begun: an EPOLLOUT from now on is news. One that comes
	// before the write merely makes a short write look again (blockedLocked).
	c.writable = false
	c.mu.Unlock()

	out := sc.buf[:0]
	done := false
	for i := range items {
		if done {
			// The protocol asked to close after an earlier item: the client resumes from the
			// cursor it has, so what follows is dropped.
			items[i] = Item{}
			continue
		}
		if items[i].Heartbeat {
			out = c.proto.Heartbeat(out)
			continue
		}
		out, done = c.proto.Render(out, &items[i])
		items[i] = Item{}
	}
	if done || closing {
		sc.buf = c.flushLast(out, items, inline, done)
		return
	}
	sc.buf = out
	if !inline {
		// Several items: the array goes back before the write, so that what is queued during
		// the write finds room in it, not a new array; one lock more, over several items.
		c.mu.Lock()
		c.reclaimLocked(items)
		c.mu.Unlock()
	}

	n := 0
	if len(out) > 0 {
		var err error
		if n, err = c.write(out); err != nil {
			c.server.finish(c, c.failed(err))
			return
		}
	}
	if n < len(out) {
		c.keepRest(append([]byte(nil), out[n:]...))
		return // EPOLLOUT will schedule it again
	}
	// One lock after the write ends the flush.
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.scheduled = false
	if len(c.queue) > 0 || c.closing {
		c.scheduleLocked(nil) // what was queued while this flush wrote
	}
	c.mu.Unlock()
}

// reclaimLocked takes back items, the queue's array that a flush rendered, when nothing was
// queued meanwhile; it drops it when large, so that an idle connection keeps no more than a
// few slots. Caller holds c.mu.
func (c *Conn) reclaimLocked(items []Item) {
	if len(c.queue) != 0 || c.closed {
		return
	}
	if cap(items) <= keepSlots {
		c.queue = items[:0]
	} else {
		c.queue = nil
	}
}

// flushLast ends a flush that closes the connection, for a Close or because the protocol asked
// to (done): out, what the flush rendered, is followed by the goodbye, written, and the socket
// closed. It returns the buffer.
func (c *Conn) flushLast(out []byte, items []Item, inline, done bool) []byte {
	c.mu.Lock()
	if !inline {
		c.reclaimLocked(items)
	}
	if done && !c.closing {
		c.closing, c.reason = true, ReasonDrain
	}
	c.final = true
	reason := c.reason
	c.mu.Unlock()
	if reason != ReasonPeer {
		out = c.proto.Goodbye(out, reason)
	}
	if len(out) > 0 || c.out.needsHead() {
		n, err := c.write(out)
		if err != nil {
			c.server.finish(c, c.failed(err))
			return out
		}
		if n < len(out) {
			c.keepRest(append([]byte(nil), out[n:]...))
			return out // EPOLLOUT will schedule it again
		}
	}
	c.server.finish(c, reason)
	return out
}

// keepRest ends a flush whose write the socket took only in part: rest, the connection's own
// copy of what it refused, waits for EPOLLOUT, unless the connection closes now (see
// blockedLocked).
func (c *Conn) keepRest(rest []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	giveUp := c.blockedLocked(rest, true)
	reason := c.reason
	c.mu.Unlock()
	if giveUp {
		c.server.finish(c, reason)
	}
}

// blockedLocked keeps rest, which the socket refused, for EPOLLOUT. progressed says whether
// the socket took bytes since the last refusal. It reports whether to close now instead: a
// connection closing for falling behind or not reading does not wait to say goodbye.
// Caller holds c.mu.
func (c *Conn) blockedLocked(rest []byte, progressed bool) bool {
	c.scheduled = false // the flush is over: EPOLLOUT (or the check below) schedules it again
	c.unwritten, c.blocked = rest, true
	if progressed || c.stuckSince.Load() == 0 {
		c.stuckSince.Store(time.Now().UnixNano())
	}
	if c.closing && (c.reason == ReasonSlow || c.reason == ReasonStuck) {
		return true
	}
	if c.writable {
		// The socket drained between the write and now: the poller saw no bytes waiting, and
		// with edge-triggered epoll that EPOLLOUT will not come again.
		c.writable = false
		c.pushLocked(nil)
	}
	return false
}

// failed is why a connection whose write failed closes: what it was closing for when that is
// falling behind (its write was interrupted for it), else the write's error.
func (c *Conn) failed(err error) Reason {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing && (c.reason == ReasonSlow || c.reason == ReasonStuck) {
		return c.reason
	}
	return writeReason(err)
}

// write writes b to the socket without blocking; it returns how much the socket took. On the
// goroutine backend it blocks until all is written or the write times out.
func (c *Conn) write(b []byte) (int, error) {
	if c.viaOut {
		return c.writeOut(b)
	}
	c.fdMu.RLock()
	defer c.fdMu.RUnlock()
	if c.fdClosed {
		return 0, errFDClosed
	}
	n := 0
	for n < len(b) {
		m, errno := rawio.Send(c.fd, b[n:])
		n += m
		switch errno {
		case 0, unix.EINTR:
		case unix.EAGAIN:
			return n, nil
		default:
			return n, errno
		}
	}
	if n > 0 {
		c.lastWrite.Store(c.server.clock.Load())
		if hook := c.server.onWrite; hook != nil {
			hook(c, b[:n])
		}
	}
	return n, nil
}

var errFDClosed = errors.New("connection closed")
