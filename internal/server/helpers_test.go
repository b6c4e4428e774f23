package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/config"
)

// testServer is a node on a loopback port.
type testServer struct {
	URL    string
	Server *Server
	cancel context.CancelFunc
	done   chan error
}

func startServer(t testing.TB, mutate func(*config.Config)) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.Memory = true
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.DrainDelay = 2 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{URL: "http://" + ln.Addr().String(), Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(ts.Stop)
	return ts
}

// Stop drains the server and waits for it.
func (ts *testServer) Stop() {
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.cancel = nil
	<-ts.done
}

type envelope struct {
	Channel     string          `json:"channel"`
	Offset      uint64          `json:"offset"`
	Epoch       string          `json:"epoch"`
	Time        string          `json:"time"`
	Event       string          `json:"event"`
	Data        json.RawMessage `json:"data"`
	Encoding    string          `json:"encoding"`
	ContentType string          `json:"content_type"`
	Cursor      string          `json:"cursor"`
}

func publish(t testing.TB, base, channel, contentType, body string, headers ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v1/channels/"+channel, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, map[string]any) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: status %d, body not JSON: %q", req.Method, req.URL, res.StatusCode, b)
	}
	return res.StatusCode, out
}

func get(t testing.TB, url string) (int, map[string]any) {
	req, _ := http.NewRequest("GET", url, nil)
	return do(t, req)
}

// sseEvent is one parsed SSE event.
type sseEvent struct {
	ID, Event, Data string
	HasData         bool
}

// sseClient reads an SSE stream.
type sseClient struct {
	res *http.Response
	r   *bufio.Reader
	// Retry and Comments are what the stream said outside events.
	Retry    string
	Comments int
	LastID   string
}

func openSSE(t testing.TB, url string, header ...string) *sseClient {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("SSE status %d: %s", res.StatusCode, b)
	}
	c := &sseClient{res: res, r: bufio.NewReader(res.Body)}
	t.Cleanup(func() { res.Body.Close() })
	return c
}

// Next returns the next event with data, updating LastID on the way; io.EOF at the end.
func (c *sseClient) Next() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev.ID != "" {
				c.LastID = ev.ID
			}
			if ev.HasData {
				return ev, nil
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			c.Comments++
		case strings.HasPrefix(line, "retry: "):
			c.Retry = line[7:]
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			// Several data: lines are one value joined by "\n", as EventSource joins them.
			if ev.HasData {
				ev.Data += "\n"
			}
			ev.Data, ev.HasData = ev.Data+line[6:], true
		}
	}
}

func (c *sseClient) NextEnvelope(t testing.TB) envelope {
	t.Helper()
	ev, err := c.Next()
	if err != nil {
		t.Fatalf("SSE read: %v", err)
	}
	var e envelope
	if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
		t.Fatalf("SSE data is not an envelope: %q", ev.Data)
	}
	if ev.ID != e.Cursor {
		t.Fatalf("SSE id %q != envelope cursor %q", ev.ID, e.Cursor)
	}
	return e
}

// wsDial opens a WebSocket with extra handshake headers. It keeps what the handshake read past
// the 101: the server may send resumed messages in the same segment.
func wsDial(t testing.TB, rawURL string, header http.Header) *wsPeer {
	t.Helper()
	u := strings.Replace(rawURL, "http://", "ws://", 1)
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(header)}
	nc, br, _, err := d.Dial(context.Background(), u)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { nc.Close() })
	p := &wsPeer{t: t, nc: nc, r: nc}
	if br != nil {
		p.r = io.MultiReader(br, nc)
	}
	return p
}
