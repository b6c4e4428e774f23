package server

// Third-party client tests: the scripts in test/node drive a node started here with npm's `ws`
// (WebSocket) and `eventsource` (SSE) packages, under Node's built-in test runner.
//
// They need node (v20 or later) and test/node/node_modules (`npm ci` in test/node). Without
// them the tests skip, or fail when CRIER_REQUIRE_NODE=1 (as CI should set).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/config"
)

// nodeDir is test/node, relative to this package's directory.
var nodeDir = filepath.Join("..", "..", "test", "node")

// nodeModules are the packages the scripts import.
var nodeModules = []string{"ws", "eventsource"}

// requireNode returns the node binary and the absolute test/node directory, or skips (fails
// under CRIER_REQUIRE_NODE=1) saying what is missing.
func requireNode(t *testing.T) (string, string) {
	t.Helper()
	dir, err := filepath.Abs(nodeDir)
	if err != nil {
		t.Fatal(err)
	}
	node, reason := findNode(dir)
	if reason != "" {
		if os.Getenv("CRIER_REQUIRE_NODE") == "1" {
			t.Fatalf("CRIER_REQUIRE_NODE=1 but %s", reason)
		}
		t.Skipf("skipping the Node.js client tests: %s (CRIER_REQUIRE_NODE=1 makes this a failure)", reason)
	}
	return node, dir
}

func findNode(dir string) (string, string) {
	if testing.Short() {
		return "", "-short is set"
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "node is not installed (it needs Node.js 20 or later on PATH)"
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return "", fmt.Sprintf("%s --version failed: %v", node, err)
	}
	version := strings.TrimSpace(string(out))
	if m := regexp.MustCompile(`^v(\d+)\.`).FindStringSubmatch(version); m == nil {
		return "", fmt.Sprintf("cannot tell the version of %s from %q", node, version)
	} else if major, _ := strconv.Atoi(m[1]); major < 20 {
		return "", fmt.Sprintf("node %s is too old (need 20 or later)", version)
	}
	for _, m := range nodeModules {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", m, "package.json")); err != nil {
			return "", fmt.Sprintf("%s/node_modules/%s is missing: run `npm ci` in %s", dir, m, dir)
		}
	}
	return node, ""
}

// nodeSummary matches the counts node's test runner prints last ("# pass 7").
var nodeSummary = regexp.MustCompile(`(?m)^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$`)

// runNodeTest runs `node --test script` in test/node against base, with env added, and fails
// with node's output unless every test passed.
func runNodeTest(t *testing.T, base, script string, env ...string) {
	t.Helper()
	node, dir := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap", "--test-timeout=30000", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"CRIER_URL=" + base}, env...)...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	counts := map[string]int{}
	for _, m := range nodeSummary.FindAllStringSubmatch(out.String(), -1) {
		counts[m[1]], _ = strconv.Atoi(m[2])
	}
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node --test %s did not finish in time; output:\n%s", script, out.String())
	case err != nil:
		t.Fatalf("node --test %s: %v\n%s", script, err, out.String())
	case counts["fail"] > 0 || counts["cancelled"] > 0 || counts["pass"] == 0:
		t.Fatalf("node --test %s: %d passed, %d failed, %d cancelled\n%s", script,
			counts["pass"], counts["fail"], counts["cancelled"], out.String())
	case counts["skipped"] > 0:
		t.Fatalf("node --test %s skipped %d tests that this run should enable\n%s", script, counts["skipped"], out.String())
	}
	t.Logf("node --test %s: %d passed in %s", script, counts["pass"], time.Since(start).Round(time.Millisecond))
	if testing.Verbose() {
		t.Log(out.String())
	}
}

func TestNodeWS(t *testing.T) {
	t.Parallel()
	requireNode(t)
	const heartbeat = 200 * time.Millisecond
	ts := startServer(t, func(c *config.Config) { c.Heartbeat = heartbeat })
	runNodeTest(t, ts.URL, "ws.test.mjs", fmt.Sprintf("CRIER_HEARTBEAT_MS=%d", heartbeat.Milliseconds()))
}

func TestNodeSSE(t *testing.T) {
	t.Parallel()
	requireNode(t)
	// Streams end every lifetime, so that EventSource's reconnect with Last-Event-ID is tested;
	// a short heartbeat makes the connection layer check lifetimes often, and a short retry makes
	// the reconnects quick.
	const lifetime = 400 * time.Millisecond
	ts := startServer(t, func(c *config.Config) {
		c.MaxLifetime = lifetime
		c.Heartbeat = 100 * time.Millisecond
		c.SSERetry = 20 * time.Millisecond
	})
	runNodeTest(t, ts.URL, "sse.test.mjs", fmt.Sprintf("CRIER_MAX_LIFETIME_MS=%d", lifetime.Milliseconds()))
}
