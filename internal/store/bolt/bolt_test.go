package bolt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/storetest"
)

func open(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) hub.Store { return open(t, t.TempDir(), Options{}) })
}

// TestConformanceMigrating runs the suite with every commit migrating the journal, so that
// reads find their messages in msgs.
func TestConformanceMigrating(t *testing.T) {
	storetest.Run(t, func(t *testing.T) hub.Store { return open(t, t.TempDir(), Options{journalMax: 1}) })
}

var keepAll = hub.Retention{Size: 1 << 20}

func pub(ch, data, key string) hub.Append {
	return hub.Append{Publication: hub.Publication{Channel: ch, Data: []byte(data), IdempotencyKey: key},
		Retention: keepAll, Time: time.Now(), DedupWindow: time.Hour}
}

func appendOne(t testing.TB, s hub.Store, a hub.Append) hub.Appended {
	t.Helper()
	res, err := s.Append(context.Background(), []hub.Append{a})
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if res[0].Err != nil {
		t.Fatalf("Append: %v", res[0].Err)
	}
	return res[0]
}

// TestRestart closes a store written from many goroutines and checks that reopening it keeps
// epochs, history, offsets and idempotency keys.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	storeEpoch := mustState(t, s, "never").Epoch
	first := appendOne(t, s, pub("r", "keyed", "k"))
	var n atomic.Int64
	n.Store(1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := n.Add(1); i <= 1000; i = n.Add(1) {
				if _, err := s.Append(context.Background(), []hub.Append{pub("r", strconv.FormatInt(i, 10), "")}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	before := mustState(t, s, "r")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir, Options{})
	defer s.Close()
	if st := mustState(t, s, "never"); st.Epoch != storeEpoch {
		t.Errorf("store epoch %s after restart, was %s", st.Epoch, storeEpoch)
	}
	if after := mustState(t, s, "r"); after != before || after.Offset != 1000 {
		t.Fatalf("state %+v after restart, was %+v (want offset 1000)", after, before)
	}
	h, err := s.Read(context.Background(), "r", before.Epoch, 0, 0)
	if err != nil || h.Gap || len(h.Messages) != 1000 {
		t.Fatalf("Read after restart: %d messages, gap %v, err %v; want 1000", len(h.Messages), h.Gap, err)
	}
	for i, m := range h.Messages {
		if m.Offset != uint64(i+1) {
			t.Fatalf("message %d has offset %d", i, m.Offset)
		}
	}
	if dup := appendOne(t, s, pub("r", "again", "k")); !dup.Duplicate || dup.Message.Offset != first.Message.Offset {
		t.Errorf("idempotency key forgotten on restart: %+v", dup)
	}
	if next := appendOne(t, s, pub("r", "next", "")); next.Message.Offset != 1001 || next.Message.Epoch != before.Epoch {
		t.Errorf("next publish at %s:%d, want %s:1001", next.Message.Epoch, next.Message.Offset, before.Epoch)
	}
}

func mustState(t testing.TB, s hub.Store, ch string) hub.ChannelState {
	t.Helper()
	st, err := s.State(context.Background(), ch)
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	return st
}

const helperEnv = "CRIER_BOLT_CRASH_DIR"

// TestHelperProcess is the child of TestCrash: it publishes from 32 goroutines and prints
// "EPOCH OFFSET" for each acknowledged publish until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("the child process of TestCrash")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	for range 32 {
		go func() {
			for {
				res, err := s.Append(context.Background(), []hub.Append{pub("crash", "payload", "")})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Printf("%s %d\n", res[0].Message.Epoch, res[0].Message.Offset)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Minute) // the parent kills it long before
	os.Exit(4)
}

// TestCrash kills a publishing process with SIGKILL and checks that every publish it
// acknowledged is in history when the store is reopened.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	epoch, acked := readAcks(out, 1000)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	_ = cmd.Wait() // killed: the error says so
	if len(acked) < 1000 {
		t.Fatalf("child acknowledged %d publishes before ending; stderr:\n%s", len(acked), stderr.String())
	}

	s := open(t, dir, Options{})
	defer s.Close()
	st := mustState(t, s, "crash")
	if st.Epoch != epoch {
		t.Fatalf("epoch %s after the crash, the child published in %s", st.Epoch, epoch)
	}
	h, err := s.Read(context.Background(), "crash", epoch, 0, 0)
	if err != nil || h.Gap {
		t.Fatalf("Read: gap %v, err %v", h.Gap, err)
	}
	held := make(map[uint64]bool, len(h.Messages))
	for i, m := range h.Messages {
		if m.Offset != uint64(i+1) {
			t.Fatalf("history has offset %d at %d: not gap-free", m.Offset, i)
		}
		held[m.Offset] = true
	}
	for off := range acked {
		if !held[off] {
			t.Errorf("acknowledged offset %d lost (history holds 1..%d)", off, st.Offset)
		}
	}
	if next := appendOne(t, s, pub("crash", "after", "")); next.Message.Offset != st.Offset+1 ||
		next.Message.Epoch != epoch {
		t.Errorf("next publish at %s:%d, want %s:%d", next.Message.Epoch, next.Message.Offset, epoch, st.Offset+1)
	}
}

// readAcks reads up to n "EPOCH OFFSET" lines.
func readAcks(r io.Reader, n int) (string, map[uint64]bool) {
	var epoch string
	acked := make(map[uint64]bool, n)
	sc := bufio.NewScanner(r)
	for len(acked) < n && sc.Scan() {
		ep, offStr, ok := strings.Cut(sc.Text(), " ")
		off, err := strconv.ParseUint(offStr, 10, 64)
		if !ok || err != nil {
			continue // not an ack: the test framework's own output
		}
		epoch = ep
		acked[off] = true
	}
	return epoch, acked
}

// count returns how many keys of bucket start with prefix.
func count(t *testing.T, s *Store, bucket []byte, prefix string) int {
	t.Helper()
	n := 0
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, _ := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// stored returns how many messages of channels starting with prefix are stored, in msgs or in
// the journal.
func stored(t *testing.T, s *Store, prefix string) int {
	t.Helper()
	n := count(t, s, bucketMsgs, prefix)
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketJournal).ForEach(func(_, v []byte) error {
			if ch, _, _, ok := splitJournal(v); ok && strings.HasPrefix(string(ch)+"\x00", prefix) {
				n++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMigration reads a channel whose history spans msgs and the journal, trimmed by size,
// before and after a restart.
func TestMigration(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{journalMax: 130})
	for range 30 {
		var batch []hub.Append
		for range 10 {
			a, noise := pub("mig", "x", ""), pub("other", "x", "")
			a.Retention = hub.Retention{Size: 250}
			batch = append(batch, a, noise)
		}
		if _, err := s.Append(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		err := s.db.View(func(tx *bbolt.Tx) error {
			v, err := s.readView(tx, "mig")
			if err == nil && (v.m.migrated == 0 || len(v.journal) == 0) {
				t.Errorf("history not split between msgs (through %d) and journal (%d)", v.m.migrated, len(v.journal))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		ep := mustState(t, s, "mig").Epoch
		for _, tc := range []struct {
			after      uint64
			limit      int
			gap        bool
			first, end uint64
		}{{0, 0, true, 51, 300}, {120, 200, false, 121, 300}, {270, 20, false, 271, 290}} {
			h, err := s.Read(context.Background(), "mig", ep, tc.after, tc.limit)
			if err != nil || h.Gap != tc.gap || !dense(h.Messages, tc.first, tc.end) {
				t.Errorf("Read after %d limit %d: gap %v, %d messages from %v, err %v; want gap %v, %d..%d",
					tc.after, tc.limit, h.Gap, len(h.Messages), first(h.Messages), err, tc.gap, tc.first, tc.end)
			}
		}
		if h, err := s.Latest(context.Background(), "mig", 70); err != nil || !dense(h.Messages, 231, 300) {
			t.Errorf("Latest 70: %d messages from %v, err %v; want 231..300", len(h.Messages), first(h.Messages), err)
		}
		if n := stored(t, s, "mig\x00"); n > 250+deleteChunk {
			t.Errorf("%d messages stored, retention keeps 250", n)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{journalMax: 130})
	defer s.Close()
	check(s)
	if _, err := s.Clear(context.Background(), "mig"); err != nil {
		t.Fatal(err)
	}
	if n := stored(t, s, "mig\x00"); n != 0 {
		t.Errorf("%d messages stored after Clear", n)
	}
	if next := appendOne(t, s, pub("mig", "x", "")); next.Message.Offset != 1 {
		t.Errorf("offset %d after Clear, want 1", next.Message.Offset)
	}
}

// dense reports whether ms holds exactly the offsets from..to.
func dense(ms []hub.Message, from, to uint64) bool {
	if uint64(len(ms)) != to-from+1 {
		return false
	}
	for i, m := range ms {
		if m.Offset != from+uint64(i) {
			return false
		}
	}
	return true
}

func first(ms []hub.Message) any {
	if len(ms) == 0 {
		return "none"
	}
	return ms[0].Offset
}

// TestSweep checks that the sweep deletes messages past their TTL or history age and expired
// idempotency keys, over more entries and channels than one sweep transaction handles.
func TestSweep(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	past := time.Now().Add(-2 * time.Hour)
	const many = sweepChunk + 100
	var batch []hub.Append
	for i := range many {
		expired := pub("ttl", "x", "")
		expired.Time, expired.TTL = past, time.Minute
		aged := pub(fmt.Sprintf("age:%d", i), "x", "")
		aged.Time, aged.Retention = past, hub.Retention{Size: 10, Age: time.Hour}
		batch = append(batch, expired, aged)
	}
	for i := range 10 {
		forgotten := pub("keys", "x", fmt.Sprint(i))
		forgotten.Time, forgotten.DedupWindow = past, time.Minute
		batch = append(batch, forgotten)
	}
	live := pub("ttl", "live", "kept")
	live.TTL = time.Hour
	batch = append(batch, live)
	if _, err := s.Append(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if err := s.sweep(time.Now()); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if n := stored(t, s, "ttl\x00"); n != 1 {
		t.Errorf("%d messages left on ttl, want the live one", n)
	}
	if n := stored(t, s, "age:"); n != 0 {
		t.Errorf("%d messages past their history age left", n)
	}
	if n := count(t, s, bucketDedup, ""); n != 1 {
		t.Errorf("%d idempotency keys left, want the live one", n)
	}
	if n := count(t, s, bucketExp, ""); n != 2 {
		t.Errorf("%d expiry entries left, want the live message's and key's", n)
	}
	if st := mustState(t, s, "ttl"); st.Offset != many+1 {
		t.Errorf("ttl offset %d after the sweep, want %d", st.Offset, many+1)
	}
	if dup := appendOne(t, s, pub("ttl", "again", "kept")); !dup.Duplicate {
		t.Error("live idempotency key swept")
	}
}

// TestSweepLoop checks that the background sweep runs by itself.
func TestSweepLoop(t *testing.T) {
	s := open(t, t.TempDir(), Options{SweepInterval: 10 * time.Millisecond})
	defer s.Close()
	a := pub("ttl", "x", "")
	a.Time, a.TTL = time.Now().Add(-time.Hour), time.Minute
	appendOne(t, s, a)
	deadline := time.Now().Add(5 * time.Second)
	if stored(t, s, "ttl\x00") != 1 {
		t.Fatal("appended message not stored")
	}
	for stored(t, s, "ttl\x00") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired message still stored after 5 s of sweeping every 10 ms")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCommitFailure checks that a failed commit fails its callers and leaves the offsets where
// the disk has them.
func TestCommitFailure(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxSize: 1 << 20})
	defer s.Close()
	appendOne(t, s, pub("f", "small", ""))
	_, err := s.Append(context.Background(), []hub.Append{pub("f", strings.Repeat("x", 4<<20), "")})
	if !errors.Is(err, berrors.ErrMaxSizeReached) {
		t.Fatalf("Append past MaxSize: %v, want ErrMaxSizeReached", err)
	}
	if st := mustState(t, s, "f"); st.Offset != 1 {
		t.Errorf("offset %d after a failed commit, want 1", st.Offset)
	}
	if next := appendOne(t, s, pub("f", "small", "")); next.Message.Offset != 2 {
		t.Errorf("offset %d after a failed commit, want 2", next.Message.Offset)
	}
}

func TestBadKeys(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	res, err := s.Append(context.Background(), []hub.Append{pub("a\x00b", "x", ""), pub("ok", "x", strings.Repeat("k", bbolt.MaxKeySize))})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !errors.Is(r.Err, hub.ErrBadRequest) {
			t.Errorf("append %d: %v, want ErrBadRequest", i, r.Err)
		}
	}
}

func TestContext(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, []hub.Append{pub("c", "x", "")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a canceled context: %v", err)
	}
	if _, err := s.Clear(ctx, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("Clear with a canceled context: %v", err)
	}
}

// TestClose closes the store under publishers: each gets success or ErrClosed, none hangs.
func TestClose(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				_, err := s.Append(context.Background(), []hub.Append{pub("c", "x", "")})
				if err != nil {
					if !errors.Is(err, hub.ErrClosed) {
						t.Errorf("Append during Close: %v, want ErrClosed", err)
					}
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := context.Background()
	if _, err := s.Read(ctx, "c", "", 0, 0); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := s.Clear(ctx, "c"); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Clear after Close: %v", err)
	}
}

func BenchmarkAppendParallel64(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	defer s.Close()
	storetest.BenchAppendParallel(b, s, 64, 100)
}
