package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"
)

// ErrLineTooLong is returned when a line or an event of the stream exceeds the parser's limit.
var ErrLineTooLong = errors.New("crier: server-sent event too long")

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	Type  string // "" when the event had no event: field
	Data  []byte // the data: lines joined by '\n'
	ID    string // the last event ID in force after this event
	HasID bool   // the event itself carried an id: field
	// IDOnly marks a block with an id: field and no data:, which browsers never dispatch but
	// which still moves the last event ID (Crier sends one as a subscription starts).
	IDOnly bool
}

// sseParser reads the text/event-stream format of the HTML standard: lines end with CRLF, LF
// or CR; "field: value" lines; ':' comments; a blank line dispatches the event.
type sseParser struct {
	r       *bufio.Reader
	max     int           // longest line, and longest data of one event
	lastID  string        // persists across events, as the standard says
	retry   time.Duration // the last retry: the server sent; 0 if none
	skipLF  bool          // the previous line ended with CR: a following LF belongs to it
	started bool          // the leading BOM, if any, was skipped
	line    []byte

	// The event being built.
	typ   string
	data  []byte
	sawID bool
}

func newSSEParser(r io.Reader, max int) *sseParser {
	return &sseParser{r: bufio.NewReader(r), max: max}
}

// Next returns the next event. It returns the reader's error (io.EOF at the end) once the
// stream ends; an event cut short by the end is dropped, as the standard says.
func (p *sseParser) Next() (sseEvent, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) > 0 {
			if err := p.field(line); err != nil {
				return sseEvent{}, err
			}
			continue
		}
		if ev, ok := p.dispatch(); ok {
			return ev, nil
		}
	}
}

func (p *sseParser) dispatch() (sseEvent, bool) {
	defer func() { p.typ, p.data, p.sawID = "", p.data[:0], false }()
	if len(p.data) == 0 {
		return sseEvent{ID: p.lastID, HasID: true, IDOnly: true}, p.sawID
	}
	data := make([]byte, len(p.data)-1) // without the last '\n'
	copy(data, p.data)
	return sseEvent{Type: p.typ, Data: data, ID: p.lastID, HasID: p.sawID}, true
}

func (p *sseParser) field(line []byte) error {
	if line[0] == ':' {
		return nil // a comment: Crier's heartbeat
	}
	name, value, found := bytes.Cut(line, []byte{':'})
	if found && len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	switch string(name) {
	case "event":
		p.typ = string(value)
	case "data":
		if len(p.data)+len(value)+1 > p.max {
			return ErrLineTooLong
		}
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID, p.sawID = string(value), true
		}
	case "retry":
		if ms, ok := parseDigits(value); ok {
			p.retry = time.Duration(ms) * time.Millisecond
		}
	}
	return nil
}

// parseDigits parses a retry: value, which the standard allows only as ASCII digits.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 12 { // 12 digits of milliseconds is over 30 years
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// readLine returns the next line without its ending. It never waits for the byte after a CR,
// so a stream that ends its lines with CR alone is not held up.
func (p *sseParser) readLine() ([]byte, error) {
	p.line = p.line[:0]
	for {
		if p.skipLF {
			b, err := p.r.ReadByte()
			if err != nil {
				return nil, err
			}
			p.skipLF = false
			if b != '\n' {
				_ = p.r.UnreadByte() // cannot fail right after ReadByte
			}
		}
		if _, err := p.r.Peek(1); err != nil {
			return nil, err
		}
		chunk, _ := p.r.Peek(p.r.Buffered())
		i := bytes.IndexAny(chunk, "\r\n")
		if i < 0 {
			i = len(chunk)
		}
		if len(p.line)+i > p.max {
			return nil, ErrLineTooLong
		}
		p.line = append(p.line, chunk[:i]...)
		if i == len(chunk) {
			_, _ = p.r.Discard(i)
			continue
		}
		p.skipLF = chunk[i] == '\r'
		_, _ = p.r.Discard(i + 1)
		return p.stripBOM(p.line), nil
	}
}

func (p *sseParser) stripBOM(line []byte) []byte {
	if p.started {
		return line
	}
	p.started = true
	return bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
}
