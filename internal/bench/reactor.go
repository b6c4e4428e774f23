//go:build linux

package bench

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A reactor reads a share of the subscriber connections: one epoll set, one
// goroutine, one large read buffer. An idle connection costs the generator a
// small struct and nothing else; a delivery costs one read() and a byte scan,
// and one epoll_wait serves every connection ready at once. (A goroutine and
// a buffer per connection would cost more memory and, per delivery, a
// scheduler wake-up.)
//
// The reactor never blocks in epoll_wait: its epoll descriptor is itself
// registered with the Go runtime's poller, and the goroutine parks there when
// nothing is ready. A thread blocked in a system call would keep the runtime's
// sysmon waking every 20 µs to hand its P over, and cost a thread switch per
// wake-up; this costs neither.
type reactor struct {
	epfd   int
	file   *os.File // epfd, for the runtime poller
	rc     syscall.RawConn
	buf    []byte
	events []unix.EpollEvent
	conns  []atomic.Pointer[conn] // shared by all reactors, indexed by conn id
	x      rx

	stop        *atomic.Bool
	measureFrom *atomic.Int64
	closeOnce   sync.Once

	// Published once per epoll_wait round for the coordinator.
	deliveries  atomic.Uint64
	unique      atomic.Uint64
	reads       atomic.Uint64
	bytes       atomic.Uint64
	wakeups     atomic.Uint64
	disconnects atomic.Uint64
	_           [64]byte // keep reactors' counters off each other's cache lines
}

// readBufSize is the reactor's read buffer: a connection with many messages
// waiting is drained in a few reads.
const readBufSize = 128 << 10

func newReactor(conns []atomic.Pointer[conn], stop *atomic.Bool, measureFrom *atomic.Int64, x rx) (*reactor, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	x.hist = new(histogram)
	return &reactor{epfd: epfd, file: f, rc: rc, buf: make([]byte, readBufSize),
		events: make([]unix.EpollEvent, 512), conns: conns, stop: stop, measureFrom: measureFrom, x: x}, nil
}

// add registers c, whose fields must be set: the reactor owns it from now on.
func (r *reactor) add(c *conn) error {
	fd := c.fd // read before the reactor may see c: once it does, c is its own
	r.conns[c.id].Store(c)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.id)}
	return unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// run reads until wake is called with stop set.
func (r *reactor) run() error {
	var werr error
	poll := func(fd uintptr) bool {
		// Neither call can block: raw system calls spare the scheduler's
		// bookkeeping.
		n, _, errno := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd,
			uintptr(unsafe.Pointer(&r.events[0])), uintptr(len(r.events)), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			return true
		case errno != 0:
			werr = errno
			return true
		case n == 0:
			return false // park until the epoll set is readable
		}
		r.process(int(n))
		return true
	}
	for !r.stop.Load() {
		if err := r.rc.Read(poll); err != nil {
			if r.stop.Load() {
				return nil
			}
			return err
		}
		if werr != nil {
			return werr
		}
	}
	return nil
}

// wake makes run return once stop is set.
func (r *reactor) wake() { _ = r.file.SetReadDeadline(time.Unix(1, 0)) }

// process handles n ready connections.
func (r *reactor) process(n int) {
	x := &r.x
	x.measureFrom = r.measureFrom.Load()
	d0, u0 := x.deliveries, x.unique
	reads, bytes := uint64(0), uint64(0)
	for i := range n {
		c := r.conns[r.events[i].Fd].Load()
		for c != nil && !c.closed {
			// recvfrom skips read()'s file-position lock and VFS layers.
			m, _, errno := syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd),
				uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)), unix.MSG_DONTWAIT, 0, 0)
			if errno == unix.EINTR {
				continue
			}
			if errno == unix.EAGAIN {
				break
			}
			reads++
			if errno != 0 || m == 0 {
				var err error = errEOF
				if errno != 0 {
					err = errno
				}
				r.drop(c, err)
				break
			}
			bytes += uint64(m)
			x.now = time.Now().UnixNano()
			if err := c.dec.feed(c, x, r.buf[:m]); err != nil {
				r.drop(c, err)
				break
			}
			// Edge-triggered: a short read means the socket is drained
			// (data arriving later raises a new edge); a full one, that
			// more may be waiting.
			if int(m) < len(r.buf) {
				break
			}
		}
	}
	if d := x.deliveries - d0; d > 0 {
		r.deliveries.Add(d)
	}
	if u := x.unique - u0; u > 0 {
		r.unique.Add(u)
	}
	r.reads.Add(reads)
	r.bytes.Add(bytes)
	r.wakeups.Add(1)
}

// drop ends a connection the server closed or broke.
func (r *reactor) drop(c *conn, err error) {
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	_ = unix.Close(c.fd)
	c.fd = -1
	c.closed = true
	if c.err == nil {
		c.err = err
	}
	r.disconnects.Add(1)
}

func (r *reactor) close() { r.closeOnce.Do(func() { r.file.Close() }) }
