package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/crier-push/crier/client"
)

const defaultServer = "http://127.0.0.1:8080"

// clientFlags are the flags pub and sub share.
type clientFlags struct {
	server, token string
}

func (cf *clientFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	srv := getenv("CRIER_SERVER")
	if srv == "" {
		srv = defaultServer
	}
	fs.StringVar(&cf.server, "server", srv, "server URL [CRIER_SERVER]")
	fs.StringVar(&cf.token, "token", getenv("CRIER_TOKEN"), "JWT or API key, sent as a Bearer token [CRIER_TOKEN]")
}

func (cf *clientFlags) client() *client.Client {
	var opts []client.Option
	if cf.token != "" {
		opts = append(opts, client.WithToken(cf.token))
	}
	return client.New(cf.server, opts...)
}

func newFlagSet(name, synopsis string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags wherever they sit among the arguments, as people type them
// (`crier sub news --cursor C`), and returns the others. "--" ends the flags.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage // the flag package has printed the error and the usage
		}
		left := fs.Args()
		if len(left) == 0 {
			return rest, nil
		}
		if i := len(args) - len(left); i > 0 && args[i-1] == "--" {
			return append(rest, left...), nil
		}
		rest, args = append(rest, left[0]), left[1:]
	}
}

// usageError reports a command-line mistake with the command's usage.
func usageError(fs *flag.FlagSet, format string, a ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return errUsage
}

// pub publishes one message and prints the server's answer.
func pub(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("crier pub", "crier pub [flags] CHANNEL [DATA]   (DATA absent: read stdin)", e)
	var cf clientFlags
	cf.register(fs, e.getenv)
	var opts client.PublishOptions
	fs.StringVar(&opts.Event, "event", "", "event type (default message)")
	fs.DurationVar(&opts.TTL, "ttl", 0, "drop the message from history after this long, e.g. 1h")
	fs.StringVar(&opts.ContentType, "content-type", "", "payload content type (default: JSON, text or binary, guessed)")
	fs.StringVar(&opts.IdempotencyKey, "idempotency-key", "", "publish once however often this is retried")
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usageError(fs, "want CHANNEL and at most one DATA argument, got %d arguments", len(pos))
	}
	var data []byte
	if len(pos) == 2 {
		data = []byte(pos[1])
	} else if data, err = io.ReadAll(e.stdin); err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	res, err := cf.client().Publish(ctx, pos[0], data, opts)
	if err != nil {
		return err
	}
	return json.NewEncoder(e.stdout).Encode(res)
}

// sub prints each envelope of a subscription as one JSON line until interrupted.
func sub(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("crier sub", "crier sub [flags] CHANNEL...", e)
	var cf clientFlags
	cf.register(fs, e.getenv)
	cursor := fs.String("cursor", "", "resume right after the message that carried this cursor")
	since := fs.String("since", "", "EPOCH:OFFSET: resume the one CHANNEL after this position")
	count := fs.Int("count", 0, "exit after this many envelopes (0: never)")
	channels, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if *since != "" {
		if len(channels) != 1 || *cursor != "" {
			return usageError(fs, "--since takes exactly one CHANNEL and no --cursor")
		}
		*cursor = channels[0] + "@" + *since // a cursor is CHANNEL@EPOCH:OFFSET entries
	}
	if len(channels) == 0 && *cursor == "" {
		return usageError(fs, "name at least one CHANNEL, or a --cursor")
	}
	s := cf.client().Subscribe(ctx, channels, client.SubscribeOptions{
		Cursor: *cursor,
		OnRetry: func(err error, d time.Duration) {
			fmt.Fprintf(e.stderr, "crier sub: %v; reconnecting in %s\n", err, d.Round(time.Millisecond))
		},
	})
	err = printEnvelopes(s, e.stdout, *count)
	s.Close()
	if err == nil && ctx.Err() == nil {
		err = s.Err()
	}
	if c := s.Cursor(); c != "" {
		fmt.Fprintf(e.stderr, "crier sub: resume with --cursor '%s'\n", c)
	}
	return err
}

func printEnvelopes(s *client.Subscription, stdout io.Writer, count int) error {
	w := bufio.NewWriter(stdout)
	var line bytes.Buffer
	n := 0
	for env := range s.Events() {
		line.Reset()
		if err := json.Compact(&line, env.Raw); err != nil {
			return fmt.Errorf("envelope: %w", err)
		}
		line.WriteByte('\n')
		if _, err := w.Write(line.Bytes()); err != nil {
			return err
		}
		if err := w.Flush(); err != nil { // each line at once: sub is often piped
			return err
		}
		if n++; count > 0 && n >= count {
			return nil
		}
	}
	return nil
}
