//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// sseTransport subscribes over Server-Sent Events: GET /v1/sse?channel=…. The
// subscription counts as confirmed at the first line of the stream (the
// server sends retry: first).
type sseTransport struct{}

func (sseTransport) name() string { return "sse" }

func (sseTransport) dial(ctx context.Context, d *dialer, channels []string) (net.Conn, []byte, decoder, error) {
	nc, err := d.dialTCP(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (net.Conn, []byte, decoder, error) {
		nc.Close()
		return nil, nil, nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(d.timeout))
	q := url.Values{"channel": channels}
	req := "GET /v1/sse?" + q.Encode() + " HTTP/1.1\r\nHost: " + d.host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
	if d.token != "" {
		req += "Authorization: Bearer " + d.token + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		return fail(err)
	}
	head, pre, err := readResponseHead(nc)
	if err != nil {
		return fail(err)
	}
	status, chunked, err := parseResponseHead(head)
	if err != nil {
		return fail(err)
	}
	if status != 200 {
		return fail(fmt.Errorf("GET /v1/sse: HTTP %d: %s", status, httpErrorText(pre)))
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, pre, &sseDecoder{chunked: chunked}, nil
}

var errHeadTooLong = errors.New("HTTP response head over 16 KiB")

// readResponseHead reads an HTTP response head; it returns the head without
// its final blank line, and the bytes read past it.
func readResponseHead(nc net.Conn) (head, rest []byte, err error) {
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= 16<<10 {
				return nil, nil, errHeadTooLong
			}
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			return buf[:i+2], buf[i+4:], nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// parseResponseHead returns the status of an HTTP/1.x response head and
// whether its body is chunked.
func parseResponseHead(head []byte) (status int, chunked bool, err error) {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("malformed HTTP status line %.80q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("malformed HTTP status line %.80q", line)
	}
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("Transfer-Encoding")) &&
			bytes.Contains(bytes.ToLower(v), []byte("chunked")) {
			chunked = true
		}
	}
	return status, chunked, nil
}

// sseDecoder reads an event stream, undoing HTTP/1.1 chunked encoding first
// when the response uses it. Each data: line holds one envelope (JSON has no
// raw newlines); id:, event:, retry: and comment lines are skipped. A line
// that spans reads is carried over; everything else is decoded in the
// reactor's buffer.
type sseDecoder struct {
	chunked bool
	cstate  uint8
	csize   uint64 // chunk bytes still to come (in chunkData), or the size being read
	carry   []byte // an incomplete line
	lines   int
}

const (
	chunkSize    = iota // reading the hexadecimal size
	chunkExt            // skipping a chunk extension up to the end of the line
	chunkData           // inside a chunk's data
	chunkDataEnd        // expecting the CRLF after a chunk's data
	chunkDone           // the last chunk was read: the stream is over
)

// maxSSELine bounds a line of the stream.
const maxSSELine = 64 << 20

var (
	errSSEEnded   = errors.New("server ended the event stream")
	errBadChunked = errors.New("malformed chunked encoding")
)

func (d *sseDecoder) ready(*conn) bool { return d.lines > 0 }

func (d *sseDecoder) feed(c *conn, x *rx, p []byte) error {
	if d.chunked {
		var err error
		if p, err = d.dechunk(p); err != nil {
			return err
		}
	}
	if len(d.carry) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(d.carry)+len(p) > maxSSELine {
				return fmt.Errorf("event stream line over %d bytes", maxSSELine)
			}
			d.carry = append(d.carry, p...)
			return d.ended()
		}
		d.carry = append(d.carry, p[:i]...)
		d.line(c, x, d.carry)
		if cap(d.carry) > 4096 {
			d.carry = nil
		} else {
			d.carry = d.carry[:0]
		}
		p = p[i+1:]
	}
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		d.line(c, x, p[:i])
		p = p[i+1:]
	}
	if len(p) > 0 {
		d.carry = append(d.carry[:0], p...)
	}
	return d.ended()
}

func (d *sseDecoder) ended() error {
	if d.cstate == chunkDone {
		return errSSEEnded
	}
	return nil
}

var dataField = []byte("data:")

func (d *sseDecoder) line(c *conn, x *rx, l []byte) {
	d.lines++
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	if !bytes.HasPrefix(l, dataField) {
		return
	}
	l = l[len(dataField):]
	if len(l) > 0 && l[0] == ' ' {
		l = l[1:]
	}
	x.envelope(c, l)
}

// dechunk removes the chunked encoding from p in place and returns the body
// bytes it held. The decoder's state carries a chunk header or trailer split
// across reads, so nothing needs copying aside.
func (d *sseDecoder) dechunk(p []byte) ([]byte, error) {
	w := 0
	for r := 0; r < len(p); {
		switch d.cstate {
		case chunkSize, chunkExt:
			b := p[r]
			r++
			switch {
			case b == '\n':
				if d.csize == 0 {
					d.cstate = chunkDone
					return p[:w], nil
				}
				d.cstate = chunkData
			case d.cstate == chunkExt || b == '\r':
			case b == ';' || b == ' ' || b == '\t':
				d.cstate = chunkExt
			default:
				v := unhex(b)
				if v < 0 || d.csize > 1<<40 {
					return nil, errBadChunked
				}
				d.csize = d.csize<<4 | uint64(v)
			}
		case chunkData:
			k := min(uint64(len(p)-r), d.csize)
			copy(p[w:], p[r:r+int(k)])
			w += int(k)
			r += int(k)
			d.csize -= k
			if d.csize == 0 {
				d.cstate = chunkDataEnd
			}
		case chunkDataEnd:
			b := p[r]
			r++
			switch b {
			case '\r':
			case '\n':
				d.cstate = chunkSize
			default:
				return nil, errBadChunked
			}
		case chunkDone:
			return p[:w], nil
		}
	}
	return p[:w], nil
}

func unhex(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b - 'a' + 10)
	case b >= 'A' && b <= 'F':
		return int(b - 'A' + 10)
	}
	return -1
}

// httpErrorText extracts the message of a Crier error answer
// ({"error":{"code","message"}}), or returns the start of the body.
func httpErrorText(body []byte) string {
	if i := bytes.Index(body, []byte(`"message":`)); i >= 0 {
		if s := bytes.TrimSpace(body[i+len(`"message":`):]); len(s) > 0 && s[0] == '"' {
			if j := bytes.IndexByte(s[1:], '"'); j >= 0 {
				return string(s[1 : j+1])
			}
		}
	}
	return fmt.Sprintf("%.200q", bytes.TrimSpace(body))
}
