//go:build !race

package conn

import (
	"testing"
	"unsafe"
)

// TestFlushAllocs: queueing shared frames and writing them allocates nothing once the
// connection's queue and the worker's buffer exist, for bursts the kept queue array holds.
func TestFlushAllocs(t *testing.T) {
	c, _ := benchConn(t, newProto())
	f := frame(123456)
	sc := &scratch{buf: make([]byte, 0, 64<<10)}
	for _, batch := range []int{1, keepSlots} {
		allocs := testing.AllocsPerRun(1000, func() {
			for range batch {
				c.Deliver(f)
			}
			flushOwn(c, sc)
		})
		// A write the socket refuses in part copies the rest, rarely; allow for one.
		if allocs > 0.01 {
			t.Errorf("batch of %d: %.3f allocations per flush", batch, allocs)
		}
	}
}

// TestQueueSlot: a connection that gets one item at a time keeps it in its own slot, with no
// queue array; a second item moves the queue to an array, in order, and the slot lets go of
// its item so that the frame is not kept alive by it.
func TestQueueSlot(t *testing.T) {
	c, _ := benchConn(t, newProto())
	sc := &scratch{buf: make([]byte, 0, 64<<10)}
	flushOwn(c, sc) // what Start queued, if anything
	c.queue = nil   // as a connection that has only ever had one item at a time

	f1, f2 := frame(1), frame(2)
	c.Deliver(f1)
	c.mu.Lock()
	if len(c.queue) != 1 || unsafe.SliceData(c.queue) != &c.one[0] || c.one[0].Frame != f1 {
		t.Errorf("one item: queue %d items, in the slot %v", len(c.queue), unsafe.SliceData(c.queue) == &c.one[0])
	}
	c.mu.Unlock()
	c.Deliver(f2)
	c.mu.Lock()
	if len(c.queue) != 2 || unsafe.SliceData(c.queue) == &c.one[0] || c.queue[0].Frame != f1 || c.queue[1].Frame != f2 {
		t.Errorf("two items: queue %d items, in the slot %v", len(c.queue), unsafe.SliceData(c.queue) == &c.one[0])
	}
	if !emptyItem(c.one[0]) {
		t.Error("the slot still holds an item after the queue moved to an array")
	}
	c.mu.Unlock()
	flushOwn(c, sc)

	c.queue = nil
	c.Deliver(f1)
	flushOwn(c, sc)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) != 0 || !emptyItem(c.one[0]) {
		t.Error("the slot still holds its item after the flush")
	}
	if cap(c.queue) != 0 {
		t.Error("the slot is not free for the next item")
	}
}

func emptyItem(it Item) bool {
	return it.Frame == nil && it.Raw == nil && !it.Heartbeat && it.Note == nil
}

// TestFlushAllocsWhileWriting: items queued while a flush of several writes them go into the
// queue's array, which the flush gave back before its write, not into a new one.
func TestFlushAllocsWhileWriting(t *testing.T) {
	c, _ := benchConn(t, newProto())
	f := frame(123456)
	sc := &scratch{buf: make([]byte, 0, 64<<10)}
	during := 0
	c.server.onWrite = func(*Conn, []byte) {
		for range during {
			c.Deliver(f)
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		c.Deliver(f)
		c.Deliver(f)
		during = 2
		flushOwn(c, sc) // writes two; two more are queued during the write
		during = 0
		flushOwn(c, sc) // writes those
	})
	if allocs > 0.01 {
		t.Errorf("%.3f allocations per round", allocs)
	}
}
