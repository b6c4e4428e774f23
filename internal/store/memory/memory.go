// Package memory is a Store that keeps everything in memory: fast, and gone on restart (every
// channel then gets a new epoch, so resuming subscribers are told of the gap).
package memory

import (
	"context"
	"sync"
	"time"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store"
)

const shards = 64

// Store is an in-memory hub.Store.
type Store struct {
	shards [shards]shard
	now    func() time.Time
	// epoch is the epoch of every channel not yet written or cleared, so that reading a channel
	// allocates nothing and its first publish keeps the epoch its readers already saw.
	epoch string
}

type shard struct {
	mu      sync.Mutex
	logs    map[string]*log
	dedup   map[dedupKey]dedupEntry
	inserts int
}

type dedupKey struct{ channel, key string }

type dedupEntry struct {
	msg     hub.Message
	expires time.Time
}

// log is one channel's history: msgs[0] is the oldest held.
type log struct {
	epoch   string
	last    uint64
	trimmed uint64 // highest offset dropped by retention
	msgs    []hub.Message
	// ret is the latest append's retention; reads apply its age too, so that an idle channel
	// does not serve history older than its age.
	ret hub.Retention
}

// New returns an empty store.
func New() *Store {
	s := &Store{now: time.Now, epoch: store.NewEpoch()}
	for i := range s.shards {
		s.shards[i].logs = make(map[string]*log)
		s.shards[i].dedup = make(map[dedupKey]dedupEntry)
	}
	return s
}

func (s *Store) shard(name string) *shard {
	// FNV-1a: cheap and good enough to spread channels over shards.
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return &s.shards[h%shards]
}

// log returns the channel's log, creating it for a write.
func (s *Store) log(sh *shard, name string) *log {
	l := sh.logs[name]
	if l == nil {
		l = &log{epoch: s.epoch}
		sh.logs[name] = l
	}
	return l
}

// peek returns the channel's log for a read; an unwritten channel reads as empty.
func (s *Store) peek(sh *shard, name string) *log {
	if l := sh.logs[name]; l != nil {
		return l
	}
	return &log{epoch: s.epoch}
}

// Append implements hub.Store.
func (s *Store) Append(ctx context.Context, batch []hub.Append) ([]hub.Appended, error) {
	out := make([]hub.Appended, len(batch))
	for i := range batch {
		out[i] = s.append(&batch[i])
	}
	return out, nil
}

func (s *Store) append(a *hub.Append) hub.Appended {
	sh := s.shard(a.Channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := a.Time
	var dk dedupKey
	if a.IdempotencyKey != "" {
		dk = dedupKey{a.Channel, a.IdempotencyKey}
		if e, ok := sh.dedup[dk]; ok && now.Before(e.expires) {
			return hub.Appended{Message: e.msg, Duplicate: true}
		}
	}
	l := s.log(sh, a.Channel)
	l.last++
	m := hub.Message{Channel: a.Channel, Epoch: l.epoch, Offset: l.last, Time: now, Event: a.Event,
		ContentType: a.ContentType, Data: a.Data}
	if a.TTL > 0 {
		m.Expires = now.Add(a.TTL)
	}
	l.msgs = append(l.msgs, m)
	l.ret = a.Retention
	l.trim(a.Retention, now)
	if a.IdempotencyKey != "" {
		sh.dedup[dk] = dedupEntry{msg: m, expires: now.Add(a.DedupWindow)}
		sh.inserts++
		if sh.inserts%1024 == 0 {
			for k, e := range sh.dedup {
				if !now.Before(e.expires) {
					delete(sh.dedup, k)
				}
			}
		}
	}
	return hub.Appended{Message: m}
}

func (l *log) trim(r hub.Retention, now time.Time) {
	drop := 0
	if n := len(l.msgs) - max(r.Size, 0); n > 0 {
		drop = n
	}
	if cut := store.Cutoff(r, now); !cut.IsZero() {
		for drop < len(l.msgs) && l.msgs[drop].Time.Before(cut) {
			drop++
		}
	}
	if drop == 0 {
		return
	}
	l.trimmed = l.msgs[drop-1].Offset
	clear(l.msgs[:drop]) // let the payloads go
	l.msgs = l.msgs[drop:]
	// Re-slicing walks the backing array forward; copy down now and then so it does not grow.
	if cap(l.msgs) > 2*len(l.msgs)+64 {
		l.msgs = append([]hub.Message(nil), l.msgs...)
	}
}

// Read implements hub.Store.
func (s *Store) Read(ctx context.Context, name, epoch string, after uint64, limit int) (hub.History, error) {
	sh := s.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l := s.peek(sh, name)
	now := s.now()
	l.trim(l.ret, now)
	h := hub.History{ChannelState: hub.ChannelState{Epoch: l.epoch, Offset: l.last}}
	if epoch != l.epoch || after > l.last {
		h.Gap = true
		after = 0
	} else if after < l.trimmed {
		h.Gap = true
	}
	// Offsets are dense in msgs, so the first one after `after` is found by arithmetic.
	i := 0
	if len(l.msgs) > 0 && after >= l.msgs[0].Offset {
		i = int(after - l.msgs[0].Offset + 1)
	}
	for ; i < len(l.msgs) && (limit <= 0 || len(h.Messages) < limit); i++ {
		if !l.msgs[i].Expired(now) {
			h.Messages = append(h.Messages, l.msgs[i])
		}
	}
	return h, nil
}

// Latest implements hub.Store.
func (s *Store) Latest(ctx context.Context, name string, limit int) (hub.History, error) {
	sh := s.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l := s.peek(sh, name)
	now := s.now()
	l.trim(l.ret, now)
	h := hub.History{ChannelState: hub.ChannelState{Epoch: l.epoch, Offset: l.last}}
	var rev []hub.Message
	for i := len(l.msgs) - 1; i >= 0 && (limit <= 0 || len(rev) < limit); i-- {
		if !l.msgs[i].Expired(now) {
			rev = append(rev, l.msgs[i])
		}
	}
	for i := len(rev) - 1; i >= 0; i-- {
		h.Messages = append(h.Messages, rev[i])
	}
	return h, nil
}

// State implements hub.Store.
func (s *Store) State(ctx context.Context, name string) (hub.ChannelState, error) {
	sh := s.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l := s.peek(sh, name)
	return hub.ChannelState{Epoch: l.epoch, Offset: l.last}, nil
}

// Clear implements hub.Store.
func (s *Store) Clear(ctx context.Context, name string) (hub.ChannelState, error) {
	sh := s.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l := &log{epoch: store.NewEpoch()}
	sh.logs[name] = l
	for k := range sh.dedup {
		if k.channel == name {
			delete(sh.dedup, k)
		}
	}
	return hub.ChannelState{Epoch: l.epoch}, nil
}

// Close implements hub.Store.
func (s *Store) Close() error { return nil }
