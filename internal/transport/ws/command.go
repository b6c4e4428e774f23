package ws

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Command is one client-to-server command.
type Command struct {
	ID      json.RawMessage `json:"id,omitempty"`
	Op      string          `json:"op"`
	Channel string          `json:"channel,omitempty"`
	Since   string          `json:"since,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Event   string          `json:"event,omitempty"`
	Limit   int             `json:"limit,omitempty"`
	Token   string          `json:"token,omitempty"`
}

// Limits of a command's fields beyond what the frame size already bounds.
const (
	maxIDLen      = 64
	maxTokenLen   = 8 << 10
	maxHistoryLim = 1000
)

// field is one of a command's fields, as a bit.
type field uint8

const (
	fID field = 1 << iota
	fOp
	fChannel
	fSince
	fData
	fEvent
	fLimit
	fToken
)

var fieldNames = map[string]field{"id": fID, "op": fOp, "channel": fChannel, "since": fSince,
	"data": fData, "event": fEvent, "limit": fLimit, "token": fToken}

func (f field) name() string {
	for n, b := range fieldNames {
		if b == f {
			return n
		}
	}
	return "?"
}

// opFields lists, per op, the fields it takes beside id and op, and those it requires.
var opFields = map[string]struct{ allowed, required field }{
	"subscribe":   {fChannel | fSince, fChannel},
	"unsubscribe": {fChannel, fChannel},
	"publish":     {fChannel | fData | fEvent, fChannel | fData},
	"history":     {fChannel | fSince | fLimit, fChannel},
	"presence":    {fChannel, fChannel},
	"auth":        {fToken, fToken},
	"ping":        {0, 0},
}

func badCommand(format string, args ...any) *transport.Error {
	return transport.Errorf(http.StatusBadRequest, "bad_command", fmt.Sprintf(format, args...))
}

// DecodeCommand parses and validates a command frame: one JSON object whose keys are the
// command's fields, spelled exactly, each at most once, and only those its op takes. The id, when
// present, must be a number or a string of at most 64 bytes; it is echoed back verbatim. On error
// the returned Command carries the id when it could be read, so that the error reply can too,
// and the error is a *transport.Error.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if !utf8.Valid(b) {
		return c, badCommand("command is not valid UTF-8")
	}
	type kv struct {
		f   field
		raw json.RawMessage
	}
	var members []kv
	var seen field
	var unknown *string
	d := json.NewDecoder(bytes.NewReader(b))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return c, badCommand("a command is one JSON object")
	}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return c, badCommand("command is not valid JSON: %v", err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return c, badCommand("command is not valid JSON: %v", err)
		}
		f, ok := fieldNames[key]
		switch {
		case !ok:
			if unknown == nil {
				unknown = &key
			}
			continue
		case seen&f != 0:
			return c, badCommand("field %q given twice", key)
		}
		seen |= f
		members = append(members, kv{f, raw})
	}
	if tok, err := d.Token(); err != nil || tok != json.Delim('}') {
		return c, badCommand("command is not valid JSON")
	}
	if rest := b[d.InputOffset():]; len(bytes.TrimLeft(rest, " \t\r\n")) > 0 {
		return c, badCommand("one JSON object per frame")
	}
	// The id first, so that every later error can carry it.
	for _, m := range members {
		if m.f != fID {
			continue
		}
		if !validID(m.raw) {
			return c, badCommand(`"id" must be a number or a string of at most %d bytes`, maxIDLen)
		}
		c.ID = m.raw
	}
	if unknown != nil {
		return c, badCommand("unknown field %q", truncate(*unknown, 32))
	}
	for _, m := range members {
		var err error
		switch m.f {
		case fOp:
			err = decodeString(m.raw, "op", &c.Op)
		case fChannel:
			err = decodeString(m.raw, "channel", &c.Channel)
		case fSince:
			err = decodeString(m.raw, "since", &c.Since)
		case fEvent:
			err = decodeString(m.raw, "event", &c.Event)
		case fToken:
			err = decodeString(m.raw, "token", &c.Token)
		case fData:
			c.Data = m.raw
		case fLimit:
			if len(m.raw) == 0 || m.raw[0] == 'n' || json.Unmarshal(m.raw, &c.Limit) != nil ||
				c.Limit < 1 || c.Limit > maxHistoryLim {
				return c, transport.Errorf(http.StatusBadRequest, "invalid_limit",
					fmt.Sprintf(`"limit" must be a whole number from 1 to %d`, maxHistoryLim))
			}
		}
		if err != nil {
			return c, err
		}
	}
	if seen&fOp == 0 {
		return c, badCommand(`command needs "op"`)
	}
	spec, ok := opFields[c.Op]
	if !ok {
		return c, badCommand("unknown op %q", truncate(c.Op, 32))
	}
	for f := fChannel; f != 0 && f <= fToken; f <<= 1 {
		switch {
		case seen&f != 0 && spec.allowed&f == 0:
			return c, badCommand("%s does not take %q", c.Op, f.name())
		case seen&f == 0 && spec.required&f != 0:
			return c, badCommand("%s needs %q", c.Op, f.name())
		}
	}
	if seen&fChannel != 0 {
		if err := channel.CheckName(c.Channel); err != nil {
			return c, transport.BadRequest("invalid_channel", err)
		}
	}
	if seen&fSince != 0 && c.Since != "" {
		if _, err := channel.ParsePosition(c.Since); err != nil {
			return c, transport.BadRequest("invalid_position", err)
		}
	}
	if seen&fEvent != 0 {
		if err := hub.CheckPublication(&hub.Publication{Channel: c.Channel, Event: c.Event}); err != nil {
			return c, transport.Errorf(http.StatusBadRequest, "invalid_event",
				strings.TrimPrefix(err.Error(), hub.ErrBadRequest.Error()+": "))
		}
	}
	if c.Op == "auth" && (c.Token == "" || len(c.Token) > maxTokenLen) {
		return c, badCommand(`"token" must be 1 to %d bytes`, maxTokenLen)
	}
	return c, nil
}

// validID reports whether raw, a JSON value, is a number or a string short enough to echo.
func validID(raw json.RawMessage) bool {
	if len(raw) == 0 || len(raw) > maxIDLen {
		return false
	}
	switch c := raw[0]; {
	case c == '"' || c == '-' || (c >= '0' && c <= '9'):
		return true
	}
	return false
}

func decodeString(raw json.RawMessage, name string, dst *string) error {
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, dst) != nil {
		return badCommand("%q must be a string", name)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
