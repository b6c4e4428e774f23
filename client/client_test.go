package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

// apiServer answers one request with status and body after check has looked at it.
func apiServer(t *testing.T, status int, body string, check func(r *http.Request, body []byte)) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if check != nil {
			check(r, b)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return New(srv.URL+"/", WithToken("tok"))
}

func TestPublish(t *testing.T) {
	c := apiServer(t, 201, `{"channel":"chat:lobby","offset":42,"epoch":"q7","cursor":"chat:lobby@q7:42"}`,
		func(r *http.Request, body []byte) {
			checks := map[string][2]string{
				"method":          {r.Method, "POST"},
				"path":            {r.URL.EscapedPath(), "/v1/channels/chat:lobby"},
				"event":           {r.URL.Query().Get("event"), "greet"},
				"ttl":             {r.URL.Query().Get("ttl"), "2"},
				"content type":    {r.Header.Get("Content-Type"), "application/json"},
				"idempotency key": {r.Header.Get("Idempotency-Key"), "k1"},
				"authorization":   {r.Header.Get("Authorization"), "Bearer tok"},
				"body":            {string(body), `{"text":"hi"}`},
			}
			for name, c := range checks {
				if c[0] != c[1] {
					t.Errorf("%s = %q, want %q", name, c[0], c[1])
				}
			}
		})
	res, err := c.Publish(context.Background(), "chat:lobby", []byte(`{"text":"hi"}`),
		PublishOptions{Event: "greet", TTL: 1500 * time.Millisecond, IdempotencyKey: "k1"})
	want := PublishResult{Channel: "chat:lobby", Offset: 42, Epoch: "q7", Cursor: "chat:lobby@q7:42"}
	if err != nil || res != want {
		t.Fatalf("Publish = %+v, %v", res, err)
	}
}

func TestGuessContentType(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":1}`: "application/json", `"s"`: "application/json", "hello": "text/plain; charset=utf-8",
		"\xff\x00": "application/octet-stream",
	} {
		if got := GuessContentType([]byte(in)); got != want {
			t.Errorf("GuessContentType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   APIError
	}{
		{"crier error", 413, `{"error":{"code":"message_too_large","message":"payload over 65536 bytes"}}`,
			APIError{Status: 413, Code: "message_too_large", Message: "payload over 65536 bytes"}},
		{"proxy text", 502, "upstream down", APIError{Status: 502, Code: "bad_gateway", Message: "upstream down"}},
		{"empty body", 401, "", APIError{Status: 401, Code: "unauthorized", Message: "Unauthorized"}},
		{"other json", 404, `{"detail":"x"}`, APIError{Status: 404, Code: "not_found", Message: `{"detail":"x"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := apiServer(t, tt.status, tt.body, nil)
			_, err := c.Publish(context.Background(), "news", []byte("x"), PublishOptions{})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is not an *APIError", err)
			}
			if ae.Status != tt.want.Status || ae.Code != tt.want.Code || ae.Message != tt.want.Message {
				t.Fatalf("APIError = %+v, want %+v", *ae, tt.want)
			}
			if !IsStatus(err, tt.status) {
				t.Errorf("IsStatus(%d) = false", tt.status)
			}
		})
	}
}

func TestPublishBatch(t *testing.T) {
	c := apiServer(t, 200, `{"results":[{"channel":"a","offset":1,"epoch":"e","cursor":"a@e:1"},
		{"error":{"code":"forbidden","message":"no publish on b"}}]}`,
		func(r *http.Request, body []byte) {
			if r.URL.Path != "/v1/publish" || r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request %s %s", r.URL.Path, r.Header.Get("Content-Type"))
			}
			want := `{"messages":[{"channel":"a","data":{"x":1},"event":"e1"},{"channel":"b","data":"s","idempotency_key":"k"}]}`
			if string(body) != want {
				t.Errorf("body = %s, want %s", body, want)
			}
		})
	got, err := c.PublishBatch(context.Background(), []BatchMessage{
		{Channel: "a", Data: json.RawMessage(`{"x":1}`), Event: "e1"},
		{Channel: "b", Data: json.RawMessage(`"s"`), IdempotencyKey: "k"},
	})
	want := []BatchResult{
		{PublishResult: PublishResult{Channel: "a", Offset: 1, Epoch: "e", Cursor: "a@e:1"}},
		{Err: &APIError{Code: "forbidden", Message: "no publish on b"}},
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("PublishBatch = %+v, %v", got, err)
	}
}

func TestHistory(t *testing.T) {
	c := apiServer(t, 200, `{"messages":[{"channel":"news","offset":3,"epoch":"e","time":"2026-11-23T08:00:00.123Z",
		"event":"message","data":"aGk=","encoding":"base64","content_type":"image/png","cursor":"news@e:3"}],
		"epoch":"e","offset":9,"gap":true}`,
		func(r *http.Request, _ []byte) {
			if r.Method != "GET" || r.URL.Path != "/v1/channels/news/messages" || r.URL.RawQuery != "limit=5&since=e%3A2" {
				t.Errorf("request %s %s?%s", r.Method, r.URL.Path, r.URL.RawQuery)
			}
		})
	h, err := c.History(context.Background(), "news", "e:2", 5)
	if err != nil {
		t.Fatal(err)
	}
	if h.Epoch != "e" || h.Offset != 9 || !h.Gap || len(h.Messages) != 1 {
		t.Fatalf("History = %+v", h)
	}
	m := h.Messages[0]
	if m.Position() != "e:3" || m.Time != time.Date(2026, 11, 23, 8, 0, 0, 123e6, time.UTC) {
		t.Errorf("message = %+v", m)
	}
	if p, err := m.Payload(); err != nil || string(p) != "hi" {
		t.Errorf("Payload = %q, %v", p, err)
	}
}

func TestChannel(t *testing.T) {
	c := apiServer(t, 200, `{"channel":"news","epoch":"e","offset":4,"subscribers":2}`, func(r *http.Request, _ []byte) {
		if r.URL.Path != "/v1/channels/news" {
			t.Errorf("path %s", r.URL.Path)
		}
	})
	info, err := c.Channel(context.Background(), "news")
	if want := (ChannelInfo{Channel: "news", Epoch: "e", Offset: 4, Subscribers: 2}); err != nil || info != want {
		t.Fatalf("Channel = %+v, %v", info, err)
	}
}

func TestPayload(t *testing.T) {
	for data, want := range map[string]string{`{"a":1}`: `{"a":1}`, `"text\n"`: "text\n", `12`: `12`} {
		e := Envelope{Data: json.RawMessage(data)}
		if got, err := e.Payload(); err != nil || string(got) != want {
			t.Errorf("Payload(%s) = %q, %v", data, got, err)
		}
	}
}
