// Package hub is Crier's core: it publishes messages through a Store, orders them per channel,
// and fans each one out to the channel's subscribers as one shared Frame. It knows no transport:
// a transport hands it a Sink per connection and renders the frames it receives.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crier-push/crier/internal/channel"
)

// Errors the hub returns; callers map them to status codes.
var (
	ErrBadRequest       = errors.New("bad request")
	ErrPresenceDisabled = errors.New("presence is not enabled for this namespace")
)

// Namespace holds the options of one namespace.
type Namespace struct {
	HistorySize int
	HistoryTTL  time.Duration
	Presence    bool
}

// Sink receives a subscription's frames, in order. Deliver is called with a lock of the
// channel's held, by the publisher or, for a Laned sink, by its lane's goroutine, so it must
// only queue: a sink that cannot keep up closes itself and its subscriptions.
type Sink interface {
	Deliver(f *Frame)
}

// Observer is told what the hub does, for metrics. Calls are cheap and never per delivery.
type Observer interface {
	Published(n int)
	Delivered(n int)
	StoreLatency(op string, d time.Duration)
}

// ClientInfo describes a subscriber for presence.
type ClientInfo struct {
	Client    string `json:"client"`
	User      string `json:"user"`
	Transport string `json:"transport"`
}

// Config configures a Hub.
type Config struct {
	Store Store
	// Broker links this node to the others of a cluster; nil for a single node.
	Broker      Broker
	Namespaces  func(name string) Namespace // by namespace name; "" is the default namespace
	DedupWindow time.Duration
	Observer    Observer
	Logger      *slog.Logger
	Now         func() time.Time
	// Batch, when set, is called before a publish fans its messages out, and the function it
	// returns after: the connection layer then writes small fanouts from the publishing
	// goroutine instead of waking a writer for them.
	Batch func() (end func())
	// Lanes, when set, walk the large fanouts of the sinks that are Laned.
	Lanes Lanes
}

// Hub is the publish/subscribe core of one node.
type Hub struct {
	cfg      Config
	mu       sync.Mutex
	channels map[string]*chanState
	closed   atomic.Bool
	lanes    int // Config.Lanes's count
}

// New returns a hub over cfg.Store.
func New(cfg Config) *Hub {
	if cfg.Namespaces == nil {
		cfg.Namespaces = func(string) Namespace { return Namespace{HistorySize: 1000, HistoryTTL: 24 * time.Hour} }
	}
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = 10 * time.Minute
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Hub{cfg: cfg, channels: make(map[string]*chanState)}
	if cfg.Lanes != nil {
		h.lanes = cfg.Lanes.Lanes()
	}
	return h
}

// Namespace returns the options of the namespace channel name belongs to.
func (h *Hub) Namespace(name string) Namespace {
	return h.cfg.Namespaces(channel.Namespace(name))
}

// chanState is a channel as this node sees it while it has subscribers.
type chanState struct {
	name string
	hub  *Hub
	mu   sync.Mutex
	refs int // subscriptions and subscribes in progress; guarded by Hub.mu
	// ready is closed once epoch and next are loaded from the store.
	ready   chan struct{}
	loadErr error
	epoch   string
	next    uint64            // the next offset to fan out
	early   map[uint64]*Frame // frames that overtook their predecessors, until those arrive
	// lanes holds the subscriptions, per lane of Config.Lanes and then, last, those of sinks
	// in no lane, which the publisher always delivers to itself.
	lanes []lane
	// presence counts subscriptions per client, where the namespace enables it.
	presence map[ClientInfo]int
}

// acquire returns the channel's state, loading it on first use, with a reference taken.
func (h *Hub) acquire(ctx context.Context, name string) (*chanState, error) {
	h.mu.Lock()
	ch := h.channels[name]
	if ch == nil {
		ch = &chanState{name: name, hub: h, ready: make(chan struct{}), lanes: make([]lane, h.lanes+1)}
		h.channels[name] = ch
		ch.refs++
		h.mu.Unlock()
		// Watch before reading the state: a message committed in between then arrives through
		// Dispatch, which waits for ready and drops what the state already covers.
		if h.cfg.Broker != nil {
			if err := h.cfg.Broker.Watch(ctx, name); err != nil {
				ch.loadErr = fmt.Errorf("broker: %w", err)
			}
		}
		if ch.loadErr == nil {
			start := time.Now()
			st, err := h.cfg.Store.State(ctx, name)
			h.cfg.Observer.StoreLatency("state", time.Since(start))
			ch.epoch, ch.next, ch.loadErr = st.Epoch, st.Offset+1, err
		}
		close(ch.ready)
	} else {
		ch.refs++
		h.mu.Unlock()
		<-ch.ready
	}
	if ch.loadErr != nil {
		h.release(ch)
		return nil, fmt.Errorf("load channel %s: %w", name, ch.loadErr)
	}
	return ch, nil
}

func (h *Hub) release(ch *chanState) {
	h.mu.Lock()
	ch.refs--
	gone := ch.refs == 0 && h.channels[ch.name] == ch
	if gone {
		delete(h.channels, ch.name)
	}
	h.mu.Unlock()
	if gone && h.cfg.Broker != nil {
		h.cfg.Broker.Unwatch(ch.name)
	}
}

func (h *Hub) lookup(name string) *chanState {
	h.mu.Lock()
	ch := h.channels[name]
	h.mu.Unlock()
	if ch == nil {
		return nil
	}
	<-ch.ready
	if ch.loadErr != nil {
		return nil
	}
	return ch
}

// CheckPublication validates a publication before it reaches the store.
func CheckPublication(p *Publication) error {
	if err := channel.CheckName(p.Channel); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if strings.HasPrefix(p.Event, "crier.") {
		return fmt.Errorf("%w: event names starting with crier. are reserved", ErrBadRequest)
	}
	if len(p.Event) > 100 {
		return fmt.Errorf("%w: event name longer than 100 bytes", ErrBadRequest)
	}
	for i := 0; i < len(p.Event); i++ {
		if c := p.Event[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: event name must be printable ASCII without spaces", ErrBadRequest)
		}
	}
	if p.TTL < 0 {
		return fmt.Errorf("%w: negative ttl", ErrBadRequest)
	}
	if len(p.IdempotencyKey) > 200 {
		return fmt.Errorf("%w: idempotency key longer than 200 bytes", ErrBadRequest)
	}
	return nil
}

// Publish stores a batch of publications durably and fans each new one out. Results are in
// order; a publication that fails validation gets its own error and the others go on.
func (h *Hub) Publish(ctx context.Context, pubs []Publication) ([]Appended, error) {
	if h.closed.Load() {
		return nil, ErrClosed
	}
	out := make([]Appended, len(pubs))
	batch := make([]Append, 0, len(pubs))
	idx := make([]int, 0, len(pubs))
	now := h.cfg.Now()
	for i := range pubs {
		if err := CheckPublication(&pubs[i]); err != nil {
			out[i].Err = err
			continue
		}
		ns := h.Namespace(pubs[i].Channel)
		batch = append(batch, Append{Publication: pubs[i], Time: now, DedupWindow: h.cfg.DedupWindow,
			Retention: Retention{Size: ns.HistorySize, Age: ns.HistoryTTL}})
		idx = append(idx, i)
	}
	if len(batch) == 0 {
		return out, nil
	}
	start := time.Now()
	// A publisher that hangs up mid-append must not leave a message stored but never
	// dispatched, which would stall the channel's ordered dispatch.
	res, err := h.cfg.Store.Append(context.WithoutCancel(ctx), batch)
	h.cfg.Observer.StoreLatency("append", time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	n, fresh, posted := h.fanOut(res, idx, out)
	if posted {
		h.cfg.Lanes.Wait()
	}
	if len(fresh) > 0 {
		// The messages are durable and answered as published whatever happens here; other
		// nodes' subscribers that miss them find them in the store when they resume.
		if err := h.cfg.Broker.Announce(context.WithoutCancel(ctx), fresh); err != nil {
			h.cfg.Logger.Error("broker: announce", "err", err, "messages", len(fresh))
		}
	}
	h.cfg.Observer.Published(n)
	return out, nil
}

// fanOut answers the publishes of res (idx maps them to out) and fans the new messages out to
// this node's subscribers, in one batch of the connection layer's (Config.Batch). It returns how
// many messages are new, and, with a broker, which.
func (h *Hub) fanOut(res []Appended, idx []int, out []Appended) (n int, fresh []Message, posted bool) {
	if h.cfg.Batch != nil {
		defer h.cfg.Batch()()
	}
	for j, r := range res {
		out[idx[j]] = r
		if r.Err == nil && !r.Duplicate {
			n++
			if h.cfg.Broker != nil {
				fresh = append(fresh, r.Message)
			}
			// Without subscribers here, no frame is needed: a channel loaded from now on reads
			// its state from the store, which already holds this message.
			if ch := h.lookup(r.Message.Channel); ch != nil {
				r.Message.Channel = ch.name // one copy of the name for all its frames
				posted = h.dispatch(ch, NewFrame(r.Message)) || posted
			}
		}
	}
	return n, fresh, posted
}

// Dispatch fans a committed message's frame out to this node's subscribers, in offset order:
// a frame that overtakes its predecessor waits for it. Brokers call it for messages published
// on other nodes.
func (h *Hub) Dispatch(f *Frame) {
	if ch := h.lookup(f.Msg.Channel); ch != nil {
		if h.dispatch(ch, f) {
			h.cfg.Lanes.Wait()
		}
	}
}

// dispatch reports whether it posted a job to a lane.
func (h *Hub) dispatch(ch *chanState, f *Frame) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if f.Msg.Epoch != ch.epoch || f.Msg.Offset < ch.next {
		return false // an old epoch's message, or one already fanned out
	}
	if f.Msg.Offset > ch.next {
		if ch.early == nil {
			ch.early = make(map[uint64]*Frame)
		}
		ch.early[f.Msg.Offset] = f
		return false
	}
	posted := h.fanout(ch, f)
	ch.next++
	for len(ch.early) > 0 {
		g := ch.early[ch.next]
		if g == nil {
			break
		}
		delete(ch.early, ch.next)
		posted = h.fanout(ch, g) || posted
		ch.next++
	}
	return posted
}

// SubscribeRequest asks for one channel.
type SubscribeRequest struct {
	Channel string
	// Since, when set, resumes after that position; otherwise the subscription starts live.
	Since  *channel.Position
	Sink   Sink
	Client ClientInfo
}

// Subscription is one channel of one subscriber.
type Subscription struct {
	// What a delivery reads comes first, in one cache line: a fanout walks thousands of
	// subscriptions that are out of the cache.
	sink Sink
	// epoch/last say what the sink has; while catching up, live frames wait in backlog.
	epoch string
	last  uint64
	// seen is the post count (Job.seq) of the last job the subscription has had from its
	// lane, or of the last one posted before it joined: a walk skips the jobs up to it.
	seen       uint64
	catchingUp bool
	closed     bool
	backlog    []*Frame

	ln   *lane // guards the fields above
	hub  *Hub
	ch   *chanState
	info ClientInfo
	idx  int // in ln.subs
	// A whole number of cache lines, so that every subscription starts a line (the allocator
	// lays out objects of 192 bytes at multiples of 64): a delivery then reads one line of it.
	_ [32]byte
}

// Channel returns the subscription's channel name.
func (s *Subscription) Channel() string { return s.ch.name }

// deliver queues f unless the sink already has it, through r when a lane's writer walks (nil:
// directly). Caller holds s.ln.mu.
func (s *Subscription) deliver(f *Frame, r Runner) {
	if s.catchingUp {
		s.backlog = append(s.backlog, f)
		return
	}
	s.send(f, r)
}

func (s *Subscription) send(f *Frame, r Runner) {
	switch {
	case f.Kind == KindStart:
		s.epoch, s.last = f.Msg.Epoch, f.Msg.Offset
	case f.Msg.Event == EventGap:
		// A live gap (from Clear) that the catch-up already moved past, having read the new
		// epoch from the store: passing it on would rewind the sink and repeat messages.
		if !s.catchingUp && f.Msg.Epoch == s.epoch && f.Msg.Offset <= s.last {
			return
		}
		s.epoch, s.last = f.Msg.Epoch, f.Msg.Offset
	case f.Msg.Event == EventJoin || f.Msg.Event == EventLeave || f.Msg.Event == EventReconnect:
		// Events that stand at the channel's position without moving it.
	default:
		if f.Msg.Epoch == s.epoch && f.Msg.Offset <= s.last {
			return // already sent from history
		}
		s.epoch, s.last = f.Msg.Epoch, f.Msg.Offset
	}
	if r != nil {
		r.Deliver(s.sink, f)
		return
	}
	s.sink.Deliver(f)
}

// Subscribe attaches a sink to a channel: it first receives a KindStart frame, then, when
// resuming, what it missed (or a crier.gap frame), then live frames, with no gap and no
// duplicate at the seam.
func (h *Hub) Subscribe(ctx context.Context, req SubscribeRequest) (*Subscription, error) {
	if err := channel.CheckName(req.Channel); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if h.closed.Load() {
		return nil, ErrClosed
	}
	ch, err := h.acquire(ctx, req.Channel)
	if err != nil {
		return nil, err
	}
	s := &Subscription{hub: h, ch: ch, sink: req.Sink, info: req.Client, catchingUp: true}
	ch.mu.Lock()
	if h.closed.Load() {
		// Drain began after the check above; it may already have passed this channel, and
		// this subscription would never be told to reconnect.
		ch.mu.Unlock()
		h.release(ch)
		return nil, ErrClosed
	}
	latest := channel.Position{Epoch: ch.epoch, Offset: ch.next - 1}
	ln := &ch.lanes[len(ch.lanes)-1]
	if l, ok := req.Sink.(Laned); ok {
		if i := l.Lane(); i >= 0 && i < len(ch.lanes)-1 {
			ln = &ch.lanes[i]
		}
	}
	ln.mu.Lock()
	ln.add(s)
	ln.mu.Unlock()
	ch.mu.Unlock()

	frames, err := h.catchUp(ctx, req.Channel, req.Since, latest)
	if err != nil {
		s.Close()
		return nil, err
	}
	ns := h.Namespace(req.Channel)
	ch.mu.Lock()
	ln.mu.Lock()
	for _, f := range frames {
		s.send(f, nil)
	}
	s.catchingUp = false
	for _, f := range s.backlog {
		s.send(f, nil)
	}
	s.backlog = nil
	ln.mu.Unlock()
	if ns.Presence {
		h.join(ch, s.info)
	}
	ch.mu.Unlock()
	return s, nil
}

// catchUp returns the frames a subscriber resuming from since needs before live ones.
func (h *Hub) catchUp(ctx context.Context, name string, since *channel.Position, latest channel.Position) ([]*Frame, error) {
	if since == nil {
		return []*Frame{newStartFrame(name, latest)}, nil
	}
	start := newStartFrame(name, *since)
	if since.Epoch != latest.Epoch {
		// The epoch is gone: resync to the live position.
		return []*Frame{start, newEventFrame(name, latest, EventGap, gapData("epoch"), h.cfg.Now())}, nil
	}
	if since.Offset == latest.Offset {
		return []*Frame{start}, nil
	}
	// Read even when since is past latest: latest is what this node has fanned out, and the
	// store may hold more (publishes in flight, or in a cluster a message another node has
	// delivered but this one not yet); only the store can tell a future position from those.
	t := time.Now()
	hist, err := h.cfg.Store.Read(ctx, name, since.Epoch, since.Offset, 0)
	h.cfg.Observer.StoreLatency("read", time.Since(t))
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", name, err)
	}
	if hist.Epoch == since.Epoch && since.Offset > hist.Offset {
		// The position never existed: resync to the channel's latest.
		at := channel.Position{Epoch: hist.Epoch, Offset: hist.Offset}
		return []*Frame{start, newEventFrame(name, at, EventGap, gapData("epoch"), h.cfg.Now())}, nil
	}
	frames := make([]*Frame, 0, len(hist.Messages)+2)
	frames = append(frames, start)
	if hist.Gap {
		at := channel.Position{Epoch: hist.Epoch, Offset: hist.Offset}
		if len(hist.Messages) > 0 {
			at.Offset = hist.Messages[0].Offset - 1
		}
		frames = append(frames, newEventFrame(name, at, EventGap, gapData("history"), h.cfg.Now()))
	}
	for _, m := range hist.Messages {
		frames = append(frames, NewFrame(m))
	}
	return frames, nil
}

func gapData(reason string) map[string]string { return map[string]string{"reason": reason} }

// Retarget makes sink receive the subscription's frames from now on, in place of the sink it
// was made with; frames already handed to that one stay there. sink must be in the same lane
// (Laned) as the first. It lets a transport subscribe before its connection exists, and then
// have the connection itself receive, one object less per delivery.
func (s *Subscription) Retarget(sink Sink) {
	s.ln.mu.Lock()
	s.sink = sink
	s.ln.mu.Unlock()
}

// Close detaches the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	ch, ln := s.ch, s.ln
	ch.mu.Lock()
	ln.mu.Lock()
	if s.closed {
		ln.mu.Unlock()
		ch.mu.Unlock()
		return
	}
	s.closed = true
	ln.remove(s)
	ln.mu.Unlock()
	if !s.catchingUp && s.hub.Namespace(ch.name).Presence {
		s.hub.leave(ch, s.info)
	}
	ch.mu.Unlock()
	s.hub.release(ch)
}

// join records a presence and tells the channel when a client first appears. Caller holds ch.mu.
func (h *Hub) join(ch *chanState, c ClientInfo) {
	if ch.presence == nil {
		ch.presence = make(map[ClientInfo]int)
	}
	ch.presence[c]++
	if ch.presence[c] == 1 {
		h.fanout(ch, newEventFrame(ch.name, channel.Position{Epoch: ch.epoch, Offset: ch.next - 1}, EventJoin, c, h.cfg.Now()))
	}
}

// leave is join's reverse. Caller holds ch.mu.
func (h *Hub) leave(ch *chanState, c ClientInfo) {
	if ch.presence[c]--; ch.presence[c] > 0 {
		return
	}
	delete(ch.presence, c)
	h.fanout(ch, newEventFrame(ch.name, channel.Position{Epoch: ch.epoch, Offset: ch.next - 1}, EventLeave, c, h.cfg.Now()))
}

// Presence lists the clients subscribed to a channel on this node.
func (h *Hub) Presence(ctx context.Context, name string) ([]ClientInfo, error) {
	if err := channel.CheckName(name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if !h.Namespace(name).Presence {
		return nil, ErrPresenceDisabled
	}
	out := []ClientInfo{}
	ch := h.lookup(name)
	if ch == nil {
		return out, nil
	}
	ch.mu.Lock()
	for c := range ch.presence {
		out = append(out, c)
	}
	ch.mu.Unlock()
	return out, nil
}

// Info describes a channel.
type Info struct {
	Channel     string `json:"channel"`
	Epoch       string `json:"epoch"`
	Offset      uint64 `json:"offset"`
	Subscribers int    `json:"subscribers"`
}

// Info returns a channel's position and subscriber count.
func (h *Hub) Info(ctx context.Context, name string) (Info, error) {
	if err := channel.CheckName(name); err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	st, err := h.cfg.Store.State(ctx, name)
	if err != nil {
		return Info{}, fmt.Errorf("store: %w", err)
	}
	info := Info{Channel: name, Epoch: st.Epoch, Offset: st.Offset}
	if ch := h.lookup(name); ch != nil {
		ch.mu.Lock()
		for i := range ch.lanes {
			info.Subscribers += ch.lanes[i].members
		}
		ch.mu.Unlock()
	}
	return info, nil
}

// History reads a channel's history: after since when given, else the newest limit messages.
func (h *Hub) History(ctx context.Context, name string, since *channel.Position, limit int) (History, error) {
	if err := channel.CheckName(name); err != nil {
		return History{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	t := time.Now()
	defer func() { h.cfg.Observer.StoreLatency("read", time.Since(t)) }()
	if since == nil {
		return h.cfg.Store.Latest(ctx, name, limit)
	}
	return h.cfg.Store.Read(ctx, name, since.Epoch, since.Offset, limit)
}

// Clear drops a channel's history. Its subscribers are moved to the new epoch with crier.gap.
func (h *Hub) Clear(ctx context.Context, name string) (ChannelState, error) {
	if err := channel.CheckName(name); err != nil {
		return ChannelState{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	// Hold the channel (loading it if it has no subscriber) and its lock across the store's
	// clear, so that no message of the new epoch reaches Dispatch before the channel knows the
	// epoch: it would be dropped as an old epoch's, and every later message would then wait in
	// ch.early for it forever. A subscribe racing with the clear shares this chanState.
	ch, err := h.acquire(ctx, name)
	if err != nil {
		return ChannelState{}, err
	}
	defer h.release(ch)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	st, err := h.cfg.Store.Clear(ctx, name)
	if err != nil {
		return st, fmt.Errorf("store: %w", err)
	}
	ch.epoch, ch.next, ch.early = st.Epoch, st.Offset+1, nil
	h.fanout(ch, newEventFrame(name, channel.Position{Epoch: st.Epoch, Offset: st.Offset}, EventGap, gapData("cleared"), h.cfg.Now()))
	return st, nil
}

// Drain stops new publishes and subscriptions and sends every subscription a crier.reconnect
// frame asking it to come back after `after`. Sinks close themselves once it is written.
func (h *Hub) Drain(after time.Duration) {
	h.closed.Store(true)
	h.mu.Lock()
	chans := make([]*chanState, 0, len(h.channels))
	for _, ch := range h.channels {
		chans = append(chans, ch)
	}
	h.mu.Unlock()
	data := map[string]int64{"after_ms": after.Milliseconds()}
	for _, ch := range chans {
		<-ch.ready
		ch.mu.Lock()
		h.fanout(ch, newEventFrame(ch.name, channel.Position{Epoch: ch.epoch, Offset: ch.next - 1}, EventReconnect, data, h.cfg.Now()))
		ch.mu.Unlock()
	}
}

// Channels returns how many channels have subscribers on this node.
func (h *Hub) Channels() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.channels)
}

type nopObserver struct{}

func (nopObserver) Published(int)                      {}
func (nopObserver) Delivered(int)                      {}
func (nopObserver) StoreLatency(string, time.Duration) {}
