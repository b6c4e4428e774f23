package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/crier-push/crier/internal/config"
)

// FuzzAPI sends arbitrary requests to the HTTP API (publish, batch, history, info, presence,
// clear): every answer is a success or a 4xx with the JSON error body, never a 5xx or a panic.
func FuzzAPI(f *testing.F) {
	seeds := []struct{ method, target, contentType, body string }{
		{"POST", "/v1/channels/a?ttl=5&event=e", "application/json", `{"x":1}`},
		{"POST", "/v1/channels/a", "text/plain", "hi"},
		{"POST", "/v1/channels/a?ttl=0", "", "\x00\xff"},
		{"POST", "/v1/publish", "application/json", `{"messages":[{"channel":"a","data":{"n":1},"idempotency_key":"k"},{"channel":"bad name","data":1}]}`},
		{"POST", "/v1/publish", "application/json", `{"messages":[{"channel":"a"}]}`},
		{"POST", "/v1/publish", "application/json", `{"messages":`},
		{"GET", "/v1/channels/a/messages?since=E:1&limit=5", "", ""},
		{"GET", "/v1/channels/a/messages?since=:&limit=-1", "", ""},
		{"GET", "/v1/channels/a", "", ""},
		{"GET", "/v1/channels/a/presence", "", ""},
		{"DELETE", "/v1/channels/a/messages", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, s.contentType, s.body)
	}
	cfg := config.Default()
	cfg.Memory = true
	cfg.MaxMessageSize = 1024
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.shutdown)
	h := s.routes()
	f.Fuzz(func(t *testing.T, method, target, contentType, body string) {
		switch method {
		case "GET", "POST", "DELETE":
		default:
			return
		}
		// Only the API: the streaming transports need a real socket.
		if !strings.HasPrefix(target, "/v1/channels/") && target != "/v1/publish" {
			return
		}
		req, err := http.NewRequest(method, "http://127.0.0.1"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s %s: %d without a JSON error: %q", method, target, rec.Code, rec.Body)
			}
		}
	})
}
