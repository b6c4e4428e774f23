// Package config is Crier's configuration: defaults, then a YAML file, then CRIER_* environment
// variables, then command-line flags, each overriding the one before.
package config

import "time"

// Config is everything `crier serve` needs.
type Config struct {
	Listen      string        `yaml:"listen"`       // --listen, default 127.0.0.1:8080
	DataDir     string        `yaml:"data_dir"`     // --data-dir, default ./crier-data
	Memory      bool          `yaml:"memory"`       // --memory: no disk
	TLSCert     string        `yaml:"tls_cert"`     // --tls-cert FILE: serve HTTPS and HTTP/2 with this PEM certificate chain
	TLSKey      string        `yaml:"tls_key"`      // --tls-key FILE: its PEM private key
	Broker      string        `yaml:"broker"`       // --broker redis://… or nats://… (later)
	Upstream    string        `yaml:"upstream"`     // --upstream URL (later)
	RelayListen string        `yaml:"relay_listen"` // --relay-listen, default 127.0.0.1:7071 (later)
	Insecure    bool          `yaml:"insecure"`     // --insecure
	Heartbeat   time.Duration `yaml:"heartbeat"`    // --heartbeat, default 15s
	MaxLifetime time.Duration `yaml:"max_lifetime"` // --max-lifetime, 0 = none
	DrainDelay  time.Duration `yaml:"drain_delay"`  // --drain-delay: how long SIGTERM waits for in-flight work, default 10s

	// Auth (SPEC section 7; docs/security.md).
	JWTSecret     string   `yaml:"jwt_secret"`      // --jwt-secret: HS256/384/512
	JWTPublicKeys []string `yaml:"jwt_public_keys"` // --jwt-public-key FILE, repeatable: RS256, ES256, EdDSA (PEM)
	JWKS          string   `yaml:"jwks"`            // --jwks URL or FILE
	APIKeys       []string `yaml:"api_keys"`        // --api-key, repeatable
	// Anonymous access to the default namespace once auth is configured; other namespaces
	// have their own (Namespace), and do not inherit these.
	AnonymousSubscribe bool     `yaml:"anonymous_subscribe"` // --anonymous-subscribe
	AnonymousPublish   bool     `yaml:"anonymous_publish"`   // --anonymous-publish
	AllowOrigins       []string `yaml:"allow_origins"`       // --allow-origin, repeatable; "*" allowed
	TrustedProxies     []string `yaml:"trusted_proxies"`     // --trust-proxy CIDR, repeatable: whose X-Forwarded-For counts

	// The default namespace.
	HistorySize int           `yaml:"history_size"` // --history-size, default 1000
	HistoryTTL  time.Duration `yaml:"history_ttl"`  // --history-ttl, default 24h
	Presence    bool          `yaml:"presence"`     // --presence
	DedupWindow time.Duration `yaml:"dedup_window"` // --dedup-window, default 10m

	// Namespaces other than the default, by name.
	Namespaces map[string]Namespace `yaml:"namespaces"`

	// Limits.
	MaxMessageSize   int           `yaml:"max_message_size"`  // --max-message-size, default 65536
	MaxSubscriptions int           `yaml:"max_subscriptions"` // --max-subscriptions per connection, default 100
	QueueSize        int           `yaml:"queue_size"`        // --queue-size messages per subscriber, default 1000
	QueueBytes       int           `yaml:"queue_bytes"`       // --queue-bytes per subscriber, default 4 MiB
	MaxConns         int           `yaml:"max_conns"`         // --max-conns: subscriber connections in all, 0 = no limit
	MaxConnsPerIP    int           `yaml:"max_conns_per_ip"`  // --max-conns-per-ip, 0 = no limit
	PublishRate      string        `yaml:"publish_rate"`      // --publish-rate per token and per IP: "10/s", "600/m"; "" = none
	PublishBurst     int           `yaml:"publish_burst"`     // --publish-burst, 0 = the rate's N
	HeaderTimeout    time.Duration `yaml:"header_timeout"`    // --header-timeout, default 10s
	ReadTimeout      time.Duration `yaml:"read_timeout"`      // --read-timeout: a request body, default 30s
	WriteTimeout     time.Duration `yaml:"write_timeout"`     // --write-timeout: a plain answer, or a stalled stream, default 30s
	IdleTimeout      time.Duration `yaml:"idle_timeout"`      // --idle-timeout: a kept-alive connection between requests, default 2m
	SSERetry         time.Duration `yaml:"sse_retry"`         // --sse-retry, default 2s

	LogLevel string `yaml:"log_level"` // --log-level debug|info|warn|error, default info
}

// Namespace is a namespace's options; zero values take the default namespace's.
type Namespace struct {
	HistorySize *int           `yaml:"history_size"`
	HistoryTTL  *time.Duration `yaml:"history_ttl"`
	Presence    *bool          `yaml:"presence"`
	// Anonymous access once auth is configured. Unlike the options above these are never
	// taken from the default namespace: absent is false.
	AnonymousSubscribe *bool `yaml:"anonymous_subscribe"`
	AnonymousPublish   *bool `yaml:"anonymous_publish"`
}

// Default returns the configuration of a bare `crier serve`.
func Default() Config {
	return Config{
		Listen:           "127.0.0.1:8080",
		DataDir:          "./crier-data",
		RelayListen:      "127.0.0.1:7071",
		Heartbeat:        15 * time.Second,
		DrainDelay:       10 * time.Second,
		HistorySize:      1000,
		HistoryTTL:       24 * time.Hour,
		DedupWindow:      10 * time.Minute,
		MaxMessageSize:   64 << 10,
		MaxSubscriptions: 100,
		QueueSize:        1000,
		QueueBytes:       4 << 20,
		HeaderTimeout:    10 * time.Second,
		ReadTimeout:      30 * time.Second,
		WriteTimeout:     30 * time.Second,
		IdleTimeout:      2 * time.Minute,
		SSERetry:         2 * time.Second,
		LogLevel:         "info",
	}
}
