package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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

var ops = map[string]bool{"subscribe": true, "unsubscribe": true, "publish": true, "history": true,
	"presence": true, "auth": true, "ping": true}

var errNoOp = errors.New(`command needs "op"`)

// DecodeCommand parses a command frame. The id, when present, must be a number or a string
// (it is echoed back verbatim).
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return Command{ID: salvageID(b)}, fmt.Errorf("command is not a JSON object of known fields: %w", err)
	}
	if d.More() {
		return Command{ID: c.ID}, errors.New("one JSON object per frame")
	}
	if len(c.ID) > 0 {
		switch c.ID[0] {
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		default:
			return Command{}, errors.New(`"id" must be a number or a string`)
		}
		if len(c.ID) > 64 {
			return Command{}, errors.New(`"id" longer than 64 bytes`)
		}
	}
	switch {
	case c.Op == "":
		return c, errNoOp
	case !ops[c.Op]:
		return c, fmt.Errorf("unknown op %q", truncate(c.Op, 32))
	case c.Limit < 0:
		return c, errors.New(`"limit" must not be negative`)
	}
	return c, nil
}

// salvageID recovers the id of a command that failed to decode, so the error can carry it.
func salvageID(b []byte) json.RawMessage {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(b, &probe) != nil || len(probe.ID) == 0 || len(probe.ID) > 64 {
		return nil
	}
	if c := probe.ID[0]; c == '"' || c == '-' || (c >= '0' && c <= '9') {
		return probe.ID
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
