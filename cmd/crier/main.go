// Command crier is the Crier push server and its command-line client.
//
//	crier [serve] [flags]                 run the server (the default)
//	crier pub [flags] CHANNEL [DATA]      publish DATA, or stdin, on CHANNEL
//	crier sub [flags] CHANNEL...          print envelopes as JSON lines, reconnecting as needed
//	crier bench [flags]                   load-test a server
//	crier token [flags]                   mint a JWT signed with the server's secret
//	crier version                         print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/crier-push/crier/internal/bench"
	"github.com/crier-push/crier/internal/config"
	"github.com/crier-push/crier/internal/server"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; empty means the module
// version Go recorded, or "dev".
var version string

const usage = `Usage:
  crier [serve] [flags]              run the server (the default command)
  crier pub [flags] CHANNEL [DATA]   publish DATA (or stdin) on CHANNEL
  crier sub [flags] CHANNEL...       print each envelope as a JSON line; --cursor resumes
  crier bench [flags]                load-test a server
  crier token [flags]                mint a JWT signed with the server's --jwt-secret
  crier version                      print the version

Run "crier COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	// After the first signal starts a drain, a second one kills at once, as users expect.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], env{os.Stdin, os.Stdout, os.Stderr, os.Getenv})
	stop()
	os.Exit(code)
}

// env is the process's outside world, so that commands can be tested.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// errUsage marks a mistake in the command line, already reported; it exits with status 2.
var errUsage = errors.New("usage")

// run dispatches a command line and returns the exit status.
func run(ctx context.Context, args []string, e env) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args, e)
	case "pub":
		err = pub(ctx, args, e)
	case "sub":
		err = sub(ctx, args, e)
	case "bench":
		err = bench.Main(ctx, args, e.stdout)
	case "token":
		err = token(args, e)
	case "version":
		_, err = fmt.Fprintln(e.stdout, "crier", versionString())
	case "help":
		_, err = io.WriteString(e.stdout, usage)
	default:
		fmt.Fprintf(e.stderr, "crier: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(e.stderr, "crier %s: %v\n", cmd, err)
		return 1
	}
}

// serve runs the server until ctx ends (SIGTERM or SIGINT), when it drains and returns.
func serve(ctx context.Context, args []string, e env) error {
	cfg, err := config.Load(args, e.getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(e.stdout, "%s\nFlags of crier serve (each also a YAML key and a CRIER_* variable):\n", usage)
		config.Usage(e.stdout)
		return nil
	}
	if err != nil {
		return err
	}
	if err := cfg.CheckSupported(); err != nil {
		return err
	}
	if err := cfg.CheckListen(); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	logger.Info("starting", "version", versionString(), "listen", cfg.Listen)
	if !cfg.AuthConfigured() {
		logger.Warn("no auth configured: anyone who can reach " + cfg.Listen + " may publish and subscribe to every channel")
	} else {
		anonSub, anonPub := cfg.Anonymous("")
		logger.Info("auth on: requests need a token or an API key except where a namespace allows anonymous access",
			"jwt_secret", cfg.JWTSecret != "", "jwt_public_keys", len(cfg.JWTPublicKeys), "jwks", cfg.JWKS != "",
			"api_keys", len(cfg.APIKeys), "anonymous_subscribe", anonSub, "anonymous_publish", anonPub)
	}
	if err := server.Run(ctx, cfg, logger); err != nil {
		logger.Error("server stopped", "err", err)
		return err
	}
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
