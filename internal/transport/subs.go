package transport

import (
	"context"
	"sync"

	"github.com/crier-push/crier/internal/hub"
)

// Subs is a connection's set of subscriptions. It may close while a subscribe is under way;
// a subscription that arrives after Close is closed at once.
type Subs struct {
	// Observer, when set, is told of each subscription opened and closed.
	Observer Observer
	mu       sync.Mutex
	subs     map[string]*hub.Subscription
	closed   bool
}

// Len returns how many channels are subscribed.
func (s *Subs) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// Has reports whether name is subscribed.
func (s *Subs) Has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subs[name] != nil
}

// Names returns the channels subscribed, and those whose subscription is under way.
func (s *Subs) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.subs))
	for name := range s.subs {
		names = append(names, name)
	}
	return names
}

// Subscribe subscribes through h and keeps the subscription. It reports false, and subscribes
// nothing, when the channel is already subscribed.
func (s *Subs) Subscribe(ctx context.Context, h *hub.Hub, req hub.SubscribeRequest) (bool, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, hub.ErrClosed
	}
	if _, dup := s.subs[req.Channel]; dup {
		s.mu.Unlock()
		return false, nil
	}
	if s.subs == nil {
		s.subs = make(map[string]*hub.Subscription)
	}
	s.subs[req.Channel] = nil // reserve
	s.mu.Unlock()
	sub, err := h.Subscribe(ctx, req)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.subs, req.Channel)
		return false, err
	}
	if s.closed {
		sub.Close()
		return false, hub.ErrClosed
	}
	s.subs[req.Channel] = sub
	if s.Observer != nil {
		s.Observer.Subscribed(1)
	}
	return true, nil
}

// Retarget hands every subscription made so far to sink (see hub.Subscription.Retarget).
func (s *Subs) Retarget(sink hub.Sink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs {
		if sub != nil { // nil: a subscribe under way, whose sink is its caller's to choose
			sub.Retarget(sink)
		}
	}
}

// Unsubscribe closes one subscription; it reports whether there was one.
func (s *Subs) Unsubscribe(name string) bool {
	s.mu.Lock()
	sub := s.subs[name]
	if sub != nil {
		delete(s.subs, name)
	}
	s.mu.Unlock()
	if sub == nil {
		return false
	}
	sub.Close()
	if s.Observer != nil {
		s.Observer.Subscribed(-1)
	}
	return true
}

// Close closes every subscription and refuses new ones.
func (s *Subs) Close() {
	s.mu.Lock()
	s.closed = true
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	n := 0
	for _, sub := range subs {
		if sub != nil {
			sub.Close()
			n++
		}
	}
	if s.Observer != nil && n > 0 {
		s.Observer.Subscribed(-n)
	}
}
