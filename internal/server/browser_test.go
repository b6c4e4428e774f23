//go:build unix

package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
// system's Chromium) against two in-process servers: one as configured by default, and one
// whose connections end after browserLifetime. Without node, Chromium or the npm packages
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
