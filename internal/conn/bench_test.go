package conn

import (
	"io"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchConn starts a connection whose worker no goroutine runs, so that the caller flushes it,
// with a peer that reads and discards everything; read counts the peer's bytes.
func benchConn(tb testing.TB, p Protocol) (c *Conn, read *atomic.Int64) {
	tb.Helper()
	s := newTestServer(tb, Config{Limits: Limits{QueueItems: 1 << 20, QueueBytes: 1 << 30}, WriteTimeout: time.Hour})
	sc, cc := tcpPair(tb, false)
	c, err := s.Take(sc, p)
	if err != nil {
		tb.Fatal(err)
	}
	c.worker = &worker{wake: make(chan struct{}, 1)}
	if err := s.Start(c, nil); err != nil {
		tb.Fatal(err)
	}
	read = new(atomic.Int64)
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := cc.Read(buf)
			read.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return c, read
}

// flushOwn runs the flush that Enqueue asked the (idle) worker for.
func flushOwn(c *Conn, sc *scratch) {
	w := c.worker
	w.mu.Lock()
	clear(w.ready)
	w.ready = w.ready[:0]
	w.mu.Unlock()
	c.flush(sc)
}

// BenchmarkFlush is the delivery path after the hub: Deliver queues a shared frame, and a flush
// renders the queue and writes it in one syscall. It reports allocations per op (one flush of
// batch deliveries) and per delivery.
func BenchmarkFlush(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			c, _ := benchConn(b, newProto())
			f := frame(123456)
			sc := &scratch{buf: make([]byte, 0, 64<<10)}
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ReportAllocs()
			for b.Loop() {
				for range batch {
					c.Deliver(f)
				}
				flushOwn(c, sc)
			}
			runtime.ReadMemStats(&ms1)
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N*batch), "allocs/delivery")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/delivery")
		})
	}
}

// BenchmarkDeliver goes through the real writer pool: each op is one Deliver, and the benchmark
// waits for the peer to have read everything at the end.
func BenchmarkDeliver(b *testing.B) {
	s := newTestServer(b, Config{Limits: Limits{QueueItems: 1 << 20, QueueBytes: 1 << 30}, WriteTimeout: time.Hour})
	p := newProto()
	sc, cc := tcpPair(b, false)
	c, err := s.Take(sc, p)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(c, nil); err != nil {
		b.Fatal(err)
	}
	var read atomic.Int64
	go func() { n, _ := io.Copy(io.Discard, onlyReader{cc}); read.Add(n) }()
	f := frame(123456)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		c.Deliver(f)
		n++
		if n%64 == 0 {
			runtime.Gosched() // let the writer keep up, as the hub's publishers would
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/delivery")
	c.Close(ReasonDrain)
	p.waitClosed(b, 5*time.Second)
}

type onlyReader struct{ r net.Conn }

func (o onlyReader) Read(b []byte) (int, error) { return o.r.Read(b) }
