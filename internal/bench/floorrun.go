//go:build linux

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The floor of the run. `crier bench floor` measures a small write to 100 hot loopback sockets
// read by a thread of the same process; a fanout to 10,000 subscribers writes to 10,000
// sockets, whose kernel state no longer fits in cache, read by this generator. So after the
// scenario the bench measures, in the same run, what the cheapest possible server would spend
// on the same deliveries: a child process holding as many connections, read by the same
// reactors under the same scheduling policy, writes each of them a message of the scenario's
// average wire size once per round, with a bare non-blocking sendto per message from one
// thread per core, at the scenario's delivery rate. Its CPU per write is the floor the server's
// CPU per delivery is compared with (server_vs_floor).

// FloorInRun is the floor measured in a run (see above).
type FloorInRun struct {
	Conns  int `json:"conns"`
	Size   int `json:"size"`
	Rounds int `json:"rounds"`
	// WriterUs is the writer process's CPU per write, kernel included: the floor.
	WriterUs float64 `json:"writer_us_per_write"`
	// ReaderUs is the generator's CPU per message read meanwhile.
	ReaderUs float64 `json:"reader_us_per_write"`
}

// floorWriterMain is the child: `crier bench floor-writer --conns N --size S --rounds R
// --interval D`. It listens on loopback and prints the port, accepts N connections, prints
// "ready" and waits for a line on stdin; then it runs the rounds and prints its CPU as JSON.
func floorWriterMain(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("crier bench floor-writer", flag.ContinueOnError)
	conns := fs.Int("conns", 100, "connections to accept")
	size := fs.Int("size", 64, "bytes per write")
	rounds := fs.Int("rounds", 5, "writes per connection")
	interval := fs.Duration("interval", time.Second, "time from one round to the next")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conns < 1 || *size < 1 || *size > 1<<16 || *rounds < 1 || *interval < 0 {
		return errors.New("crier bench floor-writer: --conns, --size (up to 65536) and --rounds must be positive")
	}
	if err := raiseFileLimit(*conns + 64); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)
	fds := make([]int, 0, *conns)
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}()
	for len(fds) < *conns {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		fd, err := detach(nc) // non-blocking, Nagle off, as net/http leaves a server's sockets
		nc.Close()
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	fmt.Fprintln(stdout, "ready")
	if _, err := bufio.NewReader(stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("crier bench floor-writer: waiting for go: %w", err)
	}

	msg := make([]byte, *size)
	for i := range msg {
		msg[i] = 'x'
	}
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	var writes, refused atomic.Int64
	start := make([]chan struct{}, workers)
	c0 := selfCPU()
	for w := range workers {
		start[w] = make(chan struct{}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			n, r := int64(0), int64(0)
			for range *rounds {
				<-start[w]
				for i := w; i < len(fds); i += workers {
					m, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fds[i]), uintptr(unsafe.Pointer(&msg[0])),
						uintptr(len(msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
					if errno != 0 || int(m) != len(msg) {
						r++ // a full socket: the reader is behind; counted, not retried
						continue
					}
					n++
				}
			}
			writes.Add(n)
			refused.Add(r)
		}()
	}
	next := time.Now()
	for range *rounds {
		time.Sleep(time.Until(next))
		next = next.Add(*interval)
		for _, ch := range start {
			ch <- struct{}{}
		}
	}
	wg.Wait()
	cpu := selfCPU() - c0
	return json.NewEncoder(stdout).Encode(map[string]int64{"writes": writes.Load(), "refused": refused.Load(),
		"cpu_ns": cpu.Nanoseconds()})
}

// floorCommand starts this program as the floor writer. A test binary stands in for crier when
// CRIER_BENCH_TEST_CHILD is set (see TestMain).
func floorCommand(args []string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if os.Getenv("CRIER_BENCH_TEST_CHILD") != "" {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "CRIER_BENCH_ARGS="+strings.Join(append([]string{"floor-writer"}, args...), " "))
		return cmd, nil
	}
	return exec.Command(exe, append([]string{"bench", "floor-writer"}, args...)...), nil
}

// countDec reads the floor's connections: it counts bytes, and messages of size bytes.
type countDec struct{ size int }

func (d countDec) feed(c *conn, x *rx, p []byte) error {
	c.bytes += len(p)
	x.deliveries += uint64(c.bytes/d.size) - uint64((c.bytes-len(p))/d.size)
	return nil
}

func (countDec) ready(*conn) bool { return true }

// measureFloor runs the floor after the scenario, whose sockets are closed: conns connections,
// messages of size bytes, a round every interval for about d.
func (b *bench) measureFloor(ctx context.Context, conns, size int, interval, d time.Duration) (*FloorInRun, error) {
	rounds := max(3, int(d/max(interval, time.Millisecond)))
	cmd, err := floorCommand([]string{"--conns", strconv.Itoa(conns), "--size", strconv.Itoa(size),
		"--rounds", strconv.Itoa(rounds), "--interval", interval.String()})
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("floor writer: %w", err)
	}
	defer func() {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	out := bufio.NewReader(outPipe)
	line, err := out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("floor writer: %w", err)
	}
	port := strings.TrimSpace(line)

	floor := &bench{o: b.o, conns: make([]atomic.Pointer[conn], conns)}
	if err := floor.startReactors(); err != nil {
		return nil, err
	}
	defer floor.shutdown()
	d0 := b.base
	d0.addr = net.JoinHostPort("127.0.0.1", port)
	dec := countDec{size: size}
	for id := range conns {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		dl := d0
		if b.o.sourceIPs > 0 {
			dl.src = sourceIP(id % b.o.sourceIPs)
		}
		nc, err := dl.dialTCP(ctx)
		if err != nil {
			return nil, fmt.Errorf("floor: connection %d: %w", id, err)
		}
		fd, err := detach(nc)
		nc.Close()
		if err != nil {
			return nil, err
		}
		if err := floor.reactors[id%len(floor.reactors)].add(&conn{id: id, fd: fd, dec: dec}); err != nil {
			_ = unix.Close(fd)
			return nil, err
		}
	}
	if line, err = out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		return nil, fmt.Errorf("floor writer: not ready (%q, %v)", line, err)
	}
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return nil, err
	}
	self0 := selfCPU()
	if _, err := io.WriteString(in, "go\n"); err != nil {
		return nil, err
	}
	var res struct {
		Writes  int64 `json:"writes"`
		Refused int64 `json:"refused"`
		CPUNs   int64 `json:"cpu_ns"`
	}
	if err := json.NewDecoder(out).Decode(&res); err != nil {
		return nil, fmt.Errorf("floor writer: %w", err)
	}
	if res.Writes == 0 {
		return nil, errors.New("floor writer: no write succeeded")
	}
	// Wait until the reactors have read what was written.
	want := uint64(res.Writes)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		if got, _, _ := floor.received(); got >= want {
			break
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return nil, err
		}
	}
	reader := selfCPU() - self0
	if got, _, _ := floor.received(); got < want {
		return nil, fmt.Errorf("floor: read %d of %d messages", got, want)
	}
	return &FloorInRun{Conns: conns, Size: size, Rounds: rounds,
		WriterUs: float64(res.CPUNs) / 1e3 / float64(res.Writes),
		ReaderUs: float64(reader.Nanoseconds()) / 1e3 / float64(res.Writes)}, nil
}
