package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/crier-push/crier/internal/channel"
)

// SubscribeOptions are the optional parts of a subscription.
type SubscribeOptions struct {
	// Cursor resumes a subscription right after the message that carried it.
	Cursor string
	// OnRetry, when set, is told of each lost connection and how long until the next attempt.
	// It runs on the subscription's goroutine and must not block.
	OnRetry func(err error, delay time.Duration)
}

// ReconnectError is how a subscription reports that the server, draining, asked it to come back.
type ReconnectError struct{ After time.Duration }

func (e *ReconnectError) Error() string {
	return fmt.Sprintf("crier: server is draining, reconnect after %s", e.After)
}

var (
	errClosed      = errors.New("crier: subscription closed")
	errIdle        = errors.New("crier: no data or heartbeat from the server, reconnecting")
	errStreamEnded = errors.New("crier: event stream ended")
	errNoChannel   = errors.New("crier: subscribe: no channel and no cursor")
)

// Subscription is a live SSE subscription. It reconnects on its own whenever the connection is
// lost, resuming from the last cursor, so that Events yields each message once and in order.
type Subscription struct {
	c        *Client
	channels []string
	opts     SubscribeOptions
	events   chan Envelope
	done     chan struct{}
	cancel   context.CancelCauseFunc

	// pos is the position of each channel as far as the caller has it, to drop any message the
	// server sends twice across a reconnection. Only the subscription's goroutine uses it.
	pos map[string]channel.Position

	mu     sync.Mutex
	cursor string
	err    error
}

// Subscribe subscribes to channels (and to those opts.Cursor names) over SSE. The subscription
// runs until ctx ends, Close is called, or the server refuses it for good (a 4xx answer other
// than 408, 425 and 429); then Events is closed and Err says why.
// crier.reconnect events are handled here and not delivered.
func (c *Client) Subscribe(ctx context.Context, channels []string, opts SubscribeOptions) *Subscription {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &Subscription{
		c:        c,
		channels: append([]string(nil), channels...),
		opts:     opts,
		events:   make(chan Envelope),
		done:     make(chan struct{}),
		cancel:   cancel,
		pos:      map[string]channel.Position{},
		cursor:   opts.Cursor,
	}
	s.learnCursor(opts.Cursor)
	go s.run(ctx)
	return s
}

// Events yields the subscription's envelopes. It is unbuffered, so that Cursor is that of the
// last envelope received from it. It is closed when the subscription ends.
func (s *Subscription) Events() <-chan Envelope { return s.events }

// Err returns why the subscription ended once Events is closed: nil after Close, the context's
// error when it ended, or the server's refusal.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Cursor returns the cursor after the last envelope delivered, for resuming later with
// SubscribeOptions.Cursor.
func (s *Subscription) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// Close ends the subscription and waits for its goroutine to finish.
func (s *Subscription) Close() error {
	s.cancel(errClosed)
	<-s.done
	return nil
}

func (s *Subscription) run(ctx context.Context) {
	defer close(s.done)
	defer close(s.events)
	err := s.loop(ctx)
	if errors.Is(context.Cause(ctx), errClosed) {
		err = nil
	}
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *Subscription) loop(ctx context.Context) error {
	if len(s.channels) == 0 && s.Cursor() == "" {
		return errNoChannel
	}
	bo := backoff{base: s.c.minBackoff, max: s.c.maxBackoff}
	for attempt := 0; ; attempt++ {
		err := s.connect(ctx, attempt == 0, &bo)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanent(err) {
			return err
		}
		delay := retryDelay(err, &bo)
		if s.opts.OnRetry != nil {
			s.opts.OnRetry(err, delay)
		}
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
	}
}

// permanent reports whether err means the server will never accept this subscription as is.
func permanent(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return !ae.temporary()
	}
	var ce *contentTypeError
	return errors.As(err, &ce)
}

// retryDelay is how long to wait before the next attempt after err.
func retryDelay(err error, bo *backoff) time.Duration {
	var re *ReconnectError
	if errors.As(err, &re) {
		// Spread the clients of a draining server over half as long again.
		return re.After + rand.N(re.After/2+1)
	}
	d := bo.next()
	var ae *APIError
	if errors.As(err, &ae) && ae.retryAfter > d {
		d = ae.retryAfter
	}
	return d
}

type contentTypeError struct{ got string }

func (e *contentTypeError) Error() string {
	return fmt.Sprintf("crier: the server answered %q, not an event stream: is the URL a Crier server?", e.got)
}

// connect runs one SSE connection until it ends, delivering its events.
func (s *Subscription) connect(ctx context.Context, first bool, bo *backoff) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := s.open(ctx, first)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	bo.reset() // the server took us: the next loss starts the backoff afresh

	var body io.Reader = resp.Body
	if s.c.idleTimeout > 0 {
		ir := &idleReader{r: resp.Body, timer: time.AfterFunc(time.Hour, func() { cancel(errIdle) }), d: s.c.idleTimeout}
		ir.timer.Stop()
		defer ir.timer.Stop()
		body = ir
	}
	p := newSSEParser(body, s.c.maxEvent)
	for {
		ev, err := p.Next()
		if p.retry > 0 {
			bo.base = min(p.retry, bo.max) // the server's advice on how soon to come back
		}
		if err != nil {
			if errors.Is(context.Cause(ctx), errIdle) {
				return errIdle
			}
			if errors.Is(err, io.EOF) {
				return errStreamEnded
			}
			return fmt.Errorf("crier: reading events: %w", err)
		}
		if err := s.handle(ctx, ev); err != nil {
			return err
		}
	}
}

// open sends the subscribe request: the cursor goes in the URL the first time, and as
// Last-Event-ID, as browsers send it, on every reconnection.
func (s *Subscription) open(ctx context.Context, first bool) (*http.Response, error) {
	q := url.Values{}
	if len(s.channels) > 0 {
		q["channel"] = s.channels
	}
	cursor := s.Cursor()
	if first && cursor != "" {
		q.Set("cursor", cursor)
	}
	req, err := s.c.newRequest(ctx, http.MethodGet, "/v1/sse", q, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if !first && cursor != "" {
		req.Header.Set("Last-Event-ID", cursor)
	}
	resp, err := s.c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("crier: subscribe: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		return nil, &contentTypeError{resp.Header.Get("Content-Type")}
	}
	return resp, nil
}

// handle delivers one event to the caller unless it is a duplicate or a control event.
func (s *Subscription) handle(ctx context.Context, ev sseEvent) error {
	if ev.IDOnly {
		// A subscription's start: where the server stands for each channel.
		s.learnCursor(ev.ID)
		s.setCursor(ev.ID)
		return nil
	}
	env := Envelope{Raw: ev.Data}
	if err := json.Unmarshal(ev.Data, &env); err != nil {
		return fmt.Errorf("crier: bad envelope from server: %w", err)
	}
	if !s.advance(&env) {
		return nil
	}
	if env.Event == EventReconnect {
		var d struct {
			AfterMS int64 `json:"after_ms"`
		}
		_ = json.Unmarshal(env.Data, &d) // missing or bad: come back at once
		return &ReconnectError{After: time.Duration(max(d.AfterMS, 0)) * time.Millisecond}
	}
	cursor := env.Cursor
	if ev.HasID {
		cursor = ev.ID
	}
	// The cursor moves before the hand-over so that a caller who has env sees it in Cursor,
	// and moves back if the hand-over does not happen.
	prev := s.setCursor(cursor)
	select {
	case s.events <- env:
		return nil
	case <-ctx.Done():
		s.setCursor(prev)
		return context.Cause(ctx)
	}
}

// advance moves the channel's position past env, as the server's hub does, and reports
// whether env is new: a message at or before the position in the same epoch was delivered.
func (s *Subscription) advance(env *Envelope) bool {
	switch env.Event {
	case EventJoin, EventLeave, EventReconnect:
		return true // these stand at the channel's position without moving it
	case EventGap:
		s.pos[env.Channel] = channel.Position{Epoch: env.Epoch, Offset: env.Offset}
		return true
	}
	if p, ok := s.pos[env.Channel]; ok && p.Epoch == env.Epoch && env.Offset <= p.Offset {
		return false
	}
	s.pos[env.Channel] = channel.Position{Epoch: env.Epoch, Offset: env.Offset}
	return true
}

// learnCursor records the positions a cursor holds; one that does not parse teaches nothing.
func (s *Subscription) learnCursor(cursor string) {
	if cursor == "" {
		return
	}
	c, err := channel.ParseCursor(cursor)
	if err != nil {
		return
	}
	for _, e := range c {
		s.pos[e.Channel] = e.Position
	}
}

// setCursor sets the cursor unless c is empty, and returns the previous one.
func (s *Subscription) setCursor(c string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.cursor
	if c != "" {
		s.cursor = c
	}
	return prev
}

// idleReader cancels the connection when the server has sent nothing for d. Its timer runs
// only while waiting for the server, so a slow consumer is not mistaken for a dead server.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	ir.timer.Reset(ir.d)
	n, err := ir.r.Read(p)
	ir.timer.Stop()
	return n, err
}

// backoff yields exponentially growing delays with "equal jitter": each is between half and
// all of base·2^attempt, capped at max.
type backoff struct {
	base, max time.Duration
	attempt   int
}

func (b *backoff) next() time.Duration {
	d := max(b.base, time.Millisecond) // never a busy loop
	for i := 0; i < b.attempt && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.attempt++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.attempt = 0 }

// sleep waits d or until ctx ends, and reports whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
