// Package server assembles a Crier node: the store, the hub, the connection layer, every
// registered transport, the HTTP API, health and metrics, and the drain on shutdown.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/keepalive"
	"github.com/crier-push/crier/internal/metrics"
	"github.com/crier-push/crier/internal/transport"
	"github.com/crier-push/crier/internal/transport/iframe"
	"github.com/crier-push/crier/internal/transport/multipart"
	"github.com/crier-push/crier/internal/transport/poll"
	"github.com/crier-push/crier/internal/transport/sse"
	"github.com/crier-push/crier/internal/transport/stream"
	"github.com/crier-push/crier/internal/transport/ws"
	"github.com/crier-push/crier/internal/web"
)

// Transports lists every push transport a node serves.
var Transports = []transport.Transport{sse.Transport, ws.Transport, stream.Transport,
	multipart.Transport, iframe.Transport, poll.Transport}

// Server is one Crier node.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	store   hub.Store
	hub     *hub.Hub
	conns   *conn.Server
	metrics *metrics.Metrics
	http    *http.Server
	// ka serves the requests that follow a publish on a kept-alive connection (plain HTTP).
	ka    *keepalive.Server
	drain chan struct{}
	// g holds auth, origins and limits (limits.go).
	g guards
	// requests counts HTTP requests under way, which the drain waits for.
	requests atomic.Int64
}

// New builds a node from cfg without listening yet.
func New(cfg config.Config, logger *slog.Logger) (*Server, error) {
	authz, err := newAuthorizer(cfg, logger)
	if err != nil {
		return nil, err
	}
	g, err := newGuards(cfg, authz)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := newTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	st, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: logger, store: st, drain: make(chan struct{}), g: g}
	conns, err := conn.NewServer(conn.Config{
		Limits:       conn.Limits{QueueItems: cfg.QueueSize, QueueBytes: cfg.QueueBytes},
		Heartbeat:    cfg.Heartbeat,
		MaxLifetime:  cfg.MaxLifetime,
		WriteTimeout: cfg.WriteTimeout,
		Logger:       logger,
	})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	s.conns = conns
	s.metrics = metrics.New(metrics.Readings{
		SlowDisconnects: func() float64 { return float64(conns.SlowDisconnects()) },
		Channels:        func() float64 { return float64(s.hub.Channels()) },
		PublisherConns:  func() float64 { return float64(s.ka.Open()) },
	})
	s.hub = hub.New(hub.Config{Store: st, Namespaces: cfg.Namespace, DedupWindow: cfg.DedupWindow,
		Observer: s.metrics, Logger: logger, Batch: conns.Batch, Lanes: conns})
	s.ka = keepalive.New(keepalive.Config{
		Handler:        s.track(s.g.guard(s.routes())),
		Eligible:       publishRoute,
		HeaderTimeout:  cfg.HeaderTimeout,
		ReadTimeout:    cfg.ReadTimeout,
		IdleTimeout:    cfg.IdleTimeout,
		WriteTimeout:   cfg.WriteTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		MaxBody:        cfg.MaxBodySize(),
	})
	s.http = &http.Server{
		Handler:           s.ka,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		TLSConfig:         tlsConfig, // nil: plain HTTP (tls.go)
	}
	return s, nil
}

const maxHeaderBytes = 16 << 10

// publishRoute reports whether a request is a publish: POST /v1/channels/{channel} or POST
// /v1/publish. A kept-alive connection that sends one is served by s.ka from then on.
func publishRoute(method, path string) bool {
	if method != http.MethodPost {
		return false
	}
	name, ok := strings.CutPrefix(path, "/v1/channels/")
	return ok && name != "" && !strings.Contains(name, "/") || path == "/v1/publish"
}

// Hub returns the node's hub.
func (s *Server) Hub() *hub.Hub { return s.hub }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	env := &transport.Env{Hub: s.hub, Conns: s.conns, Formats: &hub.Formats{}, Logger: s.log,
		Observer: s.metrics, MaxChannels: s.cfg.MaxSubscriptions, MaxMessageSize: s.cfg.MaxMessageSize,
		SSERetry: s.cfg.SSERetry, SubscribeTimeout: 30 * time.Second,
		Auth: s.g.auth, Origins: s.g.origins, PublishRate: s.g.publishRate, ClientKey: s.g.clientKey}
	for _, t := range Transports {
		mux.Handle(t.Pattern, s.g.counted(t.New(env)))
	}
	(&api{hub: s.hub, maxMessageSize: s.cfg.MaxMessageSize, g: &s.g}).register(mux)
	mux.Handle("GET /healthz", s.g.plain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})))
	mux.Handle("GET /readyz", s.g.plain(http.HandlerFunc(s.readyz)))
	web.Register(mux) // the demo page at / exactly, /crier.js, /crier.d.ts
	mux.Handle("GET /metrics", s.g.plain(s.metrics.Handler()))
	return jsonErrors(mux)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.drain:
		transport.WriteError(w, transport.Errorf(http.StatusServiceUnavailable, "draining", "server is shutting down"))
		return
	default:
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// jsonErrors answers requests no route takes (404, 405) with the API's JSON errors.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			// Through the mux, not h: only the mux fills r.PathValue.
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		switch rec.status {
		case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			// The mux's redirect to a path's clean form (/v1/./publish): not an error, and
			// it needs its Location.
			h.ServeHTTP(w, r)
		case http.StatusMethodNotAllowed:
			transport.WriteError(w, transport.Errorf(rec.status, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path))
		case http.StatusNotFound, 0:
			transport.WriteError(w, transport.Errorf(http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path))
		default:
			transport.WriteError(w, transport.Errorf(rec.status, "bad_request", http.StatusText(rec.status)))
		}
	})
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(status int)      { r.status = status }

// reconnectAfter is how long crier.reconnect asks subscribers to wait before they reconnect.
const reconnectAfter = time.Second

// track counts requests under way for the drain; once it has begun, answers ask clients to
// close their connections.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		defer s.requests.Add(-1)
		select {
		case <-s.drain:
			w.Header().Set("Connection", "close")
		default:
		}
		h.ServeHTTP(w, r)
	})
}

// Serve serves on ln until ctx ends, then drains (SIGTERM, in cmd/crier):
//
//  1. /readyz answers 503, and the listener closes: no new connections;
//  2. requests under way, publishes among them, finish and are answered, and connections
//     already open are still served meanwhile, each for one last request;
//  3. the HTTP server shuts down (HTTP/2 streams, which net/http carries, end in step 4);
//  4. every subscriber gets crier.reconnect, after the messages of those publishes, and its
//     connection ends once that is written; connections left are closed with a goodbye;
//  5. the store closes.
//
// Steps 2-3 and step 4 may each take up to cfg.DrainDelay.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ln = &onceCloseListener{Listener: ln}
	stopAuth := startAuth(s.g.auth, s.log)
	defer stopAuth()
	errc := make(chan error, 1)
	go func() { errc <- s.serveHTTP(ln) }()
	s.log.Info("crier listening", "addr", ln.Addr().String(), "scheme", s.scheme(), "memory", s.cfg.Memory, "data_dir", s.cfg.DataDir)
	select {
	case err := <-errc:
		s.shutdown()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("draining")
	close(s.drain)
	s.ka.Drain()
	_ = ln.Close()
	hctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainDelay)
	defer cancel()
	s.waitRequests(hctx)
	waitHTTP := s.shutdownHTTP(hctx)
	s.hub.Drain(reconnectAfter)
	cctx, cancel2 := context.WithTimeout(context.Background(), s.cfg.DrainDelay)
	defer cancel2()
	s.conns.CloseAll(cctx, conn.ReasonDrain)
	waitHTTP()
	s.shutdown()
	s.log.Info("stopped")
	return nil
}

// waitRequests waits until no request is under way, or ctx ends. Streams written through
// net/http (HTTP/2) are not requests under way: the hub's drain ends them (tls.go).
func (s *Server) waitRequests(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.underWay() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// onceCloseListener lets the drain close the listener before http.Server.Shutdown does.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

func (s *Server) shutdown() {
	s.ka.Close()
	s.conns.Shutdown()
	if err := s.store.Close(); err != nil {
		s.log.Error("close store", "err", err)
	}
}

// Run listens on cfg.Listen and serves until ctx ends.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	s, err := New(cfg, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		s.shutdown()
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, ln)
}
