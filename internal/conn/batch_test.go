package conn

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

func writersAsleep(s *Server) bool {
	for _, w := range s.workers {
		w.mu.Lock()
		asleep := w.asleep
		w.mu.Unlock()
		if !asleep {
			return false
		}
	}
	return true
}

// TestBatchWritesOnCaller: what a batch makes ready is written by its end, on the calling
// goroutine, and no writer is woken for it.
func TestBatchWritesOnCaller(t *testing.T) {
	s := newTestServer(t, Config{Workers: 2})
	var conns []*Conn
	var peers []*net.TCPConn
	for range 4 {
		c, peer := open(t, s, newProto(), false)
		conns, peers = append(conns, c), append(peers, peer)
	}
	waitFor(t, time.Second, "the writers to sleep", func() bool { return writersAsleep(s) })
	end := s.Batch()
	for i, c := range conns {
		c.Send([]byte("m" + strconv.Itoa(i) + "\n"))
	}
	if !writersAsleep(s) {
		t.Fatal("a writer was woken during the batch")
	}
	for _, c := range conns {
		if st := stateOf(c); st.queue != 1 || !st.scheduled {
			t.Fatalf("before the end of the batch: %+v, want one item waiting", st)
		}
	}
	end()
	// Written by end itself: nothing waits once it returns.
	for _, c := range conns {
		if st := stateOf(c); st.queue != 0 || st.scheduled || st.unwritten != 0 {
			t.Fatalf("after the end of the batch: %+v, want everything written", st)
		}
	}
	for i, peer := range peers {
		_ = peer.SetReadDeadline(time.Now().Add(time.Second))
		line, err := bufio.NewReader(peer).ReadString('\n')
		if want := "m" + strconv.Itoa(i) + "\n"; err != nil || line != want {
			t.Fatalf("peer %d read %q, %v; want %q", i, line, err, want)
		}
	}
}

// TestBatchWakesWritersForLargeFanouts: a ready list longer than batchFlush wakes its writer
// during the batch, so that a large fanout is written in parallel; end leaves nothing behind.
func TestBatchWakesWritersForLargeFanouts(t *testing.T) {
	s := newTestServer(t, Config{Workers: 1})
	n := 3 * batchFlush
	var conns []*Conn
	var peers []*net.TCPConn
	for range n {
		c, peer := open(t, s, newProto(), false)
		conns, peers = append(conns, c), append(peers, peer)
	}
	end := s.Batch()
	for _, c := range conns {
		c.Send([]byte("x\n"))
	}
	waitFor(t, 2*time.Second, "the writer to write during the batch", func() bool {
		st := stateOf(conns[0])
		return st.queue == 0 && !st.scheduled
	})
	end()
	for i, peer := range peers {
		_ = peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		if line, err := bufio.NewReader(peer).ReadString('\n'); err != nil || line != "x\n" {
			t.Fatalf("peer %d read %q, %v", i, line, err)
		}
	}
}

// TestBatchKeepsOrder: batches ending on other goroutines take connections off the writers'
// lists while the writers run; a connection is still written by one goroutine at a time, in
// queue order.
func TestBatchKeepsOrder(t *testing.T) {
	s := newTestServer(t, Config{Workers: 2})
	c, peer := open(t, s, newProto(), false)
	const total = 5000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { // batches that end with nothing of their own: they help
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.Batch()()
			}
		}()
	}
	go func() {
		for i := 1; i <= total; i++ {
			if i%2 == 0 {
				end := s.Batch()
				c.Send([]byte(strconv.Itoa(i) + "\n"))
				end()
			} else {
				c.Send([]byte(strconv.Itoa(i) + "\n"))
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(peer)
	for i := 1; i <= total; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d lines: %v", i-1, err)
		}
		if line != fmt.Sprintf("%d\n", i) {
			t.Fatalf("line %d is %q", i, line)
		}
	}
}
