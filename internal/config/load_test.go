package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/hub"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string // YAML written to a temp file; "$FILE" in args and env names it
		want    func(c *Config)
		wantErr string // substring of the error; "" means success
	}{
		{name: "defaults", want: func(*Config) {}},
		{
			name: "every flag",
			args: []string{"--listen", "127.0.0.1:9", "--data-dir=/d", "--memory", "--broker", "redis://b",
				"--upstream", "http://up", "--relay-listen", ":7", "--jwt-secret", "s", "--api-key", "k1",
				"--api-key", "k2", "--insecure", "--heartbeat", "5s", "--max-lifetime", "1h",
				"--drain-delay", "0s", "--history-size", "0", "--history-ttl", "0", "--presence",
				"--dedup-window", "1m", "--max-message-size", "10", "--max-subscriptions", "2",
				"--queue-size", "3", "--queue-bytes", "4", "--header-timeout", "1s", "--sse-retry", "3s",
				"--log-level", "DEBUG", "--jwt-public-key", "a.pem", "--jwt-public-key", "b.pem", "--jwks", "https://idp/jwks",
				"--anonymous-subscribe", "--anonymous-publish", "--allow-origin", "https://app.example.com",
				"--allow-origin", "*", "--trust-proxy", "10.0.0.0/8", "--max-conns", "100", "--max-conns-per-ip", "10",
				"--publish-rate", "5/s", "--publish-burst", "20", "--read-timeout", "2s", "--write-timeout", "3s",
				"--idle-timeout", "4s"},
			want: func(c *Config) {
				c.Listen, c.DataDir, c.Memory, c.Broker, c.Upstream = "127.0.0.1:9", "/d", true, "redis://b", "http://up"
				c.RelayListen, c.JWTSecret, c.APIKeys, c.Insecure = ":7", "s", []string{"k1", "k2"}, true
				c.Heartbeat, c.MaxLifetime, c.DrainDelay = 5*time.Second, time.Hour, 0
				c.HistorySize, c.HistoryTTL, c.Presence, c.DedupWindow = 0, 0, true, time.Minute
				c.MaxMessageSize, c.MaxSubscriptions, c.QueueSize, c.QueueBytes = 10, 2, 3, 4
				c.HeaderTimeout, c.SSERetry, c.LogLevel = time.Second, 3*time.Second, "debug"
				c.JWTPublicKeys, c.JWKS = []string{"a.pem", "b.pem"}, "https://idp/jwks"
				c.AnonymousSubscribe, c.AnonymousPublish = true, true
				c.AllowOrigins, c.TrustedProxies = []string{"https://app.example.com", "*"}, []string{"10.0.0.0/8"}
				c.MaxConns, c.MaxConnsPerIP, c.PublishRate, c.PublishBurst = 100, 10, "5/s", 20
				c.ReadTimeout, c.WriteTimeout, c.IdleTimeout = 2*time.Second, 3*time.Second, 4*time.Second
			},
		},
		{
			name: "env",
			env: map[string]string{"CRIER_LISTEN": "localhost:1", "CRIER_MEMORY": "true", "CRIER_API_KEY": "a, b,,c",
				"CRIER_HISTORY_SIZE": "7", "CRIER_HISTORY_TTL": "1h", "CRIER_HEARTBEAT": "2s",
				"CRIER_MAX_LIFETIME": "3m", "CRIER_JWT_SECRET": "x", "CRIER_DATA_DIR": "/e", "CRIER_LOG_LEVEL": "warn"},
			want: func(c *Config) {
				c.Listen, c.Memory, c.APIKeys, c.HistorySize, c.HistoryTTL = "localhost:1", true, []string{"a", "b", "c"}, 7, time.Hour
				c.Heartbeat, c.MaxLifetime, c.JWTSecret, c.DataDir, c.LogLevel = 2*time.Second, 3*time.Minute, "x", "/e", "warn"
			},
		},
		{
			name: "file via flag",
			args: []string{"--config", "$FILE"},
			file: "listen: 127.0.0.1:1\nhistory_ttl: 2h\napi_keys: [f1, f2]\nnamespaces:\n  chat:\n    presence: true\n    history_size: 5\n",
			want: func(c *Config) {
				c.Listen, c.HistoryTTL, c.APIKeys = "127.0.0.1:1", 2*time.Hour, []string{"f1", "f2"}
				c.Namespaces = map[string]Namespace{"chat": {Presence: ptr(true), HistorySize: ptr(5)}}
			},
		},
		{
			name: "file via env",
			env:  map[string]string{"CRIER_CONFIG": "$FILE"},
			file: "history_size: 9\n",
			want: func(c *Config) { c.HistorySize = 9 },
		},
		{name: "empty file", args: []string{"--config=$FILE"}, file: "", want: func(*Config) {}},
		{
			name: "precedence: flag over env over file over default",
			args: []string{"--config", "$FILE", "--history-size", "3"},
			env:  map[string]string{"CRIER_HISTORY_SIZE": "2", "CRIER_HEARTBEAT": "4s"},
			file: "history_size: 1\nheartbeat: 3s\nsse_retry: 9s\n",
			want: func(c *Config) { c.HistorySize, c.Heartbeat, c.SSERetry = 3, 4*time.Second, 9*time.Second },
		},
		{
			name: "repeated api-key flags replace env and file keys",
			args: []string{"--config", "$FILE", "--api-key", "flag"},
			env:  map[string]string{"CRIER_API_KEY": "env"},
			file: "api_keys: [file]\n",
			want: func(c *Config) { c.APIKeys = []string{"flag"} },
		},
		{name: "--config flag over CRIER_CONFIG", args: []string{"--config", "$FILE"},
			env: map[string]string{"CRIER_CONFIG": "/nonexistent"}, file: "memory: true\n",
			want: func(c *Config) { c.Memory = true }},
		{name: "bool flag with value", args: []string{"--memory=false"}, env: map[string]string{"CRIER_MEMORY": "1"},
			want: func(*Config) {}},

		{name: "bad flag int", args: []string{"--history-size", "x"}, wantErr: "-history-size"},
		{name: "bad flag duration", args: []string{"--heartbeat", "5"}, wantErr: "-heartbeat"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "-nope"},
		{name: "positional", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{name: "negative flag size", args: []string{"--queue-size", "-1"}, wantErr: "--queue-size: must be positive"},
		{name: "zero max message size", args: []string{"--max-message-size=0"}, wantErr: "--max-message-size"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "bad listen", args: []string{"--listen", "8080"}, wantErr: "--listen"},
		{name: "bad env int", env: map[string]string{"CRIER_QUEUE_BYTES": "lots"}, wantErr: "CRIER_QUEUE_BYTES"},
		{name: "bad env bool", env: map[string]string{"CRIER_PRESENCE": "maybe"}, wantErr: "CRIER_PRESENCE"},
		{name: "bad env range", env: map[string]string{"CRIER_HEARTBEAT": "-1s"}, wantErr: "CRIER_HEARTBEAT: must be positive"},
		{name: "file typo", args: []string{"--config", "$FILE"}, file: "histroy_size: 1\n", wantErr: "histroy_size"},
		{name: "file bad type", args: []string{"--config", "$FILE"}, file: "heartbeat: soon\n", wantErr: "config file"},
		{name: "file bad range", args: []string{"--config", "$FILE"}, file: "queue_size: 0\n", wantErr: "queue_size: must be positive"},
		{name: "file missing", args: []string{"--config", "/nonexistent/crier.yaml"}, wantErr: "/nonexistent/crier.yaml"},
		{name: "namespace with colon", args: []string{"--config", "$FILE"}, file: "namespaces:\n  \"a:b\": {}\n", wantErr: `"a:b" is not a namespace name`},
		{name: "namespace bad chars", args: []string{"--config", "$FILE"}, file: "namespaces:\n  \"a b\": {}\n", wantErr: "namespaces"},
		{name: "namespace unknown key", args: []string{"--config", "$FILE"}, file: "namespaces:\n  chat: {size: 1}\n", wantErr: "size"},
		{name: "namespace negative size", args: []string{"--config", "$FILE"}, file: "namespaces:\n  chat: {history_size: -1}\n", wantErr: "chat: history_size"},
		{name: "file empty api key", args: []string{"--config", "$FILE"}, file: "api_keys: [\"\"]\n", wantErr: "api_keys: must not be empty"},
		{name: "env empty api key list is unset", env: map[string]string{"CRIER_API_KEY": " , "}, want: func(*Config) {}},
		{
			name: "auth and limits from env",
			env: map[string]string{"CRIER_JWT_PUBLIC_KEY": "a.pem,b.pem", "CRIER_JWKS": "/etc/jwks.json",
				"CRIER_ANONYMOUS_SUBSCRIBE": "true", "CRIER_ALLOW_ORIGIN": "https://a.example, https://*.b.example",
				"CRIER_TRUST_PROXY": "127.0.0.1,::1", "CRIER_MAX_CONNS_PER_IP": "3", "CRIER_PUBLISH_RATE": "600/m",
				"CRIER_IDLE_TIMEOUT": "5s", "CRIER_WRITE_TIMEOUT": "6s", "CRIER_READ_TIMEOUT": "7s", "CRIER_MAX_CONNS": "9"},
			want: func(c *Config) {
				c.JWTPublicKeys, c.JWKS, c.AnonymousSubscribe = []string{"a.pem", "b.pem"}, "/etc/jwks.json", true
				c.AllowOrigins = []string{"https://a.example", "https://*.b.example"}
				c.TrustedProxies, c.MaxConnsPerIP, c.PublishRate = []string{"127.0.0.1", "::1"}, 3, "600/m"
				c.IdleTimeout, c.WriteTimeout, c.ReadTimeout, c.MaxConns = 5*time.Second, 6*time.Second, 7*time.Second, 9
			},
		},
		{
			name: "auth and limits from file",
			args: []string{"--config", "$FILE"},
			file: "jwt_public_keys: [k.pem]\njwks: https://idp/jwks\nanonymous_publish: true\nallow_origins: ['*']\n" +
				"trusted_proxies: [10.0.0.0/8]\nmax_conns: 7\npublish_rate: 2/s\npublish_burst: 4\n" +
				"namespaces:\n  public:\n    anonymous_subscribe: true\n    anonymous_publish: false\n",
			want: func(c *Config) {
				c.JWTPublicKeys, c.JWKS, c.AnonymousPublish, c.AllowOrigins = []string{"k.pem"}, "https://idp/jwks", true, []string{"*"}
				c.TrustedProxies, c.MaxConns, c.PublishRate, c.PublishBurst = []string{"10.0.0.0/8"}, 7, "2/s", 4
				c.Namespaces = map[string]Namespace{"public": {AnonymousSubscribe: ptr(true), AnonymousPublish: ptr(false)}}
			},
		},
		{name: "bad origin", args: []string{"--allow-origin", "https://a.example/path"}, wantErr: "-allow-origin"},
		{name: "bad origin wildcard", args: []string{"--allow-origin", "https://a*.example"}, wantErr: "-allow-origin"},
		{name: "bad origin env", env: map[string]string{"CRIER_ALLOW_ORIGIN": "example.com"}, wantErr: "CRIER_ALLOW_ORIGIN"},
		{name: "bad origin file", args: []string{"--config", "$FILE"}, file: "allow_origins: [ftp]\n", wantErr: "allow_origins"},
		{name: "bad proxy", args: []string{"--trust-proxy", "10.0.0.0/99"}, wantErr: "-trust-proxy"},
		{name: "bad rate", args: []string{"--publish-rate", "fast"}, wantErr: "-publish-rate"},
		{name: "bad rate unit", args: []string{"--publish-rate", "10/d"}, wantErr: "-publish-rate"},
		{name: "bad rate env", env: map[string]string{"CRIER_PUBLISH_RATE": "-1/s"}, wantErr: "CRIER_PUBLISH_RATE"},
		{name: "negative burst", args: []string{"--publish-burst", "-1"}, wantErr: "--publish-burst"},
		{name: "negative max conns", args: []string{"--max-conns-per-ip", "-2"}, wantErr: "--max-conns-per-ip"},
		{name: "zero write timeout", args: []string{"--write-timeout", "0s"}, wantErr: "--write-timeout"},
		{name: "empty public key file", args: []string{"--config", "$FILE"}, file: "jwt_public_keys: ['']\n", wantErr: "jwt_public_keys"},
		{name: "help", args: []string{"-h"}, wantErr: "help requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "crier.yaml")
			if tt.file != "" || strings.Contains(strings.Join(tt.args, " ")+tt.env["CRIER_CONFIG"], "$FILE") {
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "$FILE", path)
			}
			getenv := func(k string) string { return strings.ReplaceAll(tt.env[k], "$FILE", path) }
			got, err := Load(args, getenv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load error = %v, want one containing %q", err, tt.wantErr)
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	_, err := Load([]string{"--help"}, func(string) string { return "" })
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load(--help) = %v, want flag.ErrHelp", err)
	}
	var b strings.Builder
	Usage(&b)
	for _, want := range []string{"--history-size N", "(default 1000)", "CRIER_HISTORY_SIZE", "(default 24h0m0s)", "--api-key KEY", "--memory\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, b.String())
		}
	}
}

// TestOptionsMatchStruct keeps the flags and the YAML keys of Config in step: every setting is
// a flag, a YAML key and a variable.
func TestOptionsMatchStruct(t *testing.T) {
	keys := map[string]bool{}
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		keys[ct.Field(i).Tag.Get("yaml")] = true
	}
	delete(keys, "namespaces") // file only
	for _, o := range options() {
		if o.name == configFlag {
			continue
		}
		if !keys[o.yamlKey()] {
			t.Errorf("flag --%s has no YAML key %q in Config", o.name, o.yamlKey())
		}
		delete(keys, o.yamlKey())
	}
	for k := range keys {
		t.Errorf("YAML key %q has no flag", k)
	}
}

func TestNamespace(t *testing.T) {
	c := Default()
	c.Presence = true
	c.Namespaces = map[string]Namespace{
		"chat": {HistorySize: ptr(5), Presence: ptr(false)},
		"logs": {HistoryTTL: ptr(time.Minute)},
	}
	tests := map[string]hub.Namespace{
		"":      {HistorySize: 1000, HistoryTTL: 24 * time.Hour, Presence: true},
		"chat":  {HistorySize: 5, HistoryTTL: 24 * time.Hour, Presence: false},
		"logs":  {HistorySize: 1000, HistoryTTL: time.Minute, Presence: true},
		"other": {HistorySize: 1000, HistoryTTL: 24 * time.Hour, Presence: true},
	}
	for name, want := range tests {
		if got := c.Namespace(name); got != want {
			t.Errorf("Namespace(%q) = %+v, want %+v", name, got, want)
		}
	}
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		listen string
		auth   func(c *Config)
		ok     bool
	}{
		{"127.0.0.1:8080", nil, true},
		{"127.1.2.3:8080", nil, true},
		{"[::1]:8080", nil, true},
		{"localhost:8080", nil, true},
		{"0.0.0.0:8080", nil, false},
		{":8080", nil, false},
		{"192.0.2.1:8080", nil, false},
		{"[::]:8080", nil, false},
		{"example.com:8080", nil, false},
		{"0.0.0.0:8080", func(c *Config) { c.Insecure = true }, true},
		{"0.0.0.0:8080", func(c *Config) { c.JWTSecret = "s" }, true},
		{":8080", func(c *Config) { c.APIKeys = []string{"k"} }, true},
	}
	for _, tt := range tests {
		c := Default()
		c.Listen = tt.listen
		if tt.auth != nil {
			tt.auth(&c)
		}
		err := c.CheckListen()
		if (err == nil) != tt.ok {
			t.Errorf("CheckListen(%q) = %v, want ok=%v", tt.listen, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("CheckListen(%q) error does not say what to do: %v", tt.listen, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestCheckSupportedRefusesMissingFeatures(t *testing.T) {
	for _, args := range [][]string{
		{"--broker", "redis://127.0.0.1:6379"},
		{"--upstream", "http://127.0.0.1:9000"},
	} {
		cfg, err := Load(args, func(string) string { return "" })
		if err != nil {
			t.Fatalf("Load(%v): %v", args, err)
		}
		if err := cfg.CheckSupported(); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("CheckSupported with %v = %v, want an error naming %s", args, err, args[0])
		}
	}
	// Auth is enforced now: its flags are accepted.
	for _, args := range [][]string{
		{"--jwt-secret", "s3cret"},
		{"--api-key", "k1"},
		{"--jwt-public-key", "/keys/a.pem", "--jwks", "https://idp.example/jwks.json"},
		{"--anonymous-subscribe", "--anonymous-publish", "--allow-origin", "*", "--publish-rate", "10/s", "--max-conns-per-ip", "5"},
	} {
		cfg, err := Load(args, func(string) string { return "" })
		if err != nil {
			t.Fatalf("Load(%v): %v", args, err)
		}
		if err := cfg.CheckSupported(); err != nil {
			t.Errorf("CheckSupported with %v = %v, want nil", args, err)
		}
	}
	if err := Default().CheckSupported(); err != nil {
		t.Errorf("default config refused: %v", err)
	}
}

func TestAuthConfigured(t *testing.T) {
	for _, tt := range []struct {
		set  func(c *Config)
		want bool
	}{
		{func(*Config) {}, false},
		{func(c *Config) { c.AnonymousSubscribe, c.AnonymousPublish, c.AllowOrigins = true, true, []string{"*"} }, false},
		{func(c *Config) { c.JWTSecret = "s" }, true},
		{func(c *Config) { c.JWTPublicKeys = []string{"k.pem"} }, true},
		{func(c *Config) { c.JWKS = "https://idp.example/jwks.json" }, true},
		{func(c *Config) { c.APIKeys = []string{"k"} }, true},
	} {
		c := Default()
		tt.set(&c)
		if got := c.AuthConfigured(); got != tt.want {
			t.Errorf("AuthConfigured(%+v) = %v, want %v", c, got, tt.want)
		}
		c.Listen = "0.0.0.0:8080"
		if err := c.CheckListen(); (err == nil) != tt.want {
			t.Errorf("CheckListen on 0.0.0.0 with auth=%v: %v", tt.want, err)
		}
	}
}

func TestAnonymous(t *testing.T) {
	c := Default()
	c.AnonymousSubscribe = true
	c.Namespaces = map[string]Namespace{
		"public": {AnonymousSubscribe: ptr(true), AnonymousPublish: ptr(true)},
		"feed":   {AnonymousSubscribe: ptr(true), AnonymousPublish: ptr(false)},
		"chat":   {Presence: ptr(true)},
	}
	for ns, want := range map[string][2]bool{
		"": {true, false}, "public": {true, true}, "feed": {true, false}, "chat": {false, false}, "other": {false, false},
	} {
		sub, pub := c.Anonymous(ns)
		if sub != want[0] || pub != want[1] {
			t.Errorf("Anonymous(%q) = %v, %v, want %v", ns, sub, pub, want)
		}
	}
}

func TestMaxBodySize(t *testing.T) {
	c := Default()
	if got := c.MaxBodySize(); got != 1<<20 {
		t.Errorf("default MaxBodySize = %d", got)
	}
	c.MaxMessageSize = 1 << 20
	if got := c.MaxBodySize(); got != 16<<20 {
		t.Errorf("MaxBodySize for 1 MiB messages = %d", got)
	}
}
