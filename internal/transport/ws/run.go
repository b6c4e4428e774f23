package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// run carries out one command, valid as DecodeCommand made it, and queues its reply.
func (s *session) run(cmd Command) {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.env.SubscribeTimeout)
	defer cancel()
	var err error
	switch cmd.Op {
	case "subscribe":
		err = s.subscribe(ctx, cmd)
	case "unsubscribe":
		err = s.unsubscribe(cmd)
	case "publish":
		err = s.publish(ctx, cmd)
	case "history":
		err = s.history(ctx, cmd)
	case "presence":
		err = s.presence(ctx, cmd)
	case "auth":
		err = s.authenticate(ctx, cmd)
	case "ping":
		s.reply(cmd.ID)
	default:
		err = badCommand("unknown op %q", truncate(cmd.Op, 32))
	}
	if err != nil {
		s.c.Send(s.errorReply(cmd.ID, err))
	}
}

func alreadySubscribed(name string) error {
	return transport.Errorf(http.StatusConflict, "already_subscribed", "already subscribed to "+name)
}

func (s *session) subscribe(ctx context.Context, cmd Command) error {
	since, err := parseSince(cmd.Since)
	if err != nil {
		return err
	}
	if err := s.may((*auth.Identity).CheckSubscribe, cmd.Channel); err != nil {
		return err
	}
	if s.subs.Has(cmd.Channel) {
		return alreadySubscribed(cmd.Channel)
	}
	if max := s.h.env.MaxChannels; max > 0 && s.subs.Len() >= max {
		// As SubscribeParams answers the same limit on the query.
		return transport.Errorf(http.StatusBadRequest, "too_many_channels", fmt.Sprintf("at most %d channels per connection", max))
	}
	// The reply is the subscription's start frame, rendered: it follows whatever was queued
	// before and precedes the subscription's first message.
	k := &sink{c: s.c, id: cmd.ID}
	ok, err := s.subs.Subscribe(ctx, s.h.env.Hub, hub.SubscribeRequest{Channel: cmd.Channel, Since: since, Sink: k, Client: s.client})
	if err != nil {
		return err
	}
	if !ok {
		return alreadySubscribed(cmd.Channel)
	}
	return nil
}

func parseSince(text string) (*channel.Position, error) {
	if text == "" {
		return nil, nil
	}
	p, err := channel.ParsePosition(text)
	if err != nil {
		return nil, transport.BadRequest("invalid_position", err)
	}
	return &p, nil
}

func (s *session) unsubscribe(cmd Command) error {
	if !s.subs.Unsubscribe(cmd.Channel) {
		return transport.Errorf(http.StatusNotFound, "not_subscribed", "not subscribed to "+cmd.Channel)
	}
	b := replyBytes(cmd.ID, member{"channel", jsonValue(cmd.Channel)})
	s.c.Enqueue(conn.Item{Raw: b, Note: unsubscribed(cmd.Channel)})
	return nil
}

func (s *session) publish(ctx context.Context, cmd Command) error {
	if len(cmd.Data) > s.h.env.MaxMessageSize {
		return transport.Errorf(http.StatusRequestEntityTooLarge, "message_too_large",
			fmt.Sprintf("data is larger than %d bytes", s.h.env.MaxMessageSize))
	}
	if err := s.may((*auth.Identity).CheckPublish, cmd.Channel); err != nil {
		return err
	}
	if n, retry := s.h.env.PublishRate.Allow(s.identity(), s.clientKey, 1); n < 1 {
		secs := max(1, int64((retry+time.Second-1)/time.Second))
		return transport.Errorf(http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("publishing faster than this server allows; retry in %d s", secs))
	}
	res, err := s.h.env.Hub.Publish(ctx, []hub.Publication{{Channel: cmd.Channel, Event: cmd.Event,
		ContentType: "application/json", Data: []byte(cmd.Data)}})
	if err != nil {
		return err
	}
	if res[0].Err != nil {
		return res[0].Err
	}
	m := res[0].Message
	s.reply(cmd.ID, member{"channel", jsonValue(m.Channel)}, member{"offset", jsonValue(m.Offset)},
		member{"epoch", jsonValue(m.Epoch)}, member{"cursor", jsonValue(m.Channel + "@" + m.Position().String())})
	return nil
}

// defaultHistoryLimit is the history op's limit when none is given, as over HTTP.
const defaultHistoryLimit = 100

func (s *session) history(ctx context.Context, cmd Command) error {
	since, err := parseSince(cmd.Since)
	if err != nil {
		return err
	}
	if err := s.may((*auth.Identity).CheckSubscribe, cmd.Channel); err != nil {
		return err
	}
	limit := cmd.Limit
	if limit <= 0 {
		limit = defaultHistoryLimit
	}
	h, err := s.h.env.Hub.History(ctx, cmd.Channel, since, min(limit, maxHistoryLim))
	if err != nil {
		return err
	}
	msgs := []byte{'['}
	for i := range h.Messages {
		if i > 0 {
			msgs = append(msgs, ',')
		}
		msgs = append(msgs, hub.NewFrame(h.Messages[i]).SingleEnvelope()...)
	}
	msgs = append(msgs, ']')
	results := []member{{"messages", msgs}, {"epoch", jsonValue(h.Epoch)}, {"offset", jsonValue(h.Offset)}}
	if h.Gap {
		results = append(results, member{"gap", []byte("true")})
	}
	s.reply(cmd.ID, results...)
	return nil
}

func (s *session) presence(ctx context.Context, cmd Command) error {
	if err := s.may((*auth.Identity).CheckSubscribe, cmd.Channel); err != nil {
		return err
	}
	clients, err := s.h.env.Hub.Presence(ctx, cmd.Channel)
	if err != nil {
		return err
	}
	s.reply(cmd.ID, member{"clients", jsonValue(clients)})
	return nil
}

// reasonExpired closes a connection whose token has expired: 1008 "token_expired: …".
var reasonExpired = transport.ReasonTokenExpired

// identity returns the connection's identity.
func (s *session) identity() *auth.Identity {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.id
}

// may checks one right of the connection's identity on a channel; without an authorizer
// (tests, embedded use) everything is allowed.
func (s *session) may(check func(*auth.Identity, string) error, ch string) error {
	if s.h.env.Auth == nil {
		return nil
	}
	if err := check(s.identity(), ch); err != nil {
		return transport.AuthError(err)
	}
	return nil
}

// setIdentity makes id the connection's identity, and closes the connection when it expires.
func (s *session) setIdentity(id *auth.Identity) {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	s.id = id
	s.armLocked(id)
}

// armLocked sets the timer that closes the connection when id expires, in place of any other.
// The caller holds idMu.
func (s *session) armLocked(id *auth.Identity) {
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	exp := id.Expires()
	if exp.IsZero() || s.idEnded {
		return
	}
	s.expiry = time.AfterFunc(time.Until(exp), func() {
		s.idMu.Lock()
		current := s.id == id
		s.idMu.Unlock()
		if current {
			s.c.Close(reasonExpired)
		}
	})
}

// authenticate is the auth op: the token, an API key or a JWT, becomes the connection's
// identity, provided it may read every channel the connection follows.
func (s *session) authenticate(ctx context.Context, cmd Command) error {
	a := s.h.env.Auth
	if a == nil {
		s.reply(cmd.ID)
		return nil
	}
	id, err := a.AuthenticateToken(ctx, cmd.Token)
	if err != nil {
		return transport.AuthError(err)
	}
	for _, ch := range s.subs.Names() {
		if err := id.CheckSubscribe(ch); err != nil {
			e := transport.AuthError(err)
			e.Message = "the new token may not read " + ch + ", which this connection follows (" + e.Message + "); unsubscribe first"
			return e
		}
	}
	s.setIdentity(id)
	s.reply(cmd.ID)
	return nil
}

// A reply is built by hand rather than with encoding/json, which would compact and HTML-escape
// the raw JSON it holds: the id is echoed verbatim and a history's bodies go out as published.

// member is one result beside id and ok: a name and its JSON value.
type member struct {
	name  string
	value []byte
}

// jsonValue encodes v without HTML escaping.
func jsonValue(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return []byte("null")
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// reply queues {"id":…,"ok":true, …results}.
func (s *session) reply(id json.RawMessage, results ...member) {
	s.c.Send(replyBytes(id, results...))
}

func replyBytes(id json.RawMessage, results ...member) []byte {
	b := make([]byte, 0, 64)
	b = append(b, '{')
	if len(id) > 0 {
		b = append(b, `"id":`...)
		b = append(b, id...)
		b = append(b, ',')
	}
	b = append(b, `"ok":true`...)
	for _, m := range results {
		b = append(b, ',', '"')
		b = append(b, m.name...)
		b = append(b, '"', ':')
		b = append(b, m.value...)
	}
	b = append(b, '}')
	return appendFrame(make([]byte, 0, len(b)+ws.MaxHeaderSize), ws.OpText, b)
}

// errorReply is {"id":…,"ok":false,"error":{"code","message"}}.
func (s *session) errorReply(id json.RawMessage, err error) []byte {
	e := transport.AsError(err)
	b := make([]byte, 0, 64+len(e.Message))
	b = append(b, '{')
	if len(id) > 0 {
		b = append(b, `"id":`...)
		b = append(b, id...)
		b = append(b, ',')
	}
	b = append(b, `"ok":false,"error":{"code":`...)
	b = append(b, jsonValue(e.Code)...)
	b = append(b, `,"message":`...)
	b = append(b, jsonValue(e.Message)...)
	b = append(b, '}', '}')
	return appendFrame(nil, ws.OpText, b)
}
