//go:build linux

package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// bench is one run's shared state.
type bench struct {
	o        *options
	tr       transport
	base     dialer
	names    []string // channel names
	conns    []atomic.Pointer[conn]
	reactors []*reactor
	stop     atomic.Bool
	measure  atomic.Int64 // publish time from which latencies are recorded, Unix ns
	rwg      sync.WaitGroup
	rerr     error // a reactor's failure
	rerrMu   sync.Mutex

	connectors []*connector
	pubs       []*publisher
}

func run(ctx context.Context, o *options) (*Report, error) {
	u, err := url.Parse(o.server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("crier bench: --server %q is not a URL like http://127.0.0.1:8080", o.server)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("crier bench: --server %q: only http:// is supported (run the bench next to the server)", o.server)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	if err := raiseFileLimit(o.subscribers + o.publishers + o.connectConcurrency + 64); err != nil {
		return nil, err
	}
	if o.sched == "batch" {
		if err := schedBatch(); err != nil {
			return nil, fmt.Errorf("crier bench: --sched batch: %w", err)
		}
	}
	if err := checkPorts(o.subscribers, o.sourceIPs); err != nil {
		return nil, err
	}
	if o.prefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.prefix = "bench." + hex.EncodeToString(b[:]) + "."
	}
	b := &bench{o: o, tr: transports[o.transport](o),
		base:  dialer{addr: addr, host: u.Host, token: o.token, timeout: o.timeout},
		conns: make([]atomic.Pointer[conn], o.subscribers)}
	b.measure.Store(math.MaxInt64)
	for i := range o.channels {
		b.names = append(b.names, o.prefix+strconv.Itoa(i))
	}
	rep := &Report{Transport: o.transport, Server: o.server, Subscribers: o.subscribers, Channels: o.channels,
		Rate: o.rate, Publishers: min(o.publishers, o.channels), PayloadSize: o.payloadSize, SourceIPs: o.sourceIPs,
		Cores: cores(), Sched: o.sched}

	var rssBefore int64
	if o.pid > 0 {
		if rssBefore, err = procRSS(o.pid); err != nil {
			return nil, fmt.Errorf("crier bench: --pid %d: %w", o.pid, err)
		}
		rep.ServerRSSBeforeKiB = &rssBefore
	}
	if err := b.startReactors(); err != nil {
		return nil, err
	}
	defer b.shutdown()

	// Connect.
	t0 := time.Now()
	if err := b.connectAll(ctx); err != nil {
		return nil, err
	}
	rep.ConnectS = time.Since(t0).Seconds()
	if rep.ConnectS > 0 {
		rep.ConnectRate = float64(o.subscribers) / rep.ConnectS
	}
	var connectHist histogram
	for _, k := range b.connectors {
		connectHist.merge(&k.hist)
		rep.ConnectRetries += k.retries
	}
	rep.ConnectP50Ms, rep.ConnectP99Ms = ms(connectHist.quantile(0.5)), ms(connectHist.quantile(0.99))
	if rss, err := procRSS(unix.Getpid()); err == nil {
		rep.BenchRSSKiB = rss
	}

	perConn := func(rss int64) *float64 {
		if o.subscribers == 0 {
			return nil
		}
		return f64(float64(rss-rssBefore) / float64(o.subscribers))
	}
	if o.pid > 0 {
		if err := sleep(ctx, o.settle); err != nil {
			return nil, err
		}
		rss, err := procRSS(o.pid)
		if err != nil {
			return nil, fmt.Errorf("crier bench: --pid %d: %w", o.pid, err)
		}
		rep.ServerRSSAfterKiB = &rss
		rep.ServerRSSPerConnKiB = perConn(rss)
	}

	if o.idle > 0 {
		rep.IdleS = o.idle.Seconds()
		rep.Rate, rep.Publishers = 0, 0
		if err := sleep(ctx, o.idle); err != nil {
			return nil, err
		}
		if o.pid > 0 {
			rss, err := procRSS(o.pid)
			if err != nil {
				return nil, fmt.Errorf("crier bench: --pid %d: %w", o.pid, err)
			}
			rep.ServerRSSIdleKiB = &rss
			rep.ServerRSSPerConnKiB = perConn(rss)
		}
		b.stopReactors()
		b.collect(rep, nil, nil)
		return rep, b.reactorErr()
	}
	if err := b.publishPhase(ctx, rep); err != nil {
		return nil, err
	}
	if err := b.reactorErr(); err != nil {
		return rep, err
	}
	if o.floor > 0 && rep.ServerCPUSPerMillion != nil && rep.DeliveriesPerS > 0 {
		var bytes, deliveries uint64
		for _, r := range b.reactors {
			bytes += r.bytes.Load()
			deliveries += r.x.deliveries
		}
		b.shutdown() // the floor needs the descriptors
		size := int(bytes / max(deliveries, 1))
		interval := time.Duration(float64(o.subscribers) / rep.DeliveriesPerS * float64(time.Second))
		f, err := b.measureFloor(ctx, o.subscribers, max(size, 1), interval, o.floor)
		if err != nil {
			return rep, fmt.Errorf("crier bench: floor: %w", err)
		}
		rep.Floor = f
		rep.ServerVsFloor = f64(*rep.ServerCPUSPerMillion / f.WriterUs)
	}
	return rep, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (b *bench) startReactors() error {
	n := b.o.reactors
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	n = max(1, min(n, b.o.subscribers))
	for range n {
		r, err := newReactor(b.conns, &b.stop, &b.measure, b.newRx())
		if err != nil {
			return err
		}
		b.reactors = append(b.reactors, r)
	}
	for _, r := range b.reactors {
		b.rwg.Add(1)
		go func() {
			defer b.rwg.Done()
			if err := r.run(); err != nil {
				b.rerrMu.Lock()
				b.rerr = errors.Join(b.rerr, err)
				b.rerrMu.Unlock()
			}
		}()
	}
	return nil
}

func (b *bench) newRx() rx {
	return rx{prefix: []byte(b.o.prefix), channels: b.o.channels, measureFrom: math.MaxInt64, hist: new(histogram)}
}

func (b *bench) stopReactors() {
	b.stop.Store(true)
	for _, r := range b.reactors {
		r.wake()
	}
	b.rwg.Wait()
}

func (b *bench) reactorErr() error {
	b.rerrMu.Lock()
	defer b.rerrMu.Unlock()
	if b.rerr != nil {
		return fmt.Errorf("crier bench: epoll: %w", b.rerr)
	}
	return nil
}

// shutdown stops the reactors and closes every socket.
func (b *bench) shutdown() {
	b.stopReactors()
	for i := range b.conns {
		if c := b.conns[i].Load(); c != nil && !c.closed {
			_ = unix.Close(c.fd)
			c.closed, c.fd = true, -1
		}
	}
	for _, r := range b.reactors {
		r.close()
	}
}

// connector sets up subscriber connections, one at a time.
type connector struct {
	x       rx
	buf     []byte
	hist    histogram // connect and subscribe time, ns
	retries uint64
}

// connectAll opens every subscriber, connect-concurrency at a time.
func (b *bench) connectAll(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(b.o.connectConcurrency, max(b.o.subscribers, 1)) {
		k := &connector{x: b.newRx(), buf: make([]byte, 16<<10)}
		b.connectors = append(b.connectors, k)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				id := int(next.Add(1) - 1)
				if id >= b.o.subscribers {
					return
				}
				if err := b.connectOne(ctx, k, id); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

func (b *bench) connectOne(ctx context.Context, k *connector, id int) error {
	d := b.base
	if b.o.sourceIPs > 0 {
		d.src = sourceIP(id % b.o.sourceIPs)
	}
	ch := id % b.o.channels
	start := time.Now()
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := b.open(ctx, k, &d, id, ch)
		if err == nil {
			k.hist.record(uint64(time.Since(start)))
			r := b.reactors[id%len(b.reactors)]
			if err := r.add(c); err != nil {
				_ = unix.Close(c.fd)
				return fmt.Errorf("crier bench: subscriber %d: epoll: %w", id, err)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) || attempt == 8 {
			src := ""
			if d.src != nil {
				src = " from " + d.src.String()
			}
			return fmt.Errorf("crier bench: subscriber %d%s to %s over %s (attempt %d): %w",
				id, src, b.o.server, b.tr.name(), attempt, err)
		}
		k.retries++
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, time.Second)
	}
}

// open dials one subscriber, waits until its subscription is confirmed, and
// takes its socket from the Go runtime.
func (b *bench) open(ctx context.Context, k *connector, d *dialer, id, ch int) (*conn, error) {
	nc, pre, dec, err := b.tr.dial(ctx, d, []string{b.names[ch]})
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	fd, err := detach(nc)
	if err != nil {
		return nil, err
	}
	c := &conn{id: id, fd: fd, dec: dec, tracks: []track{newTrack(ch)}}
	fail := func(err error) (*conn, error) {
		_ = unix.Close(fd)
		return nil, err
	}
	k.x.now = time.Now().UnixNano()
	if len(pre) > 0 {
		if err := dec.feed(c, &k.x, pre); err != nil {
			return fail(err)
		}
	}
	deadline := time.Now().Add(b.o.timeout)
	for !dec.ready(c) && c.err == nil {
		_ = nc.SetReadDeadline(deadline)
		n, err := nc.Read(k.buf)
		if n > 0 {
			k.x.now = time.Now().UnixNano()
			if err := dec.feed(c, &k.x, k.buf[:n]); err != nil {
				return fail(err)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errEOF
			}
			return fail(fmt.Errorf("waiting for the subscription to be confirmed: %w", err))
		}
	}
	if c.err != nil {
		return fail(c.err)
	}
	return c, nil
}

// publishPhase publishes for warmup + duration, then waits for what is on
// its way, and fills the report.
func (b *bench) publishPhase(ctx context.Context, rep *Report) error {
	o := b.o
	np := min(o.publishers, o.channels)
	pubDialer := b.base
	for p := range np {
		var chans []int
		for c := p; c < o.channels; c += np {
			chans = append(chans, c)
		}
		b.pubs = append(b.pubs, newPublisher(pubDialer, o, chans, b.names, &b.measure))
	}
	var interval time.Duration
	if o.rate > 0 {
		interval = time.Duration(float64(np) / o.rate * float64(time.Second))
	}
	done := make(chan struct{})
	var pwg sync.WaitGroup
	for _, p := range b.pubs {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			p.run(ctx, done, interval)
		}()
	}
	stopPublishing := sync.OnceFunc(func() { close(done); pwg.Wait() })
	defer stopPublishing()

	type snapshot struct {
		t          time.Time
		deliveries uint64
		reads      uint64
		wakeups    uint64
		published  uint64
		self       time.Duration
		server     cpuTimes
		serverErr  error
	}
	snap := func() snapshot {
		s := snapshot{t: time.Now(), self: selfCPU()}
		s.deliveries, _, s.reads = b.received()
		for _, r := range b.reactors {
			s.wakeups += r.wakeups.Load()
		}
		for _, p := range b.pubs {
			s.published += p.ok.Load()
		}
		if o.pid > 0 {
			s.server, s.serverErr = procCPU(o.pid)
		}
		return s
	}
	if err := sleep(ctx, o.warmup); err != nil {
		return err
	}
	b.measure.Store(time.Now().UnixNano())
	a := snap()
	if err := sleep(ctx, o.duration); err != nil {
		return err
	}
	z := snap()
	stopPublishing()

	// Wait for what is on its way.
	expected := b.expected()
	graceEnd := time.Now().Add(o.grace)
	for time.Now().Before(graceEnd) {
		if _, unique, _ := b.received(); unique >= expected {
			break
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	b.stopReactors()

	rep.WarmupS, rep.DurationS = o.warmup.Seconds(), o.duration.Seconds()
	rep.Expected = expected
	window := z.t.Sub(a.t).Seconds()
	dDeliveries := z.deliveries - a.deliveries
	dPublished := z.published - a.published
	if window > 0 {
		rep.DeliveriesPerS = float64(dDeliveries) / window
		rep.PublishesPerS = float64(dPublished) / window
	}
	if dr := z.reads - a.reads; dr > 0 {
		rep.DeliveriesPerRead = float64(dDeliveries) / float64(dr)
	}
	if dw := z.wakeups - a.wakeups; dw > 0 {
		rep.DeliveriesPerWakeup = float64(dDeliveries) / float64(dw)
	}
	if dDeliveries > 0 {
		rep.BenchCPUUsPerDelivery = f64(float64((z.self - a.self).Microseconds()) / float64(dDeliveries))
	}
	if o.pid > 0 && a.serverErr == nil && z.serverErr == nil {
		cpu := (z.server.total() - a.server.total()).Seconds()
		if cpu > 0 {
			rep.ServerUserShare = f64((z.server.user - a.server.user).Seconds() / cpu)
		}
		if dDeliveries > 0 {
			rep.ServerCPUSPerMillion = f64(cpu / (float64(dDeliveries) / 1e6))
		}
		if dPublished > 0 {
			rep.ServerCPUUsPerPublish = f64(cpu * 1e6 / float64(dPublished))
		}
	}
	var rtt histogram
	for _, p := range b.pubs {
		rtt.merge(&p.rtt)
	}
	rep.PublishP50Ms, rep.PublishP99Ms = ms(rtt.quantile(0.5)), ms(rtt.quantile(0.99))
	last, unsure := b.published(rep)
	b.collect(rep, last, unsure)
	return nil
}

// received sums what the reactors and connectors received so far.
func (b *bench) received() (deliveries, unique, reads uint64) {
	for _, r := range b.reactors {
		deliveries += r.deliveries.Load()
		unique += r.unique.Load()
		reads += r.reads.Load()
	}
	for _, k := range b.connectors {
		// Written only while connecting, which is over.
		deliveries += k.x.deliveries
		unique += k.x.unique
	}
	return deliveries, unique, reads
}

// subsOn returns how many subscribers channel ch has.
func (b *bench) subsOn(ch int) uint64 {
	n, c := b.o.subscribers, b.o.channels
	s := n / c
	if ch < n%c {
		s++
	}
	return uint64(s)
}

// expected is the number of deliveries due once publishing is over.
func (b *bench) expected() uint64 {
	var e uint64
	for _, p := range b.pubs {
		for k, ch := range p.chans {
			e += p.last[k] * b.subsOn(ch)
		}
	}
	return e
}

// published gathers the publishers' outcome, once they are done.
func (b *bench) published(rep *Report) (last []uint64, unsure [][]uint64) {
	last = make([]uint64, b.o.channels)
	unsure = make([][]uint64, b.o.channels)
	for _, p := range b.pubs {
		for k, ch := range p.chans {
			last[ch] = p.last[k]
			unsure[ch] = p.unsure[k]
		}
		rep.Published += p.ok.Load()
		rep.PublishFailed += p.failed
		rep.PublishRejected += p.rejected
		if rep.Problem == "" {
			switch {
			case p.lastErr != nil:
				rep.Problem = "publish failed: " + p.lastErr.Error()
			case p.status != 0:
				rep.Problem = "publish answered HTTP " + strconv.Itoa(p.status)
			}
		}
	}
	return last, unsure
}

// collect counts deliveries, losses and disconnects, once the reactors have
// stopped. last is nil when nothing was published.
func (b *bench) collect(rep *Report, last []uint64, unsure [][]uint64) {
	var lat histogram
	for _, r := range b.reactors {
		lat.merge(r.x.hist)
		rep.Deliveries += r.x.deliveries
		rep.OtherEvents += r.x.other
		rep.Unexpected += r.x.unexpected
	}
	for _, k := range b.connectors {
		lat.merge(k.x.hist)
		rep.Deliveries += k.x.deliveries
		rep.OtherEvents += k.x.other
		rep.Unexpected += k.x.unexpected
	}
	rep.LatencySamples = lat.n
	rep.LatencyP50Ms = ms(lat.quantile(0.5))
	rep.LatencyP90Ms = ms(lat.quantile(0.9))
	rep.LatencyP99Ms = ms(lat.quantile(0.99))
	rep.LatencyMaxMs = ms(lat.max)
	rep.LatencyMeanMs = lat.mean() / 1e6
	var firstDrop error
	for i := range b.conns {
		c := b.conns[i].Load()
		if c == nil {
			continue
		}
		if c.closed {
			rep.Disconnected++
			if firstDrop == nil {
				firstDrop = fmt.Errorf("subscriber %d disconnected: %w", c.id, c.err)
			}
		}
		for j := range c.tracks {
			t := &c.tracks[j]
			rep.Duplicated += t.dup
			rep.OutOfOrder += t.ooo
			var l uint64
			var u []uint64
			if last != nil {
				l, u = last[t.ch], unsure[t.ch]
			}
			lost, beyond := t.outcome(l, u)
			rep.Lost += lost
			rep.Unexpected += beyond
		}
	}
	if firstDrop != nil && rep.Problem == "" {
		rep.Problem = firstDrop.Error()
	}
}
