package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/auth"
)

// runToken runs `crier token` with the given environment.
func runToken(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	getenv := func(k string) string { return vars[k] }
	code := run(context.Background(), append([]string{"token"}, args...), env{strings.NewReader(""), &stdout, &stderr, getenv})
	return code, stdout.String(), stderr.String()
}

func verify(t *testing.T, secret, tok string) *auth.Identity {
	t.Helper()
	a, err := auth.New(auth.Config{JWTSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.AuthenticateToken(context.Background(), strings.TrimSpace(tok))
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	return id
}

func TestToken(t *testing.T) {
	code, out, errOut := runToken(t, nil, "--jwt-secret", "s3cret", "--sub", "alice",
		"--subscribe", "chat:*", "--subscribe", "user:{sub}:**", "--publish", "chat:lobby", "--ttl", "10m")
	if code != 0 || strings.Count(out, ".") != 2 || !strings.HasSuffix(out, "\n") || errOut != "" {
		t.Fatalf("token = %d %q %q", code, out, errOut)
	}
	id := verify(t, "s3cret", out)
	if id.Subject() != "alice" || !id.CanSubscribe("chat:x") || !id.CanSubscribe("user:alice:inbox") ||
		id.CanSubscribe("user:bob:inbox") || !id.CanPublish("chat:lobby") || id.CanPublish("chat:x") {
		t.Fatal("minted rights")
	}
	if left := time.Until(id.Expires()); left < 9*time.Minute || left > 11*time.Minute {
		t.Fatalf("expires in %s, want about 10m", left)
	}
}

func TestTokenSecretSources(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "crier.yaml")
	if err := os.WriteFile(cfgFile, []byte("jwt_secret: from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		vars   map[string]string
		args   []string
		secret string
	}{
		{"env", map[string]string{"CRIER_JWT_SECRET": "from-env"}, nil, "from-env"},
		{"flag over env", map[string]string{"CRIER_JWT_SECRET": "from-env"}, []string{"--jwt-secret", "from-flag"}, "from-flag"},
		{"config flag", nil, []string{"--config", cfgFile}, "from-file"},
		{"CRIER_CONFIG", map[string]string{"CRIER_CONFIG": cfgFile}, nil, "from-file"},
		{"env over file", map[string]string{"CRIER_CONFIG": cfgFile, "CRIER_JWT_SECRET": "from-env"}, nil, "from-env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runToken(t, tt.vars, append(tt.args, "--subscribe", "news")...)
			if code != 0 {
				t.Fatalf("token = %d %q", code, errOut)
			}
			if !verify(t, tt.secret, out).CanSubscribe("news") {
				t.Fatal("rights")
			}
		})
	}
}

func TestTokenErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no secret", []string{"--subscribe", "x"}, 2, "no JWT secret"},
		{"bad pattern", []string{"--jwt-secret", "s", "--subscribe", "a*"}, 2, "invalid channel pattern"},
		{"sub pattern without sub", []string{"--jwt-secret", "s", "--publish", "user:{sub}"}, 2, "--sub"},
		{"zero ttl", []string{"--jwt-secret", "s", "--ttl", "0s"}, 2, "--ttl"},
		{"argument", []string{"--jwt-secret", "s", "extra"}, 2, "unexpected argument"},
		{"missing config", []string{"--config", "/nonexistent/crier.yaml"}, 1, "config file"},
		{"help", []string{"-h"}, 0, "-subscribe PATTERN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runToken(t, nil, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.msg) || (code != 0 && out != "") {
				t.Fatalf("token %q = %d %q %q", tt.args, code, out, errOut)
			}
		})
	}
	code, out, errOut := runToken(t, nil, "--jwt-secret", "s")
	if code != 0 || out == "" || !strings.Contains(errOut, "grants no channel") {
		t.Fatalf("token without patterns = %d %q %q", code, out, errOut)
	}
}
