// Package ws is the WebSocket transport (RFC 6455): GET /v1/ws, JSON text frames carrying the
// commands of the contract, envelopes pushed as text frames, pings as heartbeats. Frame headers
// are parsed and checked with gobwas/ws; reading runs on the connection layer's poller, commands
// on a goroutine that exists only while a connection has commands waiting.
//
// Decisions where the contract is silent:
//
//   - The query's channel=, cursor= and since= are subscribed before the 101 is written, so a
//     client that has the 101 receives every message published after it. A bad query or
//     handshake is answered with the API's JSON error instead of upgrading. The 101 is the
//     connection's first write, made by the connection layer once it owns the socket.
//   - A command is one JSON object per text frame, with the fields of its op only, spelled
//     exactly, each once; "since":"" means none. id is a number or a string of at most 64
//     bytes, echoed verbatim. Errors: bad_command, invalid_channel, invalid_position,
//     invalid_limit, invalid_event, and those of the HTTP API (already_subscribed,
//     not_subscribed, too_many_channels, message_too_large, presence_disabled, draining).
//     Commands are answered in the order they came, a command without id with a reply
//     without id.
//   - The subscribe reply is {"id","ok":true,"channel","epoch","offset","cursor"}: where the
//     subscription starts and the connection's cursor with it. It is written in place of the
//     subscription's start, so it precedes the subscription's first message.
//   - history takes limit 1 to 1000, 100 when absent, as over HTTP.
//   - Auth (SPEC section 7): the handshake is refused with the API's JSON error before the
//     upgrade for an origin --allow-origin does not allow (403 origin_not_allowed), a bad
//     credential (401) and a query channel the credential may not read (401 or 403). A
//     connection without a credential is anonymous until an auth op brings one. subscribe,
//     history and presence need the subscribe right on their channel, publish the publish
//     right, and publish is held to --publish-rate; refusals are error replies with the codes
//     of the HTTP API (unauthorized, forbidden, token_expired, rate_limited). The auth op
//     replaces the connection's identity: a bad token gets an error reply and the connection
//     keeps the identity it had; a token that may not read a channel the connection follows is
//     refused (forbidden) rather than cutting the subscription. When the identity's token
//     expires (exp plus the leeway) the connection is closed with 1008 "token_expired: …",
//     unless an auth op replaced it first.
//   - Close codes: 1000 the client's close echoed (its code), or the maximum lifetime; 1001
//     draining; 1002 protocol errors; 1003 a binary frame; 1007 text that is not UTF-8 (a
//     fragmented message fails as soon as its bytes cannot become UTF-8); 1008 a slow client,
//     too many commands waiting, or an expired token; 1009 a frame or message over the maximum
//     message size plus 1 KiB for the command around it. The reason is "code: message" as in
//     the API.
package ws

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Transport registers WebSocket.
var Transport = transport.Transport{Name: "ws", Pattern: "GET /v1/ws", New: newHandler}

type handler struct {
	env    *transport.Env
	format int // frame cache slot: a whole single-channel text frame
}

func newHandler(env *transport.Env) http.Handler {
	return &handler{env: env, format: env.Formats.Register()}
}

// Close codes beyond RFC 6455's own.
const (
	closeNormal      = 1000
	closeProtocol    = 1002
	closeUnsupported = 1003
	closeInvalidData = 1007
	closePolicy      = 1008
	closeTooBig      = 1009
	closeInternal    = 1011
)

// maxPendingCommands bounds the commands one connection may have waiting.
const maxPendingCommands = 64

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	targets, err := transport.SubscribeParams(r.URL.Query(), "", h.env.MaxChannels)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	if err := checkHandshake(w, r); err != nil {
		transport.WriteError(w, err)
		return
	}
	// Browsers let any page open a WebSocket to any host, cookies included: the origin is the
	// only thing that tells this site's pages from another's.
	if v, from := h.env.Origins.Check(r); !v.Allowed() {
		transport.WriteError(w, transport.Errorf(http.StatusForbidden, "origin_not_allowed",
			"WebSocket connections from the web origin "+strconv.Quote(truncate(from, 100))+" are not allowed here"))
		return
	}
	id, err := h.env.Admit(r, targets)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	s := &session{h: h, client: hub.ClientInfo{Client: transport.NewClientID(), Transport: "ws"},
		id: id, clientKey: h.env.Client(r), lane: h.env.Conns.NextLane()}
	s.subs.Observer = h.env.Observer
	// The query's subscriptions are made before the handshake is answered, so that a client
	// that has the 101 has them: a message published after it reaches the client. Until the
	// connection is taken over, what they deliver waits in the session.
	if len(targets) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), h.env.SubscribeTimeout)
		for _, t := range targets {
			_, err = s.subs.Subscribe(ctx, h.env.Hub, hub.SubscribeRequest{Channel: t.Channel, Since: t.Since,
				Sink: s, Client: s.client})
			if err != nil {
				break
			}
		}
		cancel()
		if err != nil {
			s.subs.Close()
			transport.WriteError(w, err)
			return
		}
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.subs.Close()
		transport.WriteError(w, transport.Errorf(http.StatusHTTPVersionNotSupported, "unsupported_protocol", "WebSocket needs HTTP/1.1 here"))
		return
	}
	c, err := h.env.Conns.TakeInLane(nc, s, s.lane)
	if err != nil {
		s.subs.Close()
		_ = nc.Close()
		h.env.Logger.Warn("ws: cannot take connection", "err", err)
		return
	}
	// The 101 is the connection's first write, by its writer, once it is started: a client
	// that has it has a connection the server knows (a drain reaches it), with the query's
	// subscriptions active.
	s.accept = switchingProtocols(r.Header.Get("Sec-WebSocket-Key"))
	s.release = transport.KeepConnSlot(r)
	h.env.Observer.Connected("ws", 1)
	s.open(c)
	buffered, _ := brw.Reader.Peek(brw.Reader.Buffered())
	if err := h.env.Conns.Start(c, buffered); err != nil {
		return // Closed has run
	}
	// The handshake's identity expires; an auth op that already replaced it set its own timer.
	s.idMu.Lock()
	if s.id == id {
		s.armLocked(id)
	}
	s.idMu.Unlock()
}

// switchingProtocols is the answer to a valid opening handshake (RFC 6455 section 4.2.2).
func switchingProtocols(key string) []byte {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	b := make([]byte, 0, 160)
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = base64.StdEncoding.AppendEncode(b, sum[:])
	return append(b, "\r\n\r\n"...)
}

// checkHandshake checks an opening handshake (RFC 6455 section 4.2.1), so that a bad one is
// answered with the API's JSON error before anything is subscribed.
func checkHandshake(w http.ResponseWriter, r *http.Request) error {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		return transport.Errorf(http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only")
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return transport.Errorf(http.StatusBadRequest, "bad_handshake", "WebSocket needs HTTP/1.1")
	}
	if c := r.Header.Get("Connection"); !hasToken(c, "upgrade") {
		return transport.Errorf(http.StatusBadRequest, "bad_handshake", `"Connection: Upgrade" is missing`)
	}
	switch v := r.Header.Get("Sec-WebSocket-Version"); v {
	case "13":
	case "":
		return transport.Errorf(http.StatusBadRequest, "bad_handshake", "Sec-WebSocket-Version is missing")
	default:
		w.Header().Set("Sec-WebSocket-Version", "13")
		return transport.Errorf(http.StatusUpgradeRequired, "unsupported_version", "only WebSocket version 13 is spoken here")
	}
	if k, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key")); err != nil || len(k) != 16 {
		return transport.Errorf(http.StatusBadRequest, "bad_handshake", "Sec-WebSocket-Key must be 16 bytes in base64")
	}
	return nil
}

// hasToken reports whether the comma-separated list v holds token, in any case.
func hasToken(v, token string) bool {
	for part := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(part), token) {
			return true
		}
	}
	return false
}

// session is one WebSocket connection.
type session struct {
	// What the writer reads to render a delivery comes first, in two cache lines; Warm loads
	// them by h and lane, which never change.
	h       *handler
	greeted bool // accept is written; writer-owned
	tracker transport.Tracker
	scratch []byte     // writer-owned: a reply, or a multi-channel cursor
	c       *conn.Conn // set by open
	lane    int        // the connection layer's lane it is written by, chosen before its subscriptions

	opened atomic.Bool

	client    hub.ClientInfo
	subs      transport.Subs
	clientKey string // the client's address, for per-IP publish limits
	release   func() // the connection's count against the connection limits

	// The connection's identity, and the timer that closes it when the identity expires.
	idMu    sync.Mutex
	id      *auth.Identity
	expiry  *time.Timer
	idEnded bool // Closed has run: no timer any more

	// Until open (opened), frames delivered to the query's subscriptions wait in held.
	holdMu sync.Mutex
	held   []conn.Item

	// Poller-owned read state.
	partial    []byte // bytes of an incomplete frame
	message    []byte // a fragmented message being assembled
	fragmented bool
	msgOp      ws.OpCode
	done       bool // a close frame came, or a read failed: what follows is ignored

	// Commands wait here; one goroutine at a time runs them, in order.
	cmdMu   sync.Mutex
	cmds    []pending
	running bool

	accept []byte // the 101 answer, written before anything else; writer-owned
}

// pending is a command waiting to run, or the error to answer a frame that held none.
type pending struct {
	cmd Command
	err error
}

// sink receives the frames of a subscription made by a subscribe command: the command's reply
// is rendered in place of the subscription's start frame, so that it precedes the
// subscription's first message. (The query's subscriptions deliver to the connection itself.)
type sink struct {
	c  *conn.Conn
	id json.RawMessage
}

func (k *sink) Deliver(f *hub.Frame) {
	it := conn.Item{Frame: f}
	if f.Kind == hub.KindStart {
		it.Note = subscribed{id: k.id}
	}
	k.c.Enqueue(it)
}

// Lane implements hub.Laned: the connection's.
func (k *sink) Lane() int { return k.c.Lane() }

// Warm implements hub.Warmer for the connection (conn.Conn.Warm) and, until open, for the
// query's subscriptions.
func (s *session) Warm() uintptr { return uintptr(unsafe.Pointer(s.h)) + uintptr(s.lane) }

// Lane implements hub.Laned for the query's subscriptions.
func (s *session) Lane() int { return s.lane }

// Deliver receives the frames of the query's subscriptions until open hands them to the
// connection; they need no reply.
func (s *session) Deliver(f *hub.Frame) {
	it := conn.Item{Frame: f}
	if s.opened.Load() {
		s.c.Enqueue(it)
		return
	}
	s.holdMu.Lock()
	if !s.opened.Load() {
		s.held = append(s.held, it)
		s.holdMu.Unlock()
		return
	}
	s.holdMu.Unlock()
	s.c.Enqueue(it)
}

// open hands what the session holds to c, and from then on everything: the query's
// subscriptions then deliver to c itself, so that a delivery does not pass through the session.
func (s *session) open(c *conn.Conn) {
	s.holdMu.Lock()
	s.c = c
	// The query's subscriptions are all made: every envelope's cursor names each of their
	// channels from the first one on, even while an earlier channel replays its history, so
	// that a client resuming with any of them resumes them all. Nothing is rendered yet.
	for i := range s.held {
		if f := s.held[i].Frame; f != nil && f.Kind == hub.KindStart {
			s.tracker.Update(f)
		}
	}
	c.Enqueue(conn.Item{Note: greeting{}})
	for i := range s.held {
		c.Enqueue(s.held[i])
	}
	s.held = nil
	s.opened.Store(true)
	s.holdMu.Unlock()
	s.subs.Retarget(c)
}

func protocolErr(code uint16, c, msg string) error {
	return &conn.ReadError{Reason: conn.Reason{Code: c, Message: msg, WSCode: code}}
}

// Read parses frames from the peer (on the poller goroutine).
func (s *session) Read(c *conn.Conn, data []byte) error {
	if s.done {
		return nil
	}
	if err := s.read(data); err != nil {
		s.done, s.partial, s.message = true, nil, nil
		return err
	}
	return nil
}

func (s *session) read(data []byte) error {
	buf := data
	if len(s.partial) > 0 {
		s.partial = append(s.partial, data...)
		buf = s.partial
	}
	maxFrame := int64(s.h.env.MaxMessageSize) + commandOverhead
	for len(buf) > 0 && !s.done {
		hdr, n, ok, err := parseHeader(buf)
		if err != nil {
			return protocolErr(closeProtocol, "protocol_error", err.Error())
		}
		if !ok {
			break
		}
		state := ws.StateServerSide
		if s.fragmented {
			state |= ws.StateFragmented
		}
		if err := ws.CheckHeader(hdr, state); err != nil {
			return protocolErr(closeProtocol, "protocol_error", err.Error())
		}
		if hdr.Length > maxFrame || hdr.Length < 0 {
			return protocolErr(closeTooBig, "message_too_large", "frame exceeds the maximum message size")
		}
		end := n + int(hdr.Length)
		if len(buf) < end {
			break
		}
		payload := buf[n:end]
		ws.Cipher(payload, hdr.Mask, 0)
		if err := s.frame(hdr, payload); err != nil {
			return err
		}
		buf = buf[end:]
	}
	switch {
	case len(buf) == 0 || s.done:
		s.partial = nil
	case len(s.partial) == 0 || &buf[0] != &s.partial[0]:
		s.partial = append([]byte(nil), buf...)
	}
	return nil
}

// commandOverhead is what a command may add around a message of the maximum size.
const commandOverhead = 1024

// parseHeader reads a frame header from b; ok is false when b holds only part of it.
func parseHeader(b []byte) (ws.Header, int, bool, error) {
	r := bytes.NewReader(b)
	var scratch [ws.MaxHeaderSize - 2]byte
	h, err := ws.ReadHeaderBuffer(r, scratch[:])
	if err != nil {
		if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
			return h, 0, false, err
		}
		return h, 0, false, nil
	}
	return h, len(b) - r.Len(), true, nil
}

// frame handles one complete, unmasked frame.
func (s *session) frame(h ws.Header, payload []byte) error {
	switch h.OpCode {
	case ws.OpPing:
		s.c.Send(appendFrame(nil, ws.OpPong, payload))
		return nil
	case ws.OpPong:
		return nil
	case ws.OpClose:
		code := ws.StatusCode(closeNormal)
		if len(payload) == 1 {
			return protocolErr(closeProtocol, "protocol_error", "close frame with a one-byte body")
		}
		if len(payload) >= 2 {
			sc, text := ws.ParseCloseFrameData(payload)
			if err := ws.CheckCloseFrameData(sc, text); err != nil {
				if !utf8.ValidString(text) {
					return protocolErr(closeInvalidData, "invalid_utf8", "close reason is not valid UTF-8")
				}
				return protocolErr(closeProtocol, "protocol_error", err.Error())
			}
			code = sc
		}
		// Echo the peer's code, then close; nothing it sends after its close frame counts.
		s.done = true
		s.c.Close(conn.Reason{Code: peerClosing, Message: "closed by peer", WSCode: uint16(code)})
		return nil
	}
	// Data frames.
	if h.OpCode != ws.OpContinuation {
		s.msgOp = h.OpCode
	}
	if s.msgOp == ws.OpBinary {
		return protocolErr(closeUnsupported, "unsupported_data", "commands are JSON text frames")
	}
	if !h.Fin || s.fragmented {
		if len(s.message)+len(payload) > s.h.env.MaxMessageSize+commandOverhead {
			return protocolErr(closeTooBig, "message_too_large", "message exceeds the maximum message size")
		}
		s.message = append(s.message, payload...)
		s.fragmented = !h.Fin
		if !h.Fin {
			if !validPrefix(s.message) {
				return protocolErr(closeInvalidData, "invalid_utf8", "text message is not valid UTF-8")
			}
			return nil
		}
		payload = s.message
		s.message = nil
	}
	if !utf8.Valid(payload) {
		return protocolErr(closeInvalidData, "invalid_utf8", "text message is not valid UTF-8")
	}
	cmd, err := DecodeCommand(payload)
	return s.enqueue(pending{cmd: cmd, err: err})
}

// validPrefix reports whether b is valid UTF-8 except perhaps for an incomplete sequence at its
// end, which the next fragment may complete. An invalid message fails as soon as it shows.
func validPrefix(b []byte) bool {
	// A rune is at most 4 bytes: look back for the start of the last one.
	i := len(b)
	for j := len(b) - 1; j >= 0 && j >= len(b)-utf8.UTFMax; j-- {
		if utf8.RuneStart(b[j]) {
			i = j
			break
		}
	}
	if !utf8.Valid(b[:i]) {
		return false
	}
	tail := b[i:]
	return utf8.Valid(tail) || !utf8.FullRune(tail)
}

func (s *session) enqueue(p pending) error {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	if len(s.cmds) >= maxPendingCommands {
		return protocolErr(closePolicy, "too_many_commands", "too many commands waiting for replies")
	}
	s.cmds = append(s.cmds, p)
	if !s.running {
		s.running = true
		go s.runCommands()
	}
	return nil
}

func (s *session) runCommands() {
	for {
		s.cmdMu.Lock()
		if len(s.cmds) == 0 {
			s.running = false
			s.cmds = nil
			s.cmdMu.Unlock()
			return
		}
		p := s.cmds[0]
		s.cmds[0] = pending{}
		s.cmds = s.cmds[1:]
		s.cmdMu.Unlock()
		if p.err != nil {
			s.c.Send(s.errorReply(p.cmd.ID, p.err))
			continue
		}
		s.run(p.cmd)
	}
}

// greet appends the 101 answer when it is not written yet: whatever the writer renders first,
// a goodbye included, follows it.
func (s *session) greet(dst []byte) []byte {
	if s.greeted {
		return dst
	}
	s.greeted = true
	return append(dst, s.accept...)
}

// greeting is the connection's first item: it renders as the 101 answer.
type greeting struct{}

// Heartbeat is an empty ping.
func (s *session) Heartbeat(dst []byte) []byte { return append(s.greet(dst), 0x89, 0x00) }

// peerClosing is the reason code of a close the peer began: its close frame is echoed.
const peerClosing = "peer_closing"

// Goodbye is a close frame carrying the reason.
func (s *session) Goodbye(dst []byte, reason conn.Reason) []byte {
	dst = s.greet(dst)
	code := reason.WSCode
	if code == 0 {
		code = closeNormal
	}
	text := reason.Code
	if reason.Code == peerClosing {
		text = ""
	} else if reason.Message != "" {
		text += ": " + reason.Message
	}
	if len(text) > maxCloseReason {
		text = text[:maxCloseReason]
		for !utf8.ValidString(text) {
			text = text[:len(text)-1]
		}
	}
	return appendFrame(dst, ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), text))
}

// maxCloseReason is what a close frame's 125 bytes leave for the reason after the code.
const maxCloseReason = 123

func (s *session) Closed(*conn.Conn, conn.Reason) {
	s.idMu.Lock()
	s.idEnded = true
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.idMu.Unlock()
	if s.release != nil {
		s.release()
	}
	s.subs.Close()
	s.h.env.Observer.Connected("ws", -1)
}

// Render writes a frame, or a reply.
func (s *session) Render(dst []byte, it *conn.Item) ([]byte, bool) {
	dst = s.greet(dst)
	f := it.Frame
	if f == nil {
		if u, ok := it.Note.(unsubscribed); ok {
			s.tracker.Remove(string(u))
		}
		return append(dst, it.Raw...), false
	}
	s.tracker.Update(f)
	if f.Kind == hub.KindStart {
		if r, ok := it.Note.(subscribed); ok {
			s.scratch = s.subscribeReply(s.scratch[:0], r.id, f)
			dst = appendFrame(dst, ws.OpText, s.scratch)
		}
		return dst, false
	}
	if s.tracker.Single() {
		dst = append(dst, f.Encoded(s.h.format, encodeSingle)...)
	} else {
		s.scratch = s.tracker.AppendTo(s.scratch[:0])
		dst = appendHeader(dst, ws.OpText, len(f.Envelope)+len(s.scratch)+len(hub.EnvelopeEnd))
		dst = f.AppendEnvelope(dst, s.scratch)
	}
	return dst, f.Msg.Event == hub.EventReconnect
}

func encodeSingle(f *hub.Frame) []byte {
	n := len(f.Envelope) + len(f.Cursor) + len(hub.EnvelopeEnd)
	dst := appendHeader(make([]byte, 0, n+ws.MaxHeaderSize), ws.OpText, n)
	return f.AppendEnvelope(dst, []byte(f.Cursor))
}

// appendHeader appends an unmasked, final frame header.
func appendHeader(dst []byte, op ws.OpCode, n int) []byte {
	w := appender{dst}
	_ = ws.WriteHeader(&w, ws.Header{Fin: true, OpCode: op, Length: int64(n)})
	return w.b
}

func appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = appendHeader(dst, op, len(payload))
	return append(dst, payload...)
}

type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) { a.b = append(a.b, p...); return len(p), nil }

// unsubscribed notes, in the write order, that a channel left the connection's cursor.
type unsubscribed string

// subscribed marks the start frame of a subscription made by a command with this id.
type subscribed struct{ id json.RawMessage }

// subscribeReply is {"id":…,"ok":true,"channel","epoch","offset","cursor"}: where the
// subscription starts, and the connection's cursor with it.
func (s *session) subscribeReply(b []byte, id json.RawMessage, f *hub.Frame) []byte {
	b = append(b, '{')
	if len(id) > 0 {
		b = append(b, `"id":`...)
		b = append(b, id...)
		b = append(b, ',')
	}
	b = append(b, `"ok":true,"channel":"`...)
	b = append(b, f.Msg.Channel...)
	b = append(b, `","epoch":"`...)
	b = append(b, f.Msg.Epoch...)
	b = append(b, `","offset":`...)
	b = strconv.AppendUint(b, f.Msg.Offset, 10)
	b = append(b, `,"cursor":"`...)
	b = s.tracker.AppendTo(b)
	return append(b, `"}`...)
}
