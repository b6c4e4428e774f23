// Package sse is the Server-Sent Events transport: GET /v1/sse streams text/event-stream with
// the cursor as each event's id, so that EventSource resumes by itself with Last-Event-ID.
package sse

import (
	"bytes"
	"context"
	"net/http"
	"strconv"

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
	targets, err := transport.SubscribeParams(r.URL.Query(), r.Header.Get("Last-Event-ID"), h.env.MaxChannels)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	if len(targets) == 0 {
		transport.WriteError(w, transport.Errorf(http.StatusBadRequest, "no_channel", "name at least one channel= or a cursor="))
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		transport.WriteError(w, transport.Errorf(http.StatusHTTPVersionNotSupported, "unsupported_protocol", "SSE needs HTTP/1.1 here"))
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
	c, err := h.env.Conns.Take(nc, st)
	if err != nil {
		_ = nc.Close()
		h.env.Logger.Warn("sse: cannot take connection", "err", err)
		return
	}
	st.c = c
	h.env.Observer.Connected("sse", 1)
	c.Send(h.head(r))
	buffered, _ := brw.Reader.Peek(brw.Reader.Buffered())
	if err := h.env.Conns.Start(c, buffered); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.env.SubscribeTimeout)
	defer cancel()
	client := hub.ClientInfo{Client: transport.NewClientID(), Transport: "sse"}
	for _, t := range targets {
		if _, err := st.subs.Subscribe(ctx, h.env.Hub, hub.SubscribeRequest{Channel: t.Channel, Since: t.Since, Sink: c, Client: client}); err != nil {
			e := transport.AsError(err)
			c.Close(conn.Reason{Code: e.Code, Message: e.Message})
			return
		}
	}
}

// head is the response head, written straight to the socket, and the reconnection delay.
func (h *handler) head(r *http.Request) []byte {
	b := make([]byte, 0, 256)
	b = append(b, "HTTP/1.1 200 OK\r\n"+
		"Content-Type: text/event-stream; charset=utf-8\r\n"+
		"Cache-Control: no-cache, no-store\r\n"+
		"X-Accel-Buffering: no\r\n"+
		"Connection: close\r\n\r\n"...)
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, h.env.SSERetry.Milliseconds(), 10)
	return append(b, "\n\n"...)
}

// stream is one SSE connection's protocol state.
type stream struct {
	h       *handler
	c       *conn.Conn
	subs    transport.Subs
	tracker transport.Tracker // writer-owned
	scratch []byte            // writer-owned: a multi-channel cursor
}

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

func (s *stream) Goodbye(dst []byte, reason conn.Reason) []byte {
	dst = append(dst, ": closing: "...)
	dst = append(dst, reason.Code...)
	return append(dst, "\n\n"...)
}

// Read ignores what the client sends: an SSE request has nothing after its head.
func (s *stream) Read(*conn.Conn, []byte) error { return nil }

func (s *stream) Closed(*conn.Conn, conn.Reason) {
	s.subs.Close()
	s.h.env.Observer.Connected("sse", -1)
}
