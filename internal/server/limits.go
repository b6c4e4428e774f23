package server

// What guards every request before a handler sees it (SPEC section 7, docs/security.md): the
// origin check and CORS, the request body's size and read deadline, the write deadline of plain
// answers, and the count of subscriber connections in all and per IP.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/limit"
	"github.com/crier-push/crier/internal/origin"
	"github.com/crier-push/crier/internal/transport"
)

// guards is what New builds from the configuration for the checks of this file.
type guards struct {
	auth        *auth.Authorizer
	origins     *origin.List
	proxies     limit.Proxies
	connLimit   *limit.Conns
	publishRate *limit.Publish
	maxBody     int64
	readTimeout time.Duration
	writeTime   time.Duration
	// loopbackOnly refuses requests naming a non-loopback Host: an open server (no auth, no
	// --insecure) trusts everyone who can reach it, and DNS rebinding would let any web page
	// reach a server on 127.0.0.1 under the page's own host name.
	loopbackOnly bool
}

func newGuards(cfg config.Config, a *auth.Authorizer) (guards, error) {
	origins, err := origin.Parse(cfg.AllowOrigins)
	if err != nil {
		return guards{}, fmt.Errorf("allow-origin: %w", err)
	}
	proxies, err := limit.ParseProxies(cfg.TrustedProxies)
	if err != nil {
		return guards{}, fmt.Errorf("trust-proxy: %w", err)
	}
	rate, err := cfg.PublishLimit()
	if err != nil {
		return guards{}, fmt.Errorf("publish-rate: %w", err)
	}
	return guards{
		auth:        a,
		origins:     origins,
		proxies:     proxies,
		connLimit:   limit.NewConns(cfg.MaxConns, cfg.MaxConnsPerIP),
		publishRate: limit.NewPublish(rate, nil),
		maxBody:     int64(cfg.MaxBodySize()),
		readTimeout: cfg.ReadTimeout,
		writeTime:   cfg.WriteTimeout,

		loopbackOnly: !cfg.AuthConfigured() && !cfg.Insecure,
	}, nil
}

// newAuthorizer builds the node's authorizer from the auth settings. PEM files and a JWKS file
// are read now, so that a mistake stops the server at start-up; a JWKS URL is fetched by
// startAuth.
func newAuthorizer(cfg config.Config, logger *slog.Logger) (*auth.Authorizer, error) {
	return auth.New(auth.Config{
		JWTSecret:      cfg.JWTSecret,
		PublicKeyFiles: cfg.JWTPublicKeys,
		JWKS:           cfg.JWKS,
		APIKeys:        cfg.APIKeys,
		Anonymous:      cfg.Anonymous,
		Logger:         logger,
	})
}

// jwksStartTimeout bounds the first fetch of a JWKS URL at start-up.
const jwksStartTimeout = 10 * time.Second

// startAuth fetches a JWKS URL once, so that keys are held before the first request (a
// failure is logged: the refresh loop retries within a second, and tokens are refused until
// it succeeds), then keeps the set fresh until the returned function is called.
func startAuth(a *auth.Authorizer, logger *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	rctx, rcancel := context.WithTimeout(ctx, jwksStartTimeout)
	if err := a.Refresh(rctx); err != nil {
		logger.Error("jwks: first fetch failed; tokens signed by its keys are refused until a fetch succeeds", "err", err)
	}
	rcancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// clientKey names the client of r for per-IP limits: its address (X-Forwarded-For only from
// --trust-proxy), an IPv6 one by its /64.
func (g *guards) clientKey(r *http.Request) string { return g.proxies.ClientKey(r) }

// Headers a browser may send cross-origin, and those it may read, beside the safelisted ones.
const (
	corsMethods = "GET, POST, DELETE, OPTIONS"
	corsHeaders = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, If-None-Match, Cache-Control"
	corsExpose  = "Retry-After, Idempotent-Replayed, ETag, WWW-Authenticate, Location"
	corsMaxAge  = "600"
)

// guard runs first for every request:
//
//   - the Origin check: a browser request from an origin that is neither the server's own nor
//     allowed by --allow-origin is answered 403 origin_not_allowed, preflights included, so that
//     another site can neither read answers nor act through a user's cookie; an allowed one gets
//     CORS headers (credentials only for a listed origin, never for "*", whose requests' cookies
//     are dropped);
//   - the request body: at most MaxBodySize bytes (a handler's own smaller limit applies
//     too), and read within --read-timeout;
//   - the write deadline: cleared, so that one set for an earlier request on this kept-alive
//     connection cannot cut a stream; plain answers set their own (plain).
func (g *guards) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.loopbackOnly && !loopbackHost(r.Host) {
			transport.WriteError(w, transport.Errorf(http.StatusForbidden, "host_not_allowed",
				"without auth this server answers only requests addressed to a loopback host (localhost, 127.0.0.1, [::1]); configure auth or --insecure to serve other host names"))
			return
		}
		verdict, from := g.origins.Check(r)
		h := w.Header()
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions && verdict != origin.Absent && r.Header.Get("Access-Control-Request-Method") != "" {
			g.preflight(w, verdict, from)
			return
		}
		switch verdict {
		case origin.Refused:
			transport.WriteError(w, originRefused(from))
			return
		case origin.Listed:
			h.Set("Access-Control-Allow-Origin", from)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Set("Access-Control-Expose-Headers", corsExpose)
		case origin.Any:
			h.Set("Access-Control-Allow-Origin", "*")
			h.Set("Access-Control-Expose-Headers", corsExpose)
			if r.Header.Get("Cookie") != "" {
				// "*" never lends a user's cookie to a site nobody listed.
				r = r.WithContext(r.Context())
				r.Header = r.Header.Clone()
				r.Header.Del("Cookie")
			}
		}
		rc := http.NewResponseController(w)
		if r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(time.Now().Add(g.readTimeout))
			r.Body = http.MaxBytesReader(w, &deadlineBody{ReadCloser: r.Body, rc: rc}, g.maxBody)
		}
		_ = rc.SetWriteDeadline(time.Time{})
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a Host header names a loopback address or localhost.
// It runs for every request of an open server, so a loopback host costs no allocation: the port
// is split off only when there is one, and the address is parsed by net/netip.
func loopbackHost(hostport string) bool {
	host := hostport
	if strings.LastIndexByte(hostport, ':') > strings.LastIndexByte(hostport, ']') {
		if h, _, err := net.SplitHostPort(hostport); err == nil {
			host = h
		}
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	const suffix = ".localhost"
	if asciiEqualFold(host, "localhost") ||
		len(host) >= len(suffix) && asciiEqualFold(host[len(host)-len(suffix):], suffix) {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.IsLoopback()
}

// asciiEqualFold compares host names without case, in ASCII only: strings.EqualFold would also
// take Unicode look-alikes ("localhoſt") for the name, which a Host header cannot carry.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func originRefused(from string) *transport.Error {
	if len(from) > 100 {
		from = from[:100] + "…"
	}
	return transport.Errorf(http.StatusForbidden, "origin_not_allowed",
		fmt.Sprintf("requests from the web origin %q are not allowed here (the server's --allow-origin lists those that are)", from))
}

// preflight answers a CORS preflight: 204 with what an allowed origin may send, 403 for
// another.
func (g *guards) preflight(w http.ResponseWriter, verdict origin.Verdict, from string) {
	h := w.Header()
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	switch verdict {
	case origin.Same, origin.Listed:
		h.Set("Access-Control-Allow-Origin", from)
		h.Set("Access-Control-Allow-Credentials", "true")
	case origin.Any:
		h.Set("Access-Control-Allow-Origin", "*")
	default:
		transport.WriteError(w, originRefused(from))
		return
	}
	h.Set("Access-Control-Allow-Methods", corsMethods)
	h.Set("Access-Control-Allow-Headers", corsHeaders)
	h.Set("Access-Control-Max-Age", corsMaxAge)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// deadlineBody ends the read deadline the guard set once the body is read to its end, when the
// server starts its own background read of the connection, which must not inherit it (a
// request held open after its body, such as a long poll, would see its context cancelled).
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// plain bounds the time a plain answer (the HTTP API, health, metrics) may take to write:
// --write-timeout from the start of the request. Streaming transports set their own.
func (g *guards) plain(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(g.writeTime))
		next.ServeHTTP(w, r)
	})
}

// counted counts a subscribe request as a connection against --max-conns and
// --max-conns-per-ip before its transport sees it, answering 429 too_many_connections past
// either (before any upgrade). The count ends when the handler returns, or, for a transport
// that keeps the connection (transport.KeepConnSlot), when it says so.
func (g *guards) counted(next http.Handler) http.Handler {
	if g.connLimit == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		release, err := g.connLimit.Acquire(g.clientKey(r))
		if err != nil {
			transport.WriteError(w, transport.Errorf(http.StatusTooManyRequests, "too_many_connections", err.Error()))
			return
		}
		ctx, done := transport.WithConnSlot(r.Context(), release)
		defer done()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// rateLimited is the answer to a publish over --publish-rate.
func rateLimited(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", retryAfter(retry))
	transport.WriteError(w, transport.Errorf(http.StatusTooManyRequests, "rate_limited", rateMessage(retry)))
}

func rateMessage(retry time.Duration) string {
	return "publishing faster than this server allows; retry in " + retryAfter(retry) + " s"
}

// retryAfter is a Retry-After value: whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}

// isTimeout reports whether a body read failed on the read deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
