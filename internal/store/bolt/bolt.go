// Package bolt is a durable hub.Store on bbolt: a publish is answered once it is on disk, and
// epochs, offsets, history and idempotency keys survive a restart or a crash.
//
// One committer goroutine owns every write. Append, Clear and the retention sweep hand it an op;
// it takes every op waiting, applies them all in one read-write transaction and commits them
// with one bbolt commit (group commit), then answers each caller. Reads use read-only
// transactions, which run concurrently with the committer.
//
// Layout, in one bbolt file:
//
//	store    "epoch" → the epoch of never-written channels
//	meta     channel → epoch, last offset, migrated offset, trimmed offset, history age
//	journal  seq(8) → channel, offset, message: the newest messages, in commit order
//	msgs     channel 0x00 offset(8) → message: time(8) expires(8) event content-type data
//	dedup    channel 0x00 key → expires(8) offset(8) message
//	exp      time(8) kind(1) key → empty: what the sweep must look at, soonest first
//
// A commit's cost is mostly its dirty pages (each is written and then flushed by fsync). Putting
// each message under its channel's key range would dirty a page, and its branch pages, per
// channel in every commit; so a commit appends its messages to the journal instead, where they
// share a few pages. Once the journal holds journalMax messages, a commit migrates them all to
// msgs, dirtying a page per channel for many messages at once. A channel's messages up to its
// migrated offset are in msgs, the later ones in the journal, which reads scan.
//
// Channel names never hold 0x00, so "channel 0x00" prefixes one channel's keys and no other's.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store"
)

// Options tune a Store; the zero value is the default.
type Options struct {
	// SweepInterval is how often messages past their TTL or history age, and expired
	// idempotency keys, are deleted (reads skip them before that). Default: a minute.
	SweepInterval time.Duration
	// LockTimeout bounds the wait for another process holding the database. Default: 5 s.
	LockTimeout time.Duration
	// MaxSize caps the database file, in bytes; a commit that would grow it past the cap fails.
	// 0: no cap.
	MaxSize int
	// journalMax overrides the constant, for tests that want to migrate often.
	journalMax int
}

const (
	// queueLen bounds the ops waiting for the committer; callers past it wait to enqueue.
	queueLen = 1024
	// maxGroup bounds the publications committed in one transaction, so that one commit's
	// latency, and the memory it dirties, stay bounded.
	maxGroup = 8192
	// journalMax is how many messages the journal holds before they migrate to msgs: more makes
	// migrating cheaper per message, and reading a busy channel's newest messages dearer.
	journalMax = 1024
	// deleteChunk batches the deletes of trimmed messages (see writer.trim).
	deleteChunk = 64
	// maxCached bounds the channels whose metadata the committer keeps; past it the cache is
	// dropped and refilled from disk as channels are written.
	maxCached = 1 << 16
	// maxArena bounds the arena kept from one group to the next.
	maxArena = 4 << 20
	// sweepChunk bounds the entries one sweep transaction handles, so that publishes are not
	// held up behind a long sweep.
	sweepChunk = 4096
)

var (
	bucketStore   = []byte("store")
	bucketMeta    = []byte("meta")
	bucketJournal = []byte("journal")
	bucketMsgs    = []byte("msgs")
	bucketDedup   = []byte("dedup")
	bucketExp     = []byte("exp")
	keyEpoch      = []byte("epoch")
)

// Kinds of exp entries.
const (
	expMessage byte = 'm' // the rest of the key is the message's msgs key
	expDedup   byte = 'd' // the rest of the key is a dedup key
)

var errClosed = fmt.Errorf("bolt store: %w", hub.ErrClosed)

// Store is a durable hub.Store. It is safe for concurrent use.
type Store struct {
	db *bbolt.DB
	// epoch is the epoch of every channel not yet written or cleared, so that reading a channel
	// writes nothing and its first publish keeps the epoch its readers already saw.
	epoch   string
	ops     chan op
	quit    chan struct{} // closed by Close
	stopped chan struct{} // closed once the committer has answered its last op
	swept   chan struct{} // closed once the sweeper has returned
	once    sync.Once
	err     error // Close's
}

// Open opens, or creates, the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Minute
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.journalMax <= 0 {
		opts.journalMax = journalMax
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bolt store: %w", err)
	}
	db, err := bbolt.Open(filepath.Join(dir, "crier.db"), 0o600, &bbolt.Options{
		Timeout: opts.LockTimeout,
		// The freelist is rebuilt by scanning on open instead of being written on every commit:
		// a page less per commit, and nothing to lose in a crash.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
		MaxSize:        opts.MaxSize,
	})
	if err != nil {
		return nil, fmt.Errorf("bolt store: open %s: %w", dir, err)
	}
	epoch, err := initialize(db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bolt store: %w", err)
	}
	s := &Store{db: db, epoch: epoch, ops: make(chan op, queueLen), quit: make(chan struct{}),
		stopped: make(chan struct{}), swept: make(chan struct{})}
	go s.commitLoop(&writer{epoch: epoch, journalMax: opts.journalMax, cache: make(map[string]*meta)})
	go s.sweepLoop(opts.SweepInterval)
	return s, nil
}

// initialize creates the buckets and the store-wide epoch on first open, and returns the epoch.
func initialize(db *bbolt.DB) (string, error) {
	var epoch string
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketStore, bucketMeta, bucketJournal, bucketMsgs, bucketDedup, bucketExp} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		b := tx.Bucket(bucketStore)
		if v := b.Get(keyEpoch); v != nil {
			epoch = string(v)
			return nil
		}
		epoch = store.NewEpoch()
		return b.Put(keyEpoch, []byte(epoch))
	})
	return epoch, err
}

// Close stops the committer and the sweeper and closes the database. Ops still queued are
// answered with hub.ErrClosed; a commit under way finishes first.
func (s *Store) Close() error {
	s.once.Do(func() {
		close(s.quit)
		<-s.stopped
		<-s.swept
		if err := s.db.Close(); err != nil {
			s.err = fmt.Errorf("bolt store: close: %w", err)
		}
	})
	return s.err
}

func (s *Store) closed() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// Append implements hub.Store. It returns once the batch is durable. When ctx ends first it
// returns ctx.Err(), and the batch may still be written: a caller that retries should use an
// idempotency key.
func (s *Store) Append(ctx context.Context, batch []hub.Append) ([]hub.Appended, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	o := &appendOp{reply: newReply(), batch: batch, out: make([]hub.Appended, len(batch))}
	if err := s.submit(ctx, o, &o.reply); err != nil {
		return nil, err
	}
	return o.out, nil
}

// Clear implements hub.Store.
func (s *Store) Clear(ctx context.Context, name string) (hub.ChannelState, error) {
	o := &clearOp{reply: newReply(), channel: name}
	if err := s.submit(ctx, o, &o.reply); err != nil {
		return hub.ChannelState{}, err
	}
	return o.state, nil
}

// submit hands o to the committer and waits for its answer.
func (s *Store) submit(ctx context.Context, o op, r *reply) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed() {
		return errClosed
	}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.quit:
		return errClosed
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopped:
		// The committer answered everything it took before stopping; o may have been queued
		// after its last look at the queue.
		select {
		case <-r.done:
			return r.err
		default:
			return errClosed
		}
	}
}

// op is a write that the committer applies within a group's transaction.
type op interface {
	// apply makes the op's changes; an error aborts the whole group.
	apply(w *writer) error
	// size is how many publications the op carries, to bound a group.
	size() int
	finish(err error)
}

// reply is how the committer answers an op's caller.
type reply struct {
	err  error
	done chan struct{}
}

func newReply() reply { return reply{done: make(chan struct{})} }

func (r *reply) finish(err error) {
	r.err = err
	close(r.done)
}

type appendOp struct {
	reply
	batch []hub.Append
	out   []hub.Appended
}

func (o *appendOp) size() int { return len(o.batch) }

func (o *appendOp) apply(w *writer) error {
	for i := range o.batch {
		r, err := w.append(&o.batch[i])
		if err != nil {
			return err
		}
		o.out[i] = r
	}
	return nil
}

type clearOp struct {
	reply
	channel string
	state   hub.ChannelState
}

func (o *clearOp) size() int { return 1 }

func (o *clearOp) apply(w *writer) error {
	st, err := w.clear(o.channel)
	o.state = st
	return err
}

// commitLoop is the committer: it commits the ops waiting as one group, until Close.
//
// bbolt's db.Batch was measured instead, with 64 publishers each putting one 100-byte message
// over 100 channels and nothing else: 5,100 puts/s with its default 10 ms MaxBatchDelay (it
// waits for a batch of 1000 that 64 publishers never fill), 21,500 at 1 ms, 17,900 at 200 µs.
// It sleeps where this loop collects, and it re-runs the functions of a failed batch one by
// one, which the metadata cache would have to survive.
func (s *Store) commitLoop(w *writer) {
	defer close(s.stopped)
	group := make([]op, 0, 256)
	l := lingerer{timer: time.NewTimer(time.Hour)}
	for !s.closed() {
		select {
		case o := <-s.ops:
			group = s.collect(append(group[:0], o), &l)
			start := time.Now()
			s.commit(w, group)
			// Those just answered may publish again at once, besides those already waiting.
			l.target, l.until = len(group)+len(s.ops), time.Now().Add(time.Since(start)/4)
			clear(group) // let the answered ops go
		case <-s.quit:
		}
	}
	l.timer.Stop()
	s.refuse()
}

// lingerer says how long collect may wait for a bigger group. Without waiting, a group is only
// what queued while the previous commit was on disk: publishers that wait for their answer
// split into two cohorts taking turns, each commit carrying half of them. Waiting a fraction of
// a commit's time for those just answered merges the cohorts (64 publishers: 32 per commit
// without, 63 with), and costs at most that fraction when they do not come back.
type lingerer struct {
	target int       // ops worth waiting for
	until  time.Time // how long
	timer  *time.Timer
}

// collect adds the ops waiting to group, and those arriving before l's deadline while it is
// short of l's target, up to maxGroup publications.
func (s *Store) collect(group []op, l *lingerer) []op {
	n := group[0].size()
	for n < maxGroup {
		select {
		case o := <-s.ops:
			group = append(group, o)
			n += o.size()
			continue
		default:
		}
		wait := time.Until(l.until)
		if len(group) >= l.target || wait <= 0 {
			return group
		}
		l.timer.Reset(wait)
		select {
		case o := <-s.ops:
			group = append(group, o)
			n += o.size()
		case <-l.timer.C:
			return group
		}
	}
	return group
}

// refuse answers the ops still queued at Close.
func (s *Store) refuse() {
	for {
		select {
		case o := <-s.ops:
			o.finish(errClosed)
		default:
			return
		}
	}
}

// commit applies group in one transaction and answers its ops. On failure every op gets the
// error and the writer forgets what it cached, which may hold the failed changes.
func (s *Store) commit(w *writer, group []op) {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		if err := w.begin(tx); err != nil {
			return err
		}
		for _, o := range group {
			if err := o.apply(w); err != nil {
				return err
			}
		}
		if w.journalLen >= w.journalMax {
			if err := w.migrate(time.Now()); err != nil {
				return err
			}
		}
		return w.flush()
	})
	if err != nil {
		w.forget()
		err = fmt.Errorf("bolt store: commit: %w", err)
	}
	for _, o := range group {
		o.finish(err)
	}
}

// meta is where one channel's history stands.
type meta struct {
	name     string // set in the committer's cache only
	epoch    string
	last     uint64
	migrated uint64        // offsets up to it are in msgs, later ones in the journal
	trimmed  uint64        // highest offset dropped by retention
	age      time.Duration // the latest append's history age, for reads and the sweep
	// front is, in the committer's cache, the time of the first message in msgs after trimmed
	// when trim last looked (zero: unknown or none): until the age cutoff passes it, trimming
	// by age on append need not look again. Messages a little out of time order may be trimmed
	// a little late for it; reads never depend on it.
	front time.Time
	dirty bool // changed in the transaction under way
}

func encodeMeta(dst []byte, m *meta) []byte {
	dst = append(dst, byte(len(m.epoch)))
	dst = append(dst, m.epoch...)
	dst = binary.BigEndian.AppendUint64(dst, m.last)
	dst = binary.BigEndian.AppendUint64(dst, m.migrated)
	dst = binary.BigEndian.AppendUint64(dst, m.trimmed)
	return binary.BigEndian.AppendUint64(dst, uint64(m.age))
}

func decodeMeta(v []byte) (*meta, error) {
	if len(v) < 1 || len(v) != 1+int(v[0])+32 {
		return nil, errors.New("corrupt channel metadata")
	}
	n := 1 + int(v[0])
	u := func(i int) uint64 { return binary.BigEndian.Uint64(v[n+8*i:]) }
	return &meta{epoch: string(v[1:n]), last: u(0), migrated: u(1), trimmed: u(2), age: time.Duration(u(3))}, nil
}

// loadMeta reads a channel's metadata; a channel never written stands at the store's epoch.
func loadMeta(b *bbolt.Bucket, name, epoch string) (*meta, error) {
	v := b.Get([]byte(name))
	if v == nil {
		return &meta{epoch: epoch}, nil
	}
	m, err := decodeMeta(v)
	if err != nil {
		return nil, fmt.Errorf("channel %s: %w", name, err)
	}
	return m, nil
}

// Keys.

func prefix(dst []byte, name string) []byte {
	dst = append(dst, name...)
	return append(dst, 0)
}

func msgKey(dst []byte, name string, off uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(dst, name), off)
}

// offsetOf returns the offset of a msgs key of channel name, or false for another channel's key.
func offsetOf(k []byte, name string) (uint64, bool) {
	if len(k) != len(name)+9 || k[len(name)] != 0 || string(k[:len(name)]) != name {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[len(name)+1:]), true
}

// checkKeys rejects what would make a malformed or oversized key.
func checkKeys(a *hub.Append) error {
	if strings.IndexByte(a.Channel, 0) >= 0 {
		return fmt.Errorf("%w: channel name holds a NUL byte", hub.ErrBadRequest)
	}
	if 10+len(a.Channel)+len(a.IdempotencyKey) > bbolt.MaxKeySize {
		return fmt.Errorf("%w: channel name or idempotency key too long", hub.ErrBadRequest)
	}
	return nil
}

func expKey(dst []byte, at time.Time, kind byte, key []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, unixNano(at))
	dst = append(dst, kind)
	return append(dst, key...)
}

// Messages: time(8) expires(8), uvarint-prefixed event and content type, then the data. Times
// are Unix nanoseconds, 0 for the zero time.

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func fromUnixNano(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

func encodedLen(m *hub.Message) int {
	return 16 + 2*binary.MaxVarintLen64 + len(m.Event) + len(m.ContentType) + len(m.Data)
}

func encodeMessage(dst []byte, m *hub.Message) []byte {
	dst = binary.BigEndian.AppendUint64(dst, unixNano(m.Time))
	dst = binary.BigEndian.AppendUint64(dst, unixNano(m.Expires))
	dst = binary.AppendUvarint(dst, uint64(len(m.Event)))
	dst = append(dst, m.Event...)
	dst = binary.AppendUvarint(dst, uint64(len(m.ContentType)))
	dst = append(dst, m.ContentType...)
	return append(dst, m.Data...)
}

// messageTime and messageExpires read a message's times without decoding the rest; the caller
// has checked that it is at least 16 bytes long.
func messageTime(v []byte) time.Time    { return fromUnixNano(binary.BigEndian.Uint64(v)) }
func messageExpires(v []byte) time.Time { return fromUnixNano(binary.BigEndian.Uint64(v[8:])) }

// decodeMessage copies a stored message out of the database.
func decodeMessage(v []byte, name, epoch string, off uint64) (hub.Message, error) {
	if len(v) < 16 {
		return hub.Message{}, fmt.Errorf("corrupt message %s:%d", name, off)
	}
	m := hub.Message{Channel: name, Epoch: epoch, Offset: off, Time: messageTime(v), Expires: messageExpires(v)}
	ev, rest, ok := cutString(v[16:])
	ct, rest, ok2 := cutString(rest)
	if !ok || !ok2 {
		return hub.Message{}, fmt.Errorf("corrupt message %s:%d", name, off)
	}
	m.Event, m.ContentType, m.Data = ev, ct, bytes.Clone(rest)
	return m, nil
}

// cutString splits a uvarint-prefixed string off b.
func cutString(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}

// Journal entries: uvarint-prefixed channel, offset(8), then the message.

func journalHeaderLen(name string) int { return binary.MaxVarintLen64 + len(name) + 8 }

func appendJournalHeader(dst []byte, name string, off uint64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	return binary.BigEndian.AppendUint64(dst, off)
}

// splitJournal returns a journal entry's channel, offset and message.
func splitJournal(v []byte) (name []byte, off uint64, msg []byte, ok bool) {
	n, k := binary.Uvarint(v)
	if k <= 0 || uint64(len(v)-k) < n+8+16 {
		return nil, 0, nil, false
	}
	end := k + int(n)
	return v[k:end], binary.BigEndian.Uint64(v[end:]), v[end+8:], true
}

// Dedup values: expires(8) offset(8) then the first publish's message.

func dedupExpires(v []byte) time.Time { return fromUnixNano(binary.BigEndian.Uint64(v)) }

// writer is the committer's state: the metadata cache, the journal's length and next key, the
// buffers it reuses from one group to the next, and the buckets of the group's transaction.
type writer struct {
	epoch      string // the store's
	journalMax int
	// cache holds channels' metadata as committed or being written.
	cache map[string]*meta
	dirty []*meta
	// loaded says journalLen and seq are known.
	loaded     bool
	journalLen int
	seq        uint64 // the next journal key
	// The transaction under way, its buckets, and a cursor on msgs.
	tx                                 *bbolt.Tx
	meta, journal, msgs, dedup, expiry *bbolt.Bucket
	cur                                *bbolt.Cursor
	// arena holds the keys and values put in the transaction: bbolt needs them intact until it
	// commits, and one arena, reused by the next group, spares an allocation for each.
	arena []byte
	// scratch holds keys that are only looked up or deleted, and encodings being built.
	scratch []byte
}

// begin readies w for a group's transaction.
func (w *writer) begin(tx *bbolt.Tx) error {
	if len(w.cache) > maxCached {
		clear(w.cache) // all flushed: the last group committed, or failed and forgot
	}
	w.tx = tx
	w.meta, w.journal, w.msgs = tx.Bucket(bucketMeta), tx.Bucket(bucketJournal), tx.Bucket(bucketMsgs)
	w.dedup, w.expiry = tx.Bucket(bucketDedup), tx.Bucket(bucketExp)
	// Channels grow at the end of their key range, and the journal at its end.
	w.msgs.FillPercent, w.journal.FillPercent = 0.9, 1
	w.cur = w.msgs.Cursor()
	w.dirty = w.dirty[:0]
	// The previous transaction is over, so its arena may be written again.
	w.arena = w.arena[:0]
	if cap(w.arena) > maxArena {
		w.arena = nil
	}
	if !w.loaded {
		return w.loadJournal()
	}
	return nil
}

// forget drops what w knows of the database, to reload it from disk after a failed commit.
func (w *writer) forget() {
	clear(w.cache)
	w.loaded = false
}

// loadJournal counts the journal's entries and finds its next key.
func (w *writer) loadJournal() error {
	w.journalLen, w.seq = 0, 0
	c := w.journal.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != 8 {
			return errors.New("corrupt journal key")
		}
		w.journalLen++
		w.seq = binary.BigEndian.Uint64(k) + 1
	}
	w.loaded = true
	return nil
}

// take returns n bytes of arena, valid until the transaction ends. A full arena is replaced,
// not grown in place, so that the slices already handed out stay put.
func (w *writer) take(n int) []byte {
	if cap(w.arena)-len(w.arena) < n {
		w.arena = make([]byte, 0, max(2*cap(w.arena), n, 64<<10))
	}
	start := len(w.arena)
	w.arena = w.arena[:start+n]
	return w.arena[start : start+n : start+n]
}

// keep copies b into the arena.
func (w *writer) keep(b []byte) []byte {
	dst := w.take(len(b))
	copy(dst, b)
	return dst
}

// channel returns a channel's metadata from the cache, loading it on first use.
func (w *writer) channel(name string) (*meta, error) {
	if m := w.cache[name]; m != nil {
		return m, nil
	}
	m, err := loadMeta(w.meta, name, w.epoch)
	if err != nil {
		return nil, err
	}
	m.name = name
	w.cache[name] = m
	return m, nil
}

// touch marks m to be written when the group is flushed.
func (w *writer) touch(m *meta) {
	if !m.dirty {
		m.dirty = true
		w.dirty = append(w.dirty, m)
	}
}

// flush writes the metadata that the group changed.
func (w *writer) flush() error {
	for _, m := range w.dirty {
		m.dirty = false
		key := w.take(len(m.name))
		copy(key, m.name)
		w.scratch = encodeMeta(w.scratch[:0], m)
		if err := w.meta.Put(key, w.keep(w.scratch)); err != nil {
			return fmt.Errorf("put metadata of %s: %w", m.name, err)
		}
	}
	return nil
}

func (w *writer) append(a *hub.Append) (hub.Appended, error) {
	if err := checkKeys(a); err != nil {
		return hub.Appended{Err: err}, nil
	}
	m, err := w.channel(a.Channel)
	if err != nil {
		return hub.Appended{}, err
	}
	if a.IdempotencyKey != "" {
		if dup, ok, err := w.duplicate(a, m); err != nil || ok {
			return dup, err
		}
	}
	m.last++
	m.age = a.Retention.Age
	w.touch(m)
	msg := hub.Message{Channel: a.Channel, Epoch: m.epoch, Offset: m.last, Time: a.Time, Event: a.Event,
		ContentType: a.ContentType, Data: a.Data}
	if a.TTL > 0 {
		msg.Expires = a.Time.Add(a.TTL)
	}
	val, err := w.record(&msg)
	if err != nil {
		return hub.Appended{}, err
	}
	if !msg.Expires.IsZero() {
		if err := w.expire(msg.Expires, expMessage, msgKey(w.take(len(a.Channel) + 9)[:0], a.Channel, m.last)); err != nil {
			return hub.Appended{}, err
		}
	}
	if err := w.trim(m, a.Retention, a.Time); err != nil {
		return hub.Appended{}, err
	}
	if a.IdempotencyKey != "" && a.DedupWindow > 0 {
		if err := w.remember(a, m.last, val); err != nil {
			return hub.Appended{}, err
		}
	}
	return hub.Appended{Message: msg}, nil
}

// record appends msg to the journal and returns its encoding.
func (w *writer) record(msg *hub.Message) ([]byte, error) {
	key := binary.BigEndian.AppendUint64(w.take(8)[:0], w.seq)
	v := w.take(journalHeaderLen(msg.Channel) + encodedLen(msg))[:0]
	v = appendJournalHeader(v, msg.Channel, msg.Offset)
	head := len(v)
	v = encodeMessage(v, msg)
	if err := w.journal.Put(key, v); err != nil {
		return nil, fmt.Errorf("put message %s:%d: %w", msg.Channel, msg.Offset, err)
	}
	w.seq++
	w.journalLen++
	return v[head:], nil
}

// expire records that key must be looked at by the sweep from at on.
func (w *writer) expire(at time.Time, kind byte, key []byte) error {
	k := expKey(w.take(9 + len(key))[:0], at, kind, key)
	if err := w.expiry.Put(k, nil); err != nil {
		return fmt.Errorf("put expiry: %w", err)
	}
	return nil
}

// duplicate returns the first publish under a's idempotency key while it is remembered.
func (w *writer) duplicate(a *hub.Append, m *meta) (hub.Appended, bool, error) {
	w.scratch = append(prefix(w.scratch[:0], a.Channel), a.IdempotencyKey...)
	v := w.dedup.Get(w.scratch)
	if len(v) < 16 || !a.Time.Before(dedupExpires(v)) {
		return hub.Appended{}, false, nil
	}
	msg, err := decodeMessage(v[16:], a.Channel, m.epoch, binary.BigEndian.Uint64(v[8:]))
	if err != nil {
		return hub.Appended{}, false, err
	}
	return hub.Appended{Message: msg, Duplicate: true}, true, nil
}

// remember stores the idempotency key of the message at off, whose encoding is val.
func (w *writer) remember(a *hub.Append, off uint64, val []byte) error {
	key := w.keep(append(prefix(w.scratch[:0], a.Channel), a.IdempotencyKey...))
	expires := a.Time.Add(a.DedupWindow)
	v := w.take(16 + len(val))
	binary.BigEndian.PutUint64(v, unixNano(expires))
	binary.BigEndian.PutUint64(v[8:], off)
	copy(v[16:], val)
	if err := w.dedup.Put(key, v); err != nil {
		return fmt.Errorf("put idempotency key: %w", err)
	}
	return w.expire(expires, expDedup, key)
}

// trim moves the channel's trimmed offset past the oldest messages beyond r's size and those
// in msgs older than its age at now (reads see the journal's too). Trimmed messages in msgs are
// deleted once trimmed crosses a multiple of deleteChunk: deleting one per append would dirty
// the page at the head of the channel's range in every commit. Trimmed messages in the journal
// are dropped when it migrates. Reads never look at or below trimmed.
func (w *writer) trim(m *meta, r hub.Retention, now time.Time) error {
	old := m.trimmed
	if size := uint64(max(r.Size, 0)); m.last-m.trimmed > size {
		m.trimmed = m.last - size
	}
	if cut := store.Cutoff(r, now); !cut.IsZero() && (m.front.IsZero() || m.front.Before(cut)) {
		m.trimmed, m.front = agedThrough(&view{name: m.name, m: m, msgs: w.cur}, m.trimmed, cut)
	}
	if m.trimmed == old {
		return nil
	}
	w.touch(m)
	if m.trimmed/deleteChunk == old/deleteChunk {
		return nil
	}
	return w.deleteThrough(m.name, m.trimmed)
}

// deleteThrough deletes the channel's messages in msgs up to offset upto.
func (w *writer) deleteThrough(name string, upto uint64) error {
	w.scratch = prefix(w.scratch[:0], name)
	// Seek again after each delete: a bbolt cursor may skip a key after Delete.
	for k, _ := w.cur.Seek(w.scratch); ; k, _ = w.cur.Seek(w.scratch) {
		off, ok := offsetOf(k, name)
		if !ok || off > upto {
			return nil
		}
		if err := w.cur.Delete(); err != nil {
			return fmt.Errorf("trim %s:%d: %w", name, off, err)
		}
	}
}

// migrate moves every journal entry to msgs, but for those trimmed or past their TTL at now.
func (w *writer) migrate(now time.Time) error {
	if w.journalLen == 0 {
		return nil
	}
	if err := w.journal.ForEach(func(_, v []byte) error { return w.move(v, now) }); err != nil {
		return err
	}
	// Dropping the bucket frees its pages at once; deleting entry by entry would rewrite them.
	if err := w.tx.DeleteBucket(bucketJournal); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	j, err := w.tx.CreateBucket(bucketJournal)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	j.FillPercent = 1
	w.journal, w.journalLen = j, 0
	return nil
}

// move puts the journal entry v in msgs unless it is trimmed or expired.
func (w *writer) move(v []byte, now time.Time) error {
	nameB, off, msg, ok := splitJournal(v)
	if !ok {
		return errors.New("migrate: corrupt journal entry")
	}
	m := w.cache[string(nameB)] // no allocation when cached
	if m == nil {
		var err error
		if m, err = w.channel(string(nameB)); err != nil {
			return err
		}
	}
	if off > m.migrated {
		m.migrated = off
		w.touch(m)
	}
	if off <= m.trimmed || off > m.last {
		return nil
	}
	if exp := messageExpires(msg); !exp.IsZero() && !now.Before(exp) {
		return nil
	}
	if err := w.msgs.Put(msgKey(w.take(len(m.name) + 9)[:0], m.name, off), w.keep(msg)); err != nil {
		return fmt.Errorf("migrate %s:%d: %w", m.name, off, err)
	}
	return nil
}

// clear drops a channel's history and idempotency keys and gives it a new epoch.
func (w *writer) clear(name string) (hub.ChannelState, error) {
	m, err := w.channel(name)
	if err != nil {
		return hub.ChannelState{}, err
	}
	*m = meta{name: name, epoch: store.NewEpoch(), dirty: m.dirty}
	w.touch(m)
	p := prefix(nil, name)
	if err := deletePrefix(w.msgs, p); err != nil {
		return hub.ChannelState{}, fmt.Errorf("clear %s: %w", name, err)
	}
	if err := deletePrefix(w.dedup, p); err != nil {
		return hub.ChannelState{}, fmt.Errorf("clear %s: %w", name, err)
	}
	if err := w.unjournal(name); err != nil {
		return hub.ChannelState{}, fmt.Errorf("clear %s: %w", name, err)
	}
	// exp entries left behind are harmless: the sweep checks what they point at.
	return hub.ChannelState{Epoch: m.epoch}, nil
}

// unjournal deletes the channel's journal entries.
func (w *writer) unjournal(name string) error {
	var keys [][]byte
	c := w.journal.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if ch, _, _, ok := splitJournal(v); ok && string(ch) == name {
			keys = append(keys, w.keep(k))
		}
	}
	for _, k := range keys {
		if err := w.journal.Delete(k); err != nil {
			return err
		}
	}
	w.journalLen -= len(keys)
	return nil
}

func deletePrefix(b *bbolt.Bucket, p []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Seek(p) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Reads.

// view is one channel's stored messages as a transaction sees them.
type view struct {
	name    string
	m       *meta
	msgs    *bbolt.Cursor
	journal []entry // the channel's messages after m.migrated, in offset order
}

type entry struct {
	off uint64
	msg []byte
}

// readView returns the channel's view in tx.
func (s *Store) readView(tx *bbolt.Tx, name string) (*view, error) {
	m, err := loadMeta(tx.Bucket(bucketMeta), name, s.epoch)
	if err != nil {
		return nil, err
	}
	v := &view{name: name, m: m, msgs: tx.Bucket(bucketMsgs).Cursor()}
	if m.migrated < m.last {
		c := tx.Bucket(bucketJournal).Cursor()
		for k, e := c.First(); k != nil; k, e = c.Next() {
			if ch, off, msg, ok := splitJournal(e); ok && string(ch) == name {
				v.journal = append(v.journal, entry{off, msg})
			}
		}
	}
	return v, nil
}

// each calls fn with the stored messages after offset after, oldest first, until it returns
// false.
func (v *view) each(after uint64, fn func(off uint64, msg []byte) bool) {
	if after < v.m.migrated {
		var key [64]byte
		for k, msg := v.msgs.Seek(msgKey(key[:0], v.name, after+1)); ; k, msg = v.msgs.Next() {
			off, ok := offsetOf(k, v.name)
			if !ok || off > v.m.migrated {
				break
			}
			if len(msg) >= 16 && !fn(off, msg) {
				return
			}
		}
	}
	for _, e := range v.journal {
		if e.off > after && !fn(e.off, e.msg) {
			return
		}
	}
}

// eachBack calls fn with the stored messages, newest first, until it returns false.
func (v *view) eachBack(fn func(off uint64, msg []byte) bool) {
	for _, e := range slices.Backward(v.journal) {
		if !fn(e.off, e.msg) {
			return
		}
	}
	// name 0x01 sorts after every msgs key of the channel and before any other channel's.
	k, msg := v.msgs.Seek(append([]byte(v.name), 1))
	if k == nil {
		k, msg = v.msgs.Last()
	} else {
		k, msg = v.msgs.Prev()
	}
	for ; ; k, msg = v.msgs.Prev() {
		off, ok := offsetOf(k, v.name)
		if !ok || (len(msg) >= 16 && !fn(off, msg)) {
			return
		}
	}
}

// floor returns the highest offset that a read at now treats as trimmed: the channel's trimmed
// offset, or past it the messages older than its history age that are not trimmed yet.
func (v *view) floor(now time.Time) uint64 {
	if v.m.age <= 0 {
		return v.m.trimmed
	}
	floor, _ := agedThrough(v, v.m.trimmed, now.Add(-v.m.age))
	return floor
}

// agedThrough returns the highest offset through which the channel's messages after from are
// all older than cut (from itself when the first is not), and the time of the first message
// after that offset (zero when there is none).
func agedThrough(v *view, from uint64, cut time.Time) (uint64, time.Time) {
	var front time.Time
	v.each(from, func(off uint64, msg []byte) bool {
		if t := messageTime(msg); !t.Before(cut) {
			front = t
			return false
		}
		from = off
		return true
	})
	return from, front
}

// view runs fn in a read-only transaction.
func (s *Store) view(fn func(tx *bbolt.Tx) error) error {
	if s.closed() {
		return errClosed
	}
	if err := s.db.View(fn); err != nil {
		return fmt.Errorf("bolt store: %w", err)
	}
	return nil
}

// State implements hub.Store.
func (s *Store) State(ctx context.Context, name string) (hub.ChannelState, error) {
	var st hub.ChannelState
	err := s.view(func(tx *bbolt.Tx) error {
		m, err := loadMeta(tx.Bucket(bucketMeta), name, s.epoch)
		if err != nil {
			return err
		}
		st = hub.ChannelState{Epoch: m.epoch, Offset: m.last}
		return nil
	})
	return st, err
}

// Read implements hub.Store.
func (s *Store) Read(ctx context.Context, name, epoch string, after uint64, limit int) (hub.History, error) {
	var h hub.History
	err := s.view(func(tx *bbolt.Tx) error {
		v, err := s.readView(tx, name)
		if err != nil {
			return err
		}
		now := time.Now()
		floor := v.floor(now)
		h.ChannelState = hub.ChannelState{Epoch: v.m.epoch, Offset: v.m.last}
		if epoch != v.m.epoch || after > v.m.last {
			h.Gap, after = true, 0
		} else if after < floor {
			h.Gap = true
		}
		v.each(max(after, floor), func(off uint64, msg []byte) bool {
			if limit > 0 && len(h.Messages) >= limit {
				return false
			}
			err = appendLive(&h.Messages, msg, v, off, now)
			return err == nil
		})
		return err
	})
	return h, err
}

// Latest implements hub.Store.
func (s *Store) Latest(ctx context.Context, name string, limit int) (hub.History, error) {
	var h hub.History
	err := s.view(func(tx *bbolt.Tx) error {
		v, err := s.readView(tx, name)
		if err != nil {
			return err
		}
		now := time.Now()
		floor := v.floor(now)
		h.ChannelState = hub.ChannelState{Epoch: v.m.epoch, Offset: v.m.last}
		v.eachBack(func(off uint64, msg []byte) bool {
			if off <= floor || (limit > 0 && len(h.Messages) >= limit) {
				return false
			}
			err = appendLive(&h.Messages, msg, v, off, now)
			return err == nil
		})
		slices.Reverse(h.Messages)
		return err
	})
	return h, err
}

// appendLive appends the message at off to ms unless its TTL has passed at now.
func appendLive(ms *[]hub.Message, msg []byte, v *view, off uint64, now time.Time) error {
	if exp := messageExpires(msg); !exp.IsZero() && !now.Before(exp) {
		return nil
	}
	m, err := decodeMessage(msg, v.name, v.m.epoch, off)
	if err != nil {
		return err
	}
	*ms = append(*ms, m)
	return nil
}

// Sweep.

// sweepLoop deletes what has expired every interval, until Close.
func (s *Store) sweepLoop(every time.Duration) {
	defer close(s.swept)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			// A failed sweep is retried at the next tick; reads skip what it left meanwhile.
			_ = s.sweep(time.Now())
		}
	}
}

// sweep migrates the journal, then deletes the messages past their TTL or their channel's
// history age at now and the idempotency keys expired at now, a chunk per transaction.
func (s *Store) sweep(now time.Time) error {
	o := &sweepOp{now: now}
	for {
		o.reply, o.more = newReply(), false
		if err := s.submit(context.Background(), o, &o.reply); err != nil {
			return err
		}
		if !o.more {
			return nil
		}
	}
}

type sweepOp struct {
	reply
	now  time.Time
	from []byte // the channel the history-age pass goes on from; nil: the first
	more bool   // the sweep is not finished
}

func (o *sweepOp) size() int { return sweepChunk }

func (o *sweepOp) apply(w *writer) error {
	// Migrating first puts every message where the passes below look.
	if err := w.migrate(o.now); err != nil {
		return err
	}
	n, err := w.sweepExpired(o.now, sweepChunk)
	if err != nil || n == sweepChunk {
		o.more = err == nil
		return err
	}
	o.from, err = w.sweepAged(o.from, o.now, sweepChunk-n)
	o.more = o.from != nil
	return err
}

// sweepExpired handles up to budget exp entries due at now and returns how many it handled.
func (w *writer) sweepExpired(now time.Time, budget int) (int, error) {
	c := w.expiry.Cursor()
	n := 0
	// Each handled entry is deleted, so the next one is always the first.
	for k, _ := c.First(); k != nil && n < budget; k, _ = c.First() {
		if len(k) > 9 { // anything shorter is malformed, and deleted
			if fromUnixNano(binary.BigEndian.Uint64(k)).After(now) {
				break
			}
			if err := w.expireEntry(k[8], k[9:], now); err != nil {
				return n, err
			}
		}
		if err := c.Delete(); err != nil {
			return n, fmt.Errorf("delete expiry: %w", err)
		}
		n++
	}
	return n, nil
}

// expireEntry deletes what an exp entry points at if it has expired at now. The entry may be
// stale (the message trimmed, the channel cleared, the key remembered again), so what it points
// at is checked, never assumed. A message still in the journal is dropped when it migrates.
func (w *writer) expireEntry(kind byte, key []byte, now time.Time) error {
	b, expires := w.msgs, messageExpires
	if kind == expDedup {
		b, expires = w.dedup, dedupExpires
	}
	v := b.Get(key)
	if len(v) < 16 {
		return nil
	}
	if at := expires(v); at.IsZero() || now.Before(at) {
		return nil
	}
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("delete expired entry: %w", err)
	}
	return nil
}

// sweepAged trims by history age up to budget channels from the channel from on, and returns
// the channel to go on from, or nil when all are done.
func (w *writer) sweepAged(from []byte, now time.Time, budget int) ([]byte, error) {
	c := w.meta.Cursor()
	k, _ := c.First()
	if from != nil {
		k, _ = c.Seek(from)
	}
	for n := 0; k != nil; k, _ = c.Next() {
		if n == budget {
			return bytes.Clone(k), nil
		}
		n++
		if err := w.sweepChannel(string(k), now); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// sweepChannel trims a channel by its history age at now and deletes what is trimmed.
func (w *writer) sweepChannel(name string, now time.Time) error {
	m, err := w.channel(name)
	if err != nil {
		return err
	}
	if m.age > 0 {
		if t, _ := agedThrough(&view{name: name, m: m, msgs: w.cur}, m.trimmed, now.Add(-m.age)); t != m.trimmed {
			m.trimmed = t
			w.touch(m)
		}
	}
	return w.deleteThrough(name, m.trimmed)
}
