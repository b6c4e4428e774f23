package hub_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/crier-push/crier/internal/hub"
)

// envelope is the contract's envelope (SPEC section 2) as a client parses it.
type envelope struct {
	Channel     string          `json:"channel"`
	Offset      uint64          `json:"offset"`
	Epoch       string          `json:"epoch"`
	Time        string          `json:"time"`
	Event       string          `json:"event"`
	Data        json.RawMessage `json:"data"`
	Encoding    string          `json:"encoding"`
	ContentType string          `json:"content_type"`
	Cursor      string          `json:"cursor"`
}

// parseEnvelope parses b strictly: UTF-8, valid JSON, no field outside the contract.
func parseEnvelope(t testing.TB, b []byte) envelope {
	t.Helper()
	if !utf8.Valid(b) {
		t.Fatalf("envelope is not UTF-8: %q", b)
	}
	if !json.Valid(b) {
		t.Fatalf("envelope is not valid JSON: %q", b)
	}
	var e envelope
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("decode envelope %q: %v", b, err)
	}
	return e
}

// jsonSpace is JSON's insignificant whitespace, which a parser drops around a value.
const jsonSpace = " \t\r\n"

// checkPayload asserts that the envelope carries data exactly as published, as kind says.
func checkPayload(t testing.TB, env []byte, e envelope, contentType string, data []byte) {
	t.Helper()
	switch kind := hub.DataKind(contentType, data); kind {
	case hub.DataJSON:
		if e.Encoding != "" || e.ContentType != "" {
			t.Fatalf("JSON payload with encoding %q content_type %q", e.Encoding, e.ContentType)
		}
		// Embedded byte for byte, surrounding whitespace included.
		if !bytes.Contains(env, append(append([]byte(`"data":`), data...), `,"cursor":"`...)) {
			t.Fatalf("JSON payload %q not embedded as-is in %q", data, env)
		}
		if got, want := []byte(e.Data), bytes.Trim(data, jsonSpace); !bytes.Equal(got, want) {
			t.Fatalf("data = %q, want %q", got, want)
		}
	case hub.DataText:
		if e.Encoding != "" || e.ContentType != "" {
			t.Fatalf("text payload with encoding %q content_type %q", e.Encoding, e.ContentType)
		}
		var s string
		if err := json.Unmarshal(e.Data, &s); err != nil {
			t.Fatalf("text data %s is not a JSON string: %v", e.Data, err)
		}
		if s != string(data) {
			t.Fatalf("text data = %q, want %q", s, data)
		}
	case hub.DataBinary:
		if e.Encoding != "base64" {
			t.Fatalf("binary payload with encoding %q", e.Encoding)
		}
		want := contentType
		if want == "" {
			want = "application/octet-stream"
		}
		if utf8.ValidString(want) && e.ContentType != want {
			t.Fatalf("content_type = %q, want %q", e.ContentType, want)
		}
		var s string
		if err := json.Unmarshal(e.Data, &s); err != nil {
			t.Fatalf("binary data %s is not a JSON string: %v", e.Data, err)
		}
		if s != base64.StdEncoding.EncodeToString(data) {
			t.Fatalf("data %q is not padded standard base64 of the payload", s)
		}
		got, err := base64.StdEncoding.DecodeString(s)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("base64 data decodes to %q (%v), want %q", got, err, data)
		}
	default:
		t.Fatalf("DataKind = %d", kind)
	}
}

func TestEnvelopeSpecExample(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	f := hub.NewFrame(hub.Message{Channel: "chat:lobby", Epoch: "q7Rk2x", Offset: 42,
		Time: time.Date(2026, 11, 23, 9, 0, 0, 123_999_999, cet), ContentType: "application/json",
		Data: []byte(`{"text":"hi"}`)})
	want := `{"channel":"chat:lobby","offset":42,"epoch":"q7Rk2x","time":"2026-11-23T08:00:00.123Z",` +
		`"event":"message","data":{"text":"hi"},"cursor":"chat:lobby@q7Rk2x:42"}`
	if got := string(f.SingleEnvelope()); got != want {
		t.Fatalf("envelope\n got %s\nwant %s", got, want)
	}
	if f.Cursor != "chat:lobby@q7Rk2x:42" {
		t.Fatalf("Cursor = %q", f.Cursor)
	}
	if f.Kind != hub.KindMessage {
		t.Fatalf("Kind = %d", f.Kind)
	}
}

func TestEnvelopePayloads(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		data        string
		kind        int
		rawData     string // the exact "data" value in the envelope, when set
	}{
		{"json object", "application/json", `{"text":"hi","n":[1,2.5e3,null,true]}`, hub.DataJSON, `{"text":"hi","n":[1,2.5e3,null,true]}`},
		{"json kept as published", "application/json", "{ \"b\" : 1 ,\n \"a\":\"\\u00e9\" }", hub.DataJSON, "{ \"b\" : 1 ,\n \"a\":\"\\u00e9\" }"},
		{"json surrounding space", "application/json", " [1, 2]\n", hub.DataJSON, "[1, 2]"}, // embedded with its spaces (checkPayload)
		{"json scalar", "application/json", `"just a string"`, hub.DataJSON, `"just a string"`},
		{"json charset param", "application/json; charset=utf-8", `{"a":1}`, hub.DataJSON, `{"a":1}`},
		{"json upper case", "Application/JSON", `[]`, hub.DataJSON, `[]`},
		{"merge patch", "application/merge-patch+json", `{"a":null}`, hub.DataJSON, `{"a":null}`},
		{"vendor json", "application/vnd.api+json", `{"data":[]}`, hub.DataJSON, `{"data":[]}`},
		{"json raw U+2028", "application/json", "\"a\u2028b\"", hub.DataJSON, "\"a\u2028b\""},
		{"invalid json", "application/json", `{"a":`, hub.DataBinary, ""},
		{"two json values", "application/json", `{} {}`, hub.DataBinary, ""},
		{"empty json", "application/json", ``, hub.DataBinary, `""`},
		{"json with invalid utf-8", "application/json", "\"\xff\"", hub.DataBinary, ""},
		{"json with BOM", "application/json", "\ufeff{}", hub.DataBinary, ""},
		{"text", "text/plain; charset=utf-8", `say "hi"`, hub.DataText, `"say \"hi\""`},
		{"text escapes", "text/plain", "a\\b\n\r\t\x00\x1f\x7f/</script>", hub.DataText, `"a\\b\n\r\t\u0000\u001f` + "\x7f" + `/</script>"`},
		{"text line separators", "text/plain", "x\u2028y\u2029z", hub.DataText, `"x\u2028y\u2029z"`},
		{"text unicode", "text/markdown", "héllo 🌍 日本", hub.DataText, `"héllo 🌍 日本"`},
		{"text looks like json", "text/plain", `{"a":1}`, hub.DataText, `"{\"a\":1}"`},
		{"empty text", "text/plain", ``, hub.DataText, `""`},
		{"text us-ascii", "text/plain; charset=US-ASCII", `ok`, hub.DataText, `"ok"`},
		{"text not utf-8", "text/plain", "caf\xe9", hub.DataBinary, ""},
		{"text other charset", "text/plain; charset=iso-8859-1", "plain ascii", hub.DataBinary, ""},
		{"text truncated rune", "text/plain", "\xe2\x80", hub.DataBinary, ""},
		{"binary", "image/png", "\x89PNG\r\n\x1a\n\x00\xff", hub.DataBinary, `"iVBORw0KGgoA/w=="`},
		{"binary padding", "application/octet-stream", "ab", hub.DataBinary, `"YWI="`},
		{"no content type", "", `{"a":1}`, hub.DataBinary, ""},
		{"odd content type", "x/\"y\"\n\xff", "z", hub.DataBinary, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hub.DataKind(tt.contentType, []byte(tt.data)); got != tt.kind {
				t.Fatalf("DataKind(%q, %q) = %d, want %d", tt.contentType, tt.data, got, tt.kind)
			}
			f := hub.NewFrame(hub.Message{Channel: "c", Epoch: "E", Offset: 7, Time: time.Unix(0, 0),
				ContentType: tt.contentType, Data: []byte(tt.data)})
			env := f.SingleEnvelope()
			e := parseEnvelope(t, env)
			checkPayload(t, env, e, tt.contentType, []byte(tt.data))
			if tt.rawData != "" && string(e.Data) != tt.rawData {
				t.Fatalf("data = %s, want %s", e.Data, tt.rawData)
			}
			if bytes.Contains(env, []byte("\u2028")) && tt.kind != hub.DataJSON {
				t.Fatalf("raw U+2028 in envelope %q", env)
			}
			if e.Event != "message" || e.Cursor != "c@E:7" || e.Time != "1970-01-01T00:00:00.000Z" {
				t.Fatalf("envelope fields: %+v", e)
			}
		})
	}
}

func TestEnvelopeFields(t *testing.T) {
	tests := []struct {
		name  string
		msg   hub.Message
		event string
		time  string
	}{
		{"default event", hub.Message{Channel: "news", Epoch: "a1", Offset: 1, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
			"message", "2026-01-02T03:04:05.000Z"},
		{"custom event", hub.Message{Channel: "news", Epoch: "a1", Offset: 1, Event: "score.update", Time: time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC)},
			"score.update", "2026-01-02T03:04:05.999Z"},
		{"zone converted to UTC", hub.Message{Channel: "x", Epoch: "a", Offset: 2, Time: time.Date(2026, 1, 1, 0, 30, 0, 5_000_000, time.FixedZone("", -5*3600))},
			"message", "2026-01-01T05:30:00.005Z"},
		{"largest offset", hub.Message{Channel: "A-z_0.9:=~", Epoch: "Z-_9", Offset: 1<<64 - 1, Time: time.Unix(1, 0)},
			"message", "1970-01-01T00:00:01.000Z"},
		{"offset zero", hub.Message{Channel: "x", Epoch: "e", Offset: 0, Time: time.Unix(1, 0)},
			"message", "1970-01-01T00:00:01.000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.msg.ContentType, tt.msg.Data = "application/json", []byte(`1`)
			f := hub.NewFrame(tt.msg)
			e := parseEnvelope(t, f.SingleEnvelope())
			m := tt.msg
			if e.Channel != m.Channel || e.Epoch != m.Epoch || e.Offset != m.Offset {
				t.Fatalf("position fields %+v, want %s %s %d", e, m.Channel, m.Epoch, m.Offset)
			}
			if e.Event != tt.event || e.Time != tt.time {
				t.Fatalf("event %q time %q, want %q %q", e.Event, e.Time, tt.event, tt.time)
			}
			if _, err := time.Parse(time.RFC3339, e.Time); err != nil {
				t.Fatalf("time %q is not RFC 3339: %v", e.Time, err)
			}
			wantCursor := fmt.Sprintf("%s@%s:%d", m.Channel, m.Epoch, m.Offset)
			if e.Cursor != wantCursor || f.Cursor != wantCursor {
				t.Fatalf("cursor %q / %q, want %q", e.Cursor, f.Cursor, wantCursor)
			}
		})
	}
}

func TestAppendEnvelopeCursor(t *testing.T) {
	f := hub.NewFrame(hub.Message{Channel: "b", Epoch: "E", Offset: 3, ContentType: "text/plain", Data: []byte("x")})
	prefix := []byte("data: ")
	cursor := "a@F:10,b@E:3"
	out := f.AppendEnvelope(append([]byte(nil), prefix...), []byte(cursor))
	if !bytes.HasPrefix(out, prefix) {
		t.Fatalf("AppendEnvelope lost dst: %q", out)
	}
	e := parseEnvelope(t, out[len(prefix):])
	if e.Cursor != cursor || e.Channel != "b" || e.Offset != 3 {
		t.Fatalf("envelope %+v", e)
	}
	// The shared parts are untouched by per-subscriber cursors.
	if got := parseEnvelope(t, f.SingleEnvelope()).Cursor; got != "b@E:3" {
		t.Fatalf("single cursor = %q", got)
	}
}

func TestFrameEncodedCache(t *testing.T) {
	f := hub.NewFrame(hub.Message{Channel: "c", Epoch: "E", Offset: 1, ContentType: "text/plain", Data: []byte("x")})
	a, b := f.SingleEnvelope(), f.SingleEnvelope()
	if &a[0] != &b[0] {
		t.Fatal("SingleEnvelope is not cached")
	}
	var fs hub.Formats
	id := fs.Register()
	if id == 0 {
		t.Fatal("Register handed out the envelope's slot")
	}
	var calls atomic.Int32
	enc := func(f *hub.Frame) []byte { calls.Add(1); return []byte("sse:" + f.Cursor) }
	for range 3 {
		if got := string(f.Encoded(id, enc)); got != "sse:c@E:1" {
			t.Fatalf("Encoded = %q", got)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("encoder called %d times", calls.Load())
	}
	seen := map[int]bool{0: true, id: true}
	for range hub.MaxFormats - 2 {
		id := fs.Register()
		if seen[id] || id >= hub.MaxFormats {
			t.Fatalf("Register returned %d again or out of range", id)
		}
		seen[id] = true
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Register past MaxFormats did not panic")
		}
	}()
	fs.Register()
}

func FuzzEnvelope(f *testing.F) {
	f.Add("application/json", []byte(`{"a":[1,"x"]}`), "")
	f.Add("application/json", []byte("\"\xff\""), "ev")
	f.Add("application/merge-patch+json", []byte(` null `), "")
	f.Add("text/plain; charset=utf-8", []byte("q\"\\\n\u2028\x00"), "")
	f.Add("text/plain", []byte("\xc3"), "")
	f.Add("text/html; charset=latin1", []byte("abc"), "")
	f.Add("image/jpeg", []byte{0xff, 0xd8, 0x00}, "")
	f.Add("", []byte{}, "")
	f.Add("a\xff\"/\x01", []byte("1"), "x\"y")
	f.Fuzz(func(t *testing.T, contentType string, data []byte, event string) {
		m := hub.Message{Channel: "fuzz:ch", Epoch: "Ep0ch", Offset: 12, Time: time.Unix(1_700_000_000, 123_456_789),
			Event: event, ContentType: contentType, Data: data}
		f := hub.NewFrame(m)
		env := f.SingleEnvelope()
		e := parseEnvelope(t, env)
		checkPayload(t, env, e, contentType, data)
		wantEvent := event
		if wantEvent == "" {
			wantEvent = "message"
		}
		if utf8.ValidString(event) && e.Event != wantEvent {
			t.Fatalf("event = %q, want %q", e.Event, wantEvent)
		}
		if e.Channel != m.Channel || e.Offset != m.Offset || e.Epoch != m.Epoch || e.Cursor != "fuzz:ch@Ep0ch:12" ||
			e.Time != "2023-11-14T22:13:20.123Z" {
			t.Fatalf("envelope fields %+v", e)
		}
		// The per-subscriber form is valid too.
		parseEnvelope(t, f.AppendEnvelope(nil, []byte("a@b:1,fuzz:ch@Ep0ch:12")))
		if strings.Contains(string(env), "\u2028") && hub.DataKind(contentType, data) != hub.DataJSON {
			t.Fatalf("raw U+2028 outside a JSON payload: %q", env)
		}
	})
}
