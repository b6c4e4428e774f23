// Package client is the Go client of Crier: publish to channels, read their history, and
// subscribe over Server-Sent Events with automatic, gap-free resumption.
//
//	c := client.New("http://127.0.0.1:8080", client.WithToken(tok))
//	res, err := c.Publish(ctx, "chat:lobby", []byte(`{"text":"hi"}`), client.PublishOptions{})
//	sub := c.Subscribe(ctx, []string{"chat:lobby"}, client.SubscribeOptions{})
//	defer sub.Close()
//	for env := range sub.Events() { … }
//	err = sub.Err()
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Client talks to one Crier server. It is safe for concurrent use.
type Client struct {
	base        string
	token       string
	hc          *http.Client
	minBackoff  time.Duration
	maxBackoff  time.Duration
	idleTimeout time.Duration
	maxEvent    int
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends token (a JWT or an API key) as "Authorization: Bearer".
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient sets the HTTP client. Its Timeout must be zero for Subscribe, whose requests
// last as long as the subscription; use contexts to bound calls instead.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithBackoff bounds the delay between reconnection attempts of a subscription. The delay
// starts at initial (or the server's SSE retry:), doubles per failed attempt up to maximum,
// and is jittered so that many clients do not come back at once. Defaults 500ms and 30s.
func WithBackoff(initial, maximum time.Duration) Option {
	return func(c *Client) {
		c.minBackoff = max(initial, time.Millisecond)
		c.maxBackoff = max(maximum, c.minBackoff)
	}
}

// WithIdleTimeout sets how long a subscription waits without receiving a byte, heartbeats
// included, before it treats the connection as dead and reconnects. Default 60s, which is four
// of the server's default 15s heartbeats; 0 disables it.
func WithIdleTimeout(d time.Duration) Option { return func(c *Client) { c.idleTimeout = d } }

// WithMaxEventSize bounds one server-sent line or event (default 16 MiB).
func WithMaxEventSize(n int) Option { return func(c *Client) { c.maxEvent = n } }

// New returns a client of the server at baseURL, such as "http://127.0.0.1:8080".
func New(baseURL string, opts ...Option) *Client {
	c := &Client{
		base:        strings.TrimRight(baseURL, "/"),
		hc:          http.DefaultClient,
		minBackoff:  500 * time.Millisecond,
		maxBackoff:  30 * time.Second,
		idleTimeout: 60 * time.Second,
		maxEvent:    16 << 20,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// PublishOptions are the optional parts of a publish.
type PublishOptions struct {
	// ContentType of data. Empty guesses: application/json when data is valid JSON, text/plain
	// when it is UTF-8, application/octet-stream otherwise.
	ContentType string
	// Event type; empty is "message". Names starting "crier." are reserved.
	Event string
	// TTL drops the message from history after this long (rounded up to whole seconds).
	TTL time.Duration
	// IdempotencyKey makes a retried publish happen once within the server's dedup window.
	IdempotencyKey string
}

// PublishResult is where a published message landed.
type PublishResult struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
	Cursor  string `json:"cursor"`
}

// Publish publishes data on channel.
func (c *Client) Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (PublishResult, error) {
	q := url.Values{}
	if opts.Event != "" {
		q.Set("event", opts.Event)
	}
	if opts.TTL > 0 {
		q.Set("ttl", strconv.FormatInt(int64(math.Ceil(opts.TTL.Seconds())), 10))
	}
	ct := opts.ContentType
	if ct == "" {
		ct = GuessContentType(data)
	}
	h := http.Header{"Content-Type": {ct}}
	if opts.IdempotencyKey != "" {
		h.Set("Idempotency-Key", opts.IdempotencyKey)
	}
	var res PublishResult
	err := c.do(ctx, http.MethodPost, channelPath(channel), q, h, bytes.NewReader(data), &res)
	return res, err
}

// GuessContentType is the content type Publish sends when none is given.
func GuessContentType(data []byte) string {
	switch {
	case json.Valid(data):
		return "application/json"
	case utf8.Valid(data):
		return "text/plain; charset=utf-8"
	default:
		return "application/octet-stream"
	}
}

// BatchMessage is one message of PublishBatch. Data is a JSON value.
type BatchMessage struct {
	Channel        string          `json:"channel"`
	Data           json.RawMessage `json:"data"`
	Event          string          `json:"event,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

// BatchResult is the outcome of one message of a batch: a result, or Err.
type BatchResult struct {
	PublishResult
	Err *APIError
}

// PublishBatch publishes several messages in one request. The results are in the order of
// msgs; each message fails or succeeds on its own.
func (c *Client) PublishBatch(ctx context.Context, msgs []BatchMessage) ([]BatchResult, error) {
	body, err := json.Marshal(map[string]any{"messages": msgs})
	if err != nil {
		return nil, fmt.Errorf("crier: encode batch: %w", err)
	}
	var ans struct {
		Results []struct {
			PublishResult
			Error *apiErrorBody `json:"error"`
		} `json:"results"`
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if err := c.do(ctx, http.MethodPost, "/v1/publish", nil, h, bytes.NewReader(body), &ans); err != nil {
		return nil, err
	}
	out := make([]BatchResult, len(ans.Results))
	for i, r := range ans.Results {
		out[i].PublishResult = r.PublishResult
		if r.Error != nil {
			out[i].Err = &APIError{Code: r.Error.Code, Message: r.Error.Message}
		}
	}
	return out, nil
}

// HistoryResult is a slice of a channel's history.
type HistoryResult struct {
	Messages []Envelope `json:"messages"`
	Epoch    string     `json:"epoch"`
	Offset   uint64     `json:"offset"` // the channel's latest offset
	// Gap is set when part of what follows since is no longer held (or its epoch is gone).
	Gap bool `json:"gap"`
}

// History returns a channel's messages after since (EPOCH:OFFSET), oldest first, or the newest
// limit messages when since is empty. limit <= 0 leaves the bound to the server.
func (c *Client) History(ctx context.Context, channel, since string, limit int) (HistoryResult, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var res HistoryResult
	err := c.do(ctx, http.MethodGet, channelPath(channel)+"/messages", q, nil, nil, &res)
	return res, err
}

// ClearHistory drops a channel's history; the channel gets a new epoch.
func (c *Client) ClearHistory(ctx context.Context, channel string) error {
	return c.do(ctx, http.MethodDelete, channelPath(channel)+"/messages", nil, nil, nil, nil)
}

// ChannelInfo describes a channel.
type ChannelInfo struct {
	Channel     string `json:"channel"`
	Epoch       string `json:"epoch"`
	Offset      uint64 `json:"offset"`
	Subscribers int    `json:"subscribers"`
}

// Channel returns a channel's position and subscriber count.
func (c *Client) Channel(ctx context.Context, name string) (ChannelInfo, error) {
	var res ChannelInfo
	err := c.do(ctx, http.MethodGet, channelPath(name), nil, nil, nil, &res)
	return res, err
}

// Presence is one client subscribed to a channel.
type Presence struct {
	Client    string `json:"client"`
	User      string `json:"user"`
	Transport string `json:"transport"`
}

// Presence lists the clients subscribed to channel; its namespace must enable presence.
func (c *Client) Presence(ctx context.Context, channel string) ([]Presence, error) {
	var res struct {
		Clients []Presence `json:"clients"`
	}
	err := c.do(ctx, http.MethodGet, channelPath(channel)+"/presence", nil, nil, nil, &res)
	return res.Clients, err
}

func channelPath(name string) string { return "/v1/channels/" + url.PathEscape(name) }

// do sends one API request and decodes a 2xx JSON answer into out (when out is not nil).
func (c *Client) do(ctx context.Context, method, path string, q url.Values, h http.Header, body io.Reader, out any) error {
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("crier: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) // lets the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("crier: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("crier: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "crier-go-client")
	return req, nil
}

type apiErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// decodeError turns a non-2xx answer into an *APIError, whatever its body.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	e := &APIError{Status: resp.StatusCode}
	var body struct {
		Error *apiErrorBody `json:"error"`
	}
	if json.Unmarshal(b, &body) == nil && body.Error != nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	if e.Code == "" {
		e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "_"))
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(b)) // not Crier's answer: maybe a proxy's
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.retryAfter = time.Duration(s) * time.Second
	}
	return e
}

// IsStatus reports whether err is an *APIError with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}
