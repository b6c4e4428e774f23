//go:build !race

package conn

import "testing"

// TestFlushAllocs: queueing shared frames and writing them allocates nothing once the
// connection's queue and the worker's buffer exist, for bursts the kept queue array holds.
func TestFlushAllocs(t *testing.T) {
	c, _ := benchConn(t, newProto())
	f := frame(123456)
	buf := make([]byte, 0, 64<<10)
	for _, batch := range []int{1, keepSlots} {
		allocs := testing.AllocsPerRun(1000, func() {
			for range batch {
				c.Deliver(f)
			}
			flushOwn(c, &buf)
		})
		// A write the socket refuses in part copies the rest, rarely; allow for one.
		if allocs > 0.01 {
			t.Errorf("batch of %d: %.3f allocations per flush", batch, allocs)
		}
	}
}
