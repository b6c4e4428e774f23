package bench

import "math/bits"

// histogram is a log-linear histogram in the manner of HDR Histogram: values
// below 128 have a bucket each, and every power of two above that is split in
// 64 buckets, so a value is known to within 1/64 of itself (1.6 %) whatever its
// size, from nanoseconds to centuries. Recording is an index computation and
// an increment: no allocation, no lock. Each goroutine owns its histogram;
// they are merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	min    uint64
	max    uint64
}

const (
	histSubBits = 7
	histHalf    = 1 << (histSubBits - 1) // 64 buckets per power of two
	// Values below 1<<histSubBits map to themselves; a value of bit length e
	// above that maps to (e-histSubBits)*histHalf + (v >> (e-histSubBits)),
	// the top term being in [histHalf, 2*histHalf).
	histBuckets = (64-histSubBits)*histHalf + 2*histHalf
)

func histIndex(v uint64) int {
	e := bits.Len64(v)
	if e <= histSubBits {
		return int(v)
	}
	shift := e - histSubBits
	return shift*histHalf + int(v>>shift)
}

// histBounds returns the smallest and largest value that land in bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < 2*histHalf {
		return uint64(i), uint64(i)
	}
	shift := i/histHalf - 1
	m := uint64(i - shift*histHalf)
	lo = m << shift
	return lo, lo + (1 << shift) - 1
}

func (h *histogram) record(v uint64) {
	h.counts[histIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

func (h *histogram) merge(o *histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at quantile q (0 < q <= 1): the middle of the
// bucket holding the ceil(q*n)-th smallest value, kept within [min, max].
func (h *histogram) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++
	}
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histBounds(i)
			v := lo + (hi-lo)/2
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

func (h *histogram) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sum) / float64(h.n)
}
