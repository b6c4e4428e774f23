package hub

import (
	"encoding/base64"
	"encoding/json"
	"mime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/crier-push/crier/internal/channel"
)

// Event names reserved for the server's own events.
const (
	EventMessage   = "message"
	EventGap       = "crier.gap"
	EventJoin      = "crier.join"
	EventLeave     = "crier.leave"
	EventReconnect = "crier.reconnect"
)

// Publication is what a publisher hands the hub.
type Publication struct {
	Channel        string
	Event          string // "" means EventMessage
	ContentType    string
	Data           []byte
	TTL            time.Duration // 0: kept as long as the namespace's history keeps it
	IdempotencyKey string
}

// Message is one stored publication with its place in the channel.
type Message struct {
	Channel     string
	Epoch       string
	Offset      uint64
	Time        time.Time
	Event       string
	ContentType string
	Data        []byte
	Expires     time.Time // zero: no per-message TTL
}

// Position returns the message's position.
func (m *Message) Position() channel.Position {
	return channel.Position{Epoch: m.Epoch, Offset: m.Offset}
}

// Expired reports whether the message's own TTL has passed at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expires.IsZero() && !now.Before(m.Expires)
}

// FrameKind tells a renderer what a frame is.
type FrameKind uint8

const (
	// KindMessage is a publication or a server event (gap, join, leave, reconnect).
	KindMessage FrameKind = iota
	// KindStart carries only the position a subscription starts from; renderers update their
	// cursor with it and may tell the client (an SSE id: line).
	KindStart
)

// MaxFormats bounds how many wire formats may cache an encoding on a frame.
const MaxFormats = 16

// Frame is a message as it travels to subscribers: shared by all of them, immutable once built,
// with each wire format's encoding computed once and cached.
type Frame struct {
	Kind FrameKind
	Msg  Message
	// Envelope is the JSON envelope up to and including `"cursor":"`; a subscriber's cursor and
	// EnvelopeEnd complete it.
	Envelope []byte
	// Cursor is the cursor of a subscriber of this channel alone: CHANNEL@EPOCH:OFFSET.
	Cursor string
	cache  [MaxFormats]atomic.Pointer[[]byte]
}

// EnvelopeEnd closes Envelope after the cursor.
const EnvelopeEnd = `"}`

// Encoded returns the frame's encoding for format id, computing it once with enc.
func (f *Frame) Encoded(id int, enc func(*Frame) []byte) []byte {
	if p := f.cache[id].Load(); p != nil {
		return *p
	}
	b := enc(f)
	f.cache[id].Store(&b)
	return b
}

// AppendEnvelope appends the full envelope for a subscriber whose cursor is cursor.
func (f *Frame) AppendEnvelope(dst []byte, cursor []byte) []byte {
	dst = append(dst, f.Envelope...)
	dst = append(dst, cursor...)
	return append(dst, EnvelopeEnd...)
}

// SingleEnvelope is the full envelope for a subscriber of this channel alone.
func (f *Frame) SingleEnvelope() []byte {
	return f.Encoded(formatEnvelope, func(f *Frame) []byte {
		b := make([]byte, 0, len(f.Envelope)+len(f.Cursor)+2)
		return f.AppendEnvelope(b, []byte(f.Cursor))
	})
}

// formatEnvelope is the cache slot of SingleEnvelope; transports register theirs after it.
const formatEnvelope = 0

// Formats hands out cache slots to wire formats.
type Formats struct{ next atomic.Int32 }

// Register returns a new format id. It panics past MaxFormats, a programming error.
func (fs *Formats) Register() int {
	id := int(fs.next.Add(1))
	if id >= MaxFormats {
		panic("hub: too many wire formats")
	}
	return id
}

// NewFrame builds the shared frame of a message.
func NewFrame(m Message) *Frame {
	f := &Frame{Kind: KindMessage, Msg: m}
	var num [20]byte // the offset's digits, without a string of their own
	f.Cursor = m.Channel + "@" + m.Epoch + ":" + string(strconv.AppendUint(num[:0], m.Offset, 10))
	f.Envelope = appendEnvelopeHead(make([]byte, 0, 160+len(m.Data)+len(m.Data)/3), &m)
	return f
}

// newStartFrame builds the frame that tells a renderer where a subscription starts.
func newStartFrame(name string, pos channel.Position) *Frame {
	return &Frame{Kind: KindStart, Msg: Message{Channel: name, Epoch: pos.Epoch, Offset: pos.Offset},
		Cursor: name + "@" + pos.String()}
}

// newEventFrame builds a server event frame standing at pos.
func newEventFrame(name string, pos channel.Position, event string, data any, now time.Time) *Frame {
	b, _ := json.Marshal(data)
	return NewFrame(Message{Channel: name, Epoch: pos.Epoch, Offset: pos.Offset, Time: now,
		Event: event, ContentType: "application/json", Data: b})
}

func appendEnvelopeHead(b []byte, m *Message) []byte {
	b = append(b, `{"channel":"`...)
	b = append(b, m.Channel...) // channel names need no escaping
	b = append(b, `","offset":`...)
	b = strconv.AppendUint(b, m.Offset, 10)
	b = append(b, `,"epoch":"`...)
	b = append(b, m.Epoch...)
	b = append(b, `","time":"`...)
	b = m.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","event":`...)
	ev := m.Event
	if ev == "" {
		ev = EventMessage
	}
	b = appendJSONString(b, ev)
	b = append(b, `,"data":`...)
	switch DataKind(m.ContentType, m.Data) {
	case DataJSON:
		b = append(b, m.Data...)
	case DataText:
		b = appendJSONString(b, string(m.Data))
	default:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, m.Data)
		b = append(b, `","encoding":"base64","content_type":`...)
		ct := m.ContentType
		if ct == "" {
			ct = "application/octet-stream" // RFC 9110: what an untyped body is taken to be
		}
		b = appendJSONString(b, ct)
	}
	return append(b, `,"cursor":"`...)
}

// DataKinds say how a payload sits in the envelope.
const (
	DataJSON = iota
	DataText
	DataBinary
)

// DataKind classifies a payload by its content type. JSON that does not parse, and JSON or text
// that is not UTF-8, is carried as binary so that the envelope stays valid and the body unaltered.
func DataKind(contentType string, data []byte) int {
	mt := contentType
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		// json.Valid accepts invalid UTF-8 inside strings; such a body would make the envelope
		// invalid JSON, so it travels as binary too.
		if utf8.Valid(data) && json.Valid(data) {
			return DataJSON
		}
	case strings.HasPrefix(mt, "text/"):
		if isUTF8Text(contentType, data) {
			return DataText
		}
	}
	return DataBinary
}

func isUTF8Text(contentType string, data []byte) bool {
	if _, params, err := mime.ParseMediaType(contentType); err == nil {
		if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "utf8" && cs != "us-ascii" {
			return false
		}
	}
	return utf8.Valid(data)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD (as encoding/json
// does), so the result is always valid JSON. Payloads reach it only when valid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x80 {
			continue
		}
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
			case r == '\u2028' || r == '\u2029':
				// Escaped so that the envelope is also safe inside <script>.
				b = append(b, s[start:i]...)
				b = append(b, `\u202`...)
				b = append(b, hex[r&0xF])
			default:
				i += size - 1
				continue
			}
			i += size - 1
			start = i + 1
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
