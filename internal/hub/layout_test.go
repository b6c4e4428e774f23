package hub

import (
	"testing"
	"unsafe"
)

// TestLayout: a subscription starts a cache line, and what a fanout reads of it fits that line;
// a channel's lanes do not share lines.
func TestLayout(t *testing.T) {
	var s Subscription
	if n := unsafe.Sizeof(s); n%64 != 0 {
		t.Errorf("Subscription is %d bytes, not a whole number of cache lines", n)
	}
	if end := unsafe.Offsetof(s.closed) + 1; end > 64 {
		t.Errorf("a delivery reads Subscription up to byte %d, past its first line", end)
	}
	var l lane
	if n := unsafe.Sizeof(l); n%64 != 0 {
		t.Errorf("lane is %d bytes: lanes side by side share a line", n)
	}
}
