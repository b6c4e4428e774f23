package transport

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net/http"
	"time"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/conn"
	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/limit"
	"github.com/crier-push/crier/internal/origin"
)

// Observer counts connections per transport, for metrics.
type Observer interface {
	Connected(transport string, delta int)
	Subscribed(delta int)
}

// Env is what the server hands every transport.
type Env struct {
	Hub      *hub.Hub
	Conns    *conn.Server
	Formats  *hub.Formats
	Logger   *slog.Logger
	Observer Observer
	// Auth authenticates requests; nil admits everyone (see Admit).
	Auth *auth.Authorizer
	// Origins is the --allow-origin list; the WebSocket handshake checks it (nil: same
	// origin or no Origin header only).
	Origins *origin.List
	// PublishRate limits the WebSocket publish op as it limits HTTP publishes (nil: none).
	PublishRate *limit.Publish
	// ClientKey names the client of a request for per-IP limits (limit.Key of its address);
	// nil uses the TCP peer.
	ClientKey      func(r *http.Request) string
	MaxChannels    int // subscriptions per connection
	MaxMessageSize int
	SSERetry       time.Duration
	// SubscribeTimeout bounds how long catching up from the store may take.
	SubscribeTimeout time.Duration
}

// Client returns the key a request's client is counted under for per-IP limits.
func (e *Env) Client(r *http.Request) string {
	if e.ClientKey != nil {
		return e.ClientKey(r)
	}
	return limit.Proxies(nil).ClientKey(r)
}

// Transport is one registered push transport.
type Transport struct {
	Name    string
	Pattern string // a net/http ServeMux pattern, e.g. "GET /v1/sse"
	New     func(env *Env) http.Handler
}

// NewClientID returns a random id for presence.
func NewClientID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
