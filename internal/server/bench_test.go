package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/hub"
)

// BenchmarkHTTPPublish measures acknowledged publishes over loopback HTTP from 64 concurrent
// keep-alive publishers, into the durable store (each answer waits for its fsync) and into
// memory. Run: go test -run x -bench HTTPPublish -benchtime 3s ./internal/server/
func BenchmarkHTTPPublish(b *testing.B) {
	for _, store := range []string{"bolt", "memory"} {
		b.Run(store, func(b *testing.B) {
			ts := startServer(b, func(c *config.Config) { c.Memory = store == "memory" })
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
			defer client.CloseIdleConnections()
			var n atomic.Int64
			// RunParallel starts parallelism×GOMAXPROCS goroutines: 64 publishers in all.
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					url := fmt.Sprintf("%s/v1/channels/bench:%d", ts.URL, i%100)
					resp, err := client.Post(url, "application/json", strings.NewReader(`{"n":1}`))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
		})
	}
}

// BenchmarkDeliveries measures end-to-end deliveries per second over loopback: 100 subscribers,
// each a raw socket read by its own goroutine, on one channel (a fanout the writers walk) or
// spread over ten (small fanouts the publisher writes itself), and b.N messages published
// through the hub as fast as it takes them, to the channels in turn. One op is one message
// delivered to all its channel's subscribers.
// Run: go test -run x -bench Deliveries -benchtime 20000x ./internal/server/
func BenchmarkDeliveries(b *testing.B) {
	const subscribers = 100
	for _, tr := range []string{"sse", "ws"} {
		for _, channels := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/channels=%d", tr, channels), func(b *testing.B) { benchDeliveries(b, tr, subscribers, channels) })
		}
	}
}

func benchDeliveries(b *testing.B, tr string, subscribers, channels int) {
	ts := startServer(b, func(c *config.Config) {
		// The benchmark publishes far ahead of the readers: no subscriber may be cut off.
		c.QueueSize, c.QueueBytes = 1<<22, 1<<30
	})
	host := strings.TrimPrefix(ts.URL, "http://")
	request := func(channel string) string {
		if tr == "sse" {
			return "GET /v1/sse?channel=" + channel + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		}
		return "GET /v1/ws?channel=" + channel + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\n" +
			"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	}
	names := make([]string, channels)
	for i := range names {
		names[i] = fmt.Sprint("bench", i)
	}
	var received atomic.Int64
	var wg sync.WaitGroup
	conns := make([]net.Conn, subscribers)
	for i := range conns {
		c, err := net.Dial("tcp", host)
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		if _, err := io.WriteString(c, request(names[i%channels])); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			countToken(c, []byte(`"offset":`), &received)
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		n := 0
		for _, name := range names {
			info, err := ts.Server.Hub().Info(context.Background(), name)
			if err != nil {
				b.Fatal(err)
			}
			n += info.Subscribers
		}
		if n == subscribers {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d subscribers after 10 s", n, subscribers)
		}
	}
	payload := []byte(`{"seq":1,"text":"a message of about sixty-four bytes in all"}`)
	b.ResetTimer()
	for i := range b.N {
		if _, err := ts.Server.Hub().Publish(context.Background(), []hub.Publication{{
			Channel: names[i%channels], ContentType: "application/json", Data: payload}}); err != nil {
			b.Fatal(err)
		}
	}
	want := int64(b.N) * int64(subscribers/channels)
	for deadline := time.Now().Add(time.Minute); received.Load() < want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d deliveries after a minute (slow disconnects: %d)",
				received.Load(), want, ts.Server.conns.SlowDisconnects())
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
}

// countToken adds to n the occurrences of tok in what c sends until it closes, including
// occurrences split across reads.
func countToken(c net.Conn, tok []byte, n *atomic.Int64) {
	buf := make([]byte, 64<<10)
	keep := 0 // bytes at buf's start carried over from the previous read
	for {
		m, err := c.Read(buf[keep:])
		if m > 0 {
			data := buf[:keep+m]
			n.Add(int64(bytes.Count(data, tok)))
			keep = copy(buf, data[max(0, len(data)-(len(tok)-1)):])
		}
		if err != nil {
			return
		}
	}
}

// BenchmarkPublishRaw measures the server's side of a publish: one keep-alive connection that
// writes each request from a prepared buffer and reads its answer into another, so that the
// allocations reported are the server's own (net/http's and Crier's), with no subscriber and
// the memory store. Run: go test -run x -bench PublishRaw -benchmem ./internal/server/
func BenchmarkPublishRaw(b *testing.B) {
	ts := startServer(b, nil)
	host := strings.TrimPrefix(ts.URL, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := `{"seq":1,"t":1234567890123}`
	req := []byte(fmt.Sprintf("POST /v1/channels/bench:1 HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		host, len(body), body))
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 201 ")) {
			b.Fatalf("answer: %q", buf[:n])
		}
	}
}
