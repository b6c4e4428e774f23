//go:build linux

package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gobwas/ws"
)

// wsTransport subscribes over WebSocket: GET /v1/ws?channel=…, or with
// subscribeOp a bare GET /v1/ws followed by one subscribe command per channel,
// confirmed by its reply.
type wsTransport struct {
	subscribeOp bool
}

func (t *wsTransport) name() string { return "ws" }

func (t *wsTransport) dial(ctx context.Context, d *dialer, channels []string) (net.Conn, []byte, decoder, error) {
	u := "ws://" + d.host + "/v1/ws"
	if !t.subscribeOp {
		q := url.Values{"channel": channels}
		u += "?" + q.Encode()
	}
	var status int
	var body []byte
	wd := ws.Dialer{
		Timeout: d.timeout,
		NetDial: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.dialTCP(ctx) },
		OnStatusError: func(code int, _ []byte, resp io.Reader) {
			status = code
			// The body ends where Content-Length says, not at the end of the
			// (kept-alive) connection.
			if r, err := http.ReadResponse(bufio.NewReader(resp), nil); err == nil {
				body, _ = io.ReadAll(io.LimitReader(r.Body, 512))
				r.Body.Close()
			}
		},
	}
	if d.token != "" {
		wd.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + d.token}})
	}
	nc, br, _, err := wd.Dial(ctx, u)
	if err != nil {
		if status != 0 {
			err = fmt.Errorf("%w: %s", err, httpErrorText(body))
		}
		return nil, nil, nil, err
	}
	var pre []byte
	if br != nil {
		pre, _ = br.Peek(br.Buffered())
		pre = append([]byte(nil), pre...)
		ws.PutReader(br)
	}
	dec := &wsDecoder{wantAcks: 0}
	if t.subscribeOp {
		dec.wantAcks = len(channels)
		_ = nc.SetWriteDeadline(time.Now().Add(d.timeout))
		for i, ch := range channels {
			cmd := `{"id":` + strconv.Itoa(i+1) + `,"op":"subscribe","channel":` + strconv.Quote(ch) + `}`
			if err := ws.WriteFrame(nc, ws.MaskFrame(ws.NewTextFrame([]byte(cmd)))); err != nil {
				nc.Close()
				return nil, nil, nil, err
			}
		}
		_ = nc.SetWriteDeadline(time.Time{})
	}
	return nc, pre, dec, nil
}

// wsDecoder reads server frames: text frames hold one envelope each; pings
// are answered; a close ends the connection. A frame that spans reads is
// carried over; everything else is decoded in the reactor's buffer.
type wsDecoder struct {
	carry    []byte // an incomplete frame, header included
	frag     []byte // the payload so far of a fragmented message
	inFrag   bool
	wantAcks int
}

// maxWSFrame bounds a frame from the server: far above any envelope the
// server may send (64 KiB payloads by default), and grown into only as bytes
// arrive.
const maxWSFrame = 64 << 20

var (
	errWSClosed   = errors.New("server closed the WebSocket")
	errWSProtocol = errors.New("WebSocket protocol error")
)

func (d *wsDecoder) ready(c *conn) bool { return c.acks >= d.wantAcks }

// frameNeed returns how many bytes the frame starting at b takes, or, when b
// does not hold its whole header yet, how many bytes would make the header
// complete (always more than len(b)).
func frameNeed(b []byte) (need int, err error) {
	if len(b) < 2 {
		return 2, nil
	}
	hl := 2
	l7 := int(b[1] & 0x7f)
	switch l7 {
	case 126:
		hl += 2
	case 127:
		hl += 8
	}
	if b[1]&0x80 != 0 {
		hl += 4
	}
	if len(b) < hl {
		return hl, nil
	}
	var n uint64
	switch l7 {
	case 126:
		n = uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		n = binary.BigEndian.Uint64(b[2:])
	default:
		n = uint64(l7)
	}
	if n > maxWSFrame {
		return 0, fmt.Errorf("%w: frame of %d bytes", errWSProtocol, n)
	}
	return hl + int(n), nil
}

func (d *wsDecoder) feed(c *conn, x *rx, p []byte) error {
	for len(d.carry) > 0 {
		need, err := frameNeed(d.carry)
		if err != nil {
			return err
		}
		if len(d.carry) >= need {
			err := d.frame(c, x, d.carry[:need])
			if cap(d.carry) > 4096 {
				d.carry = nil
			} else {
				d.carry = d.carry[:0]
			}
			if err != nil {
				return err
			}
			break
		}
		if len(p) == 0 {
			return nil
		}
		k := min(need-len(d.carry), len(p))
		d.carry = append(d.carry, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 {
		need, err := frameNeed(p)
		if err != nil {
			return err
		}
		if len(p) < need {
			d.carry = append(d.carry[:0], p...)
			return nil
		}
		if err := d.frame(c, x, p[:need]); err != nil {
			return err
		}
		p = p[need:]
	}
	return nil
}

// frame handles one whole frame.
func (d *wsDecoder) frame(c *conn, x *rx, f []byte) error {
	fin := f[0]&0x80 != 0
	op := ws.OpCode(f[0] & 0x0f)
	hl := 2
	switch f[1] & 0x7f {
	case 126:
		hl += 2
	case 127:
		hl += 8
	}
	payload := f[hl:]
	if f[1]&0x80 != 0 { // servers must not mask, but tolerate it
		var mask [4]byte
		copy(mask[:], f[hl:])
		payload = f[hl+4:]
		ws.Cipher(payload, mask, 0)
	}
	switch op {
	case ws.OpText, ws.OpBinary:
		if d.inFrag {
			return fmt.Errorf("%w: new message inside a fragmented one", errWSProtocol)
		}
		if fin {
			x.envelope(c, payload)
			return nil
		}
		d.inFrag = true
		d.frag = append(d.frag[:0], payload...)
	case ws.OpContinuation:
		if !d.inFrag {
			return fmt.Errorf("%w: continuation without a message", errWSProtocol)
		}
		if len(d.frag)+len(payload) > maxWSFrame {
			return fmt.Errorf("%w: message over %d bytes", errWSProtocol, maxWSFrame)
		}
		d.frag = append(d.frag, payload...)
		if fin {
			d.inFrag = false
			x.envelope(c, d.frag)
			if cap(d.frag) > 4096 {
				d.frag = nil
			}
		}
	case ws.OpPing:
		if len(payload) > 125 {
			return fmt.Errorf("%w: ping of %d bytes", errWSProtocol, len(payload))
		}
		var buf [2 + 4 + 125]byte
		return c.write(appendClientFrame(buf[:0], ws.OpPong, payload))
	case ws.OpPong:
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(payload)
		var buf [2 + 4 + 125]byte
		echo := payload[:min(len(payload), 2)]
		_ = c.write(appendClientFrame(buf[:0], ws.OpClose, echo))
		return fmt.Errorf("%w: %d %q", errWSClosed, code, reason)
	default:
		return fmt.Errorf("%w: opcode %d", errWSProtocol, op)
	}
	return nil
}

// appendClientFrame appends a final, masked frame with a payload of at most
// 125 bytes, as a client sends it.
func appendClientFrame(b []byte, op ws.OpCode, payload []byte) []byte {
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	b = append(b, 0x80|byte(op), 0x80|byte(len(payload)))
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, payload...)
	ws.Cipher(b[start:], mask, 0)
	return b
}
