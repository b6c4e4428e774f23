// Package storetest is the conformance suite every hub.Store implementation must pass: the
// memory store's semantics are the contract, and this suite writes them down.
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/hub"
)

// Run runs the suite. open must return a new, empty store for each call; Run closes it when the
// subtest ends.
func Run(t *testing.T, open func(t *testing.T) hub.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s hub.Store)
	}{
		{"NeverWritten", testNeverWritten},
		{"Fields", testFields},
		{"BatchOrder", testBatchOrder},
		{"ConcurrentOneChannel", testConcurrentOneChannel},
		{"ConcurrentBatchesAcrossChannels", testConcurrentBatches},
		{"RetentionSize", testRetentionSize},
		{"RetentionSizeZero", testRetentionSizeZero},
		{"RetentionAgeOnAppend", testRetentionAgeOnAppend},
		{"RetentionAgeOnRead", testRetentionAgeOnRead},
		{"TTL", testTTL},
		{"Dedup", testDedup},
		{"Clear", testClear},
		{"ClearNeverWritten", testClearNeverWritten},
		{"ReadPositions", testReadPositions},
		{"Latest", testLatest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// keep is a retention that holds everything a test writes.
var keep = hub.Retention{Size: 1 << 20}

// msg builds an Append on ch at now, kept by retention.
func msg(ch, data string) hub.Append {
	return hub.Append{Publication: hub.Publication{Channel: ch, ContentType: "text/plain", Data: []byte(data)},
		Retention: keep, Time: time.Now()}
}

func appendOK(t *testing.T, s hub.Store, batch ...hub.Append) []hub.Appended {
	t.Helper()
	res, err := s.Append(context.Background(), batch)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(res) != len(batch) {
		t.Fatalf("Append: %d results for %d appends", len(res), len(batch))
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("Append[%d]: %v", i, r.Err)
		}
	}
	return res
}

// appendN appends n messages "0".."n-1" to ch one call each, with retention r.
func appendN(t *testing.T, s hub.Store, ch string, n int, r hub.Retention) {
	t.Helper()
	for i := range n {
		a := msg(ch, fmt.Sprint(i))
		a.Retention = r
		appendOK(t, s, a)
	}
}

func state(t *testing.T, s hub.Store, ch string) hub.ChannelState {
	t.Helper()
	st, err := s.State(context.Background(), ch)
	if err != nil {
		t.Fatalf("State(%s): %v", ch, err)
	}
	return st
}

func read(t *testing.T, s hub.Store, ch, epoch string, after uint64, limit int) hub.History {
	t.Helper()
	h, err := s.Read(context.Background(), ch, epoch, after, limit)
	if err != nil {
		t.Fatalf("Read(%s, %s, %d, %d): %v", ch, epoch, after, limit, err)
	}
	return h
}

func latest(t *testing.T, s hub.Store, ch string, limit int) hub.History {
	t.Helper()
	h, err := s.Latest(context.Background(), ch, limit)
	if err != nil {
		t.Fatalf("Latest(%s, %d): %v", ch, limit, err)
	}
	return h
}

func offsets(ms []hub.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i := range ms {
		out[i] = ms[i].Offset
	}
	return out
}

// span returns the offsets from..to inclusive.
func span(from, to uint64) []uint64 {
	var out []uint64
	for o := from; o <= to; o++ {
		out = append(out, o)
	}
	return out
}

// checkHistory compares a history's position, gap flag and offsets.
func checkHistory(t *testing.T, what string, h hub.History, epoch string, last uint64, gap bool, want []uint64) {
	t.Helper()
	if h.Epoch != epoch || h.Offset != last {
		t.Errorf("%s: position %s:%d, want %s:%d", what, h.Epoch, h.Offset, epoch, last)
	}
	if h.Gap != gap {
		t.Errorf("%s: gap %v, want %v", what, h.Gap, gap)
	}
	if got := offsets(h.Messages); !slices.Equal(got, want) {
		t.Errorf("%s: offsets %v, want %v", what, got, want)
	}
	for i := range h.Messages {
		if h.Messages[i].Epoch != epoch {
			t.Errorf("%s: message %d has epoch %s, want %s", what, h.Messages[i].Offset, h.Messages[i].Epoch, epoch)
		}
	}
}

func sameMessage(t *testing.T, what string, got, want hub.Message) {
	t.Helper()
	if got.Channel != want.Channel || got.Epoch != want.Epoch || got.Offset != want.Offset ||
		!got.Time.Equal(want.Time) || got.Event != want.Event || got.ContentType != want.ContentType ||
		!bytes.Equal(got.Data, want.Data) || !got.Expires.Equal(want.Expires) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testNeverWritten(t *testing.T, s hub.Store) {
	a, b := state(t, s, "never:a"), state(t, s, "never:b")
	if a.Epoch == "" || a.Epoch != b.Epoch || a.Offset != 0 || b.Offset != 0 {
		t.Fatalf("never-written channels: %+v and %+v, want one shared epoch at offset 0", a, b)
	}
	checkHistory(t, "Read", read(t, s, "never:a", a.Epoch, 0, 0), a.Epoch, 0, false, nil)
	checkHistory(t, "Latest", latest(t, s, "never:a", 10), a.Epoch, 0, false, nil)
	res := appendOK(t, s, msg("never:a", "first"))
	if m := res[0].Message; m.Epoch != a.Epoch || m.Offset != 1 {
		t.Errorf("first publish at %s:%d, want %s:1 (the epoch readers saw)", m.Epoch, m.Offset, a.Epoch)
	}
	if got := state(t, s, "never:b"); got != b {
		t.Errorf("untouched channel moved to %+v", got)
	}
}

func testFields(t *testing.T, s hub.Store) {
	now := time.Now()
	a := hub.Append{Publication: hub.Publication{Channel: "f", Event: "update", ContentType: "application/json",
		Data: []byte(`{"x":1}`), TTL: time.Hour}, Retention: keep, Time: now}
	plain := hub.Append{Publication: hub.Publication{Channel: "f", Data: []byte{0, 1, 2, 255}},
		Retention: keep, Time: now}
	res := appendOK(t, s, a, plain)
	st := state(t, s, "f")
	want := []hub.Message{
		{Channel: "f", Epoch: st.Epoch, Offset: 1, Time: now, Event: "update", ContentType: "application/json",
			Data: []byte(`{"x":1}`), Expires: now.Add(time.Hour)},
		{Channel: "f", Epoch: st.Epoch, Offset: 2, Time: now, Data: []byte{0, 1, 2, 255}},
	}
	for i := range want {
		if res[i].Duplicate {
			t.Errorf("append %d: marked duplicate", i)
		}
		sameMessage(t, fmt.Sprintf("Append result %d", i), res[i].Message, want[i])
	}
	h := read(t, s, "f", st.Epoch, 0, 0)
	checkHistory(t, "Read", h, st.Epoch, 2, false, []uint64{1, 2})
	for i := range h.Messages {
		sameMessage(t, fmt.Sprintf("Read message %d", i), h.Messages[i], want[i])
	}
	l := latest(t, s, "f", 0)
	checkHistory(t, "Latest", l, st.Epoch, 2, false, []uint64{1, 2})
	for i := range l.Messages {
		sameMessage(t, fmt.Sprintf("Latest message %d", i), l.Messages[i], want[i])
	}
}

func testBatchOrder(t *testing.T, s hub.Store) {
	names := []string{"b:x", "b:y", "b:x", "b:z", "b:x", "b:y"}
	want := []uint64{1, 1, 2, 1, 3, 2}
	batch := make([]hub.Append, len(names))
	for i, n := range names {
		batch[i] = msg(n, fmt.Sprint(i))
	}
	res := appendOK(t, s, batch...)
	for i := range res {
		if m := res[i].Message; m.Channel != names[i] || m.Offset != want[i] {
			t.Errorf("batch[%d]: %s:%d, want %s:%d", i, m.Channel, m.Offset, names[i], want[i])
		}
	}
	h := read(t, s, "b:x", res[0].Message.Epoch, 0, 0)
	checkHistory(t, "Read b:x", h, res[0].Message.Epoch, 3, false, []uint64{1, 2, 3})
	for i, wantData := range []string{"0", "2", "4"} {
		if i < len(h.Messages) && string(h.Messages[i].Data) != wantData {
			t.Errorf("b:x offset %d holds %q, want %q", i+1, h.Messages[i].Data, wantData)
		}
	}
}

// testConcurrentOneChannel appends from many goroutines to one channel: the offsets handed out
// must be exactly 1..N, and history must hold each message at the offset its publisher was told.
func testConcurrentOneChannel(t *testing.T, s hub.Store) {
	const workers, each = 16, 40
	var mu sync.Mutex
	byOffset := make(map[uint64]string)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var prev uint64
			for i := range each {
				data := fmt.Sprintf("%d/%d", w, i)
				res, err := s.Append(context.Background(), []hub.Append{msg("hot", data)})
				if err != nil || res[0].Err != nil {
					t.Errorf("Append: %v %v", err, res)
					return
				}
				off := res[0].Message.Offset
				if off <= prev {
					t.Errorf("worker %d: offset %d after %d", w, off, prev)
				}
				prev = off
				mu.Lock()
				if old, dup := byOffset[off]; dup {
					t.Errorf("offset %d given to %q and %q", off, old, data)
				}
				byOffset[off] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := state(t, s, "hot")
	h := read(t, s, "hot", st.Epoch, 0, 0)
	checkHistory(t, "Read hot", h, st.Epoch, workers*each, false, span(1, workers*each))
	for _, m := range h.Messages {
		if string(m.Data) != byOffset[m.Offset] {
			t.Errorf("offset %d holds %q, its publisher was told %q", m.Offset, m.Data, byOffset[m.Offset])
		}
	}
}

// testConcurrentBatches sends batches spanning a shared channel and each worker's own channel.
func testConcurrentBatches(t *testing.T, s hub.Store) {
	const workers, rounds = 8, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			own := fmt.Sprintf("own:%d", w)
			for i := range rounds {
				res, err := s.Append(context.Background(), []hub.Append{
					msg("shared", own), msg(own, "a"), msg("shared", own), msg(own, "b")})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				if a, b := res[0].Message.Offset, res[2].Message.Offset; b <= a {
					t.Errorf("one batch got shared offsets %d then %d, want batch order", a, b)
				}
				if got, want := res[3].Message.Offset, uint64(2*i+2); got != want {
					t.Errorf("%s: offset %d, want %d", own, got, want)
				}
			}
		})
	}
	wg.Wait()
	st := state(t, s, "shared")
	checkHistory(t, "Read shared", read(t, s, "shared", st.Epoch, 0, 0), st.Epoch, 2*workers*rounds, false,
		span(1, 2*workers*rounds))
}

func testRetentionSize(t *testing.T, s hub.Store) {
	appendN(t, s, "size", 5, hub.Retention{Size: 3})
	st := state(t, s, "size")
	if st.Offset != 5 {
		t.Fatalf("offset %d after 5 appends", st.Offset)
	}
	checkHistory(t, "Read after 0", read(t, s, "size", st.Epoch, 0, 0), st.Epoch, 5, true, []uint64{3, 4, 5})
	checkHistory(t, "Read after 1", read(t, s, "size", st.Epoch, 1, 0), st.Epoch, 5, true, []uint64{3, 4, 5})
	checkHistory(t, "Read after 2", read(t, s, "size", st.Epoch, 2, 0), st.Epoch, 5, false, []uint64{3, 4, 5})
	checkHistory(t, "Latest 10", latest(t, s, "size", 10), st.Epoch, 5, false, []uint64{3, 4, 5})
	// A smaller size on a later append trims what an earlier one kept.
	appendN(t, s, "size", 1, hub.Retention{Size: 1})
	checkHistory(t, "Read after shrink", read(t, s, "size", st.Epoch, 4, 0), st.Epoch, 6, true, []uint64{6})
}

func testRetentionSizeZero(t *testing.T, s hub.Store) {
	appendN(t, s, "none", 1, hub.Retention{})
	appendN(t, s, "none", 1, hub.Retention{Size: -1}) // a negative size keeps none too
	st := state(t, s, "none")
	if st.Offset != 2 {
		t.Fatalf("offset %d after 2 appends keeping none", st.Offset)
	}
	checkHistory(t, "Read after 0", read(t, s, "none", st.Epoch, 0, 0), st.Epoch, 2, true, nil)
	checkHistory(t, "Read after 2", read(t, s, "none", st.Epoch, 2, 0), st.Epoch, 2, false, nil)
	res := appendOK(t, s, hub.Append{Publication: hub.Publication{Channel: "none"}, Time: time.Now()})
	if res[0].Message.Offset != 3 {
		t.Errorf("offset %d after keeping none, want 3", res[0].Message.Offset)
	}
}

// testRetentionAgeOnAppend writes old messages, then a new one whose append trims them.
func testRetentionAgeOnAppend(t *testing.T, s hub.Store) {
	now := time.Now()
	long := hub.Retention{Size: 100, Age: 3 * time.Hour}
	for i, age := range []time.Duration{150 * time.Minute, 120 * time.Minute, 30 * time.Minute} {
		a := msg("age", fmt.Sprint(i))
		a.Time, a.Retention = now.Add(-age), long
		appendOK(t, s, a)
	}
	st := state(t, s, "age")
	checkHistory(t, "Read before", read(t, s, "age", st.Epoch, 0, 0), st.Epoch, 3, false, []uint64{1, 2, 3})
	a := msg("age", "new")
	a.Retention = hub.Retention{Size: 100, Age: time.Hour}
	appendOK(t, s, a)
	checkHistory(t, "Read after 0", read(t, s, "age", st.Epoch, 0, 0), st.Epoch, 4, true, []uint64{3, 4})
	checkHistory(t, "Read after 2", read(t, s, "age", st.Epoch, 2, 0), st.Epoch, 4, false, []uint64{3, 4})
}

// testRetentionAgeOnRead checks that history past its age is not served even when no later
// append trims it: an idle channel must not hand out messages older than its history age.
func testRetentionAgeOnRead(t *testing.T, s hub.Store) {
	now := time.Now()
	r := hub.Retention{Size: 100, Age: time.Hour}
	// Each append's own trim keeps the others: they are less than an hour apart.
	for i, age := range []time.Duration{62 * time.Minute, 61 * time.Minute, 59 * time.Minute} {
		a := msg("idle", fmt.Sprint(i))
		a.Time, a.Retention = now.Add(-age), r
		appendOK(t, s, a)
	}
	st := state(t, s, "idle")
	checkHistory(t, "Read after 0", read(t, s, "idle", st.Epoch, 0, 0), st.Epoch, 3, true, []uint64{3})
	checkHistory(t, "Read after 2", read(t, s, "idle", st.Epoch, 2, 0), st.Epoch, 3, false, []uint64{3})
	checkHistory(t, "Latest", latest(t, s, "idle", 10), st.Epoch, 3, false, []uint64{3})
}

// testTTL checks that messages past their own TTL are skipped without a gap.
func testTTL(t *testing.T, s hub.Store) {
	now := time.Now()
	var batch []hub.Append
	for i, expired := range []bool{true, false, false, true, false} {
		a := msg("ttl", fmt.Sprint(i))
		a.TTL = time.Hour
		if expired {
			a.Time, a.TTL = now.Add(-time.Hour), time.Minute
		} else if i == 1 {
			a.TTL = 0
		}
		batch = append(batch, a)
	}
	appendOK(t, s, batch...)
	st := state(t, s, "ttl")
	checkHistory(t, "Read", read(t, s, "ttl", st.Epoch, 0, 0), st.Epoch, 5, false, []uint64{2, 3, 5})
	checkHistory(t, "Read limit 2", read(t, s, "ttl", st.Epoch, 0, 2), st.Epoch, 5, false, []uint64{2, 3})
	checkHistory(t, "Read after 3", read(t, s, "ttl", st.Epoch, 3, 0), st.Epoch, 5, false, []uint64{5})
	checkHistory(t, "Latest 2", latest(t, s, "ttl", 2), st.Epoch, 5, false, []uint64{3, 5})
	checkHistory(t, "Latest all", latest(t, s, "ttl", 0), st.Epoch, 5, false, []uint64{2, 3, 5})
}

func keyed(ch, data, key string, at time.Time, window time.Duration) hub.Append {
	a := msg(ch, data)
	a.IdempotencyKey, a.Time, a.DedupWindow = key, at, window
	return a
}

func testDedup(t *testing.T, s hub.Store) {
	now := time.Now()
	const w = time.Minute
	cases := []struct {
		name    string
		batches [][]hub.Append
		dup     []bool // per append, flattened over the batches
		offsets []uint64
	}{
		{"again", [][]hub.Append{{keyed("d1", "a", "k", now, w)}, {keyed("d1", "b", "k", now.Add(time.Second), w)}},
			[]bool{false, true}, []uint64{1, 1}},
		{"same batch", [][]hub.Append{{keyed("d2", "a", "k", now, w), keyed("d2", "b", "k", now, w)}},
			[]bool{false, true}, []uint64{1, 1}},
		{"other key", [][]hub.Append{{keyed("d3", "a", "k", now, w)}, {keyed("d3", "b", "j", now, w)}},
			[]bool{false, false}, []uint64{1, 2}},
		{"other channel", [][]hub.Append{{keyed("d4", "a", "k", now, w)}, {keyed("d4b", "b", "k", now, w)}},
			[]bool{false, false}, []uint64{1, 1}},
		{"window passed", [][]hub.Append{{keyed("d5", "a", "k", now, w)}, {keyed("d5", "b", "k", now.Add(w), w)}},
			[]bool{false, false}, []uint64{1, 2}},
		{"no window", [][]hub.Append{{keyed("d6", "a", "k", now, 0)}, {keyed("d6", "b", "k", now, 0)}},
			[]bool{false, false}, []uint64{1, 2}},
		{"unkeyed", [][]hub.Append{{keyed("d7", "a", "", now, w)}, {keyed("d7", "b", "", now, w)}},
			[]bool{false, false}, []uint64{1, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var res []hub.Appended
			for _, b := range tc.batches {
				res = append(res, appendOK(t, s, b...)...)
			}
			for i, r := range res {
				if r.Duplicate != tc.dup[i] || r.Message.Offset != tc.offsets[i] {
					t.Errorf("append %d: offset %d duplicate %v, want %d %v", i, r.Message.Offset, r.Duplicate,
						tc.offsets[i], tc.dup[i])
				}
				if r.Duplicate {
					sameMessage(t, "duplicate answer", r.Message, res[0].Message)
				}
			}
		})
	}
	st := state(t, s, "d1")
	checkHistory(t, "d1 history", read(t, s, "d1", st.Epoch, 0, 0), st.Epoch, 1, false, []uint64{1})
}

func testClear(t *testing.T, s hub.Store) {
	now := time.Now()
	appendOK(t, s, keyed("c", "a", "k", now, time.Hour), msg("c", "b"), msg("c", "c"), msg("other", "x"))
	old := state(t, s, "c")
	cleared, err := s.Clear(context.Background(), "c")
	if err != nil {
		t.Fatalf("Clear: %v", err)
	}
	if cleared.Epoch == "" || cleared.Epoch == old.Epoch || cleared.Offset != 0 {
		t.Fatalf("Clear gave %+v after %+v, want a new epoch at offset 0", cleared, old)
	}
	if st := state(t, s, "c"); st != cleared {
		t.Errorf("State after Clear: %+v, want %+v", st, cleared)
	}
	checkHistory(t, "Read old epoch", read(t, s, "c", old.Epoch, 3, 0), cleared.Epoch, 0, true, nil)
	checkHistory(t, "Latest", latest(t, s, "c", 0), cleared.Epoch, 0, false, nil)
	res := appendOK(t, s, keyed("c", "again", "k", now, time.Hour))
	if m := res[0].Message; res[0].Duplicate || m.Epoch != cleared.Epoch || m.Offset != 1 {
		t.Errorf("append after Clear: %s:%d duplicate %v, want %s:1, not a duplicate", m.Epoch, m.Offset,
			res[0].Duplicate, cleared.Epoch)
	}
	checkHistory(t, "Read new epoch", read(t, s, "c", cleared.Epoch, 0, 0), cleared.Epoch, 1, false, []uint64{1})
	if st := state(t, s, "other"); st.Epoch != old.Epoch || st.Offset != 1 {
		t.Errorf("other channel moved to %+v", st)
	}
}

func testClearNeverWritten(t *testing.T, s hub.Store) {
	before := state(t, s, "fresh")
	cleared, err := s.Clear(context.Background(), "fresh")
	if err != nil {
		t.Fatalf("Clear: %v", err)
	}
	if cleared.Epoch == before.Epoch || cleared.Offset != 0 {
		t.Errorf("Clear gave %+v, want a new epoch at offset 0", cleared)
	}
	if st := state(t, s, "untouched"); st.Epoch != before.Epoch {
		t.Errorf("a never-written channel moved to epoch %s, want the store-wide %s", st.Epoch, before.Epoch)
	}
}

// testReadPositions reads a channel holding 4..8 (3 trimmed) from every kind of position.
func testReadPositions(t *testing.T, s hub.Store) {
	appendN(t, s, "pos", 8, hub.Retention{Size: 5})
	ep := state(t, s, "pos").Epoch
	cases := []struct {
		name  string
		epoch string
		after uint64
		limit int
		gap   bool
		want  []uint64
	}{
		{"from start", ep, 0, 0, true, span(4, 8)},
		{"trimmed offset", ep, 2, 0, true, span(4, 8)},
		{"last trimmed", ep, 3, 0, false, span(4, 8)},
		{"middle", ep, 5, 0, false, span(6, 8)},
		{"up to date", ep, 8, 0, false, nil},
		{"future offset", ep, 9, 0, true, span(4, 8)},
		{"wrong epoch", ep + "x", 5, 0, true, span(4, 8)},
		{"empty epoch", "", 0, 0, true, span(4, 8)},
		{"limit", ep, 3, 2, false, []uint64{4, 5}},
		{"limit with gap", ep, 0, 2, true, []uint64{4, 5}},
		{"limit past end", ep, 6, 10, false, []uint64{7, 8}},
		{"negative limit", ep, 6, -1, false, []uint64{7, 8}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkHistory(t, "Read", read(t, s, "pos", tc.epoch, tc.after, tc.limit), ep, 8, tc.gap, tc.want)
		})
	}
}

func testLatest(t *testing.T, s hub.Store) {
	appendN(t, s, "last", 6, hub.Retention{Size: 4})
	ep := state(t, s, "last").Epoch
	for _, tc := range []struct {
		limit int
		want  []uint64
	}{{1, []uint64{6}}, {3, span(4, 6)}, {4, span(3, 6)}, {10, span(3, 6)}, {0, span(3, 6)}} {
		checkHistory(t, fmt.Sprintf("Latest %d", tc.limit), latest(t, s, "last", tc.limit), ep, 6, false, tc.want)
	}
}

// BenchAppendParallel measures acknowledged publishes per second from publishers goroutines,
// each appending one 100-byte message per call to one of channels channels, with the default
// namespace's retention.
func BenchAppendParallel(b *testing.B, s hub.Store, publishers, channels int) {
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprintf("bench:%d", i)
	}
	data := bytes.Repeat([]byte("x"), 100)
	r := hub.Retention{Size: 1000, Age: 24 * time.Hour}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			batch := make([]hub.Append, 1)
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				batch[0] = hub.Append{Publication: hub.Publication{Channel: names[(int(i)+p)%channels],
					ContentType: "text/plain", Data: data}, Retention: r, Time: time.Now()}
				if _, err := s.Append(context.Background(), batch); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publishes/s")
}
