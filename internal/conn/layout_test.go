package conn

import (
	"testing"
	"unsafe"
)

// TestLayout pins what the comments on Conn promise: a connection starts a cache line, queueing
// reads its first two lines, and flushing and writing its first three, which Warm loads.
func TestLayout(t *testing.T) {
	var c Conn
	if n := unsafe.Sizeof(c); n%64 != 0 {
		t.Errorf("Conn is %d bytes, not a whole number of cache lines", n)
	}
	for name, end := range map[string]uintptr{
		"mu":      unsafe.Offsetof(c.mu) + unsafe.Sizeof(c.mu),
		"queue":   unsafe.Offsetof(c.queue) + unsafe.Sizeof(c.queue),
		"flags":   unsafe.Offsetof(c.viaOut) + 1,
		"one":     unsafe.Offsetof(c.one) + unsafe.Sizeof(c.one),
		"worker":  unsafe.Offsetof(c.worker) + 8,
		"server":  unsafe.Offsetof(c.server) + 8,
		"blocked": unsafe.Offsetof(c.blocked) + 1,
	} {
		if end > 128 {
			t.Errorf("Conn.%s ends at byte %d, past the two lines Enqueue reads", name, end)
		}
	}
	// Warm loads the three lines by server, fd and lastWrite.
	for name, end := range map[string]uintptr{
		"fd":         unsafe.Offsetof(c.fd) + 8,
		"proto":      unsafe.Offsetof(c.proto) + unsafe.Sizeof(c.proto),
		"lastWrite":  unsafe.Offsetof(c.lastWrite) + 8,
		"stuckSince": unsafe.Offsetof(c.stuckSince) + 8,
		"fdMu":       unsafe.Offsetof(c.fdMu) + unsafe.Sizeof(c.fdMu),
		"fdClosed":   unsafe.Offsetof(c.fdClosed) + 1,
		"final":      unsafe.Offsetof(c.final) + 1,
	} {
		if end > 192 {
			t.Errorf("Conn.%s ends at byte %d, past the three lines a flush reads", name, end)
		}
	}
	if lw := unsafe.Offsetof(c.lastWrite); lw < 128 {
		t.Errorf("Conn.lastWrite is at byte %d: Warm loads the third line by it", lw)
	}
	if n := unsafe.Sizeof(worker{}); n < 192 {
		t.Errorf("worker is %d bytes: two writers' locks may share a line", n)
	}
}
