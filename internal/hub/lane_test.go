package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/memory"
)

// testLanes runs each lane's jobs on a goroutine of its own, as the connection layer's writers
// do. A lane can be held, so that its jobs pile up.
type testLanes struct{ lanes []*testLane }

type testLane struct {
	mu      sync.Mutex
	cond    sync.Cond
	jobs    []hub.Job
	held    bool
	running bool
	stopped bool
	runs    []int // how many jobs each RunJobs call got
	flushes int
	tookOn  int         // jobs that walks took on (More)
	onFlush func(n int) // called by Flush, with how many flushes there were
}

func newTestLanes(t testing.TB, n int) *testLanes {
	l := &testLanes{}
	for range n {
		ln := &testLane{}
		ln.cond.L = &ln.mu
		l.lanes = append(l.lanes, ln)
		go ln.run()
	}
	t.Cleanup(func() {
		for _, ln := range l.lanes {
			ln.mu.Lock()
			ln.stopped = true
			ln.cond.Broadcast()
			ln.mu.Unlock()
		}
	})
	return l
}

func (l *testLanes) Lanes() int { return len(l.lanes) }

func (l *testLanes) Post(i int, j hub.Job) {
	ln := l.lanes[i]
	ln.mu.Lock()
	ln.jobs = append(ln.jobs, j)
	ln.cond.Broadcast()
	ln.mu.Unlock()
}

// Wait does not bound the lanes: the connection layer's bound is tested with it.
func (l *testLanes) Wait() {}

func (ln *testLane) run() {
	var jobs []hub.Job
	for {
		ln.mu.Lock()
		for (len(ln.jobs) == 0 || ln.held) && !ln.stopped {
			ln.cond.Wait()
		}
		if ln.stopped {
			ln.mu.Unlock()
			return
		}
		jobs, ln.jobs = ln.jobs, jobs[:0]
		ln.running = true
		ln.runs = append(ln.runs, len(jobs))
		ln.mu.Unlock()
		hub.RunJobs(jobs, ln)
		clear(jobs)
		ln.mu.Lock()
		ln.running = false
		ln.cond.Broadcast()
		ln.mu.Unlock()
	}
}

// More, Return and Deliver implement hub.Runner, as the connection layer's writers do.
func (ln *testLane) More(j hub.Job, max int) []hub.Job {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	n := 0
	for n < len(ln.jobs) && n < max && ln.jobs[n].Continues(j) {
		n++
	}
	more := slices.Clone(ln.jobs[:n])
	ln.jobs = slices.Delete(ln.jobs, 0, n)
	ln.tookOn += n
	return more
}

func (ln *testLane) Return(jobs []hub.Job) {
	ln.mu.Lock()
	ln.jobs = slices.Insert(ln.jobs, 0, jobs...)
	ln.cond.Broadcast()
	ln.mu.Unlock()
}

func (ln *testLane) Deliver(s hub.Sink, f *hub.Frame) { s.Deliver(f) }

func (ln *testLane) Flush() {
	ln.mu.Lock()
	ln.flushes++
	n, f := ln.flushes, ln.onFlush
	ln.mu.Unlock()
	if f != nil {
		f(n)
	}
}

func (l *testLanes) hold(i int, held bool) {
	ln := l.lanes[i]
	ln.mu.Lock()
	ln.held = held
	ln.cond.Broadcast()
	ln.mu.Unlock()
}

// settle waits until every lane has run all it was posted.
func (l *testLanes) settle() {
	for _, ln := range l.lanes {
		ln.mu.Lock()
		for (len(ln.jobs) > 0 && !ln.held) || ln.running {
			ln.cond.Wait()
		}
		ln.mu.Unlock()
	}
}

// laneSink is a recSink that a lane writes.
type laneSink struct {
	recSink
	lane int
}

func (s *laneSink) Lane() int { return s.lane }

func newLaneHub(t testing.TB, lanes int, ns nsConfig) (*hub.Hub, *testLanes) {
	l := newTestLanes(t, lanes)
	return hub.New(hub.Config{Store: memory.New(), Namespaces: ns.get, Lanes: l}), l
}

func subscribeIn(t testing.TB, h *hub.Hub, lane int, req hub.SubscribeRequest) (*hub.Subscription, *laneSink) {
	t.Helper()
	return subscribeWith(t, h, req, &laneSink{lane: lane})
}

// TestLanesKeepOrder: with large fanouts walked by lanes, concurrent publishers and subscribers
// that come and go, every subscriber gets every message once, in order, from its start on, and
// nothing after Close; sinks in no lane (and in a lane the hub does not have) alike.
func TestLanesKeepOrder(t *testing.T) {
	const (
		lanes      = 3
		perLane    = 50 // above the size a publisher delivers to itself
		publishers = 4
		perPub     = 150
		total      = publishers * perPub
	)
	h, l := newLaneHub(t, lanes, nil)
	var steady []*recSink
	for i := range lanes * perLane {
		_, s := subscribeIn(t, h, i%lanes, hub.SubscribeRequest{Channel: "room"})
		steady = append(steady, &s.recSink)
	}
	for _, lane := range []int{-1, lanes, 99} {
		_, s := subscribeIn(t, h, lane, hub.SubscribeRequest{Channel: "room"})
		steady = append(steady, &s.recSink)
	}
	_, plain := subscribe(t, h, hub.SubscribeRequest{Channel: "room"})
	steady = append(steady, plain)
	epoch := epochOf(t, h, "room")
	publishWhileChurning(t, h, "room", publishers, perPub,
		func(c, i int) framedSink { return &laneSink{lane: (c + i) % lanes} },
		func() *channel.Position { // a position published already
			info, err := h.Info(context.Background(), "room")
			if err != nil {
				t.Error(err)
				return nil
			}
			return pos(epoch, rand.Uint64N(info.Offset+1))
		}, l.settle)
	for i, s := range steady {
		if last := checkContiguous(t, fmt.Sprint("steady ", i), s.Frames(), pos(epoch, 0)); last != total {
			t.Fatalf("steady subscriber %d got up to %d, want %d", i, last, total)
		}
	}
	if info, _ := h.Info(context.Background(), "room"); info.Subscribers != len(steady) {
		t.Fatalf("Info = %+v, want %d subscribers", info, len(steady))
	}
}

// TestLaneSkipsWhatCameBefore: a subscription that joins a lane while jobs posted before it wait
// there does not get their events: as without lanes, its first event is its own join.
func TestLaneSkipsWhatCameBefore(t *testing.T) {
	h, l := newLaneHub(t, 1, nsConfig{"room": {HistorySize: 10, Presence: true}})
	l.hold(0, true)
	var sinks []*laneSink
	for i := range 40 {
		_, s := subscribeIn(t, h, 0, hub.SubscribeRequest{Channel: "room:a", Client: hub.ClientInfo{Client: fmt.Sprint("c", i)}})
		sinks = append(sinks, s)
	}
	_, late := subscribeIn(t, h, 0, hub.SubscribeRequest{Channel: "room:a", Client: hub.ClientInfo{Client: "late"}})
	l.hold(0, false)
	l.settle()
	at := epochOf(t, h, "room:a") + ":0"
	expectTags(t, &late.recSink, "start "+at, "join "+at)
	for i, s := range sinks {
		fs := s.Frames()
		if len(fs) != 1+40-i+1 {
			t.Fatalf("sink %d got %v", i, tags(fs))
		}
		for j, f := range fs[1:] {
			want := fmt.Sprint("c", i+j)
			if i+j == 40 {
				want = "late"
			}
			var who hub.ClientInfo
			if err := json.Unmarshal(f.Msg.Data, &who); err != nil || f.Msg.Event != hub.EventJoin || who.Client != want {
				t.Fatalf("sink %d frame %d: %s %s, want the join of %s", i, j+1, tag(f), f.Msg.Data, want)
			}
		}
	}
}

// TestLaneClosesDuringWalk: subscriptions closed while their lane walks, between its chunks,
// get nothing more, the others everything; the lane is whole afterwards.
func TestLaneClosesDuringWalk(t *testing.T) {
	h, l := newLaneHub(t, 1, nil)
	var subs []*hub.Subscription
	var sinks []*laneSink
	for range 200 { // four chunks
		sub, s := subscribeIn(t, h, 0, hub.SubscribeRequest{Channel: "fan"})
		subs, sinks = append(subs, sub), append(sinks, s)
	}
	closed := []int{10, 150, 199}
	ln := l.lanes[0]
	ln.mu.Lock()
	ln.onFlush = func(n int) {
		if n == 1 { // after the first chunk: one closed subscription behind the walk, two ahead
			for _, i := range closed {
				subs[i].Close()
			}
		}
	}
	ln.mu.Unlock()
	publishN(t, h, "fan", 1)
	l.settle()
	for i, s := range sinks {
		want := 2
		if i == 150 || i == 199 {
			want = 1
		}
		if got := len(s.Frames()); got != want {
			t.Fatalf("sink %d got %v, want %d frames", i, tags(s.Frames()), want)
		}
	}
	if info, _ := h.Info(context.Background(), "fan"); info.Subscribers != 197 {
		t.Fatalf("Info = %+v, want 197 subscribers", info)
	}
	publishN(t, h, "fan", 1)
	l.settle()
	for i, s := range sinks {
		want := 3
		if slices.Contains(closed, i) {
			want = len(s.Frames())
			if want > 2 {
				t.Fatalf("closed sink %d got %v", i, tags(s.Frames()))
			}
		}
		if got := len(s.Frames()); got != want {
			t.Fatalf("sink %d got %v, want %d frames", i, tags(s.Frames()), want)
		}
	}
	for _, i := range rand.Perm(len(subs)) {
		subs[i].Close()
	}
	if n := h.Channels(); n != 0 {
		t.Fatalf("Channels = %d after closing all, want 0", n)
	}
}

// fanIn subscribes n sinks in lane 0 to channel "fan".
func fanIn(t *testing.T, h *hub.Hub, n int) []*laneSink {
	var sinks []*laneSink
	for range n {
		_, s := subscribeIn(t, h, 0, hub.SubscribeRequest{Channel: "fan"})
		sinks = append(sinks, s)
	}
	return sinks
}

// TestLaneMergesJobs: jobs that wait in a lane are walked together, so that each subscriber has
// all of them queued before its chunk is flushed: several messages leave in one write.
func TestLaneMergesJobs(t *testing.T) {
	h, l := newLaneHub(t, 1, nil)
	sinks := fanIn(t, h, 100)
	ln := l.lanes[0]
	var atFirstFlush []int
	ln.mu.Lock()
	ln.onFlush = func(n int) {
		if n == 1 {
			atFirstFlush = []int{len(sinks[0].Frames()), len(sinks[99].Frames())}
		}
	}
	ln.mu.Unlock()
	l.hold(0, true)
	publishN(t, h, "fan", 5)
	l.hold(0, false)
	l.settle()
	ln.mu.Lock()
	runs, flushes := slices.Clone(ln.runs), ln.flushes
	ln.mu.Unlock()
	if !slices.Equal(runs, []int{5}) || flushes != 2 {
		t.Fatalf("runs %v and %d flushes, want one run of 5 jobs and 2 flushes (100 subscribers)", runs, flushes)
	}
	if !slices.Equal(atFirstFlush, []int{6, 1}) {
		t.Fatalf("frames of the first and last subscriber at the first flush: %v, want [6 1]", atFirstFlush)
	}
	e := epochOf(t, h, "fan")
	for _, s := range sinks {
		expectTags(t, &s.recSink, append([]string{"start " + e + ":0"}, messageRange(e, 1, 5)...)...)
	}
}

// TestLaneDispatchAllocs: a fanout through lanes allocates nothing per subscriber.
func TestLaneDispatchAllocs(t *testing.T) {
	h, l := newLaneHub(t, 2, nil)
	sinks := make([]laneCountSink, 1000)
	for i := range sinks {
		sinks[i].lane = i % 2
		if _, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: "fan", Sink: &sinks[i]}); err != nil {
			t.Fatal(err)
		}
	}
	epoch := epochOf(t, h, "fan")
	const runs = 50
	frames := make([]*hub.Frame, runs+2) // AllocsPerRun runs once more to warm up
	for i := range frames {
		frames[i] = hub.NewFrame(hub.Message{Channel: "fan", Epoch: epoch, Offset: uint64(i + 1), ContentType: "application/json", Data: []byte(`{}`)})
	}
	h.Dispatch(frames[0]) // the lanes' job arrays grow once
	l.settle()
	i := 1
	allocs := testing.AllocsPerRun(runs, func() { h.Dispatch(frames[i]); l.settle(); i++ })
	if allocs > 0.1 {
		t.Errorf("Dispatch through lanes to 1000 subscribers: %v allocs, want 0", allocs)
	}
	for i := range sinks {
		if n := sinks[i].n.Load(); n != runs+3 { // start frame, then every dispatch
			t.Fatalf("sink %d got %d frames, want %d", i, n, runs+3)
		}
	}
}

type laneCountSink struct {
	n    atomic.Int64
	lane int
}

func (s *laneCountSink) Deliver(*hub.Frame) { s.n.Add(1) }
func (s *laneCountSink) Lane() int          { return s.lane }

// TestRetarget: subscriptions handed to another sink while publishers run (in lanes with jobs
// in flight, and in no lane) give each message to exactly one of the two sinks: the first sink
// a prefix of the stream, the second the rest, in order.
func TestRetarget(t *testing.T) {
	const (
		lanes   = 2
		perLane = 40 // above the size a publisher delivers to itself
		total   = 300
	)
	h, l := newLaneHub(t, lanes, nil)
	type pair struct {
		sub         *hub.Subscription
		first, then *laneSink
	}
	var pairs []pair
	for i := range lanes*perLane + 1 {
		lane := i % lanes
		if i == lanes*perLane {
			lane = -1
		}
		sub, first := subscribeIn(t, h, lane, hub.SubscribeRequest{Channel: "room"})
		pairs = append(pairs, pair{sub, first, &laneSink{lane: lane}})
	}
	epoch := epochOf(t, h, "room")
	var published atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range total {
			publishN(t, h, "room", 1)
			published.Store(int64(i + 1))
			if i%8 == 0 {
				runtime.Gosched()
			}
		}
	})
	for i, p := range pairs {
		// Spread the handovers over the stream, with the lanes' jobs in flight.
		for published.Load() < int64(i*total/(len(pairs)+1)) {
			runtime.Gosched()
		}
		p.sub.Retarget(p.then)
	}
	wg.Wait()
	l.settle()
	for i, p := range pairs {
		first, then := p.first.Frames(), p.then.Frames()
		all := append(slices.Clone(first), then...)
		if last := checkContiguous(t, fmt.Sprint("subscriber ", i), all, pos(epoch, 0)); last != total {
			t.Fatalf("subscriber %d got up to %d across both sinks, want %d", i, last, total)
		}
	}
	// A frame published after every handover reaches the new sinks only.
	publishN(t, h, "room", 1)
	l.settle()
	split := 0
	for i, p := range pairs {
		if len(p.first.Frames()) > 1 && len(p.then.Frames()) > 1 {
			split++
		}
		if got := p.then.Frames(); len(got) == 0 || got[len(got)-1].Msg.Offset != total+1 {
			t.Fatalf("subscriber %d: the last publish did not reach the new sink", i)
		}
		if got := p.first.Frames(); got[len(got)-1].Msg.Offset > total {
			t.Fatalf("subscriber %d: the old sink got a frame after the handover", i)
		}
	}
	if split < len(pairs)/2 {
		t.Fatalf("only %d of %d handovers came amid the stream", split, len(pairs))
	}
}

// warmSink logs Warm and Deliver calls, in the order the lane's walk makes them.
type warmSink struct {
	id, lane int
	log      *[]string // the walk runs on one goroutine: no lock needed while it runs
}

func (s *warmSink) Lane() int          { return s.lane }
func (s *warmSink) Warm() uintptr      { *s.log = append(*s.log, fmt.Sprint("warm ", s.id)); return 0 }
func (s *warmSink) Deliver(*hub.Frame) { *s.log = append(*s.log, fmt.Sprint("deliver ", s.id)) }

// TestLaneWarmsChunks: a walk warms each chunk of its subscriptions before it delivers to any
// of them, and warms nothing twice.
func TestLaneWarmsChunks(t *testing.T) {
	h, l := newLaneHub(t, 1, nil)
	var log []string
	for i := range 100 {
		subscribeWith(t, h, hub.SubscribeRequest{Channel: "fan"}, &warmSink{id: i, log: &log})
	}
	l.settle()
	log = nil // the start frames, delivered by the subscribers themselves
	publishN(t, h, "fan", 1)
	l.settle()
	var want []string
	for _, chunk := range [][2]int{{0, 64}, {64, 100}} {
		for i := chunk[0]; i < chunk[1]; i++ {
			want = append(want, fmt.Sprint("warm ", i))
		}
		for i := chunk[0]; i < chunk[1]; i++ {
			want = append(want, fmt.Sprint("deliver ", i))
		}
	}
	if !slices.Equal(log, want) {
		t.Fatalf("walk made\n%v\nwant\n%v", log, want)
	}
}

// TestLaneTakesOnJobs: messages published while a walk is under way reach the subscriptions
// the walk has not passed in that walk (up to 256 jobs a walk), and those it had passed in the
// next one: every subscriber gets every message once, in order.
func TestLaneTakesOnJobs(t *testing.T) {
	for _, tc := range []struct {
		later, tookOn int
	}{
		{later: 1, tookOn: 1},
		{later: 300, tookOn: 255}, // the walk held one: the rest wait in the lane's list
	} {
		t.Run(fmt.Sprint(tc.later), func(t *testing.T) {
			h, l := newLaneHub(t, 1, nil)
			sinks := fanIn(t, h, 200)
			ln := l.lanes[0]
			var pubErr error
			var atSecondFlush []int
			ln.mu.Lock()
			ln.onFlush = func(n int) {
				switch n {
				case 1: // the first chunk (64 subscriptions) is queued: publish again
					for i := range tc.later {
						if _, err := h.Publish(context.Background(), []hub.Publication{{Channel: "fan", Data: []byte(fmt.Sprint(i))}}); err != nil {
							pubErr = err
						}
					}
				case 2:
					atSecondFlush = []int{len(sinks[0].Frames()), len(sinks[64].Frames())}
				}
			}
			ln.mu.Unlock()
			publishN(t, h, "fan", 1)
			l.settle()
			if pubErr != nil {
				t.Fatal(pubErr)
			}
			ln.mu.Lock()
			tookOn := ln.tookOn
			ln.mu.Unlock()
			if tookOn != tc.tookOn {
				t.Fatalf("walks took on %d jobs, want %d", tookOn, tc.tookOn)
			}
			// Subscriber 0 was passed before the publishes, subscriber 64 was not.
			if want := []int{2, 2 + tc.tookOn}; !slices.Equal(atSecondFlush, want) {
				t.Fatalf("frames of subscribers 0 and 64 at the second flush: %v, want %v", atSecondFlush, want)
			}
			e := epochOf(t, h, "fan")
			want := append([]string{"start " + e + ":0"}, messageRange(e, 1, uint64(tc.later)+1)...)
			for _, s := range sinks {
				expectTags(t, &s.recSink, want...)
			}
		})
	}
}
