package conn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crier-push/crier/internal/hub"
	"golang.org/x/sys/unix"
)

// Config configures a Server.
type Config struct {
	Limits      Limits
	Heartbeat   time.Duration // 0: none
	MaxLifetime time.Duration // 0: none
	// WriteTimeout closes a connection whose peer has not taken bytes for this long.
	WriteTimeout time.Duration
	Workers      int // writer goroutines; default GOMAXPROCS
	Logger       *slog.Logger
}

// Server owns the epoll set, the writer pool and every connection taken over.
type Server struct {
	cfg      Config
	limits   Limits
	epfd     int
	workers  []*worker // the lanes: a connection is written by workers[Conn.lane]
	nextLane atomic.Uint32
	log      *slog.Logger

	mu    sync.Mutex
	conns []*Conn // indexed by Conn.idx
	byFD  map[int]*Conn
	gen   int32

	metrics struct {
		open, slow atomic.Int64
	}
	// batches counts the Batch calls under way: while there is one, connections made ready do
	// not wake their writer (see Batch).
	batches  atomic.Int64
	endBatch func()    // s.flushBatch, made once: a method value made per Batch would allocate
	bufs     sync.Pool // *scratch, for the goroutines that end a batch
	// serving counts the handlers running Serve: requests that are streams, not work under way.
	serving atomic.Int64
	// closeAll, once set, is the reason every connection closes for, those started later too.
	closeAll atomic.Pointer[Reason]
	wakefd   int // an eventfd in the epoll set that wakes the poller to stop
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	polled   chan struct{} // closed when the poller returns

	// clock is the time of the timer's next tick, unix nanoseconds: what a write records as its
	// time, which saves reading the clock on every write. A connection's last write may so look
	// up to a tick younger than it is, and its heartbeat come up to a tick late, never early.
	clock atomic.Int64
	tick  time.Duration // the timer's period

	// onWrite, when set (by tests), sees every write that the socket took bytes of.
	onWrite func(c *Conn, b []byte)
}

// NewServer starts the poller, the writers and the timer.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Limits.QueueItems <= 0 {
		cfg.Limits.QueueItems = 1000
	}
	if cfg.Limits.QueueBytes <= 0 {
		cfg.Limits.QueueBytes = 4 << 20
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	// Connections' events carry their generation, from 1 up; the eventfd's carries 0.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(wakefd)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	s := &Server{cfg: cfg, limits: cfg.Limits, epfd: epfd, wakefd: wakefd, log: cfg.Logger,
		byFD: make(map[int]*Conn), stop: make(chan struct{}), polled: make(chan struct{})}
	// An eighth of the shortest period the timer watches: each is honoured within a quarter of
	// itself, the clock being up to a tick ahead.
	s.tick = time.Second
	for _, d := range [...]time.Duration{cfg.Heartbeat, cfg.MaxLifetime, cfg.WriteTimeout} {
		if d > 0 && d/8 < s.tick {
			s.tick = max(d/8, 10*time.Millisecond)
		}
	}
	s.endBatch = s.flushBatch
	s.clock.Store(time.Now().Add(s.tick).UnixNano())
	for range cfg.Workers {
		w := &worker{wake: make(chan struct{}, 1), asleep: true, batches: &s.batches}
		w.drained.L = &w.mu
		s.workers = append(s.workers, w)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); w.run(s.stop) }()
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.timer() }()
	go func() { defer close(s.polled); s.poll() }()
	return s, nil
}

// Open reports how many connections are open.
func (s *Server) Open() int64 { return s.metrics.open.Load() }

// SlowDisconnects reports how many connections were closed for falling behind.
func (s *Server) SlowDisconnects() int64 { return s.metrics.slow.Load() }

// Take takes over a hijacked connection, in the next lane. A TCP connection joins the epoll
// set: the returned Conn owns a duplicate of its socket and nc is closed. Any other (TLS) is
// served by the goroutine backend (goroutine.go): one goroutine reads nc and one writes it,
// with the same queue, limits, heartbeats, lifetime and goodbye. Nothing is written or read
// until Start.
func (s *Server) Take(nc net.Conn, proto Protocol) (*Conn, error) {
	return s.TakeInLane(nc, proto, s.NextLane())
}

// NextLane returns a lane for a connection to come, in turn: for a protocol that is a hub sink
// before its connection is taken (TakeInLane).
func (s *Server) NextLane() int { return int(s.nextLane.Add(1) % uint32(len(s.workers))) }

// TakeInLane is Take in the given lane, which NextLane returned.
func (s *Server) TakeInLane(nc net.Conn, proto Protocol, lane int) (*Conn, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return s.takeConn(nc, proto), nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("syscall conn: %w", err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(f uintptr) { fd, dupErr = unix.Dup(int(f)) }); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("dup: %w", dupErr)
	}
	// The duplicate shares the non-blocking file description; closing nc only drops Go's
	// descriptor and its registration with the runtime's poller.
	_ = tc.Close()
	unix.CloseOnExec(fd)
	c := s.newConn(fd, proto)
	c.lane = lane
	c.worker = s.workers[lane]
	return c, nil
}

func (s *Server) newConn(fd int, proto Protocol) *Conn {
	c := &Conn{fd: fd, server: s, proto: proto, created: time.Now(), lane: -1}
	c.lastWrite.Store(s.clock.Load())
	if s.cfg.MaxLifetime > 0 {
		c.deadline = c.created.Add(s.cfg.MaxLifetime).UnixNano()
	}
	return c
}

// Start registers c with the poller: from now on its peer's bytes and hang-ups are seen, and
// what was queued is written. buffered is handed to the protocol first. When registering
// fails, the connection is finished (Closed has run) and the error returned; should the
// connection close while Start runs, Start returns nil and Closed has run too.
func (s *Server) Start(c *Conn, buffered []byte) error {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return errors.New("conn: Start of a connection started or discarded already")
	}
	s.mu.Lock()
	s.gen++
	if s.gen <= 0 { // wrapped: 0 is the eventfd's
		s.gen = 1
	}
	c.gen = s.gen
	c.idx = len(s.conns)
	s.conns = append(s.conns, c)
	if c.out == nil {
		s.byFD[c.fd] = c
	}
	s.mu.Unlock()
	s.metrics.open.Add(1)
	c.started = true
	if len(c.queue) > 0 || c.closing {
		c.scheduleLocked(nil)
	}
	c.mu.Unlock()
	if r := s.closeAll.Load(); r != nil {
		c.Close(*r)
	}
	if len(buffered) > 0 {
		if err := c.proto.Read(c, buffered); err != nil {
			c.Close(readReason(err))
		}
	}
	if c.out != nil {
		s.startOut(c)
		return nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(c.fd), Pad: c.gen}
	c.fdMu.RLock()
	if c.fdClosed {
		// It closed already (a write failed): fd may be another connection's by now.
		c.fdMu.RUnlock()
		return nil
	}
	err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev)
	c.fdMu.RUnlock()
	if err != nil {
		s.finish(c, ReasonIO)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// Discard closes a connection that was taken but never started, without calling Closed. It
// does nothing to a started connection.
func (s *Server) Discard(c *Conn) {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.closing = true, true
	c.queue = nil
	c.mu.Unlock()
	c.closeFD()
}

// finish closes the socket once and tells the protocol. It may run on any goroutine, but not
// while that goroutine holds c.mu or c.fdMu.
func (s *Server) finish(c *Conn, reason Reason) {
	c.mu.Lock()
	if c.closed || !c.started {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closing = true
	clear(c.queue)
	c.queue, c.unwritten, c.blocked = nil, nil, false
	c.mu.Unlock()

	s.mu.Lock()
	last := len(s.conns) - 1
	s.conns[c.idx] = s.conns[last]
	s.conns[c.idx].idx = c.idx
	s.conns[last] = nil
	s.conns = s.conns[:last]
	if c.out == nil {
		delete(s.byFD, c.fd)
	}
	s.mu.Unlock()
	// Closing the only descriptor of the socket also removes it from the epoll set.
	c.closeFD()
	s.metrics.open.Add(-1)
	c.proto.Closed(c, reason)
}

// closeFD closes the descriptor once no syscall is using it; on the goroutine backend it closes
// the connection and stops its goroutines.
func (c *Conn) closeFD() {
	if c.out != nil {
		c.out.close(c.writingSince.Load() != 0)
		return
	}
	c.fdMu.Lock()
	if !c.fdClosed {
		c.fdClosed = true
		_ = unix.Close(c.fd)
	}
	c.fdMu.Unlock()
}

// poll waits for socket events and hands them out: bytes and hang-ups to the protocol,
// writability to the connection's writer.
func (s *Server) poll() {
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.EpollWait(s.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			s.log.Error("epoll_wait", "err", err)
			return
		}
		for i := range n {
			ev := &events[i]
			if ev.Pad == 0 && int(ev.Fd) == s.wakefd {
				return // Shutdown
			}
			s.mu.Lock()
			c := s.byFD[int(ev.Fd)]
			s.mu.Unlock()
			if c == nil || c.gen != ev.Pad {
				continue // the socket closed after this event was reported
			}
			if ev.Events&unix.EPOLLIN != 0 {
				if reason, closed := s.readAll(c, buf); closed {
					s.finish(c, reason)
					continue
				}
			}
			if ev.Events&(unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
				s.finish(c, ReasonPeer)
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				c.mu.Lock()
				c.writable = true
				if len(c.unwritten) > 0 {
					c.pushLocked(nil)
				}
				c.mu.Unlock()
			}
		}
	}
}

// maxReadPerEvent bounds what one readiness event may read, so one flooding peer cannot hold
// the poller; such a peer is closed.
const maxReadPerEvent = 4 << 20

var errFlood = errors.New("peer sends faster than it may")

// readAll drains the socket (the set is edge-triggered). It reports whether c must close.
func (s *Server) readAll(c *Conn, buf []byte) (Reason, bool) {
	total := 0
	for {
		c.fdMu.RLock()
		if c.fdClosed {
			c.fdMu.RUnlock()
			return Reason{}, false
		}
		n, err := unix.Read(c.fd, buf)
		c.fdMu.RUnlock()
		if n > 0 {
			total += n
			if rerr := c.proto.Read(c, buf[:n]); rerr != nil {
				c.Close(readReason(rerr))
				return Reason{}, false
			}
			if total > maxReadPerEvent {
				c.Close(readReason(errFlood))
				return Reason{}, false
			}
			continue
		}
		switch {
		case n == 0 && err == nil:
			return ReasonPeer, true
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return Reason{}, false
		default:
			return ReasonIO, true
		}
	}
}

// ReadError lets a protocol say how a read failure closes the connection.
type ReadError struct{ Reason Reason }

func (e *ReadError) Error() string { return e.Reason.Code + ": " + e.Reason.Message }

func readReason(err error) Reason {
	var re *ReadError
	if errors.As(err, &re) {
		return re.Reason
	}
	return Reason{Code: "protocol_error", Message: err.Error(), WSCode: 1008}
}

// timer sends heartbeats to idle connections, ends those past their lifetime and those whose
// peer stopped reading.
func (s *Server) timer() {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	var batch []*Conn
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.clock.Store(now.Add(s.tick).UnixNano())
			batch = s.snapshot(batch[:0])
			s.sweep(batch, now.UnixNano())
			clear(batch)
		}
	}
}

func (s *Server) snapshot(dst []*Conn) []*Conn {
	s.mu.Lock()
	dst = append(dst, s.conns...)
	s.mu.Unlock()
	return dst
}

func (s *Server) sweep(conns []*Conn, now int64) {
	hb := int64(s.cfg.Heartbeat)
	stuck := int64(s.cfg.WriteTimeout)
	// Without a maximum lifetime no connection has a deadline: the sweep then leaves the line
	// that holds it alone, and reads one line per connection instead of two.
	lifetimes := s.cfg.MaxLifetime > 0
	for _, c := range conns {
		if lifetimes && c.deadline != 0 && now >= c.deadline {
			c.Close(ReasonLifetime)
			continue
		}
		// Most connections are neither stuck nor due a heartbeat: two atomic loads tell, without
		// the connection's lock.
		if since := c.stuckSince.Load(); since != 0 && now-since >= stuck {
			s.finish(c, ReasonStuck)
			continue
		}
		if hb <= 0 || now-c.lastWrite.Load() < hb {
			continue
		}
		c.mu.Lock()
		// Heartbeats only keep an idle connection open: one with bytes waiting is not idle.
		idle := len(c.queue) == 0 && len(c.unwritten) == 0 && !c.closing && c.writingSince.Load() == 0
		c.mu.Unlock()
		if idle {
			c.lastWrite.Store(now) // one heartbeat per interval even if this one waits
			c.Enqueue(Item{Heartbeat: true})
		}
	}
}

// CloseAll closes every connection with reason, and those started from now on, and waits up to
// ctx for their goodbyes to be written; it then closes those left.
func (s *Server) CloseAll(ctx context.Context, reason Reason) {
	s.closeAll.CompareAndSwap(nil, &reason)
	for _, c := range s.snapshot(nil) {
		c.Close(reason)
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.Open() > 0 {
		select {
		case <-ctx.Done():
			for _, c := range s.snapshot(nil) {
				s.finish(c, reason)
			}
			return
		case <-t.C:
		}
	}
}

// Shutdown closes the connections left, without goodbye, and stops the poller, the writers and
// the timer. Call after CloseAll. Safe to call more than once.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() {
		r := ReasonDrain
		s.closeAll.CompareAndSwap(nil, &r)
		for _, c := range s.snapshot(nil) {
			s.finish(c, *s.closeAll.Load())
		}
		close(s.stop)
		s.wg.Wait()
		for _, w := range s.workers {
			w.mu.Lock()
			w.stopped = true
			w.mu.Unlock()
			w.drained.Broadcast()
		}
		var one [8]byte
		one[0] = 1 // native endian on the machines epoll runs on; any non-zero value wakes
		_, _ = unix.Write(s.wakefd, one[:])
		<-s.polled
		_ = unix.Close(s.wakefd)
		_ = unix.Close(s.epfd)
	})
}

// Batch starts a batch of deliveries on the calling goroutine, and end ends it. Meanwhile the
// connections made ready do not wake their writers: end writes up to batchFlush of them on the
// calling goroutine, and wakes the writers of those left. A publish that reaches a few
// subscribers so costs no goroutine switch, and its bytes leave at once from a goroutine that
// is running anyway; one that reaches thousands still fans out over every writer, which a
// ready list longer than batchFlush wakes at once. (The NATS server flushes its subscribers
// from the publishing client's goroutine the same way.) While any batch is under way, this
// holds for every connection made ready; each end looks at every list, so none is left
// waiting for longer than the batch under way.
func (s *Server) Batch() (end func()) {
	s.batches.Add(1)
	return s.endBatch
}

// batchFlush is how many connections the end of a batch writes itself.
const batchFlush = 32

func (s *Server) flushBatch() {
	s.batches.Add(-1)
	var sc *scratch
	budget := batchFlush
	var took [batchFlush]*Conn
	for _, w := range s.workers {
		w.mu.Lock()
		n := copy(took[:budget], w.ready)
		rest := copy(w.ready, w.ready[n:])
		clear(w.ready[rest:])
		w.ready = w.ready[:rest]
		w.mu.Unlock()
		if n > 0 && sc == nil {
			if sc, _ = s.bufs.Get().(*scratch); sc == nil {
				sc = &scratch{buf: make([]byte, 0, 64<<10)}
			}
		}
		for i := range n {
			took[i].flush(sc)
			took[i] = nil
		}
		budget -= n
		w.wakeIfReady()
	}
	if sc != nil && cap(sc.buf) <= 1<<20 {
		s.bufs.Put(sc)
	}
}

// Lanes returns how many lanes (writers) there are; it and Post and Wait make the hub's Lanes.
func (s *Server) Lanes() int { return len(s.workers) }

// Post hands a fanout job to lane's writer.
func (s *Server) Post(lane int, j hub.Job) { s.workers[lane].post(j) }

// maxJobs is how many jobs a writer holds before publishers wait (Wait).
const maxJobs = 256

// Wait blocks while a writer holds more than maxJobs jobs.
func (s *Server) Wait() {
	for _, w := range s.workers {
		if !w.full.Load() {
			continue // the common case, without the lock the writer takes for every connection
		}
		w.mu.Lock()
		for len(w.jobs) > maxJobs && !w.stopped {
			w.drained.Wait()
		}
		w.mu.Unlock()
	}
}

// worker is one lane: it runs the hub's jobs for its connections and writes the connections on
// its ready list.
type worker struct {
	mu      sync.Mutex
	ready   []*Conn
	jobs    []hub.Job
	drained sync.Cond   // on mu: jobs were taken
	full    atomic.Bool // len(jobs) > maxJobs
	stopped bool
	// asleep says the worker found its list empty and waits for wake: only then does a push
	// signal it, so that a fanout pushing thousands of connections signals once.
	asleep  bool
	wake    chan struct{}
	batches *atomic.Int64 // the server's
	// Two writers' structs, allocated together, must not share a line: each takes its own
	// lock for every connection it queues to.
	_ [128]byte
}

func (w *worker) post(j hub.Job) {
	w.mu.Lock()
	w.jobs = append(w.jobs, j)
	if len(w.jobs) > maxJobs {
		w.full.Store(true)
	}
	wake := w.asleep
	w.asleep = false
	w.mu.Unlock()
	if wake {
		w.wake <- struct{}{}
	}
}

func (w *worker) push(c *Conn) {
	w.mu.Lock()
	w.ready = append(w.ready, c)
	wake := w.asleep && (w.batches.Load() == 0 || len(w.ready) > batchFlush)
	if wake {
		w.asleep = false
	}
	w.mu.Unlock()
	if wake {
		w.wake <- struct{}{} // cannot block: one signal per sleep, and the buffer holds one
	}
}

// wakeIfReady wakes the worker when connections wait on its list.
func (w *worker) wakeIfReady() {
	w.mu.Lock()
	wake := w.asleep && len(w.ready) > 0
	if wake {
		w.asleep = false
	}
	w.mu.Unlock()
	if wake {
		w.wake <- struct{}{}
	}
}

func (w *worker) run(stop <-chan struct{}) {
	r := &runner{w: w, sc: scratch{buf: make([]byte, 0, 64<<10)}}
	var jobs []hub.Job
	for {
		select {
		case <-stop:
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			jobs, w.jobs = w.jobs, jobs[:0]
			if len(jobs) > maxJobs {
				w.full.Store(false) // only then: publishers read it on every publish
			}
			idle := len(jobs) == 0 && len(w.ready) == 0
			if idle {
				w.asleep = true
			}
			w.mu.Unlock()
			if idle {
				break
			}
			if len(jobs) > 0 {
				w.drained.Broadcast()
			}
			r.Flush()
			hub.RunJobs(jobs, r)
			clear(jobs)
			if cap(r.sc.buf) > 1<<20 {
				r.sc.buf = make([]byte, 0, 64<<10)
			}
		}
	}
}

// runner is a worker's goroutine as the hub's walks see it (hub.Runner).
type runner struct {
	w     *worker
	batch []*Conn
	// walked is the walk's own ready list: the connections of w it queued to. Only w's
	// goroutine touches it, so it takes no lock, where w.ready takes w.mu for each.
	walked []*Conn
	sc     scratch
}

// Deliver queues f to s; to one of w's connections without w.mu (see walked).
func (r *runner) Deliver(s hub.Sink, f *hub.Frame) {
	if c, ok := s.(*Conn); ok && c.worker == r.w {
		c.enqueue(Item{Frame: f}, r)
		return
	}
	s.Deliver(f)
}

// Flush writes the connections made ready so far: between the chunks of a job's walk, those
// the walk just queued to, and those made ready by others.
func (r *runner) Flush() {
	for i, c := range r.walked {
		c.flush(&r.sc)
		r.walked[i] = nil
	}
	r.walked = r.walked[:0]
	w := r.w
	w.mu.Lock()
	r.batch, w.ready = w.ready, r.batch[:0]
	w.mu.Unlock()
	for i, c := range r.batch {
		c.flush(&r.sc)
		r.batch[i] = nil
	}
}

// More takes up to max of the jobs at the head of the list that continue j's walk.
func (r *runner) More(j hub.Job, max int) []hub.Job {
	w := r.w
	w.mu.Lock()
	n := 0
	for n < len(w.jobs) && n < max && w.jobs[n].Continues(j) {
		n++
	}
	if n == 0 {
		w.mu.Unlock()
		return nil
	}
	more := slices.Clone(w.jobs[:n])
	full := len(w.jobs) > maxJobs
	w.jobs = slices.Delete(w.jobs, 0, n)
	if full && len(w.jobs) <= maxJobs {
		w.full.Store(false)
	}
	w.mu.Unlock()
	w.drained.Broadcast()
	return more
}

// Return puts jobs back at the head of the list.
func (r *runner) Return(jobs []hub.Job) {
	w := r.w
	w.mu.Lock()
	w.jobs = slices.Insert(w.jobs, 0, jobs...)
	if len(w.jobs) > maxJobs {
		w.full.Store(true)
	}
	w.mu.Unlock()
}
