//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// publisher publishes on the channels it owns, one request at a time over a
// kept-alive HTTP/1.1 connection, with requests and answers handled by hand:
// net/http's client would cost the generator more CPU per publish than the
// server's delivery of it to ten subscribers. A channel belongs to one
// publisher, and a publish waits for its answer before the next, so the
// sequence numbers of a channel are in the server's offset order.
type publisher struct {
	d        dialer
	size     int        // payload size
	heads    [][]byte   // per owned channel: the request up to the Content-Length value
	chans    []int      // owned channel indexes
	last     []uint64   // per owned channel: the last sequence number used
	unsure   [][]uint64 // per owned channel: numbers whose publish got no answer
	rtt      histogram  // publish round trips, ns, in the measured window
	measure  *atomic.Int64
	ok       atomic.Uint64 // publishes answered 201
	failed   uint64        // publishes without an answer
	rejected uint64        // publishes answered with an error status
	status   int           // the last error status
	lastErr  error

	nc   net.Conn
	br   *bufio.Reader
	req  []byte
	body []byte
}

func newPublisher(d dialer, o *options, chans []int, names []string, measure *atomic.Int64) *publisher {
	p := &publisher{d: d, size: o.payloadSize, chans: chans, measure: measure,
		last: make([]uint64, len(chans)), unsure: make([][]uint64, len(chans))}
	for _, ch := range chans {
		h := "POST /v1/channels/" + names[ch] + " HTTP/1.1\r\nHost: " + d.host +
			"\r\nContent-Type: application/json\r\n"
		if d.token != "" {
			h += "Authorization: Bearer " + d.token + "\r\n"
		}
		p.heads = append(p.heads, []byte(h+"Content-Length: "))
	}
	return p
}

// run publishes round-robin over the owned channels until done is closed:
// every interval, or back to back when interval is 0.
func (p *publisher) run(ctx context.Context, done <-chan struct{}, interval time.Duration) {
	defer p.close()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	next := time.Now()
	for i := 0; ; i++ {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		default:
		}
		if interval > 0 && i > 0 { // the first one at once
			next = next.Add(interval)
			wait := time.Until(next)
			if wait < -time.Second { // fell behind: do not burst to catch up
				next = time.Now()
			}
			if wait > 0 {
				timer.Reset(wait)
				select {
				case <-done:
					return
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
		}
		backoff := p.publish(i % len(p.chans))
		if backoff > 0 {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// publish publishes the next message of the k-th owned channel and returns
// how long to wait before the next one when it failed.
func (p *publisher) publish(k int) (backoff time.Duration) {
	s := p.last[k] + 1
	t := time.Now()
	tn := t.UnixNano()
	p.body = appendPayload(p.body[:0], tn, s, p.size)
	p.req = append(p.req[:0], p.heads[k]...)
	p.req = strconv.AppendInt(p.req, int64(len(p.body)), 10)
	p.req = append(p.req, "\r\n\r\n"...)
	p.req = append(p.req, p.body...)
	status, err := p.roundTrip(p.req)
	switch {
	case err != nil:
		// The server may or may not have taken it: the number is used, and
		// its absence will not count as a loss.
		p.last[k] = s
		p.unsure[k] = append(p.unsure[k], s)
		p.failed++
		p.lastErr = err
		p.close()
		return 50 * time.Millisecond
	case status == 201 || status == 200:
		p.last[k] = s
		p.ok.Add(1)
		if tn >= p.measure.Load() {
			p.rtt.record(uint64(time.Since(t)))
		}
		return 0
	default:
		p.rejected++
		p.status = status
		return 10 * time.Millisecond
	}
}

var errBadAnswer = errors.New("malformed HTTP answer")

func (p *publisher) roundTrip(req []byte) (status int, err error) {
	if p.nc == nil {
		if p.nc, err = p.d.dialTCP(context.Background()); err != nil {
			p.nc = nil
			return 0, err
		}
		p.br = bufio.NewReaderSize(p.nc, 16<<10)
	}
	if err := p.nc.SetDeadline(time.Now().Add(p.d.timeout)); err != nil {
		return 0, err
	}
	if _, err := p.nc.Write(req); err != nil {
		return 0, err
	}
	line, err := p.br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("%w: status line %.80q", errBadAnswer, line)
	}
	v, _, ok := parseUint(line[9:12])
	if !ok {
		return 0, fmt.Errorf("%w: status line %.80q", errBadAnswer, line)
	}
	status = int(v)
	length, chunked, closing := -1, false, false
	for {
		h, err := p.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(h) <= 2 {
			break
		}
		k, val, _ := bytes.Cut(h, []byte(":"))
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			n, _, ok := parseUint(val)
			if !ok {
				return 0, fmt.Errorf("%w: Content-Length %q", errBadAnswer, val)
			}
			length = int(n)
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(val, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closing = bytes.EqualFold(val, []byte("close"))
		}
	}
	switch {
	case chunked:
		err = skipChunked(p.br)
	case length >= 0:
		_, err = p.br.Discard(length)
	default:
		closing = true // the body runs to the end of the connection
	}
	if err != nil {
		return 0, err
	}
	if closing {
		p.close()
	}
	return status, nil
}

func skipChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line, _, _ = bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseUint(string(line), 16, 32)
		if err != nil {
			return fmt.Errorf("%w: chunk size %q", errBadAnswer, line)
		}
		if n == 0 {
			for { // trailer
				l, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimSpace(l)) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return err
		}
	}
}

func (p *publisher) close() {
	if p.nc != nil {
		p.nc.Close()
		p.nc, p.br = nil, nil
	}
}
