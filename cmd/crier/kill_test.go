package main

// Process-level durability tests: the real binary, killed with SIGKILL or stopped with SIGTERM,
// and restarted on the same data directory. They build the binary once per test run.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// TestMain removes the binary that crierBinary built, if any.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// crierBinary builds cmd/crier once per test run and returns its path.
func crierBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the crier binary; skipped with -short")
	}
	binOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			binErr = fmt.Errorf("the go command is needed to build crier: %w", err)
			return
		}
		binDir, binErr = os.MkdirTemp("", "crier-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "crier")
		out, err := exec.Command(goBin, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one running `crier serve`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	URL    string
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's, once done is closed
}

// startCrier runs `crier serve` with args on a free loopback port in dir (the working
// directory), waits for /healthz and returns it. The process is killed at the end of the test if
// it is still running.
func startCrier(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	bin := crierBinary(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port may be taken before crier binds it
		addr := freePort(t)
		full := append([]string{"serve", "--listen", addr, "--relay-listen", freePort(t),
			"--drain-delay", "2s", "--log-level", "warn"}, args...)
		p := &proc{t: t, cmd: exec.Command(bin, full...), URL: "http://" + addr, stderr: &syncBuffer{}, done: make(chan struct{})}
		p.cmd.Dir = dir
		p.cmd.Stdout = p.stderr
		p.cmd.Stderr = p.stderr
		p.cmd.Env = cleanEnv()
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start crier: %v", err)
		}
		go func() { p.err = p.cmd.Wait(); close(p.done) }()
		t.Cleanup(func() {
			_ = p.cmd.Process.Kill()
			<-p.done
			if t.Failed() {
				t.Logf("crier %s output:\n%s", strings.Join(full, " "), p.stderr.String())
			}
		})
		if lastErr = p.waitHealthy(10 * time.Second); lastErr == nil {
			return p
		}
		_ = p.cmd.Process.Kill()
		<-p.done
		if !strings.Contains(p.stderr.String(), "address already in use") {
			break
		}
	}
	t.Fatalf("crier did not become healthy: %v", lastErr)
	return nil
}

// cleanEnv is the test's environment without CRIER_* variables, which would change the config.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRIER_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func (p *proc) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-p.done:
			return fmt.Errorf("crier exited before it was healthy (%v):\n%s", p.err, p.stderr.String())
		default:
		}
		res, err := client.Get(p.URL + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no healthy answer from %s/healthz in %s: %v", p.URL, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("SIGKILL: %v", err)
	}
	<-p.done
}

// term sends SIGTERM and expects a clean exit (status 0) within timeout.
func (p *proc) term(timeout time.Duration) {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("crier did not exit within %s of SIGTERM", timeout)
	}
	if p.err != nil {
		p.t.Fatalf("crier exited with %v after SIGTERM (want status 0):\n%s", p.err, p.stderr.String())
	}
	p.t.Logf("SIGTERM exit took %s", time.Since(start).Round(time.Millisecond))
}

var httpClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 32},
}

// ack is a publish's 201 answer.
type ack struct {
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
	Cursor  string `json:"cursor"`
}

func publishJSON(base, ch, body string) (ack, error) {
	res, err := httpClient.Post(base+"/v1/channels/"+ch, "application/json", strings.NewReader(body))
	if err != nil {
		return ack{}, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated {
		return ack{}, fmt.Errorf("publish status %d: %s", res.StatusCode, b)
	}
	var a ack
	if err := json.Unmarshal(b, &a); err != nil {
		return ack{}, fmt.Errorf("publish answer %q: %w", b, err)
	}
	if a.Channel != ch || a.Offset == 0 || a.Epoch == "" || a.Cursor != fmt.Sprintf("%s@%s:%d", ch, a.Epoch, a.Offset) {
		return a, fmt.Errorf("publish answer %s is not consistent", b)
	}
	return a, nil
}

// publishMany publishes n distinct JSON bodies on ch from workers goroutines and returns the
// acknowledged body of each offset and the epoch; every publish must be answered 201.
func publishMany(t *testing.T, base, ch string, n, workers int) (map[uint64]string, string) {
	t.Helper()
	jobs := make(chan int)
	var (
		mu     sync.Mutex
		bodies = make(map[uint64]string, n)
		epochs = map[string]bool{}
		errs   []error
		wg     sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				body := fmt.Sprintf(`{"n":%d,"text":"message %d","pad":"%s"}`, i, i, strings.Repeat("x", i%64))
				a, err := publishJSON(base, ch, body)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Errorf("publish %d: %w", i, err))
				case bodies[a.Offset] != "":
					errs = append(errs, fmt.Errorf("offset %d acknowledged twice", a.Offset))
				default:
					bodies[a.Offset] = body
					epochs[a.Epoch] = true
				}
				mu.Unlock()
			}
		}()
	}
	for i := 1; i <= n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d publishes failed; first: %v", len(errs), n, errs[0])
	}
	if len(epochs) != 1 {
		t.Fatalf("publishes were acknowledged in %d epochs: %v", len(epochs), epochs)
	}
	var epoch string
	for e := range epochs {
		epoch = e
	}
	return bodies, epoch
}

type historyPage struct {
	Messages []struct {
		Channel string          `json:"channel"`
		Offset  uint64          `json:"offset"`
		Epoch   string          `json:"epoch"`
		Event   string          `json:"event"`
		Data    json.RawMessage `json:"data"`
		Cursor  string          `json:"cursor"`
	} `json:"messages"`
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
	Gap    bool   `json:"gap"`
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, res.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %q: %v", url, b, err)
	}
}

// checkHistory asserts that ch, in epoch, holds exactly want (offset → body) after offset from,
// with nothing missing, repeated or altered, and that its latest offset is last. It pages
// through history with limit per page.
func checkHistory(t *testing.T, base, ch, epoch string, from uint64, want map[uint64]string, last uint64, limit int) {
	t.Helper()
	seen := make(map[uint64]bool, len(want))
	since := from
	for pages := 0; ; pages++ {
		if pages > len(want)+2 {
			t.Fatalf("history paging does not end (since %d)", since)
		}
		var page historyPage
		getJSON(t, fmt.Sprintf("%s/v1/channels/%s/messages?since=%s:%d&limit=%d", base, ch, epoch, since, limit), &page)
		if page.Epoch != epoch {
			t.Fatalf("history epoch %q after restart, want %q (the epoch must survive)", page.Epoch, epoch)
		}
		if page.Gap {
			t.Fatalf("history since %s:%d reports a gap", epoch, since)
		}
		if page.Offset != last {
			t.Fatalf("history says the latest offset is %d, want %d", page.Offset, last)
		}
		if len(page.Messages) == 0 {
			break
		}
		if len(page.Messages) > limit {
			t.Fatalf("history page of %d messages, limit %d", len(page.Messages), limit)
		}
		for _, m := range page.Messages {
			if m.Offset != since+1 {
				t.Fatalf("history after offset %d continues with %d, want %d", since, m.Offset, since+1)
			}
			since = m.Offset
			body, ok := want[m.Offset]
			if !ok {
				t.Fatalf("history holds offset %d, which was never acknowledged", m.Offset)
			}
			if seen[m.Offset] {
				t.Fatalf("offset %d twice in history", m.Offset)
			}
			seen[m.Offset] = true
			if m.Channel != ch || m.Epoch != epoch || m.Cursor != fmt.Sprintf("%s@%s:%d", ch, epoch, m.Offset) {
				t.Fatalf("message %d: channel %q epoch %q cursor %q", m.Offset, m.Channel, m.Epoch, m.Cursor)
			}
			if string(m.Data) != body {
				t.Fatalf("message %d: data %s, acknowledged body %s", m.Offset, m.Data, body)
			}
			if m.Event != "message" {
				t.Fatalf("message %d: event %q, want message", m.Offset, m.Event)
			}
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("history holds %d of the %d acknowledged messages (up to offset %d)", len(seen), len(want), since)
	}
}

type channelInfo struct {
	Channel string `json:"channel"`
	Epoch   string `json:"epoch"`
	Offset  uint64 `json:"offset"`
}

// TestKillDurability publishes 1,000 messages, kills the server with SIGKILL, restarts it on the
// same data directory and expects every acknowledged message, in the same epoch, at its offset.
// It then stops the server cleanly with SIGTERM, restarts it, and expects the same again.
func TestKillDurability(t *testing.T) {
	const (
		ch      = "durable:kill-test"
		n       = 1000
		workers = 16
	)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")

	p := startCrier(t, dir, "--data-dir", data)
	start := time.Now()
	bodies, epoch := publishMany(t, p.URL, ch, n, workers)
	t.Logf("%d publishes from %d workers in %s", n, workers, time.Since(start).Round(time.Millisecond))
	for off := uint64(1); off <= n; off++ {
		if bodies[off] == "" {
			t.Fatalf("offset %d was never acknowledged: offsets are not 1..%d", off, n)
		}
	}
	p.kill()

	// Restart after SIGKILL: everything acknowledged is there.
	p = startCrier(t, dir, "--data-dir", data)
	var info channelInfo
	getJSON(t, p.URL+"/v1/channels/"+ch, &info)
	if info.Epoch != epoch || info.Offset != n {
		t.Fatalf("after SIGKILL and restart the channel is at %s:%d, want %s:%d", info.Epoch, info.Offset, epoch, n)
	}
	checkHistory(t, p.URL, ch, epoch, 0, bodies, n, 300)
	// Without since: the newest N, oldest first.
	var newest historyPage
	getJSON(t, fmt.Sprintf("%s/v1/channels/%s/messages?limit=10", p.URL, ch), &newest)
	if len(newest.Messages) != 10 || newest.Messages[0].Offset != n-9 || newest.Messages[9].Offset != n {
		t.Fatalf("newest 10 after restart: %d messages, %+v", len(newest.Messages), newest.Messages)
	}
	next := `{"after":"kill"}`
	a, err := publishJSON(p.URL, ch, next)
	if err != nil {
		t.Fatal(err)
	}
	if a.Offset != n+1 || a.Epoch != epoch {
		t.Fatalf("first publish after restart got %s:%d, want %s:%d", a.Epoch, a.Offset, epoch, n+1)
	}
	bodies[n+1] = next

	// A clean stop and restart keeps everything too. History holds the newest 1000 (the default
	// history size), so offset 1 is gone now.
	p.term(10 * time.Second)
	p = startCrier(t, dir, "--data-dir", data)
	delete(bodies, 1)
	checkHistory(t, p.URL, ch, epoch, 1, bodies, n+1, 1000)
	var gap historyPage
	getJSON(t, fmt.Sprintf("%s/v1/channels/%s/messages?since=%s:0&limit=5", p.URL, ch, epoch), &gap)
	if !gap.Gap || len(gap.Messages) == 0 || gap.Messages[0].Offset != 2 {
		t.Fatalf("history since %s:0 after trimming: gap=%v, first offset %v; want a gap and offset 2", epoch, gap.Gap, firstOffset(gap))
	}
	a, err = publishJSON(p.URL, ch, `{"after":"term"}`)
	if err != nil {
		t.Fatal(err)
	}
	if a.Offset != n+2 || a.Epoch != epoch {
		t.Fatalf("first publish after SIGTERM restart got %s:%d, want %s:%d", a.Epoch, a.Offset, epoch, n+2)
	}
	p.term(10 * time.Second)
}

func firstOffset(p historyPage) any {
	if len(p.Messages) == 0 {
		return "none"
	}
	return p.Messages[0].Offset
}

// TestRestartCleanKeepsEverything publishes, stops the server with SIGTERM and restarts it: the
// epoch, offsets and bodies are all kept (and the store's file lock was released).
func TestRestartCleanKeepsEverything(t *testing.T) {
	const ch, n = "restart", 200
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	p := startCrier(t, dir, "--data-dir", data)
	bodies, epoch := publishMany(t, p.URL, ch, n, 8)
	p.term(10 * time.Second)
	p = startCrier(t, dir, "--data-dir", data)
	checkHistory(t, p.URL, ch, epoch, 0, bodies, n, 1000)
	a, err := publishJSON(p.URL, ch, `{"again":true}`)
	if err != nil {
		t.Fatal(err)
	}
	if a.Offset != n+1 || a.Epoch != epoch {
		t.Fatalf("publish after restart got %s:%d, want %s:%d", a.Epoch, a.Offset, epoch, n+1)
	}
}

// TestMemoryKeepsNothing runs `crier serve --memory` twice: the second life has a new epoch and
// no history, and no data directory is created, neither the default ./crier-data nor an explicit
// --data-dir.
func TestMemoryKeepsNothing(t *testing.T) {
	const ch = "volatile"
	dir := t.TempDir()
	explicit := filepath.Join(dir, "explicit-data")
	for _, tc := range []struct {
		name string
		args []string
	}{{"default-data-dir", []string{"--memory"}}, {"explicit-data-dir", []string{"--memory", "--data-dir", explicit}}} {
		args := tc.args
		t.Run(tc.name, func(t *testing.T) {
			p := startCrier(t, dir, args...)
			bodies, epoch := publishMany(t, p.URL, ch, 50, 4)
			if len(bodies) != 50 {
				t.Fatalf("%d acknowledged", len(bodies))
			}
			p.term(10 * time.Second)

			p = startCrier(t, dir, args...)
			var info channelInfo
			getJSON(t, p.URL+"/v1/channels/"+ch, &info)
			if info.Epoch == epoch || info.Offset != 0 {
				t.Fatalf("after a memory-only restart the channel is at %s:%d, want a new epoch (not %s) at 0",
					info.Epoch, info.Offset, epoch)
			}
			var page historyPage
			getJSON(t, p.URL+"/v1/channels/"+ch+"/messages", &page)
			if len(page.Messages) != 0 {
				t.Fatalf("memory-only restart kept %d messages", len(page.Messages))
			}
			// Resuming from the old epoch is a gap, not silence.
			getJSON(t, fmt.Sprintf("%s/v1/channels/%s/messages?since=%s:50", p.URL, ch, epoch), &page)
			if !page.Gap {
				t.Fatalf("history since the vanished epoch %s:50 does not report a gap: %+v", epoch, page)
			}
			a, err := publishJSON(p.URL, ch, `{"fresh":true}`)
			if err != nil {
				t.Fatal(err)
			}
			if a.Offset != 1 || a.Epoch != info.Epoch {
				t.Fatalf("first publish of the new life got %s:%d, want %s:1", a.Epoch, a.Offset, info.Epoch)
			}
			p.kill()
		})
	}
	for _, d := range []string{filepath.Join(dir, "crier-data"), explicit} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--memory created %s (stat: %v)", d, err)
		}
	}
}

// TestKillDuringPublishes kills the server while 16 publishers are busy. After a restart every
// acknowledged publish is there with its body, offsets are still gap-free from 1, a publish that
// was in flight is there at most once, and the next publish follows the last offset.
func TestKillDuringPublishes(t *testing.T) {
	const (
		ch        = "durable:inflight"
		workers   = 16
		killAfter = 300 // acknowledgements before the kill
		attempts  = 900 // publishes tried at most
	)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	p := startCrier(t, dir, "--data-dir", data)

	var (
		mu      sync.Mutex
		acked   = map[uint64]string{}
		tried   = map[string]bool{}
		epochs  = map[string]bool{}
		next    int
		wg      sync.WaitGroup
		enough  = make(chan struct{})
		oneShot sync.Once
		killing atomic.Bool
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				next++
				i := next
				mu.Unlock()
				if i > attempts {
					return
				}
				body := fmt.Sprintf(`{"n":%d}`, i)
				mu.Lock()
				tried[body] = true
				mu.Unlock()
				a, err := publishJSON(p.URL, ch, body)
				if err != nil {
					if killing.Load() {
						return // killed: this publish may or may not have been committed
					}
					t.Errorf("publish %d before the kill: %v", i, err)
					return
				}
				mu.Lock()
				if acked[a.Offset] != "" {
					t.Errorf("offset %d acknowledged twice", a.Offset)
				}
				acked[a.Offset] = body
				epochs[a.Epoch] = true
				if len(acked) >= killAfter {
					oneShot.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-time.After(20 * time.Second):
		t.Fatal("too slow: not enough publishes acknowledged")
	}
	killing.Store(true)
	p.kill()
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(epochs) != 1 {
		t.Fatalf("acknowledged in %d epochs", len(epochs))
	}
	var epoch string
	var maxAcked uint64
	for e := range epochs {
		epoch = e
	}
	for off := range acked {
		maxAcked = max(maxAcked, off)
	}

	p = startCrier(t, dir, "--data-dir", data)
	var info channelInfo
	getJSON(t, p.URL+"/v1/channels/"+ch, &info)
	if info.Epoch != epoch || info.Offset < maxAcked {
		t.Fatalf("after the kill the channel is at %s:%d; %d publishes were acknowledged up to %s:%d",
			info.Epoch, info.Offset, len(acked), epoch, maxAcked)
	}
	var page historyPage
	getJSON(t, fmt.Sprintf("%s/v1/channels/%s/messages?since=%s:0&limit=1000", p.URL, ch, epoch), &page)
	if page.Gap || uint64(len(page.Messages)) != info.Offset {
		t.Fatalf("history holds %d messages (gap %v), the channel is at offset %d", len(page.Messages), page.Gap, info.Offset)
	}
	seen := map[string]uint64{}
	for i, m := range page.Messages {
		body := string(m.Data)
		switch {
		case m.Offset != uint64(i+1):
			t.Fatalf("history's message %d has offset %d", i+1, m.Offset)
		case acked[m.Offset] != "" && acked[m.Offset] != body:
			t.Fatalf("offset %d holds %s, acknowledged %s", m.Offset, body, acked[m.Offset])
		case !tried[body]:
			t.Fatalf("offset %d holds %s, which no one published", m.Offset, body)
		case seen[body] != 0:
			t.Fatalf("%s is stored twice, at offsets %d and %d", body, seen[body], m.Offset)
		}
		seen[body] = m.Offset
	}
	t.Logf("%d acknowledged before the kill, %d committed", len(acked), info.Offset)
	a, err := publishJSON(p.URL, ch, `{"after":"kill"}`)
	if err != nil {
		t.Fatal(err)
	}
	if a.Epoch != epoch || a.Offset != info.Offset+1 {
		t.Fatalf("publish after the restart got %s:%d, want %s:%d", a.Epoch, a.Offset, epoch, info.Offset+1)
	}
}
