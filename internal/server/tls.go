package server

// HTTPS and HTTP/2 (--tls-cert, --tls-key). Over TLS a connection cannot join the connection
// layer's epoll set: an HTTP/1.1 one is hijacked into its goroutine backend, and an HTTP/2 stream
// stays in its handler, whose goroutine writes it through the ResponseWriter
// (conn.Server.Attach). Such streams are handlers that run as long as the stream: the drain does
// not wait for them as for requests under way, since only the hub's drain ends them.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/crier-push/crier/internal/config"
)

// newTLSConfig loads the certificate of --tls-cert and --tls-key, or returns nil without them.
func newTLSConfig(cfg config.Config) (*tls.Config, error) {
	if cfg.TLSCert == "" && cfg.TLSKey == "" {
		return nil, nil
	}
	if cfg.TLSCert == "" || cfg.TLSKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together: give both, or neither")
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// serveHTTP serves ln, over TLS when configured. (Not told by s.http.TLSConfig, which
// http.Server sets itself for HTTP/2.)
func (s *Server) serveHTTP(ln net.Listener) error {
	if s.cfg.TLSCert != "" {
		return s.http.ServeTLS(ln, "", "")
	}
	// Connections s.ka adopted and then handed back come in here (Shutdown closes it).
	go func() { _ = s.http.Serve(s.ka.Listener()) }()
	return s.http.Serve(ln)
}

// scheme is the URL scheme the node serves.
func (s *Server) scheme() string {
	if s.cfg.TLSCert != "" {
		return "https"
	}
	return "http"
}

// underWay is how many requests are under way, streams that the connection layer writes through
// net/http (conn.Server.Serving) aside.
func (s *Server) underWay() int64 {
	return s.requests.Load() - s.conns.Serving()
}

// shutdownHTTP starts the HTTP server's shutdown and waits until it is done, or until only the
// streams the connection layer writes through net/http keep it waiting: those end once the hub
// has drained. wait waits for the rest of it.
func (s *Server) shutdownHTTP(ctx context.Context) (wait func()) {
	done := make(chan error, 1)
	go func() { done <- s.http.Shutdown(ctx) }()
	report := func(err error) {
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Warn("http shutdown", "err", err)
		}
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			report(err)
			return func() {}
		case <-t.C:
			if s.conns.Serving() > 0 && s.underWay() <= 0 {
				return func() { report(<-done) }
			}
		}
	}
}
