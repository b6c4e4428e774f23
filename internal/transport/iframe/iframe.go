// Package iframe is the hidden iframe transport (script streaming): GET /v1/iframe?callback=NAME
// answers with an HTML document that never finishes loading, in which each message is a
// <script>parent.NAME(ENVELOPE);</script> that the browser runs as it arrives. It serves
// browsers without EventSource, fetch streams or WebSocket; the page that holds the iframe must
// be of the same origin (parent.NAME is called across the frame).
//
//   - callback is required and must be a JavaScript identifier or a dotted path of up to four,
//     each at most 64 characters of A-Z a-z 0-9 _ $ and not starting with a digit
//     (CallbackOK); anything else is 400 invalid_callback, before any subscription.
//   - The document starts with a doctype and 2 KiB of padding in an HTML comment, so that
//     browsers that buffer the start of a document before rendering it run the first script at
//     once.
//   - The envelope is made safe inside a script element: <, >, & and U+2028, U+2029 are
//     written as \u003c, \u003e, \u0026, \u2028, \u2029, which leaves the JSON value unchanged
//     and rules out "</script>" and "<!--". Its cursor is the connection's, naming every
//     channel it follows.
//   - The heartbeat is an HTML comment.
//   - The end (maximum lifetime, drain after crier.reconnect, a slow subscriber cut off) is a
//     comment naming the reason, then "</body></html>": the document finishes loading, which
//     the page sees as the iframe's load event, and it reconnects with the last envelope's
//     cursor as cursor=. No script is called for it, and no event name is invented.
//   - A subscription's start sends nothing: before its first envelope a page resumes with the
//     cursor or since= it connected with.
package iframe

import (
	"net/http"

	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Transport registers the hidden iframe.
var Transport = transport.Transport{Name: "iframe", Pattern: "GET /v1/iframe", New: newHandler}

type handler struct {
	env    *transport.Env
	format int // the frame cache slot of a single-channel envelope, escaped for <script>
}

func newHandler(env *transport.Env) http.Handler {
	return &handler{env: env, format: env.Formats.Register()}
}

// MaxCallbackLen bounds a callback: four names of 64 and their dots.
const MaxCallbackLen = 4*64 + 3

// CallbackOK reports whether name is a callback the iframe may call as parent.NAME: it
// matches ^[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,3}$.
func CallbackOK(name string) bool {
	if len(name) == 0 || len(name) > MaxCallbackLen {
		return false
	}
	parts, n := 1, 0 // names so far, and the length of the current one
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if n == 0 || parts == 4 {
				return false
			}
			parts, n = parts+1, 0
			continue
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_', c == '$':
		case c >= '0' && c <= '9':
			if n == 0 {
				return false
			}
		default:
			return false
		}
		if n++; n > 64 {
			return false
		}
	}
	return n > 0
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	callback := q.Get("callback")
	if !CallbackOK(callback) || len(q["callback"]) > 1 {
		transport.WriteError(w, transport.Errorf(http.StatusBadRequest, "invalid_callback",
			"callback= must be one JavaScript name or dotted path, such as onMessage or crier.push"))
		return
	}
	targets, id, ok := h.env.AdmitSubscribe(w, r, "")
	if !ok {
		return
	}
	s := &session{h: h, call: "<script>parent." + callback + "("}
	s.Subs.Observer = h.env.Observer
	for _, t := range targets {
		if t.Since != nil {
			s.tracker.Set(t.Channel, *t.Since)
		}
	}
	h.env.ServeStream(w, r, "iframe", targets, id, s)
}

// PaddingSize is the size of the comment that starts the document.
const PaddingSize = 2048

// Prelude is what the document starts with: a doctype, the charset, and the padding.
var Prelude = func() []byte {
	b := []byte("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>crier</title></head><body>\n<!--")
	for range PaddingSize {
		b = append(b, ' ')
	}
	return append(b, "-->\n"...)
}()

var head = transport.StreamHead{"Content-Type", "text/html; charset=utf-8"}

// session is one iframe connection's protocol state.
type session struct {
	transport.StreamBase
	h       *handler
	call    string            // "<script>parent.NAME("
	tracker transport.Tracker // writer-owned
	scratch []byte            // writer-owned: a multi-channel cursor
	env     []byte            // writer-owned: a multi-channel envelope
}

func (s *session) Open(c *conn.Conn, h http.Header) []byte {
	dst := head.Start(make([]byte, 0, 256+len(Prelude)), c, h)
	return append(dst, Prelude...)
}

// scriptEnd closes a call; the line feed keeps the document readable.
const scriptEnd = ");</script>\n"

func (s *session) Render(dst []byte, it *conn.Item) ([]byte, bool) {
	f := it.Frame
	if f == nil {
		return append(dst, it.Raw...), false
	}
	s.tracker.Update(f)
	if f.Kind == hub.KindStart {
		return dst, false
	}
	dst = append(dst, s.call...)
	if s.tracker.Single() {
		dst = append(dst, f.Encoded(s.h.format, encodeSingle)...)
	} else {
		s.scratch = s.tracker.AppendTo(s.scratch[:0])
		s.env = f.AppendEnvelope(s.env[:0], s.scratch)
		dst = AppendScriptSafe(dst, s.env)
	}
	dst = append(dst, scriptEnd...)
	return dst, f.Msg.Event == hub.EventReconnect
}

func encodeSingle(f *hub.Frame) []byte {
	env := f.SingleEnvelope()
	return AppendScriptSafe(make([]byte, 0, len(env)+len(env)/8), env)
}

// AppendScriptSafe appends JSON js with <, >, &, U+2028 and U+2029 escaped as \u003c etc., so
// that it may stand inside a <script> element. The value is unchanged: JSON has these
// characters only inside strings.
func AppendScriptSafe(dst, js []byte) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(js); i++ {
		c := js[i]
		switch {
		case c == '<' || c == '>' || c == '&':
			dst = append(dst, js[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			start = i + 1
		case c == 0xE2 && i+2 < len(js) && js[i+1] == 0x80 && (js[i+2] == 0xA8 || js[i+2] == 0xA9):
			dst = append(dst, js[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[js[i+2]-0xA0])
			i += 2
			start = i + 1
		}
	}
	return append(dst, js[start:]...)
}

// Heartbeat is an empty HTML comment.
func (s *session) Heartbeat(dst []byte) []byte { return append(dst, "<!---->\n"...) }

// Goodbye finishes the document: the iframe's load event tells the page to reconnect.
// A token's expiry first calls NAME({"event":"crier.token_expired","data":{"error":{…}}}),
// without a cursor: the page gets a new token before it reconnects.
func (s *session) Goodbye(dst []byte, reason conn.Reason) []byte {
	if reason.Code == transport.ReasonTokenExpired.Code {
		dst = append(dst, s.call...)
		dst = append(dst, `{"event":"`+transport.EventTokenExpired+`","data":`...)
		dst = AppendScriptSafe(dst, transport.ReasonData(reason))
		dst = append(dst, '}')
		dst = append(dst, scriptEnd...)
	}
	dst = append(dst, "<!-- closing: "...)
	dst = append(dst, reason.Code...) // snake_case: never "--" or ">"
	return append(dst, " -->\n</body></html>\n"...)
}

// Read ignores what the client sends: the request has nothing after its head.
func (s *session) Read(*conn.Conn, []byte) error { return nil }

func (s *session) Closed(*conn.Conn, conn.Reason) {
	s.End()
	s.h.env.Observer.Connected("iframe", -1)
}
