package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

func TestDecodeCommandValid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Command
	}{
		{`{"op":"ping"}`, Command{Op: "ping"}},
		{` {"id":1,"op":"ping"} `, Command{ID: json.RawMessage(`1`), Op: "ping"}},
		{"{\"op\":\"ping\",\"id\":\"a\"}\r\n\t", Command{ID: json.RawMessage(`"a"`), Op: "ping"}},
		{`{"id":-1.5e3,"op":"ping"}`, Command{ID: json.RawMessage(`-1.5e3`), Op: "ping"}},
		{`{"id":"\u00e9\"x","op":"ping"}`, Command{ID: json.RawMessage(`"\u00e9\"x"`), Op: "ping"}},
		{`{"id":"` + strings.Repeat("x", 62) + `","op":"ping"}`, Command{ID: json.RawMessage(`"` + strings.Repeat("x", 62) + `"`), Op: "ping"}},
		{`{"id":1,"op":"subscribe","channel":"chat:lobby"}`, Command{ID: json.RawMessage(`1`), Op: "subscribe", Channel: "chat:lobby"}},
		{`{"op":"subscribe","channel":"a","since":"q7Rk2x:42"}`, Command{Op: "subscribe", Channel: "a", Since: "q7Rk2x:42"}},
		{`{"op":"subscribe","channel":"a","since":""}`, Command{Op: "subscribe", Channel: "a"}},
		{`{"op":"unsubscribe","channel":"a"}`, Command{Op: "unsubscribe", Channel: "a"}},
		{`{"op":"publish","channel":"a","data":{"x":[1,2]}}`, Command{Op: "publish", Channel: "a", Data: json.RawMessage(`{"x":[1,2]}`)}},
		{`{"op":"publish","channel":"a","data":"text","event":"note"}`, Command{Op: "publish", Channel: "a", Data: json.RawMessage(`"text"`), Event: "note"}},
		{`{"op":"publish","channel":"a","data":null}`, Command{Op: "publish", Channel: "a", Data: json.RawMessage(`null`)}},
		{`{"op":"history","channel":"a"}`, Command{Op: "history", Channel: "a"}},
		{`{"op":"history","channel":"a","since":"e:0","limit":1000}`, Command{Op: "history", Channel: "a", Since: "e:0", Limit: 1000}},
		{`{"op":"presence","channel":"a"}`, Command{Op: "presence", Channel: "a"}},
		{`{"op":"auth","token":"abc.def.ghi"}`, Command{Op: "auth", Token: "abc.def.ghi"}},
	} {
		got, err := DecodeCommand([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !sameCommand(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func sameCommand(a, b Command) bool {
	return string(a.ID) == string(b.ID) && a.Op == b.Op && a.Channel == b.Channel && a.Since == b.Since &&
		string(a.Data) == string(b.Data) && a.Event == b.Event && a.Limit == b.Limit && a.Token == b.Token
}

func TestDecodeCommandErrors(t *testing.T) {
	long := strings.Repeat("x", 200)
	for _, tc := range []struct {
		in, code, id, msg string // id: the id the error must carry ("" none)
	}{
		// Not one JSON object.
		{``, "bad_command", "", "JSON object"},
		{`   `, "bad_command", "", "JSON object"},
		{`null`, "bad_command", "", "JSON object"},
		{`[]`, "bad_command", "", "JSON object"},
		{`"ping"`, "bad_command", "", "JSON object"},
		{`1`, "bad_command", "", "JSON object"},
		{`{`, "bad_command", "", "JSON"},
		{`{"op":"ping"`, "bad_command", "", "JSON"},
		{`{"op":"ping",}`, "bad_command", "", "JSON"},
		{`{"op" "ping"}`, "bad_command", "", "JSON"},
		{`{"op":"ping" "id":1}`, "bad_command", "", "JSON"},
		{`{op:"ping"}`, "bad_command", "", "JSON"},
		{`{"op":"ping"}{"op":"ping"}`, "bad_command", "", "one JSON object"},
		{`{"op":"ping"}}`, "bad_command", "", "one JSON object"},
		{`{"op":"ping"}]`, "bad_command", "", "one JSON object"},
		{`{"op":"ping"} x`, "bad_command", "", "one JSON object"},
		{"{\"op\":\"\xff\"}", "bad_command", "", "UTF-8"},
		// Unknown and repeated fields; names are case-sensitive.
		{`{"id":7,"op":"ping","extra":1}`, "bad_command", "7", `unknown field "extra"`},
		{`{"id":7,"op":"ping","":1}`, "bad_command", "7", `unknown field ""`},
		{`{"extra":1,"id":7,"op":"ping"}`, "bad_command", "7", `unknown field "extra"`},
		{`{"id":7,"OP":"ping"}`, "bad_command", "7", `unknown field "OP"`},
		{`{"ID":7,"op":"ping"}`, "bad_command", "", `unknown field "ID"`},
		{`{"id":7,"op":"subscribe","Channel":"a"}`, "bad_command", "7", `unknown field "Channel"`},
		{`{"id":7,"op":"ping","` + long + `":1}`, "bad_command", "7", "unknown field"},
		{`{"id":7,"op":"ping","op":"ping"}`, "bad_command", "", `"op" given twice`},
		{`{"id":7,"id":8,"op":"ping"}`, "bad_command", "", `"id" given twice`},
		// id: a number or a string, short.
		{`{"id":null,"op":"ping"}`, "bad_command", "", `"id" must be`},
		{`{"id":true,"op":"ping"}`, "bad_command", "", `"id" must be`},
		{`{"id":{},"op":"ping"}`, "bad_command", "", `"id" must be`},
		{`{"id":[1],"op":"ping"}`, "bad_command", "", `"id" must be`},
		{`{"id":"` + strings.Repeat("x", 63) + `","op":"ping"}`, "bad_command", "", `at most 64 bytes`},
		{`{"id":` + strings.Repeat("9", 65) + `,"op":"ping"}`, "bad_command", "", `at most 64 bytes`},
		// op.
		{`{"id":1}`, "bad_command", "1", `needs "op"`},
		{`{"id":1,"op":""}`, "bad_command", "1", "unknown op"},
		{`{"id":1,"op":"Ping"}`, "bad_command", "1", `unknown op "Ping"`},
		{`{"id":1,"op":"frobnicate"}`, "bad_command", "1", `unknown op "frobnicate"`},
		{`{"id":1,"op":"` + long + `"}`, "bad_command", "1", "…"},
		{`{"id":1,"op":5}`, "bad_command", "1", `"op" must be a string`},
		{`{"id":1,"op":null}`, "bad_command", "1", `"op" must be a string`},
		// Fields per op.
		{`{"id":"s","op":"subscribe"}`, "bad_command", `"s"`, `subscribe needs "channel"`},
		{`{"id":"s","op":"publish","channel":"a"}`, "bad_command", `"s"`, `publish needs "data"`},
		{`{"id":"s","op":"auth"}`, "bad_command", `"s"`, `auth needs "token"`},
		{`{"id":"s","op":"auth","token":""}`, "bad_command", `"s"`, `"token" must be`},
		{`{"id":"s","op":"auth","token":"` + strings.Repeat("t", 8<<10+1) + `"}`, "bad_command", `"s"`, `"token" must be`},
		{`{"id":"s","op":"ping","channel":"a"}`, "bad_command", `"s"`, `ping does not take "channel"`},
		{`{"id":"s","op":"subscribe","channel":"a","limit":5}`, "bad_command", `"s"`, `subscribe does not take "limit"`},
		{`{"id":"s","op":"subscribe","channel":"a","data":5}`, "bad_command", `"s"`, `does not take "data"`},
		{`{"id":"s","op":"unsubscribe","channel":"a","since":"e:1"}`, "bad_command", `"s"`, `does not take "since"`},
		{`{"id":"s","op":"history","channel":"a","event":"x"}`, "bad_command", `"s"`, `does not take "event"`},
		{`{"id":"s","op":"presence","channel":"a","token":"x"}`, "bad_command", `"s"`, `does not take "token"`},
		// Field values.
		{`{"id":2,"op":"subscribe","channel":5}`, "bad_command", "2", `"channel" must be a string`},
		{`{"id":2,"op":"subscribe","channel":null}`, "bad_command", "2", `"channel" must be a string`},
		{`{"id":2,"op":"subscribe","channel":""}`, "invalid_channel", "2", "invalid channel name"},
		{`{"id":2,"op":"subscribe","channel":"a b"}`, "invalid_channel", "2", "invalid channel name"},
		{`{"id":2,"op":"subscribe","channel":"` + long + `x"}`, "invalid_channel", "2", "longer than 200"},
		{`{"id":2,"op":"subscribe","channel":"a","since":"nope"}`, "invalid_position", "2", "invalid position"},
		{`{"id":2,"op":"subscribe","channel":"a","since":"e:-1"}`, "invalid_position", "2", "invalid position"},
		{`{"id":2,"op":"subscribe","channel":"a","since":5}`, "bad_command", "2", `"since" must be a string`},
		{`{"id":2,"op":"history","channel":"a","limit":0}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"history","channel":"a","limit":-1}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"history","channel":"a","limit":1001}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"history","channel":"a","limit":1.5}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"history","channel":"a","limit":1e2}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"history","channel":"a","limit":"5"}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"history","channel":"a","limit":null}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"history","channel":"a","limit":99999999999999999999999}`, "invalid_limit", "2", "1 to 1000"},
		{`{"id":2,"op":"publish","channel":"a","data":1,"event":"crier.gap"}`, "invalid_event", "2", "reserved"},
		{`{"id":2,"op":"publish","channel":"a","data":1,"event":"has space"}`, "invalid_event", "2", "printable"},
		{`{"id":2,"op":"publish","channel":"a","data":1,"event":"` + long + `"}`, "invalid_event", "2", "longer than 100"},
		{`{"id":2,"op":"publish","channel":"a","data":1,"event":7}`, "bad_command", "2", `"event" must be a string`},
	} {
		got, err := DecodeCommand([]byte(tc.in))
		if err == nil {
			t.Errorf("%.80s: no error, got %+v", tc.in, got)
			continue
		}
		var e *transport.Error
		if !errors.As(err, &e) {
			t.Errorf("%.80s: error %T %v is not a *transport.Error", tc.in, err, err)
			continue
		}
		if e.Code != tc.code || e.Status != 400 || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%.80s: got %d %s %q, want 400 %s containing %q", tc.in, e.Status, e.Code, e.Message, tc.code, tc.msg)
		}
		if string(got.ID) != tc.id {
			t.Errorf("%.80s: error carries id %q, want %q", tc.in, got.ID, tc.id)
		}
		if !utf8.ValidString(e.Message) {
			t.Errorf("%.80s: message is not UTF-8: %q", tc.in, e.Message)
		}
	}
}

// FuzzDecodeCommand checks that DecodeCommand never panics and returns either a valid command
// or a *transport.Error, with an id that is safe to echo either way.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"op":"subscribe","channel":"news","since":"q7Rk2x:42"}`,
		`{"id":"x","op":"unsubscribe","channel":"news"}`,
		`{"id":2,"op":"publish","channel":"chat:lobby","data":{"text":"hi"},"event":"note"}`,
		`{"id":3,"op":"history","channel":"news","since":"e:0","limit":10}`,
		`{"id":4,"op":"presence","channel":"chat:lobby"}`,
		`{"id":5,"op":"auth","token":"a.b.c"}`,
		`{"op":"ping"}`,
		`{"id":null,"op":"ping"}`,
		`{"id":1,"op":"ping","op":"ping"}`,
		`{"id":1,"OP":"ping"}`,
		`{"op":"ping"}]`,
		`{"op":"ping"} {}`,
		`[{"op":"ping"}]`,
		`{"op":"history","channel":"a","limit":1e3}`,
		"{\"op\":\"\xff\"}",
		`{"id":"\ud800","op":"ping"}`,
		``,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := string(b) // DecodeCommand must not keep or change b
		c, err := DecodeCommand(b)
		if string(b) != in {
			t.Fatalf("DecodeCommand changed its input")
		}
		if len(c.ID) > 0 {
			if !validID(c.ID) || !json.Valid(c.ID) {
				t.Fatalf("id %q is not safe to echo", c.ID)
			}
			var v any
			if json.Unmarshal(c.ID, &v) != nil {
				t.Fatalf("id %q does not parse", c.ID)
			}
			switch v.(type) {
			case string, float64:
			default:
				t.Fatalf("id %q is neither a number nor a string", c.ID)
			}
		}
		if err != nil {
			var e *transport.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Code == "" || e.Message == "" {
				t.Fatalf("error %#v is not a 400 API error", err)
			}
			if !utf8.ValidString(e.Message) || !utf8.ValidString(e.Code) {
				t.Fatalf("error %q is not UTF-8", e.Message)
			}
			return
		}
		checkValid(t, b, c)
		// A valid command survives a round trip through its JSON. Without HTML escaping:
		// json.Marshal would write a "&" inside data as "\u0026", the same JSON in other bytes.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if merr := enc.Encode(c); merr != nil {
			t.Fatalf("marshal %+v: %v", c, merr)
		}
		out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		c2, err := DecodeCommand(out)
		if err != nil {
			t.Fatalf("%s: re-decoding %s: %v", b, out, err)
		}
		if !sameCommand(c, c2) {
			t.Fatalf("round trip changed %+v into %+v", c, c2)
		}
	})
}

// checkValid asserts what DecodeCommand promises of a command it accepts.
func checkValid(t *testing.T, b []byte, c Command) {
	t.Helper()
	if !utf8.Valid(b) || !json.Valid(b) {
		t.Fatalf("accepted input that is not UTF-8 JSON: %q", b)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatalf("accepted input that is not a JSON object: %q", b)
	}
	spec, ok := opFields[c.Op]
	if !ok {
		t.Fatalf("accepted unknown op %q", c.Op)
	}
	for k := range obj {
		f, ok := fieldNames[k]
		if !ok {
			t.Fatalf("accepted unknown field %q", k)
		}
		if f != fID && f != fOp && spec.allowed&f == 0 {
			t.Fatalf("accepted field %q for op %s", k, c.Op)
		}
	}
	if spec.required&fChannel != 0 && !channel.ValidName(c.Channel) {
		t.Fatalf("accepted channel %q", c.Channel)
	}
	if spec.allowed&fChannel == 0 && c.Channel != "" {
		t.Fatalf("op %s with channel %q", c.Op, c.Channel)
	}
	if c.Since != "" {
		if _, err := channel.ParsePosition(c.Since); err != nil {
			t.Fatalf("accepted since %q", c.Since)
		}
	}
	if c.Limit < 0 || c.Limit > maxHistoryLim {
		t.Fatalf("accepted limit %d", c.Limit)
	}
	if c.Op == "publish" {
		if len(c.Data) == 0 || !json.Valid(c.Data) {
			t.Fatalf("publish with data %q", c.Data)
		}
		if err := hub.CheckPublication(&hub.Publication{Channel: c.Channel, Event: c.Event}); err != nil {
			t.Fatalf("accepted publication: %v", err)
		}
	} else if len(c.Data) > 0 || c.Event != "" {
		t.Fatalf("op %s with data or event", c.Op)
	}
	if (c.Op == "auth") != (c.Token != "") {
		t.Fatalf("op %s with token %q", c.Op, c.Token)
	}
}
