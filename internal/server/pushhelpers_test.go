package server

// Helpers of the tests of the HTTP streaming, multipart, iframe, poll and TLS transports.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pushWait bounds how long a test waits for bytes it expects (a guard against hangs).
const pushWait = 5 * time.Second

// rawConn is one HTTP/1.1 request on a TCP connection of its own, its response read as bytes.
type rawConn struct {
	t      testing.TB
	nc     net.Conn
	br     *bufio.Reader
	Status string      // the status line
	Header http.Header // the head's fields
	Head   string      // the head as sent, blank line included
}

// rawGet sends GET path with the header pairs given and reads the response head.
func rawGet(t testing.TB, base, path string, header ...string) *rawConn {
	t.Helper()
	u, _ := url.Parse(base)
	nc, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\n"
	for i := 0; i+1 < len(header); i += 2 {
		req += header[i] + ": " + header[i+1] + "\r\n"
	}
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	c := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc), Header: http.Header{}}
	c.Head = c.until("\r\n\r\n")
	lines := strings.Split(strings.TrimSuffix(c.Head, "\r\n\r\n"), "\r\n")
	c.Status = lines[0]
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("head line %q", l)
		}
		c.Header.Add(k, v)
	}
	return c
}

// until reads up to and including sep.
func (c *rawConn) until(sep string) string {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(pushWait))
	var b []byte
	for !bytes.HasSuffix(b, []byte(sep)) {
		ch, err := c.br.ReadByte()
		if err != nil {
			c.t.Fatalf("reading for %q: %v after %q", sep, err, tailOf(b))
		}
		b = append(b, ch)
	}
	return string(b)
}

// expect reads len(want) bytes and fails unless they are want.
func (c *rawConn) expect(want string) {
	c.t.Helper()
	got := c.read(len(want))
	if string(got) != want {
		c.t.Fatalf("read\n%q\nwant\n%q", got, want)
	}
}

// read reads n bytes.
func (c *rawConn) read(n int) []byte {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(pushWait))
	b := make([]byte, n)
	if m, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("reading %d bytes: %v after %q", n, err, tailOf(b[:m]))
	}
	return b
}

// end reads until the server closes the connection.
func (c *rawConn) end() []byte {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(pushWait))
	b, err := io.ReadAll(c.br)
	if err != nil {
		c.t.Fatalf("the server did not close the connection: %v after %q", err, tailOf(b))
	}
	return b
}

// quiet fails if the server writes anything within d.
func (c *rawConn) quiet(d time.Duration) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	b, err := c.br.ReadByte()
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("expected silence, read %q (%v)", b, err)
	}
}

func tailOf(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}

// checkStreamHead checks the status and the fields every streaming transport's head has.
func checkStreamHead(t testing.TB, c *rawConn, contentType string) {
	t.Helper()
	if c.Status != "HTTP/1.1 200 OK" {
		t.Fatalf("status %q", c.Status)
	}
	want := map[string]string{"Content-Type": contentType, "Cache-Control": "no-cache, no-store",
		"X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff", "Connection": "close"}
	for k, v := range want {
		if got := c.Header.Get(k); got != v {
			t.Fatalf("%s: %q, want %q (head %q)", k, got, v, c.Head)
		}
	}
}

// histEnvelope returns the envelope of ch's message at offset as history serves it: the very
// bytes a one-channel subscriber gets.
func histEnvelope(t testing.TB, base, ch, epoch string, offset uint64) string {
	t.Helper()
	h := history(t, base, ch, fmt.Sprintf("since=%s:%d&limit=1", epoch, offset-1))
	if len(h.Messages) != 1 {
		t.Fatalf("history of %s at %d: %s", ch, offset, h.raw)
	}
	return string(h.Messages[0])
}

// decodeEnvelope parses an envelope, failing the test on error.
func decodeEnvelope(t testing.TB, b []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an envelope: %q (%v)", b, err)
	}
	return e
}

// publishSeq publishes n text messages on ch and returns the epoch.
func publishSeq(t testing.TB, base, ch string, n int) string {
	t.Helper()
	var epoch string
	for range n {
		epoch = mustPublish(t, base, ch, "text/plain", "x").Epoch
	}
	return epoch
}

// pubClient is an HTTP client of the test's own, for a publisher that runs beside other
// requests. Its connections are closed as the test ends, before its server drains: a client
// dials a spare connection when a request races another for one, and net/http's shutdown waits
// for such a connection, never used, as for a request under way (up to the drain delay).
func pubClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// tryPublishWith publishes "x" on ch with client c and returns its offset.
func tryPublishWith(c *http.Client, base, ch string) (uint64, error) {
	res, err := c.Post(base+"/v1/channels/"+ch, "text/plain", strings.NewReader("x"))
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var a publishAnswer
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil || res.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("publish: status %d, %v", res.StatusCode, err)
	}
	return a.Offset, nil
}

// keepPublishing publishes n messages on ch, one every gap, in the background; wait waits for
// the last. published, when not nil, holds the last offset published.
func keepPublishing(t testing.TB, base, ch string, n int, gap time.Duration, published *atomic.Uint64) (wait func()) {
	c := pubClient(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			off, err := tryPublishWith(c, base, ch)
			if err != nil {
				fmt.Fprintln(os.Stderr, "publish:", err)
			} else if published != nil {
				published.Store(off)
			}
			time.Sleep(gap)
		}
	}()
	return func() { <-done }
}

// checkSeq fails unless got is first, first+1, ….
func checkSeq(t testing.TB, got []uint64, first uint64) {
	t.Helper()
	for i, o := range got {
		if o != first+uint64(i) {
			t.Fatalf("offsets %v, want a run from %d without gap or duplicate", got, first)
		}
	}
}

// expectError fails unless GET path answers status with the JSON error code.
func expectError(t testing.TB, base, path string, status int, code string) {
	t.Helper()
	res, b := rawDo(t, "GET", base+path, nil)
	checkError(t, res, b, status, code)
}

// badSubscribeRequests are the requests every subscribe endpoint refuses alike, as query
// strings, with the error code they get.
func badSubscribeRequests() []struct{ query, code string } {
	many := make([]string, 0, 101)
	for i := range 101 {
		many = append(many, fmt.Sprintf("channel=c%d", i))
	}
	return []struct{ query, code string }{
		{"channel=bad%20name", "invalid_channel"},
		{"channel=" + strings.Repeat("x", 201), "invalid_channel"},
		{"cursor=nope", "invalid_cursor"},
		{"cursor=" + url.QueryEscape("a@e:1,b"), "invalid_cursor"},
		{"channel=a&since=e", "invalid_position"},
		{"channel=a&channel=b&since=e:1", "bad_request"},
		{"cursor=" + url.QueryEscape("a@e:1") + "&since=e:1&channel=a", "bad_request"},
		{strings.Join(many, "&"), "too_many_channels"},
		{"", "no_channel"},
	}
}
