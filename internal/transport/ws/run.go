package ws

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/gobwas/ws"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// run carries out one command and queues its reply.
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
	case "auth", "ping":
		s.reply(cmd.ID, nil)
	}
	if err != nil {
		s.c.Send(s.errorReply(cmd.ID, err))
	}
}

func (s *session) subscribe(ctx context.Context, cmd Command) error {
	if err := channel.CheckName(cmd.Channel); err != nil {
		return transport.BadRequest("invalid_channel", err)
	}
	var since *channel.Position
	if cmd.Since != "" {
		p, err := channel.ParsePosition(cmd.Since)
		if err != nil {
			return transport.BadRequest("invalid_position", err)
		}
		since = &p
	}
	if s.subs.Has(cmd.Channel) {
		return transport.Errorf(http.StatusConflict, "already_subscribed", "already subscribed to "+cmd.Channel)
	}
	if max := s.h.env.MaxChannels; max > 0 && s.subs.Len() >= max {
		return transport.Errorf(http.StatusBadRequest, "too_many_channels", fmt.Sprintf("at most %d channels per connection", max))
	}
	if len(cmd.ID) > 0 {
		s.replyMu.Lock()
		s.pendingReply[cmd.Channel] = cmd.ID
		s.replyMu.Unlock()
	}
	ok, err := s.subs.Subscribe(ctx, s.h.env.Hub, hub.SubscribeRequest{Channel: cmd.Channel, Since: since, Sink: s.c, Client: s.client})
	if err != nil || !ok {
		s.replyMu.Lock()
		delete(s.pendingReply, cmd.Channel)
		s.replyMu.Unlock()
	}
	if err != nil {
		return err
	}
	if !ok {
		return transport.Errorf(http.StatusConflict, "already_subscribed", "already subscribed to "+cmd.Channel)
	}
	return nil
}

func (s *session) unsubscribe(cmd Command) error {
	if !s.subs.Unsubscribe(cmd.Channel) {
		return transport.Errorf(http.StatusNotFound, "not_subscribed", "not subscribed to "+cmd.Channel)
	}
	b := s.replyBytes(cmd.ID, map[string]any{"channel": cmd.Channel})
	s.c.Enqueue(conn.Item{Raw: b, Note: unsubscribed(cmd.Channel)})
	return nil
}

func (s *session) publish(ctx context.Context, cmd Command) error {
	if len(cmd.Data) == 0 {
		return transport.BadRequest("bad_command", fmt.Errorf(`publish needs "data"`))
	}
	if len(cmd.Data) > s.h.env.MaxMessageSize {
		return transport.Errorf(http.StatusRequestEntityTooLarge, "message_too_large",
			fmt.Sprintf("data is larger than %d bytes", s.h.env.MaxMessageSize))
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
	s.reply(cmd.ID, map[string]any{"channel": m.Channel, "offset": m.Offset, "epoch": m.Epoch,
		"cursor": m.Channel + "@" + m.Position().String()})
	return nil
}

func (s *session) history(ctx context.Context, cmd Command) error {
	var since *channel.Position
	if cmd.Since != "" {
		p, err := channel.ParsePosition(cmd.Since)
		if err != nil {
			return transport.BadRequest("invalid_position", err)
		}
		since = &p
	}
	limit := cmd.Limit
	if limit == 0 || limit > 1000 {
		limit = 1000
	}
	h, err := s.h.env.Hub.History(ctx, cmd.Channel, since, limit)
	if err != nil {
		return err
	}
	msgs := make([]json.RawMessage, len(h.Messages))
	for i := range h.Messages {
		msgs[i] = hub.NewFrame(h.Messages[i]).SingleEnvelope()
	}
	out := map[string]any{"messages": msgs, "epoch": h.Epoch, "offset": h.Offset}
	if h.Gap {
		out["gap"] = true
	}
	s.reply(cmd.ID, out)
	return nil
}

func (s *session) presence(ctx context.Context, cmd Command) error {
	clients, err := s.h.env.Hub.Presence(ctx, cmd.Channel)
	if err != nil {
		return err
	}
	s.reply(cmd.ID, map[string]any{"clients": clients})
	return nil
}

// reply queues {"id":…,"ok":true, …fields}.
func (s *session) reply(id json.RawMessage, fields map[string]any) {
	s.c.Send(s.replyBytes(id, fields))
}

func (s *session) replyBytes(id json.RawMessage, fields map[string]any) []byte {
	if fields == nil {
		fields = map[string]any{}
	}
	if len(id) > 0 {
		fields["id"] = id
	}
	fields["ok"] = true
	b, _ := json.Marshal(fields)
	return appendFrame(nil, ws.OpText, b)
}

func (s *session) errorReply(id json.RawMessage, err error) []byte {
	e := transport.AsError(err)
	out := map[string]any{"ok": false, "error": map[string]string{"code": e.Code, "message": e.Message}}
	if len(id) > 0 {
		out["id"] = id
	}
	b, _ := json.Marshal(out)
	return appendFrame(nil, ws.OpText, b)
}
