package bench

import (
	"bytes"
	"strconv"
)

// The bench payload has a fixed layout, so that a subscriber finds its two
// numbers by scanning bytes instead of decoding the envelope:
//
//	{"t":1763884800123456789,"s":42,"p":"xxxx"}
//
// t is the publish time in Unix nanoseconds, s the message's sequence number
// on its channel (1, 2, 3, … in publish order) and p an optional padding up to
// --payload-size. The server sends a JSON payload as published (SPEC §2), so
// the layout survives the trip.

var (
	keyChannel = []byte(`"channel":`)
	keyData    = []byte(`"data":`)
	payloadT   = []byte(`{"t":`)
	payloadS   = []byte(`,"s":`)
)

// scanEnvelope finds in one envelope the channel name and the bench payload's
// time and sequence number. ok is false when the envelope has no channel or
// its data is not a bench payload (server events, command replies). channel
// aliases env.
func scanEnvelope(env []byte) (channel []byte, t int64, s uint64, ok bool) {
	i := bytes.Index(env, keyChannel)
	if i < 0 {
		return nil, 0, 0, false
	}
	rest := skipSpace(env[i+len(keyChannel):])
	if len(rest) == 0 || rest[0] != '"' {
		return nil, 0, 0, false
	}
	rest = rest[1:]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, 0, 0, false
	}
	channel = rest[:j]

	i = bytes.Index(env, keyData)
	if i < 0 {
		return nil, 0, 0, false
	}
	p := skipSpace(env[i+len(keyData):])
	if !bytes.HasPrefix(p, payloadT) {
		return nil, 0, 0, false
	}
	tu, p, ok := parseUint(p[len(payloadT):])
	if !ok || tu > 1<<63-1 || !bytes.HasPrefix(p, payloadS) {
		return nil, 0, 0, false
	}
	s, p, ok = parseUint(p[len(payloadS):])
	if !ok || len(p) == 0 || (p[0] != ',' && p[0] != '}') {
		return nil, 0, 0, false
	}
	return channel, int64(tu), s, true
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

// parseUint parses the decimal digits at the start of b (at most 19, so that
// the value fits in an int64), returning the rest.
func parseUint(b []byte) (v uint64, rest []byte, ok bool) {
	i := 0
	for i < len(b) && i < 20 && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	if i == 0 || i > 19 {
		return 0, b, false
	}
	return v, b[i:], true
}

// channelIndex returns i for the channel named prefix+decimal(i) with i < n,
// or -1.
func channelIndex(name, prefix []byte, n int) int {
	if !bytes.HasPrefix(name, prefix) {
		return -1
	}
	d := name[len(prefix):]
	if len(d) == 0 || len(d) > 9 || (d[0] == '0' && len(d) > 1) {
		return -1
	}
	v, rest, ok := parseUint(d)
	if !ok || len(rest) != 0 || v >= uint64(n) {
		return -1
	}
	return int(v)
}

// appendPayload appends the bench payload for sequence number s published at
// t, padded with 'x' to size bytes when size is larger than the bare payload.
func appendPayload(b []byte, t int64, s uint64, size int) []byte {
	start := len(b)
	b = append(b, payloadT...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, payloadS...)
	b = strconv.AppendUint(b, s, 10)
	const padHead, padTail = `,"p":"`, `"}`
	const xpad = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	if pad := size - (len(b) - start) - len(padHead) - len(padTail); pad > 0 {
		b = append(b, padHead...)
		for pad > 0 {
			k := min(pad, len(xpad))
			b = append(b, xpad[:k]...)
			pad -= k
		}
		return append(b, padTail...)
	}
	return append(b, '}')
}
