//go:build linux

package bench

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestTrack(t *testing.T) {
	tests := []struct {
		name       string
		seen       []uint64
		last       uint64
		uncertain  []uint64
		wantLost   uint64
		wantDup    uint64
		wantOOO    uint64
		wantBeyond uint64
	}{
		{
			name: "in order",
			seen: []uint64{1, 2, 3, 4},
			last: 4,
		},
		{
			name:     "tail missing",
			seen:     []uint64{1, 2},
			last:     4,
			wantLost: 2,
		},
		{
			name:     "hole",
			seen:     []uint64{1, 2, 5, 6},
			last:     6,
			wantLost: 2,
		},
		{
			name:    "duplicate",
			seen:    []uint64{1, 2, 2, 3, 1},
			last:    3,
			wantDup: 2,
		},
		{
			name:    "swap",
			seen:    []uint64{1, 3, 2, 4},
			last:    4,
			wantOOO: 1,
		},
		{
			name:     "late arrivals split a hole",
			seen:     []uint64{1, 10, 5, 2, 9, 5},
			last:     10,
			wantLost: 5, // 3, 4, 6, 7, 8
			wantOOO:  3,
			wantDup:  1,
		},
		{
			name:      "uncertain publish missing",
			seen:      []uint64{1, 3},
			last:      3,
			uncertain: []uint64{2},
		},
		{
			name:       "never published",
			seen:       []uint64{1, 2, 3},
			last:       2,
			wantBeyond: 1,
		},
		{
			name:    "nothing published, nothing seen",
			seen:    nil,
			last:    0,
			wantDup: 0,
		},
	}
	for _, tt := range tests {
		tr := newTrack(0)
		for _, s := range tt.seen {
			tr.see(s)
		}
		lost, beyond := tr.outcome(tt.last, tt.uncertain)
		if lost != tt.wantLost || tr.dup != tt.wantDup || tr.ooo != tt.wantOOO || beyond != tt.wantBeyond {
			t.Errorf(
				"%s: lost %d dup %d ooo %d beyond %d, want %d %d %d %d",
				tt.name, lost, tr.dup, tr.ooo, beyond, tt.wantLost, tt.wantDup, tt.wantOOO, tt.wantBeyond)
		}
	}
}

// TestTrackShuffled checks the track against a set on random arrivals.
func TestTrackShuffled(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		n := 1 + rng.IntN(300)
		var arrivals []uint64
		for s := 1; s <= n; s++ {
			switch rng.IntN(10) {
			case 0: // lost
			case 1:
				arrivals = append(arrivals, uint64(s), uint64(s))
			default:
				arrivals = append(arrivals, uint64(s))
			}
		}
		for range rng.IntN(5) { // a few local swaps
			if len(arrivals) > 1 {
				i := rng.IntN(len(arrivals) - 1)
				arrivals[i], arrivals[i+1] = arrivals[i+1], arrivals[i]
			}
		}
		tr := newTrack(0)
		seen := map[uint64]bool{}
		var dup, ooo, maxSeen uint64
		for _, s := range arrivals {
			switch {
			case seen[s]:
				dup++
			case s < maxSeen:
				ooo++
			}
			seen[s] = true
			maxSeen = max(maxSeen, s)
			tr.see(s)
		}
		lost, _ := tr.outcome(uint64(n), nil)
		if lost != uint64(n-len(seen)) || tr.dup != dup || tr.ooo != ooo {
			t.Fatalf(
				"%v: lost %d dup %d ooo %d, want %d %d %d",
				arrivals, lost, tr.dup, tr.ooo, n-len(seen), dup, ooo)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for v := uint64(1); v <= 1_000_000; v++ {
		h.record(v)
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		want := q * 1_000_000
		got := float64(h.quantile(q))
		if math.Abs(got-want)/want > 1.0/64 {
			t.Errorf(
				"quantile %v = %v, want %v within 1/64",
				q, got, want)
		}
	}
	if h.max != 1_000_000 || h.min != 1 || h.n != 1_000_000 {
		t.Errorf(
			"min %d max %d n %d",
			h.min, h.max, h.n)
	}
	// Every value lands in a bucket that holds it.
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1e9, math.MaxUint64, math.MaxUint64 / 3} {
		lo, hi := histBounds(histIndex(v))
		if v < lo || v > hi || histIndex(v) >= histBuckets {
			t.Errorf(
				"%d in bucket %d [%d, %d]",
				v, histIndex(v), lo, hi)
		}
	}
	var m histogram
	m.merge(&h)
	m.record(5e9)
	if m.n != h.n+1 || m.max != 5e9 || m.quantile(1) != 5e9 {
		t.Errorf(
			"merge: n %d max %d",
			m.n, m.max)
	}
	if a := testing.AllocsPerRun(100, func() { h.record(12345) }); a != 0 {
		t.Errorf(
			"record allocates %v",
			a)
	}
}
