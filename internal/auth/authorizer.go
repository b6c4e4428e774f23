package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultLeeway is the clock skew allowed on exp and nbf when Config.Leeway is zero.
const DefaultLeeway = 5 * time.Second

// MinSecretLen is the HMAC secret length below which New logs a warning: anyone holding one
// token can try secrets offline.
const MinSecretLen = 32

// Config is what an Authorizer is built from. Its zero value configures no auth at all: every
// request is allowed everything.
type Config struct {
	// JWTSecret verifies HS256, HS384 and HS512 tokens (--jwt-secret).
	JWTSecret string
	// PublicKeyFiles are PEM files of RS256 (RSA, at least 2048 bits), ES256 (P-256) and EdDSA
	// (Ed25519) public keys (--jwt-public-key, repeatable). A file may hold several keys.
	PublicKeyFiles []string
	// JWKS is a JWK Set: an http:// or https:// URL, or a file path (optionally file://)
	// (--jwks). New reads a file at once; a URL is fetched by Refresh or Run.
	JWKS string
	// JWKSRefresh is how often Run fetches the set again (default DefaultJWKSRefresh).
	JWKSRefresh time.Duration
	// JWKSMinRefresh is the least time between two fetches caused by tokens naming a kid the
	// set lacks (default DefaultJWKSMinRefresh).
	JWKSMinRefresh time.Duration
	// HTTPClient fetches a JWKS URL (default: a client with a 10 s timeout).
	HTTPClient *http.Client

	// APIKeys grant every right, the admin API included (--api-key, repeatable). They are
	// accepted in the Authorization header and by AuthenticateToken, never from ?token= or
	// the cookie.
	APIKeys []string

	// Anonymous tells, per namespace ("" is the default namespace), whether requests without
	// a credential may subscribe and publish there once auth is configured. Nil: nowhere.
	Anonymous func(namespace string) (anonSub, anonPub bool)

	// Leeway is the clock skew allowed on exp and nbf: 0 means DefaultLeeway, a negative
	// value none.
	Leeway time.Duration
	// RequireExpiry refuses tokens without exp.
	RequireExpiry bool
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string

	// Logger receives JWKS refresh problems and configuration warnings (default: none).
	Logger *slog.Logger
	// Now is the clock (default time.Now), for tests.
	Now func() time.Time
}

// Authorizer authenticates requests and tokens. It is safe for concurrent use; its only
// goroutine is the one a caller runs with Run.
type Authorizer struct {
	configured bool
	secret     []byte
	static     []pubKey // from PEM files
	jwks       *jwks    // nil without one
	apiKeys    [][sha256.Size]byte
	anon       func(string) (bool, bool)
	leeway     time.Duration
	now        func() time.Time
	parser     *jwt.Parser
	open       *Identity // the identity of every request when nothing is configured
}

// New builds an Authorizer, reading PEM files and a JWKS file at once so that a mistake stops
// the server at start-up.
func New(cfg Config) (*Authorizer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	a := &Authorizer{anon: cfg.Anonymous, leeway: cfg.Leeway, now: cfg.Now}
	if cfg.JWTSecret != "" {
		a.secret = []byte(cfg.JWTSecret)
		if len(a.secret) < MinSecretLen {
			cfg.Logger.Warn(fmt.Sprintf("the JWT secret is shorter than %d bytes: anyone holding one token can guess it offline", MinSecretLen))
		}
	}
	for _, f := range cfg.PublicKeyFiles {
		keys, err := loadPEMFile(f)
		if err != nil {
			return nil, fmt.Errorf("jwt public key: %w", err)
		}
		a.static = append(a.static, keys...)
	}
	if cfg.JWKS != "" {
		a.jwks = newJWKS(cfg.JWKS, &cfg)
		if a.jwks.file != "" {
			if err := a.jwks.refresh(context.Background()); err != nil {
				return nil, err
			}
		}
	}
	for i, k := range cfg.APIKeys {
		if k == "" {
			return nil, fmt.Errorf("api key %d is empty", i+1)
		}
		a.apiKeys = append(a.apiKeys, sha256.Sum256([]byte(k)))
	}
	a.configured = a.secret != nil || len(a.static) > 0 || a.jwks != nil || len(a.apiKeys) > 0

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(validMethods),
		jwt.WithLeeway(a.leeway),
		jwt.WithTimeFunc(a.now),
		jwt.WithStrictDecoding(),
	}
	if cfg.RequireExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	a.open = &Identity{kind: KindOpen, now: a.now}
	return a, nil
}

// Configured reports whether any credential is configured; without one everything is allowed.
func (a *Authorizer) Configured() bool { return a.configured }

// Refresh fetches the JWKS once, now; nil without a JWKS. A failure keeps the keys held.
// A server calls it at start-up to hold keys before it serves, then Run.
func (a *Authorizer) Refresh(ctx context.Context) error {
	if a.jwks == nil {
		return nil
	}
	return a.jwks.refresh(ctx)
}

// Run keeps the JWKS fresh until ctx ends, fetching at once when no set is held yet, then every
// JWKSRefresh, sooner after a failure and when a token names an unknown kid. Failures are
// logged and the keys already held stay in use. Without a JWKS it returns at once. It returns
// nil; call it in its own goroutine, once.
func (a *Authorizer) Run(ctx context.Context) error {
	if a.jwks != nil {
		a.jwks.run(ctx)
	}
	return nil
}

// Authenticate returns the identity of a request. Its credential is taken as ExtractToken
// documents: an API key (Authorization header only) or a JWT. A request with no credential is
// anonymous (only the namespaces that allow it); a credential that is present but not valid
// is an error, never a fall-back to anonymous. With no auth configured every request gets an
// identity with every right and any credential is ignored.
func (a *Authorizer) Authenticate(r *http.Request) (*Identity, error) {
	if !a.configured {
		return a.open, nil
	}
	tok, src, err := ExtractToken(r)
	if err != nil {
		return nil, err
	}
	if src == SourceNone {
		return a.anonymous(), nil
	}
	return a.authenticate(r.Context(), tok, src)
}

// AuthenticateToken returns the identity of a credential handed over directly, as the
// WebSocket auth op does: an API key or a JWT. An empty token is ErrInvalidToken.
func (a *Authorizer) AuthenticateToken(ctx context.Context, token string) (*Identity, error) {
	if !a.configured {
		return a.open, nil
	}
	if _, _, err := check(token, SourceDirect); err != nil {
		return nil, err
	}
	return a.authenticate(ctx, token, SourceDirect)
}

// Anonymous returns the identity of a request without credential.
func (a *Authorizer) Anonymous() *Identity {
	if !a.configured {
		return a.open
	}
	return a.anonymous()
}

func (a *Authorizer) anonymous() *Identity {
	return &Identity{kind: KindAnonymous, anon: a.anon, now: a.now}
}

func (a *Authorizer) authenticate(ctx context.Context, tok string, src Source) (*Identity, error) {
	if i, ok := a.apiKey(tok); ok {
		if src == SourceQuery || src == SourceCookie {
			// A key in a URL lands in logs and histories; refuse it so that nobody relies on it.
			return nil, newError(ErrInvalidToken, "API keys are accepted only in the Authorization header", nil)
		}
		return &Identity{kind: KindAPIKey, id: "api_key:" + strconv.Itoa(i+1), source: src, now: a.now}, nil
	}
	return a.parse(ctx, tok, src)
}

// apiKey compares tok with every configured key in constant time, whatever matches, and
// returns the index of the match. Comparing digests hides the keys' lengths too.
func (a *Authorizer) apiKey(tok string) (int, bool) {
	if len(a.apiKeys) == 0 {
		return 0, false
	}
	d := sha256.Sum256([]byte(tok))
	found := -1
	for i := range a.apiKeys {
		eq := subtle.ConstantTimeCompare(d[:], a.apiKeys[i][:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	return found, found >= 0
}

// tokenClaims are the claims Crier reads.
type tokenClaims struct {
	jwt.RegisteredClaims
	Crier *struct {
		Subscribe []string `json:"subscribe"`
		Publish   []string `json:"publish"`
	} `json:"crier"`
}

func (a *Authorizer) parse(ctx context.Context, tok string, src Source) (*Identity, error) {
	if a.secret == nil && len(a.static) == 0 && a.jwks == nil {
		return nil, newError(ErrInvalidToken, "invalid token: no JWT key is configured (only API keys)", nil)
	}
	var c tokenClaims
	if _, err := a.parser.ParseWithClaims(tok, &c, a.keyfunc(ctx)); err != nil {
		return nil, tokenError(err)
	}
	id := &Identity{kind: KindToken, subject: c.Subject, source: src, anon: a.anon, now: a.now, id: tokenID(tok)}
	if c.ExpiresAt != nil {
		id.expires = c.ExpiresAt.Add(a.leeway)
	}
	if c.Crier != nil {
		var err error
		if id.subscribe, err = compileSet(c.Crier.Subscribe, c.Subject); err != nil {
			return nil, newError(ErrInvalidToken, "invalid token: crier.subscribe: "+err.Error(), err)
		}
		if id.publish, err = compileSet(c.Crier.Publish, c.Subject); err != nil {
			return nil, newError(ErrInvalidToken, "invalid token: crier.publish: "+err.Error(), err)
		}
	}
	return id, nil
}

// tokenID names a token without revealing it, for rate limits and logs.
func tokenID(tok string) string {
	d := sha256.Sum256([]byte(tok))
	const hex = "0123456789abcdef"
	b := []byte("jwt:")
	for _, c := range d[:8] {
		b = append(b, hex[c>>4], hex[c&15])
	}
	return string(b)
}

// keyfunc selects the keys that may verify a token. The parser has already refused any
// algorithm outside validMethods; here HS* gets only the secret and each asymmetric algorithm
// only keys of its own type, so that no key is ever used with an algorithm of another family
// (an RSA public key is never an HMAC secret).
func (a *Authorizer) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
			if a.secret == nil {
				return nil, fmt.Errorf("%s needs a JWT secret, and none is configured", alg)
			}
			return a.secret, nil
		}
		kid, _ := t.Header["kid"].(string)
		keys, kidKnown := a.keysFor(alg, kid)
		if kid != "" && !kidKnown && a.jwks != nil && a.jwks.awaitKid(ctx) {
			keys, _ = a.keysFor(alg, kid)
		}
		if len(keys) == 0 {
			if kid != "" {
				return nil, fmt.Errorf("no %s key with kid %q", alg, truncate(kid, 64))
			}
			return nil, fmt.Errorf("no %s key is configured", alg)
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	}
}

// keysFor returns the keys of alg that may have signed a token with this kid: every PEM key of
// alg (they have no kid), and the JWKS keys of alg with that kid or none. kidKnown tells
// whether the JWKS has a key of that kid, of whatever algorithm.
func (a *Authorizer) keysFor(alg, kid string) (keys []jwt.VerificationKey, kidKnown bool) {
	for _, k := range a.static {
		if k.alg == alg {
			keys = append(keys, k.key)
		}
	}
	if a.jwks != nil {
		for _, k := range a.jwks.current() {
			if kid != "" && k.kid == kid {
				kidKnown = true
			}
			if k.alg == alg && (kid == "" || k.kid == "" || k.kid == kid) {
				keys = append(keys, k.key)
			}
		}
	}
	return keys, kidKnown
}

// tokenError maps a parser error to the answer: expiry and nbf get their own codes, the rest
// is invalid_token. Claims are validated only after the signature, so a forged token never
// learns whether its exp would pass.
func tokenError(err error) *Error {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return newError(ErrTokenExpired, "", err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return newError(ErrTokenNotValidYet, "", err)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return newError(ErrInvalidToken, "invalid token: malformed", err)
	default:
		return newError(ErrInvalidToken, "invalid token: "+truncate(err.Error(), 200), err)
	}
}
