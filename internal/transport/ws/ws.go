// Package ws is the WebSocket transport (RFC 6455): GET /v1/ws, JSON text frames carrying the
// commands of the contract, envelopes pushed as text frames, pings as heartbeats. The framing
// comes from gobwas/ws; reading runs on the connection layer's poller, commands on a goroutine
// that exists only while a connection has commands waiting.
package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Transport registers WebSocket.
var Transport = transport.Transport{Name: "ws", Pattern: "GET /v1/ws", New: newHandler}

type handler struct {
	env      *transport.Env
	format   int // frame cache slot: a whole single-channel text frame
	upgrader ws.HTTPUpgrader
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
	if !isUpgrade(r) {
		transport.WriteError(w, transport.Errorf(http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only"))
		return
	}
	nc, brw, _, err := h.upgrader.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			_ = nc.Close()
		}
		return // the upgrader answered the client
	}
	s := &session{h: h, client: hub.ClientInfo{Client: transport.NewClientID(), Transport: "ws"}, pendingReply: map[string]json.RawMessage{}}
	c, err := h.env.Conns.Take(nc, s)
	if err != nil {
		_ = nc.Close()
		h.env.Logger.Warn("ws: cannot take connection", "err", err)
		return
	}
	s.c = c
	s.subs.Observer = h.env.Observer
	h.env.Observer.Connected("ws", 1)
	buffered, _ := brw.Reader.Peek(brw.Reader.Buffered())
	if err := h.env.Conns.Start(c, buffered); err != nil {
		return
	}
	for _, t := range targets {
		s.enqueueCommand(Command{Op: "subscribe", Channel: t.Channel, Since: positionText(t.Since)})
	}
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		if bytes.EqualFold([]byte(v), []byte("websocket")) {
			return true
		}
	}
	return false
}

func positionText(p *channel.Position) string {
	if p == nil {
		return ""
	}
	return p.String()
}

// session is one WebSocket connection.
type session struct {
	h      *handler
	c      *conn.Conn
	client hub.ClientInfo
	subs   transport.Subs

	// Poller-owned read state.
	partial    []byte // bytes of an incomplete frame
	message    []byte // a fragmented message being assembled
	fragmented bool
	msgOp      ws.OpCode

	// Commands wait here; one goroutine at a time runs them, in order.
	cmdMu   sync.Mutex
	cmds    []Command
	running bool

	// pendingReply holds subscribe ids until the subscription's start frame is rendered, so the
	// reply precedes the subscription's messages.
	replyMu      sync.Mutex
	pendingReply map[string]json.RawMessage

	// Writer-owned.
	tracker transport.Tracker
	scratch []byte
}

func protocolErr(code uint16, c, msg string) error {
	return &conn.ReadError{Reason: conn.Reason{Code: c, Message: msg, WSCode: code}}
}

// Read parses frames from the peer (on the poller goroutine).
func (s *session) Read(c *conn.Conn, data []byte) error {
	buf := data
	if len(s.partial) > 0 {
		s.partial = append(s.partial, data...)
		buf = s.partial
	}
	for len(buf) > 0 {
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
		if hdr.Length > int64(s.h.env.MaxMessageSize)+1024 || hdr.Length < 0 {
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
	if len(buf) == 0 {
		s.partial = nil
	} else if len(s.partial) == 0 || &buf[0] != &s.partial[0] {
		s.partial = append([]byte(nil), buf...)
	}
	return nil
}

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
		code, reason := closeNormal, ""
		if len(payload) == 1 {
			return protocolErr(closeProtocol, "protocol_error", "close frame with a one-byte body")
		}
		if len(payload) >= 2 {
			sc, text := ws.ParseCloseFrameData(payload)
			if err := ws.CheckCloseFrameData(sc, text); err != nil {
				if !utf8.ValidString(text) {
					return protocolErr(closeInvalidData, "invalid_utf8", err.Error())
				}
				return protocolErr(closeProtocol, "protocol_error", err.Error())
			}
			code, reason = int(sc), text
			_ = reason
		}
		s.c.Close(conn.Reason{Code: "peer_closing", Message: "", WSCode: uint16(code)})
		return nil
	}
	// Data frames.
	if h.OpCode != ws.OpContinuation {
		s.msgOp = h.OpCode
	}
	if !h.Fin || s.fragmented {
		if len(s.message)+len(payload) > s.h.env.MaxMessageSize+1024 {
			return protocolErr(closeTooBig, "message_too_large", "message exceeds the maximum message size")
		}
		s.message = append(s.message, payload...)
		s.fragmented = !h.Fin
		if !h.Fin {
			return nil
		}
		payload = s.message
		s.message = nil
	}
	if s.msgOp != ws.OpText {
		return protocolErr(closeUnsupported, "unsupported_data", "commands are JSON text frames")
	}
	if !utf8.Valid(payload) {
		return protocolErr(closeInvalidData, "invalid_utf8", "text frame is not valid UTF-8")
	}
	cmd, err := DecodeCommand(payload)
	if err != nil {
		s.c.Send(s.errorReply(cmd.ID, transport.BadRequest("bad_command", err)))
		return nil
	}
	return s.enqueueCommand(cmd)
}

func (s *session) enqueueCommand(cmd Command) error {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	if len(s.cmds) >= maxPendingCommands {
		return protocolErr(closePolicy, "too_many_commands", "too many commands waiting for replies")
	}
	s.cmds = append(s.cmds, cmd)
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
		cmd := s.cmds[0]
		s.cmds = s.cmds[1:]
		s.cmdMu.Unlock()
		s.run(cmd)
	}
}

// Heartbeat is an empty ping.
func (s *session) Heartbeat(dst []byte) []byte { return append(dst, 0x89, 0x00) }

// Goodbye is a close frame carrying the reason.
func (s *session) Goodbye(dst []byte, reason conn.Reason) []byte {
	code := reason.WSCode
	if code == 0 {
		code = closeNormal
	}
	text := reason.Code
	if reason.Code == "peer_closing" {
		text = ""
	} else if reason.Message != "" {
		text += ": " + reason.Message
	}
	if len(text) > 123 {
		text = text[:123]
		for !utf8.ValidString(text) {
			text = text[:len(text)-1]
		}
	}
	return appendFrame(dst, ws.OpClose, ws.NewCloseFrameBody(ws.StatusCode(code), text))
}

func (s *session) Closed(*conn.Conn, conn.Reason) {
	s.subs.Close()
	s.h.env.Observer.Connected("ws", -1)
}

// Render writes a frame, or a reply.
func (s *session) Render(dst []byte, it *conn.Item) ([]byte, bool) {
	if u, ok := it.Note.(unsubscribed); ok {
		s.tracker.Remove(string(u))
	}
	f := it.Frame
	if f == nil {
		return append(dst, it.Raw...), false
	}
	s.tracker.Update(f)
	if f.Kind == hub.KindStart {
		s.replyMu.Lock()
		id, ok := s.pendingReply[f.Msg.Channel]
		delete(s.pendingReply, f.Msg.Channel)
		s.replyMu.Unlock()
		if !ok {
			return dst, false
		}
		return appendFrame(dst, ws.OpText, subscribeReply(id, f)), false
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

func subscribeReply(id json.RawMessage, f *hub.Frame) []byte {
	b := []byte(`{"id":`)
	b = append(b, id...)
	b = append(b, `,"ok":true,"channel":"`...)
	b = append(b, f.Msg.Channel...)
	b = append(b, `","epoch":"`...)
	b = append(b, f.Msg.Epoch...)
	b = append(b, `","offset":`...)
	b = strconv.AppendUint(b, f.Msg.Offset, 10)
	b = append(b, `,"cursor":"`...)
	b = append(b, f.Cursor...)
	return append(b, `"}`...)
}
