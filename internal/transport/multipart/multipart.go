// Package multipart is the multipart/x-mixed-replace transport: GET /v1/multipart answers with
// one part per message, the part being the raw payload, so that a channel of images displays as
// live video in an <img> (each part replaces the one before).
//
//   - A part's body is the payload as published: the bytes of a binary payload (not base64),
//     the JSON or text otherwise. Its own Content-Type is the payload's (application/octet-stream
//     when it had none), and the envelope's other fields are part headers: Crier-Channel,
//     Crier-Offset, Crier-Epoch, Crier-Time, Crier-Event and Crier-Cursor, the connection's
//     cursor (naming every channel it follows). Content-Length gives the body's size.
//   - Server events (crier.gap, crier.reconnect, presence) are application/json parts whose body
//     is the event's data. An <img> shows such a part as a broken image until the next frame.
//   - The boundary is random, 32 bytes of hex, chosen per connection and given in the response's
//     Content-Type. Each part ends with the delimiter that begins the next ("\r\n--BOUNDARY"),
//     so that a browser may show a part as soon as it has it; the last part is followed by the
//     close delimiter's "--". A payload cannot be chosen to contain a boundary it cannot know,
//     but one that happens to (or a subscriber publishing what it read in its own response
//     head) is not sent with it: the connection ends before that part, with its cursor before
//     it, and the client's reconnection gets a new boundary.
//   - No heartbeat: whatever is written is a part, and a part replaces what an <img> shows.
//   - The end (maximum lifetime, drain after crier.reconnect, a slow subscriber cut off) is the
//     close delimiter. A client reconnects with the last Crier-Cursor as cursor=; a
//     subscription's start sends nothing, so before its first part a client resumes with the
//     cursor or since= it connected with.
//   - Browsers: Firefox shows a part once its delimiter arrives; Chromium only once the next
//     part's headers have arrived, so it shows each image one part late.
package multipart

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"

	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Transport registers multipart.
var Transport = transport.Transport{Name: "multipart", Pattern: "GET /v1/multipart", New: newHandler}

type handler struct {
	env    *transport.Env
	format int // the frame cache slot of a single-channel part, without its delimiter
}

func newHandler(env *transport.Env) http.Handler {
	return &handler{env: env, format: env.Formats.Register()}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	targets, id, ok := h.env.AdmitSubscribe(w, r, "")
	if !ok {
		return
	}
	s := &session{h: h, boundary: NewBoundary()}
	s.delim = append([]byte("\r\n--"), s.boundary...)
	s.Subs.Observer = h.env.Observer
	for _, t := range targets {
		if t.Since != nil {
			s.tracker.Set(t.Channel, *t.Since)
		}
	}
	h.env.ServeStream(w, r, "multipart", targets, id, s)
}

// NewBoundary returns a random boundary: 64 hex digits, which RFC 2046 allows (at most 70
// characters) and no payload can be chosen to contain without knowing it.
func NewBoundary() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// session is one multipart connection's protocol state.
type session struct {
	transport.StreamBase
	h        *handler
	c        *conn.Conn
	boundary string
	delim    []byte            // "\r\n--" and the boundary
	tracker  transport.Tracker // writer-owned
	scratch  []byte            // writer-owned: a multi-channel cursor
	part     []byte            // writer-owned: a multi-channel part
}

// Open writes the head, then the first delimiter (without its CRLF before: it starts the body).
func (s *session) Open(c *conn.Conn, h http.Header) []byte {
	s.c = c
	head := transport.StreamHead{"Content-Type", "multipart/x-mixed-replace; boundary=" + s.boundary}
	dst := head.Start(nil, c, h)
	return append(dst, s.delim[2:]...)
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
	var part []byte
	if s.tracker.Single() {
		part = f.Encoded(s.h.format, encodeSingle)
	} else {
		s.scratch = s.tracker.AppendTo(s.scratch[:0])
		s.part = appendPart(s.part[:0], f, s.scratch)
		part = s.part
	}
	if bytes.Contains(part, s.delim[2:]) {
		// Sent with this boundary, the part would end early. Nothing from it on is written:
		// the client's cursor stands before it.
		s.c.Close(conn.Reason{Code: "boundary_collision", Message: "a part contains the boundary; reconnect with your cursor"})
		return dst, true
	}
	dst = append(dst, part...)
	dst = append(dst, s.delim...)
	return dst, f.Msg.Event == hub.EventReconnect
}

func encodeSingle(f *hub.Frame) []byte {
	return appendPart(make([]byte, 0, len(f.Msg.Data)+256), f, []byte(f.Cursor))
}

// appendPart appends a part's headers and body, from the CRLF that ends the delimiter before it.
func appendPart(dst []byte, f *hub.Frame, cursor []byte) []byte {
	m := &f.Msg
	dst = append(dst, "\r\nContent-Type: "...)
	dst = append(dst, contentType(m.ContentType)...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(m.Data)), 10)
	dst = append(dst, "\r\nCrier-Channel: "...)
	dst = append(dst, m.Channel...)
	dst = append(dst, "\r\nCrier-Offset: "...)
	dst = strconv.AppendUint(dst, m.Offset, 10)
	dst = append(dst, "\r\nCrier-Epoch: "...)
	dst = append(dst, m.Epoch...)
	dst = append(dst, "\r\nCrier-Time: "...)
	dst = m.Time.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, "\r\nCrier-Event: "...)
	if m.Event == "" {
		dst = append(dst, hub.EventMessage...)
	} else {
		dst = append(dst, m.Event...)
	}
	dst = append(dst, "\r\nCrier-Cursor: "...)
	dst = append(dst, cursor...)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, m.Data...)
}

// contentType is a part's Content-Type: the payload's, when it is a printable header value.
func contentType(ct string) string {
	if ct == "" {
		return "application/octet-stream"
	}
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return "application/octet-stream"
		}
	}
	return ct
}

// Heartbeat writes nothing: any bytes would be a part.
func (s *session) Heartbeat(dst []byte) []byte { return dst }

// Goodbye turns the delimiter after the last part into the close delimiter.
// A token's expiry is a last application/json part first, event crier.token_expired, the
// API's error body as its body, without a cursor.
func (s *session) Goodbye(dst []byte, reason conn.Reason) []byte {
	if reason.Code == transport.ReasonTokenExpired.Code {
		body := transport.ReasonData(reason)
		dst = append(dst, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
		dst = append(dst, "\r\nCrier-Event: "+transport.EventTokenExpired+"\r\n\r\n"...)
		dst = append(dst, body...)
		dst = append(dst, s.delim...)
	}
	return append(dst, "--\r\n"...)
}

// Read ignores what the client sends: the request has nothing after its head.
func (s *session) Read(*conn.Conn, []byte) error { return nil }

func (s *session) Closed(*conn.Conn, conn.Reason) {
	s.End()
	s.h.env.Observer.Connected("multipart", -1)
}
