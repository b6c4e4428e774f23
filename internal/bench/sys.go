//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dialer opens the TCP connections of subscribers, spreading them over
// source addresses so that ephemeral ports do not run out.
type dialer struct {
	addr    string // server host:port
	host    string // Host header
	token   string
	timeout time.Duration
	src     net.IP // source address of this connection, or nil
}

// sourceIP returns the i-th source address (i from 0): 127.0.0.2, 127.0.0.3, …
func sourceIP(i int) net.IP {
	v := uint32(127)<<24 | uint32(2+i)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func (d *dialer) dialTCP(ctx context.Context) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout, KeepAlive: -1}
	if d.src != nil {
		nd.LocalAddr = &net.TCPAddr{IP: d.src}
		// Let connect() choose the port for the whole 4-tuple, instead of
		// bind() reserving one port per source address for every
		// destination.
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			return errors.Join(err, serr)
		}
	}
	return nd.DialContext(ctx, "tcp", d.addr)
}

// retryable tells the connect errors worth another try: the server's accept
// queue overflowing or ports being short for a moment.
func retryable(err error) bool {
	return errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ECONNREFUSED) ||
		errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EPIPE) ||
		errors.Is(err, errEOF) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// detach takes the socket away from the Go runtime: it duplicates the
// descriptor, then closes the net.Conn, which removes the original from the
// runtime's poller. The duplicate shares the socket and its non-blocking mode.
func detach(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("bench: %T has no socket", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	return fd, nil
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and checks
// that need descriptors fit.
func raiseFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if uint64(need) > lim.Cur {
		return fmt.Errorf("bench: this run needs about %d open files (one per subscriber, plus publishers and "+
			"connections being set up), but this process may open only %d (RLIMIT_NOFILE soft %d, hard %d); "+
			"use fewer --subscribers, or raise the hard limit (ulimit -Hn as root, LimitNOFILE= in systemd, "+
			"nofile in /etc/security/limits.conf); the server needs as many",
			need, lim.Cur, lim.Cur, lim.Max)
	}
	return nil
}

// checkPorts checks that n connections to one server address fit in the
// ephemeral port range, from sources source addresses.
func checkPorts(n, sources int) error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return nil // cannot tell
	}
	f := bytes.Fields(b)
	if len(f) != 2 {
		return nil
	}
	lo, err1 := strconv.Atoi(string(f[0]))
	hi, err2 := strconv.Atoi(string(f[1]))
	if err1 != nil || err2 != nil || hi < lo {
		return nil
	}
	per := hi - lo + 1
	if n > per*max(sources, 1) {
		return fmt.Errorf("bench: %d connections to one server address need more than the %d ephemeral ports "+
			"(%d-%d, net.ipv4.ip_local_port_range) of %d source address(es); use --source-ips %d",
			n, per, lo, hi, max(sources, 1), (n+per-1)/per)
	}
	return nil
}

// procRSS returns the resident set size of process pid, in KiB.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(string(f[0]), 10, 64)
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS in /proc/%d/status", pid)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTimes is the CPU time a process has used, in user space and in the kernel.
type cpuTimes struct{ user, system time.Duration }

func (t cpuTimes) total() time.Duration { return t.user + t.system }

// procCPU returns the CPU time process pid has used.
func procCPU(pid int) (cpuTimes, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where field 3 (state) starts.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return cpuTimes{}, fmt.Errorf("bench: malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return cpuTimes{}, fmt.Errorf("bench: malformed /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64) // field 14
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return cpuTimes{}, fmt.Errorf("bench: malformed /proc/%d/stat", pid)
	}
	return cpuTimes{user: time.Duration(utime) * time.Second / clockTicks,
		system: time.Duration(stime) * time.Second / clockTicks}, nil
}

// selfCPU returns the CPU time this process has used, all threads.
func selfCPU() time.Duration { return rusageCPU(unix.RUSAGE_SELF) }

func rusageCPU(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// schedBatch puts every thread of the process under SCHED_BATCH; threads started later inherit
// it. The generator shares the machine with the server it measures: a normal thread woken by
// the server's write preempts the writer at once (the kernel favours a waking thread), so every
// delivery would cost the server a context switch that no remote subscriber causes, and cost
// the generator a wake-up per message. A batch thread does not preempt on waking; it runs at the
// next tick or when a core is free, and then reads many sockets per wake-up.
func schedBatch() error {
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		attr := unix.SchedAttr{Policy: unix.SCHED_BATCH}
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("sched_setattr: %w", err)
		}
	}
	return nil
}
