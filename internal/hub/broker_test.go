package hub_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/memory"
)

// loopBroker links the hubs of one process the way a Redis or NATS broker links nodes: each
// announced message goes to every other hub that watches its channel, once, shuffled to prove
// that Dispatch restores offset order.
type loopBroker struct {
	mu      sync.Mutex
	hubs    map[*hub.Hub]*loopNode
	watches map[string]int
}

type loopNode struct {
	b       *loopBroker
	self    *hub.Hub
	watched map[string]bool
}

func (n *loopNode) Announce(_ context.Context, msgs []hub.Message) error {
	shuffled := append([]hub.Message(nil), msgs...)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, m := range shuffled {
		n.b.mu.Lock()
		var targets []*hub.Hub
		for h, other := range n.b.hubs {
			if h != n.self && other.watched[m.Channel] {
				targets = append(targets, h)
			}
		}
		n.b.mu.Unlock()
		for _, h := range targets {
			h.Dispatch(hub.NewFrame(m))
		}
	}
	return nil
}

func (n *loopNode) Watch(_ context.Context, ch string) error {
	n.b.mu.Lock()
	n.watched[ch] = true
	n.b.watches[ch]++
	n.b.mu.Unlock()
	return nil
}

func (n *loopNode) Unwatch(ch string) {
	n.b.mu.Lock()
	delete(n.watched, ch)
	n.b.watches[ch]--
	n.b.mu.Unlock()
}

func TestBrokerCarriesMessagesBetweenHubs(t *testing.T) {
	st := memory.New()
	b := &loopBroker{hubs: map[*hub.Hub]*loopNode{}, watches: map[string]int{}}
	newNode := func() *hub.Hub {
		n := &loopNode{b: b, watched: map[string]bool{}}
		h := hub.New(hub.Config{Store: st, Broker: n})
		n.self = h
		b.mu.Lock()
		b.hubs[h] = n
		b.mu.Unlock()
		return h
	}
	a, c := newNode(), newNode()

	sub, sink := subscribe(t, c, hub.SubscribeRequest{Channel: "news"})
	if b.watches["news"] != 1 {
		t.Fatalf("watches after subscribe = %d, want 1", b.watches["news"])
	}
	// A batch of messages for one channel, published on the other node, arrives in order.
	pubs := make([]hub.Publication, 20)
	for i := range pubs {
		pubs[i] = hub.Publication{Channel: "news", ContentType: "text/plain", Data: []byte("x")}
	}
	publish(t, a, pubs...)
	epoch := epochOf(t, a, "news")
	want := append([]string{"start " + epoch + ":0"}, messageRange(epoch, 1, 20)...)
	deadline := time.Now().Add(2 * time.Second)
	for len(sink.Frames()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	expectTags(t, sink, want...)

	sub.Close()
	if b.watches["news"] != 0 {
		t.Fatalf("watches after the last unsubscribe = %d, want 0", b.watches["news"])
	}
}
