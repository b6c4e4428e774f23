package server

// GET /v1/multipart: multipart/x-mixed-replace, one part per message, the raw payload with the
// envelope's fields as part headers (SPEC sections 2 and 5).

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
)

var boundaryRE = regexp.MustCompile(`^multipart/x-mixed-replace; boundary=([0-9a-f]{64})$`)

// openMultipartRaw subscribes over a raw connection and reads up to the first delimiter; it
// returns the connection and its boundary.
func openMultipartRaw(t testing.TB, base, query string) (*rawConn, string) {
	t.Helper()
	c := rawGet(t, base, "/v1/multipart?"+query)
	m := boundaryRE.FindStringSubmatch(c.Header.Get("Content-Type"))
	if m == nil {
		t.Fatalf("Content-Type %q", c.Header.Get("Content-Type"))
	}
	checkStreamHead(t, c, m[0])
	c.expect("--" + m[1])
	return c, m[1]
}

// rawPart reads one part after a delimiter: its header fields and its body, checking the
// delimiter that follows.
func rawPart(t testing.TB, c *rawConn, boundary string) (textproto.MIMEHeader, []byte) {
	t.Helper()
	head := c.until("\r\n\r\n")
	if !strings.HasPrefix(head, "\r\n") {
		t.Fatalf("part head %q", head)
	}
	h := textproto.MIMEHeader{}
	for _, l := range strings.Split(strings.TrimSpace(head), "\r\n") {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("part head line %q", l)
		}
		h.Add(k, v)
	}
	n, err := strconv.Atoi(h.Get("Content-Length"))
	if err != nil {
		t.Fatalf("part head %q", head)
	}
	body := c.read(n)
	c.expect("\r\n--" + boundary)
	return h, body
}

// pngFrame is a 4x3 PNG of one color.
func pngFrame(t testing.TB, c color.RGBA) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 4, 3))
	for x := range 4 {
		for y := range 3 {
			img.SetRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestMultipartFraming(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	first := mustPublish(t, ts.URL, "mp", "text/plain", "before")
	c, boundary := openMultipartRaw(t, ts.URL, "channel=mp")
	subscriberCount(t, ts.URL, "mp", 1)
	frame := pngFrame(t, color.RGBA{R: 255, A: 255})
	msgs := []struct{ ct, event, body, wantCT string }{
		{"image/png", "", string(frame), "image/png"},
		{"application/json", "upd", "{\"a\": [1,\n 2]}", "application/json"},
		{"text/plain; charset=utf-8", "", "héllo\r\n", "text/plain; charset=utf-8"},
		{"", "", "\x00\x01\xff", "application/octet-stream"},
	}
	for i, m := range msgs {
		u := ts.URL + "/v1/channels/mp"
		if m.event != "" {
			u += "?event=" + m.event
		}
		hdr := []string{}
		if m.ct != "" {
			hdr = append(hdr, "Content-Type", m.ct)
		}
		res, b := rawDo(t, "POST", u, []byte(m.body), hdr...)
		if res.StatusCode != 201 {
			t.Fatalf("publish: %d %s", res.StatusCode, b)
		}
		off := uint64(i + 2)
		env := decodeEnvelope(t, []byte(histEnvelope(t, ts.URL, "mp", first.Epoch, off)))
		event := "message"
		if m.event != "" {
			event = m.event
		}
		// Byte for byte: headers in this order, the payload as published, the next delimiter.
		want := fmt.Sprintf("\r\nContent-Type: %s\r\nContent-Length: %d\r\nCrier-Channel: mp\r\nCrier-Offset: %d\r\n"+
			"Crier-Epoch: %s\r\nCrier-Time: %s\r\nCrier-Event: %s\r\nCrier-Cursor: mp@%s:%d\r\n\r\n%s\r\n--%s",
			m.wantCT, len(m.body), off, first.Epoch, env.Time, event, first.Epoch, off, m.body, boundary)
		c.expect(want)
	}
	// The image is the image.
	img, err := png.Decode(bytes.NewReader(frame))
	if err != nil || img.Bounds().Dx() != 4 {
		t.Fatalf("png: %v", err)
	}
}

// TestMultipartVideo reads PNG frames as a browser's multipart parser does (Go's
// mime/multipart): each part decodes as the image published, in order, and the stream ends with
// the close delimiter at the connection's lifetime.
func TestMultipartVideo(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxLifetime = 400 * time.Millisecond })
	res, err := http.Get(ts.URL + "/v1/multipart?channel=cam")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" || len(params["boundary"]) != 64 {
		t.Fatalf("Content-Type %q", res.Header.Get("Content-Type"))
	}
	subscriberCount(t, ts.URL, "cam", 1)
	colors := []color.RGBA{{R: 255, A: 255}, {G: 255, A: 255}, {B: 255, A: 255}}
	for _, col := range colors {
		mustPublish(t, ts.URL, "cam", "image/png", string(pngFrame(t, col)))
	}
	mr := multipart.NewReader(res.Body, params["boundary"])
	for i, col := range colors {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if p.Header.Get("Content-Type") != "image/png" || p.Header.Get("Crier-Offset") != strconv.Itoa(i+1) {
			t.Fatalf("part %d header %v", i, p.Header)
		}
		img, err := png.Decode(p)
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if got := color.RGBAModel.Convert(img.At(1, 1)); got != col {
			t.Fatalf("part %d: color %v, want %v", i, got, col)
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("after the frames: %v, want the close delimiter's io.EOF", err)
	}
}

func TestMultipartResume(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	epoch := publishSeq(t, ts.URL, "mpres", 4)
	c, b := openMultipartRaw(t, ts.URL, "cursor="+url.QueryEscape("mpres@"+epoch+":2"))
	var cursor string
	for _, want := range []string{"3", "4"} {
		h, _ := rawPart(t, c, b)
		if h.Get("Crier-Offset") != want {
			t.Fatalf("offset %q, want %s", h.Get("Crier-Offset"), want)
		}
		cursor = h.Get("Crier-Cursor")
	}
	c.nc.Close()
	mustPublish(t, ts.URL, "mpres", "text/plain", "x")
	c, b = openMultipartRaw(t, ts.URL, "cursor="+url.QueryEscape(cursor))
	if h, body := rawPart(t, c, b); h.Get("Crier-Offset") != "5" || string(body) != "x" {
		t.Fatalf("after resuming: %v %q", h, body)
	}
}

func TestMultipartMultiChannel(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	ea := publishSeq(t, ts.URL, "mma", 1)
	eb := publishSeq(t, ts.URL, "mmb", 1)
	c, b := openMultipartRaw(t, ts.URL, "cursor="+url.QueryEscape(fmt.Sprintf("mma@%s:0,mmb@%s:1", ea, eb)))
	h, _ := rawPart(t, c, b)
	if h.Get("Crier-Channel") != "mma" || h.Get("Crier-Cursor") != fmt.Sprintf("mma@%s:1,mmb@%s:1", ea, eb) {
		t.Fatalf("part %v", h)
	}
}

// TestMultipartServerEvents: crier.gap and crier.reconnect are application/json parts holding
// the event's data; the drain ends the stream with the close delimiter.
func TestMultipartServerEvents(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.HistorySize = 2 })
	epoch := publishSeq(t, ts.URL, "mpev", 4)
	c, b := openMultipartRaw(t, ts.URL, "channel=mpev&since="+epoch+":0")
	h, body := rawPart(t, c, b)
	if h.Get("Content-Type") != "application/json" || h.Get("Crier-Event") != "crier.gap" ||
		h.Get("Crier-Offset") != "2" || string(body) != `{"reason":"history"}` {
		t.Fatalf("gap part %v %q", h, body)
	}
	for _, want := range []string{"3", "4"} {
		if h, _ := rawPart(t, c, b); h.Get("Crier-Offset") != want || h.Get("Crier-Event") != "message" {
			t.Fatalf("part %v", h)
		}
	}
	ts.Stop()
	h, body = rawPart(t, c, b)
	if h.Get("Crier-Event") != "crier.reconnect" || !strings.Contains(string(body), `"after_ms":`) ||
		h.Get("Crier-Cursor") != "mpev@"+epoch+":4" {
		t.Fatalf("drain part %v %q", h, body)
	}
	if rest := c.end(); string(rest) != "--\r\n" {
		t.Fatalf("after the reconnect part: %q", rest)
	}
}

func TestMultipartNoHeartbeat(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.Heartbeat = 20 * time.Millisecond })
	c, _ := openMultipartRaw(t, ts.URL, "channel=mphb")
	c.quiet(150 * time.Millisecond)
}

// TestMultipartBoundaryCollision: a payload holding the connection's boundary is not sent with
// it: the stream ends before it, and the reconnection, with a new boundary, gets it.
func TestMultipartBoundaryCollision(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	a := mustPublish(t, ts.URL, "mpcol", "text/plain", "x")
	c, b := openMultipartRaw(t, ts.URL, "channel=mpcol")
	subscriberCount(t, ts.URL, "mpcol", 1)
	evil := "a\r\n--" + b + "\r\nContent-Type: text/html\r\n\r\n<b>"
	mustPublish(t, ts.URL, "mpcol", "text/plain", evil)
	if rest := c.end(); string(rest) != "--\r\n" {
		t.Fatalf("the stream went on: %q", rest)
	}
	c2, b2 := openMultipartRaw(t, ts.URL, "cursor="+url.QueryEscape(a.Cursor))
	if b2 == b {
		t.Fatal("the same boundary twice")
	}
	if h, body := rawPart(t, c2, b2); h.Get("Crier-Offset") != "2" || string(body) != evil {
		t.Fatalf("after reconnecting: %v %q", h, body)
	}
}

func TestMultipartBadRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, tc := range badSubscribeRequests() {
		expectError(t, ts.URL, "/v1/multipart?"+tc.query, http.StatusBadRequest, tc.code)
	}
}
