package transport

import (
	"unsafe"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/hub"
)

// Tracker follows one connection's cursor as its frames are rendered, in order. It is used by
// one writer at a time and allocates only when a second channel is added. It must not be
// copied once used.
type Tracker struct {
	entries channel.Cursor
	// one holds entries while there is one: every delivery reads it, and inside the
	// connection's own state it costs no cache miss of its own.
	one [1]channel.Entry
	_   noCopy
}

// noCopy makes go vet's copylocks check report a Tracker copied by value: a copy's entries
// would still point into the original's storage.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// Update moves the frame's channel to the frame's position.
func (t *Tracker) Update(f *hub.Frame) {
	t.Set(f.Msg.Channel, channel.Position{Epoch: f.Msg.Epoch, Offset: f.Msg.Offset})
}

// Set puts a channel at pos, adding it when new.
func (t *Tracker) Set(name string, pos channel.Position) {
	for i := range t.entries {
		e := &t.entries[i]
		// Frames of one channel share the hub's copy of its name: once the entry holds it too,
		// a pointer compare finds it, without comparing the bytes on every delivery.
		if len(e.Channel) == len(name) && (unsafe.StringData(e.Channel) == unsafe.StringData(name) || e.Channel == name) {
			e.Channel, e.Position = name, pos
			return
		}
	}
	if t.entries == nil {
		t.entries = t.one[:0]
	}
	t.entries = append(t.entries, channel.Entry{Channel: name, Position: pos})
}

// Single reports whether the cursor names one channel, so that frames' shared encodings apply.
func (t *Tracker) Single() bool { return len(t.entries) <= 1 }

// AppendTo appends the cursor's text.
func (t *Tracker) AppendTo(b []byte) []byte { return t.entries.AppendTo(b) }

// String returns the cursor's text.
func (t *Tracker) String() string { return t.entries.String() }

// Remove drops a channel from the cursor (after unsubscribe).
func (t *Tracker) Remove(name string) {
	for i := range t.entries {
		if t.entries[i].Channel == name {
			t.entries = append(t.entries[:i], t.entries[i+1:]...)
			return
		}
	}
}
