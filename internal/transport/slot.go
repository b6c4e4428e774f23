package transport

import (
	"context"
	"net/http"
	"sync/atomic"
)

// A subscribe request counts as one connection against --max-conns and --max-conns-per-ip
// from the moment the server admits it. The server takes the count before the transport's
// handler runs (so that a refused client gets 429 before any upgrade) and gives it back when
// the handler returns, unless the transport kept it: a transport that holds the connection
// past its handler (it hijacked it and handed it to the connection layer) calls KeepConnSlot
// and releases the slot when the connection ends, typically in its Protocol's Closed.

type slotKey struct{}

type connSlot struct {
	release func()
	kept    atomic.Bool
}

// WithConnSlot returns a context that carries a counted connection, and the function the
// server calls once the handler has returned: it releases the count unless a transport kept
// it.
func WithConnSlot(ctx context.Context, release func()) (context.Context, func()) {
	s := &connSlot{release: release}
	return context.WithValue(ctx, slotKey{}, s), func() {
		if !s.kept.Load() {
			s.release()
		}
	}
}

// KeepConnSlot hands the request's counted connection to the transport, which must call the
// returned function once the connection has ended (it may be called more than once). Without
// a counted connection (no limit configured, tests) it returns a function that does nothing.
func KeepConnSlot(r *http.Request) (release func()) {
	s, _ := r.Context().Value(slotKey{}).(*connSlot)
	if s == nil || !s.kept.CompareAndSwap(false, true) {
		return func() {}
	}
	return s.release
}
