package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/crier-push/crier/internal/channel"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/limit"
	"github.com/crier-push/crier/internal/origin"
)

// option is one setting as it appears on the command line and in the environment. Its YAML key
// is the flag name with '_' for '-' unless key says otherwise; its variable is CRIER_ and the
// flag name in upper snake case.
type option struct {
	name   string
	key    string // the YAML key, when not derived from name
	arg    string // the value's name in the usage; "" for a bool
	usage  string
	isBool bool // a flag that needs no value
	// A list (--api-key) is repeatable on the command line and comma-separated in its
	// variable; set adds one item, and clear empties it before a source sets it anew.
	clear func(c *Config)
	set   func(c *Config, v string) error
	show  func(c Config) string // the value for the usage text; "" shows none
}

func (o option) yamlKey() string {
	if o.key != "" {
		return o.key
	}
	return strings.ReplaceAll(o.name, "-", "_")
}

func (o option) envName() string {
	return "CRIER_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

// configFlag is --config; it names the file and has no field of its own.
const configFlag = "config"

// options lists every setting of `crier serve` in the order the usage shows them.
func options() []option {
	return []option{
		str("listen", "ADDR", "HTTP listen address", func(c *Config) *string { return &c.Listen }),
		str("tls-cert", "FILE", "PEM certificate chain: serve HTTPS, with HTTP/2 (needs --tls-key)", func(c *Config) *string { return &c.TLSCert }),
		str("tls-key", "FILE", "PEM private key of --tls-cert", func(c *Config) *string { return &c.TLSKey }),
		str("data-dir", "DIR", "directory of the embedded durable store", func(c *Config) *string { return &c.DataDir }),
		boolean("memory", "keep everything in memory (no disk)", func(c *Config) *bool { return &c.Memory }),
		{name: configFlag, arg: "FILE", usage: "YAML config file", set: func(*Config, string) error { return nil }},
		str("broker", "URL", "cluster broker URL (redis://… or nats://…)", func(c *Config) *string { return &c.Broker }),
		str("upstream", "URL", "URL of the Crier this node relays", func(c *Config) *string { return &c.Upstream }),
		str("relay-listen", "ADDR", "TCP relay listen address", func(c *Config) *string { return &c.RelayListen }),
		str("jwt-secret", "SECRET", "HMAC secret of HS256/384/512 JWTs", func(c *Config) *string { return &c.JWTSecret }),
		list("jwt-public-key", "jwt_public_keys", "FILE", "PEM file of RS256, ES256 or EdDSA public keys that verify JWTs (repeatable)",
			func(c *Config) *[]string { return &c.JWTPublicKeys }, nil),
		str("jwks", "URL", "JWK Set (https:// URL or file) of keys that verify JWTs", func(c *Config) *string { return &c.JWKS }),
		list("api-key", "api_keys", "KEY", "API key for server-side publishers and the admin API (repeatable)",
			func(c *Config) *[]string { return &c.APIKeys }, nil),
		boolean("anonymous-subscribe", "with auth configured, let requests without a token subscribe in the default namespace",
			func(c *Config) *bool { return &c.AnonymousSubscribe }),
		boolean("anonymous-publish", "with auth configured, let requests without a token publish in the default namespace",
			func(c *Config) *bool { return &c.AnonymousPublish }),
		list("allow-origin", "allow_origins", "ORIGIN", "web origin allowed beside the server's own, for CORS and WebSocket (repeatable; https://*.example.com; * for any)",
			func(c *Config) *[]string { return &c.AllowOrigins }, checkOrigin),
		list("trust-proxy", "trusted_proxies", "CIDR", "reverse proxy whose X-Forwarded-For names the client (repeatable)",
			func(c *Config) *[]string { return &c.TrustedProxies }, checkProxy),
		boolean("insecure", "allow a non-loopback --listen without auth", func(c *Config) *bool { return &c.Insecure }),
		duration("heartbeat", "idle heartbeat interval of streaming transports", func(c *Config) *time.Duration { return &c.Heartbeat }),
		duration("max-lifetime", "longest life of a streaming connection (0: none)", func(c *Config) *time.Duration { return &c.MaxLifetime }),
		duration("drain-delay", "how long shutdown waits for in-flight work", func(c *Config) *time.Duration { return &c.DrainDelay }),
		integer("history-size", "messages kept per channel in the default namespace (0: none)", func(c *Config) *int { return &c.HistorySize }),
		duration("history-ttl", "age of the oldest message kept in the default namespace (0: no limit)", func(c *Config) *time.Duration { return &c.HistoryTTL }),
		boolean("presence", "enable presence in the default namespace", func(c *Config) *bool { return &c.Presence }),
		duration("dedup-window", "how long an Idempotency-Key is remembered", func(c *Config) *time.Duration { return &c.DedupWindow }),
		integer("max-message-size", "largest message payload in bytes", func(c *Config) *int { return &c.MaxMessageSize }),
		integer("max-subscriptions", "most channels per connection", func(c *Config) *int { return &c.MaxSubscriptions }),
		integer("queue-size", "messages waiting for one subscriber before it is cut off", func(c *Config) *int { return &c.QueueSize }),
		integer("queue-bytes", "bytes waiting for one subscriber before it is cut off", func(c *Config) *int { return &c.QueueBytes }),
		integer("max-conns", "most subscriber connections in all (0: no limit)", func(c *Config) *int { return &c.MaxConns }),
		integer("max-conns-per-ip", "most subscriber connections from one IP address, or IPv6 /64 (0: no limit)", func(c *Config) *int { return &c.MaxConnsPerIP }),
		str("publish-rate", "RATE", "publishes allowed per token and per IP, as 10/s, 600/m or 0.5/s (none: no limit)", func(c *Config) *string { return &c.PublishRate }),
		integer("publish-burst", "publishes allowed in one burst beyond --publish-rate (0: the rate's count)", func(c *Config) *int { return &c.PublishBurst }),
		duration("header-timeout", "time allowed to read request headers", func(c *Config) *time.Duration { return &c.HeaderTimeout }),
		duration("read-timeout", "time allowed to read a request body", func(c *Config) *time.Duration { return &c.ReadTimeout }),
		duration("write-timeout", "time allowed to write an answer, or for a stream's peer to take bytes", func(c *Config) *time.Duration { return &c.WriteTimeout }),
		duration("idle-timeout", "how long a kept-alive connection may wait for its next request", func(c *Config) *time.Duration { return &c.IdleTimeout }),
		duration("sse-retry", "reconnect delay advised to SSE clients", func(c *Config) *time.Duration { return &c.SSERetry }),
		str("log-level", "LEVEL", "debug, info, warn or error", func(c *Config) *string { return &c.LogLevel }),
	}
}

// optionNamed returns the option of a flag name; a key with no flag (namespaces) gets a bare one.
func optionNamed(name string) option {
	for _, o := range options() {
		if o.name == name {
			return o
		}
	}
	return option{name: name}
}

func str(name, arg, usage string, field func(*Config) *string) option {
	return option{name: name, arg: arg, usage: usage, set: func(c *Config, v string) error {
		*field(c) = v
		return nil
	}, show: func(c Config) string { return *field(&c) }}
}

// list is a repeatable option: a flag given again adds an item, its variable is a
// comma-separated list, its YAML key (key) a sequence. check, when set, validates each item.
func list(name, key, arg, usage string, field func(*Config) *[]string, check func(string) error) option {
	return option{name: name, key: key, arg: arg, usage: usage,
		clear: func(c *Config) { *field(c) = nil },
		set: func(c *Config, v string) error {
			if check != nil {
				if err := check(v); err != nil {
					return err
				}
			}
			*field(c) = append(*field(c), v)
			return nil
		}}
}

func boolean(name, usage string, field func(*Config) *bool) option {
	return option{name: name, usage: usage, isBool: true, set: func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", v)
		}
		*field(c) = b
		return nil
	}}
}

func integer(name, usage string, field func(*Config) *int) option {
	return option{name: name, arg: "N", usage: usage, set: func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*field(c) = n
		return nil
	}, show: func(c Config) string {
		if n := *field(&c); n != 0 {
			return strconv.Itoa(n)
		}
		return ""
	}}
}

func duration(name, usage string, field func(*Config) *time.Duration) option {
	return option{name: name, arg: "DURATION", usage: usage, set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 1s or 15m", v)
		}
		*field(c) = d
		return nil
	}, show: func(c Config) string {
		if d := *field(&c); d != 0 {
			return d.String()
		}
		return ""
	}}
}

// Load builds the configuration of `crier serve` from defaults, then the YAML file named by
// --config or CRIER_CONFIG, then CRIER_* variables, then flags. args excludes the subcommand.
// A -h/--help argument returns an error wrapping flag.ErrHelp; print Usage then.
func Load(args []string, getenv func(string) string) (Config, error) {
	set, err := parseFlags(args)
	if err != nil {
		return Config{}, err
	}
	cfg := Default()
	path := getenv("CRIER_CONFIG")
	if v, ok := set.last(configFlag); ok {
		path = v
	}
	if path != "" {
		if err := loadFile(&cfg, path); err != nil {
			return Config{}, err
		}
	}
	if err := loadEnv(&cfg, getenv); err != nil {
		return Config{}, err
	}
	if err := set.apply(&cfg); err != nil {
		return Config{}, err
	}
	cfg.LogLevel = strings.ToLower(cfg.LogLevel)
	return cfg, nil
}

// Usage writes the flags of `crier serve` to w.
func Usage(w io.Writer) {
	def := Default()
	for _, opt := range options() {
		fmt.Fprintf(w, "  %s\n    \t%s\n", strings.TrimSpace("--"+opt.name+" "+opt.arg), opt.help(def))
	}
}

// help is the option's usage with its default and its environment variable.
func (o option) help(def Config) string {
	h := o.usage
	if o.show != nil {
		if d := o.show(def); d != "" {
			h += " (default " + d + ")"
		}
	}
	return h + " [" + o.envName() + "]"
}

// flagValues records flags in command-line order; they are applied last, over file and env.
type flagValues struct {
	opts   map[string]option
	values []flagValue
}

type flagValue struct{ name, value string }

func (s *flagValues) last(name string) (string, bool) {
	for i := len(s.values) - 1; i >= 0; i-- {
		if s.values[i].name == name {
			return s.values[i].value, true
		}
	}
	return "", false
}

// apply sets the recorded flags on c. A list flag replaces what file and env gave.
func (s *flagValues) apply(c *Config) error {
	cleared := map[string]bool{}
	for _, fv := range s.values {
		opt := s.opts[fv.name]
		if opt.clear != nil && !cleared[fv.name] {
			opt.clear(c)
			cleared[fv.name] = true
		}
		if err := opt.set(c, fv.value); err != nil {
			return fmt.Errorf("--%s: %w", fv.name, err)
		}
	}
	if err := validate(c); err != nil {
		return fmt.Errorf("--%s: %w", err.key, err.err)
	}
	return nil
}

// recorder is the flag.Value of one option: it checks the value at once, so that the flag
// package names the flag in its error, and records it for later.
type recorder struct {
	opt option
	set *flagValues
}

func (r recorder) String() string   { return "" }
func (r recorder) IsBoolFlag() bool { return r.opt.isBool }

func (r recorder) Set(v string) error {
	if err := r.opt.set(new(Config), v); err != nil {
		return err
	}
	r.set.values = append(r.set.values, flagValue{r.opt.name, v})
	return nil
}

func newFlagSet() (*flag.FlagSet, *flagValues) {
	fs := flag.NewFlagSet("crier serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; Usage prints the help
	set := &flagValues{opts: map[string]option{}}
	for _, opt := range options() {
		set.opts[opt.name] = opt
		fs.Var(recorder{opt, set}, opt.name, opt.usage)
	}
	return fs, set
}

func parseFlags(args []string) (*flagValues, error) {
	fs, set := newFlagSet()
	if err := fs.Parse(args); err != nil {
		return nil, err // the flag package names the flag
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (crier serve takes only flags)", fs.Arg(0))
	}
	return set, nil
}

func loadFile(c *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key is an error, not a silently ignored setting
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if err := validate(c); err != nil {
		return fmt.Errorf("config file %s: %s: %w", path, optionNamed(err.key).yamlKey(), err.err)
	}
	return nil
}

func loadEnv(c *Config, getenv func(string) string) error {
	for _, opt := range options() {
		v := getenv(opt.envName())
		if v == "" || opt.name == configFlag {
			continue
		}
		if err := setEnv(c, opt, v); err != nil {
			return fmt.Errorf("%s: %w", opt.envName(), err)
		}
	}
	if err := validate(c); err != nil {
		return fmt.Errorf("%s: %w", optionNamed(err.key).envName(), err.err)
	}
	return nil
}

func setEnv(c *Config, opt option, v string) error {
	if opt.clear == nil {
		return opt.set(c, v)
	}
	opt.clear(c)
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			if err := opt.set(c, item); err != nil {
				return err
			}
		}
	}
	return nil
}

// fieldError names the setting that is wrong by its flag name; each source renders the name its
// own way. Each layer is validated as it is applied, so the error names the source that set it.
type fieldError struct {
	key string
	err error
}

func validate(c *Config) *fieldError {
	bad := func(key, format string, a ...any) *fieldError {
		return &fieldError{key, fmt.Errorf(format, a...)}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "%q is not HOST:PORT", c.Listen)
	}
	if c.RelayListen != "" {
		if _, _, err := net.SplitHostPort(c.RelayListen); err != nil {
			return bad("relay-listen", "%q is not HOST:PORT", c.RelayListen)
		}
	}
	if !c.Memory && c.DataDir == "" {
		return bad("data-dir", "must be set unless --memory is given")
	}
	for _, k := range c.APIKeys {
		if k == "" {
			return bad("api-key", "must not be empty")
		}
	}
	for _, f := range c.JWTPublicKeys {
		if f == "" {
			return bad("jwt-public-key", "must not be empty")
		}
	}
	for _, o := range c.AllowOrigins {
		if err := checkOrigin(o); err != nil {
			return &fieldError{"allow-origin", err}
		}
	}
	for _, p := range c.TrustedProxies {
		if err := checkProxy(p); err != nil {
			return &fieldError{"trust-proxy", err}
		}
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"max-conns", c.MaxConns}, {"max-conns-per-ip", c.MaxConnsPerIP}, {"publish-burst", c.PublishBurst}} {
		if n.v < 0 {
			return bad(n.key, "must not be negative (0 is the default), got %d", n.v)
		}
	}
	if _, err := c.PublishLimit(); err != nil {
		return &fieldError{"publish-rate", err}
	}
	if err := validateDurations(c); err != nil {
		return err
	}
	if err := validateSizes(c); err != nil {
		return err
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return bad("log-level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	return validateNamespaces(c.Namespaces)
}

func validateDurations(c *Config) *fieldError {
	positive := []struct {
		key string
		d   time.Duration
	}{{"heartbeat", c.Heartbeat}, {"dedup-window", c.DedupWindow}, {"header-timeout", c.HeaderTimeout}, {"sse-retry", c.SSERetry},
		{"read-timeout", c.ReadTimeout}, {"write-timeout", c.WriteTimeout}, {"idle-timeout", c.IdleTimeout}}
	for _, p := range positive {
		if p.d <= 0 {
			return &fieldError{p.key, fmt.Errorf("must be positive, got %s", p.d)}
		}
	}
	// Zero means "none" for these: no lifetime limit, no drain wait, no age limit.
	nonNegative := []struct {
		key string
		d   time.Duration
	}{{"max-lifetime", c.MaxLifetime}, {"drain-delay", c.DrainDelay}, {"history-ttl", c.HistoryTTL}}
	for _, p := range nonNegative {
		if p.d < 0 {
			return &fieldError{p.key, fmt.Errorf("must not be negative, got %s", p.d)}
		}
	}
	return nil
}

func validateSizes(c *Config) *fieldError {
	// history-size 0 is the store's "keep no history", so it is allowed.
	if c.HistorySize < 0 {
		return &fieldError{"history-size", fmt.Errorf("must not be negative, got %d", c.HistorySize)}
	}
	positive := []struct {
		key string
		n   int
	}{{"max-message-size", c.MaxMessageSize}, {"max-subscriptions", c.MaxSubscriptions},
		{"queue-size", c.QueueSize}, {"queue-bytes", c.QueueBytes}}
	for _, p := range positive {
		if p.n <= 0 {
			return &fieldError{p.key, fmt.Errorf("must be positive, got %d", p.n)}
		}
	}
	return nil
}

func validateNamespaces(nss map[string]Namespace) *fieldError {
	for name, ns := range nss {
		if name == "" || strings.Contains(name, ":") || !channel.ValidName(name) {
			return &fieldError{"namespaces", fmt.Errorf("%q is not a namespace name (A-Z a-z 0-9 _ - . = ~, no ':')", name)}
		}
		if ns.HistorySize != nil && *ns.HistorySize < 0 {
			return &fieldError{"namespaces", fmt.Errorf("%s: history_size must not be negative", name)}
		}
		if ns.HistoryTTL != nil && *ns.HistoryTTL < 0 {
			return &fieldError{"namespaces", fmt.Errorf("%s: history_ttl must not be negative", name)}
		}
	}
	return nil
}

// Namespace returns the options of namespace name ("" is the default namespace): the
// namespace's own settings over the default namespace's.
func (c Config) Namespace(name string) hub.Namespace {
	ns := hub.Namespace{HistorySize: c.HistorySize, HistoryTTL: c.HistoryTTL, Presence: c.Presence}
	o, ok := c.Namespaces[name]
	if name == "" || !ok {
		return ns
	}
	if o.HistorySize != nil {
		ns.HistorySize = *o.HistorySize
	}
	if o.HistoryTTL != nil {
		ns.HistoryTTL = *o.HistoryTTL
	}
	if o.Presence != nil {
		ns.Presence = *o.Presence
	}
	return ns
}

// SlogLevel is LogLevel as a slog.Level; Load has validated it.
func (c Config) SlogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// AuthConfigured reports whether any credential is configured (an HMAC secret, a public key
// file, a JWKS or an API key), which turns anonymous access off but where a namespace allows it.
func (c Config) AuthConfigured() bool {
	return c.JWTSecret != "" || len(c.JWTPublicKeys) > 0 || c.JWKS != "" || len(c.APIKeys) > 0
}

// Anonymous tells whether requests without a credential may subscribe and publish in
// namespace ns ("" the default) once auth is configured: --anonymous-subscribe and
// --anonymous-publish for the default namespace, each namespace's anonymous_subscribe and
// anonymous_publish for the others. A namespace never inherits the default namespace's: an
// open default namespace does not open chat:… by accident.
func (c Config) Anonymous(ns string) (subscribe, publish bool) {
	if ns == "" {
		return c.AnonymousSubscribe, c.AnonymousPublish
	}
	o, ok := c.Namespaces[ns]
	if !ok {
		return false, false
	}
	return o.AnonymousSubscribe != nil && *o.AnonymousSubscribe, o.AnonymousPublish != nil && *o.AnonymousPublish
}

// BatchBodyFactor is how many times --max-message-size a request body other than a single
// publish may be (a batch of messages, with their JSON), and at least MinBatchBody bytes.
const (
	BatchBodyFactor = 16
	MinBatchBody    = 1 << 20
)

// MaxBodySize is the largest request body any endpoint reads: BatchBodyFactor messages of the
// maximum size, at least MinBatchBody. A single publish is held to MaxMessageSize itself.
func (c Config) MaxBodySize() int {
	return max(MinBatchBody, BatchBodyFactor*c.MaxMessageSize)
}

// PublishLimit is --publish-rate and --publish-burst parsed.
func (c Config) PublishLimit() (limit.Rate, error) {
	return limit.ParseRate(c.PublishRate, c.PublishBurst)
}

func checkOrigin(s string) error {
	_, err := origin.Parse([]string{s})
	return err
}

func checkProxy(s string) error {
	_, err := limit.ParseProxy(s)
	return err
}

// CheckSupported refuses settings whose feature this build does not have yet. Accepting a flag
// without acting on it would leave an operator believing in a feature that is not there, so
// these fail loudly instead of being ignored.
func (c Config) CheckSupported() error {
	for _, f := range []struct {
		set  bool
		flag string
	}{
		{c.Broker != "", "--broker"},
		{c.Upstream != "", "--upstream"},
	} {
		if f.set {
			return fmt.Errorf("%s is not supported by this version of crier yet", f.flag)
		}
	}
	return nil
}

// CheckListen refuses an open server on a reachable address: without auth anyone who can reach
// --listen may publish and subscribe to everything, so that needs a loopback address or an
// explicit --insecure.
func (c Config) CheckListen() error {
	if c.AuthConfigured() || c.Insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", c.Listen, err)
	}
	if isLoopback(host) {
		return nil
	}
	return fmt.Errorf("refusing to listen on %s without auth: anyone who can reach it could publish "+
		"and subscribe to every channel; configure --jwt-secret, --jwt-public-key, --jwks or --api-key, listen on a loopback "+
		"address such as 127.0.0.1:8080, or pass --insecure if this exposure is intended", c.Listen)
}

// isLoopback accepts loopback IPs and the name localhost; other names are refused rather than
// resolved, since what a name resolves to at start-up proves nothing about later.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
