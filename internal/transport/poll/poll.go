// Package poll is long polling and polling: GET /v1/poll?wait=N answers
// {"messages":[ENVELOPE,…],"cursor":"…"} as soon as something exists after the request's
// position, or after wait seconds with no messages and the cursor unchanged. The client asks
// again with cursor= the answer's cursor.
//
//   - wait is whole seconds, 0 to 60, 30 when absent; anything else is 400 invalid_wait.
//     wait=0 is polling: the answer is immediate.
//   - Positions are as on every subscribe endpoint (channel=, cursor=, since=); without one a
//     channel starts live, and the first answer may be empty, with the current cursor.
//     crier.gap is a message like any other, as on the streaming transports. Presence events
//     (crier.join, crier.leave) are not delivered: each poll is a short subscription of its
//     own, and polls would answer one another's; GET /v1/channels/{channel}/presence serves.
//   - An answer holds at most MaxBatch messages or about MaxBatchBytes; its cursor stands
//     after the last one it holds, so a client behind collects the rest at once with the next
//     poll. A held poll answers with what arrived before its answer is written, which batches
//     a burst.
//   - The envelope's cursor and the answer's are the request's cursor, naming every channel it
//     follows. ETag is that cursor, quoted. If-None-Match naming it (or *) gives 304 Not
//     Modified when there is no message, with any wait. Cache-Control: no-store.
//   - Each poll subscribes through the hub, which replays what follows the position from
//     history, and unsubscribes once answered: this package keeps no history of its own.
//   - An answer that is ready when the request's subscriptions are made is written at once,
//     through net/http, and the connection stays open for the next request. A poll that waits
//     leaves net/http: over HTTP/1.x its connection is hijacked into the connection layer,
//     where it waits without a goroutine (with a timer for wait), and the answer, with
//     Content-Length, ends it (Connection: close). Over HTTP/2 the request's goroutine waits.
//     The maximum lifetime, a drain (crier.reconnect is in the answer) and a queue over its
//     limit answer a waiting poll with what it has; a client that goes away ends it.
package poll

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/transport"
)

// Transport registers long polling and polling.
var Transport = transport.Transport{Name: "poll", Pattern: "GET /v1/poll", New: newHandler}

// Limits of a poll.
const (
	DefaultWait   = 30 * time.Second
	MaxWait       = 60 // seconds
	MaxBatch      = 100
	MaxBatchBytes = 1 << 20
)

type handler struct{ env *transport.Env }

func newHandler(env *transport.Env) http.Handler { return &handler{env: env} }

// ParseWait parses the wait= values of a request: none is DefaultWait; one is whole seconds
// from 0 to MaxWait in decimal digits.
func ParseWait(values []string) (time.Duration, error) {
	switch len(values) {
	case 0:
		return DefaultWait, nil
	case 1:
	default:
		return 0, fmt.Errorf("give wait= once")
	}
	v := values[0]
	if len(v) == 0 || len(v) > 2 {
		return 0, fmt.Errorf("wait=%q is not whole seconds from 0 to %d", truncate(v), MaxWait)
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, fmt.Errorf("wait=%q is not whole seconds from 0 to %d", truncate(v), MaxWait)
		}
		n = n*10 + int(v[i]-'0')
	}
	if n > MaxWait {
		return 0, fmt.Errorf("wait=%d is more than %d seconds", n, MaxWait)
	}
	return time.Duration(n) * time.Second, nil
}

func truncate(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// NoneMatch reports whether If-None-Match values name etag (given without its quotes), weakly
// or strongly, or are "*". A malformed list matches nothing from where it goes wrong.
func NoneMatch(values []string, etag string) bool {
	for _, v := range values {
		for {
			v = strings.TrimLeft(v, " \t,")
			if v == "" {
				break
			}
			if v[0] == '*' {
				return true
			}
			v = strings.TrimPrefix(v, "W/")
			if v == "" || v[0] != '"' {
				break
			}
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				break
			}
			if v[1:1+end] == etag {
				return true
			}
			v = v[end+2:]
		}
	}
	return false
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait, err := ParseWait(q["wait"])
	if err != nil {
		transport.WriteError(w, transport.BadRequest("invalid_wait", err))
		return
	}
	targets, id, ok := h.env.AdmitSubscribe(w, r, "")
	if !ok {
		return
	}
	p := &poller{h: h, inm: r.Header.Values("If-None-Match")}
	p.subs.Observer = h.env.Observer
	for _, t := range targets {
		if t.Since != nil {
			p.a.tracker.Set(t.Channel, *t.Since)
		}
	}
	client := hub.ClientInfo{Client: transport.NewClientID(), User: id.Subject(), Transport: "poll"}
	ctx, cancel := context.WithTimeout(r.Context(), h.env.SubscribeTimeout)
	for _, t := range targets {
		_, err = p.subs.Subscribe(ctx, h.env.Hub, hub.SubscribeRequest{Channel: t.Channel, Since: t.Since,
			Sink: &p.sink, Client: client})
		if err != nil {
			break
		}
	}
	cancel()
	if err != nil {
		p.subs.Close()
		transport.WriteError(w, err)
		return
	}
	if frames, ready := p.sink.answerNow(wait == 0); ready {
		p.subs.Close()
		for _, f := range frames {
			if p.a.add(f) {
				break
			}
		}
		p.writeAnswer(w)
		return
	}
	if exp := id.Expires(); !exp.IsZero() {
		// A token that expires meanwhile ends the wait: the next poll needs a new one.
		wait = max(0, min(wait, time.Until(exp)))
	}
	p.hold(w, r, wait)
}

// writeAnswer answers through net/http, the connection staying open.
func (p *poller) writeAnswer(w http.ResponseWriter) {
	body, etag, notModified := p.a.finish(p.inm)
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("ETag", etag)
	if notModified {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// hold makes the poll wait on a connection of the connection layer until it answers.
func (p *poller) hold(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	env := p.h.env
	c, buffered, err := env.Conns.Accept(w, r, p)
	if err != nil {
		p.subs.Close()
		env.Logger.Warn("poll: cannot take connection", "err", err)
		return
	}
	p.c, p.raw = c, !c.Attached()
	p.release = transport.KeepConnSlot(r)
	p.sink.attach(c)
	p.timer = time.AfterFunc(wait, func() { c.Close(reasonWait) })
	env.Observer.Connected("poll", 1)
	if err := env.Conns.Start(c, buffered); err != nil {
		return // Closed has run
	}
	env.Conns.Serve(c)
}

// reasonWait closes a poll whose wait is over: it answers with what it has.
var reasonWait = conn.Reason{Code: "wait_elapsed", Message: "nothing new within wait="}

// sink receives the poll's frames: collected while the handler decides whether to answer at
// once, then handed to the connection it waits on.
type sink struct {
	mu       sync.Mutex
	frames   []*hub.Frame
	content  bool       // a frame other than a start came
	c        *conn.Conn // once the poll waits
	answered bool       // answered by the handler: frames are dropped
}

func (k *sink) Deliver(f *hub.Frame) {
	if f.Kind == hub.KindMessage && (f.Msg.Event == hub.EventJoin || f.Msg.Event == hub.EventLeave) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.answered:
	case k.c != nil:
		k.c.Deliver(f)
	default:
		k.frames = append(k.frames, f)
		k.content = k.content || f.Kind != hub.KindStart
	}
}

// answerNow returns the frames collected and true when the handler answers now: when now is
// set or something other than a start came. Frames delivered later are dropped.
func (k *sink) answerNow(now bool) ([]*hub.Frame, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !now && !k.content {
		return nil, false
	}
	k.answered = true
	frames := k.frames
	k.frames = nil
	return frames, true
}

// attach queues what was collected on c, then the mark that answers if any of it is content,
// and from then on hands frames to c.
func (k *sink) attach(c *conn.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range k.frames {
		c.Deliver(f)
	}
	k.frames = nil
	c.Enqueue(conn.Item{Note: mark{}})
	k.c = c
}

// mark, rendered, answers the poll if it holds a message; the first one also starts the wait.
type mark struct{}

// answer builds a poll's answer.
type answer struct {
	tracker transport.Tracker
	body    []byte
	n       int
	scratch []byte // a multi-channel cursor
}

// add adds a frame; it reports whether the answer is full (or holds crier.reconnect) and must
// be sent now, without what follows.
func (a *answer) add(f *hub.Frame) bool {
	a.tracker.Update(f)
	if f.Kind == hub.KindStart {
		return false
	}
	if a.n == 0 {
		a.body = append(a.body[:0], `{"messages":[`...)
	} else {
		a.body = append(a.body, ',')
	}
	if a.tracker.Single() {
		a.body = append(a.body, f.SingleEnvelope()...)
	} else {
		a.scratch = a.tracker.AppendTo(a.scratch[:0])
		a.body = f.AppendEnvelope(a.body, a.scratch)
	}
	a.n++
	return a.n >= MaxBatch || len(a.body) >= MaxBatchBytes || f.Msg.Event == hub.EventReconnect
}

// finish returns the answer's body, its ETag, and whether it is 304 Not Modified instead.
func (a *answer) finish(ifNoneMatch []string) (body []byte, etag string, notModified bool) {
	cursor := a.tracker.String()
	etag = `"` + cursor + `"`
	if a.n == 0 {
		if NoneMatch(ifNoneMatch, cursor) {
			return nil, etag, true
		}
		a.body = append(a.body[:0], `{"messages":[`...)
	}
	a.body = append(a.body, `],"cursor":"`...)
	a.body = append(a.body, cursor...)
	a.body = append(a.body, `"}`...)
	return a.body, etag, false
}

// poller is a waiting poll's protocol state.
type poller struct {
	h       *handler
	inm     []string // If-None-Match
	subs    transport.Subs
	sink    sink
	c       *conn.Conn
	raw     bool // hijacked: the answer's head is ours to write
	timer   *time.Timer
	release func() // the connection's count against the connection limits

	// Writer-owned.
	a        answer
	waiting  bool // the first mark has passed: the next message answers
	marked   bool // a mark is queued
	answered bool
	status   int
	etag     string
	length   int
}

func (p *poller) Render(dst []byte, it *conn.Item) ([]byte, bool) {
	if p.answered {
		return dst, true
	}
	if _, ok := it.Note.(mark); ok {
		p.marked = false
		if p.a.n > 0 {
			return p.answer(dst), true
		}
		p.waiting = true
		return dst, false
	}
	f := it.Frame
	if f == nil {
		return dst, false
	}
	if p.a.add(f) {
		return p.answer(dst), true
	}
	if f.Kind != hub.KindStart && p.waiting && !p.marked {
		// Answer once what is queued behind this message is rendered too.
		p.marked = true
		p.c.Enqueue(conn.Item{Note: mark{}})
	}
	return dst, false
}

// answer appends the answer: with its head on a hijacked connection, the body alone on an
// attached one, whose head WriteHead gives.
func (p *poller) answer(dst []byte) []byte {
	p.answered = true
	body, etag, notModified := p.a.finish(p.inm)
	p.etag, p.length, p.status = etag, len(body), http.StatusOK
	if notModified {
		p.status = http.StatusNotModified
	}
	if !p.raw {
		return append(dst, body...)
	}
	if notModified {
		dst = append(dst, "HTTP/1.1 304 Not Modified\r\n"...)
	} else {
		dst = append(dst, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "Cache-Control: no-store\r\nETag: "...)
	dst = append(dst, etag...)
	dst = append(dst, "\r\nConnection: close\r\n\r\n"...)
	return append(dst, body...)
}

// WriteHead gives an attached poll's head, once its answer is rendered.
func (p *poller) WriteHead(h http.Header) int {
	if !p.answered {
		return http.StatusNoContent // the peer is gone: nothing was answered
	}
	h.Set("Cache-Control", "no-store")
	h.Set("ETag", p.etag)
	if p.status == http.StatusOK {
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(p.length))
	}
	return p.status
}

// Heartbeat writes nothing: the answer is one JSON body.
func (p *poller) Heartbeat(dst []byte) []byte { return dst }

// Goodbye answers with what the poll has, unless it has answered.
func (p *poller) Goodbye(dst []byte, _ conn.Reason) []byte {
	if p.answered {
		return dst
	}
	return p.answer(dst)
}

// Read ignores what the client sends.
func (p *poller) Read(*conn.Conn, []byte) error { return nil }

func (p *poller) Closed(*conn.Conn, conn.Reason) {
	p.timer.Stop()
	p.subs.Close()
	p.release()
	p.h.env.Observer.Connected("poll", -1)
}
