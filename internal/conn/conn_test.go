package conn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crier-push/crier/internal/hub"
)

// testProto is a Protocol whose wire format is readable: frames render as "F<offset>\n", raw
// items as their bytes, heartbeats as "HB\n", the goodbye as "BYE <code>\n". An item whose Note
// is "done" asks to close once written.
type testProto struct {
	render func(it *Item) // called before each item is rendered, on the writer
	rerr   error          // returned by Read

	mu      sync.Mutex
	read    []byte
	closes  int
	reason  Reason
	closed  chan struct{}
	renders int
}

func newProto() *testProto { return &testProto{closed: make(chan struct{})} }

func (p *testProto) Render(dst []byte, it *Item) ([]byte, bool) {
	if p.render != nil {
		p.render(it)
	}
	p.mu.Lock()
	p.renders++
	p.mu.Unlock()
	if f := it.Frame; f != nil {
		dst = append(dst, 'F')
		dst = strconv.AppendUint(dst, f.Msg.Offset, 10)
		return append(dst, '\n'), false
	}
	return append(dst, it.Raw...), it.Note == "done"
}

func (p *testProto) Heartbeat(dst []byte) []byte { return append(dst, "HB\n"...) }

func (p *testProto) Goodbye(dst []byte, reason Reason) []byte {
	dst = append(dst, "BYE "...)
	dst = append(dst, reason.Code...)
	return append(dst, '\n')
}

func (p *testProto) Read(c *Conn, data []byte) error {
	p.mu.Lock()
	p.read = append(p.read, data...)
	p.mu.Unlock()
	return p.rerr
}

func (p *testProto) Closed(c *Conn, reason Reason) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closes++
	if p.closes == 1 {
		p.reason = reason
		close(p.closed)
	}
}

func (p *testProto) Reads() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.read)
}

// waitClosed waits for Closed and returns its reason.
func (p *testProto) waitClosed(t testing.TB, within time.Duration) Reason {
	t.Helper()
	select {
	case <-p.closed:
	case <-time.After(within):
		t.Fatalf("Closed not called within %s", within)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

func (p *testProto) closeCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closes
}

func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.CloseAll(ctx, ReasonDrain)
		s.Shutdown()
	})
	return s
}

// tcpPair returns both ends of a loopback TCP connection. small gives it small socket buffers
// (the client's receive buffer, the server's send buffer), so that a peer that does not read
// blocks the server's writes after a few KiB rather than the megabytes the kernel would grant.
func tcpPair(t testing.TB, small bool) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if small { // before connecting, so that the window is small from the start
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
			}); err != nil {
				return err
			}
		}
		return serr
	}}
	cc, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if small {
		if err := sc.(*net.TCPConn).SetWriteBuffer(8192); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { cc.Close() })
	return sc.(*net.TCPConn), cc.(*net.TCPConn)
}

// open takes and starts the server end of a new loopback connection; it returns the client end.
func open(t testing.TB, s *Server, p Protocol, small bool) (*Conn, *net.TCPConn) {
	t.Helper()
	sc, cc := tcpPair(t, small)
	c, err := s.Take(sc, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(c, nil); err != nil {
		t.Fatal(err)
	}
	return c, cc
}

// readUntil reads from peer until what it read ends with suffix, or fails after within.
func readUntil(t *testing.T, peer net.Conn, got *bytes.Buffer, suffix string, within time.Duration) {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 64<<10)
	for !bytes.HasSuffix(got.Bytes(), []byte(suffix)) {
		n, err := peer.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading for %q: %v; got %d bytes ending %q", suffix, err, got.Len(), tail(got.Bytes()))
		}
	}
}

// readToEOF reads from peer until the server closes it.
func readToEOF(t *testing.T, peer net.Conn, within time.Duration) []byte {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("reading to EOF: %v after %d bytes ending %q", err, len(b), tail(b))
	}
	return b
}

func tail(b []byte) []byte {
	if len(b) > 80 {
		return b[len(b)-80:]
	}
	return b
}

type connState struct {
	queue, unwritten     int
	scheduled, closed    bool
	closing, final       bool
	queueBytes, queueCap int
}

func stateOf(c *Conn) connState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return connState{queue: len(c.queue), unwritten: len(c.unwritten), scheduled: c.scheduled,
		closed: c.closed, closing: c.closing, final: c.final, queueBytes: c.queueBytes, queueCap: cap(c.queue)}
}

// waitFor polls cond until it holds or fails after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var filler = bytes.Repeat([]byte{'x'}, 256<<10)

// fill queues filler until the socket refuses bytes, so that c waits for EPOLLOUT. The peer
// must not read meanwhile.
func fill(t *testing.T, c *Conn) { fillWith(t, c, filler) }

// fillWith fills with chunks of its own: what the socket refuses is at most one chunk. A chunk
// is queued only once the connection has been idle for a while, so that none is left queued
// behind the one the socket refused (a flush under way looks idle for a moment).
func fillWith(t *testing.T, c *Conn, filler []byte) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	var idleSince time.Time
	for {
		st := stateOf(c)
		if st.unwritten > 0 {
			return
		}
		if time.Now().After(deadline) || st.closed {
			t.Fatalf("the socket never filled: %+v", st)
		}
		switch {
		case st.queue > 0 || st.scheduled:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) > 2*time.Millisecond:
			c.Send(filler)
			idleSince = time.Time{}
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// skipFiller drops the leading filler bytes.
func skipFiller(b []byte) string { return string(bytes.TrimLeft(b, "x")) }

func frame(offset uint64) *hub.Frame {
	return hub.NewFrame(hub.Message{Channel: "c", Epoch: "e", Offset: offset, ContentType: "text/plain", Data: []byte("hi")})
}

// writeLog records what each write handed to the socket.
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) hook(c *Conn, b []byte) {
	w.mu.Lock()
	w.writes = append(w.writes, string(b))
	w.mu.Unlock()
}

func (w *writeLog) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

func TestOrder(t *testing.T) {
	s := newTestServer(t, Config{Limits: Limits{QueueItems: 1 << 20, QueueBytes: 1 << 30}})
	p := newProto()
	c, peer := open(t, s, p, false)
	const n = 5000
	var want strings.Builder
	go func() {
		for i := 1; i <= n; i++ {
			if i%3 == 0 {
				c.Send([]byte("R" + strconv.Itoa(i) + "\n"))
			} else {
				c.Deliver(frame(uint64(i)))
			}
		}
	}()
	for i := 1; i <= n; i++ {
		if i%3 == 0 {
			want.WriteString("R" + strconv.Itoa(i) + "\n")
		} else {
			want.WriteString("F" + strconv.Itoa(i) + "\n")
		}
	}
	got := make([]byte, want.Len())
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want.String() {
		t.Fatal("items out of order or lost")
	}
}

// TestBatchOneWrite: what queues while the writer is busy leaves in one write.
func TestBatchOneWrite(t *testing.T) {
	s := newTestServer(t, Config{Workers: 1})
	var log writeLog
	s.onWrite = log.hook
	p := newProto()
	gate, entered := make(chan struct{}), make(chan struct{})
	p.render = func(it *Item) {
		if string(it.Raw) == "first\n" {
			close(entered)
			<-gate
		}
	}
	c, peer := open(t, s, p, false)
	c.Send([]byte("first\n"))
	<-entered
	var want strings.Builder
	for i := range 20 {
		c.Deliver(frame(uint64(i)))
		want.WriteString("F" + strconv.Itoa(i) + "\n")
	}
	close(gate)
	var got bytes.Buffer
	readUntil(t, peer, &got, "F19\n", 2*time.Second)
	waitFor(t, time.Second, "the second write's hook", func() bool { return len(log.all()) >= 2 })
	if w := log.all(); len(w) != 2 || w[0] != "first\n" || w[1] != want.String() {
		t.Fatalf("writes = %q, want [first, the 20 frames in one]", w)
	}
}

// TestCoalesceWhileBlocked: items queued while the socket refuses bytes wait in the queue, not in
// writes, and leave together once the peer reads.
func TestCoalesceWhileBlocked(t *testing.T) {
	s := newTestServer(t, Config{})
	var log writeLog
	s.onWrite = log.hook
	p := newProto()
	c, peer := open(t, s, p, true)
	fill(t, c)
	before := len(log.all())
	q0 := stateOf(c).queue // a filler may wait too
	var want strings.Builder
	for i := range 50 {
		c.Deliver(frame(uint64(i)))
		want.WriteString("F" + strconv.Itoa(i) + "\n")
	}
	if st := stateOf(c); st.queue != q0+50 || st.unwritten == 0 {
		t.Fatalf("while blocked: %+v, want the 50 frames queued", st)
	}
	var got bytes.Buffer
	readUntil(t, peer, &got, "F49\n", 5*time.Second)
	if s := skipFiller(got.Bytes()); s != want.String() {
		t.Fatalf("after the filler: %q", s)
	}
	// The frames went out in the first write after the filler (or two, should the socket take
	// only part of them).
	var framesIn []string
	for _, w := range log.all()[before:] {
		if strings.Contains(w, "F") {
			framesIn = append(framesIn, w)
		}
	}
	if len(framesIn) == 0 || len(framesIn) > 2 || !strings.HasSuffix(strings.Join(framesIn, ""), want.String()) {
		t.Fatalf("the 50 frames left in %d writes: %q", len(framesIn), framesIn)
	}
}

// blockWriter makes the writer wait in Render of the item "first\n" until release is called.
func blockWriter(p *testProto) (entered chan struct{}, release func()) {
	gate := make(chan struct{})
	entered = make(chan struct{})
	p.render = func(it *Item) {
		if string(it.Raw) == "first\n" {
			close(entered)
			<-gate
		}
	}
	return entered, func() { close(gate) }
}

// overflowSetup returns a connection whose socket refuses bytes and whose writer is busy
// elsewhere until release: what is queued waits, with the queue limits in force. drain reads
// what the kernel holds for the peer, so that the socket has room again.
func overflowSetup(t *testing.T, limits Limits) (s *Server, c *Conn, p *testProto, peer *net.TCPConn, drain, release func()) {
	s = newTestServer(t, Config{Workers: 1, Limits: limits, WriteTimeout: time.Hour})
	var written atomic.Int64
	var target atomic.Pointer[Conn]
	s.onWrite = func(w *Conn, b []byte) {
		if w == target.Load() {
			written.Add(int64(len(b)))
		}
	}
	p = newProto()
	sc, peer := tcpPair(t, true)
	c, err := s.Take(sc, p)
	if err != nil {
		t.Fatal(err)
	}
	target.Store(c)
	if err := s.Start(c, nil); err != nil {
		t.Fatal(err)
	}
	fillWith(t, c, filler[:4096])
	busy := newProto()
	entered, release := blockWriter(busy)
	other, _ := open(t, s, busy, false)
	other.Send([]byte("first\n"))
	<-entered
	drain = func() {
		_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(peer, make([]byte, written.Load())); err != nil {
			t.Fatal(err)
		}
	}
	return s, c, p, peer, drain, release
}

// TestOverflowItems: past QueueItems while the peer does not take bytes, the connection closes
// as slow; its queue is dropped, and the goodbye is written should the socket have room.
func TestOverflowItems(t *testing.T) {
	s, c, p, peer, drain, release := overflowSetup(t, Limits{QueueItems: 4, QueueBytes: 1 << 20})
	q0 := stateOf(c).queue // a filler may wait too
	for i := range 4 - q0 {
		c.Deliver(frame(uint64(i)))
	}
	if st := stateOf(c); st.closing || st.queue != 4 || st.unwritten == 0 {
		t.Fatalf("4 items in a queue of 4: %+v", st)
	}
	c.Deliver(frame(4)) // one too many
	if st := stateOf(c); !st.closing || st.queue != 0 || st.queueBytes != 0 {
		t.Fatalf("after overflow: %+v, want closing with the queue dropped", st)
	}
	c.Deliver(frame(5)) // ignored
	drain()
	release()
	got := readToEOF(t, peer, 2*time.Second)
	if rest := skipFiller(got); rest != "BYE slow_subscriber\n" {
		t.Fatalf("after the filler, the peer read %q", rest)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonSlow {
		t.Fatalf("Closed with %+v", r)
	}
	if n := s.SlowDisconnects(); n != 1 {
		t.Fatalf("SlowDisconnects = %d", n)
	}
	if ReasonSlow.WSCode != 1008 {
		t.Fatalf("ReasonSlow.WSCode = %d", ReasonSlow.WSCode)
	}
}

func TestOverflowBytes(t *testing.T) {
	_, c, p, peer, drain, release := overflowSetup(t, Limits{QueueItems: 1000, QueueBytes: 10000})
	qb := stateOf(c).queueBytes // a filler may wait too
	c.Send(bytes.Repeat([]byte("a"), 6000-qb))
	c.Send(bytes.Repeat([]byte("b"), 4000)) // 10000: at the limit
	if st := stateOf(c); st.closing || st.queueBytes != 10000 {
		t.Fatalf("10000 bytes in a queue of 10000: %+v", st)
	}
	c.Send([]byte("c"))
	if st := stateOf(c); !st.closing {
		t.Fatalf("after 10001 bytes: %+v", st)
	}
	drain()
	release()
	if rest := skipFiller(readToEOF(t, peer, 2*time.Second)); rest != "BYE slow_subscriber\n" {
		t.Fatalf("after the filler, the peer read %q", rest)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonSlow {
		t.Fatalf("Closed with %+v", r)
	}
}

// TestBurst: while the socket takes all it is sent, a burst beyond the limits (a resume's
// catch-up, queued at once) is not taken for a slow peer: it queues, and is written.
func TestBurst(t *testing.T) {
	s := newTestServer(t, Config{Limits: Limits{QueueItems: 4, QueueBytes: 1 << 20}})
	p := newProto()
	entered, release := blockWriter(p)
	c, peer := open(t, s, p, false)
	c.Send([]byte("first\n"))
	<-entered
	var want strings.Builder
	want.WriteString("first\n")
	for i := range 4 * BurstFactor {
		c.Deliver(frame(uint64(i)))
		want.WriteString("F" + strconv.Itoa(i) + "\n")
	}
	if st := stateOf(c); st.closing {
		t.Fatalf("a burst of %d items in a queue of 4, socket free: %+v", 4*BurstFactor, st)
	}
	release()
	got := make([]byte, want.Len())
	_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != want.String() {
		t.Fatalf("peer read %q (%v)", got, err)
	}
	if s.SlowDisconnects() != 0 {
		t.Fatal("a burst counted as a slow subscriber")
	}
}

// TestOverflowBurst: past BurstFactor times the limits, a queue is dropped even while the
// socket takes bytes; the goodbye is written.
func TestOverflowBurst(t *testing.T) {
	s := newTestServer(t, Config{Limits: Limits{QueueItems: 4, QueueBytes: 1 << 20}})
	p := newProto()
	entered, release := blockWriter(p)
	c, peer := open(t, s, p, false)
	c.Send([]byte("first\n"))
	<-entered
	for i := range 4*BurstFactor + 1 {
		c.Deliver(frame(uint64(i)))
	}
	if st := stateOf(c); !st.closing || st.queue != 0 {
		t.Fatalf("past the burst bound: %+v", st)
	}
	release()
	if got := string(readToEOF(t, peer, 2*time.Second)); got != "first\nBYE slow_subscriber\n" {
		t.Fatalf("peer read %q", got)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonSlow || s.SlowDisconnects() != 1 {
		t.Fatalf("Closed with %+v, SlowDisconnects = %d", r, s.SlowDisconnects())
	}
}

// TestOverflowBlockedSocket: a peer that stopped reading is closed as soon as its queue
// overflows, without waiting to write a goodbye it would not read, and its memory is released.
func TestOverflowBlockedSocket(t *testing.T) {
	s := newTestServer(t, Config{Limits: Limits{QueueItems: 8, QueueBytes: 1 << 20}, WriteTimeout: time.Hour})
	p := newProto()
	c, peer := open(t, s, p, true)
	fill(t, c)
	for i := range 9 {
		c.Deliver(frame(uint64(i)))
	}
	if r := p.waitClosed(t, 2*time.Second); r != ReasonSlow {
		t.Fatalf("Closed with %+v", r)
	}
	if st := stateOf(c); st.queue != 0 || st.unwritten != 0 || st.queueCap != 0 {
		t.Fatalf("a closed connection holds memory: %+v", st)
	}
	if s.Open() != 0 || s.SlowDisconnects() != 1 {
		t.Fatalf("Open = %d, SlowDisconnects = %d", s.Open(), s.SlowDisconnects())
	}
	b := readToEOF(t, peer, 5*time.Second)
	if rest := skipFiller(b); strings.Contains(rest, "F") {
		t.Fatalf("frames queued behind the blocked filler reached the peer: %q", rest)
	}
}

// TestSlowPeerDoesNotBlockOthers: with one writer for all, a peer that stops reading does not
// delay the others.
func TestSlowPeerDoesNotBlockOthers(t *testing.T) {
	// The frames for the fast peers fit the queue even should the writer not run until the
	// last is queued; the slow peer's filler does not.
	s := newTestServer(t, Config{Workers: 1, Limits: Limits{QueueItems: 1 << 20, QueueBytes: 1 << 20}, WriteTimeout: time.Hour})
	slowP := newProto()
	slow, slowPeer := open(t, s, slowP, true)
	_ = slowPeer
	fill(t, slow)
	const fast, n = 4, 2000
	conns := make([]*Conn, fast)
	peers := make([]*net.TCPConn, fast)
	for i := range fast {
		conns[i], peers[i] = open(t, s, newProto(), false)
	}
	big := bytes.Repeat([]byte("y"), 1000)
	var want strings.Builder
	for i := range n {
		f := frame(uint64(i))
		want.WriteString("F" + strconv.Itoa(i) + "\n")
		slow.Deliver(f)
		slow.Send(big)
		for _, c := range conns {
			c.Deliver(f)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, fast)
	for _, peer := range peers {
		wg.Go(func() {
			_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			got := make([]byte, want.Len())
			if _, err := io.ReadFull(peer, got); err != nil {
				errs <- err
				return
			}
			if string(got) != want.String() {
				errs <- errors.New("a fast peer got frames out of order")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if r := slowP.waitClosed(t, time.Second); r != ReasonSlow {
		t.Fatalf("the slow peer closed with %+v", r)
	}
	if s.Open() != fast {
		t.Fatalf("Open = %d, want %d", s.Open(), fast)
	}
}

// TestHeartbeatSweep drives the sweep with chosen times: a heartbeat is queued once per
// interval of silence, and never while bytes wait.
func TestHeartbeatSweep(t *testing.T) {
	const hb = time.Hour // the timer's own sweeps never reach it
	s := newTestServer(t, Config{Heartbeat: hb, WriteTimeout: 100 * time.Hour})
	written := make(chan struct{}, 100)
	s.onWrite = func(*Conn, []byte) { written <- struct{}{} } // after lastWrite is stored
	p := newProto()
	c, peer := open(t, s, p, true)
	c.Send([]byte("hello\n"))
	<-written
	last := c.lastWrite.Load()
	conns := []*Conn{c}

	s.sweep(conns, last+int64(hb)-1)
	if st := stateOf(c); st.queue != 0 || st.scheduled {
		t.Fatalf("a heartbeat before the interval: %+v", st)
	}
	s.sweep(conns, last+int64(hb))
	<-written
	var got bytes.Buffer
	readUntil(t, peer, &got, "hello\nHB\n", time.Second)
	// The next one is due an interval after the first was written.
	hbAt := c.lastWrite.Load()
	s.sweep(conns, hbAt+int64(hb)-1)
	if st := stateOf(c); st.queue != 0 || st.scheduled {
		t.Fatalf("a second heartbeat within the interval: %+v", st)
	}
	s.sweep(conns, hbAt+int64(hb))
	<-written
	readUntil(t, peer, &got, "hello\nHB\nHB\n", time.Second)

	// Not idle: bytes wait for the socket.
	fill(t, c)
	q0 := stateOf(c).queue // a filler may wait too
	s.sweep(conns, time.Now().UnixNano()+10*int64(hb))
	if st := stateOf(c); st.queue != q0 {
		t.Fatalf("a heartbeat queued behind unwritten bytes: %+v", st)
	}
}

// TestHeartbeatRealTime: with a real timer, an idle connection gets heartbeats about every
// interval, and a busy one none.
func TestHeartbeatRealTime(t *testing.T) {
	const hb = 100 * time.Millisecond
	s := newTestServer(t, Config{Heartbeat: hb})
	p := newProto()
	c, peer := open(t, s, p, false)

	// Busy: a message every 10 ms for 5 intervals.
	stop := time.Now().Add(5 * hb)
	for i := 0; time.Now().Before(stop); i++ {
		c.Send([]byte("m\n"))
		time.Sleep(hb / 10)
	}
	c.Send([]byte("end\n"))
	var got bytes.Buffer
	readUntil(t, peer, &got, "end\n", time.Second)
	if n := strings.Count(got.String(), "HB"); n > 1 {
		// One may slip in should this goroutine stall for an interval; more is a bug.
		t.Fatalf("%d heartbeats on a busy connection", n)
	}

	// Idle for 6 intervals.
	start := time.Now()
	got.Reset()
	_ = peer.SetReadDeadline(start.Add(6 * hb))
	buf := make([]byte, 1024)
	var times []time.Duration
	for {
		n, err := peer.Read(buf)
		for range strings.Count(string(buf[:n]), "HB\n") {
			times = append(times, time.Since(start))
		}
		if err != nil {
			break
		}
	}
	// Heartbeats come an interval after the last byte, checked every quarter interval.
	if len(times) < 3 || len(times) > 6 {
		t.Fatalf("%d heartbeats in %s idle with a %s heartbeat: at %v", len(times), 6*hb, hb, times)
	}
	if times[0] < hb*9/10 {
		t.Fatalf("the first heartbeat came %s after the last message (interval %s)", times[0], hb)
	}
	for i := 1; i < len(times); i++ {
		if d := times[i] - times[i-1]; d < hb*8/10 {
			t.Fatalf("heartbeats %s apart (interval %s): %v", d, hb, times)
		}
	}
}

func TestMaxLifetime(t *testing.T) {
	const life = 150 * time.Millisecond
	s := newTestServer(t, Config{MaxLifetime: life})
	p := newProto()
	c, peer := open(t, s, p, false)
	start := time.Now()
	c.Send([]byte("hi\n"))
	got := readToEOF(t, peer, 2*time.Second)
	if elapsed := time.Since(start); elapsed < life || elapsed > life+time.Second {
		t.Fatalf("closed after %s with a lifetime of %s", elapsed, life)
	}
	if string(got) != "hi\nBYE max_lifetime\n" {
		t.Fatalf("peer read %q", got)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonLifetime {
		t.Fatalf("Closed with %+v", r)
	}
	if c.Age() < life {
		t.Fatalf("Age = %s", c.Age())
	}
}

// TestMaxLifetimeSweep: the lifetime is checked against the sweep's clock.
func TestMaxLifetimeSweep(t *testing.T) {
	s := newTestServer(t, Config{MaxLifetime: time.Hour})
	p := newProto()
	c, peer := open(t, s, p, false)
	s.sweep([]*Conn{c}, c.deadline-1)
	if st := stateOf(c); st.closing {
		t.Fatal("closed before its lifetime")
	}
	s.sweep([]*Conn{c}, c.deadline)
	if got := string(readToEOF(t, peer, 2*time.Second)); got != "BYE max_lifetime\n" {
		t.Fatalf("peer read %q", got)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonLifetime {
		t.Fatalf("Closed with %+v", r)
	}
}

// TestWriteTimeout: a peer that stops reading is closed once the socket has taken nothing for
// WriteTimeout, even when its queue never overflows.
func TestWriteTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	s := newTestServer(t, Config{WriteTimeout: timeout})
	var lastTaken atomic.Int64
	s.onWrite = func(*Conn, []byte) { lastTaken.Store(time.Now().UnixNano()) }
	p := newProto()
	c, _ := open(t, s, p, true)
	fill(t, c)
	// The kernel may still grow the socket's buffer for a while: keep bytes waiting.
	deadline := time.Now().Add(3 * time.Second)
	for {
		select {
		case <-p.closed:
		default:
			if time.Now().After(deadline) {
				t.Fatal("never closed as stuck")
			}
			if st := stateOf(c); st.queue == 0 && st.unwritten == 0 {
				c.Send(filler)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		break
	}
	if r := p.waitClosed(t, time.Second); r != ReasonStuck {
		t.Fatalf("Closed with %+v", r)
	}
	if d := time.Duration(time.Now().UnixNano() - lastTaken.Load()); d < timeout {
		t.Fatalf("closed as stuck %s after the socket last took bytes, with a write timeout of %s", d, timeout)
	}
	if s.Open() != 0 || s.SlowDisconnects() != 0 {
		t.Fatalf("Open = %d, SlowDisconnects = %d", s.Open(), s.SlowDisconnects())
	}
}

// TestWriteTimeoutProgress: a peer that keeps taking bytes, however slowly, is not stuck.
func TestWriteTimeoutProgress(t *testing.T) {
	s := newTestServer(t, Config{WriteTimeout: time.Hour})
	p := newProto()
	c, peer := open(t, s, p, true)
	fill(t, c)
	c.mu.Lock()
	first := c.stuckSince.Load()
	c.mu.Unlock()
	s.sweep([]*Conn{c}, first+int64(time.Hour)-1)
	if st := stateOf(c); st.closed {
		t.Fatal("closed before the write timeout")
	}
	// The peer reads a little: the socket takes more, and the clock restarts.
	buf := make([]byte, 128<<10)
	waitFor(t, 2*time.Second, "the socket to take bytes", func() bool {
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, _ = peer.Read(buf)
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.stuckSince.Load() != first
	})
	s.sweep([]*Conn{c}, first+int64(time.Hour))
	if st := stateOf(c); st.closed {
		t.Fatal("a peer that reads was closed as stuck")
	}
	c.mu.Lock()
	since := c.stuckSince.Load()
	c.mu.Unlock()
	if since == 0 {
		return // everything was written
	}
	s.sweep([]*Conn{c}, since+int64(time.Hour))
	if r := p.waitClosed(t, time.Second); r != ReasonStuck {
		t.Fatalf("Closed with %+v", r)
	}
}

func TestPeerHangup(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	c, peer := open(t, s, p, false)
	c.Send([]byte("hi\n"))
	var got bytes.Buffer
	readUntil(t, peer, &got, "hi\n", time.Second)
	peer.Close()
	if r := p.waitClosed(t, 2*time.Second); r != ReasonPeer {
		t.Fatalf("Closed with %+v", r)
	}
	// Closing after the fact does nothing more.
	c.Close(ReasonDrain)
	c.Send([]byte("late\n"))
	time.Sleep(20 * time.Millisecond)
	if n := p.closeCount(); n != 1 {
		t.Fatalf("Closed called %d times", n)
	}
	if s.Open() != 0 {
		t.Fatalf("Open = %d", s.Open())
	}
}

// TestPeerHangupWhileBlocked: a peer that hangs up with bytes owed to it is seen at once.
func TestPeerHangupWhileBlocked(t *testing.T) {
	s := newTestServer(t, Config{WriteTimeout: time.Hour})
	p := newProto()
	c, peer := open(t, s, p, true)
	fill(t, c)
	_ = peer.SetLinger(0) // a reset, as a crashed client
	peer.Close()
	r := p.waitClosed(t, 2*time.Second)
	if r != ReasonPeer && r != ReasonIO {
		t.Fatalf("Closed with %+v", r)
	}
	time.Sleep(20 * time.Millisecond)
	if n := p.closeCount(); n != 1 {
		t.Fatalf("Closed called %d times", n)
	}
}

func TestRead(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	sc, peer := tcpPair(t, false)
	c, err := s.Take(sc, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(c, []byte("buffered;")); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("then the socket")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the protocol to read", func() bool { return p.Reads() == "buffered;then the socket" })
}

// TestReadError: a protocol's read error closes with its reason, goodbye first.
func TestReadError(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	bad := Reason{Code: "bad_frame", Message: "no", WSCode: 1002}
	p.rerr = &ReadError{Reason: bad}
	_, peer := open(t, s, p, false)
	if _, err := peer.Write([]byte("junk")); err != nil {
		t.Fatal(err)
	}
	if got := string(readToEOF(t, peer, 2*time.Second)); got != "BYE bad_frame\n" {
		t.Fatalf("peer read %q", got)
	}
	if r := p.waitClosed(t, time.Second); r != bad {
		t.Fatalf("Closed with %+v", r)
	}
}

// TestSendBeforeStart: nothing is written before Start; what was queued goes first after it.
func TestSendBeforeStart(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	sc, peer := tcpPair(t, false)
	c, err := s.Take(sc, p)
	if err != nil {
		t.Fatal(err)
	}
	c.Send([]byte("head\n"))
	time.Sleep(20 * time.Millisecond)
	if st := stateOf(c); st.queue != 1 || st.scheduled {
		t.Fatalf("written before Start: %+v", st)
	}
	if err := s.Start(c, nil); err != nil {
		t.Fatal(err)
	}
	c.Send([]byte("body\n"))
	var got bytes.Buffer
	readUntil(t, peer, &got, "body\n", time.Second)
	if got.String() != "head\nbody\n" {
		t.Fatalf("peer read %q", got.String())
	}
}

func TestDiscard(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	sc, peer := tcpPair(t, false)
	c, err := s.Take(sc, p)
	if err != nil {
		t.Fatal(err)
	}
	c.Send([]byte("never\n"))
	s.Discard(c)
	if got := readToEOF(t, peer, time.Second); len(got) != 0 {
		t.Fatalf("a discarded connection wrote %q", got)
	}
	if p.closeCount() != 0 || s.Open() != 0 {
		t.Fatal("Discard ran Closed or counted the connection")
	}
	if err := s.Start(c, nil); err == nil {
		t.Fatal("Start of a discarded connection succeeded")
	}
	// Discard of a started connection does nothing.
	p2 := newProto()
	c2, peer2 := open(t, s, p2, false)
	s.Discard(c2)
	c2.Send([]byte("still\n"))
	var got bytes.Buffer
	readUntil(t, peer2, &got, "still\n", time.Second)
	if s.Open() != 1 {
		t.Fatalf("Open = %d", s.Open())
	}
}

// TestDone: an item rendered with done closes the connection after it, with the goodbye, and
// what was queued behind it is dropped.
func TestDone(t *testing.T) {
	s := newTestServer(t, Config{Workers: 1})
	p := newProto()
	entered, release := blockWriter(p)
	c, peer := open(t, s, p, false)
	c.Send([]byte("first\n"))
	<-entered
	c.Enqueue(Item{Raw: []byte("reconnect\n"), Note: "done"})
	c.Send([]byte("after\n"))
	release()
	if got := string(readToEOF(t, peer, 2*time.Second)); got != "first\nreconnect\nBYE draining\n" {
		t.Fatalf("peer read %q", got)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonDrain {
		t.Fatalf("Closed with %+v", r)
	}
}

// TestCloseWritesQueuedFirst: Close writes what was queued before it, then the goodbye.
func TestCloseWritesQueuedFirst(t *testing.T) {
	s := newTestServer(t, Config{})
	p := newProto()
	entered, release := blockWriter(p)
	c, peer := open(t, s, p, false)
	c.Send([]byte("first\n"))
	<-entered
	c.Send([]byte("second\n"))
	c.Close(ReasonLifetime)
	c.Close(ReasonDrain) // the first reason stands
	c.Send([]byte("ignored\n"))
	release()
	if got := string(readToEOF(t, peer, 2*time.Second)); got != "first\nsecond\nBYE max_lifetime\n" {
		t.Fatalf("peer read %q", got)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonLifetime {
		t.Fatalf("Closed with %+v", r)
	}
}

// TestCloseWaitsForSlowReader: a goodbye owed to a peer that reads, if slowly, is written once
// the socket drains rather than cut off.
func TestCloseWaitsForSlowReader(t *testing.T) {
	s := newTestServer(t, Config{WriteTimeout: time.Hour})
	p := newProto()
	c, peer := open(t, s, p, true)
	fill(t, c)
	c.Send([]byte("last\n"))
	c.Close(ReasonDrain)
	time.Sleep(20 * time.Millisecond)
	if st := stateOf(c); st.closed {
		t.Fatal("closed with bytes owed to a peer that may still read them")
	}
	got := readToEOF(t, peer, 5*time.Second)
	if rest := skipFiller(got); rest != "last\nBYE draining\n" {
		t.Fatalf("after the filler: %q", rest)
	}
	if r := p.waitClosed(t, time.Second); r != ReasonDrain {
		t.Fatalf("Closed with %+v", r)
	}
}

// TestConcurrentEnqueueClose: Enqueue and Close from many goroutines at once, with the peer
// hanging up too: Closed runs exactly once and nothing races.
func TestConcurrentEnqueueClose(t *testing.T) {
	s := newTestServer(t, Config{Limits: Limits{QueueItems: 64, QueueBytes: 1 << 20}})
	for round := range 20 {
		p := newProto()
		c, peer := open(t, s, p, false)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 200 {
					switch {
					case g == 0 && i == 100:
						c.Close(ReasonDrain)
					case g == 1 && i == 150 && round%2 == 0:
						peer.Close()
					case i%2 == 0:
						c.Deliver(frame(uint64(i)))
					default:
						c.Send([]byte("r\n"))
					}
				}
			})
		}
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		wg.Wait()
		c.Close(ReasonLifetime)
		p.waitClosed(t, 2*time.Second)
		time.Sleep(time.Millisecond)
		if n := p.closeCount(); n != 1 {
			t.Fatalf("Closed called %d times", n)
		}
	}
	waitFor(t, time.Second, "every connection to finish", func() bool { return s.Open() == 0 })
}

// TestFinishRacesWrite: the timer, the poller and the writers all finish connections; none may
// write to or read from a descriptor after it is closed (the number may belong to a new
// connection by then). Connections are closed as stuck by the timer while being written to,
// and new ones keep taking freed descriptor numbers; each peer must see only its own bytes.
func TestFinishRacesWrite(t *testing.T) {
	s := newTestServer(t, Config{WriteTimeout: 10 * time.Millisecond, Limits: Limits{QueueItems: 1 << 20, QueueBytes: 1 << 30}})
	var wg sync.WaitGroup
	var bad atomic.Int32
	marks := regexp.MustCompile(`<(\d+)>`)
	for i := range 40 {
		p := newProto()
		c, peer := open(t, s, p, true)
		mark := fmt.Sprintf("<%d>", i)
		stuck := i%2 == 1
		if stuck {
			fill(t, c) // the peer reads only once closed: the timer finishes it
		}
		wg.Go(func() {
			for range 200 {
				c.Send([]byte(mark))
			}
			c.Close(ReasonDrain)
		})
		wg.Go(func() {
			if stuck {
				<-p.closed
			}
			_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			b, err := io.ReadAll(peer)
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
			}
			for _, m := range marks.FindAllString(string(b), -1) {
				if m != mark {
					bad.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d peers read bytes meant for another connection", n)
	}
}

// TestLostWakeup: a peer reading in small pieces keeps the socket at the edge of full, so that
// EPOLLOUT often comes while a write is under way; every byte must still arrive.
func TestLostWakeup(t *testing.T) {
	s := newTestServer(t, Config{Workers: 2, WriteTimeout: time.Hour, Limits: Limits{QueueItems: 1 << 20, QueueBytes: 1 << 30}})
	const conns, msgs = 8, 3000
	item := bytes.Repeat([]byte("z"), 1000)
	var wg sync.WaitGroup
	for range conns {
		c, peer := open(t, s, newProto(), true)
		wg.Go(func() {
			for range msgs {
				c.Send(item)
			}
		})
		wg.Go(func() {
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 3000)
			total := 0
			for total < msgs*len(item) {
				n, err := peer.Read(buf)
				total += n
				if err != nil {
					t.Errorf("after %d of %d bytes: %v", total, msgs*len(item), err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestCloseAllShutdown(t *testing.T) {
	s, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var protos []*testProto
	var peers []*net.TCPConn
	for range 10 {
		p := newProto()
		c, peer := open(t, s, p, false)
		c.Send([]byte("hi\n"))
		protos = append(protos, p)
		peers = append(peers, peer)
	}
	// One peer does not read: CloseAll waits for it only until its context ends.
	stuckP := newProto()
	stuck, _ := open(t, s, stuckP, true)
	fill(t, stuck)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	s.CloseAll(ctx, ReasonDrain)
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("CloseAll returned after %s", d)
	}
	for i, peer := range peers {
		if got := string(readToEOF(t, peer, time.Second)); got != "hi\nBYE draining\n" {
			t.Fatalf("peer %d read %q", i, got)
		}
		if r := protos[i].waitClosed(t, time.Second); r != ReasonDrain {
			t.Fatalf("peer %d closed with %+v", i, r)
		}
	}
	if r := stuckP.waitClosed(t, time.Second); r != ReasonDrain {
		t.Fatalf("the stuck peer closed with %+v", r)
	}
	if s.Open() != 0 {
		t.Fatalf("Open = %d after CloseAll", s.Open())
	}
	// A connection started after CloseAll is closed at once.
	p := newProto()
	_, peer := open(t, s, p, false)
	if got := string(readToEOF(t, peer, time.Second)); got != "BYE draining\n" {
		t.Fatalf("a late connection read %q", got)
	}
	s.Shutdown()
	s.Shutdown()
	select {
	case <-s.polled:
	default:
		t.Fatal("the poller still runs after Shutdown")
	}
}

// TestShutdownClosesLeft: connections left at Shutdown are closed and their protocols told.
func TestShutdownClosesLeft(t *testing.T) {
	s, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	p := newProto()
	_, peer := open(t, s, p, false)
	s.Shutdown()
	if r := p.waitClosed(t, time.Second); r != ReasonDrain {
		t.Fatalf("Closed with %+v", r)
	}
	readToEOF(t, peer, time.Second)
}
