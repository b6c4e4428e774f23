package transport

import (
	"errors"
	"net/url"
	"testing"

	"github.com/crier-push/crier/internal/channel"
)

func TestSubscribeParams(t *testing.T) {
	tests := []struct {
		name, query, lastEventID string
		want                     string // targets as a cursor, "-" for a live channel
		code                     string // error code, "" for success
	}{
		{name: "live", query: "channel=a&channel=b", want: "a@-,b@-"},
		{name: "duplicate channel once", query: "channel=a&channel=a", want: "a@-"},
		{name: "since", query: "channel=a&since=E:4", want: "a@E:4"},
		{name: "cursor", query: "cursor=a@E:1,b@F:2", want: "a@E:1,b@F:2"},
		{name: "cursor plus new channel", query: "cursor=a@E:1&channel=a&channel=c", want: "a@E:1,c@-"},
		{name: "last-event-id wins over since", query: "channel=a&since=E:1", lastEventID: "a@E:9", want: "a@E:9"},
		{name: "last-event-id wins over cursor", query: "cursor=a@E:1", lastEventID: "a@E:7", want: "a@E:7"},
		{name: "nothing", query: "", want: ""},
		{name: "cursor and since", query: "cursor=a@E:1&since=E:1&channel=a", code: "bad_request"},
		{name: "since with two channels", query: "channel=a&channel=b&since=E:1", code: "bad_request"},
		{name: "since without channel", query: "since=E:1", code: "bad_request"},
		{name: "bad since", query: "channel=a&since=nope", code: "invalid_position"},
		{name: "bad cursor", query: "cursor=a@E", code: "invalid_cursor"},
		{name: "bad last-event-id", query: "channel=a", lastEventID: "garbage", code: "invalid_cursor"},
		{name: "bad channel", query: "channel=a%20b", code: "invalid_channel"},
		{name: "too many", query: "channel=a&channel=b&channel=c&channel=d", code: "too_many_channels"},
		{name: "too many through the cursor", query: "cursor=a@E:1,b@E:1,c@E:1,d@E:1", code: "too_many_channels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			targets, err := SubscribeParams(q, tt.lastEventID, 3)
			if tt.code != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != tt.code || e.Status != 400 {
					t.Fatalf("err = %v, want a 400 %s", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := targetsString(targets); got != tt.want {
				t.Errorf("targets = %q, want %q", got, tt.want)
			}
		})
	}
}

func targetsString(targets []Target) string {
	s := ""
	for i, t := range targets {
		if i > 0 {
			s += ","
		}
		s += t.Channel + "@"
		if t.Since == nil {
			s += "-"
		} else {
			s += t.Since.String()
		}
	}
	return s
}

// FuzzSubscribeParams: any query either fails with a 400 API error or yields at most
// maxChannels valid, distinct channels.
func FuzzSubscribeParams(f *testing.F) {
	for _, s := range []string{"channel=a", "channel=a&since=E:1", "cursor=a@E:1,b@F:2&channel=c", "cursor=%00", "channel=&since=:"} {
		f.Add(s, "")
	}
	f.Add("channel=a&since=E:1", "a@E:2")
	f.Fuzz(func(t *testing.T, query, lastEventID string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		targets, err := SubscribeParams(q, lastEventID, 5)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status != 400 {
				t.Fatalf("error %v is not a 400 API error", err)
			}
			return
		}
		if len(targets) > 5 {
			t.Fatalf("%d targets past the limit", len(targets))
		}
		seen := map[string]bool{}
		for _, tg := range targets {
			if !channel.ValidName(tg.Channel) || seen[tg.Channel] {
				t.Fatalf("bad or repeated channel %q", tg.Channel)
			}
			seen[tg.Channel] = true
		}
	})
}
