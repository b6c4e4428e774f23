package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/config"
)

// patternList is a repeatable flag of channel patterns.
type patternList []string

func (l *patternList) String() string { return strings.Join(*l, ",") }

func (l *patternList) Set(v string) error {
	if err := auth.ValidatePattern(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

// token mints an HS256 JWT from the configured secret and prints it. The secret is
// --jwt-secret, else the one `crier serve` would use: CRIER_JWT_SECRET, else jwt_secret of the
// config file (--config or CRIER_CONFIG).
func token(args []string, e env) error {
	fs := newFlagSet("crier token", "crier token [flags]   (prints an HS256 JWT signed with the server's secret)", e)
	secret := fs.String("jwt-secret", "", "HMAC `SECRET` (default: CRIER_JWT_SECRET, else jwt_secret of the config file; prefer those, a flag shows in ps)")
	configFile := fs.String("config", "", "YAML config `FILE` to read jwt_secret from [CRIER_CONFIG]")
	subject := fs.String("sub", "", "subject (sub claim); replaces {sub} in patterns")
	var subscribe, publish patternList
	fs.Var(&subscribe, "subscribe", "channel `PATTERN` the token may subscribe to (repeatable; * one segment, ** one or more, {sub} the subject)")
	fs.Var(&publish, "publish", "channel `PATTERN` the token may publish on (repeatable)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token (exp = now + ttl)")
	rest, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError(fs, "unexpected argument %q (crier token takes only flags)", rest[0])
	}
	if *ttl <= 0 {
		return usageError(fs, "--ttl must be positive, got %s", *ttl)
	}
	if *subject == "" {
		for _, p := range append(subscribe[:len(subscribe):len(subscribe)], publish...) {
			if strings.Contains(p, "{sub}") {
				return usageError(fs, "pattern %q uses {sub}, so give --sub", p)
			}
		}
	}
	key := *secret
	if key == "" {
		var cargs []string
		if *configFile != "" {
			cargs = []string{"--config", *configFile}
		}
		cfg, err := config.Load(cargs, e.getenv)
		if err != nil {
			return err
		}
		key = cfg.JWTSecret
	}
	if key == "" {
		return usageError(fs, "no JWT secret: give --jwt-secret, set CRIER_JWT_SECRET, or jwt_secret in the --config file")
	}
	tok, err := auth.MintHS256(key, auth.TokenSpec{Subject: *subject, Subscribe: subscribe, Publish: publish, TTL: *ttl})
	if err != nil {
		return err
	}
	if len(subscribe) == 0 && len(publish) == 0 {
		fmt.Fprintln(e.stderr, "crier token: warning: the token grants no channel; add --subscribe or --publish PATTERN")
	}
	_, err = fmt.Fprintln(e.stdout, tok)
	return err
}
