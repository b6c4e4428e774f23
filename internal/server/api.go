package server

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// api serves section 4 of the contract: publishing, history, channel info and presence, each
// with the rights of section 7: publishing needs the publish right on the channel, reading
// (history, info, presence) the subscribe right, clearing history the admin API (an API key).
type api struct {
	hub            *hub.Hub
	maxMessageSize int
	g              *guards // auth and limits; nil allows everything
}

const (
	maxBatch        = 1000
	defaultHistory  = 100
	maxHistoryLimit = 1000
)

func (a *api) register(mux *http.ServeMux) {
	handle := func(pattern string, f http.HandlerFunc) {
		if a.g != nil {
			mux.Handle(pattern, a.g.plain(f))
			return
		}
		mux.Handle(pattern, f)
	}
	handle("POST /v1/channels/{channel}", a.publish)
	handle("POST /v1/publish", a.publishBatch)
	handle("GET /v1/channels/{channel}/messages", a.history)
	handle("DELETE /v1/channels/{channel}/messages", a.clear)
	handle("GET /v1/channels/{channel}", a.info)
	handle("GET /v1/channels/{channel}/presence", a.presence)
}

// identify authenticates r. A bad credential is answered (401) and ok is false.
func (a *api) identify(w http.ResponseWriter, r *http.Request) (id *auth.Identity, ok bool) {
	if a.g == nil || a.g.auth == nil {
		return nil, true
	}
	id, err := a.g.auth.Authenticate(r)
	if err != nil {
		transport.WriteError(w, transport.AuthError(err))
		return nil, false
	}
	return id, true
}

// authorize authenticates r and checks one right of its identity, answering a failure (401
// or 403) itself.
func (a *api) authorize(w http.ResponseWriter, r *http.Request, check func(*auth.Identity) error) (*auth.Identity, bool) {
	id, ok := a.identify(w, r)
	if !ok || a.g == nil || a.g.auth == nil {
		return id, ok
	}
	if err := check(id); err != nil {
		transport.WriteError(w, transport.AuthError(err))
		return nil, false
	}
	return id, true
}

// allow takes n publishes from the rate limits of id and r's client; granted may be fewer.
func (a *api) allow(id *auth.Identity, r *http.Request, n int) (granted int, retry time.Duration) {
	if a.g == nil || a.g.publishRate == nil {
		return n, 0
	}
	return a.g.publishRate.Allow(id, a.g.clientKey(r), n)
}

// published is the answer to a publish.
type published struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
	Cursor  string `json:"cursor"`
}

func publishedOf(m hub.Message) published {
	return published{Channel: m.Channel, Offset: m.Offset, Epoch: m.Epoch, Cursor: m.Channel + "@" + m.Position().String()}
}

func channelParam(r *http.Request) (string, error) {
	name := r.PathValue("channel")
	if err := channel.CheckName(name); err != nil {
		return "", transport.BadRequest("invalid_channel", err)
	}
	return name, nil
}

func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	name, err := channelParam(r)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	id, ok := a.authorize(w, r, func(id *auth.Identity) error { return id.CheckPublish(name) })
	if !ok {
		return
	}
	if n, retry := a.allow(id, r, 1); n < 1 {
		rateLimited(w, retry)
		return
	}
	var q url.Values
	if r.URL.RawQuery != "" { // most publishes have none: spare parsing an empty query
		q = r.URL.Query()
	}
	ttl, err := parseTTL(q.Get("ttl"))
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	body, err := readBody(w, r, a.maxMessageSize)
	if err != nil {
		transport.WriteError(w, bodyError(err, a.maxMessageSize))
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	res, err := a.hub.Publish(r.Context(), []hub.Publication{{Channel: name, Event: q.Get("event"), ContentType: ct,
		Data: body, TTL: ttl, IdempotencyKey: r.Header.Get("Idempotency-Key")}})
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	if res[0].Err != nil {
		transport.WriteError(w, res[0].Err)
		return
	}
	if res[0].Duplicate {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writePublished(w, res[0].Message)
}

// readBody reads a request body of at most limit bytes: into a buffer of its announced length
// when it has one, which spares io.ReadAll's growing.
func readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	if n := r.ContentLength; n >= 0 {
		// net/http's body ends at the announced length: one exact read, and no reader to bound it.
		if n > int64(limit) {
			return nil, &http.MaxBytesError{Limit: int64(limit)}
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("body shorter than its Content-Length: %w", err)
			}
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
}

// writePublished answers a publish with the JSON of publishedOf(m), encoded by hand: this is
// the answer of every publish, and encoding/json's reflection was a tenth of its CPU. Names
// and epochs hold only characters JSON takes as they are (channel.CheckName), which is checked.
func writePublished(w http.ResponseWriter, m hub.Message) {
	if !jsonPlain(m.Channel) || !jsonPlain(m.Epoch) {
		writeJSON(w, http.StatusCreated, publishedOf(m))
		return
	}
	b := make([]byte, 0, 64+2*len(m.Channel)+2*len(m.Epoch))
	b = append(b, `{"channel":"`...)
	b = append(b, m.Channel...)
	b = append(b, `","offset":`...)
	b = strconv.AppendUint(b, m.Offset, 10)
	b = append(b, `,"epoch":"`...)
	b = append(b, m.Epoch...)
	b = append(b, `","cursor":"`...)
	b = append(b, m.Channel...)
	b = append(b, '@')
	b = m.Position().AppendTo(b)
	b = append(b, "\"}\n"...)
	writeJSONBytes(w, http.StatusCreated, b)
}

// jsonPlain reports whether s needs no escaping in a JSON string, as encoding/json escapes.
func jsonPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, transport.BadRequest("invalid_ttl", fmt.Errorf("ttl must be a whole number of seconds above 0, got %q", s))
	}
	return time.Duration(n) * time.Second, nil
}

func bodyError(err error, limit int) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return transport.Errorf(http.StatusRequestEntityTooLarge, "message_too_large",
			fmt.Sprintf("body is larger than %d bytes", min(int64(limit), mbe.Limit)))
	}
	if isTimeout(err) {
		return transport.Errorf(http.StatusRequestTimeout, "request_timeout", "the request body did not arrive in time")
	}
	return transport.BadRequest("bad_body", fmt.Errorf("reading body: %w", err))
}

// batchMessage is one message of POST /v1/publish. data is published as JSON, unless
// content_type says otherwise: then data is a string, the payload's text, or its base64 when
// encoding is "base64".
type batchMessage struct {
	Channel        string          `json:"channel"`
	Data           json.RawMessage `json:"data"`
	Event          string          `json:"event"`
	IdempotencyKey string          `json:"idempotency_key"`
	ContentType    string          `json:"content_type"`
	Encoding       string          `json:"encoding"`
	TTL            uint32          `json:"ttl"`
}

type batchResult struct {
	*published
	Error *errorField `json:"error,omitempty"`
}

type errorField struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (a *api) publishBatch(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identify(w, r)
	if !ok {
		return
	}
	limit := max(1<<20, 16*a.maxMessageSize) // config.Config.MaxBodySize
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		transport.WriteError(w, bodyError(err, limit))
		return
	}
	var req struct {
		Messages []batchMessage `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		transport.WriteError(w, transport.BadRequest("bad_json", fmt.Errorf(`body must be {"messages":[…]}: %w`, err)))
		return
	}
	if len(req.Messages) == 0 || len(req.Messages) > maxBatch {
		transport.WriteError(w, transport.BadRequest("bad_batch", fmt.Errorf("a batch holds 1 to %d messages", maxBatch)))
		return
	}
	pubs := make([]hub.Publication, len(req.Messages))
	results := make([]batchResult, len(req.Messages))
	var allowed []int           // the messages that may be published, in order
	var denied *transport.Error // the first auth failure
	for i, m := range req.Messages {
		p, err := a.batchPublication(m)
		if err == nil && a.g != nil && a.g.auth != nil {
			if aerr := id.CheckPublish(m.Channel); aerr != nil {
				err = transport.AuthError(aerr)
				if denied == nil {
					denied = transport.AuthError(aerr)
				}
			}
		}
		if err != nil {
			results[i].Error = errorFieldOf(err)
			pubs[i] = hub.Publication{Channel: ""} // fails validation in the hub; the result above stands
			continue
		}
		pubs[i] = p
		allowed = append(allowed, i)
	}
	if len(allowed) == 0 && denied != nil && denied.Status == http.StatusUnauthorized {
		// Nothing may be published without a credential: the request, not each message, needs one.
		transport.WriteError(w, denied)
		return
	}
	if granted, retry := a.allow(id, r, len(allowed)); granted < len(allowed) {
		if granted == 0 {
			rateLimited(w, retry)
			return
		}
		// The first ones go; the rest are refused one by one, to be sent again.
		for _, i := range allowed[granted:] {
			results[i].Error = &errorField{Code: "rate_limited", Message: rateMessage(retry)}
			pubs[i] = hub.Publication{Channel: ""}
		}
	}
	res, err := a.hub.Publish(r.Context(), pubs)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	for i, r := range res {
		if results[i].Error != nil {
			continue
		}
		if r.Err != nil {
			results[i].Error = errorFieldOf(r.Err)
			continue
		}
		p := publishedOf(r.Message)
		results[i].published = &p
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

func (a *api) batchPublication(m batchMessage) (hub.Publication, error) {
	// The same code as POST /v1/channels/{channel} answers for a bad name.
	if err := channel.CheckName(m.Channel); err != nil {
		return hub.Publication{}, transport.BadRequest("invalid_channel", err)
	}
	if len(m.Data) == 0 {
		return hub.Publication{}, transport.BadRequest("bad_message", errors.New(`message needs "data"`))
	}
	p := hub.Publication{Channel: m.Channel, Event: m.Event, IdempotencyKey: m.IdempotencyKey,
		ContentType: "application/json", Data: m.Data, TTL: time.Duration(m.TTL) * time.Second}
	if m.ContentType != "" && hub.DataKind(m.ContentType, []byte(`{}`)) != hub.DataJSON {
		var s string
		if err := json.Unmarshal(m.Data, &s); err != nil {
			return p, transport.BadRequest("bad_message", errors.New(`with a non-JSON content_type, "data" must be a string`))
		}
		p.ContentType, p.Data = m.ContentType, []byte(s)
		if m.Encoding == "base64" {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return p, transport.BadRequest("bad_message", fmt.Errorf("data is not base64: %w", err))
			}
			p.Data = b
		}
	} else if m.ContentType != "" {
		p.ContentType = m.ContentType
	}
	if len(p.Data) > a.maxMessageSize {
		return p, transport.Errorf(http.StatusRequestEntityTooLarge, "message_too_large",
			fmt.Sprintf("data is larger than %d bytes", a.maxMessageSize))
	}
	return p, nil
}

func errorFieldOf(err error) *errorField {
	e := transport.AsError(err)
	return &errorField{Code: e.Code, Message: e.Message}
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	name, ok := a.readable(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := defaultHistory
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxHistoryLimit {
			transport.WriteError(w, transport.BadRequest("invalid_limit", fmt.Errorf("limit must be 1 to %d", maxHistoryLimit)))
			return
		}
		limit = n
	}
	var since *channel.Position
	if s := q.Get("since"); s != "" {
		p, err := channel.ParsePosition(s)
		if err != nil {
			transport.WriteError(w, transport.BadRequest("invalid_position", err))
			return
		}
		since = &p
	}
	h, err := a.hub.History(r.Context(), name, since, limit)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	// Built by hand: encoding/json would compact and HTML-escape the envelopes' data, and a
	// published body is delivered as published.
	b := append(make([]byte, 0, 64), `{"messages":[`...)
	for i := range h.Messages {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, hub.NewFrame(h.Messages[i]).SingleEnvelope()...)
	}
	b = append(b, `],"epoch":`...)
	b = strconv.AppendQuote(b, h.Epoch) // epochs are URL-safe ASCII
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, h.Offset, 10)
	if h.Gap {
		b = append(b, `,"gap":true`...)
	}
	b = append(b, "}\n"...)
	writeJSONBytes(w, http.StatusOK, b)
}

func (a *api) clear(w http.ResponseWriter, r *http.Request) {
	name, err := channelParam(r)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	if _, ok := a.authorize(w, r, (*auth.Identity).CheckAdmin); !ok {
		return
	}
	st, err := a.hub.Clear(r.Context(), name)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"channel": name, "epoch": st.Epoch, "offset": st.Offset})
}

// readable returns the request's channel when the caller may read it (the subscribe right);
// otherwise it has answered w.
func (a *api) readable(w http.ResponseWriter, r *http.Request) (string, bool) {
	name, err := channelParam(r)
	if err != nil {
		transport.WriteError(w, err)
		return "", false
	}
	_, ok := a.authorize(w, r, func(id *auth.Identity) error { return id.CheckSubscribe(name) })
	return name, ok
}

func (a *api) info(w http.ResponseWriter, r *http.Request) {
	name, ok := a.readable(w, r)
	if !ok {
		return
	}
	info, err := a.hub.Info(r.Context(), name)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (a *api) presence(w http.ResponseWriter, r *http.Request) {
	name, ok := a.readable(w, r)
	if !ok {
		return
	}
	clients, err := a.hub.Presence(r.Context(), name)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"clients": clients})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	writeJSONBytes(w, status, append(b, '\n'))
}

// The values of the header fields every JSON answer has, shared by all: nothing writes into a
// header's value slices (Header.Add appends to a copy, since they are full).
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
)

// writeJSONBytes answers with b, a JSON document that ends in a line feed.
func writeJSONBytes(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	// Set, without the []string that Header.Set makes for each value on every answer.
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
