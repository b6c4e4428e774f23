package rawio

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSendRead(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	buf := make([]byte, 16)
	if n, errno := Read(fds[1], buf); n != 0 || errno != unix.EAGAIN {
		t.Fatalf("read of an empty socket: %d, %v; want EAGAIN", n, errno)
	}
	if n, errno := Send(fds[0], []byte("hello")); n != 5 || errno != 0 {
		t.Fatalf("send: %d, %v", n, errno)
	}
	if n, errno := Read(fds[1], buf); string(buf[:n]) != "hello" || errno != 0 {
		t.Fatalf("read: %q, %v", buf[:n], errno)
	}
	if n, errno := Send(fds[0], nil); n != 0 || errno != 0 {
		t.Fatalf("empty send: %d, %v", n, errno)
	}
	_ = unix.Close(fds[1])
	if _, errno := Send(fds[0], []byte("x")); errno != unix.EPIPE {
		t.Fatalf("send to a closed peer: %v, want EPIPE (and no SIGPIPE)", errno)
	}
}

func TestReadEnd(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	_ = unix.Close(fds[0])
	if n, errno := Read(fds[1], make([]byte, 4)); n != 0 || errno != 0 {
		t.Fatalf("read after the peer closed: %d, %v; want 0 and no error", n, errno)
	}
}
