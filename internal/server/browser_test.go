//go:build unix

package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
)

// browserLifetime is the maximum connection lifetime of the second server, against which the
// browser tests check that subscribers resume with nothing lost or duplicated.
const browserLifetime = 1500 * time.Millisecond

// TestBrowser runs the browser tests of test/browser (node --test, playwright-core driving the
// system's Chromium) against three in-process servers: one as configured by default, one
// whose connections end after browserLifetime, and one with a durable store that a control
// server restarts on the same port when asked (restartableServer). Without node, Chromium or the npm packages
// (npm ci in test/browser) it skips, or fails when CRIER_REQUIRE_BROWSER=1.
func TestBrowser(t *testing.T) {
	root := browserRepoRoot(t)
	dir := filepath.Join(root, "test", "browser")
	missing := func(format string, args ...any) {
		t.Helper()
		reason := fmt.Sprintf(format, args...)
		if os.Getenv("CRIER_REQUIRE_BROWSER") == "1" {
			t.Fatalf("%s (CRIER_REQUIRE_BROWSER=1)", reason)
		}
		t.Skip(reason)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed: %v", err)
	}
	chromium := os.Getenv("CRIER_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missing("no Chromium at %s (apt-get install chromium, or set CRIER_CHROMIUM): %v", chromium, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing("playwright-core is not installed: run npm ci in %s", dir)
	}
	files := browserTestFiles(t, dir)

	normal := startServer(t, nil)
	short := startServer(t, func(c *config.Config) {
		c.MaxLifetime = browserLifetime
		c.SSERetry = 200 * time.Millisecond // EventSource's own reconnection, in the native test
	})
	restart := startRestartable(t)

	deadline := time.Now().Add(8 * time.Minute)
	if d, ok := t.Deadline(); ok && d.Add(-15*time.Second).Before(deadline) {
		deadline = d.Add(-15 * time.Second) // leave time to report
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	// One file at a time: the resume tests are about timing, and the machine may be small.
	args := append([]string{"--test", "--test-concurrency=1", "--test-reporter=spec"}, files...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"CRIER_URL="+normal.URL,
		"CRIER_SHORT_URL="+short.URL,
		"CRIER_RESTART_URL="+restart.URL(),
		"CRIER_RESTART_CONTROL="+restart.control.URL,
		"CRIER_CHROMIUM="+chromium,
		"CRIER_ARTIFACTS="+filepath.Join(root, "test-artifacts"),
		"NO_COLOR=1",
		"FORCE_COLOR=0",
	)
	// Node and the Chromium it starts share a process group, ended together on timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out := &browserLogWriter{t: t}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err = cmd.Run()
	out.Flush()
	if ctx.Err() != nil {
		t.Fatalf("node --test did not finish in time (%s)", time.Since(start).Round(time.Second))
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("browser tests failed (exit %d); the output above says which", exit.ExitCode())
	}
	if err != nil {
		t.Fatalf("run node: %v", err)
	}
}

// restartableServer is a node with a durable (bolt) store on a fixed loopback port, and a
// control server beside it whose POST /restart drains that node as SIGTERM would (its
// context ends, Serve returns) and starts a new one on the same port and data directory,
// answering 200 once the new one answers /healthz. The browser tests check that crier.js
// resumes across it with nothing lost and nothing twice.
type restartableServer struct {
	cfg     config.Config
	addr    string // 127.0.0.1:PORT, the same for every start
	control *httptest.Server

	mu       sync.Mutex // serializes restarts and the final stop
	cur      *testServer
	restarts int
	stopped  bool
}

func startRestartable(t *testing.T) *restartableServer {
	t.Helper()
	cfg := config.Default()
	cfg.Memory = false
	cfg.DataDir = t.TempDir()
	cfg.DrainDelay = 2 * time.Second
	// The port is picked once; the first node serves on that very listener, later ones
	// listen on the same address again.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	rs := &restartableServer{cfg: cfg, addr: cfg.Listen}
	if err := rs.start(ln); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /restart", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		n, err := rs.restart()
		if err != nil {
			http.Error(w, "restart: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"restarts\":%d,\"ms\":%d}\n", n, time.Since(start).Milliseconds())
	})
	rs.control = httptest.NewServer(mux)
	t.Cleanup(func() {
		rs.control.Close()
		rs.mu.Lock()
		defer rs.mu.Unlock()
		rs.stopped = true
		if rs.cur != nil {
			rs.cur.Stop()
			rs.cur = nil
		}
	})
	return rs
}

// URL is the node's base URL, the same across restarts.
func (rs *restartableServer) URL() string { return "http://" + rs.addr }

// start builds a node on ln and waits until it answers /healthz. Not under t: restarts run
// in the control server's goroutines.
func (rs *restartableServer) start(ln net.Listener) error {
	s, err := New(rs.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		_ = ln.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{URL: rs.URL(), Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	rs.cur = ts
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := client.Get(ts.URL + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		select {
		case serr := <-ts.done:
			rs.cur = nil
			return fmt.Errorf("the node stopped before answering /healthz: %v", serr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/healthz of %s: %v", ts.URL, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart drains the node, waits for Serve to return, and starts a new one on the same port
// and data directory; it returns the number of restarts so far.
func (rs *restartableServer) restart() (int, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.stopped {
		return rs.restarts, errors.New("the test is over")
	}
	if rs.cur != nil {
		rs.cur.Stop() // cancel the context, wait for the drain
		rs.cur = nil
	}
	// The old listener is closed; the port may still be busy for a moment.
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		ln, err = net.Listen("tcp", rs.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return rs.restarts, fmt.Errorf("listen on %s again: %w", rs.addr, err)
	}
	if err := rs.start(ln); err != nil {
		return rs.restarts, err
	}
	rs.restarts++
	return rs.restarts, nil
}

// browserRepoRoot finds the repository root above the package directory (the test's working
// directory) by its go.mod.
func browserRepoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/crier-push/crier\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod of github.com/crier-push/crier above the package directory")
		}
		dir = parent
	}
}

// browserTestFiles lists the test files, reading each (with the package files) so that go
// test's cache knows the result depends on them.
func browserTestFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.test.mjs in %s (%v)", dir, err)
	}
	helpers, _ := filepath.Glob(filepath.Join(dir, "*.mjs"))
	for _, f := range append(helpers, filepath.Join(dir, "package.json"), filepath.Join(dir, "package-lock.json")) {
		if _, err := os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

// browserLogWriter passes a child's output to t.Log line by line, as it comes.
type browserLogWriter struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (l *browserLogWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log(strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
}

// Flush logs what is left without a newline.
func (l *browserLogWriter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.t.Log(string(l.buf))
		l.buf = nil
	}
}

var _ io.Writer = (*browserLogWriter)(nil)
