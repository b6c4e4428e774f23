package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/hub"
)

// rawDo sends a request and returns the response (body already read and closed) and its body.
// headers are name, value pairs; a Content-Type is sent only when given.
func rawDo(t testing.TB, method, url string, body []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return res, b
}

// publishAnswer is the 201 body of a publish.
type publishAnswer struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
	Cursor  string `json:"cursor"`
}

// mustPublish publishes body on ch and checks the 201 answer's shape.
func mustPublish(t testing.TB, base, ch, contentType, body string, headers ...string) publishAnswer {
	t.Helper()
	if contentType != "" {
		headers = append(headers, "Content-Type", contentType)
	}
	res, b := rawDo(t, "POST", base+"/v1/channels/"+ch, []byte(body), headers...)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("publish on %s: status %d: %s", ch, res.StatusCode, b)
	}
	checkKeys(t, b, "channel", "offset", "epoch", "cursor")
	var a publishAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("publish answer %q: %v", b, err)
	}
	if a.Channel != ch || a.Epoch == "" || a.Cursor != fmt.Sprintf("%s@%s:%d", ch, a.Epoch, a.Offset) {
		t.Fatalf("publish answer %+v is inconsistent", a)
	}
	return a
}

// checkKeys fails unless b is a JSON object with exactly the given keys.
func checkKeys(t testing.TB, b []byte, keys ...string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %q", b)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v in %s", got, want, b)
	}
}

// historyAnswer is the body of GET /v1/channels/{channel}/messages, with each message's raw bytes.
type historyAnswer struct {
	Messages []json.RawMessage `json:"messages"`
	Epoch    string            `json:"epoch"`
	Offset   uint64            `json:"offset"`
	Gap      bool              `json:"gap"`
	raw      []byte
}

func (h historyAnswer) envelopes(t testing.TB) []envelope {
	t.Helper()
	out := make([]envelope, len(h.Messages))
	for i, m := range h.Messages {
		if err := json.Unmarshal(m, &out[i]); err != nil {
			t.Fatalf("history message %q: %v", m, err)
		}
	}
	return out
}

func (h historyAnswer) offsets(t testing.TB) []uint64 {
	t.Helper()
	var out []uint64
	for _, e := range h.envelopes(t) {
		out = append(out, e.Offset)
	}
	return out
}

func history(t testing.TB, base, ch, query string) historyAnswer {
	t.Helper()
	u := base + "/v1/channels/" + ch + "/messages"
	if query != "" {
		u += "?" + query
	}
	res, b := rawDo(t, "GET", u, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", u, res.StatusCode, b)
	}
	var h historyAnswer
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("history %q: %v", b, err)
	}
	if h.Messages == nil {
		t.Fatalf("history without a messages array: %s", b)
	}
	h.raw = b
	return h
}

// checkError fails unless the answer is status with the JSON error body of the contract.
func checkError(t testing.TB, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
	checkKeys(t, body, "error")
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	checkKeys(t, []byte(mustMarshal(e.Error)), "code", "message")
	var c, m string
	_ = json.Unmarshal(e.Error["code"], &c)
	_ = json.Unmarshal(e.Error["message"], &m)
	if c != code {
		t.Fatalf("error code %q, want %q: %s", c, code, body)
	}
	if !regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`).MatchString(c) || strings.TrimSpace(m) == "" {
		t.Fatalf("error %q/%q: code must be snake_case and message non-empty", c, m)
	}
}

func mustMarshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestPublishPayloadKinds checks how each kind of body sits in the envelope: JSON as itself,
// byte for byte; text as a string; anything else as base64 with its content type.
func TestPublishPayloadKinds(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	binary := []byte{0x89, 'P', 'N', 'G', 0, 1, 2, 0xff}
	latin1 := []byte("caf\xe9")
	tests := []struct {
		name, contentType string
		body              []byte
		// wantData is the exact bytes of "data" in the envelope.
		wantData              string
		wantEncoding, wantCT  string
		wantContentTypeAbsent bool
	}{
		{name: "json kept byte for byte", contentType: "application/json",
			body: []byte(`{ "z": 1,  "a" : [1, 2.50, "x"] ,"u":"\u00e9" }`), wantData: `{ "z": 1,  "a" : [1, 2.50, "x"] ,"u":"\u00e9" }`},
		{name: "json with charset", contentType: "application/json; charset=utf-8",
			body: []byte(`[3,2,1]`), wantData: `[3,2,1]`},
		{name: "json scalar", contentType: "application/json", body: []byte(`"just a string"`), wantData: `"just a string"`},
		{name: "plus json", contentType: "application/vnd.api+json", body: []byte(`{"b":2,"a":1}`), wantData: `{"b":2,"a":1}`},
		{name: "text", contentType: "text/plain", body: []byte("hi \"there\"\n"), wantData: `"hi \"there\"\n"`},
		{name: "text html utf8", contentType: "text/html; charset=utf-8", body: []byte("<b>é</b>"), wantData: `"<b>é</b>"`},
		{name: "binary", contentType: "image/png", body: binary,
			wantData: `"` + base64.StdEncoding.EncodeToString(binary) + `"`, wantEncoding: "base64", wantCT: "image/png"},
		{name: "binary without content type", contentType: "", body: binary,
			wantData: `"` + base64.StdEncoding.EncodeToString(binary) + `"`, wantEncoding: "base64", wantCT: "application/octet-stream"},
		{name: "invalid json travels as binary", contentType: "application/json", body: []byte(`{"a":`),
			wantData: `"` + base64.StdEncoding.EncodeToString([]byte(`{"a":`)) + `"`, wantEncoding: "base64", wantCT: "application/json"},
		{name: "latin1 text travels as binary", contentType: "text/plain; charset=iso-8859-1", body: latin1,
			wantData: `"` + base64.StdEncoding.EncodeToString(latin1) + `"`, wantEncoding: "base64", wantCT: "text/plain; charset=iso-8859-1"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := "kinds" + strconv.Itoa(i)
			a := mustPublish(t, ts.URL, ch, tt.contentType, string(tt.body))
			if a.Offset != 1 {
				t.Fatalf("offset %d, want 1", a.Offset)
			}
			h := history(t, ts.URL, ch, "")
			if len(h.Messages) != 1 {
				t.Fatalf("history holds %d messages: %s", len(h.Messages), h.raw)
			}
			raw := h.Messages[0]
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(raw, &fields); err != nil {
				t.Fatal(err)
			}
			if got := string(fields["data"]); got != tt.wantData {
				t.Fatalf("data %s, want %s", got, tt.wantData)
			}
			// The stored JSON must appear in the envelope exactly as published.
			if tt.wantEncoding == "" && tt.contentType != "" && strings.Contains(tt.contentType, "json") &&
				!bytes.Contains(raw, append([]byte(`"data":`), tt.body...)) {
				t.Fatalf("envelope %s does not hold the body verbatim", raw)
			}
			e := h.envelopes(t)[0]
			if e.Encoding != tt.wantEncoding || e.ContentType != tt.wantCT {
				t.Fatalf("encoding %q content_type %q, want %q %q", e.Encoding, e.ContentType, tt.wantEncoding, tt.wantCT)
			}
			if tt.wantEncoding == "" {
				checkKeys(t, raw, "channel", "offset", "epoch", "time", "event", "data", "cursor")
			} else {
				checkKeys(t, raw, "channel", "offset", "epoch", "time", "event", "data", "encoding", "content_type", "cursor")
				var s string
				_ = json.Unmarshal(e.Data, &s)
				if got, _ := base64.StdEncoding.DecodeString(s); !bytes.Equal(got, tt.body) {
					t.Fatalf("base64 data decodes to %q, want %q", got, tt.body)
				}
			}
			if e.Channel != ch || e.Offset != 1 || e.Epoch != a.Epoch || e.Event != "message" || e.Cursor != a.Cursor {
				t.Fatalf("envelope %+v does not match publish answer %+v", e, a)
			}
			if _, err := time.Parse("2006-01-02T15:04:05.000Z", e.Time); err != nil {
				t.Fatalf("time %q is not RFC 3339 UTC with milliseconds", e.Time)
			}
		})
	}
}

// TestPublishAnswer checks the 201 answer and that offsets run 1, 2, 3 without gaps, also
// under concurrent publishers.
func TestPublishAnswer(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/chat:lobby", []byte(`{"text":"hi"}`), "Content-Type", "application/json")
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	checkKeys(t, b, "channel", "offset", "epoch", "cursor")
	var first publishAnswer
	_ = json.Unmarshal(b, &first)
	if first.Channel != "chat:lobby" || first.Offset != 1 || first.Cursor != "chat:lobby@"+first.Epoch+":1" {
		t.Fatalf("answer %+v", first)
	}
	for want := uint64(2); want <= 3; want++ {
		a := mustPublish(t, ts.URL, "chat:lobby", "text/plain", "x")
		if a.Offset != want || a.Epoch != first.Epoch {
			t.Fatalf("answer %+v, want offset %d in epoch %s", a, want, first.Epoch)
		}
	}

	// Concurrent publishers: every offset from 1 to n exactly once, and history in that order.
	const workers, each = 8, 10
	var mu sync.Mutex
	var got []uint64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				a := mustPublish(t, ts.URL, "busy", "text/plain", "x")
				mu.Lock()
				got = append(got, a.Offset)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	for i, o := range got {
		if o != uint64(i+1) {
			t.Fatalf("offsets %v are not 1..%d", got, workers*each)
		}
	}
	if offs := history(t, ts.URL, "busy", "limit=1000").offsets(t); !slices.Equal(offs, got) {
		t.Fatalf("history offsets %v", offs)
	}
}

func TestPublishEvent(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	mustPublish(t, ts.URL, "ev", "text/plain", "a", "X-Ignored", "1")
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/ev?event=score.update", []byte("b"), "Content-Type", "text/plain")
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	es := history(t, ts.URL, "ev", "").envelopes(t)
	if len(es) != 2 || es[0].Event != "message" || es[1].Event != "score.update" {
		t.Fatalf("events %+v", es)
	}
	for _, bad := range []string{"crier.gap", "has%20space"} {
		res, b := rawDo(t, "POST", ts.URL+"/v1/channels/ev?event="+bad, []byte("c"), "Content-Type", "text/plain")
		checkError(t, res, b, http.StatusBadRequest, "bad_request")
	}
	if h := history(t, ts.URL, "ev", ""); h.Offset != 2 {
		t.Fatalf("rejected publishes moved the offset to %d", h.Offset)
	}
}

func TestPublishTTL(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	mustPublish(t, ts.URL, "ttl", "text/plain", "stays")
	start := time.Now()
	mustPublish(t, ts.URL, "ttl", "text/plain", "goes", "X-Unused", "")
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/ttl?ttl=1", []byte("short"), "Content-Type", "text/plain")
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	mustPublish(t, ts.URL, "ttl", "text/plain", "after")
	if offs := history(t, ts.URL, "ttl", "").offsets(t); !slices.Equal(offs, []uint64{1, 2, 3, 4}) {
		t.Fatalf("right after publishing, history offsets %v", offs)
	}
	for {
		offs := history(t, ts.URL, "ttl", "").offsets(t)
		if slices.Equal(offs, []uint64{1, 2, 4}) {
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("3 s after a ttl=1 publish, history offsets %v", offs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if time.Since(start) < 900*time.Millisecond {
		t.Fatalf("ttl=1 message left history after %v", time.Since(start))
	}
	// Reading after it from its predecessor gives what follows; the channel's offset stays.
	h := history(t, ts.URL, "ttl", "since="+history(t, ts.URL, "ttl", "").Epoch+":2")
	if offs := h.offsets(t); !slices.Equal(offs, []uint64{4}) || h.Offset != 4 {
		t.Fatalf("since :2 after expiry: offsets %v offset %d", offs, h.Offset)
	}
}

func TestPublishIdempotency(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	pub := func(key, body string) (int, []byte) {
		res, b := rawDo(t, "POST", ts.URL+"/v1/channels/idem", []byte(body), "Content-Type", "text/plain", "Idempotency-Key", key)
		return res.StatusCode, b
	}
	st1, b1 := pub("k1", "one")
	st2, b2 := pub("k1", "one again")
	if st1 != http.StatusCreated || st2 != st1 || !bytes.Equal(b1, b2) {
		t.Fatalf("same key twice: %d %s then %d %s", st1, b1, st2, b2)
	}
	st3, b3 := pub("k2", "two")
	var a3 publishAnswer
	_ = json.Unmarshal(b3, &a3)
	if st3 != http.StatusCreated || a3.Offset != 2 {
		t.Fatalf("another key: %d %s", st3, b3)
	}
	// The same key on another channel is another message.
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/idem2", []byte("x"), "Content-Type", "text/plain", "Idempotency-Key", "k1")
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	h := history(t, ts.URL, "idem", "")
	es := h.envelopes(t)
	if len(es) != 2 || string(es[0].Data) != `"one"` || string(es[1].Data) != `"two"` {
		t.Fatalf("history %s", h.raw)
	}

	// A batch with a key already used repeats that answer; a key used twice in one batch publishes once.
	res, b = rawDo(t, "POST", ts.URL+"/v1/publish", []byte(`{"messages":[
		{"channel":"idem","data":1,"idempotency_key":"k1"},
		{"channel":"idem","data":2,"idempotency_key":"k3"},
		{"channel":"idem","data":3,"idempotency_key":"k3"}]}`), "Content-Type", "application/json")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("batch status %d: %s", res.StatusCode, b)
	}
	var out struct{ Results []publishAnswer }
	_ = json.Unmarshal(b, &out)
	var a1 publishAnswer
	_ = json.Unmarshal(b1, &a1)
	if len(out.Results) != 3 || out.Results[0] != a1 || out.Results[1].Offset != 3 || out.Results[2] != out.Results[1] {
		t.Fatalf("batch results %s", b)
	}
	if h := history(t, ts.URL, "idem", ""); h.Offset != 3 || len(h.Messages) != 3 {
		t.Fatalf("history after batch %s", h.raw)
	}
}

func TestPublishBatch(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.MaxMessageSize = 64 })
	body := `{"messages":[
		{"channel":"b1","data":{"z":1, "a":2}},
		{"channel":"bad name","data":1},
		{"channel":"b1"},
		{"channel":"b2","data":"text","event":"note"},
		{"channel":"b1","data":[1,2,3],"idempotency_key":"once"},
		{"channel":"b1","data":"` + strings.Repeat("x", 100) + `"},
		{"channel":"b1","data":1,"event":"crier.join"},
		{"channel":"b2","data":"aGk=","content_type":"image/gif","encoding":"base64"}]}`
	res, b := rawDo(t, "POST", ts.URL+"/v1/publish", []byte(body), "Content-Type", "application/json")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, b)
	}
	checkKeys(t, b, "results")
	var out struct{ Results []json.RawMessage }
	_ = json.Unmarshal(b, &out)
	want := []struct {
		ch     string
		offset uint64
		code   string
	}{
		{"b1", 1, ""}, {"", 0, "invalid_channel"}, {"", 0, "bad_message"}, {"b2", 1, ""},
		{"b1", 2, ""}, {"", 0, "message_too_large"}, {"", 0, "bad_request"}, {"b2", 2, ""},
	}
	if len(out.Results) != len(want) {
		t.Fatalf("%d results for %d messages: %s", len(out.Results), len(want), b)
	}
	for i, w := range want {
		r := out.Results[i]
		if w.code != "" {
			checkKeys(t, r, "error")
			var e struct {
				Error struct{ Code, Message string }
			}
			_ = json.Unmarshal(r, &e)
			if e.Error.Code != w.code || e.Error.Message == "" {
				t.Errorf("result %d: %s, want error %s", i, r, w.code)
			}
			continue
		}
		checkKeys(t, r, "channel", "offset", "epoch", "cursor")
		var a publishAnswer
		_ = json.Unmarshal(r, &a)
		if a.Channel != w.ch || a.Offset != w.offset || a.Cursor != fmt.Sprintf("%s@%s:%d", w.ch, a.Epoch, w.offset) {
			t.Errorf("result %d: %s, want %s offset %d", i, r, w.ch, w.offset)
		}
	}
	es := history(t, ts.URL, "b1", "").envelopes(t)
	if len(es) != 2 || string(es[0].Data) != `{"z":1, "a":2}` || string(es[1].Data) != `[1,2,3]` {
		t.Fatalf("b1 history %+v", es)
	}
	es = history(t, ts.URL, "b2", "").envelopes(t)
	if len(es) != 2 || string(es[0].Data) != `"text"` || es[0].Event != "note" ||
		string(es[1].Data) != `"aGk="` || es[1].Encoding != "base64" || es[1].ContentType != "image/gif" {
		t.Fatalf("b2 history %+v", es)
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	var epoch string
	for i := 1; i <= 5; i++ {
		epoch = mustPublish(t, ts.URL, "hist", "application/json", strconv.Itoa(i)).Epoch
	}
	tests := []struct {
		query string
		want  []uint64
		gap   bool
	}{
		{"", []uint64{1, 2, 3, 4, 5}, false},
		{"limit=2", []uint64{4, 5}, false},
		{"since=" + epoch + ":0", []uint64{1, 2, 3, 4, 5}, false},
		{"since=" + epoch + ":2", []uint64{3, 4, 5}, false},
		{"since=" + epoch + ":2&limit=2", []uint64{3, 4}, false},
		{"since=" + epoch + ":5", nil, false},
		{"since=0ther:2", []uint64{1, 2, 3, 4, 5}, true},
	}
	for _, tt := range tests {
		h := history(t, ts.URL, "hist", tt.query)
		checkMsgs := "epoch offset messages"
		if tt.gap {
			checkMsgs += " gap"
		}
		checkKeys(t, h.raw, strings.Fields(checkMsgs)...)
		if got := h.offsets(t); !slices.Equal(got, tt.want) || h.Gap != tt.gap || h.Epoch != epoch || h.Offset != 5 {
			t.Errorf("?%s: offsets %v gap %v epoch %s offset %d, want %v gap %v epoch %s offset 5",
				tt.query, got, h.Gap, h.Epoch, h.Offset, tt.want, tt.gap, epoch)
		}
	}
	// An unused channel has an epoch and offset 0.
	h := history(t, ts.URL, "never", "")
	if len(h.Messages) != 0 || h.Offset != 0 || h.Epoch == "" || h.Gap {
		t.Fatalf("empty channel history %s", h.raw)
	}
}

func TestHistoryGap(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) { c.HistorySize = 3 })
	var epoch string
	for i := 1; i <= 5; i++ {
		epoch = mustPublish(t, ts.URL, "small", "application/json", strconv.Itoa(i)).Epoch
	}
	tests := []struct {
		query string
		want  []uint64
		gap   bool
	}{
		{"", []uint64{3, 4, 5}, false},
		{"since=" + epoch + ":0", []uint64{3, 4, 5}, true},
		{"since=" + epoch + ":1", []uint64{3, 4, 5}, true},
		{"since=" + epoch + ":2", []uint64{3, 4, 5}, false},
		{"since=" + epoch + ":1&limit=1", []uint64{3}, true},
		{"since=" + epoch + ":4", []uint64{5}, false},
		{"since=wrongEpoch:4", []uint64{3, 4, 5}, true},
	}
	for _, tt := range tests {
		h := history(t, ts.URL, "small", tt.query)
		if got := h.offsets(t); !slices.Equal(got, tt.want) || h.Gap != tt.gap || h.Offset != 5 {
			t.Errorf("?%s: offsets %v gap %v, want %v gap %v: %s", tt.query, got, h.Gap, tt.want, tt.gap, h.raw)
		}
	}
}

func TestHistoryClear(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	old := mustPublish(t, ts.URL, "clr", "text/plain", "a")
	mustPublish(t, ts.URL, "clr", "text/plain", "b")
	res, b := rawDo(t, "DELETE", ts.URL+"/v1/channels/clr/messages", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("DELETE status %d: %s", res.StatusCode, b)
	}
	checkKeys(t, b, "channel", "epoch", "offset")
	var st struct {
		Channel, Epoch string
		Offset         uint64
	}
	_ = json.Unmarshal(b, &st)
	if st.Channel != "clr" || st.Epoch == "" || st.Epoch == old.Epoch || st.Offset != 0 {
		t.Fatalf("DELETE answer %s (old epoch %s)", b, old.Epoch)
	}
	h := history(t, ts.URL, "clr", "")
	if len(h.Messages) != 0 || h.Epoch != st.Epoch || h.Offset != 0 {
		t.Fatalf("history after clear %s", h.raw)
	}
	a := mustPublish(t, ts.URL, "clr", "text/plain", "c")
	if a.Epoch != st.Epoch || a.Offset != 1 {
		t.Fatalf("publish after clear %+v, want offset 1 in epoch %s", a, st.Epoch)
	}
	// A position in the old epoch can no longer be told apart: gap, and what is held.
	h = history(t, ts.URL, "clr", "since="+old.Epoch+":2")
	if !h.Gap || !slices.Equal(h.offsets(t), []uint64{1}) || h.Epoch != st.Epoch {
		t.Fatalf("old epoch after clear %s", h.raw)
	}
	if i := info(t, ts.URL, "clr"); i.Epoch != st.Epoch || i.Offset != 1 {
		t.Fatalf("info after clear %+v", i)
	}
}

type channelInfo struct {
	Channel     string `json:"channel"`
	Epoch       string `json:"epoch"`
	Offset      uint64 `json:"offset"`
	Subscribers int    `json:"subscribers"`
}

func info(t testing.TB, base, ch string) channelInfo {
	t.Helper()
	res, b := rawDo(t, "GET", base+"/v1/channels/"+ch, nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("info status %d: %s", res.StatusCode, b)
	}
	checkKeys(t, b, "channel", "epoch", "offset", "subscribers")
	var i channelInfo
	_ = json.Unmarshal(b, &i)
	return i
}

// eventually polls cond every 10 ms for up to 5 s (a guard against hangs on a loaded machine).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInfo(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	i := info(t, ts.URL, "inf")
	if i.Channel != "inf" || i.Offset != 0 || i.Epoch == "" || i.Subscribers != 0 {
		t.Fatalf("fresh channel info %+v", i)
	}
	a := mustPublish(t, ts.URL, "inf", "text/plain", "x")
	if i := info(t, ts.URL, "inf"); i.Epoch != a.Epoch || i.Offset != 1 {
		t.Fatalf("info %+v after publish %+v", i, a)
	}
	s1 := openSSE(t, ts.URL+"/v1/sse?channel=inf")
	s2 := openSSE(t, ts.URL+"/v1/sse?channel=inf&channel=other")
	eventually(t, "2 subscribers", func() bool { return info(t, ts.URL, "inf").Subscribers == 2 })
	if n := info(t, ts.URL, "other").Subscribers; n != 1 {
		t.Fatalf("other has %d subscribers", n)
	}
	s1.res.Body.Close()
	eventually(t, "1 subscriber", func() bool { return info(t, ts.URL, "inf").Subscribers == 1 })
	s2.res.Body.Close()
	eventually(t, "no subscriber", func() bool { return info(t, ts.URL, "inf").Subscribers == 0 })
}

func TestPresenceEndpoint(t *testing.T) {
	t.Parallel()
	on := true
	ts := startServer(t, func(c *config.Config) {
		c.Namespaces = map[string]config.Namespace{"room": {Presence: &on}}
	})
	get := func(ch string) (*http.Response, []byte) {
		return rawDo(t, "GET", ts.URL+"/v1/channels/"+ch+"/presence", nil)
	}
	res, b := get("room:1")
	if res.StatusCode != http.StatusOK || string(b) != "{\"clients\":[]}\n" {
		t.Fatalf("empty presence: %d %s", res.StatusCode, b)
	}
	s := openSSE(t, ts.URL+"/v1/sse?channel=room:1")
	type client struct{ Client, User, Transport string }
	var out struct{ Clients []json.RawMessage }
	eventually(t, "one client present", func() bool {
		_, b = get("room:1")
		_ = json.Unmarshal(b, &out)
		return len(out.Clients) == 1
	})
	checkKeys(t, out.Clients[0], "client", "user", "transport")
	var c client
	_ = json.Unmarshal(out.Clients[0], &c)
	if c.Client == "" || c.Transport != "sse" {
		t.Fatalf("presence %s", b)
	}
	s.res.Body.Close()
	eventually(t, "nobody present", func() bool {
		_, b = get("room:1")
		_ = json.Unmarshal(b, &out)
		return len(out.Clients) == 0
	})
	// The default namespace has presence off.
	res, b = get("lobby")
	checkError(t, res, b, http.StatusNotFound, "presence_disabled")
}

// TestErrors checks every error answer: status, JSON body, and Allow on 405.
func TestErrors(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *config.Config) {
		c.MaxMessageSize = 100
		c.MaxSubscriptions = 2
	})
	long := strings.Repeat("a", 201)
	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code                     string
		allow                    []string
	}{
		{name: "unknown path", method: "GET", path: "/nope", status: 404, code: "not_found"},
		{name: "unknown api path", method: "GET", path: "/v1/channels/a/b/c", status: 404, code: "not_found"},
		{name: "unknown path post", method: "POST", path: "/v2/publish", body: "x", status: 404, code: "not_found"},
		{name: "put channel", method: "PUT", path: "/v1/channels/x", body: "x", status: 405, code: "method_not_allowed", allow: []string{"GET", "POST"}},
		{name: "get publish", method: "GET", path: "/v1/publish", status: 405, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "post messages", method: "POST", path: "/v1/channels/x/messages", body: "x", status: 405, code: "method_not_allowed", allow: []string{"GET", "DELETE"}},
		{name: "post sse", method: "POST", path: "/v1/sse?channel=x", status: 405, code: "method_not_allowed", allow: []string{"GET"}},
		{name: "delete healthz", method: "DELETE", path: "/healthz", status: 405, code: "method_not_allowed", allow: []string{"GET"}},
		{name: "body too large", method: "POST", path: "/v1/channels/x", body: strings.Repeat("x", 101), status: 413, code: "message_too_large"},
		{name: "batch too large", method: "POST", path: "/v1/publish", body: `{"messages":[{"channel":"x","data":"` + strings.Repeat("x", 2<<20) + `"}]}`, status: 413, code: "message_too_large"},
		{name: "invalid channel", method: "POST", path: "/v1/channels/bad!name", body: "x", status: 400, code: "invalid_channel"},
		{name: "invalid channel space", method: "POST", path: "/v1/channels/bad%20name", body: "x", status: 400, code: "invalid_channel"},
		{name: "channel too long", method: "POST", path: "/v1/channels/" + long, body: "x", status: 400, code: "invalid_channel"},
		{name: "invalid channel history", method: "GET", path: "/v1/channels/bad$/messages", status: 400, code: "invalid_channel"},
		{name: "invalid channel clear", method: "DELETE", path: "/v1/channels/bad$/messages", status: 400, code: "invalid_channel"},
		{name: "invalid channel info", method: "GET", path: "/v1/channels/bad$", status: 400, code: "invalid_channel"},
		{name: "invalid channel presence", method: "GET", path: "/v1/channels/bad$/presence", status: 400, code: "invalid_channel"},
		{name: "ttl not a number", method: "POST", path: "/v1/channels/x?ttl=abc", body: "x", status: 400, code: "invalid_ttl"},
		{name: "ttl zero", method: "POST", path: "/v1/channels/x?ttl=0", body: "x", status: 400, code: "invalid_ttl"},
		{name: "ttl negative", method: "POST", path: "/v1/channels/x?ttl=-5", body: "x", status: 400, code: "invalid_ttl"},
		{name: "ttl fraction", method: "POST", path: "/v1/channels/x?ttl=1.5", body: "x", status: 400, code: "invalid_ttl"},
		{name: "since garbage", method: "GET", path: "/v1/channels/x/messages?since=nope", status: 400, code: "invalid_position"},
		{name: "since bad offset", method: "GET", path: "/v1/channels/x/messages?since=abc:x1", status: 400, code: "invalid_position"},
		{name: "since negative", method: "GET", path: "/v1/channels/x/messages?since=abc:-1", status: 400, code: "invalid_position"},
		{name: "limit zero", method: "GET", path: "/v1/channels/x/messages?limit=0", status: 400, code: "invalid_limit"},
		{name: "limit word", method: "GET", path: "/v1/channels/x/messages?limit=ten", status: 400, code: "invalid_limit"},
		{name: "limit huge", method: "GET", path: "/v1/channels/x/messages?limit=1000000", status: 400, code: "invalid_limit"},
		{name: "batch malformed", method: "POST", path: "/v1/publish", body: `{"messages":[`, status: 400, code: "bad_json"},
		{name: "batch wrong shape", method: "POST", path: "/v1/publish", body: `{"messages":{"channel":"x"}}`, status: 400, code: "bad_json"},
		{name: "batch empty", method: "POST", path: "/v1/publish", body: `{"messages":[]}`, status: 400, code: "bad_batch"},
		{name: "batch not json", method: "POST", path: "/v1/publish", body: `hello`, status: 400, code: "bad_json"},
		{name: "reserved event", method: "POST", path: "/v1/channels/x?event=crier.gap", body: "x", status: 400, code: "bad_request"},
		{name: "presence off", method: "GET", path: "/v1/channels/x/presence", status: 404, code: "presence_disabled"},
		{name: "sse no channel", method: "GET", path: "/v1/sse", status: 400, code: "no_channel"},
		{name: "sse invalid channel", method: "GET", path: "/v1/sse?channel=a/b", status: 400, code: "invalid_channel"},
		{name: "sse bad cursor", method: "GET", path: "/v1/sse?cursor=nope", status: 400, code: "invalid_cursor"},
		{name: "sse bad cursor position", method: "GET", path: "/v1/sse?cursor=a@e:x", status: 400, code: "invalid_cursor"},
		{name: "sse bad last-event-id", method: "GET", path: "/v1/sse?channel=a", headers: []string{"Last-Event-ID", "garbage"}, status: 400, code: "invalid_cursor"},
		{name: "sse bad since", method: "GET", path: "/v1/sse?channel=a&since=nope", status: 400, code: "invalid_position"},
		{name: "sse since two channels", method: "GET", path: "/v1/sse?channel=a&channel=b&since=e:1", status: 400, code: "bad_request"},
		{name: "sse since and cursor", method: "GET", path: "/v1/sse?channel=a&since=e:1&cursor=a@e:1", status: 400, code: "bad_request"},
		{name: "sse too many channels", method: "GET", path: "/v1/sse?channel=a&channel=b&channel=c", status: 400, code: "too_many_channels"},
		{name: "sse too many in cursor", method: "GET", path: "/v1/sse?cursor=a@e:1,b@e:1,c@e:1", status: 400, code: "too_many_channels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			res, b := rawDo(t, tt.method, ts.URL+tt.path, body, append([]string{"Content-Type", "text/plain"}, tt.headers...)...)
			checkError(t, res, b, tt.status, tt.code)
			if tt.allow != nil {
				allow := strings.Split(strings.ReplaceAll(res.Header.Get("Allow"), " ", ""), ",")
				for _, m := range tt.allow {
					if !slices.Contains(allow, m) {
						t.Fatalf("Allow %q lacks %s", res.Header.Get("Allow"), m)
					}
				}
				if slices.Contains(allow, tt.method) {
					t.Fatalf("Allow %q names the refused method", res.Header.Get("Allow"))
				}
			}
		})
	}
	// Nothing above published anything.
	if h := history(t, ts.URL, "x", ""); h.Offset != 0 {
		t.Fatalf("failed publishes moved x to offset %d", h.Offset)
	}
}

// metricValue returns the sum of a metric's samples (any labels), or -1 when absent.
func metricValue(t testing.TB, base, name string) float64 {
	t.Helper()
	res, b := rawDo(t, "GET", base+"/metrics", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics status %d", res.StatusCode)
	}
	total, found := 0.0, false
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || (f[0] != name && !strings.HasPrefix(f[0], name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("metric line %q", line)
		}
		total, found = total+v, true
	}
	if !found {
		return -1
	}
	return total
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	for _, p := range []string{"/healthz", "/readyz"} {
		res, b := rawDo(t, "GET", ts.URL+p, nil)
		if res.StatusCode != http.StatusOK || !json.Valid(b) {
			t.Fatalf("%s: %d %s", p, res.StatusCode, b)
		}
	}
	res, b := rawDo(t, "GET", ts.URL+"/metrics", nil)
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	for _, name := range []string{"crier_publishes_total", "crier_deliveries_total", "crier_subscriptions",
		"crier_slow_disconnects_total", "crier_channels", "crier_publisher_connections"} {
		if !strings.Contains(string(b), "\n"+name+" ") && !strings.Contains(string(b), "\n"+name+"{") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	pubs0 := metricValue(t, ts.URL, "crier_publishes_total")
	dels0 := metricValue(t, ts.URL, "crier_deliveries_total")

	s := openSSE(t, ts.URL+"/v1/sse?channel=m")
	eventually(t, "a subscriber", func() bool { return info(t, ts.URL, "m").Subscribers == 1 })
	if v := metricValue(t, ts.URL, "crier_connections"); v != 1 {
		t.Errorf("crier_connections %v with one SSE stream", v)
	}
	if v := metricValue(t, ts.URL, "crier_subscriptions"); v != 1 {
		t.Errorf("crier_subscriptions %v with one subscription", v)
	}
	if v := metricValue(t, ts.URL, "crier_channels"); v != 1 {
		t.Errorf("crier_channels %v with one subscribed channel", v)
	}
	mustPublish(t, ts.URL, "m", "text/plain", "x")
	mustPublish(t, ts.URL, "unwatched", "text/plain", "y")
	s.NextEnvelope(t)
	if v := metricValue(t, ts.URL, "crier_publishes_total"); v != pubs0+2 {
		t.Errorf("crier_publishes_total %v, want %v", v, pubs0+2)
	}
	if v := metricValue(t, ts.URL, "crier_deliveries_total"); v != dels0+1 {
		t.Errorf("crier_deliveries_total %v, want %v", v, dels0+1)
	}
	s.res.Body.Close()
	eventually(t, "no connection", func() bool { return metricValue(t, ts.URL, "crier_connections") == 0 })
	if v := metricValue(t, ts.URL, "crier_subscriptions"); v != 0 {
		t.Errorf("crier_subscriptions %v after the stream closed", v)
	}
}

// TestCleanPathRedirect: a path that is not in its clean form is redirected to it, with its
// Location, whichever methods the clean path allows.
func TestCleanPathRedirect(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range []struct{ method, path, location string }{
		{"GET", "/v1/./publish", "/v1/publish"},
		{"POST", "/v1/./publish", "/v1/publish"},
		{"GET", "/v1/channels/a/../b", "/v1/channels/b"},
	} {
		req, _ := http.NewRequest(tt.method, ts.URL+tt.path, nil)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode < 300 || res.StatusCode > 399 || res.Header.Get("Location") != tt.location {
			t.Errorf("%s %s: %d Location %q, want a redirect to %s", tt.method, tt.path, res.StatusCode, res.Header.Get("Location"), tt.location)
		}
	}
}

// TestWritePublished: the hand-encoded publish answer is byte for byte what encoding/json makes
// of it, and strings JSON would escape take encoding/json's path.
func TestWritePublished(t *testing.T) {
	t.Parallel()
	for _, m := range []hub.Message{
		{Channel: "chat:lobby", Epoch: "AbC-_9", Offset: 1},
		{Channel: "a.b_c-d=e~f", Epoch: "x", Offset: 18446744073709551615},
		{Channel: "odd", Epoch: `e"<&>\` + "\u2028\x01", Offset: 7}, // not a real epoch: the fallback
	} {
		fast, slow := httptest.NewRecorder(), httptest.NewRecorder()
		writePublished(fast, m)
		writeJSON(slow, http.StatusCreated, publishedOf(m))
		if fast.Body.String() != slow.Body.String() || fast.Code != slow.Code ||
			fast.Header().Get("Content-Type") != slow.Header().Get("Content-Type") ||
			fast.Header().Get("Cache-Control") != slow.Header().Get("Cache-Control") {
			t.Errorf("%+v:\n hand  %d %q %v\n json  %d %q %v", m, fast.Code, fast.Body, fast.Header(), slow.Code, slow.Body, slow.Header())
		}
	}
}
