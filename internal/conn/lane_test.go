package conn

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/memory"
)

// TestTakeInLane: connections are spread over the writers in turn, or put in the lane asked
// for; a connection of the goroutine backend is in none.
func TestTakeInLane(t *testing.T) {
	s := newTestServer(t, Config{Workers: 3})
	if s.Lanes() != 3 {
		t.Fatalf("Lanes = %d, want 3", s.Lanes())
	}
	seen := map[int]int{}
	for range 6 {
		c, _ := open(t, s, newProto(), false)
		if c.worker != s.workers[c.Lane()] {
			t.Fatalf("connection in lane %d is written by another worker", c.Lane())
		}
		seen[c.Lane()]++
	}
	if len(seen) != 3 || seen[0] != 2 || seen[1] != 2 || seen[2] != 2 {
		t.Fatalf("lanes of six connections: %v, want two in each of 0, 1, 2", seen)
	}
	sc, _ := tcpPair(t, false)
	c, err := s.TakeInLane(sc, newProto(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if c.Lane() != 2 || c.worker != s.workers[2] {
		t.Fatalf("TakeInLane(2): lane %d", c.Lane())
	}
	s.Discard(c)
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	g, err := s.Take(a, newProto())
	if err != nil {
		t.Fatal(err)
	}
	if g.Lane() != -1 {
		t.Fatalf("a goroutine-backend connection is in lane %d, want -1", g.Lane())
	}
	s.Discard(g)
}

// TestLaneFanout: a hub whose large fanouts the writers walk delivers every message to every
// connection over real sockets, once and in order, while publishers race (and walks take on
// the jobs they post, and put them back for the connections they had passed).
func TestLaneFanout(t *testing.T) {
	s := newTestServer(t, Config{Workers: 2, Limits: Limits{QueueItems: 1 << 16, QueueBytes: 1 << 26}})
	h := hub.New(hub.Config{Store: memory.New(), Lanes: s, Batch: s.Batch})
	const conns, publishers, perPub = 300, 3, 40 // three chunks a lane: walks take jobs on between them
	var peers []net.Conn
	for range conns {
		c, peer := open(t, s, newProto(), false)
		if _, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: "c", Sink: c}); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, peer)
	}
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for range perPub {
				if _, err := h.Publish(context.Background(), []hub.Publication{{Channel: "c", Data: []byte("x")}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var want strings.Builder
	for i := range publishers*perPub + 1 {
		fmt.Fprintf(&want, "F%d\n", i) // the start frame renders as F0
	}
	for i, peer := range peers {
		got := make([]byte, want.Len())
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatalf("peer %d: %v after %q", i, err, got)
		}
		if string(got) != want.String() {
			t.Fatalf("peer %d read\n%s\nwant\n%s", i, got, want.String())
		}
	}
	wg.Wait()
}

// gateSink blocks its deliveries while the gate is closed, holding up the lane that walks it.
type gateSink struct {
	lane    int
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
	n       atomic.Int64
}

func (g *gateSink) Lane() int { return g.lane }

func (g *gateSink) Deliver(f *hub.Frame) {
	if f.Kind == hub.KindMessage && g.gate != nil {
		if g.entered != nil {
			g.once.Do(func() { close(g.entered) })
		}
		<-g.gate
	}
	g.n.Add(1)
}

// TestWaitBoundsJobs: publishers that outrun a lane's writer wait once it holds maxJobs jobs,
// and go on when it catches up.
func TestWaitBoundsJobs(t *testing.T) {
	s := newTestServer(t, Config{Workers: 1})
	h := hub.New(hub.Config{Store: memory.New(), Lanes: s})
	gate, entered := make(chan struct{}), make(chan struct{})
	var open sync.Once
	t.Cleanup(func() { open.Do(func() { close(gate) }) }) // before the server's shutdown
	// The writer gets stuck walking channel "stuck"; the publishes to "c" pile up behind.
	var sinks []*gateSink
	for i := range 2 * 40 { // above what a publisher delivers to itself
		g := &gateSink{gate: gate}
		if i == 0 {
			g.entered = entered // the first one the walk reaches signals
		}
		name := "stuck"
		if i >= 40 {
			name, g.gate = "c", nil
		}
		if _, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: name, Sink: g}); err != nil {
			t.Fatal(err)
		}
		sinks = append(sinks, g)
	}
	pub := func(ch string) error {
		_, err := h.Publish(context.Background(), []hub.Publication{{Channel: ch, Data: []byte("x")}})
		return err
	}
	if err := pub("stuck"); err != nil {
		t.Fatal(err)
	}
	<-entered // the writer took the job and is stuck in it
	const more = 2 * maxJobs
	var published atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range more {
			if err := pub("c"); err != nil {
				t.Error(err)
				return
			}
			published.Add(1)
		}
	}()
	// The publish that takes the writer's list past maxJobs waits, and so does its publisher.
	waitFor(t, 5*time.Second, "maxJobs publishes", func() bool { return published.Load() >= maxJobs })
	time.Sleep(50 * time.Millisecond)
	if n := published.Load(); n != maxJobs {
		t.Fatalf("%d publishes returned while the writer was stuck, want %d", n, maxJobs)
	}
	open.Do(func() { close(gate) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher did not go on once the writer caught up")
	}
	waitFor(t, 5*time.Second, "every delivery", func() bool {
		for i, g := range sinks {
			if want := map[bool]int64{true: 1 + 1, false: 1 + more}[i < 40]; g.n.Load() != want {
				return false
			}
		}
		return true
	})
}

// TestRunnerDeliver: a walk's delivery to a connection of its own writer puts the connection on
// the runner's list, once however many frames it gets, and not on the worker's (which takes a
// lock); one to another writer's connection goes to that writer's list. Flush writes both.
func TestRunnerDeliver(t *testing.T) {
	own, ownRead := benchConn(t, newProto())
	other, otherRead := benchConn(t, newProto())
	for _, c := range []*Conn{own, other} {
		flushOwn(c, &scratch{}) // what Start queued, if anything
	}
	r := &runner{w: own.worker}
	f := frame(7)
	for range 3 {
		r.Deliver(own, f)
	}
	r.Deliver(other, f)

	if len(r.walked) != 1 || r.walked[0] != own {
		t.Fatalf("runner's list: %d connections, want the own writer's one", len(r.walked))
	}
	if n := len(own.worker.ready); n != 0 {
		t.Errorf("own worker's list holds %d connections, want none", n)
	}
	if n := len(other.worker.ready); n != 1 || other.worker.ready[0] != other {
		t.Errorf("other worker's list holds %d connections, want the other connection", n)
	}
	before := ownRead.Load()
	r.Flush()
	if len(r.walked) != 0 {
		t.Errorf("runner's list holds %d connections after Flush", len(r.walked))
	}
	own.mu.Lock()
	scheduled, queued := own.scheduled, len(own.queue)
	own.mu.Unlock()
	if scheduled || queued != 0 {
		t.Errorf("after Flush: scheduled %v, %d items queued", scheduled, queued)
	}
	want := before + int64(3*len("F7\n"))
	waitFor(t, 5*time.Second, "the three frames", func() bool { return ownRead.Load() == want })

	// The other writer's connection is its own writer's to flush.
	before = otherRead.Load()
	flushOwn(other, &scratch{})
	waitFor(t, 5*time.Second, "the other connection's frame", func() bool { return otherRead.Load() == before+3 })
}
