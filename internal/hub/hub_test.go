package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/memory"
)

// recSink records the frames it is handed. Deliver runs under the channel's lock, so it only
// appends.
type recSink struct {
	mu     sync.Mutex
	frames []*hub.Frame
}

func (s *recSink) Deliver(f *hub.Frame) {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	s.mu.Unlock()
}

func (s *recSink) Frames() []*hub.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.frames)
}

func (s *recSink) Reset() {
	s.mu.Lock()
	s.frames = nil
	s.mu.Unlock()
}

// tag names a frame for comparisons and failure messages: "start E:3", "gap E:5", "join E:5",
// or "E:4" for a message.
func tag(f *hub.Frame) string {
	pos := f.Msg.Epoch + ":" + fmt.Sprint(f.Msg.Offset)
	switch {
	case f.Kind == hub.KindStart:
		return "start " + pos
	case strings.HasPrefix(f.Msg.Event, "crier."):
		return strings.TrimPrefix(f.Msg.Event, "crier.") + " " + pos
	}
	return pos
}

func tags(fs []*hub.Frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = tag(f)
	}
	return out
}

// messageRange returns the tags of messages from..to of epoch.
func messageRange(epoch string, from, to uint64) []string {
	var out []string
	for o := from; o <= to; o++ {
		out = append(out, fmt.Sprintf("%s:%d", epoch, o))
	}
	return out
}

func expectTags(t testing.TB, s *recSink, want ...string) {
	t.Helper()
	if got := tags(s.Frames()); !slices.Equal(got, want) {
		t.Fatalf("frames\n got %v\nwant %v", got, want)
	}
}

// nsConfig maps namespace names to options; others get the defaults below.
type nsConfig map[string]hub.Namespace

func (c nsConfig) get(name string) hub.Namespace {
	if ns, ok := c[name]; ok {
		return ns
	}
	return hub.Namespace{HistorySize: 1000, HistoryTTL: time.Hour}
}

func newHub(t testing.TB, ns nsConfig, st hub.Store) *hub.Hub {
	t.Helper()
	if st == nil {
		st = memory.New()
	}
	return hub.New(hub.Config{Store: st, Namespaces: ns.get})
}

func publish(t testing.TB, h *hub.Hub, pubs ...hub.Publication) []hub.Appended {
	t.Helper()
	res, err := h.Publish(context.Background(), pubs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return res
}

func publishN(t testing.TB, h *hub.Hub, ch string, n int) {
	t.Helper()
	for i := range n {
		r := publish(t, h, hub.Publication{Channel: ch, ContentType: "text/plain", Data: []byte(fmt.Sprint(i))})
		if r[0].Err != nil {
			t.Fatalf("publish: %v", r[0].Err)
		}
	}
}

func subscribe(t testing.TB, h *hub.Hub, req hub.SubscribeRequest) (*hub.Subscription, *recSink) {
	t.Helper()
	return subscribeWith(t, h, req, &recSink{})
}

// subscribeWith subscribes s, and closes the subscription when the test ends.
func subscribeWith[S hub.Sink](t testing.TB, h *hub.Hub, req hub.SubscribeRequest, s S) (*hub.Subscription, S) {
	t.Helper()
	req.Sink = s
	sub, err := h.Subscribe(context.Background(), req)
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", req.Channel, err)
	}
	t.Cleanup(sub.Close)
	return sub, s
}

func epochOf(t testing.TB, h *hub.Hub, ch string) string {
	t.Helper()
	info, err := h.Info(context.Background(), ch)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	return info.Epoch
}

func pos(epoch string, off uint64) *channel.Position {
	return &channel.Position{Epoch: epoch, Offset: off}
}

func TestPublishOffsetsAndDelivery(t *testing.T) {
	h := newHub(t, nil, nil)
	_, s := subscribe(t, h, hub.SubscribeRequest{Channel: "news"})
	var want []uint64
	var next uint64 = 1
	for batch := 1; batch <= 5; batch++ {
		pubs := make([]hub.Publication, batch)
		for i := range pubs {
			pubs[i] = hub.Publication{Channel: "news", ContentType: "application/json", Data: fmt.Appendf(nil, `{"n":%d}`, next+uint64(i))}
		}
		for i, r := range publish(t, h, pubs...) {
			if r.Err != nil || r.Duplicate || r.Message.Offset != next {
				t.Fatalf("batch %d result %d: %+v, want offset %d", batch, i, r, next)
			}
			want = append(want, next)
			next++
		}
	}
	fs := s.Frames()
	epoch := epochOf(t, h, "news")
	if fs[0].Kind != hub.KindStart || tag(fs[0]) != "start "+epoch+":0" {
		t.Fatalf("first frame %s, want start %s:0", tag(fs[0]), epoch)
	}
	var got []uint64
	for _, f := range fs[1:] {
		e := parseEnvelope(t, f.SingleEnvelope())
		if e.Epoch != epoch || string(e.Data) != fmt.Sprintf(`{"n":%d}`, e.Offset) || e.Event != "message" {
			t.Fatalf("envelope %+v", e)
		}
		got = append(got, f.Msg.Offset)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("offsets %v, want %v", got, want)
	}
	if info, _ := h.Info(context.Background(), "news"); info.Offset != next-1 || info.Subscribers != 1 {
		t.Fatalf("Info = %+v", info)
	}
}

// contiguous checks that fs is a start frame then messages start+1, start+2, … of one epoch,
// with nothing else, and returns the last offset.
func contiguous(fs []*hub.Frame, wantStart *channel.Position) (uint64, error) {
	if len(fs) == 0 || fs[0].Kind != hub.KindStart {
		return 0, fmt.Errorf("first frame is not a start frame: %v", tags(fs))
	}
	at := fs[0].Msg.Position()
	if wantStart != nil && at != *wantStart {
		return 0, fmt.Errorf("starts at %v, want %v", at, *wantStart)
	}
	for i, f := range fs[1:] {
		if f.Kind != hub.KindMessage || f.Msg.Event != "" || f.Msg.Epoch != at.Epoch || f.Msg.Offset != at.Offset+1 {
			lo := max(0, i-3)
			return 0, fmt.Errorf("after %v got %s (frames %d..: %v)", at, tag(f), lo, tags(fs[lo:min(len(fs), i+5)]))
		}
		at.Offset++
	}
	return at.Offset, nil
}

func checkContiguous(t testing.TB, name string, fs []*hub.Frame, wantStart *channel.Position) uint64 {
	t.Helper()
	last, err := contiguous(fs, wantStart)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return last
}

func TestConcurrentPublishersWithChurningSubscribers(t *testing.T) {
	const total = 8 * 300
	h := newHub(t, nil, nil)
	_, steady := subscribe(t, h, hub.SubscribeRequest{Channel: "room"})
	epoch := epochOf(t, h, "room")
	publishWhileChurning(t, h, "room", 8, 300, func(int, int) framedSink { return &recSink{} }, nil, func() {})
	if last := checkContiguous(t, "steady", steady.Frames(), pos(epoch, 0)); last != total {
		t.Fatalf("steady subscriber got up to %d, want %d", last, total)
	}
	if info, _ := h.Info(context.Background(), "room"); info.Subscribers != 1 || info.Offset != total {
		t.Fatalf("Info = %+v", info)
	}
}

// framedSink is a sink that records what it is handed.
type framedSink interface {
	hub.Sink
	Frames() []*hub.Frame
}

// publishWhileChurning publishes perPub messages to ch from each of publishers goroutines,
// checking that every offset is answered once, while three churners subscribe newSink's sinks
// (resuming from since's position when it gives one) and close them again, until the
// publishes end. Each churned subscription must get its start frame, then an unbroken run of
// messages, and nothing after Close once settle has returned.
func publishWhileChurning(t *testing.T, h *hub.Hub, ch string, publishers, perPub int,
	newSink func(churner, i int) framedSink, since func() *channel.Position, settle func()) {
	t.Helper()
	total := publishers * perPub
	var pubWG, churnWG sync.WaitGroup
	offsets := make(chan uint64, total)
	for p := range publishers {
		pubWG.Go(func() {
			for i := range perPub {
				res, err := h.Publish(context.Background(), []hub.Publication{{Channel: ch, ContentType: "text/plain",
					Data: fmt.Appendf(nil, "%d/%d", p, i)}})
				if err != nil || res[0].Err != nil {
					t.Errorf("publish: %v %v", err, res[0].Err)
					return
				}
				offsets <- res[0].Message.Offset
				if i%16 == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	done := make(chan struct{})
	var churned atomic.Int64
	for c := range 3 {
		churnWG.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				s := newSink(c, i)
				req := hub.SubscribeRequest{Channel: ch, Sink: s}
				if since != nil && i%2 == 1 {
					req.Since = since()
				}
				sub, err := h.Subscribe(context.Background(), req)
				if err != nil {
					t.Errorf("subscribe: %v", err)
					return
				}
				time.Sleep(time.Duration(rand.IntN(400)) * time.Microsecond)
				sub.Close()
				n := len(s.Frames())
				sub.Close() // twice is fine
				settle()
				if got := len(s.Frames()); got != n {
					t.Errorf("%d frames delivered after Close", got-n)
				}
				if _, err := contiguous(s.Frames(), req.Since); err != nil {
					t.Errorf("churner %d/%d: %v", c, i, err)
					return
				}
				churned.Add(1)
			}
		})
	}
	pubWG.Wait()
	close(done)
	churnWG.Wait()
	close(offsets)
	settle()
	seen := make([]bool, total+1)
	for o := range offsets {
		if o == 0 || o > uint64(total) || seen[o] {
			t.Fatalf("offset %d answered twice or out of 1..%d", o, total)
		}
		seen[o] = true
	}
	if churned.Load() == 0 {
		t.Fatal("no subscriber churned")
	}
}

// jitterStore delays the store's answers at random, so that publishes finish out of order and
// history reads overlap live dispatches.
type jitterStore struct {
	hub.Store
	max time.Duration
}

func (s jitterStore) sleep() {
	if d := rand.N(s.max); d > s.max/2 {
		time.Sleep(d)
	} else if d%2 == 0 {
		runtime.Gosched()
	}
}

func (s jitterStore) Append(ctx context.Context, b []hub.Append) ([]hub.Appended, error) {
	res, err := s.Store.Append(ctx, b)
	s.sleep() // committed, not yet dispatched: later offsets overtake this one
	return res, err
}

func (s jitterStore) Read(ctx context.Context, ch, epoch string, after uint64, limit int) (hub.History, error) {
	s.sleep()
	h, err := s.Store.Read(ctx, ch, epoch, after, limit)
	s.sleep()
	return h, err
}

func (s jitterStore) State(ctx context.Context, ch string) (hub.ChannelState, error) {
	s.sleep()
	return s.Store.State(ctx, ch)
}

// TestResumeSeam is the seam of SPEC section 3: subscribers resuming from a position while
// publishes race get exactly the offsets after it, once each, in order.
func TestResumeSeam(t *testing.T) {
	iterations := 150
	if testing.Short() {
		iterations = 30
	}
	for it := range iterations {
		st := jitterStore{Store: memory.New(), max: 200 * time.Microsecond}
		h := newHub(t, nil, st)
		name := fmt.Sprintf("seam:%d", it)
		pre := rand.IntN(20)
		publishN(t, h, name, pre)
		epoch := epochOf(t, h, name)

		var acked atomic.Uint64 // highest offset whose publish has answered
		acked.Store(uint64(pre))
		const publishers, perPub = 4, 15
		total := uint64(pre + publishers*perPub)
		var wg sync.WaitGroup
		for range publishers {
			wg.Go(func() {
				for range perPub {
					res, err := h.Publish(context.Background(), []hub.Publication{{Channel: name, ContentType: "text/plain", Data: []byte("m")}})
					if err != nil || res[0].Err != nil {
						t.Errorf("publish: %v", err)
						return
					}
					for o := res[0].Message.Offset; ; {
						cur := acked.Load()
						if o <= cur || acked.CompareAndSwap(cur, o) {
							break
						}
					}
				}
			})
		}
		type resumed struct {
			since uint64
			sink  *recSink
			sub   *hub.Subscription
		}
		subs := make([]resumed, 6)
		for i := range subs {
			wg.Go(func() {
				time.Sleep(time.Duration(rand.IntN(400)) * time.Microsecond)
				since := rand.Uint64N(acked.Load() + 1)
				s := &recSink{}
				sub, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: name, Since: pos(epoch, since), Sink: s})
				if err != nil {
					t.Errorf("subscribe: %v", err)
					return
				}
				subs[i] = resumed{since, s, sub}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		for i, r := range subs {
			got := checkContiguous(t, fmt.Sprintf("iteration %d subscriber %d since %d", it, i, r.since), r.sink.Frames(), pos(epoch, r.since))
			if got != total {
				t.Fatalf("iteration %d subscriber %d since %d: got up to %d, want %d", it, i, r.since, got, total)
			}
			r.sub.Close()
		}
		if n := h.Channels(); n != 0 {
			t.Fatalf("%d channels still held after every subscription closed", n)
		}
	}
}

func TestStartAndGaps(t *testing.T) {
	ctx := context.Background()
	ns := nsConfig{
		"small": {HistorySize: 5},
		"none":  {HistorySize: 0},
	}
	tests := []struct {
		name    string
		channel string
		publish int
		since   func(epoch string) *channel.Position
		// want is the frames before the next publish; "E" stands for the channel's epoch.
		want []string
	}{
		{"live", "news", 3, nil, []string{"start E:3"}},
		{"live on an empty channel", "news", 0, nil, []string{"start E:0"}},
		{"resume at latest", "news", 3, func(e string) *channel.Position { return pos(e, 3) }, []string{"start E:3"}},
		{"resume from zero", "news", 3, func(e string) *channel.Position { return pos(e, 0) }, []string{"start E:0", "E:1", "E:2", "E:3"}},
		{"resume in history", "small:x", 20, func(e string) *channel.Position { return pos(e, 16) }, []string{"start E:16", "E:17", "E:18", "E:19", "E:20"}},
		{"resume at the oldest held's predecessor", "small:x", 20, func(e string) *channel.Position { return pos(e, 15) },
			[]string{"start E:15", "E:16", "E:17", "E:18", "E:19", "E:20"}},
		{"resume from a trimmed position", "small:x", 20, func(e string) *channel.Position { return pos(e, 3) },
			[]string{"start E:3", "gap E:15", "E:16", "E:17", "E:18", "E:19", "E:20"}},
		{"resume just before trimmed", "small:x", 20, func(e string) *channel.Position { return pos(e, 14) },
			[]string{"start E:14", "gap E:15", "E:16", "E:17", "E:18", "E:19", "E:20"}},
		{"nothing held", "none:x", 7, func(e string) *channel.Position { return pos(e, 2) }, []string{"start E:2", "gap E:7"}},
		{"another epoch", "news", 4, func(string) *channel.Position { return pos("gone", 2) }, []string{"start gone:2", "gap E:4"}},
		{"another epoch, bigger offset", "small:x", 20, func(string) *channel.Position { return pos("gone", 50) }, []string{"start gone:50", "gap E:20"}},
		{"future offset", "news", 4, func(e string) *channel.Position { return pos(e, 9) }, []string{"start E:9", "gap E:4"}},
		{"future offset on an empty channel", "news", 0, func(e string) *channel.Position { return pos(e, 1) }, []string{"start E:1", "gap E:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHub(t, ns, nil)
			publishN(t, h, tt.channel, tt.publish)
			epoch := epochOf(t, h, tt.channel)
			req := hub.SubscribeRequest{Channel: tt.channel}
			if tt.since != nil {
				req.Since = tt.since(epoch)
			}
			_, s := subscribe(t, h, req)
			want := make([]string, len(tt.want))
			for i, w := range tt.want {
				want[i] = strings.Replace(w, "E:", epoch+":", 1)
			}
			expectTags(t, s, want...)
			fs := s.Frames()
			for _, f := range fs[1:] {
				if f.Msg.Event != hub.EventGap {
					continue
				}
				e := parseEnvelope(t, f.SingleEnvelope())
				if e.Event != "crier.gap" || e.Cursor != fmt.Sprintf("%s@%s:%d", tt.channel, e.Epoch, e.Offset) {
					t.Fatalf("gap envelope %+v", e)
				}
				var data struct{ Reason string }
				if err := json.Unmarshal(e.Data, &data); err != nil || data.Reason == "" {
					t.Fatalf("gap data %s: %v", e.Data, err)
				}
			}
			// What follows is the next live message, once.
			last := fs[len(fs)-1].Msg.Position()
			publishN(t, h, tt.channel, 1)
			fs = s.Frames()
			if got := tag(fs[len(fs)-1]); got != fmt.Sprintf("%s:%d", epoch, last.Offset+1) || len(fs) != len(want)+1 {
				t.Fatalf("after a publish, frames %v", tags(fs))
			}
			if tt.channel == "none:x" {
				if h, err := h.History(ctx, tt.channel, nil, 0); err != nil || len(h.Messages) != 0 {
					t.Fatalf("history-size 0 channel holds %d messages (%v)", len(h.Messages), err)
				}
			}
		})
	}
}

// TestResumeAheadOfDispatch resumes from a position that the store holds but this node has not
// fanned out yet (a message in flight, or published on another node): no gap, no repeat.
func TestResumeAheadOfDispatch(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	h := newHub(t, nil, st)
	publishN(t, h, "news", 3)
	_, live := subscribe(t, h, hub.SubscribeRequest{Channel: "news"}) // the channel is loaded at 3
	epoch := epochOf(t, h, "news")
	// Offset 4 is committed, as by another node, and reaches this node's hub only later.
	res, err := st.Append(ctx, []hub.Append{{Publication: hub.Publication{Channel: "news", ContentType: "text/plain", Data: []byte("4")},
		Time: time.Now(), Retention: hub.Retention{Size: 100}}})
	if err != nil || res[0].Message.Offset != 4 {
		t.Fatalf("append: %+v %v", res, err)
	}
	_, at4 := subscribe(t, h, hub.SubscribeRequest{Channel: "news", Since: pos(epoch, 4)})
	_, at3 := subscribe(t, h, hub.SubscribeRequest{Channel: "news", Since: pos(epoch, 3)})
	h.Dispatch(hub.NewFrame(res[0].Message))
	publishN(t, h, "news", 1)
	expectTags(t, at4, "start "+epoch+":4", epoch+":5")
	expectTags(t, at3, "start "+epoch+":3", epoch+":4", epoch+":5")
	expectTags(t, live, "start "+epoch+":3", epoch+":4", epoch+":5")
}

// TestDispatchOrder hands frames to Dispatch out of order, as a broker may: subscribers see them
// in offset order, once; old and foreign-epoch frames are dropped.
func TestDispatchOrder(t *testing.T) {
	h := newHub(t, nil, nil)
	_, s := subscribe(t, h, hub.SubscribeRequest{Channel: "news"})
	_, other := subscribe(t, h, hub.SubscribeRequest{Channel: "other"})
	epoch := epochOf(t, h, "news")
	frame := func(o uint64) *hub.Frame {
		return hub.NewFrame(hub.Message{Channel: "news", Epoch: epoch, Offset: o, ContentType: "text/plain", Data: []byte("x")})
	}
	f1 := frame(1)
	for _, f := range []*hub.Frame{frame(3), frame(2), frame(5), frame(3), f1, frame(2),
		hub.NewFrame(hub.Message{Channel: "news", Epoch: "old", Offset: 4}), frame(4), frame(6)} {
		h.Dispatch(f)
	}
	h.Dispatch(hub.NewFrame(hub.Message{Channel: "unknown", Epoch: epoch, Offset: 1})) // no subscriber: ignored
	expectTags(t, s, append([]string{"start " + epoch + ":0"}, messageRange(epoch, 1, 6)...)...)
	if s.Frames()[1] != f1 {
		t.Fatal("the dispatched frame was not handed on as is")
	}
	if len(other.Frames()) != 1 {
		t.Fatalf("another channel's subscriber got %v", tags(other.Frames()))
	}
}

func TestFramesAreShared(t *testing.T) {
	h := newHub(t, nil, nil)
	_, a := subscribe(t, h, hub.SubscribeRequest{Channel: "news"})
	_, b := subscribe(t, h, hub.SubscribeRequest{Channel: "news"})
	publishN(t, h, "news", 2)
	fa, fb := a.Frames(), b.Frames()
	if len(fa) != 3 || len(fb) != 3 || fa[1] != fb[1] || fa[2] != fb[2] {
		t.Fatalf("subscribers got %v and %v, not the same frames", tags(fa), tags(fb))
	}
}

func TestClear(t *testing.T) {
	ctx := context.Background()
	h := newHub(t, nil, nil)
	publishN(t, h, "news", 3)
	old := epochOf(t, h, "news")
	_, s := subscribe(t, h, hub.SubscribeRequest{Channel: "news"})
	st, err := h.Clear(ctx, "news")
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch == old || st.Epoch == "" || st.Offset != 0 {
		t.Fatalf("Clear = %+v, old epoch %s", st, old)
	}
	publishN(t, h, "news", 2)
	e := st.Epoch
	expectTags(t, s, "start "+old+":3", "gap "+e+":0", e+":1", e+":2")
	gap := parseEnvelope(t, s.Frames()[1].SingleEnvelope())
	if gap.Event != "crier.gap" || gap.Cursor != "news@"+e+":0" {
		t.Fatalf("gap envelope %+v", gap)
	}
	if info, _ := h.Info(ctx, "news"); info.Epoch != e || info.Offset != 2 {
		t.Fatalf("Info after clear = %+v", info)
	}
	// A cursor from before the clear resumes with a gap at the new epoch's latest.
	_, r := subscribe(t, h, hub.SubscribeRequest{Channel: "news", Since: pos(old, 2)})
	expectTags(t, r, "start "+old+":2", "gap "+e+":2")
	// Clearing a channel without subscribers works, and holds nothing afterwards.
	if _, err := h.Clear(ctx, "idle"); err != nil {
		t.Fatal(err)
	}
	if hist, err := h.History(ctx, "news", nil, 0); err != nil || len(hist.Messages) != 2 {
		t.Fatalf("history after clear: %d messages, %v", len(hist.Messages), err)
	}
}

// hookStore runs test hooks inside store calls.
type hookStore struct {
	hub.Store
	afterClear    func()
	afterAppend   func()
	beforeRead    func()
	failAppend    error
	failRead      error
	failState     error
	stateRequests atomic.Int32
}

func (s *hookStore) Clear(ctx context.Context, ch string) (hub.ChannelState, error) {
	st, err := s.Store.Clear(ctx, ch)
	if s.afterClear != nil {
		s.afterClear()
	}
	return st, err
}

func (s *hookStore) Append(ctx context.Context, b []hub.Append) ([]hub.Appended, error) {
	if s.failAppend != nil {
		return nil, s.failAppend
	}
	res, err := s.Store.Append(ctx, b)
	if s.afterAppend != nil {
		s.afterAppend()
	}
	return res, err
}

func (s *hookStore) Read(ctx context.Context, ch, epoch string, after uint64, limit int) (hub.History, error) {
	if s.beforeRead != nil {
		f := s.beforeRead
		s.beforeRead = nil
		f()
	}
	if s.failRead != nil {
		return hub.History{}, s.failRead
	}
	return s.Store.Read(ctx, ch, epoch, after, limit)
}

func (s *hookStore) State(ctx context.Context, ch string) (hub.ChannelState, error) {
	s.stateRequests.Add(1)
	if s.failState != nil {
		return hub.ChannelState{}, s.failState
	}
	return s.Store.State(ctx, ch)
}

// TestClearRacingPublish publishes into the new epoch while Clear is between the store and the
// hub: the message must reach subscribers, and the channel must not stall after it.
func TestClearRacingPublish(t *testing.T) {
	ctx := context.Background()
	st := &hookStore{Store: memory.New()}
	h := newHub(t, nil, st)
	publishN(t, h, "news", 2)
	old := epochOf(t, h, "news")
	_, s := subscribe(t, h, hub.SubscribeRequest{Channel: "news"})
	var racer sync.WaitGroup
	st.afterClear = func() {
		appended := make(chan struct{})
		st.afterAppend = func() { close(appended) }
		racer.Go(func() { publishN(t, h, "news", 1) })
		<-appended
		st.afterAppend = nil
		time.Sleep(20 * time.Millisecond) // let the racer reach Dispatch
	}
	cleared, err := h.Clear(ctx, "news")
	if err != nil {
		t.Fatal(err)
	}
	racer.Wait()
	publishN(t, h, "news", 1)
	e := cleared.Epoch
	expectTags(t, s, "start "+old+":2", "gap "+e+":0", e+":1", e+":2")
}

// TestClearDuringCatchUp clears the channel while a resuming subscriber reads history, so that
// the store answers in the new epoch and the clear's gap waits in the subscriber's backlog.
func TestClearDuringCatchUp(t *testing.T) {
	ctx := context.Background()
	st := &hookStore{Store: memory.New()}
	h := newHub(t, nil, st)
	publishN(t, h, "news", 5)
	old := epochOf(t, h, "news")
	var cleared hub.ChannelState
	st.beforeRead = func() {
		var err error
		if cleared, err = h.Clear(ctx, "news"); err != nil {
			t.Error(err)
		}
		publishN(t, h, "news", 2)
	}
	_, s := subscribe(t, h, hub.SubscribeRequest{Channel: "news", Since: pos(old, 1)})
	publishN(t, h, "news", 1)
	e := cleared.Epoch
	expectTags(t, s, "start "+old+":1", "gap "+e+":0", e+":1", e+":2", e+":3")
}

func TestStoreErrors(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	st := &hookStore{Store: memory.New()}
	h := newHub(t, nil, st)
	publishN(t, h, "news", 2)
	epoch := epochOf(t, h, "news")

	st.failAppend = boom
	if _, err := h.Publish(ctx, []hub.Publication{{Channel: "news", Data: []byte("x")}}); !errors.Is(err, boom) {
		t.Fatalf("Publish with a failing store: %v", err)
	}
	st.failAppend = nil

	st.failRead = boom
	if _, err := h.Subscribe(ctx, hub.SubscribeRequest{Channel: "news", Since: pos(epoch, 0), Sink: &recSink{}}); !errors.Is(err, boom) {
		t.Fatalf("Subscribe with a failing read: %v", err)
	}
	st.failRead = nil
	if n := h.Channels(); n != 0 {
		t.Fatalf("a failed subscribe left %d channels", n)
	}

	st.failState = boom
	if _, err := h.Subscribe(ctx, hub.SubscribeRequest{Channel: "news", Sink: &recSink{}}); !errors.Is(err, boom) {
		t.Fatalf("Subscribe with a failing state: %v", err)
	}
	st.failState = nil
	if n := h.Channels(); n != 0 {
		t.Fatalf("a failed load left %d channels", n)
	}
	// The failure is not remembered.
	_, s := subscribe(t, h, hub.SubscribeRequest{Channel: "news", Since: pos(epoch, 1)})
	expectTags(t, s, "start "+epoch+":1", epoch+":2")
}

func TestIdempotency(t *testing.T) {
	h := newHub(t, nil, nil)
	_, s := subscribe(t, h, hub.SubscribeRequest{Channel: "news"})
	first := publish(t, h, hub.Publication{Channel: "news", ContentType: "text/plain", Data: []byte("a"), IdempotencyKey: "K"})[0]
	if first.Err != nil || first.Duplicate || first.Message.Offset != 1 {
		t.Fatalf("first publish %+v", first)
	}
	again := publish(t, h,
		hub.Publication{Channel: "news", ContentType: "text/plain", Data: []byte("b"), IdempotencyKey: "K"},
		hub.Publication{Channel: "news", ContentType: "text/plain", Data: []byte("c"), IdempotencyKey: "L"},
		hub.Publication{Channel: "news", ContentType: "text/plain", Data: []byte("d"), IdempotencyKey: "L"},
		hub.Publication{Channel: "other", ContentType: "text/plain", Data: []byte("e"), IdempotencyKey: "K"},
	)
	if !again[0].Duplicate || again[0].Message.Offset != 1 || again[0].Message.Epoch != first.Message.Epoch || string(again[0].Message.Data) != "a" {
		t.Fatalf("duplicate answered %+v, want the first publish's %+v", again[0], first)
	}
	if again[1].Duplicate || again[1].Message.Offset != 2 || !again[2].Duplicate || again[2].Message.Offset != 2 {
		t.Fatalf("in-batch duplicate: %+v / %+v", again[1], again[2])
	}
	if again[3].Duplicate || again[3].Message.Offset != 1 {
		t.Fatalf("same key on another channel: %+v", again[3])
	}
	epoch := first.Message.Epoch
	expectTags(t, s, "start "+epoch+":0", epoch+":1", epoch+":2")
	if got := string(s.Frames()[2].Msg.Data); got != "c" {
		t.Fatalf("delivered %q, want c", got)
	}
}

func TestPublishValidation(t *testing.T) {
	long := strings.Repeat("x", 201)
	tests := []struct {
		name string
		pub  hub.Publication
		ok   bool
	}{
		{"plain", hub.Publication{Channel: "news"}, true},
		{"all name characters", hub.Publication{Channel: "Az09_-.:=~"}, true},
		{"longest name", hub.Publication{Channel: long[:200]}, true},
		{"custom event", hub.Publication{Channel: "news", Event: "score.update"}, true},
		{"crier without dot", hub.Publication{Channel: "news", Event: "crier"}, true},
		{"event of 100 bytes", hub.Publication{Channel: "news", Event: long[:100]}, true},
		{"ttl", hub.Publication{Channel: "news", TTL: time.Second}, true},
		{"empty channel", hub.Publication{Channel: ""}, false},
		{"name too long", hub.Publication{Channel: long}, false},
		{"space in name", hub.Publication{Channel: "a b"}, false},
		{"slash in name", hub.Publication{Channel: "a/b"}, false},
		{"at in name", hub.Publication{Channel: "a@b"}, false},
		{"comma in name", hub.Publication{Channel: "a,b"}, false},
		{"unicode name", hub.Publication{Channel: "café"}, false},
		{"reserved gap", hub.Publication{Channel: "news", Event: "crier.gap"}, false},
		{"reserved join", hub.Publication{Channel: "news", Event: "crier.join"}, false},
		{"reserved any", hub.Publication{Channel: "news", Event: "crier.mine"}, false},
		{"reserved bare prefix", hub.Publication{Channel: "news", Event: "crier."}, false},
		{"event with space", hub.Publication{Channel: "news", Event: "a b"}, false},
		{"event with quote", hub.Publication{Channel: "news", Event: `a"b`}, true}, // printable ASCII; escaped in the envelope
		{"event with newline", hub.Publication{Channel: "news", Event: "a\nb"}, false},
		{"event too long", hub.Publication{Channel: "news", Event: long[:101]}, false},
		{"non-ASCII event", hub.Publication{Channel: "news", Event: "é"}, false},
		{"negative ttl", hub.Publication{Channel: "news", TTL: -time.Second}, false},
		{"long idempotency key", hub.Publication{Channel: "news", IdempotencyKey: long}, false},
	}
	h := newHub(t, nil, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := hub.CheckPublication(&tt.pub)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, hub.ErrBadRequest)) {
				t.Fatalf("CheckPublication = %v, want ok=%v", err, tt.ok)
			}
			tt.pub.ContentType, tt.pub.Data = "text/plain", []byte("x")
			res := publish(t, h, tt.pub)
			if tt.ok != (res[0].Err == nil) || (res[0].Err != nil && !errors.Is(res[0].Err, hub.ErrBadRequest)) {
				t.Fatalf("Publish = %v, want ok=%v", res[0].Err, tt.ok)
			}
			if tt.ok {
				parseEnvelope(t, hub.NewFrame(res[0].Message).SingleEnvelope())
			}
		})
	}

	// In a batch, bad publications fail alone; the good ones get consecutive offsets.
	res := publish(t, h,
		hub.Publication{Channel: "batch", Data: []byte("1")},
		hub.Publication{Channel: "bad name"},
		hub.Publication{Channel: "batch", Data: []byte("2")},
		hub.Publication{Channel: "batch", Event: "crier.gap"},
		hub.Publication{Channel: "batch", Data: []byte("3")},
	)
	for i, want := range []uint64{1, 0, 2, 0, 3} {
		if want == 0 && !errors.Is(res[i].Err, hub.ErrBadRequest) || want != 0 && (res[i].Err != nil || res[i].Message.Offset != want) {
			t.Fatalf("batch result %d = %+v, want offset %d", i, res[i], want)
		}
	}
	if res := publish(t, h, hub.Publication{Channel: ""}); res[0].Err == nil {
		t.Fatal("a batch of only bad publications succeeded")
	}

	ctx := context.Background()
	for _, name := range []string{"", "a b", long} {
		if _, err := h.Subscribe(ctx, hub.SubscribeRequest{Channel: name, Sink: &recSink{}}); !errors.Is(err, hub.ErrBadRequest) {
			t.Errorf("Subscribe(%q) = %v", name, err)
		}
		if _, err := h.Info(ctx, name); !errors.Is(err, hub.ErrBadRequest) {
			t.Errorf("Info(%q) = %v", name, err)
		}
		if _, err := h.Presence(ctx, name); !errors.Is(err, hub.ErrBadRequest) {
			t.Errorf("Presence(%q) = %v", name, err)
		}
		if _, err := h.History(ctx, name, nil, 10); !errors.Is(err, hub.ErrBadRequest) {
			t.Errorf("History(%q) = %v", name, err)
		}
		if _, err := h.Clear(ctx, name); !errors.Is(err, hub.ErrBadRequest) {
			t.Errorf("Clear(%q) = %v", name, err)
		}
	}
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	h := newHub(t, nsConfig{"small": {HistorySize: 3}}, nil)
	publishN(t, h, "small:x", 6)
	epoch := epochOf(t, h, "small:x")
	latest, err := h.History(ctx, "small:x", nil, 2)
	if err != nil || !slices.Equal(tags(framesOf(latest.Messages)), messageRange(epoch, 5, 6)) ||
		latest.Offset != 6 || latest.Epoch != epoch || latest.Gap {
		t.Fatalf("latest 2: %+v %v", latest, err)
	}
	since, err := h.History(ctx, "small:x", pos(epoch, 1), 0)
	if err != nil || !slices.Equal(tags(framesOf(since.Messages)), messageRange(epoch, 4, 6)) || !since.Gap {
		t.Fatalf("since 1: %+v %v", since, err)
	}
}

func framesOf(ms []hub.Message) []*hub.Frame {
	out := make([]*hub.Frame, len(ms))
	for i, m := range ms {
		out[i] = hub.NewFrame(m)
	}
	return out
}

func TestPresence(t *testing.T) {
	ctx := context.Background()
	h := newHub(t, nsConfig{"room": {HistorySize: 10, Presence: true}}, nil)
	alice := hub.ClientInfo{Client: "c1", User: "alice", Transport: "ws"}
	bob := hub.ClientInfo{Client: "c2", User: "bob", Transport: "sse"}

	if _, err := h.Presence(ctx, "news"); !errors.Is(err, hub.ErrPresenceDisabled) {
		t.Fatalf("Presence on a namespace without presence: %v", err)
	}
	if got, err := h.Presence(ctx, "room:a"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Presence of an idle channel = %#v, %v", got, err)
	}
	publishN(t, h, "room:a", 2)
	epoch := epochOf(t, h, "room:a")
	a1, sa := subscribe(t, h, hub.SubscribeRequest{Channel: "room:a", Client: alice})
	a2, sa2 := subscribe(t, h, hub.SubscribeRequest{Channel: "room:a", Client: alice, Since: pos(epoch, 1)}) // alice again: no join
	b, sb := subscribe(t, h, hub.SubscribeRequest{Channel: "room:a", Client: bob})
	_, quiet := subscribe(t, h, hub.SubscribeRequest{Channel: "news", Client: bob}) // no presence here

	at := epoch + ":2"
	expectTags(t, sa, "start "+at, "join "+at, "join "+at)
	expectTags(t, sa2, "start "+epoch+":1", at, "join "+at)
	expectTags(t, sb, "start "+at, "join "+at)
	expectTags(t, quiet, "start "+epochOf(t, h, "news")+":0")

	join := parseEnvelope(t, sa.Frames()[2].SingleEnvelope())
	var who hub.ClientInfo
	if err := json.Unmarshal(join.Data, &who); err != nil || who != bob || join.Event != "crier.join" || join.Cursor != "room:a@"+at {
		t.Fatalf("join envelope %+v (%v)", join, err)
	}
	list, err := h.Presence(ctx, "room:a")
	slices.SortFunc(list, func(x, y hub.ClientInfo) int { return strings.Compare(x.Client, y.Client) })
	if err != nil || !slices.Equal(list, []hub.ClientInfo{alice, bob}) {
		t.Fatalf("Presence = %v, %v", list, err)
	}
	if info, _ := h.Info(ctx, "room:a"); info.Subscribers != 3 || info.Offset != 2 || info.Epoch != epoch {
		t.Fatalf("Info = %+v", info)
	}

	sb.Reset()
	a1.Close() // alice is still there through a2
	publishN(t, h, "room:a", 1)
	a2.Close()
	expectTags(t, sb, epoch+":3", "leave "+epoch+":3")
	leave := parseEnvelope(t, sb.Frames()[1].SingleEnvelope())
	if err := json.Unmarshal(leave.Data, &who); err != nil || who != alice || leave.Event != "crier.leave" {
		t.Fatalf("leave envelope %+v (%v)", leave, err)
	}
	if list, _ := h.Presence(ctx, "room:a"); !slices.Equal(list, []hub.ClientInfo{bob}) {
		t.Fatalf("Presence after alice left = %v", list)
	}
	b.Close()
	if list, _ := h.Presence(ctx, "room:a"); len(list) != 0 {
		t.Fatalf("Presence after everyone left = %v", list)
	}
	if info, _ := h.Info(ctx, "room:a"); info.Subscribers != 0 || info.Offset != 3 {
		t.Fatalf("Info = %+v", info)
	}
	if n := len(sa.Frames()); n != 3 {
		t.Fatalf("a closed subscription got more frames: %v", tags(sa.Frames()))
	}
}

func TestDrain(t *testing.T) {
	ctx := context.Background()
	h := newHub(t, nil, nil)
	publishN(t, h, "a", 2)
	_, sa := subscribe(t, h, hub.SubscribeRequest{Channel: "a"})
	_, sb := subscribe(t, h, hub.SubscribeRequest{Channel: "b"})
	ea, eb := epochOf(t, h, "a"), epochOf(t, h, "b")
	h.Drain(1500 * time.Millisecond)
	expectTags(t, sa, "start "+ea+":2", "reconnect "+ea+":2")
	expectTags(t, sb, "start "+eb+":0", "reconnect "+eb+":0")
	e := parseEnvelope(t, sa.Frames()[1].SingleEnvelope())
	var data struct {
		AfterMS *int64 `json:"after_ms"`
	}
	if err := json.Unmarshal(e.Data, &data); err != nil || data.AfterMS == nil || *data.AfterMS != 1500 ||
		e.Event != "crier.reconnect" || e.Cursor != "a@"+ea+":2" {
		t.Fatalf("reconnect envelope %+v (%v)", e, err)
	}
	if _, err := h.Publish(ctx, []hub.Publication{{Channel: "a", Data: []byte("x")}}); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Publish after Drain: %v", err)
	}
	if _, err := h.Subscribe(ctx, hub.SubscribeRequest{Channel: "a", Sink: &recSink{}}); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Subscribe after Drain: %v", err)
	}
	if info, _ := h.Info(ctx, "a"); info.Offset != 2 {
		t.Fatalf("a publish got through after Drain: %+v", info)
	}
}

// TestDrainRacingSubscribe: every subscription that Subscribe returns gets crier.reconnect.
func TestDrainRacingSubscribe(t *testing.T) {
	for range 50 {
		h := newHub(t, nil, nil)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var sinks []*recSink
		for i := range 8 {
			wg.Go(func() {
				s := &recSink{}
				if _, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: fmt.Sprintf("c%d", i%3), Sink: s}); err != nil {
					if !errors.Is(err, hub.ErrClosed) {
						t.Errorf("Subscribe: %v", err)
					}
					return
				}
				mu.Lock()
				sinks = append(sinks, s)
				mu.Unlock()
			})
		}
		runtime.Gosched()
		h.Drain(time.Second)
		wg.Wait()
		for _, s := range sinks {
			fs := s.Frames()
			if len(fs) != 2 || fs[1].Msg.Event != hub.EventReconnect {
				t.Fatalf("a subscription was not told to reconnect: %v", tags(fs))
			}
		}
	}
}

func TestChannelsReleased(t *testing.T) {
	h := newHub(t, nil, nil)
	var subs []*hub.Subscription
	for _, name := range []string{"a", "a", "b"} {
		sub, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: name, Sink: &recSink{}})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if n := h.Channels(); n != 2 {
		t.Fatalf("Channels = %d, want 2", n)
	}
	for _, s := range subs {
		s.Close()
		s.Close()
	}
	if n := h.Channels(); n != 0 {
		t.Fatalf("Channels = %d after closing all, want 0", n)
	}
	if got := subs[2].Channel(); got != "b" {
		t.Fatalf("Channel() = %q", got)
	}
}

// countSink counts deliveries; it is called under the channel lock, so a plain int is safe.
type countSink struct{ n int }

func (s *countSink) Deliver(*hub.Frame) { s.n++ }

// TestDispatchAllocs: fanning a frame out allocates nothing per subscriber.
func TestDispatchAllocs(t *testing.T) {
	for _, n := range []int{1, 1000} {
		h := newHub(t, nil, nil)
		sinks := make([]countSink, n)
		for i := range sinks {
			if _, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: "fan", Sink: &sinks[i]}); err != nil {
				t.Fatal(err)
			}
		}
		epoch := epochOf(t, h, "fan")
		const runs = 50
		frames := make([]*hub.Frame, runs+1)
		for i := range frames {
			frames[i] = hub.NewFrame(hub.Message{Channel: "fan", Epoch: epoch, Offset: uint64(i + 1), ContentType: "application/json", Data: []byte(`{}`)})
		}
		i := 0
		allocs := testing.AllocsPerRun(runs, func() { h.Dispatch(frames[i]); i++ })
		if allocs != 0 {
			t.Errorf("Dispatch to %d subscribers: %v allocs, want 0", n, allocs)
		}
		if sinks[n-1].n != runs+2 { // start frame, then every dispatch
			t.Errorf("last sink got %d frames, want %d", sinks[n-1].n, runs+2)
		}
	}
}
