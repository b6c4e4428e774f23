package hub_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/memory"
)

// ringSink keeps the last frames it was handed in a fixed ring, as a transport's queue would,
// without allocating.
type ringSink struct {
	ring [8]*hub.Frame
	n    uint64
}

func (s *ringSink) Deliver(f *hub.Frame) {
	s.ring[s.n%uint64(len(s.ring))] = f
	s.n++
}

// BenchmarkFanout10k measures the delivery hot path, Dispatch → fanout → Sink.Deliver, to
// 10,000 subscribers of one channel. Each iteration builds one frame (a constant number of
// allocations) and delivers it 10,000 times (none).
func BenchmarkFanout10k(b *testing.B) {
	const subscribers = 10_000
	h := hub.New(hub.Config{Store: memory.New()})
	sinks := make([]ringSink, subscribers)
	for i := range sinks {
		if _, err := h.Subscribe(context.Background(), hub.SubscribeRequest{Channel: "fan", Sink: &sinks[i]}); err != nil {
			b.Fatal(err)
		}
	}
	st, err := h.Info(context.Background(), "fan")
	if err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"price":101.25,"symbol":"ACME"}`)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Dispatch(hub.NewFrame(hub.Message{Channel: "fan", Epoch: st.Epoch, Offset: st.Offset + uint64(i) + 1,
			Time: now, ContentType: "application/json", Data: data}))
	}
	b.StopTimer()
	if got := sinks[subscribers-1].n; got != uint64(b.N)+1 {
		b.Fatalf("last subscriber got %d frames, want %d", got, b.N+1)
	}
	b.ReportMetric(float64(b.N)*subscribers/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(float64(b.N)*subscribers), "ns/delivery")
}

// BenchmarkPublishMemory publishes one small message through the memory store with no
// subscribers, from one goroutine and from 64.
func BenchmarkPublishMemory(b *testing.B) {
	pub := func() []hub.Publication {
		return []hub.Publication{{Channel: "bench", ContentType: "application/json", Data: []byte(`{"n":1}`)}}
	}
	b.Run("serial", func(b *testing.B) {
		h := hub.New(hub.Config{Store: memory.New()})
		p := pub()
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := h.Publish(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel64", func(b *testing.B) {
		h := hub.New(hub.Config{Store: memory.New()})
		b.ReportAllocs()
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0))) // 64 publishers in all
		var goroutines atomic.Int32
		b.RunParallel(func(pb *testing.PB) {
			goroutines.Add(1)
			p := pub()
			ctx := context.Background()
			for pb.Next() {
				if _, err := h.Publish(ctx, p); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(goroutines.Load()), "publishers")
	})
}

// BenchmarkNewFrame builds the shared frame of a message with a 100-byte JSON payload.
func BenchmarkNewFrame(b *testing.B) {
	data := []byte(`{"id":12345,"user":"alice","text":"` + strings.Repeat("x", 100-47) + `","ok":true}`)
	if len(data) != 100 {
		b.Fatalf("payload is %d bytes", len(data))
	}
	m := hub.Message{Channel: "chat:lobby", Epoch: "q7Rk2xAb", Offset: 123456, Time: time.Now(),
		ContentType: "application/json", Data: data}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		m.Offset++
		f := hub.NewFrame(m)
		if len(f.Envelope) == 0 {
			b.Fatal("empty envelope")
		}
	}
}
