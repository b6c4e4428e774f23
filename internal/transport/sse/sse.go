// Package sse is the Server-Sent Events transport: GET /v1/sse streams text/event-stream with
// the cursor as each event's id, so that EventSource resumes by itself with Last-Event-ID.
//
// The request is authenticated and checked against every channel it names (transport.Env.Admit)
// before anything is subscribed: 401 or 403 with the API's JSON error. When the token expires
// (its exp plus the leeway) the stream ends with one last event,
//
//	event: crier.token_expired
//	data: {"error":{"code":"token_expired","message":"…"}}
//
// without an id, so that the browser's lastEventId still holds the cursor: the client gets a
// fresh token and reconnects with it and Last-Event-ID (EventSource itself would retry with the
// expired token in its URL, and be refused with 401).
package sse

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Transport registers SSE.
var Transport = transport.Transport{Name: "sse", Pattern: "GET /v1/sse", New: newHandler}

type handler struct {
	env    *transport.Env
	format int // the frame cache slot of a whole single-channel event
}

func newHandler(env *transport.Env) http.Handler {
	return &handler{env: env, format: env.Formats.Register()}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	targets, id, ok := h.env.AdmitSubscribe(w, r, r.Header.Get("Last-Event-ID"))
	if !ok {
		return
	}
	st := &stream{h: h}
	st.subs.Observer = h.env.Observer
	// Channels resume one after the other, so the first channel's replay would otherwise carry
	// ids that omit the later ones; a reconnect with such a Last-Event-ID (which replaces the
	// URL's cursor) would drop them. Nothing is rendered yet: the tracker is still ours.
	for _, t := range targets {
		if t.Since != nil {
			st.tracker.Set(t.Channel, *t.Since)
		}
	}
	// Hijacked over HTTP/1.x; over HTTP/2 attached, its head written through w (conn.Accept).
	c, buffered, err := h.env.Conns.Accept(w, r, st)
	if err != nil {
		h.env.Logger.Warn("sse: cannot take connection", "err", err)
		return
	}
	st.c = c
	st.release = transport.KeepConnSlot(r)
	h.env.Observer.Connected("sse", 1)
	c.Send(h.head(c, w.Header()))
	// Subscribe before Start writes the head, so that a client that has the head has its
	// subscriptions: a message published after it reaches the client. What they deliver waits
	// in the connection's queue until Start.
	ctx, cancel := context.WithTimeout(context.Background(), h.env.SubscribeTimeout)
	client := hub.ClientInfo{Client: transport.NewClientID(), Transport: "sse"}
	for _, t := range targets {
		if _, err := st.subs.Subscribe(ctx, h.env.Hub, hub.SubscribeRequest{Channel: t.Channel, Since: t.Since, Sink: c, Client: client}); err != nil {
			e := transport.AsError(err)
			c.Close(conn.Reason{Code: e.Code, Message: e.Message})
			break
		}
	}
	cancel()
	if err := h.env.Conns.Start(c, buffered); err != nil {
		return
	}
	st.expireAt(id.Expires())
	h.env.Conns.Serve(c) // an attached connection is written until it ends
}

// head is the response head, written straight to the socket, and the reconnection delay. It
// carries the CORS fields the server set on the ResponseWriter. On an attached connection
// (HTTP/2) the head's fields are set on hdr instead.
func (h *handler) head(c *conn.Conn, hdr http.Header) []byte {
	b := make([]byte, 0, 256)
	if c.Attached() {
		hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
		hdr.Set("Cache-Control", "no-cache, no-store")
		hdr.Set("X-Accel-Buffering", "no")
		b = append(b, "retry: "...)
		b = strconv.AppendInt(b, h.env.SSERetry.Milliseconds(), 10)
		return append(b, "\n\n"...)
	}
	b = append(b, "HTTP/1.1 200 OK\r\n"+
		"Content-Type: text/event-stream; charset=utf-8\r\n"+
		"Cache-Control: no-cache, no-store\r\n"+
		"X-Accel-Buffering: no\r\n"+
		"Connection: close\r\n"...)
	b = transport.AppendCORSFields(b, hdr)
	b = append(b, "\r\n"...)
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, h.env.SSERetry.Milliseconds(), 10)
	return append(b, "\n\n"...)
}

// stream is one SSE connection's protocol state.
type stream struct {
	// What the writer reads for a delivery comes first, in two cache lines; Warm loads them by
	// h and c, which never change once the stream subscribes.
	h       *handler
	tracker transport.Tracker // writer-owned
	c       *conn.Conn
	release func() // the connection's count against the connection limits
	subs    transport.Subs

	expiryMu sync.Mutex
	expiry   *time.Timer // ends the stream when the token expires
	closed   bool
	scratch  []byte // writer-owned: a multi-channel cursor
}

// Warm implements hub.Warmer, for conn.Conn.Warm.
func (s *stream) Warm() uintptr { return uintptr(unsafe.Pointer(s.h)) + uintptr(unsafe.Pointer(s.c)) }

func (s *stream) Render(dst []byte, it *conn.Item) ([]byte, bool) {
	f := it.Frame
	if f == nil {
		return append(dst, it.Raw...), false
	}
	s.tracker.Update(f)
	if f.Kind == hub.KindStart {
		// An id with no data moves EventSource's lastEventId without firing an event.
		dst = append(dst, "id: "...)
		dst = s.tracker.AppendTo(dst)
		return append(dst, "\n\n"...), false
	}
	if s.tracker.Single() {
		dst = append(dst, f.Encoded(s.h.format, encodeSingle)...)
	} else {
		s.scratch = s.tracker.AppendTo(s.scratch[:0])
		dst = appendEvent(dst, f, s.scratch)
	}
	return dst, f.Msg.Event == hub.EventReconnect
}

func encodeSingle(f *hub.Frame) []byte {
	return appendEvent(make([]byte, 0, len(f.Envelope)+2*len(f.Cursor)+48), f, []byte(f.Cursor))
}

func appendEvent(dst []byte, f *hub.Frame, cursor []byte) []byte {
	dst = append(dst, "id: "...)
	dst = append(dst, cursor...)
	dst = append(dst, "\nevent: "...)
	if f.Msg.Event == "" {
		dst = append(dst, hub.EventMessage...)
	} else {
		dst = append(dst, f.Msg.Event...)
	}
	dst = append(dst, "\ndata: "...)
	start := len(dst)
	dst = f.AppendEnvelope(dst, cursor)
	if bytes.IndexByte(dst[start:], '\n') >= 0 || bytes.IndexByte(dst[start:], '\r') >= 0 {
		dst = splitData(dst, start)
	}
	return append(dst, "\n\n"...)
}

// splitData turns the line breaks in dst[start:] into new data: lines. Only JSON published
// with line breaks between its tokens has any; a raw one would end the data: line and corrupt
// the stream. EventSource joins the lines with "\n", so the body arrives as published, except
// that a CR, which SSE cannot carry, arrives as LF (JSON whitespace either way).
func splitData(dst []byte, start int) []byte {
	env := append([]byte(nil), dst[start:]...)
	dst = dst[:start]
	for i := 0; i < len(env); i++ {
		switch c := env[i]; c {
		case '\r':
			if i+1 < len(env) && env[i+1] == '\n' {
				i++
			}
			fallthrough
		case '\n':
			dst = append(dst, "\ndata: "...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func (s *stream) Heartbeat(dst []byte) []byte { return append(dst, ":\n\n"...) }

// reasonExpired closes a stream whose token has expired.
var reasonExpired = transport.ReasonTokenExpired

// expireAt ends the stream at t, when its token's rights end; the zero t is never.
func (s *stream) expireAt(t time.Time) {
	if t.IsZero() {
		return
	}
	s.expiryMu.Lock()
	defer s.expiryMu.Unlock()
	if !s.closed {
		s.expiry = time.AfterFunc(time.Until(t), func() { s.c.Close(reasonExpired) })
	}
}

// expiredEvent is the event that ends a stream whose token expired, without an id.
func expiredEvent(dst []byte, reason conn.Reason) []byte {
	dst = append(dst, "event: "+transport.EventTokenExpired+"\ndata: "...)
	dst = append(dst, transport.ReasonData(reason)...)
	return append(dst, "\n\n"...)
}

func (s *stream) Goodbye(dst []byte, reason conn.Reason) []byte {
	if reason.Code == reasonExpired.Code {
		return expiredEvent(dst, reason)
	}
	dst = append(dst, ": closing: "...)
	dst = append(dst, reason.Code...)
	return append(dst, "\n\n"...)
}

// Read ignores what the client sends: an SSE request has nothing after its head.
func (s *stream) Read(*conn.Conn, []byte) error { return nil }

func (s *stream) Closed(*conn.Conn, conn.Reason) {
	s.expiryMu.Lock()
	s.closed = true
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.expiryMu.Unlock()
	if s.release != nil {
		s.release()
	}
	s.subs.Close()
	s.h.env.Observer.Connected("sse", -1)
}
