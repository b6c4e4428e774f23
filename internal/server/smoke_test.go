package server

import "testing"

func TestSmoke(t *testing.T) {
	ts := startServer(t, nil)
	sse := openSSE(t, ts.URL+"/v1/sse?channel=news")
	wc := dialWS(t, ts.URL+"/v1/ws")
	wc.Send(map[string]any{"id": 1, "op": "subscribe", "channel": "news"})
	t.Log(wc.Read())
	st, out := publish(t, ts.URL, "news", "application/json", `{"text":"hi"}`)
	t.Log(st, out)
	t.Log(sse.NextEnvelope(t))
	t.Log(wc.Read())
}
