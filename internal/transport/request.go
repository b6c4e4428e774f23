package transport

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/crier-push/crier/internal/channel"
)

// Target is one channel a subscriber asks for, and where to resume it.
type Target struct {
	Channel string
	Since   *channel.Position // nil: start live
}

// SubscribeParams parses the parameters every subscribe endpoint takes: channel= (repeatable),
// cursor=, and since= with one channel. lastEventID, SSE's Last-Event-ID, is a cursor that
// takes the place of both cursor= and since=: EventSource reconnects to the very URL it was
// given, so its cursor= or since= is where the first connection started, while Last-Event-ID is
// where the last one ended.
func SubscribeParams(q url.Values, lastEventID string, maxChannels int) ([]Target, error) {
	names := q["channel"]
	cursorText := q.Get("cursor")
	sinceText := q.Get("since")
	if cursorText != "" && sinceText != "" {
		return nil, BadRequest("bad_request", fmt.Errorf("give cursor or since, not both"))
	}
	if lastEventID != "" {
		cursorText, sinceText = lastEventID, ""
	}
	var targets []Target
	seen := make(map[string]bool, len(names))
	add := func(name string, since *channel.Position) error {
		if err := channel.CheckName(name); err != nil {
			return BadRequest("invalid_channel", err)
		}
		if seen[name] {
			return nil
		}
		seen[name] = true
		targets = append(targets, Target{Channel: name, Since: since})
		return nil
	}
	switch {
	case sinceText != "":
		if len(names) != 1 {
			return nil, BadRequest("bad_request", fmt.Errorf("since= needs exactly one channel="))
		}
		pos, err := channel.ParsePosition(sinceText)
		if err != nil {
			return nil, BadRequest("invalid_position", err)
		}
		if err := add(names[0], &pos); err != nil {
			return nil, err
		}
	case cursorText != "":
		cur, err := channel.ParseCursor(cursorText)
		if err != nil {
			return nil, BadRequest("invalid_cursor", err)
		}
		for _, e := range cur {
			if err := add(e.Channel, &e.Position); err != nil {
				return nil, err
			}
		}
		for _, n := range names {
			if err := add(n, nil); err != nil {
				return nil, err
			}
		}
	default:
		for _, n := range names {
			if err := add(n, nil); err != nil {
				return nil, err
			}
		}
	}
	if maxChannels > 0 && len(targets) > maxChannels {
		// 400, not 403: the request asks for more than any client may, whoever it is; the
		// acceptance criteria of the HTTP transports name 400 for this case.
		return nil, Errorf(http.StatusBadRequest, "too_many_channels",
			fmt.Sprintf("at most %d channels per connection", maxChannels))
	}
	return targets, nil
}
