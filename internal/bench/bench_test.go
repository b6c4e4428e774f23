//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestMain also lets the test binary stand in for the pieces of a manual
// measurement of the generator's own cost, each in its own process:
//
//	go test -c -o /tmp/bench.test ./internal/bench
//	CRIER_BENCH_FAKE_SERVER=127.0.0.1:8089 /tmp/bench.test &
//	CRIER_BENCH_ARGS="--server http://127.0.0.1:8089 --subscribers 1000 ..." /tmp/bench.test
func TestMain(m *testing.M) {
	if addr := os.Getenv("CRIER_BENCH_FAKE_SERVER"); addr != "" {
		fs := newFakeServer(fault{})
		fs.heartbeat = 15 * time.Second
		fmt.Fprintln(os.Stderr, "fake Crier on", addr)
		if err := http.ListenAndServe(addr, fs); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if args := os.Getenv("CRIER_BENCH_ARGS"); args != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		err := Main(ctx, strings.Fields(args), os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The floor's writer is a child process of the bench's own binary: this one (see
	// floorCommand).
	os.Setenv("CRIER_BENCH_TEST_CHILD", "1")
	os.Exit(m.Run())
}

// fault is what the fake server is told to get wrong: on the channel named
// channel, the message at offset.
type fault struct {
	kind    string // "", "lose", "dup", "reorder", "fragment" (benign: WebSocket fragments), "kick"
	channel string
	offset  uint64
}

// fakeServer speaks enough of Crier's wire protocol (SPEC §4, §5) for the
// generator: publishes, and WebSocket and SSE subscribers with the envelope
// of SPEC §2. A subscriber has a goroutine that writes what queues up for it,
// several messages per write when they wait.
type fakeServer struct {
	fault     fault
	mu        sync.Mutex
	subs      map[string]map[*fakeSub]bool
	offsets   map[string]uint64
	held      []byte // the message held back by a "reorder" fault
	pongs     atomic.Int64
	overflow  atomic.Int64
	heartbeat time.Duration // SSE comment interval
}

type fakeSub struct {
	q    chan []byte
	done chan struct{}
	once sync.Once
}

func (s *fakeSub) kick() { s.once.Do(func() { close(s.done) }) }

func newFakeServer(f fault) *fakeServer {
	return &fakeServer{fault: f, subs: map[string]map[*fakeSub]bool{}, offsets: map[string]uint64{},
		heartbeat: 100 * time.Millisecond}
}

func (fs *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/channels/"):
		fs.publish(w, r, strings.TrimPrefix(r.URL.Path, "/v1/channels/"))
	case r.URL.Path == "/v1/ws":
		fs.serveWS(w, r)
	case r.URL.Path == "/v1/sse":
		fs.serveSSE(w, r)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"code":"not_found","message":"no such endpoint"}}`)
	}
}

func (fs *fakeServer) subscribe(s *fakeSub, channels ...string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, ch := range channels {
		if fs.subs[ch] == nil {
			fs.subs[ch] = map[*fakeSub]bool{}
		}
		fs.subs[ch][s] = true
	}
}

func (fs *fakeServer) unsubscribe(s *fakeSub) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, m := range fs.subs {
		delete(m, s)
	}
}

func (fs *fakeServer) publish(w http.ResponseWriter, r *http.Request, ch string) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	fs.mu.Lock()
	fs.offsets[ch]++
	off := fs.offsets[ch]
	cursor := ch + "@e1:" + strconv.FormatUint(off, 10)
	env := fmt.Appendf(nil, `{"channel":%q,"offset":%d,"epoch":"e1","time":%q,"event":"message","data":%s,"cursor":%q}`,
		ch, off, time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), body, cursor)
	send := func(env []byte) {
		for s := range fs.subs[ch] {
			select {
			case s.q <- env:
			default:
				fs.overflow.Add(1)
			}
		}
	}
	f := fs.fault
	hit := ch == f.channel && off == f.offset
	switch {
	case hit && f.kind == "lose":
	case hit && f.kind == "dup":
		send(env)
		send(env)
	case hit && f.kind == "reorder":
		fs.held = env
	case hit && f.kind == "kick":
		for s := range fs.subs[ch] {
			s.kick()
		}
	case ch == f.channel && off == f.offset+1 && fs.held != nil:
		send(env)
		send(fs.held)
		fs.held = nil
	default:
		send(env)
	}
	fs.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"channel":%q,"offset":%d,"epoch":"e1","cursor":%q}`, ch, off, cursor)
}

func (fs *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	s := &fakeSub{q: make(chan []byte, 1024), done: make(chan struct{})}
	fs.subscribe(s, r.URL.Query()["channel"]...) // before the 101: live from then on
	defer fs.unsubscribe(s)
	nc, _, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer nc.Close()
	var wmu sync.Mutex
	bw := bufio.NewWriterSize(nc, 32<<10)
	writeFrame := func(f ws.Frame) error {
		wmu.Lock()
		defer wmu.Unlock()
		if err := ws.WriteFrame(bw, f); err != nil {
			return err
		}
		return bw.Flush()
	}
	if err := writeFrame(ws.NewPingFrame([]byte("hb"))); err != nil {
		return
	}
	go func() { // reader: pongs and commands
		defer s.kick()
		for {
			h, err := ws.ReadHeader(nc)
			if err != nil {
				return
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(nc, p); err != nil {
				return
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPong:
				fs.pongs.Add(1)
			case ws.OpClose:
				return
			case ws.OpText:
				var cmd struct {
					ID      int    `json:"id"`
					Op      string `json:"op"`
					Channel string `json:"channel"`
				}
				if json.Unmarshal(p, &cmd) != nil || cmd.Op != "subscribe" {
					continue
				}
				fs.subscribe(s, cmd.Channel)
				reply := fmt.Appendf(nil, `{"id":%d,"ok":true,"channel":%q,"epoch":"e1","offset":0}`, cmd.ID, cmd.Channel)
				if writeFrame(ws.NewTextFrame(reply)) != nil {
					return
				}
			}
		}
	}()
	for {
		select {
		case <-s.done:
			return
		case env := <-s.q:
			wmu.Lock()
			for {
				var err error
				if fs.fault.kind == "fragment" && len(env) > 10 {
					err = ws.WriteFrame(bw, ws.NewFrame(ws.OpText, false, env[:10]))
					if err == nil {
						err = ws.WriteFrame(bw, ws.NewFrame(ws.OpContinuation, true, env[10:]))
					}
				} else {
					err = ws.WriteFrame(bw, ws.NewTextFrame(env))
				}
				if err != nil {
					wmu.Unlock()
					return
				}
				if len(s.q) == 0 {
					break
				}
				env = <-s.q
			}
			err := bw.Flush()
			wmu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

func (fs *fakeServer) serveSSE(w http.ResponseWriter, r *http.Request) {
	s := &fakeSub{q: make(chan []byte, 1024), done: make(chan struct{})}
	channels := r.URL.Query()["channel"]
	fs.subscribe(s, channels...)
	defer fs.unsubscribe(s)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl := w.(http.Flusher)
	// retry: first, then a cursor-only frame, as Crier does at subscribe.
	fmt.Fprintf(w, "retry: 1000\n\nid: %s@e1:0\n\n", channels[0])
	fl.Flush()
	hb := time.NewTicker(fs.heartbeat)
	defer hb.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-hb.C:
			io.WriteString(w, ": heartbeat\n\n")
			fl.Flush()
		case env := <-s.q:
			for {
				cur := env[bytes.LastIndex(env, []byte(`"cursor":"`))+10 : len(env)-2]
				fmt.Fprintf(w, "id: %s\nevent: message\ndata: %s\n\n", cur, env)
				if len(s.q) == 0 {
					break
				}
				env = <-s.q
			}
			fl.Flush()
		}
	}
}

// benchOpts are the options of a short run against srv.
func benchOpts(srv *httptest.Server, transport string) *options {
	o, err := parseFlags([]string{
		"--server", srv.URL, "--transport", transport, "--subscribers", "50", "--channels", "5",
		"--rate", "200", "--duration", "1s", "--warmup", "0", "--grace", "500ms", "--settle", "0",
		"--channel-prefix", "t.", "--source-ips", "2", "--pid", strconv.Itoa(os.Getpid()),
		"--floor", "0", "--sched", "normal",
	}, io.Discard)
	if err != nil {
		panic(err)
	}
	return o
}

func TestBenchAgainstFakeServer(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		fault     fault
		wsOp      bool
		wantLost  uint64
		wantDup   uint64
		wantOOO   uint64
		wantDrops uint64
		lostSome  bool // a loss of unknown size
	}{
		{
			name:      "ws",
			transport: "ws",
		},
		{
			name:      "sse",
			transport: "sse",
		},
		{
			name:      "ws subscribe command, fragmented frames",
			transport: "ws",
			wsOp:      true,
			fault:     fault{kind: "fragment"},
		},
		{
			name:      "ws lost",
			transport: "ws",
			fault:     fault{kind: "lose", channel: "t.0", offset: 3},
			wantLost:  10,
		},
		{
			name:      "sse lost",
			transport: "sse",
			fault:     fault{kind: "lose", channel: "t.1", offset: 5},
			wantLost:  10,
		},
		{
			name:      "ws duplicated",
			transport: "ws",
			fault:     fault{kind: "dup", channel: "t.2", offset: 3},
			wantDup:   10,
		},
		{
			name:      "sse duplicated",
			transport: "sse",
			fault:     fault{kind: "dup", channel: "t.0", offset: 1},
			wantDup:   10,
		},
		{
			name:      "ws out of order",
			transport: "ws",
			fault:     fault{kind: "reorder", channel: "t.3", offset: 3},
			wantOOO:   10,
		},
		{
			name:      "sse out of order",
			transport: "sse",
			fault:     fault{kind: "reorder", channel: "t.4", offset: 2},
			wantOOO:   10,
		},
		{
			name:      "sse subscribers cut off",
			transport: "sse",
			fault:     fault{kind: "kick", channel: "t.0", offset: 4},
			wantDrops: 10,
			lostSome:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeServer(tt.fault)
			srv := httptest.NewServer(fs)
			defer srv.Close()
			o := benchOpts(srv, tt.transport)
			if tt.wsOp {
				o.wsSubscribe = "op"
			}
			if tt.fault.channel != "" {
				o.duration, o.grace = 500*time.Millisecond, 300*time.Millisecond
			}
			rep, err := run(context.Background(), o)
			if err != nil {
				t.Fatalf(
					"run: %v",
					err)
			}
			var out bytes.Buffer
			rep.print(&out, false)
			t.Logf("%s", out.String())
			if n := fs.overflow.Load(); n != 0 {
				t.Fatalf(
					"fake server queues overflowed %d times",
					n)
			}
			if rep.Published < 50 {
				t.Errorf(
					"published %d, want at least 50",
					rep.Published)
			}
			if tt.lostSome && rep.Lost > 0 {
				tt.wantLost = rep.Lost
			}
			if rep.Lost != tt.wantLost || rep.Duplicated != tt.wantDup || rep.OutOfOrder != tt.wantOOO ||
				rep.Disconnected != tt.wantDrops || rep.Unexpected != 0 {
				t.Errorf(
					"lost/dup/ooo/disconnected/unexpected = %d/%d/%d/%d/%d, want %d/%d/%d/%d/0",
					rep.Lost, rep.Duplicated, rep.OutOfOrder, rep.Disconnected, rep.Unexpected,
					tt.wantLost, tt.wantDup, tt.wantOOO, tt.wantDrops)
			}
			// Every subscriber of a channel gets each of its messages once,
			// give or take what the fault did.
			want := 10*rep.Published + tt.wantDup
			if tt.wantLost > 0 {
				want -= tt.wantLost
			}
			if tt.wantDrops == 0 && (rep.Expected != 10*rep.Published || rep.Deliveries != want) {
				t.Errorf(
					"deliveries %d, expected %d, published %d: want %d deliveries of %d expected",
					rep.Deliveries, rep.Expected, rep.Published, want, 10*rep.Published)
			}
			if rep.LatencySamples == 0 || rep.LatencyP50Ms <= 0 || rep.LatencyMaxMs < rep.LatencyP99Ms {
				t.Errorf(
					"latency: %d samples, p50 %v ms, p99 %v ms, max %v ms",
					rep.LatencySamples, rep.LatencyP50Ms, rep.LatencyP99Ms, rep.LatencyMaxMs)
			}
			if rep.ServerRSSPerConnKiB == nil || rep.ServerCPUSPerMillion == nil || rep.BenchCPUUsPerDelivery == nil {
				t.Errorf(
					"missing figures: rss/conn %v, server cpu %v, bench cpu %v",
					rep.ServerRSSPerConnKiB, rep.ServerCPUSPerMillion, rep.BenchCPUUsPerDelivery)
			}
			if tt.transport == "ws" && fs.pongs.Load() != 50 {
				t.Errorf(
					"server got %d pongs, want 50",
					fs.pongs.Load())
			}
			failed := tt.wantLost+tt.wantDup+tt.wantOOO+tt.wantDrops > 0
			if gotErr := rep.verdict() != nil; gotErr != failed {
				t.Errorf(
					"verdict error %v, want failure %v",
					rep.verdict(), failed)
			}
		})
	}
}

// TestMainOutput runs the command as CI does: a table, then one JSON line,
// and an error exactly when messages went wrong.
// TestProcCPU: a process that spins in user space shows it there, not in the kernel.
func TestProcCPU(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x, after := uint64(1), before
	for deadline := time.Now().Add(20 * time.Second); after.user-before.user < 200*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatalf("20 s of spinning showed %v of user CPU", after.user-before.user)
		}
		for range 1000000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if after, err = procCPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if system := after.system - before.system; system > (after.user-before.user)/2 {
		t.Errorf("spinning showed %v in the kernel against %v in user space (x %d)", system, after.user-before.user, x)
	}
	if after.total() != after.user+after.system {
		t.Errorf("total %v is not user %v + system %v", after.total(), after.user, after.system)
	}
}

func TestMainOutput(t *testing.T) {
	t.Parallel()
	for _, f := range []fault{{}, {kind: "dup", channel: "t.0", offset: 2}} {
		fs := newFakeServer(f)
		srv := httptest.NewServer(fs)
		args := []string{"--server", srv.URL, "--transport", "sse", "--subscribers", "20", "--channels", "2",
			"--rate", "100", "--duration", "500ms", "--warmup", "100ms", "--grace", "500ms", "--channel-prefix", "t."}
		var out bytes.Buffer
		err := Main(context.Background(), args, &out)
		srv.Close()
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) < 5 {
			t.Fatalf(
				"output too short:\n%s",
				out.String())
		}
		var rep map[string]any
		if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); jerr != nil {
			t.Fatalf(
				"last line is not JSON: %v\n%s",
				jerr, out.String())
		}
		for _, k := range []string{"connect_rate", "server_rss_per_conn_kib", "server_cpu_s_per_million",
			"deliveries_per_s", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms",
			"lost", "duplicated", "out_of_order", "bench_cpu_us_per_delivery", "server_cpu_user_share", "ok"} {
			if _, ok := rep[k]; !ok {
				t.Errorf(
					"JSON line has no %q",
					k)
			}
		}
		if (err != nil) != (f.kind != "") || rep["ok"] != (f.kind == "") {
			t.Errorf(
				"fault %q: Main error %v, ok %v",
				f.kind, err, rep["ok"])
		}
		for _, l := range lines[:len(lines)-1] {
			if strings.HasPrefix(l, "{") {
				t.Errorf(
					"more than one JSON line:\n%s",
					out.String())
			}
		}
	}
}

func TestIdle(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(fault{})
	srv := httptest.NewServer(fs)
	defer srv.Close()
	o := benchOpts(srv, "ws")
	o.idle = 300 * time.Millisecond
	rep, err := run(context.Background(), o)
	if err != nil {
		t.Fatalf(
			"run: %v",
			err)
	}
	if rep.ServerRSSIdleKiB == nil || rep.ServerRSSPerConnKiB == nil || rep.Published != 0 || rep.verdict() != nil {
		t.Errorf(
			"idle report: rss after idle %v, per conn %v, published %d, verdict %v",
			rep.ServerRSSIdleKiB, rep.ServerRSSPerConnKiB, rep.Published, rep.verdict())
	}
}

func TestConnectFailure(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":{"code":"forbidden","message":"no subscribing here"}}`)
	}))
	defer srv.Close()
	for _, tr := range []string{"ws", "sse"} {
		o := benchOpts(srv, tr)
		_, err := run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "no subscribing here") {
			t.Errorf(
				"%s: error %v, want the server's message",
				tr, err)
		}
	}
	// Nobody listening: refused, retried, then a clear error.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	o, _ := parseFlags([]string{"--server", "http://" + addr, "--subscribers", "1", "--timeout", "1s"}, io.Discard)
	if _, err := run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf(
			"closed port: error %v",
			err)
	}
}

func TestFileLimit(t *testing.T) {
	err := raiseFileLimit(1 << 40)
	if err == nil || !strings.Contains(err.Error(), "RLIMIT_NOFILE") {
		t.Errorf(
			"error %v, want one about RLIMIT_NOFILE",
			err)
	}
	if err := raiseFileLimit(100); err != nil {
		t.Errorf(
			"100 files: %v",
			err)
	}
}

func TestFloor(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := Main(context.Background(), []string{"floor", "--writes", "20000"}, &out); err != nil {
		t.Fatalf(
			"floor: %v",
			err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var r FloorReport
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf(
			"last line: %v\n%s",
			err, out.String())
	}
	if r.Stream.Writes != 20000 || r.Fanout.Conns != 100 || r.FloorUs <= 0 || r.FloorUs != r.Fanout.CPUUs ||
		r.Stream.WriterUs <= 0 || r.Fanout.ReaderUs <= 0 || r.Stream.Reads == 0 {
		t.Errorf(
			"floor report %+v",
			r)
	}
	t.Logf("%s", out.String())
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--transport", "carrier-pigeon"},
		{"--channels", "0"},
		{"--ws-subscribe", "maybe"},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf(
				"%q: no error",
				args)
		}
	}
}

// TestFloorInRun runs a scenario with the floor measured after it: a child process writes to as
// many connections as the scenario had, read by the generator's reactors, and its CPU per write
// is the run's floor.
func TestFloorInRun(t *testing.T) {
	fs := newFakeServer(fault{})
	srv := httptest.NewServer(fs)
	defer srv.Close()
	o := benchOpts(srv, "ws")
	o.floor, o.sched = time.Second, "batch"
	rep, err := run(context.Background(), o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	f := rep.Floor
	if f == nil || rep.ServerVsFloor == nil {
		t.Fatalf("no floor measured: %+v", rep)
	}
	if f.Conns != o.subscribers || f.Rounds < 3 || f.Size < 20 || f.WriterUs <= 0 || f.ReaderUs <= 0 {
		t.Fatalf("floor %+v, want %d connections, at least 3 rounds, the wire size of an envelope, CPU figures", f, o.subscribers)
	}
	if rep.Sched != "batch" {
		t.Fatalf("sched %q", rep.Sched)
	}
	if err := rep.verdict(); err != nil {
		t.Fatal(err)
	}
}

// TestFloorWriterArguments checks the child's refusal of bad arguments.
func TestFloorWriterArguments(t *testing.T) {
	for _, args := range [][]string{{"--conns", "0"}, {"--size", "0"}, {"--rounds", "0"}, {"--size", "70000"}} {
		if err := floorWriterMain(args, strings.NewReader(""), io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}
