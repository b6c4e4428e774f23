package hub

import "sync"

// Lanes are the goroutines of a connection layer that write its connections, each owning its
// own for good. The hub keeps a channel's subscriptions per lane, and hands each lane's writer
// its part of a large fanout to walk itself: the writer then queues to its connections and
// writes them on one core, instead of finding each connection's state in another core's cache
// where the publisher left it, and the publisher queues one job per lane instead of one item
// per subscriber.
type Lanes interface {
	// Lanes returns how many lanes there are.
	Lanes() int
	// Post hands j to the goroutine of lane, which runs it with RunJobs soon, in post order.
	Post(lane int, j Job)
	// Wait blocks while a lane holds more jobs than it should, so that publishers who outrun
	// the writers slow down instead of queueing without bound. Called with no lock held.
	Wait()
}

// Laned is implemented by a Sink that one lane writes: Lane returns it, or -1 for none.
type Laned interface {
	Lane() int
}

// Warmer is implemented by a Sink whose delivery reads memory that a large fanout finds out of
// the cache. A lane's walk calls Warm on a chunk of subscriptions before it delivers to them:
// loads with no lock between them overlap, where each delivery, which takes the sink's lock,
// would otherwise wait for its own. Warm must only read, and only what no other goroutine
// writes without a lock held (what a sink sets once, atomics). It returns something computed
// from what it loaded, so that the loads are not dropped as unused; the walk ignores it.
type Warmer interface {
	Warm() uintptr
}

// Job is one frame for the subscriptions of one channel in one lane.
type Job struct {
	ch   *chanState
	f    *Frame
	seq  uint64 // the lane's post count: subscriptions that joined later skip the job
	lane int
}

// walkChunk is how many subscriptions a lane's walk queues to before it lets its writer write
// them, while their state is still in the writer's cache.
const walkChunk = 64

// maxWalkJobs bounds the jobs a walk takes on: beyond, they wait in the lane's list, where
// they count against the bound that makes publishers wait (Lanes.Wait).
const maxWalkJobs = 256

// inlineMax is the largest part of a fanout the publisher delivers itself: below it, waking a
// writer costs more than it saves.
const inlineMax = 32

// lane is a channel's subscriptions in one lane, and their delivery state. The publisher
// delivers to a lane itself while it is small and has no job waiting; otherwise it posts a job.
type lane struct {
	mu   sync.Mutex
	subs []*Subscription // nil entries are holes, left by closes during a walk
	// walking is set while the lane's writer walks subs with mu released between chunks:
	// a close leaves a hole instead of moving the last subscription, and the walk compacts.
	walking bool
	holes   int
	posted  uint64 // jobs ever posted
	pending int    // jobs posted and not yet run
	// members counts the subscriptions. It changes under both the channel's lock and mu, so
	// that a fanout, which holds the former, passes an empty lane without taking the latter.
	members int
	// A whole number of cache lines, so that the lanes of a channel, side by side in an array
	// that starts a line, share none: two writers walk them at once.
	_ [56]byte
}

func (ln *lane) add(s *Subscription) {
	s.ln, s.idx, s.seen = ln, len(ln.subs), ln.posted
	ln.subs = append(ln.subs, s)
	ln.members++
}

func (ln *lane) remove(s *Subscription) {
	ln.members--
	if ln.walking {
		ln.subs[s.idx] = nil
		ln.holes++
		return
	}
	last := len(ln.subs) - 1
	ln.subs[s.idx] = ln.subs[last]
	ln.subs[s.idx].idx = s.idx
	ln.subs[last] = nil
	ln.subs = ln.subs[:last]
}

func (ln *lane) compact() {
	kept := ln.subs[:0]
	for _, s := range ln.subs {
		if s != nil {
			s.idx = len(kept)
			kept = append(kept, s)
		}
	}
	clear(ln.subs[len(kept):])
	ln.subs, ln.holes = kept, 0
}

// fanout hands f to every subscription of ch: the small lanes' directly, the others' through
// their writers. It reports whether it posted a job. Caller holds ch.mu.
func (h *Hub) fanout(ch *chanState, f *Frame) bool {
	posted := false
	n := 0
	for i := range ch.lanes {
		ln := &ch.lanes[i]
		if ln.members == 0 {
			continue
		}
		ln.mu.Lock()
		switch {
		case i == len(ch.lanes)-1 || (ln.pending == 0 && len(ln.subs) <= inlineMax):
			// The publisher's own lane, or a small one with nothing waiting: delivering here
			// keeps the lane's order.
			for _, s := range ln.subs {
				s.deliver(f, nil)
			}
			n += len(ln.subs)
		default:
			ln.posted++
			ln.pending++
			h.cfg.Lanes.Post(i, Job{ch: ch, f: f, seq: ln.posted, lane: i})
			posted = true
		}
		ln.mu.Unlock()
	}
	if n > 0 {
		h.cfg.Observer.Delivered(n)
	}
	return posted
}

// Runner is the goroutine that runs a lane's jobs, as RunJobs sees it.
type Runner interface {
	// Flush writes what the walk queued so far. Called with no lock held.
	Flush()
	// More removes and returns up to max of the jobs at the head of the lane's list that
	// continue the walk of j (Job.Continues): a walk takes them on for the subscriptions it has
	// not reached yet.
	More(j Job, max int) []Job
	// Return puts jobs back at the head of the lane's list, in order: a walk that took them on
	// had already passed some subscriptions, which the next walk of them reaches.
	Return(jobs []Job)
	// Deliver hands f to s, a sink of the lane, for the next Flush to write: the runner may
	// queue a sink it writes on a list of its own, without the lock that other goroutines
	// take to make a sink ready. It must otherwise do what s.Deliver does.
	Deliver(s Sink, f *Frame)
}

// Continues reports whether j is for the same channel and lane as prev: a walk of prev may take
// j on.
func (j Job) Continues(prev Job) bool { return j.ch == prev.ch && j.lane == prev.lane }

// RunJobs runs jobs, posted to one lane, in order. After each chunk of subscriptions it calls
// r.Flush, with no lock held, for the caller to write what it just queued. Consecutive jobs of
// one channel are walked together, so that a subscriber gets all of them queued before its
// connection is written: when messages come faster than they are written, several leave in one
// write. A walk also takes on the jobs of its channel posted meanwhile (Runner.More), so that a
// message published during a walk reaches the subscriptions ahead of it in this walk, not a
// whole walk later.
func RunJobs(jobs []Job, r Runner) {
	for len(jobs) > 0 {
		n := 1
		for n < len(jobs) && jobs[n].Continues(jobs[0]) {
			n++
		}
		// Jobs of this channel further on in the batch come before any posted since: a walk
		// that took the latter on would deliver them first.
		takeOn := true
		for _, j := range jobs[n:] {
			if j.Continues(jobs[0]) {
				takeOn = false
				break
			}
		}
		walk(jobs[:n], r, takeOn)
		jobs = jobs[n:]
	}
}

func walk(jobs []Job, r Runner, takeOn bool) {
	ch := jobs[0].ch
	ln := &ch.lanes[jobs[0].lane]
	whole := len(jobs) // the jobs that every subscription gets in this walk
	n := 0
	ln.mu.Lock()
	ln.walking = true
	// Subscriptions added during the walk joined after every job in it was posted; those it
	// takes on reach them in the next walk.
	end := len(ln.subs)
	for i := 0; i < end; {
		stop := min(i+walkChunk, end)
		last := jobs[len(jobs)-1].seq
		warm(ln.subs[i:stop], last)
		for ; i < stop; i++ {
			s := ln.subs[i]
			if s == nil || s.seen >= last {
				continue
			}
			for j := range jobs {
				if jobs[j].seq > s.seen {
					s.deliver(jobs[j].f, r)
					n++
				}
			}
			s.seen = last
		}
		ln.mu.Unlock()
		r.Flush()
		if takeOn && i < end && len(jobs) < maxWalkJobs {
			if more := r.More(jobs[0], maxWalkJobs-len(jobs)); len(more) > 0 {
				// A copy: jobs is the caller's batch, whose next jobs follow it.
				jobs = append(jobs[:len(jobs):len(jobs)], more...)
			}
		}
		ln.mu.Lock()
	}
	ln.walking = false
	ln.pending -= whole
	if ln.holes > 0 {
		ln.compact()
	}
	ln.mu.Unlock()
	if len(jobs) > whole {
		// Taken on after the walk began: the subscriptions it had passed still need them.
		r.Return(jobs[whole:])
	}
	if n > 0 {
		ch.hub.cfg.Observer.Delivered(n)
	}
}

// warm loads what delivering to those of subs that have not had job last will read (see
// Warmer). Caller holds their lane's lock.
func warm(subs []*Subscription, last uint64) {
	for _, s := range subs {
		if s == nil || s.seen >= last {
			continue
		}
		if w, ok := s.sink.(Warmer); ok {
			w.Warm()
		}
	}
}
