package bench

// track follows one channel's sequence numbers as one subscriber receives
// them, and tells apart a message that arrives late (out of order: a higher
// number came first), one that arrives twice (duplicated), and, at the end,
// one that never arrived (lost). In the normal case, each number is next, and
// seeing it is a compare and an increment.
type track struct {
	ch   int    // channel index
	next uint64 // one past the highest sequence number seen; numbers start at 1
	// miss holds the numbers below next not seen yet, as ranges in
	// increasing order. It is empty unless the server skipped something.
	miss   []seqRange
	dup    uint64
	ooo    uint64
	forgot uint64 // numbers dropped from miss past maxMissRanges, counted lost
}

type seqRange struct{ lo, hi uint64 } // inclusive

// maxMissRanges bounds the memory a badly broken server can make a track use.
const maxMissRanges = 4096

func newTrack(ch int) track { return track{ch: ch, next: 1} }

// see records sequence number s; it reports whether s is seen for the first
// time.
func (t *track) see(s uint64) bool {
	switch {
	case s == t.next:
		t.next++
		return true
	case s > t.next:
		if len(t.miss) == maxMissRanges {
			r := t.miss[0]
			t.forgot += r.hi - r.lo + 1
			t.miss = append(t.miss[:0], t.miss[1:]...)
		}
		t.miss = append(t.miss, seqRange{t.next, s - 1})
		t.next = s + 1
		return true
	case s == 0:
		t.dup++ // never published: not a number the generator uses
		return false
	}
	for i := range t.miss {
		r := &t.miss[i]
		if s < r.lo || s > r.hi {
			continue
		}
		t.ooo++
		switch {
		case r.lo == r.hi:
			t.miss = append(t.miss[:i], t.miss[i+1:]...)
		case s == r.lo:
			r.lo++
		case s == r.hi:
			r.hi--
		default:
			hi := r.hi
			r.hi = s - 1
			t.miss = append(t.miss, seqRange{})
			copy(t.miss[i+2:], t.miss[i+1:])
			t.miss[i+1] = seqRange{s + 1, hi}
		}
		return true
	}
	t.dup++
	return false
}

// outcome compares what the track saw with the last sequence number published
// on its channel. uncertain lists, in increasing order, the numbers whose
// publish got no answer (they may or may not exist): their absence is not a
// loss. beyond counts numbers received that were never published.
func (t *track) outcome(last uint64, uncertain []uint64) (lost, beyond uint64) {
	count := func(lo, hi uint64) uint64 {
		if lo > hi {
			return 0
		}
		n := hi - lo + 1
		for _, u := range uncertain {
			if u >= lo && u <= hi {
				n--
			}
		}
		return n
	}
	lost = t.forgot
	for _, r := range t.miss {
		lost += count(r.lo, min(r.hi, last))
	}
	if t.next <= last {
		lost += count(t.next, last)
	} else if t.next-1 > last {
		beyond = t.next - 1 - last
	}
	return lost, beyond
}
