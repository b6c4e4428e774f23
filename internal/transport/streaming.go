package transport

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
)

// Streamer is the per-connection protocol of a streaming HTTP transport (NDJSON, multipart,
// iframe): a conn.Protocol that also writes its response's start. It embeds a StreamBase, whose
// End its Closed calls.
type Streamer interface {
	conn.Protocol
	// Open is called once the request's connection is taken, before anything is written. It
	// returns the bytes to write first: on a hijacked connection (HTTP/1.x) the whole response
	// head and the body's start; on an attached one (c.Attached(), HTTP/2) the body's start
	// only, the head's fields being set in h, which the connection layer then writes.
	Open(c *conn.Conn, h http.Header) []byte
	// Base is the embedded StreamBase.
	Base() *StreamBase
}

// StreamBase is what ServeStream keeps for a streaming connection: its subscriptions, its count
// against the connection limits, and the end of its token's rights.
type StreamBase struct {
	Subs    Subs
	release func()

	mu     sync.Mutex
	expiry *time.Timer
	ended  bool
}

// Base returns b, for Streamer.
func (b *StreamBase) Base() *StreamBase { return b }

// End releases what the connection holds: the protocol's Closed calls it.
func (b *StreamBase) End() {
	b.mu.Lock()
	b.ended = true
	if b.expiry != nil {
		b.expiry.Stop()
	}
	release := b.release
	b.mu.Unlock()
	b.Subs.Close()
	if release != nil {
		release()
	}
}

// expireAt closes c at t, when its token's rights end; the zero t is never.
func (b *StreamBase) expireAt(c *conn.Conn, t time.Time) {
	if t.IsZero() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.ended {
		b.expiry = time.AfterFunc(time.Until(t), func() { c.Close(ReasonTokenExpired) })
	}
}

// ReasonTokenExpired closes a stream whose token has expired. The streaming transports end with
// a last item for it, event crier.token_expired with the API's error body as data, without a
// cursor: the client gets a new token and reconnects with its cursor.
var ReasonTokenExpired = conn.Reason{Code: "token_expired",
	Message: "the token has expired; reconnect with a new one and your cursor", WSCode: 1008}

// EventTokenExpired names the last item of a stream whose token expired.
const EventTokenExpired = "crier.token_expired"

// ReasonData is the API's error body for reason: {"error":{"code","message"}}.
func ReasonData(reason conn.Reason) []byte {
	return (&Error{Code: reason.Code, Message: reason.Message}).JSON()
}

// ServeStream serves a streaming transport's request, already checked and admitted as id: it
// takes the connection (conn.Server.Accept), writes what p.Open returns, subscribes it to
// targets with the connection as their sink, and, on an attached connection (HTTP/2), writes it
// on this goroutine until it ends. A subscribe that fails closes the connection with its
// reason; the token's expiry closes it with ReasonTokenExpired.
func (e *Env) ServeStream(w http.ResponseWriter, r *http.Request, name string, targets []Target,
	id *auth.Identity, p Streamer) {
	c, buffered, err := e.Conns.Accept(w, r, p)
	if err != nil {
		e.Logger.Warn(name+": cannot take connection", "err", err)
		return
	}
	b := p.Base()
	b.release = KeepConnSlot(r)
	if first := p.Open(c, w.Header()); len(first) > 0 {
		c.Send(first)
	}
	e.Observer.Connected(name, 1)
	// Subscribe before Start writes the head, so that a client that has the head has its
	// subscriptions: a message published after it reaches the client. What they deliver waits
	// in the connection's queue until Start.
	client := hub.ClientInfo{Client: NewClientID(), User: id.Subject(), Transport: name}
	ctx, cancel := context.WithTimeout(context.Background(), e.SubscribeTimeout)
	for _, t := range targets {
		_, err := b.Subs.Subscribe(ctx, e.Hub, hub.SubscribeRequest{Channel: t.Channel,
			Since: t.Since, Sink: c, Client: client})
		if err != nil {
			ae := AsError(err)
			c.Close(conn.Reason{Code: ae.Code, Message: ae.Message})
			break
		}
	}
	cancel()
	if err := e.Conns.Start(c, buffered); err != nil {
		return // Closed has run
	}
	b.expireAt(c, id.Expires())
	e.Conns.Serve(c)
}

// StreamHead is a streaming response's header fields, name and value pairs, beside those every
// stream has: no caching, no proxy buffering, no content sniffing.
type StreamHead []string

var streamFields = StreamHead{
	"Cache-Control", "no-cache, no-store",
	"X-Accel-Buffering", "no",
	"X-Content-Type-Options", "nosniff",
}

// AppendRaw appends the HTTP/1.1 200 head of a hijacked connection, with the CORS fields the
// server set in h. It says Connection: close: the connection leaves net/http and is never
// reused for another request.
func (sh StreamHead) AppendRaw(dst []byte, h http.Header) []byte {
	dst = append(dst, "HTTP/1.1 200 OK\r\n"...)
	for _, f := range [...]StreamHead{sh, streamFields} {
		for i := 0; i+1 < len(f); i += 2 {
			dst = append(dst, f[i]...)
			dst = append(dst, ": "...)
			dst = append(dst, f[i+1]...)
			dst = append(dst, "\r\n"...)
		}
	}
	dst = AppendCORSFields(dst, h)
	return append(dst, "Connection: close\r\n\r\n"...)
}

// Set sets the fields on the header of an attached connection's response.
func (sh StreamHead) Set(h http.Header) {
	for _, f := range [...]StreamHead{sh, streamFields} {
		for i := 0; i+1 < len(f); i += 2 {
			h.Set(f[i], f[i+1])
		}
	}
}

// Start writes the head: raw bytes on a hijacked connection, header fields otherwise. It
// returns dst with the raw head appended, or dst unchanged.
func (sh StreamHead) Start(dst []byte, c *conn.Conn, h http.Header) []byte {
	if c.Attached() {
		sh.Set(h)
		return dst
	}
	return sh.AppendRaw(dst, h)
}
