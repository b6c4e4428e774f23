//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// A transport is one way for a subscriber to receive envelopes (WebSocket,
// SSE; NDJSON streaming, polling and the others fit the same mould). Its dial
// does the handshake with ordinary blocking Go I/O; from then on the
// connection is a socket that a reactor reads and hands, byte run by byte run,
// to the transport's decoder, which may write back (WebSocket pongs, a poll
// transport's next request) on the same socket.
type transport interface {
	name() string
	// dial opens a subscriber connection on channels. It returns the
	// connection, the bytes already read past the handshake, and the decoder
	// of the stream that follows.
	dial(ctx context.Context, d *dialer, channels []string) (nc net.Conn, pre []byte, dec decoder, err error)
}

// A decoder turns one connection's byte stream into envelopes.
type decoder interface {
	// feed consumes p, the next bytes received on c, calling x.envelope for
	// each complete envelope. It may modify p and must copy whatever it keeps
	// of an incomplete frame: p is reused after feed returns.
	feed(c *conn, x *rx, p []byte) error
	// ready reports whether the subscription is confirmed, so that messages
	// published from now on reach it.
	ready(c *conn) bool
}

var transports = map[string]func(o *options) transport{
	"ws":  func(o *options) transport { return &wsTransport{subscribeOp: o.wsSubscribe == "op"} },
	"sse": func(o *options) transport { return sseTransport{} },
}

// conn is one subscriber connection. Once registered, it belongs to one
// reactor, which alone touches it until the reactors stop.
type conn struct {
	id     int
	fd     int // the socket; -1 once closed
	dec    decoder
	tracks []track // one per subscribed channel
	acks   int     // WebSocket subscribe replies received
	bytes  int     // bytes received, on the floor's connections
	err    error   // why the connection ended, or what the server refused
	closed bool
}

// write sends b on the connection, from the goroutine that owns it. It is
// used for small control answers only; on a full socket buffer it gives up
// (the server will notice a missing pong).
func (c *conn) write(b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (c *conn) track(ch int) *track {
	for i := range c.tracks {
		if c.tracks[i].ch == ch {
			return &c.tracks[i]
		}
	}
	return nil
}

// rx is what a decoder needs to account for envelopes: per goroutine, so
// that nothing on the delivery path is shared.
type rx struct {
	now         int64  // receive time of the bytes being fed, Unix ns
	measureFrom int64  // record latency of messages published from then on
	prefix      []byte // channel name prefix
	channels    int
	hist        *histogram

	deliveries uint64 // bench payloads received, duplicates included
	unique     uint64 // first receptions
	other      uint64 // envelopes that are not bench payloads
	unexpected uint64 // bench payloads for a channel not subscribed, or sequence 0
}

var (
	errSubscribeRefused = errors.New("subscribe refused")
	errEOF              = errors.New("server closed the connection")
)

// envelope accounts for one envelope received on c.
func (x *rx) envelope(c *conn, env []byte) {
	name, t, s, ok := scanEnvelope(env)
	if !ok {
		x.other++
		x.reply(c, env)
		return
	}
	x.deliveries++
	tr := c.track(channelIndex(name, x.prefix, x.channels))
	if tr == nil || s == 0 {
		x.unexpected++
		return
	}
	if tr.see(s) {
		x.unique++
	}
	if t >= x.measureFrom {
		lat := x.now - t
		if lat < 0 {
			lat = 0
		}
		x.hist.record(uint64(lat))
	}
}

var (
	keyID    = []byte(`"id":`)
	keyOK    = []byte(`"ok":true`)
	keyError = []byte(`"error":`)
)

// reply notes a WebSocket command reply.
func (x *rx) reply(c *conn, env []byte) {
	if !bytes.Contains(env, keyID) {
		return
	}
	switch {
	case bytes.Contains(env, keyOK):
		c.acks++
	case bytes.Contains(env, keyError) && c.err == nil:
		c.err = fmt.Errorf("%w: %.300s", errSubscribeRefused, env)
	}
}
