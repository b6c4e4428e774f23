//go:build linux

package bench

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// testConn returns a conn on channel 0 whose writes land in the returned
// socket's peer.
func testConn(t testing.TB, dec decoder) (c *conn, peer int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return &conn{fd: fds[0], dec: dec, tracks: []track{newTrack(0)}}, fds[1]
}

func testRx() *rx {
	return &rx{prefix: []byte("c."), channels: 1, hist: new(histogram)}
}

func testEnvelope(seq uint64, size int) []byte {
	p := appendPayload(nil, 1_000_000_000+int64(seq), seq, size)
	return fmt.Appendf(nil, `{"channel":"c.0","offset":%d,"epoch":"e","time":"2026-11-23T08:00:00.123Z","event":"message","data":%s,"cursor":"c.0@e:%d"}`,
		seq, p, seq)
}

func serverFrame(op ws.OpCode, fin bool, p []byte, masked bool) []byte {
	f := ws.NewFrame(op, fin, p)
	if masked {
		f = ws.MaskFrame(f)
	}
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

// wsStream is a server stream of 7 messages with every kind of frame the
// decoder handles; big adds a 70 KB message (64-bit length).
func wsStream(big bool) []byte {
	var s []byte
	s = append(s, serverFrame(ws.OpText, true, testEnvelope(1, 64), false)...)
	s = append(s, serverFrame(ws.OpPing, true, []byte("hb"), false)...)
	e2 := testEnvelope(2, 64)
	s = append(s, serverFrame(ws.OpText, false, e2[:5], false)...)
	s = append(s, serverFrame(ws.OpPing, true, nil, false)...) // control frames may interleave
	s = append(s, serverFrame(ws.OpContinuation, false, e2[5:20], false)...)
	s = append(s, serverFrame(ws.OpContinuation, true, e2[20:], false)...)
	s = append(s, serverFrame(ws.OpPong, true, []byte("x"), false)...)
	s = append(s, serverFrame(ws.OpText, true, testEnvelope(3, 64), true)...)
	s = append(s, serverFrame(ws.OpText, true, testEnvelope(4, 300), false)...) // 16-bit length
	s = append(s, serverFrame(ws.OpText, true, []byte(`{"id":1,"ok":true}`), false)...)
	s = append(s, serverFrame(ws.OpText, true, testEnvelope(5, 200), false)...)
	if big {
		s = append(s, serverFrame(ws.OpText, true, testEnvelope(6, 70_000), false)...)
	} else {
		s = append(s, serverFrame(ws.OpText, true, testEnvelope(6, 0), false)...)
	}
	s = append(s, serverFrame(ws.OpText, true, testEnvelope(7, 0), false)...)
	return s
}

// sseBody is an event stream of 7 messages with the lines a Crier stream has.
func sseBody() []byte {
	var b bytes.Buffer
	b.WriteString("retry: 3000\n\nid: c.0@e:0\n\n: heartbeat\n\n")
	for i := uint64(1); i <= 7; i++ {
		eol := "\n"
		if i == 4 {
			eol = "\r\n"
		}
		sp := " "
		if i == 5 {
			sp = ""
		}
		fmt.Fprintf(&b, "id: c.0@e:%d%sevent: message%sdata:%s%s%s%s", i, eol, eol, sp, testEnvelope(i, int(i)*40), eol, eol)
	}
	return b.Bytes()
}

// chunk encodes body as HTTP/1.1 chunks of random sizes, then the last
// chunk.
func chunk(body []byte, rng *rand.Rand) []byte {
	var b bytes.Buffer
	for len(body) > 0 {
		n := min(len(body), 1+rng.IntN(200))
		if rng.IntN(4) == 0 {
			fmt.Fprintf(&b, "%X;ext=1\r\n", n)
		} else {
			fmt.Fprintf(&b, "%x\r\n", n)
		}
		b.Write(body[:n])
		b.WriteString("\r\n")
		body = body[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

// feedPieces feeds stream to c cut at the given offsets, as reads would
// return it, and returns the decoder's error.
func feedPieces(c *conn, x *rx, stream []byte, cuts []int) error {
	prev := 0
	buf := make([]byte, len(stream))
	for _, cut := range append(cuts, len(stream)) {
		p := buf[:cut-prev]
		copy(p, stream[prev:cut]) // the decoder may write to its input
		if err := c.dec.feed(c, x, p); err != nil {
			return err
		}
		prev = cut
	}
	return nil
}

func checkSeven(t *testing.T, what string, c *conn, x *rx, err error) {
	t.Helper()
	tr := &c.tracks[0]
	if err != nil || x.deliveries != 7 || x.unique != 7 || tr.next != 8 || len(tr.miss) != 0 || tr.dup+tr.ooo != 0 || x.unexpected != 0 {
		t.Fatalf(
			"%s: err %v, deliveries %d, unique %d, next %d, miss %v, dup %d, ooo %d, unexpected %d",
			what, err, x.deliveries, x.unique, tr.next, tr.miss, tr.dup, tr.ooo, x.unexpected)
	}
}

func TestWSDecoderSplits(t *testing.T) {
	stream := wsStream(false)
	// Every cut in two, and every pair of cuts near frame boundaries.
	for i := 0; i <= len(stream); i++ {
		c, peer := testConn(t, &wsDecoder{})
		x := testRx()
		err := feedPieces(c, x, stream, []int{i})
		checkSeven(t, fmt.Sprintf("cut at %d", i), c, x, err)
		if i == 0 || i == len(stream)/2 {
			pongs := make([]byte, 100)
			n, _ := unix.Read(peer, pongs)
			// Two masked pongs: 2+4+2 and 2+4+0 bytes.
			if n != 14 || pongs[0] != 0x8A || pongs[1] != 0x82 || pongs[8] != 0x8A || pongs[9] != 0x80 {
				t.Fatalf(
					"pongs % x",
					pongs[:n])
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	big := wsStream(true)
	for range 300 {
		c, _ := testConn(t, &wsDecoder{})
		x := testRx()
		cuts := randomCuts(rng, len(big))
		err := feedPieces(c, x, big, cuts)
		checkSeven(t, fmt.Sprintf("cuts %v", cuts), c, x, err)
		if c.acks != 1 {
			t.Fatalf(
				"acks %d, want 1",
				c.acks)
		}
	}
}

func randomCuts(rng *rand.Rand, n int) []int {
	var cuts []int
	for at := 0; ; {
		switch rng.IntN(3) {
		case 0:
			at += 1 + rng.IntN(3)
		case 1:
			at += 1 + rng.IntN(200)
		default:
			at += 1 + rng.IntN(20000)
		}
		if at >= n {
			return cuts
		}
		cuts = append(cuts, at)
	}
}

func TestWSDecoderErrors(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		want   string
	}{
		{
			name:   "close",
			stream: serverFrame(ws.OpClose, true, ws.NewCloseFrameBody(1001, "going away"), false),
			want:   "going away",
		},
		{
			name:   "continuation first",
			stream: serverFrame(ws.OpContinuation, true, []byte("x"), false),
			want:   "continuation",
		},
		{
			name:   "reserved opcode",
			stream: serverFrame(ws.OpCode(3), true, nil, false),
			want:   "opcode",
		},
		{
			name:   "huge frame",
			stream: []byte{0x81, 127, 0, 0, 1, 0, 0, 0, 0, 0},
			want:   "frame of",
		},
	}
	for _, tt := range tests {
		c, _ := testConn(t, &wsDecoder{})
		err := c.dec.feed(c, testRx(), append([]byte(nil), tt.stream...))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf(
				"%s: error %v, want %q",
				tt.name, err, tt.want)
		}
	}
}

func TestSSEDecoderSplits(t *testing.T) {
	body := sseBody()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, chunked := range []bool{false, true} {
		stream := body
		if chunked {
			stream = chunk(body, rng)
		}
		for i := 0; i <= len(stream); i++ {
			c, _ := testConn(t, &sseDecoder{chunked: chunked})
			x := testRx()
			err := feedPieces(c, x, stream, []int{i})
			if chunked {
				if err != errSSEEnded {
					t.Fatalf(
						"chunked, cut at %d: error %v at the end, want %v",
						i, err, errSSEEnded)
				}
				err = nil
			}
			checkSeven(t, fmt.Sprintf("chunked %v, cut at %d", chunked, i), c, x, err)
			if !c.dec.ready(c) {
				t.Fatal("not ready after the stream")
			}
		}
		for range 300 {
			c, _ := testConn(t, &sseDecoder{chunked: chunked})
			x := testRx()
			cuts := randomCuts(rng, len(stream))
			err := feedPieces(c, x, stream, cuts)
			if err == errSSEEnded {
				err = nil
			}
			checkSeven(t, fmt.Sprintf("chunked %v, cuts %v", chunked, cuts), c, x, err)
		}
	}
	c, _ := testConn(t, &sseDecoder{chunked: true})
	if err := c.dec.feed(c, testRx(), []byte("zz\r\n")); err != errBadChunked {
		t.Errorf(
			"bad chunk size: error %v",
			err)
	}
}

// TestDecodeNoAlloc proves the delivery path allocates nothing when frames
// and lines arrive whole.
func TestDecodeNoAlloc(t *testing.T) {
	wsMsg := serverFrame(ws.OpText, true, testEnvelope(1, 64), false)
	sseMsg := []byte("id: c.0@e:1\nevent: message\ndata: " + string(testEnvelope(1, 64)) + "\n\n")
	for _, tt := range []struct {
		name string
		dec  decoder
		msg  []byte
	}{
		{
			name: "ws",
			dec:  &wsDecoder{},
			msg:  wsMsg,
		},
		{
			name: "sse",
			dec:  &sseDecoder{},
			msg:  sseMsg,
		},
	} {
		c, _ := testConn(t, tt.dec)
		x := testRx()
		buf := make([]byte, len(tt.msg))
		allocs := testing.AllocsPerRun(1000, func() {
			copy(buf, tt.msg)
			c.tracks[0].next = 1
			_ = c.dec.feed(c, x, buf)
		})
		if allocs != 0 || x.deliveries == 0 {
			t.Errorf(
				"%s: %v allocations per delivery, %d deliveries",
				tt.name, allocs, x.deliveries)
		}
	}
}

// BenchmarkDelivery is the generator's user-space cost per delivery (the
// read() that comes with it is not included).
func BenchmarkDelivery(b *testing.B) {
	for _, tt := range []struct {
		name string
		dec  func() decoder
		msg  []byte
	}{
		{
			name: "ws",
			dec:  func() decoder { return &wsDecoder{} },
			msg:  serverFrame(ws.OpText, true, testEnvelope(1, 64), false),
		},
		{
			name: "sse",
			dec:  func() decoder { return &sseDecoder{} },
			msg:  []byte("id: c.0@e:1\nevent: message\ndata: " + string(testEnvelope(1, 64)) + "\n\n"),
		},
	} {
		b.Run(tt.name, func(b *testing.B) {
			c, _ := testConn(b, tt.dec())
			x := testRx()
			buf := make([]byte, len(tt.msg))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, tt.msg)
				c.tracks[0].next = 1
				_ = c.dec.feed(c, x, buf)
			}
		})
	}
}
