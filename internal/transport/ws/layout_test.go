package ws

import (
	"testing"
	"unsafe"
)

// TestLayout pins what the comment on session promises: Render reads its first two lines, and
// Warm loads both.
func TestLayout(t *testing.T) {
	var s session
	for name, end := range map[string]uintptr{
		"h":       unsafe.Offsetof(s.h) + 8,
		"greeted": unsafe.Offsetof(s.greeted) + 1,
		"tracker": unsafe.Offsetof(s.tracker) + unsafe.Sizeof(s.tracker),
		"scratch": unsafe.Offsetof(s.scratch) + unsafe.Sizeof(s.scratch),
	} {
		if end > 128 {
			t.Errorf("session.%s ends at byte %d, past the two lines Render reads", name, end)
		}
	}
	if h, l := unsafe.Offsetof(s.h), unsafe.Offsetof(s.lane); h >= 64 || l < 64 || l >= 128 {
		t.Errorf("Warm loads bytes %d and %d, not one of each of the first two lines", h, l)
	}
}
