package auth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxJWKSSize bounds a JWK Set document.
const MaxJWKSSize = 1 << 20

// Defaults of the JWKS refresh.
const (
	DefaultJWKSRefresh    = 5 * time.Minute  // how often the set is fetched again
	DefaultJWKSMinRefresh = 10 * time.Second // least time between two fetches an unknown kid asks for
	jwksFetchTimeout      = 10 * time.Second
	jwksMaxRetry          = time.Minute // the longest wait after a failed fetch
	jwksKidWait           = 5 * time.Second
)

// jwks is a JWK Set kept fresh from a URL or a file.
type jwks struct {
	url, file   string // one is set
	client      *http.Client
	interval    time.Duration
	minInterval time.Duration
	logger      *slog.Logger

	keys    atomic.Pointer[[]pubKey]
	running atomic.Bool
	kick    chan struct{} // asks the running loop for a fetch now

	fetchMu sync.Mutex // one fetch at a time, so that an older answer never replaces a newer one
	last    []byte     // the document last applied, under fetchMu

	mu          sync.Mutex
	lastAttempt time.Time     // under mu
	done        chan struct{} // closed when the fetch after it was made ends; under mu
}

func newJWKS(location string, cfg *Config) *jwks {
	j := &jwks{
		client:      cfg.HTTPClient,
		interval:    cfg.JWKSRefresh,
		minInterval: cfg.JWKSMinRefresh,
		logger:      cfg.Logger,
		kick:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	if strings.HasPrefix(location, "https://") || strings.HasPrefix(location, "http://") {
		j.url = location
	} else {
		j.file = strings.TrimPrefix(location, "file://")
	}
	if j.client == nil {
		j.client = &http.Client{Timeout: jwksFetchTimeout}
	}
	if j.interval <= 0 {
		j.interval = DefaultJWKSRefresh
	}
	if j.minInterval <= 0 {
		j.minInterval = DefaultJWKSMinRefresh
	}
	return j
}

func (j *jwks) source() string {
	if j.url != "" {
		return j.url
	}
	return j.file
}

// current returns the keys of the last set applied; nil before the first.
func (j *jwks) current() []pubKey {
	if p := j.keys.Load(); p != nil {
		return *p
	}
	return nil
}

// refresh fetches the set once and applies it. On failure the keys already held stay.
func (j *jwks) refresh(ctx context.Context) error {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	j.mu.Lock()
	j.lastAttempt = time.Now()
	done := j.done
	j.done = make(chan struct{})
	j.mu.Unlock()
	defer close(done)

	b, err := j.fetch(ctx)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", j.source(), err)
	}
	if j.keys.Load() != nil && bytes.Equal(b, j.last) {
		return nil
	}
	keys, skipped, err := parseJWKS(b)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", j.source(), err)
	}
	for _, e := range skipped {
		j.logger.Warn("jwks: key skipped", "source", j.source(), "err", e)
	}
	if len(keys) == 0 {
		j.logger.Warn("jwks: no usable key: every token signed with a JWKS key will be refused", "source", j.source())
	}
	j.keys.Store(&keys)
	j.last = b
	return nil
}

func (j *jwks) fetch(ctx context.Context) ([]byte, error) {
	if j.file != "" {
		f, err := os.Open(j.file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readLimited(f)
	}
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	return readLimited(resp.Body)
}

func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxJWKSSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxJWKSSize)
	}
	return b, nil
}

// run refreshes the set until ctx ends: at once when none is held, then every interval, sooner
// after a failure (with backoff) or when an unknown kid asks for it.
func (j *jwks) run(ctx context.Context) {
	if !j.running.CompareAndSwap(false, true) {
		j.logger.Error("jwks: Run called twice; the second returns at once", "source", j.source())
		return
	}
	defer func() {
		j.running.Store(false)
		j.mu.Lock()
		close(j.done) // free waiters: nobody will fetch for them now
		j.done = make(chan struct{})
		j.mu.Unlock()
	}()
	wait := j.interval
	if j.keys.Load() == nil {
		wait = 0
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-j.kick:
		}
		if err := j.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			wait = min(time.Second<<min(failures-1, 10), jwksMaxRetry, j.interval)
			j.logger.Warn("jwks: refresh failed; keeping the keys held", "err", err, "retry_in", wait.String())
		} else {
			failures = 0
			wait = j.interval
		}
		timer.Reset(wait)
	}
}

// awaitKid asks the running loop for a fetch because a token names a kid the set lacks, and
// waits for it. It returns false without waiting when no loop runs or the last fetch was too
// recent (an attacker's random kids cause at most one fetch per minInterval).
func (j *jwks) awaitKid(ctx context.Context) bool {
	if !j.running.Load() {
		return false
	}
	j.mu.Lock()
	if time.Since(j.lastAttempt) < j.minInterval {
		j.mu.Unlock()
		return false
	}
	done := j.done
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default: // a fetch is already asked for
	}
	t := time.NewTimer(jwksKidWait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}
