// Package stream is the HTTP streaming transport: GET /v1/stream answers with
// application/x-ndjson, one envelope a line, for clients that read a response as it arrives
// (fetch with a ReadableStream, curl, any HTTP library) and have no EventSource.
//
//   - Each envelope's cursor is the connection's cursor, naming every channel it follows, as
//     over SSE; a client reconnects with the last one as cursor=.
//   - A blank line is the heartbeat while idle. Clients skip blank lines.
//   - Over HTTP/1.1 the connection is hijacked into the connection layer, which writes the
//     chunked encoding itself: one chunk per envelope (shared by every subscriber of a
//     one-channel connection), and at the end, the maximum lifetime, a drain after
//     crier.reconnect or a slow subscriber cut off, the last chunk, so that a client tells a
//     clean end from a broken connection, and reconnects with its cursor. Over HTTP/2 the body
//     is the same lines and the stream ends cleanly.
//   - JSON published across several lines arrives on one: its line breaks, which JSON allows
//     only between tokens, are sent as spaces. The value is unchanged.
//   - A subscription's start sends nothing: until its first envelope a client resumes with
//     the cursor or since= it connected with.
package stream

import (
	"bytes"
	"net/http"
	"strconv"

	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Transport registers HTTP streaming.
var Transport = transport.Transport{Name: "stream", Pattern: "GET /v1/stream", New: newHandler}

type handler struct {
	env    *transport.Env
	format int // the frame cache slot of a whole single-channel chunk
}

func newHandler(env *transport.Env) http.Handler {
	return &handler{env: env, format: env.Formats.Register()}
}

// The response heads: a hijacked connection's is written as bytes, chunked by us; an attached
// one's (HTTP/2) is set on the ResponseWriter, which frames the body itself.
var (
	rawHead      = transport.StreamHead{"Content-Type", "application/x-ndjson", "Transfer-Encoding", "chunked"}
	attachedHead = transport.StreamHead{"Content-Type", "application/x-ndjson"}
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	targets, id, ok := h.env.AdmitSubscribe(w, r, "")
	if !ok {
		return
	}
	s := &session{h: h}
	s.Subs.Observer = h.env.Observer
	// Every envelope's cursor names each resumed channel from the first one on (as over SSE).
	for _, t := range targets {
		if t.Since != nil {
			s.tracker.Set(t.Channel, *t.Since)
		}
	}
	h.env.ServeStream(w, r, "stream", targets, id, s)
}

// session is one streaming connection's protocol state.
type session struct {
	transport.StreamBase
	h       *handler
	chunked bool              // set by Open: a hijacked connection, whose chunked encoding is ours
	tracker transport.Tracker // writer-owned
	scratch []byte            // writer-owned: a multi-channel cursor
}

func (s *session) Open(c *conn.Conn, h http.Header) []byte {
	s.chunked = !c.Attached()
	if s.chunked {
		return rawHead.AppendRaw(nil, h)
	}
	attachedHead.Set(h)
	return nil
}

func (s *session) Render(dst []byte, it *conn.Item) ([]byte, bool) {
	f := it.Frame
	if f == nil {
		return append(dst, it.Raw...), false
	}
	s.tracker.Update(f)
	if f.Kind == hub.KindStart {
		return dst, false
	}
	switch {
	case s.tracker.Single() && s.chunked:
		dst = append(dst, f.Encoded(s.h.format, encodeChunk)...)
	case s.tracker.Single():
		dst = appendLine(dst, f.SingleEnvelope())
	default:
		s.scratch = s.tracker.AppendTo(s.scratch[:0])
		n := len(f.Envelope) + len(s.scratch) + len(hub.EnvelopeEnd) + 1
		if s.chunked {
			dst = appendChunkHeader(dst, n)
		}
		start := len(dst)
		dst = f.AppendEnvelope(dst, s.scratch)
		oneLine(dst[start:])
		dst = append(dst, '\n')
		if s.chunked {
			dst = append(dst, "\r\n"...)
		}
	}
	return dst, f.Msg.Event == hub.EventReconnect
}

// encodeChunk is a single-channel envelope as one chunk of its own line.
func encodeChunk(f *hub.Frame) []byte {
	env := f.SingleEnvelope()
	dst := appendChunkHeader(make([]byte, 0, len(env)+16), len(env)+1)
	dst = appendLine(dst, env)
	return append(dst, "\r\n"...)
}

// appendLine appends an envelope and a line feed, on one line whatever the envelope holds.
func appendLine(dst, env []byte) []byte {
	start := len(dst)
	dst = append(dst, env...)
	oneLine(dst[start:])
	return append(dst, '\n')
}

// oneLine turns the line breaks of an envelope into spaces. JSON has them only between tokens
// (inside strings they are escaped), so the value is unchanged.
func oneLine(b []byte) {
	if bytes.IndexByte(b, '\n') < 0 && bytes.IndexByte(b, '\r') < 0 {
		return
	}
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
}

func appendChunkHeader(dst []byte, n int) []byte {
	dst = strconv.AppendUint(dst, uint64(n), 16)
	return append(dst, "\r\n"...)
}

// Heartbeat is a blank line.
func (s *session) Heartbeat(dst []byte) []byte {
	if s.chunked {
		return append(dst, "1\r\n\n\r\n"...)
	}
	return append(dst, '\n')
}

// Goodbye ends the chunked body: the client has seen a clean end and reconnects with its
// cursor. Over HTTP/2 the stream ends when the connection layer lets the handler return.
func (s *session) Goodbye(dst []byte, reason conn.Reason) []byte {
	if reason.Code == transport.ReasonTokenExpired.Code {
		dst = s.expired(dst, reason)
	}
	if s.chunked {
		return append(dst, "0\r\n\r\n"...)
	}
	return dst
}

// expired appends the line that ends a stream whose token expired:
// {"event":"crier.token_expired","data":{"error":{…}}}, without a cursor.
func (s *session) expired(dst []byte, reason conn.Reason) []byte {
	line := append([]byte(`{"event":"`+transport.EventTokenExpired+`","data":`), transport.ReasonData(reason)...)
	line = append(line, "}\n"...)
	if s.chunked {
		dst = appendChunkHeader(dst, len(line))
		dst = append(dst, line...)
		return append(dst, "\r\n"...)
	}
	return append(dst, line...)
}

// Read ignores what the client sends: the request has nothing after its head.
func (s *session) Read(*conn.Conn, []byte) error { return nil }

func (s *session) Closed(*conn.Conn, conn.Reason) {
	s.End()
	s.h.env.Observer.Connected("stream", -1)
}
