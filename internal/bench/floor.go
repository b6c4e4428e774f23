//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func runFloor(ctx context.Context, writes, size, conns int) (*FloorRun, error) {
	if writes < 1 || size < 1 || size > 1<<20 || conns < 1 || conns > 4096 {
		return nil, errors.New("crier bench floor: --writes must be positive, --size in 1..1048576, --conns in 1..4096")
	}
	if err := raiseFileLimit(2*conns + 64); err != nil {
		return nil, err
	}
	var wfds, rfds []int
	defer func() {
		for _, fd := range append(wfds, rfds...) {
			unix.Close(fd)
		}
	}()
	for range conns {
		w, r, err := loopbackPair()
		if err != nil {
			return nil, fmt.Errorf("crier bench floor: %w", err)
		}
		wfds, rfds = append(wfds, w), append(rfds, r)
	}

	var wg sync.WaitGroup
	var writerCPU, readerCPU time.Duration
	var werr, rerr error
	reads := 0
	start := make(chan struct{})
	wg.Add(2)
	go func() { // reader: drain with a large buffer, blocking in read() or epoll_wait()
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		buf := make([]byte, 64<<10)
		<-start
		c0 := rusageCPU(unix.RUSAGE_THREAD)
		reads, rerr = drain(rfds, buf)
		readerCPU = rusageCPU(unix.RUSAGE_THREAD) - c0
	}()
	go func() { // writer: one write() per message, round-robin over the connections
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = 'x'
		}
		<-start
		c0 := rusageCPU(unix.RUSAGE_THREAD)
		for i := 0; i < writes && werr == nil; i++ {
			if i&1023 == 0 && ctx.Err() != nil {
				werr = ctx.Err()
				break
			}
			fd := wfds[i%len(wfds)]
			for b := msg; len(b) > 0; {
				n, err := unix.Write(fd, b)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					werr = err
					break
				}
				b = b[n:]
			}
		}
		writerCPU = rusageCPU(unix.RUSAGE_THREAD) - c0
		for _, fd := range wfds {
			_ = unix.Shutdown(fd, unix.SHUT_WR)
		}
	}()
	self0, t0 := selfCPU(), time.Now()
	close(start)
	wg.Wait()
	wall, self := time.Since(t0), selfCPU()-self0
	if err := errors.Join(werr, rerr); err != nil {
		return nil, fmt.Errorf("crier bench floor: %w", err)
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(writes) }
	return &FloorRun{Writes: writes, Size: size, Conns: conns, Reads: reads, WallS: wall.Seconds(),
		WritesPerS: float64(writes) / wall.Seconds(), CPUUs: us(self), WriterUs: us(writerCPU),
		ReaderUs: us(readerCPU)}, nil
}

// drain reads the blocking sockets fds until each ends: with read() alone
// for one, with epoll for several, as a subscriber-side event loop does.
func drain(fds []int, buf []byte) (reads int, err error) {
	read := func(fd int) (eof bool, err error) {
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return false, err
			}
			if n > 0 {
				reads++
			}
			return n == 0, nil
		}
	}
	if len(fds) == 1 {
		for {
			eof, err := read(fds[0])
			if eof || err != nil {
				return reads, err
			}
		}
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, err
	}
	defer unix.Close(ep)
	for i, fd := range fds {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
			return 0, err
		}
	}
	events := make([]unix.EpollEvent, 256)
	for open := len(fds); open > 0; {
		n, err := unix.EpollWait(ep, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return reads, err
		}
		for _, ev := range events[:n] {
			fd := fds[ev.Fd]
			eof, err := read(fd)
			if err != nil {
				return reads, err
			}
			if eof {
				open--
				_ = unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil)
			}
		}
	}
	return reads, nil
}

// loopbackPair returns a connected pair of blocking TCP sockets over
// 127.0.0.1, with Nagle off on the writer as servers have it.
func loopbackPair() (w, r int, err error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	defer unix.Close(ln)
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(ln, lo); err != nil {
		return -1, -1, err
	}
	if err := unix.Listen(ln, 1); err != nil {
		return -1, -1, err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return -1, -1, err
	}
	w, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	if err := unix.Connect(w, sa); err != nil {
		unix.Close(w)
		return -1, -1, err
	}
	r, _, err = unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		unix.Close(w)
		return -1, -1, err
	}
	if err := unix.SetsockoptInt(w, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(w)
		unix.Close(r)
		return -1, -1, err
	}
	return w, r, nil
}
