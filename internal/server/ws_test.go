package server

// End-to-end tests of the WebSocket transport (SPEC section 5) over real sockets, with a client
// that reads and writes raw frames so that every byte the server sends can be asserted.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/config"
)

// wsWait bounds every read: the server answers on loopback in milliseconds.
const wsWait = 2 * time.Second

// wsPeer is a WebSocket client speaking raw frames.
type wsPeer struct {
	t  testing.TB
	nc net.Conn
	r  io.Reader // what the handshake read past the 101, then the socket
}

// wsOpen connects to /v1/ws with query (without '?').
func wsOpen(t testing.TB, base, query string) *wsPeer {
	t.Helper()
	u := base + "/v1/ws"
	if query != "" {
		u += "?" + query
	}
	return wsDial(t, u, nil)
}

// wsFrame builds a client frame: masked unless told, with the given first-byte flags.
func wsFrame(fin bool, rsv byte, op ws.OpCode, masked bool, payload []byte) []byte {
	b0 := byte(op) | rsv<<4
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, payload...)
	ws.Cipher(b[start:], mask, 0)
	return b
}

func (p *wsPeer) write(b []byte) {
	p.t.Helper()
	_ = p.nc.SetWriteDeadline(time.Now().Add(wsWait))
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("ws write: %v", err)
	}
}

func (p *wsPeer) sendText(s string) {
	p.t.Helper()
	p.write(wsFrame(true, 0, ws.OpText, true, []byte(s)))
}

func (p *wsPeer) send(v any) {
	p.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(wsFrame(true, 0, ws.OpText, true, b))
}

// frame reads the next frame from the server, which must be unmasked.
func (p *wsPeer) frame() ws.Frame {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(wsWait))
	f, err := ws.ReadFrame(p.r)
	if err != nil {
		p.t.Fatalf("ws read frame: %v", err)
	}
	if f.Header.Masked || f.Header.Rsv != 0 || !f.Header.Fin {
		p.t.Fatalf("server frame header %+v: must be final, unmasked, without reserved bits", f.Header)
	}
	return f
}

// next returns the next text message as raw JSON, skipping server pings.
func (p *wsPeer) next() []byte {
	p.t.Helper()
	for {
		f := p.frame()
		switch f.Header.OpCode {
		case ws.OpPing:
			continue
		case ws.OpText:
			if !json.Valid(f.Payload) {
				p.t.Fatalf("text frame is not JSON: %q", f.Payload)
			}
			return f.Payload
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			p.t.Fatalf("server closed (%d %q) while a message was expected", code, reason)
		default:
			p.t.Fatalf("unexpected frame %v %q", f.Header.OpCode, f.Payload)
		}
	}
}

func (p *wsPeer) nextMap() map[string]any {
	p.t.Helper()
	b := p.next()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Fatalf("message is not a JSON object: %q", b)
	}
	return m
}

// reply returns the next message, which must be a reply carrying id (nil: none).
func (p *wsPeer) reply(id any) map[string]any {
	p.t.Helper()
	m := p.nextMap()
	if _, ok := m["ok"]; !ok {
		p.t.Fatalf("expected the reply to %v, got %v", id, m)
	}
	if got, has := m["id"]; id == nil && has || id != nil && !reflect.DeepEqual(got, wsJSONValue(id)) {
		p.t.Fatalf("reply %v: id %v, want %v", m, got, id)
	}
	return m
}

// do sends cmd and returns its reply, which must come next.
func (p *wsPeer) do(cmd map[string]any) map[string]any {
	p.t.Helper()
	p.send(cmd)
	return p.reply(cmd["id"])
}

// ok sends cmd and returns its successful reply.
func (p *wsPeer) ok(cmd map[string]any) map[string]any {
	p.t.Helper()
	m := p.do(cmd)
	if m["ok"] != true {
		p.t.Fatalf("%v: %v", cmd, m)
	}
	return m
}

// envelope returns the next message, which must be an envelope.
func (p *wsPeer) envelope() envelope {
	p.t.Helper()
	return wsCheckEnvelope(p.t, p.next())
}

// sync proves that nothing is queued for the client: a ping's reply comes next.
func (p *wsPeer) sync() {
	p.t.Helper()
	p.send(map[string]any{"id": "sync", "op": "ping"})
	if m := p.nextMap(); !reflect.DeepEqual(m, map[string]any{"id": "sync", "ok": true}) {
		p.t.Fatalf("expected only the ping's reply, got %v", m)
	}
}

// expectClose reads up to the server's close frame, which must carry code and a reason
// containing reason, and then the end of the connection.
func (p *wsPeer) expectClose(code ws.StatusCode, reason string) {
	p.t.Helper()
	for {
		f := p.frame()
		if f.Header.OpCode == ws.OpPing {
			continue
		}
		if f.Header.OpCode != ws.OpClose {
			p.t.Fatalf("expected close %d, got %v %q", code, f.Header.OpCode, f.Payload)
		}
		got, text := ws.ParseCloseFrameData(f.Payload)
		if got != code || !strings.Contains(text, reason) || (reason == "" && text != "") {
			p.t.Fatalf("close %d %q, want %d with %q", got, text, code, reason)
		}
		break
	}
	_ = p.nc.SetReadDeadline(time.Now().Add(wsWait))
	if n, err := p.r.Read(make([]byte, 1)); err == nil || n > 0 {
		p.t.Fatalf("the connection stays open after the close frame (read %d, %v)", n, err)
	}
}

func wsJSONValue(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

var wsTimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// wsCheckEnvelope decodes an envelope, checking that it has exactly the fields of section 2.
func wsCheckEnvelope(t testing.TB, b []byte) envelope {
	t.Helper()
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatalf("not an envelope: %q", b)
	}
	want := []string{"channel", "cursor", "data", "epoch", "event", "offset", "time"}
	if _, ok := keys["encoding"]; ok {
		want = append(want, "content_type", "encoding")
	}
	got := make([]string, 0, len(keys))
	for k := range keys {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("envelope fields %v, want %v: %s", got, want, b)
	}
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if !wsTimeRE.MatchString(e.Time) {
		t.Fatalf("envelope time %q is not RFC 3339 UTC with milliseconds", e.Time)
	}
	if _, err := channel.ParseCursor(e.Cursor); err != nil {
		t.Fatalf("envelope cursor %q: %v", e.Cursor, err)
	}
	return e
}

// wsPub publishes JSON over HTTP and returns its offset and epoch.
func wsPub(t testing.TB, base, ch, body string) (uint64, string) {
	t.Helper()
	st, out := publish(t, base, ch, "application/json", body)
	if st != http.StatusCreated {
		t.Fatalf("publish to %s: %d %v", ch, st, out)
	}
	return uint64(out["offset"].(float64)), out["epoch"].(string)
}

// wsEpoch returns a channel's epoch and latest offset.
func wsEpoch(t testing.TB, base, ch string) (string, uint64) {
	t.Helper()
	st, out := get(t, base+"/v1/channels/"+ch)
	if st != http.StatusOK {
		t.Fatalf("info %s: %d %v", ch, st, out)
	}
	return out["epoch"].(string), uint64(out["offset"].(float64))
}

// wsExpectSeq reads envelopes of ch with offsets from..to, in order, each carrying data {"n":offset}.
func wsExpectSeq(t testing.TB, p *wsPeer, ch, epoch string, from, to uint64) envelope {
	t.Helper()
	var e envelope
	for off := from; off <= to; off++ {
		e = p.envelope()
		if e.Channel != ch || e.Epoch != epoch || e.Offset != off || e.Event != "message" {
			t.Fatalf("got %s@%s:%d %s, want %s@%s:%d (no gap, no duplicate, in order)", e.Channel, e.Epoch, e.Offset, e.Event, ch, epoch, off)
		}
		if want := fmt.Sprintf(`{"n":%d}`, off); string(e.Data) != want {
			t.Fatalf("offset %d carries %s, want %s", off, e.Data, want)
		}
	}
	return e
}

func TestWSQuerySubscriptionActiveOn101(t *testing.T) {
	ts := startServer(t, nil)
	// A client that has the 101 publishes at once: the query's subscription must see it.
	for i := range 30 {
		ch := fmt.Sprintf("q101-%d", i)
		p := wsOpen(t, ts.URL, "channel="+ch+"&channel=other-"+ch)
		off, epoch := wsPub(t, ts.URL, ch, `{"n":1}`)
		if off != 1 {
			t.Fatalf("offset %d", off)
		}
		e := wsExpectSeq(t, p, ch, epoch, 1, 1)
		if got := parseWSCursor(t, e.Cursor); len(got) != 2 {
			t.Fatalf("cursor %q should name both channels", e.Cursor)
		}
		wsPub(t, ts.URL, "other-"+ch, `{"n":1}`)
		e = p.envelope()
		if e.Channel != "other-"+ch || e.Offset != 1 {
			t.Fatalf("second channel: %+v", e)
		}
		p.sync() // no subscribe reply or anything else for query subscriptions
		p.nc.Close()
	}
}

func parseWSCursor(t testing.TB, s string) channel.Cursor {
	t.Helper()
	c, err := channel.ParseCursor(s)
	if err != nil {
		t.Fatalf("cursor %q: %v", s, err)
	}
	return c
}

// wsHandshake sends a handshake request and returns the answer.
func wsHandshake(t testing.TB, u string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		return res, nil
	}
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func TestWSBadRequestIsAnsweredBeforeUpgrade(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.MaxSubscriptions = 2 })
	epoch, _ := wsEpoch(t, ts.URL, "known")
	for _, tc := range []struct {
		query  string
		header map[string]string
		status int
		code   string
	}{
		{"channel=bad%20name", nil, 400, "invalid_channel"},
		{"channel=ok&channel=" + strings.Repeat("x", 201), nil, 400, "invalid_channel"},
		{"cursor=nope", nil, 400, "invalid_cursor"},
		{"cursor=a@" + epoch + ":1,a@" + epoch + ":2", nil, 400, "invalid_cursor"},
		{"channel=a&since=nope", nil, 400, "invalid_position"},
		{"since=" + epoch + ":1", nil, 400, "bad_request"},
		{"channel=a&channel=b&since=" + epoch + ":1", nil, 400, "bad_request"},
		{"channel=a&since=" + epoch + ":1&cursor=a@" + epoch + ":1", nil, 400, "bad_request"},
		{"channel=a&channel=b&channel=c", nil, 400, "too_many_channels"},
		{"cursor=a@" + epoch + ":1&channel=b&channel=c", nil, 400, "too_many_channels"},
		{"channel=a", map[string]string{"Upgrade": "", "Connection": ""}, 426, "upgrade_required"},
		{"channel=a", map[string]string{"Sec-WebSocket-Key": ""}, 400, "bad_handshake"},
		{"channel=a", map[string]string{"Sec-WebSocket-Key": "c2hvcnQ="}, 400, "bad_handshake"},
		{"channel=a", map[string]string{"Sec-WebSocket-Version": ""}, 400, "bad_handshake"},
		{"channel=a", map[string]string{"Sec-WebSocket-Version": "8"}, 426, "unsupported_version"},
		{"channel=a", map[string]string{"Connection": "keep-alive"}, 400, "bad_handshake"},
	} {
		res, body := wsHandshake(t, ts.URL+"/v1/ws?"+tc.query, tc.header)
		if res.StatusCode != tc.status {
			t.Errorf("%s %v: status %d, want %d (%s)", tc.query, tc.header, res.StatusCode, tc.status, body)
			continue
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", tc.query, ct)
		}
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s %v: body %s, want code %s", tc.query, tc.header, body, tc.code)
		}
		if tc.code == "unsupported_version" && res.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Errorf("426 without Sec-WebSocket-Version: 13")
		}
	}
	// Nothing was left subscribed by the refused requests.
	for _, ch := range []string{"a", "b", "c", "ok"} {
		if _, out := get(t, ts.URL+"/v1/channels/"+ch); out["subscribers"] != float64(0) {
			t.Errorf("%s has %v subscribers after refused handshakes", ch, out["subscribers"])
		}
	}
	// The handshake itself is RFC 6455's.
	res, _ := wsHandshake(t, ts.URL+"/v1/ws?channel=a", nil)
	if res.StatusCode != 101 || res.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %d %v", res.StatusCode, res.Header)
	}
}

func TestWSOps(t *testing.T) {
	ts := startServer(t, nil)
	p := wsOpen(t, ts.URL, "")
	other := wsOpen(t, ts.URL, "")

	// subscribe without since: live, at the channel's latest position.
	epoch, _ := wsEpoch(t, ts.URL, "ops")
	got := p.ok(map[string]any{"id": 1, "op": "subscribe", "channel": "ops"})
	want := map[string]any{"id": float64(1), "ok": true, "channel": "ops", "epoch": epoch, "offset": float64(0),
		"cursor": "ops@" + epoch + ":0"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("subscribe reply %v, want %v", got, want)
	}
	other.ok(map[string]any{"id": "o", "op": "subscribe", "channel": "ops"})

	// publish: the reply names the message; subscribers (this one included) get it.
	p.send(map[string]any{"id": "pub-1", "op": "publish", "channel": "ops", "data": map[string]any{"n": 1}, "event": "note"})
	var reply map[string]any
	var env envelope
	for range 2 { // the envelope and the reply, in either order
		b := p.next()
		if bytes.Contains(b, []byte(`"ok"`)) {
			reply = p.reqReply(b, "pub-1")
		} else {
			env = wsCheckEnvelope(t, b)
		}
	}
	want = map[string]any{"id": "pub-1", "ok": true, "channel": "ops", "offset": float64(1), "epoch": epoch,
		"cursor": "ops@" + epoch + ":1"}
	if !reflect.DeepEqual(reply, want) {
		t.Fatalf("publish reply %v, want %v", reply, want)
	}
	if env.Channel != "ops" || env.Offset != 1 || env.Epoch != epoch || env.Event != "note" ||
		string(env.Data) != `{"n":1}` || env.Cursor != "ops@"+epoch+":1" {
		t.Fatalf("published envelope %+v", env)
	}
	if e := other.envelope(); e.Offset != 1 || e.Event != "note" || string(e.Data) != `{"n":1}` {
		t.Fatalf("other subscriber got %+v", e)
	}
	// The JSON body is sent as published, whitespace and all.
	p.sendText(`{"id":2,"op":"publish","channel":"ops","data":[1, {"a" : "é"}]}`)
	if e := other.envelope(); string(e.Data) != `[1, {"a" : "é"}]` || e.Event != "message" {
		t.Fatalf("other subscriber got %+v", e)
	}
	for range 2 {
		_ = p.next()
	}

	// history: the messages as envelopes, the epoch and the latest offset, bodies as published.
	p.sendText(`{"id":"<h&>","op":"history","channel":"ops"}`)
	if raw := p.next(); !bytes.Contains(raw, []byte(`"data":[1, {"a" : "é"}]`)) || !bytes.HasPrefix(raw, []byte(`{"id":"<h&>",`)) {
		t.Fatalf("history reply alters the body or the id: %s", raw)
	}
	h := p.ok(map[string]any{"id": 3, "op": "history", "channel": "ops"})
	if len(h) != 5 || h["epoch"] != epoch || h["offset"] != float64(2) {
		t.Fatalf("history reply %v", h)
	}
	msgs := h["messages"].([]any)
	if len(msgs) != 2 {
		t.Fatalf("history messages %v", msgs)
	}
	for i, m := range msgs {
		b, _ := json.Marshal(m)
		if e := wsCheckEnvelope(t, b); e.Offset != uint64(i+1) {
			t.Fatalf("history message %d: %+v", i, e)
		}
	}
	h = p.ok(map[string]any{"id": 4, "op": "history", "channel": "ops", "since": epoch + ":1"})
	if msgs := h["messages"].([]any); len(msgs) != 1 || msgs[0].(map[string]any)["offset"] != float64(2) {
		t.Fatalf("history since 1: %v", h)
	}
	h = p.ok(map[string]any{"id": 5, "op": "history", "channel": "ops", "limit": 1})
	if msgs := h["messages"].([]any); len(msgs) != 1 || msgs[0].(map[string]any)["offset"] != float64(2) {
		t.Fatalf("history limit 1: %v", h)
	}
	h = p.ok(map[string]any{"id": 6, "op": "history", "channel": "empty"})
	if msgs := h["messages"].([]any); len(msgs) != 0 || h["offset"] != float64(0) {
		t.Fatalf("history of an empty channel: %v", h)
	}

	// auth and ping answer ok, with nothing else.
	for _, cmd := range []map[string]any{{"id": 7, "op": "ping"}, {"id": "x", "op": "auth", "token": "t"}} {
		if got := p.do(cmd); !reflect.DeepEqual(got, map[string]any{"id": wsJSONValue(cmd["id"]), "ok": true}) {
			t.Fatalf("%v: %v", cmd, got)
		}
	}
	// A command without id gets a reply without id.
	if got := p.do(map[string]any{"op": "ping"}); !reflect.DeepEqual(got, map[string]any{"ok": true}) {
		t.Fatalf("ping without id: %v", got)
	}

	// presence, where the namespace does not enable it.
	wsExpectError(t, p, map[string]any{"id": 8, "op": "presence", "channel": "ops"}, "presence_disabled")

	// unsubscribe stops delivery to this connection only.
	got = p.ok(map[string]any{"id": 9, "op": "unsubscribe", "channel": "ops"})
	if !reflect.DeepEqual(got, map[string]any{"id": float64(9), "ok": true, "channel": "ops"}) {
		t.Fatalf("unsubscribe reply %v", got)
	}
	wsPub(t, ts.URL, "ops", `{"n":3}`)
	if e := other.envelope(); e.Offset != 3 {
		t.Fatalf("other subscriber got %+v", e)
	}
	p.sync() // the message went to the still subscribed client only
	wsExpectError(t, p, map[string]any{"id": 10, "op": "unsubscribe", "channel": "ops"}, "not_subscribed")

	// Subscribing again resumes where asked.
	got = p.ok(map[string]any{"id": 11, "op": "subscribe", "channel": "ops", "since": epoch + ":2"})
	if got["offset"] != float64(2) || got["cursor"] != "ops@"+epoch+":2" {
		t.Fatalf("re-subscribe reply %v", got)
	}
	wsExpectSeq(t, p, "ops", epoch, 3, 3)
	wsExpectError(t, p, map[string]any{"id": 12, "op": "subscribe", "channel": "ops"}, "already_subscribed")
	p.sync()
}

// reqReply decodes b as the reply to id.
func (p *wsPeer) reqReply(b []byte, id any) map[string]any {
	p.t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || !reflect.DeepEqual(m["id"], wsJSONValue(id)) {
		p.t.Fatalf("expected the reply to %v, got %s", id, b)
	}
	return m
}

// wsExpectError sends cmd and checks that its reply is exactly {"id","ok":false,"error":{…}}.
func wsExpectError(t testing.TB, p *wsPeer, cmd map[string]any, code string) {
	t.Helper()
	p.send(cmd)
	wsCheckError(t, p.next(), cmd["id"], code)
}

func wsCheckError(t testing.TB, b []byte, id any, code string) {
	t.Helper()
	var m struct {
		ID    json.RawMessage `json:"id"`
		OK    *bool           `json:"ok"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil || m.OK == nil || *m.OK || m.Error == nil {
		t.Fatalf("expected an error reply, got %s (%v)", b, err)
	}
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(b, &keys)
	var errKeys map[string]any
	_ = json.Unmarshal(keys["error"], &errKeys)
	if len(errKeys) != 2 {
		t.Fatalf("error object %s must hold code and message only", keys["error"])
	}
	if id == nil {
		if len(m.ID) != 0 {
			t.Fatalf("error reply %s carries an id the command did not have", b)
		}
	} else if want, _ := json.Marshal(id); string(m.ID) != string(want) {
		t.Fatalf("error reply %s: id %s, want %s", b, m.ID, want)
	}
	if m.Error.Code != code || m.Error.Message == "" {
		t.Fatalf("error reply %s: want code %s", b, code)
	}
}

func TestWSCommandErrors(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.MaxSubscriptions = 1; c.MaxMessageSize = 100 })
	p := wsOpen(t, ts.URL, "")
	for _, tc := range []struct {
		frame string
		id    any
		code  string
	}{
		{`{"id":1,"op":"nope"}`, 1, "bad_command"},
		{`{"id":"s-1","op":"nope"}`, "s-1", "bad_command"},
		{`{"id":1.5,"op":"nope"}`, 1.5, "bad_command"},
		{`not json`, nil, "bad_command"},
		{`{"id":2,"op":"ping"`, nil, "bad_command"},
		{`{"id":3,"op":"ping","extra":true}`, 3, "bad_command"},
		{`{"id":true,"op":"ping"}`, nil, "bad_command"},
		{`{"id":null,"op":"ping"}`, nil, "bad_command"},
		{`{"id":{"a":1},"op":"ping"}`, nil, "bad_command"},
		{`{"id":"` + strings.Repeat("i", 70) + `","op":"ping"}`, nil, "bad_command"},
		{`{"id":4}`, 4, "bad_command"},
		{`[{"id":5,"op":"ping"}]`, nil, "bad_command"},
		{`{"id":6,"op":"ping"}{"id":7,"op":"ping"}`, nil, "bad_command"},
		{`{"id":8,"op":"subscribe","channel":"bad name"}`, 8, "invalid_channel"},
		{`{"id":9,"op":"subscribe","channel":"a","since":"x"}`, 9, "invalid_position"},
		{`{"id":10,"op":"subscribe"}`, 10, "bad_command"},
		{`{"id":11,"op":"publish","channel":"a"}`, 11, "bad_command"},
		{`{"id":12,"op":"publish","channel":"a","data":1,"event":"crier.gap"}`, 12, "invalid_event"},
		{`{"id":13,"op":"publish","channel":"a","data":"` + strings.Repeat("x", 100) + `"}`, 13, "message_too_large"},
		{`{"id":14,"op":"history","channel":"a","limit":0}`, 14, "invalid_limit"},
		{`{"id":15,"op":"history","channel":"a","limit":1001}`, 15, "invalid_limit"},
		{`{"id":16,"op":"history","channel":"a","since":"x:y"}`, 16, "invalid_position"},
		{`{"id":17,"op":"unsubscribe","channel":"never"}`, 17, "not_subscribed"},
		{`{"id":18,"op":"presence","channel":"!"}`, 18, "invalid_channel"},
		{`{"id":19,"op":"auth"}`, 19, "bad_command"},
	} {
		p.sendText(tc.frame)
		wsCheckError(t, p.next(), tc.id, tc.code)
	}
	// Over the subscription limit.
	p.ok(map[string]any{"id": 20, "op": "subscribe", "channel": "a"})
	wsExpectError(t, p, map[string]any{"id": 21, "op": "subscribe", "channel": "b"}, "too_many_channels")
	p.sync()

	// Replies come in command order, errors included, when commands are sent at once.
	var batch []byte
	for i := range 40 {
		cmd := fmt.Sprintf(`{"id":%d,"op":"ping"}`, 100+i)
		switch i % 4 {
		case 1:
			cmd = fmt.Sprintf(`{"id":%d,"op":"bogus"}`, 100+i)
		case 2:
			cmd = fmt.Sprintf(`{"id":%d,"op":"history","channel":"a","limit":1}`, 100+i)
		case 3:
			cmd = fmt.Sprintf(`{"id":%d,"op":"publish","channel":"elsewhere","data":%d}`, 100+i, i)
		}
		batch = append(batch, wsFrame(true, 0, ws.OpText, true, []byte(cmd))...)
	}
	p.write(batch)
	for i := range 40 {
		m := p.nextMap()
		if m["id"] != float64(100+i) || (m["ok"] == true) == (i%4 == 1) {
			t.Fatalf("reply %d: %v", i, m)
		}
	}
	p.sync()
}

func TestWSSubscribeReplyPrecedesMessages(t *testing.T) {
	ts := startServer(t, nil)
	for i := range 5 {
		wsPub(t, ts.URL, "pre", fmt.Sprintf(`{"n":%d}`, i+1))
	}
	epoch, _ := wsEpoch(t, ts.URL, "pre")
	p := wsOpen(t, ts.URL, "")
	// A subscribe with since replays history: its reply comes first, then offsets 1..5, and
	// live ones published while it catches up follow with no gap and no duplicate.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 6; i <= 30; i++ {
			if _, err := tryWSPub(ts.URL, "pre", fmt.Sprintf(`{"n":%d}`, i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got := p.ok(map[string]any{"id": "s", "op": "subscribe", "channel": "pre", "since": epoch + ":0"})
	if got["offset"] != float64(0) || got["epoch"] != epoch || got["cursor"] != "pre@"+epoch+":0" {
		t.Fatalf("subscribe reply %v", got)
	}
	<-done
	last := wsExpectSeq(t, p, "pre", epoch, 1, 30)
	if last.Cursor != "pre@"+epoch+":30" {
		t.Fatalf("cursor %q", last.Cursor)
	}
	p.sync()

	// A second subscription on the same connection: its reply precedes its own messages, and
	// cursors from then on name both channels.
	wsPub(t, ts.URL, "pre2", `{"n":1}`)
	e2, _ := wsEpoch(t, ts.URL, "pre2")
	got = p.ok(map[string]any{"id": 2, "op": "subscribe", "channel": "pre2", "since": e2 + ":0"})
	if got["cursor"] != "pre@"+epoch+":30,pre2@"+e2+":0" {
		t.Fatalf("subscribe reply %v", got)
	}
	e := wsExpectSeq(t, p, "pre2", e2, 1, 1)
	if c := parseWSCursor(t, e.Cursor); len(c) != 2 || c[0].Offset != 30 || c[1].Offset != 1 {
		t.Fatalf("cursor %q", e.Cursor)
	}
}

// tryWSPub publishes {"n":…} from any goroutine.
func tryWSPub(base, ch, body string) (uint64, error) {
	res, err := http.Post(base+"/v1/channels/"+ch, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var out struct{ Offset uint64 }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("publish: %d %v", res.StatusCode, err)
	}
	return out.Offset, nil
}

// wsPublisher publishes {"n":from}..{"n":to} on ch in a goroutine; wait reports its end.
func wsPublisher(t testing.TB, base, ch string, from, to int) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := from; i <= to; i++ {
			if off, err := tryWSPub(base, ch, fmt.Sprintf(`{"n":%d}`, i)); err != nil || off != uint64(i) {
				t.Errorf("publish %d: offset %d, %v", i, off, err)
				return
			}
		}
	}()
	return wg.Wait
}

func TestWSResumeSinceRace(t *testing.T) {
	ts := startServer(t, nil)
	for round := range 5 {
		ch := fmt.Sprintf("race-since-%d", round)
		p := wsOpen(t, ts.URL, "")
		p.ok(map[string]any{"id": 1, "op": "subscribe", "channel": ch})
		for i := 1; i <= 10; i++ {
			wsPub(t, ts.URL, ch, fmt.Sprintf(`{"n":%d}`, i))
		}
		epoch, _ := wsEpoch(t, ts.URL, ch)
		last := wsExpectSeq(t, p, ch, epoch, 1, 4) // the client got 4, then went away
		p.nc.Close()

		wait := wsPublisher(t, ts.URL, ch, 11, 60) // races the resume
		p = wsOpen(t, ts.URL, "")
		got := p.ok(map[string]any{"id": 2, "op": "subscribe", "channel": ch, "since": last.Epoch + ":" + strconv.FormatUint(last.Offset, 10)})
		if got["offset"] != float64(4) {
			t.Fatalf("reply %v", got)
		}
		wait()
		wsExpectSeq(t, p, ch, epoch, 5, 60)
		p.sync()
	}
}

func TestWSResumeCursorRace(t *testing.T) {
	ts := startServer(t, nil)
	for round := range 5 {
		a, b := fmt.Sprintf("race-a-%d", round), fmt.Sprintf("race-b-%d", round)
		p := wsOpen(t, ts.URL, "channel="+a+"&channel="+b)
		for i := 1; i <= 5; i++ {
			wsPub(t, ts.URL, a, fmt.Sprintf(`{"n":%d}`, i))
			wsPub(t, ts.URL, b, fmt.Sprintf(`{"n":%d}`, i))
		}
		ea, _ := wsEpoch(t, ts.URL, a)
		eb, _ := wsEpoch(t, ts.URL, b)
		var last envelope
		for range 6 { // a1 b1 a2 b2 a3 b3
			last = p.envelope()
		}
		cur := parseWSCursor(t, last.Cursor)
		if pa, _ := cur.Lookup(a); pa != (channel.Position{Epoch: ea, Offset: 3}) {
			t.Fatalf("cursor %q", last.Cursor)
		}
		if pb, _ := cur.Lookup(b); pb != (channel.Position{Epoch: eb, Offset: 3}) {
			t.Fatalf("cursor %q", last.Cursor)
		}
		p.nc.Close()

		waitA := wsPublisher(t, ts.URL, a, 6, 40)
		waitB := wsPublisher(t, ts.URL, b, 6, 40)
		p = wsOpen(t, ts.URL, "cursor="+url.QueryEscape(last.Cursor))
		waitA()
		waitB()
		next := map[string]uint64{a: 4, b: 4}
		for next[a] <= 40 || next[b] <= 40 {
			e := p.envelope()
			if e.Offset != next[e.Channel] || string(e.Data) != fmt.Sprintf(`{"n":%d}`, e.Offset) {
				t.Fatalf("got %s:%d, want offset %d (no gap, no duplicate, in order)", e.Channel, e.Offset, next[e.Channel])
			}
			next[e.Channel]++
			// Every cursor names both channels, even while the first one replays.
			c := parseWSCursor(t, e.Cursor)
			if len(c) != 2 {
				t.Fatalf("cursor %q does not name both channels", e.Cursor)
			}
			if pos, _ := c.Lookup(e.Channel); pos.Offset != e.Offset {
				t.Fatalf("cursor %q does not stand at %s:%d", e.Cursor, e.Channel, e.Offset)
			}
		}
		p.sync()
	}
}

func TestWSResumeSinceQuery(t *testing.T) {
	ts := startServer(t, nil)
	for i := 1; i <= 5; i++ {
		wsPub(t, ts.URL, "sq", fmt.Sprintf(`{"n":%d}`, i))
	}
	epoch, _ := wsEpoch(t, ts.URL, "sq")
	wait := wsPublisher(t, ts.URL, "sq", 6, 30)
	p := wsOpen(t, ts.URL, "channel=sq&since="+epoch+":2")
	wait()
	wsExpectSeq(t, p, "sq", epoch, 3, 30)
	p.sync()

	// cursor= with channel=: listed channels missing from the cursor start live.
	p = wsOpen(t, ts.URL, "cursor=sq@"+epoch+":29&channel=sq-live")
	wsExpectSeq(t, p, "sq", epoch, 30, 30)
	wsPub(t, ts.URL, "sq-live", `{"n":1}`)
	e := p.envelope()
	if e.Channel != "sq-live" || e.Offset != 1 {
		t.Fatalf("live channel: %+v", e)
	}
	if c := parseWSCursor(t, e.Cursor); len(c) != 2 {
		t.Fatalf("cursor %q", e.Cursor)
	}
}

func TestWSGap(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.HistorySize = 3 })
	for i := 1; i <= 10; i++ {
		wsPub(t, ts.URL, "gap", fmt.Sprintf(`{"n":%d}`, i))
	}
	epoch, _ := wsEpoch(t, ts.URL, "gap")
	expectGap := func(p *wsPeer, at uint64, ep string) {
		t.Helper()
		e := p.envelope()
		if e.Event != "crier.gap" || e.Channel != "gap" || e.Offset != at || e.Epoch != ep || e.Cursor != fmt.Sprintf("gap@%s:%d", ep, at) {
			t.Fatalf("expected crier.gap at %s:%d, got %+v", ep, at, e)
		}
	}

	// Offsets 3..7 are gone: a gap standing at 7, then 8..10, then live.
	p := wsOpen(t, ts.URL, "")
	got := p.ok(map[string]any{"id": 1, "op": "subscribe", "channel": "gap", "since": epoch + ":2"})
	if got["offset"] != float64(2) {
		t.Fatalf("reply %v", got)
	}
	expectGap(p, 7, epoch)
	wsExpectSeq(t, p, "gap", epoch, 8, 10)
	wsPub(t, ts.URL, "gap", `{"n":11}`)
	wsExpectSeq(t, p, "gap", epoch, 11, 11)
	p.sync()

	// An epoch that is gone: a gap at the channel's latest position, then live messages.
	p = wsOpen(t, ts.URL, "cursor=gap@gone:3")
	expectGap(p, 11, epoch)
	wsPub(t, ts.URL, "gap", `{"n":12}`)
	wsExpectSeq(t, p, "gap", epoch, 12, 12)

	// The same through the query's since.
	q := wsOpen(t, ts.URL, "channel=gap&since="+epoch+":1")
	expectGap(q, 9, epoch)
	wsExpectSeq(t, q, "gap", epoch, 10, 12)

	// Clearing history moves live subscribers to the new epoch with a gap.
	req, _ := http.NewRequest("DELETE", ts.URL+"/v1/channels/gap/messages", nil)
	if st, out := do(t, req); st != http.StatusOK {
		t.Fatalf("clear: %d %v", st, out)
	}
	newEpoch, off := wsEpoch(t, ts.URL, "gap")
	if newEpoch == epoch {
		t.Fatal("clear kept the epoch")
	}
	expectGap(p, off, newEpoch)
	expectGap(q, off, newEpoch)
	wsPub(t, ts.URL, "gap", fmt.Sprintf(`{"n":%d}`, off+1))
	wsExpectSeq(t, p, "gap", newEpoch, off+1, off+1)
	wsExpectSeq(t, q, "gap", newEpoch, off+1, off+1)
}

func TestWSOffsetOrder(t *testing.T) {
	ts := startServer(t, nil)
	p := wsOpen(t, ts.URL, "channel=order")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				if _, err := tryWSPub(ts.URL, "order", `{}`); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Publishing over the socket too, from another connection.
	pub := wsOpen(t, ts.URL, "")
	for i := range 25 {
		pub.ok(map[string]any{"id": i, "op": "publish", "channel": "order", "data": map[string]any{}})
	}
	wg.Wait()
	for want := uint64(1); want <= 125; want++ {
		if e := p.envelope(); e.Offset != want {
			t.Fatalf("offset %d, want %d", e.Offset, want)
		}
	}
	p.sync()
}

func TestWSPresence(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Presence = true })
	p := wsOpen(t, ts.URL, "")
	p.ok(map[string]any{"id": 1, "op": "subscribe", "channel": "room"})
	join := p.envelope()
	if join.Event != "crier.join" {
		t.Fatalf("expected crier.join, got %+v", join)
	}
	var me map[string]any
	_ = json.Unmarshal(join.Data, &me)
	got := p.ok(map[string]any{"id": 2, "op": "presence", "channel": "room"})
	want := map[string]any{"id": float64(2), "ok": true, "clients": []any{
		map[string]any{"client": me["client"], "user": "", "transport": "ws"}}}
	if !reflect.DeepEqual(got, want) || me["client"] == "" {
		t.Fatalf("presence %v, want %v", got, want)
	}
	got = p.ok(map[string]any{"id": 3, "op": "presence", "channel": "nobody"})
	if !reflect.DeepEqual(got, map[string]any{"id": float64(3), "ok": true, "clients": []any{}}) {
		t.Fatalf("presence of an empty channel: %v", got)
	}
}

func TestWSHeartbeatAndPong(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Heartbeat = 50 * time.Millisecond })
	p := wsOpen(t, ts.URL, "channel=hb")
	for range 2 {
		f := p.frame()
		if f.Header.OpCode != ws.OpPing || len(f.Payload) != 0 {
			t.Fatalf("expected an empty ping, got %v %q", f.Header.OpCode, f.Payload)
		}
	}
	// The client's ping gets a pong with its payload, even in the middle of a fragmented message.
	p.write(wsFrame(true, 0, ws.OpPing, true, []byte("are you there")))
	p.write(wsFrame(false, 0, ws.OpText, true, []byte(`{"id":1,`)))
	p.write(wsFrame(true, 0, ws.OpPing, true, []byte("again")))
	p.write(wsFrame(true, 0, ws.OpContinuation, true, []byte(`"op":"ping"}`)))
	var pongs []string
	var replies int
	for len(pongs) < 2 || replies < 1 {
		f := p.frame()
		switch f.Header.OpCode {
		case ws.OpPing:
		case ws.OpPong:
			pongs = append(pongs, string(f.Payload))
		case ws.OpText:
			if string(f.Payload) != `{"id":1,"ok":true}` {
				t.Fatalf("reply %s", f.Payload)
			}
			replies++
		default:
			t.Fatalf("frame %v %q", f.Header.OpCode, f.Payload)
		}
	}
	if !slices.Equal(pongs, []string{"are you there", "again"}) {
		t.Fatalf("pongs %q", pongs)
	}
	// A pong from the client (unsolicited or not) is ignored, and delivery goes on.
	p.write(wsFrame(true, 0, ws.OpPong, true, nil))
	wsPub(t, ts.URL, "hb", `{"n":1}`)
	e := p.envelope()
	if e.Offset != 1 {
		t.Fatalf("%+v", e)
	}
}

func TestWSMaxLifetime(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.MaxLifetime = 300 * time.Millisecond
		c.Heartbeat = 100 * time.Millisecond
	})
	start := time.Now()
	p := wsOpen(t, ts.URL, "channel=life")
	wsPub(t, ts.URL, "life", `{"n":1}`)
	e := p.envelope() // the cursor in hand
	if e.Cursor == "" {
		t.Fatal("no cursor")
	}
	p.expectClose(1000, "max_lifetime")
	if d := time.Since(start); d < 300*time.Millisecond || d > 1500*time.Millisecond {
		t.Fatalf("closed after %s with a 300ms lifetime", d)
	}
	// The cursor resumes on a new connection.
	wsPub(t, ts.URL, "life", `{"n":2}`)
	p = wsOpen(t, ts.URL, "cursor="+url.QueryEscape(e.Cursor))
	wsExpectSeq(t, p, "life", e.Epoch, 2, 2)
}

func TestWSCloseCodes(t *testing.T) {
	const maxSize = 1024
	ts := startServer(t, func(c *config.Config) { c.MaxMessageSize = maxSize })
	// A good client stays connected through all the bad ones.
	good := wsOpen(t, ts.URL, "channel=survivor")
	text := func(fin bool, s string) []byte { return wsFrame(fin, 0, ws.OpText, true, []byte(s)) }
	cont := func(fin bool, s string) []byte { return wsFrame(fin, 0, ws.OpContinuation, true, []byte(s)) }
	closeBody := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	tooBig := wsFrame(true, 0, ws.OpText, true, bytes.Repeat([]byte("x"), maxSize+2000))
	for _, tc := range []struct {
		name   string
		send   [][]byte
		code   ws.StatusCode
		reason string
	}{
		{"invalid UTF-8 text", [][]byte{text(true, "{\"op\":\"\xff\"}")}, 1007, "invalid_utf8"},
		{"invalid UTF-8 across fragments", [][]byte{text(false, "{\"op\":\"\xe2\x82"), cont(true, "(\"}")}, 1007, "invalid_utf8"},
		{"invalid UTF-8 in a first fragment", [][]byte{text(false, "{\"op\":\"\xc0\xaf")}, 1007, "invalid_utf8"},
		{"invalid UTF-8 in a close reason", [][]byte{wsFrame(true, 0, ws.OpClose, true, closeBody(1000, "\xff"))}, 1007, "invalid_utf8"},
		{"binary frame", [][]byte{wsFrame(true, 0, ws.OpBinary, true, []byte(`{"op":"ping"}`))}, 1003, "unsupported_data"},
		{"fragmented binary", [][]byte{wsFrame(false, 0, ws.OpBinary, true, []byte(`{"op":`))}, 1003, "unsupported_data"},
		{"frame over the maximum size", [][]byte{tooBig[:200]}, 1009, "message_too_large"},
		{"fragments over the maximum size", [][]byte{text(false, strings.Repeat("x", maxSize)), cont(false, strings.Repeat("x", maxSize)), cont(true, "x")}, 1009, "message_too_large"},
		{"unmasked frame", [][]byte{wsFrame(true, 0, ws.OpText, false, []byte(`{"op":"ping"}`))}, 1002, "protocol_error"},
		{"reserved bit", [][]byte{wsFrame(true, 4, ws.OpText, true, []byte(`{"op":"ping"}`))}, 1002, "protocol_error"},
		{"reserved opcode", [][]byte{wsFrame(true, 0, ws.OpCode(3), true, nil)}, 1002, "protocol_error"},
		{"reserved control opcode", [][]byte{wsFrame(true, 0, ws.OpCode(0xb), true, nil)}, 1002, "protocol_error"},
		{"fragmented ping", [][]byte{wsFrame(false, 0, ws.OpPing, true, []byte("x"))}, 1002, "protocol_error"},
		{"fragmented close", [][]byte{wsFrame(false, 0, ws.OpClose, true, closeBody(1000, ""))}, 1002, "protocol_error"},
		{"control frame over 125 bytes", [][]byte{wsFrame(true, 0, ws.OpPing, true, bytes.Repeat([]byte("p"), 126))}, 1002, "protocol_error"},
		{"continuation without a message", [][]byte{cont(true, `{"op":"ping"}`)}, 1002, "protocol_error"},
		{"new message inside a fragmented one", [][]byte{text(false, `{"op":`), text(true, `{"op":"ping"}`)}, 1002, "protocol_error"},
		{"close with a one-byte body", [][]byte{wsFrame(true, 0, ws.OpClose, true, []byte{3})}, 1002, "protocol_error"},
		{"close with a reserved code", [][]byte{wsFrame(true, 0, ws.OpClose, true, closeBody(1005, ""))}, 1002, "protocol_error"},
		{"close with an unassigned code", [][]byte{wsFrame(true, 0, ws.OpClose, true, closeBody(999, ""))}, 1002, "protocol_error"},
		{"64-bit length with the top bit set", [][]byte{{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}}, 1002, "protocol_error"},
		// Clean closes: the client's code is echoed, with no reason of the server's.
		{"client close", [][]byte{wsFrame(true, 0, ws.OpClose, true, closeBody(1000, "bye"))}, 1000, ""},
		{"client close with an application code", [][]byte{wsFrame(true, 0, ws.OpClose, true, closeBody(4001, "later"))}, 4001, ""},
		{"client close going away", [][]byte{wsFrame(true, 0, ws.OpClose, true, closeBody(1001, ""))}, 1001, ""},
		{"empty client close", [][]byte{wsFrame(true, 0, ws.OpClose, true, nil)}, 1000, ""},
		// What follows a close frame is not a command.
		{"commands after a close", [][]byte{append(wsFrame(true, 0, ws.OpClose, true, nil), text(true, `{"id":1,"op":"ping"}`)...)}, 1000, ""},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			p := wsOpen(t, ts.URL, "channel=victim")
			for _, b := range tc.send {
				p.write(b)
			}
			p.expectClose(tc.code, tc.reason)
			// The server still serves others, old and new.
			off, _ := wsPub(t, ts.URL, "survivor", `{}`)
			if e := good.envelope(); e.Offset != off {
				t.Fatalf("survivor got %+v", e)
			}
			good.sync()
			fresh := wsOpen(t, ts.URL, "")
			fresh.sync()
		})
	}
	// A valid message split across fragments, a rune cut in two, is one command.
	p := wsOpen(t, ts.URL, "")
	p.write(text(false, `{"id":"\u00e9`))
	p.write(cont(false, "\xc3"))
	p.write(cont(true, "\xa9\",\"op\":\"ping\"}"))
	if got := p.nextMap(); !reflect.DeepEqual(got, map[string]any{"id": "éé", "ok": true}) {
		t.Fatalf("fragmented command: %v", got)
	}
	// A frame of the maximum size plus the command's envelope is accepted.
	data := strings.Repeat("d", maxSize-2)
	p.ok(map[string]any{"id": 1, "op": "publish", "channel": "big", "data": data})
	// Every victim's subscription is gone.
	deadline := time.Now().Add(wsWait)
	for {
		_, out := get(t, ts.URL+"/v1/channels/victim")
		if out["subscribers"] == float64(0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("victim has %v subscribers", out["subscribers"])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The server reads a client's bytes as they come: a frame split anywhere is still one frame.
func TestWSSplitWrites(t *testing.T) {
	ts := startServer(t, nil)
	p := wsOpen(t, ts.URL, "")
	var b []byte
	for i := range 20 {
		b = append(b, wsFrame(true, 0, ws.OpText, true, []byte(fmt.Sprintf(`{"id":%d,"op":"ping"}`, i)))...)
	}
	b = append(b, wsFrame(true, 0, ws.OpText, true, []byte(`{"id":"big","op":"publish","channel":"split","data":"`+strings.Repeat("y", 65600)+`"}`))...)
	// Written in uneven pieces with pauses, so the server sees partial headers and payloads.
	w := bufio.NewWriterSize(p.nc, 1)
	for len(b) > 0 {
		n := min(len(b), 1+len(b)%7)
		if len(b) > 1000 && len(b) < 60000 {
			n = min(len(b), 9000)
		}
		_, _ = w.Write(b[:n])
		_ = w.Flush()
		b = b[n:]
		if len(b)%5 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	for i := range 20 {
		if got := p.nextMap(); got["id"] != float64(i) || got["ok"] != true {
			t.Fatalf("reply %d: %v", i, got)
		}
	}
	if got := p.nextMap(); got["id"] != "big" || got["ok"] != false {
		// A frame under the frame limit whose data exceeds the 64 KiB default message size.
		t.Fatalf("big publish: %v", got)
	}
}

func TestWSDrain(t *testing.T) {
	ts := startServer(t, nil)
	p := wsOpen(t, ts.URL, "channel=drain")
	idle := wsOpen(t, ts.URL, "")
	off, epoch := wsPub(t, ts.URL, "drain", `{"n":1}`)
	wsExpectSeq(t, p, "drain", epoch, 1, 1)
	stopped := make(chan struct{})
	go func() { ts.Stop(); close(stopped) }()
	// A subscriber is told to reconnect, with its cursor, then closed as going away.
	e := p.envelope()
	if e.Event != "crier.reconnect" || e.Offset != off || e.Cursor != fmt.Sprintf("drain@%s:%d", epoch, off) ||
		string(e.Data) != `{"after_ms":1000}` {
		t.Fatalf("expected crier.reconnect, got %+v %s", e, e.Data)
	}
	p.expectClose(1001, "draining")
	idle.expectClose(1001, "draining")
	select {
	case <-stopped:
	case <-time.After(wsWait):
		t.Fatal("the server did not stop")
	}
}
