// Package bench is `crier bench`, Crier's load generator (issue 6).
//
// `crier bench [flags]` opens subscribers over one push transport, spread
// round-robin over channels and over source addresses, publishes over HTTP at
// a target rate with a publish timestamp and a per-channel sequence number in
// each payload, and reports connect rate, the server's memory per idle
// connection and CPU per million deliveries (given its PID), deliveries per
// second, end-to-end latency, and lost, duplicated and out-of-order messages.
// It prints a table, then one JSON line; it fails (returns an error) when a
// message was lost, duplicated, out of order or misrouted, or a subscriber was
// disconnected, never because of a timing.
//
// `crier bench floor` measures what one small write to a loopback TCP socket
// costs this machine in CPU, the floor of a server that writes each delivery
// separately.
//
// The generator shares the machine with the server, so it is built to be
// cheap: subscriber sockets are read by one epoll reactor per core with a
// large shared buffer, envelopes are scanned for the few bytes it needs
// instead of decoded, nothing is allocated per delivery, and publishes are
// hand-written HTTP/1.1 requests on kept-alive connections. It reports its own
// CPU per delivery (bench_cpu_us_per_delivery) so that a run can show it kept
// out of the way.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Main runs `crier bench` with the arguments after "bench".
func Main(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "floor" {
		return floorMain(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "floor-writer" { // the bench's own child, see floorrun.go
		return floorWriterMain(args[1:], os.Stdin, stdout)
	}
	o, err := parseFlags(args, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	rep, err := run(ctx, o)
	if rep != nil {
		rep.print(stdout, o.jsonOnly)
	}
	if err != nil {
		return err
	}
	return rep.verdict()
}

type options struct {
	server             string
	transport          string
	subscribers        int
	channels           int
	rate               float64
	publishers         int
	duration           time.Duration
	warmup             time.Duration
	idle               time.Duration
	grace              time.Duration
	settle             time.Duration
	timeout            time.Duration
	pid                int
	sourceIPs          int
	payloadSize        int
	jsonOnly           bool
	token              string
	prefix             string
	connectConcurrency int
	wsSubscribe        string
	reactors           int
	sched              string
	floor              time.Duration
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("crier bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.server, "server", "http://127.0.0.1:8080", "base URL of the Crier server")
	fs.StringVar(&o.transport, "transport", "ws", "subscriber transport: "+strings.Join(transportNames(), ", "))
	fs.IntVar(&o.subscribers, "subscribers", 100, "number of subscriber connections")
	fs.IntVar(&o.channels, "channels", 1, "number of channels; subscribers are spread over them round-robin")
	fs.Float64Var(&o.rate, "rate", 100, "publishes per second in total; 0: as fast as they are accepted")
	fs.IntVar(&o.publishers, "publishers", 4, "concurrent HTTP publishers (each owns a share of the channels)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured publishing time")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "publishing time before measuring")
	fs.DurationVar(&o.idle, "idle", 0, "instead of publishing, hold the connections idle this long and measure memory")
	fs.DurationVar(&o.grace, "grace", 5*time.Second, "after publishing, how long to wait for messages still on their way")
	fs.DurationVar(&o.settle, "settle", time.Second, "with --pid, wait this long after connecting before reading the server's memory")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of one connect, handshake or publish")
	fs.IntVar(&o.pid, "pid", 0, "the server's process ID, to read its memory and CPU from /proc")
	fs.IntVar(&o.sourceIPs, "source-ips", 0, "spread subscriber connections over source addresses 127.0.0.2..127.0.0.(N+1); 0: the system's choice")
	fs.IntVar(&o.payloadSize, "payload-size", 64, "payload size in bytes (at least the bare timestamp and sequence number)")
	fs.BoolVar(&o.jsonOnly, "json", false, "print only the JSON line")
	fs.StringVar(&o.token, "token", "", "bearer token (JWT or API key) for subscribing and publishing")
	fs.StringVar(&o.prefix, "channel-prefix", "", "channel name prefix (default: bench.RANDOM., new channels each run)")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 64, "connections being set up at once")
	fs.StringVar(&o.wsSubscribe, "ws-subscribe", "query", "WebSocket: subscribe with ?channel= (query) or a subscribe command (op)")
	fs.IntVar(&o.reactors, "readers", 0, "goroutines reading subscriber sockets (epoll sets); 0: one per core")
	fs.DurationVar(&o.floor, "floor", 5*time.Second, "with --pid, after publishing, measure the floor of this run (a bare write loop over as many connections) for about this long; 0: skip")
	fs.StringVar(&o.sched, "sched", "batch", "the generator's scheduling policy: batch (SCHED_BATCH: its wake-ups do not preempt the server) or normal")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("crier bench: unexpected argument %q (subcommands: floor)", fs.Arg(0))
	}
	switch {
	case !slices.Contains(transportNames(), o.transport):
		return nil, fmt.Errorf("crier bench: unknown --transport %q (have %s)", o.transport, strings.Join(transportNames(), ", "))
	case o.subscribers < 0, o.channels < 1, o.rate < 0, o.publishers < 1, o.sourceIPs < 0,
		o.connectConcurrency < 1, o.duration < 0, o.warmup < 0, o.idle < 0, o.grace < 0, o.timeout <= 0:
		return nil, errors.New("crier bench: --subscribers, --rate, --source-ips, and durations must not be negative; " +
			"--channels, --publishers, --connect-concurrency and --timeout must be positive")
	case o.sourceIPs > 1<<16:
		return nil, errors.New("crier bench: --source-ips is at most 65536")
	case o.wsSubscribe != "query" && o.wsSubscribe != "op":
		return nil, fmt.Errorf("crier bench: --ws-subscribe is query or op, not %q", o.wsSubscribe)
	case o.sched != "batch" && o.sched != "normal":
		return nil, fmt.Errorf("crier bench: --sched is batch or normal, not %q", o.sched)
	case o.channels > 1e8:
		return nil, errors.New("crier bench: --channels is at most 100000000")
	}
	return o, nil
}

func transportNames() []string {
	var names []string
	for k := range transports {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// Report is the outcome of a run, as printed in the JSON line. Figures that
// were not measured (no --pid, nothing delivered) are null.
type Report struct {
	Transport   string  `json:"transport"`
	Server      string  `json:"server"`
	Subscribers int     `json:"subscribers"`
	Channels    int     `json:"channels"`
	Rate        float64 `json:"rate"`
	Publishers  int     `json:"publishers"`
	PayloadSize int     `json:"payload_size"`
	SourceIPs   int     `json:"source_ips"`
	WarmupS     float64 `json:"warmup_s"`
	DurationS   float64 `json:"duration_s"`
	IdleS       float64 `json:"idle_s"`
	Cores       int     `json:"cores"`
	Sched       string  `json:"sched"`

	ConnectS       float64 `json:"connect_s"`
	ConnectRate    float64 `json:"connect_rate"`
	ConnectP50Ms   float64 `json:"connect_p50_ms"`
	ConnectP99Ms   float64 `json:"connect_p99_ms"`
	ConnectRetries uint64  `json:"connect_retries"`
	Disconnected   uint64  `json:"disconnected"`
	BenchRSSKiB    int64   `json:"bench_rss_kib"` // the generator's own memory, once connected

	ServerRSSBeforeKiB  *int64   `json:"server_rss_before_kib"`
	ServerRSSAfterKiB   *int64   `json:"server_rss_after_kib"`
	ServerRSSIdleKiB    *int64   `json:"server_rss_after_idle_kib"`
	ServerRSSPerConnKiB *float64 `json:"server_rss_per_conn_kib"`

	Published       uint64  `json:"published"`
	PublishFailed   uint64  `json:"publish_failed"`
	PublishRejected uint64  `json:"publish_rejected"`
	PublishesPerS   float64 `json:"publishes_per_s"`
	PublishP50Ms    float64 `json:"publish_p50_ms"`
	PublishP99Ms    float64 `json:"publish_p99_ms"`

	Expected          uint64  `json:"expected"`
	Deliveries        uint64  `json:"deliveries"`
	DeliveriesPerS    float64 `json:"deliveries_per_s"`
	DeliveriesPerRead float64 `json:"deliveries_per_read"`
	// DeliveriesPerWakeup is how many deliveries one epoll round of the
	// generator handles: the higher, the less its per-wake-up costs weigh.
	DeliveriesPerWakeup float64 `json:"deliveries_per_wakeup"`
	LatencySamples      uint64  `json:"latency_samples"`
	LatencyP50Ms        float64 `json:"latency_p50_ms"`
	LatencyP90Ms        float64 `json:"latency_p90_ms"`
	LatencyP99Ms        float64 `json:"latency_p99_ms"`
	LatencyMaxMs        float64 `json:"latency_max_ms"`
	LatencyMeanMs       float64 `json:"latency_mean_ms"`

	Lost        uint64 `json:"lost"`
	Duplicated  uint64 `json:"duplicated"`
	OutOfOrder  uint64 `json:"out_of_order"`
	Unexpected  uint64 `json:"unexpected"`
	OtherEvents uint64 `json:"other_events"`

	ServerCPUSPerMillion  *float64 `json:"server_cpu_s_per_million"`
	ServerCPUUsPerPublish *float64 `json:"server_cpu_us_per_publish"`
	// ServerUserShare is the part of the server's CPU spent in user space, the rest in the
	// kernel (mostly its writes): what the server itself can still cut, measured to the
	// kernel's tick.
	ServerUserShare       *float64 `json:"server_cpu_user_share"`
	BenchCPUUsPerDelivery *float64 `json:"bench_cpu_us_per_delivery"`
	// Floor is the bare write loop measured after the scenario (see floorrun.go), and
	// ServerVsFloor the server's CPU per delivery over the floor's per write.
	Floor         *FloorInRun `json:"floor"`
	ServerVsFloor *float64    `json:"server_vs_floor"`

	Problem string `json:"problem,omitempty"` // the first disconnect or publish failure, for a person
	OK      bool   `json:"ok"`
}

// verdict is the run's error when a message was lost, duplicated, out of
// order or misrouted, or a subscriber was cut off.
func (r *Report) verdict() error {
	var bad []string
	add := func(n uint64, what string) {
		if n > 0 {
			bad = append(bad, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Lost, "lost")
	add(r.Duplicated, "duplicated")
	add(r.OutOfOrder, "out of order")
	add(r.Unexpected, "unexpected (wrong channel or never published)")
	add(r.Disconnected, "subscribers disconnected")
	if len(bad) == 0 && r.IdleS == 0 && r.DurationS > 0 && r.Published == 0 {
		bad = append(bad, "no publish succeeded")
	}
	if len(bad) == 0 {
		return nil
	}
	msg := "crier bench: " + strings.Join(bad, ", ")
	if r.Problem != "" {
		msg += " (" + r.Problem + ")"
	}
	return errors.New(msg)
}

func ms(ns uint64) float64 { return float64(ns) / 1e6 }

func (r *Report) print(w io.Writer, jsonOnly bool) {
	r.OK = r.verdict() == nil
	if !jsonOnly {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t"+f+"\n", append([]any{k}, a...)...) }
		opt := func(k, unit string, v *float64) {
			if v != nil {
				row(k, "%.2f %s", *v, unit)
			} else {
				row(k, "-")
			}
		}
		optKiB := func(k string, v *int64) {
			if v != nil {
				row(k, "%d KiB", *v)
			}
		}
		row("scenario", "%s, %d subscribers on %d channels, %s", r.Transport, r.Subscribers, r.Channels, r.Server)
		row("connect", "%.0f conns/s (%.2f s; p50 %.2f ms, p99 %.2f ms; %d retries)",
			r.ConnectRate, r.ConnectS, r.ConnectP50Ms, r.ConnectP99Ms, r.ConnectRetries)
		row("bench RSS", "%d KiB", r.BenchRSSKiB)
		optKiB("server RSS before", r.ServerRSSBeforeKiB)
		optKiB("server RSS connected", r.ServerRSSAfterKiB)
		optKiB("server RSS after idle", r.ServerRSSIdleKiB)
		opt("server RSS per conn", "KiB", r.ServerRSSPerConnKiB)
		if r.IdleS == 0 {
			row("published", "%d (%.0f/s; %d failed, %d rejected; POST p50 %.2f ms, p99 %.2f ms)",
				r.Published, r.PublishesPerS, r.PublishFailed, r.PublishRejected, r.PublishP50Ms, r.PublishP99Ms)
			row("deliveries", "%d of %d expected (%.0f/s measured; %.1f per read, %.1f per wake-up)",
				r.Deliveries, r.Expected, r.DeliveriesPerS, r.DeliveriesPerRead, r.DeliveriesPerWakeup)
			row("latency", "p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (%d samples)",
				r.LatencyP50Ms, r.LatencyP90Ms, r.LatencyP99Ms, r.LatencyMaxMs, r.LatencySamples)
			row("lost / dup / out of order", "%d / %d / %d (unexpected %d, other events %d)",
				r.Lost, r.Duplicated, r.OutOfOrder, r.Unexpected, r.OtherEvents)
			opt("server CPU per 1M deliveries", "s", r.ServerCPUSPerMillion)
			opt("server CPU per publish", "µs", r.ServerCPUUsPerPublish)
			if r.ServerUserShare != nil {
				row("server CPU in user space", "%.1f%%", 100**r.ServerUserShare)
			}
			opt("bench CPU per delivery", "µs", r.BenchCPUUsPerDelivery)
			if f := r.Floor; f != nil {
				row("floor of this run", "%.2f µs per write (%d connections, %d B, %d rounds; reader %.2f µs)",
					f.WriterUs, f.Conns, f.Size, f.Rounds, f.ReaderUs)
				opt("server vs floor", "×", r.ServerVsFloor)
			}
		}
		row("disconnected", "%d", r.Disconnected)
		if r.Problem != "" {
			row("problem", "%s", r.Problem)
		}
		row("verdict", "%s", map[bool]string{true: "ok", false: "FAILED"}[r.OK])
		tw.Flush()
	}
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s\n", b)
}

// FloorReport is what `crier bench floor` measures: the CPU one small write
// to a loopback TCP socket costs, kernel included (loopback delivers the
// segment in the writer's context and wakes the reader), measured two ways in
// the same run: one stream (a writer and a reader on one connection: the
// reader often drains several writes at once), and a fan-out (the writer
// goes round-robin over many connections, one reader drains them with epoll:
// about one read per write, as when a server sends one message to many
// subscribers). A server that writes each delivery separately cannot spend
// less per delivery than the fan-out figure; that is FloorUs.
type FloorReport struct {
	FloorUs float64  `json:"floor_us_per_write"`
	Stream  FloorRun `json:"stream"`
	Fanout  FloorRun `json:"fanout"`
}

// FloorRun is one way of measuring the floor.
type FloorRun struct {
	Writes     int     `json:"writes"`
	Size       int     `json:"size"`
	Conns      int     `json:"conns"`
	Reads      int     `json:"reads"`
	WallS      float64 `json:"wall_s"`
	WritesPerS float64 `json:"writes_per_s"`
	// CPUUs is the process's CPU (writer, reader and the rest, from
	// getrusage(RUSAGE_SELF)) per write.
	CPUUs float64 `json:"cpu_us_per_write"`
	// WriterUs and ReaderUs split it by thread (RUSAGE_THREAD): the writer
	// side is what a server pays, the reader side what a subscriber pays.
	WriterUs float64 `json:"writer_us_per_write"`
	ReaderUs float64 `json:"reader_us_per_write"`
}

func floorMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("crier bench floor", flag.ContinueOnError)
	fs.SetOutput(out)
	writes := fs.Int("writes", 200000, "number of writes of each measurement")
	size := fs.Int("size", 64, "bytes per write")
	conns := fs.Int("conns", 100, "connections of the fan-out measurement")
	jsonOnly := fs.Bool("json", false, "print only the JSON line")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("crier bench floor: unexpected argument %q", fs.Arg(0))
	}
	var r FloorReport
	for _, m := range []struct {
		run   *FloorRun
		conns int
	}{{&r.Stream, 1}, {&r.Fanout, *conns}} {
		fr, err := runFloor(ctx, *writes, *size, m.conns)
		if err != nil {
			return err
		}
		*m.run = *fr
	}
	r.FloorUs = r.Fanout.CPUUs
	if !*jsonOnly {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "loopback TCP write floor\t%d writes of %d bytes each way\n", *writes, *size)
		for _, m := range []struct {
			name string
			run  *FloorRun
		}{{"stream", &r.Stream}, {"fan-out", &r.Fanout}} {
			fmt.Fprintf(tw, "%s, %d conn(s)\t%.2f µs CPU per write (writer %.2f, reader %.2f); %.2f writes per read, %.0f writes/s\n",
				m.name, m.run.Conns, m.run.CPUUs, m.run.WriterUs, m.run.ReaderUs,
				float64(m.run.Writes)/float64(max(m.run.Reads, 1)), m.run.WritesPerS)
		}
		fmt.Fprintf(tw, "floor\t%.2f µs per write\n", r.FloorUs)
		tw.Flush()
	}
	bj, _ := json.Marshal(&r)
	fmt.Fprintf(out, "%s\n", bj)
	return nil
}

func f64(v float64) *float64 { return &v }

// cores is what the report says the run had.
func cores() int { return runtime.NumCPU() }
