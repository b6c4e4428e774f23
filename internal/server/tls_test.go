package server

// HTTPS with HTTP/2 (--tls-cert, --tls-key): every HTTP transport over HTTP/2 streams, many on
// one connection, and SSE and WebSocket over TLS with HTTP/1.1.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/transport/iframe"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir; it returns their files and
// a pool that trusts the certificate.
func selfSigned(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "crier test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// tlsNode is a node serving HTTPS, with a client that trusts it.
type tlsNode struct {
	*testServer
	URL    string // https://…
	Client *http.Client
	Dials  *atomic.Int32 // connections the client opened
	pool   *x509.CertPool
}

// startTLS starts a node with a self-signed certificate; h2 chooses the client's protocol.
func startTLS(t testing.TB, h2 bool, mutate func(*config.Config)) *tlsNode {
	t.Helper()
	certFile, keyFile, pool := selfSigned(t)
	ts := startServer(t, func(c *config.Config) {
		c.TLSCert, c.TLSKey = certFile, keyFile
		if mutate != nil {
			mutate(c)
		}
	})
	dials := &atomic.Int32{}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &tlsNode{testServer: ts, URL: strings.Replace(ts.URL, "http://", "https://", 1),
		Client: &http.Client{Transport: tr}, Dials: dials, pool: pool}
}

// get sends GET path and checks the protocol of the answer.
func (n *tlsNode) get(t testing.TB, path string, major int, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", n.URL+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := n.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	if res.ProtoMajor != major || res.TLS == nil {
		t.Fatalf("GET %s over %s, want HTTP/%d over TLS", path, res.Proto, major)
	}
	return res
}

// publish publishes over the TLS client.
func (n *tlsNode) publish(t testing.TB, ch, body string) publishAnswer {
	t.Helper()
	res, err := n.Client.Post(n.URL+"/v1/channels/"+ch, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var a publishAnswer
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil || res.StatusCode != 201 {
		t.Fatalf("publish: %d %v", res.StatusCode, err)
	}
	return a
}

// read GETs path and returns the body of its 200 answer.
func (n *tlsNode) read(t testing.TB, path string) []byte {
	t.Helper()
	res, err := n.Client.Get(n.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
	}
	return b
}

// subscribers waits until ch has want subscribers.
func (n *tlsNode) subscribers(t testing.TB, ch string, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		var i channelInfo
		_ = json.Unmarshal(n.read(t, "/v1/channels/"+ch), &i)
		if i.Subscribers == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d subscribers, want %d", ch, i.Subscribers, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// envelopeAt is ch's message at off as history serves it.
func (n *tlsNode) envelopeAt(t testing.TB, ch, epoch string, off int) string {
	t.Helper()
	var h historyAnswer
	_ = json.Unmarshal(n.read(t, "/v1/channels/"+ch+"/messages?limit=1&since="+epoch+":"+itoa(off-1)), &h)
	if len(h.Messages) != 1 {
		t.Fatalf("history of %s at %d: %+v", ch, off, h)
	}
	return string(h.Messages[0])
}

func sseOf(t testing.TB, res *http.Response) *sseClient {
	t.Helper()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") ||
		res.Header.Get("Cache-Control") != "no-cache, no-store" || res.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("SSE answer %d %v", res.StatusCode, res.Header)
	}
	return &sseClient{res: res, r: bufio.NewReader(res.Body)}
}

// TestTLSHTTP2SSE: ten SSE streams at once on one HTTP/2 connection, each getting every message,
// with heartbeats while idle.
func TestTLSHTTP2SSE(t *testing.T) {
	t.Parallel()
	n := startTLS(t, true, func(c *config.Config) { c.Heartbeat = 50 * time.Millisecond })
	a := n.publish(t, "h2", "before")
	var streams []*sseClient
	for range 10 {
		streams = append(streams, sseOf(t, n.get(t, "/v1/sse?channel=h2", 2)))
	}
	if d := n.Dials.Load(); d != 1 {
		t.Fatalf("%d connections for 11 requests over HTTP/2", d)
	}
	n.subscribers(t, "h2", 10)
	for i := 2; i <= 4; i++ {
		n.publish(t, "h2", "x")
	}
	for i, c := range streams {
		if got := readLine(t, c); got != "retry: 2000" {
			t.Fatalf("stream %d starts with %q", i, got)
		}
		for off := uint64(2); off <= 4; off++ {
			if e := nextEnv(t, c); e.Offset != off || e.Epoch != a.Epoch {
				t.Fatalf("stream %d got %+v", i, e)
			}
		}
	}
	time.Sleep(120 * time.Millisecond)
	n.publish(t, "h2", "x")
	for i, c := range streams {
		if e := nextEnv(t, c); e.Offset != 5 || c.Comments == 0 {
			t.Fatalf("stream %d: %+v after %d heartbeats", i, e, c.Comments)
		}
	}
	if n.Server.conns.Serving() != 10 {
		t.Fatalf("%d streams written by their handlers", n.Server.conns.Serving())
	}
}

// TestTLSHTTP2Transports: NDJSON, multipart, iframe and poll over HTTP/2.
func TestTLSHTTP2Transports(t *testing.T) {
	t.Parallel()
	n := startTLS(t, true, nil)
	a := n.publish(t, "h2t", "before")

	nd := n.get(t, "/v1/stream?channel=h2t", 2)
	if nd.Header.Get("Content-Type") != "application/x-ndjson" || nd.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("stream head %v", nd.Header)
	}
	mp := n.get(t, "/v1/multipart?channel=h2t", 2)
	_, params, err := mime.ParseMediaType(mp.Header.Get("Content-Type"))
	if err != nil || len(params["boundary"]) != 64 {
		t.Fatalf("multipart head %v", mp.Header)
	}
	ifr := n.get(t, "/v1/iframe?channel=h2t&callback=cb", 2)
	if ifr.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("iframe head %v", ifr.Header)
	}
	type answer struct {
		res *http.Response
		b   []byte
	}
	held := make(chan answer, 1)
	go func() {
		res, err := n.Client.Get(n.URL + "/v1/poll?wait=10&cursor=" + url.QueryEscape(a.Cursor))
		if err != nil {
			t.Error(err)
			held <- answer{}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		held <- answer{res, b}
	}()
	n.subscribers(t, "h2t", 4)
	n.publish(t, "h2t", "x")
	env := n.envelopeAt(t, "h2t", a.Epoch, 2)

	line, err := bufio.NewReader(nd.Body).ReadString('\n')
	if err != nil || line != env+"\n" {
		t.Fatalf("stream line %q (%v)", line, err)
	}
	p, err := multipart.NewReader(mp.Body, params["boundary"]).NextPart()
	if err != nil || p.Header.Get("Crier-Offset") != "2" {
		t.Fatalf("multipart part %v (%v)", p, err)
	}
	if body, _ := io.ReadAll(io.LimitReader(p, 1)); string(body) != "x" {
		t.Fatalf("multipart body %q", body)
	}
	ir := bufio.NewReader(ifr.Body)
	pre := make([]byte, len(iframe.Prelude))
	if _, err := io.ReadFull(ir, pre); err != nil || string(pre) != string(iframe.Prelude) {
		t.Fatalf("iframe prelude %q (%v)", pre, err)
	}
	if line, _ := ir.ReadString('\n'); line != "<script>parent.cb("+env+");</script>\n" {
		t.Fatalf("iframe call %q", line)
	}
	h := <-held
	if h.res == nil || h.res.ProtoMajor != 2 || h.res.StatusCode != 200 ||
		string(h.b) != `{"messages":[`+env+`],"cursor":"h2t@`+a.Epoch+`:2"}` || h.res.Header.Get("ETag") != `"h2t@`+a.Epoch+`:2"` {
		t.Fatalf("held poll over HTTP/2: %v %q", h.res, h.b)
	}
	res := n.get(t, "/v1/poll?wait=0&channel=h2t", 2, "If-None-Match", `"h2t@`+a.Epoch+`:2"`)
	if res.StatusCode != http.StatusNotModified {
		t.Fatalf("poll with If-None-Match: %d", res.StatusCode)
	}
	// A held poll that ends empty: 304 written as the poll's head.
	res = n.get(t, "/v1/poll?wait=1&channel=h2t", 2, "If-None-Match", `"h2t@`+a.Epoch+`:2"`)
	if res.StatusCode != http.StatusNotModified || res.Header.Get("ETag") != `"h2t@`+a.Epoch+`:2"` {
		t.Fatalf("held poll with If-None-Match: %d %v", res.StatusCode, res.Header)
	}
	if d := n.Dials.Load(); d != 1 {
		t.Fatalf("%d connections", d)
	}
}

// TestTLSHTTP2End: an HTTP/2 stream ends cleanly at its lifetime with its goodbye, and the
// drain ends the others with crier.reconnect without waiting for the drain delay.
func TestTLSHTTP2End(t *testing.T) {
	t.Parallel()
	n := startTLS(t, true, func(c *config.Config) { c.MaxLifetime = 300 * time.Millisecond })
	c := sseOf(t, n.get(t, "/v1/sse?channel=h2e", 2))
	b, err := io.ReadAll(c.r)
	if err != nil || !strings.HasSuffix(string(b), ": closing: max_lifetime\n\n") {
		t.Fatalf("ended with %q (%v)", b, err)
	}

	m := startTLS(t, true, nil)
	a := m.publish(t, "h2d", "x")
	var streams []*sseClient
	for range 3 {
		streams = append(streams, sseOf(t, m.get(t, "/v1/sse?channel=h2d", 2)))
	}
	nd := m.get(t, "/v1/stream?channel=h2d", 2)
	m.subscribers(t, "h2d", 4)
	start := time.Now()
	m.Stop()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the drain took %v", d)
	}
	for i, c := range streams {
		envs := sseUntilEnd(t, c)
		if len(envs) != 1 || envs[0].Event != "crier.reconnect" || envs[0].Cursor != a.Cursor {
			t.Fatalf("stream %d: %+v", i, envs)
		}
	}
	b, err = io.ReadAll(nd.Body)
	if err != nil || !strings.Contains(string(b), `"event":"crier.reconnect"`) {
		t.Fatalf("NDJSON at the drain: %q (%v)", b, err)
	}
}

// TestTLSHTTP1: over TLS with HTTP/1.1 the streams are hijacked into the connection layer's
// goroutine backend: SSE, NDJSON with its chunks, and WebSocket.
func TestTLSHTTP1(t *testing.T) {
	t.Parallel()
	n := startTLS(t, false, nil)
	a := n.publish(t, "h1", "before")
	c := sseOf(t, n.get(t, "/v1/sse?channel=h1", 1))
	nd := n.get(t, "/v1/stream?channel=h1", 1)
	if !nd.Close || len(nd.TransferEncoding) != 1 || nd.TransferEncoding[0] != "chunked" {
		t.Fatalf("stream over TLS: close %v, transfer encoding %v", nd.Close, nd.TransferEncoding)
	}
	u := strings.Replace(n.URL, "https://", "wss://", 1) + "/v1/ws?channel=h1"
	wc, _, _, err := ws.Dialer{TLSConfig: &tls.Config{RootCAs: n.pool}}.Dial(context.Background(), u)
	if err != nil {
		t.Fatalf("WebSocket over TLS: %v", err)
	}
	defer wc.Close()
	n.subscribers(t, "h1", 3)
	n.publish(t, "h1", "x")
	if e := nextEnv(t, c); e.Offset != 2 || e.Epoch != a.Epoch {
		t.Fatalf("SSE got %+v", e)
	}
	if line, err := bufio.NewReader(nd.Body).ReadString('\n'); err != nil || decodeEnvelope(t, []byte(line)).Offset != 2 {
		t.Fatalf("stream line %q (%v)", line, err)
	}
	_ = wc.SetReadDeadline(time.Now().Add(pushWait))
	b, err := wsutil.ReadServerText(wc)
	if err != nil || decodeEnvelope(t, b).Offset != 2 {
		t.Fatalf("WebSocket got %q (%v)", b, err)
	}
	if err := wsutil.WriteClientText(wc, []byte(`{"id":1,"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if b, err := wsutil.ReadServerText(wc); err != nil || !strings.Contains(string(b), `"ok":true`) {
		t.Fatalf("ping reply %q (%v)", b, err)
	}
	if n.Server.conns.Open() != 3 || n.Server.conns.Serving() != 0 {
		t.Fatalf("open %d, serving %d", n.Server.conns.Open(), n.Server.conns.Serving())
	}
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := selfSigned(t)
	for _, tc := range []struct{ cert, key, want string }{
		{certFile, "", "go together"},
		{"", keyFile, "go together"},
		{certFile, certFile, "tls:"},
		{filepath.Join(t.TempDir(), "none.pem"), keyFile, "tls:"},
	} {
		cfg := config.Default()
		cfg.Memory, cfg.TLSCert, cfg.TLSKey = true, tc.cert, tc.key
		s, err := New(cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			s.shutdown()
			t.Fatalf("cert %q key %q: no error", tc.cert, tc.key)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("cert %q key %q: %v", tc.cert, tc.key, err)
		}
	}
}
