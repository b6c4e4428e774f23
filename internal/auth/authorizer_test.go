package auth

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keyring is one of every kind of key, with PEM files of their public halves.
type keyring struct {
	dir               string
	rsaFile, rsaPKCS1 string
	ecFile, edFile    string
	certFile          string
	rsa, rsaOther     crypto.Signer
	ec, ecOther       crypto.Signer
	ed, edOther       crypto.Signer
}

func newKeyring(t *testing.T) *keyring {
	t.Helper()
	rk := rsaKeys()
	k := &keyring{dir: t.TempDir(), rsa: rk[0], rsaOther: rk[1], ec: newEC(t), ecOther: newEC(t), ed: newEd(t), edOther: newEd(t)}
	k.rsaFile = writePEM(t, k.dir, "rsa.pem", pkixBlock(t, k.rsa.Public()))
	k.rsaPKCS1 = writePEM(t, k.dir, "rsa1.pem", &pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rk[0].PublicKey)})
	k.ecFile = writePEM(t, k.dir, "ec.pem", pkixBlock(t, k.ec.Public()))
	k.edFile = writePEM(t, k.dir, "ed.pem", pkixBlock(t, k.ed.Public()))
	k.certFile = writePEM(t, k.dir, "cert.pem", certBlock(t, k.ec))
	return k
}

func TestAlgorithms(t *testing.T) {
	k := newKeyring(t)
	c := claims("alice", []string{"chat:*"}, []string{"chat:lobby"})
	tests := []struct {
		name  string
		cfg   Config
		token string
		code  string
	}{
		{"HS256", Config{JWTSecret: testSecret}, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c), ""},
		{"HS384", Config{JWTSecret: testSecret}, sign(t, jwt.SigningMethodHS384, []byte(testSecret), "", c), ""},
		{"HS512", Config{JWTSecret: testSecret}, sign(t, jwt.SigningMethodHS512, []byte(testSecret), "", c), ""},
		{"RS256", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodRS256, k.rsa, "", c), ""},
		{"RS256 PKCS1 file", Config{PublicKeyFiles: []string{k.rsaPKCS1}}, sign(t, jwt.SigningMethodRS256, k.rsa, "", c), ""},
		{"ES256", Config{PublicKeyFiles: []string{k.ecFile}}, sign(t, jwt.SigningMethodES256, k.ec, "", c), ""},
		{"ES256 certificate", Config{PublicKeyFiles: []string{k.certFile}}, sign(t, jwt.SigningMethodES256, k.ec, "", c), ""},
		{"EdDSA", Config{PublicKeyFiles: []string{k.edFile}}, sign(t, jwt.SigningMethodEdDSA, k.ed, "", c), ""},
		{"several files, kid ignored", Config{PublicKeyFiles: []string{k.rsaFile, k.ecFile, k.edFile}}, sign(t, jwt.SigningMethodEdDSA, k.ed, "whatever", c), ""},
		{"secret and keys", Config{JWTSecret: testSecret, PublicKeyFiles: []string{k.rsaFile, k.ecFile}}, sign(t, jwt.SigningMethodES256, k.ec, "", c), ""},

		{"HS256 wrong secret", Config{JWTSecret: testSecret}, sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), "", c), "invalid_token"},
		{"RS256 wrong key", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodRS256, k.rsaOther, "", c), "invalid_token"},
		{"ES256 wrong key", Config{PublicKeyFiles: []string{k.ecFile}}, sign(t, jwt.SigningMethodES256, k.ecOther, "", c), "invalid_token"},
		{"EdDSA wrong key", Config{PublicKeyFiles: []string{k.edFile}}, sign(t, jwt.SigningMethodEdDSA, k.edOther, "", c), "invalid_token"},
		{"RS256 without RSA key", Config{JWTSecret: testSecret, PublicKeyFiles: []string{k.ecFile}}, sign(t, jwt.SigningMethodRS256, k.rsa, "", c), "invalid_token"},
		{"HS256 without secret", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c), "invalid_token"},
		{"RS384 refused", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodRS384, k.rsa, "", c), "invalid_token"},
		{"RS512 refused", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodRS512, k.rsa, "", c), "invalid_token"},
		{"PS256 refused", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodPS256, k.rsa, "", c), "invalid_token"},
		{"only API keys", Config{APIKeys: []string{"k"}}, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c), "invalid_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuth(t, tt.cfg)
			id, err := a.AuthenticateToken(context.Background(), tt.token)
			wantCode(t, err, tt.code)
			if err != nil {
				if id != nil {
					t.Fatal("identity with an error")
				}
				return
			}
			if id.Kind() != KindToken || id.Subject() != "alice" || !strings.HasPrefix(id.ID(), "jwt:") {
				t.Fatalf("identity %v %q %q", id.Kind(), id.Subject(), id.ID())
			}
			if !id.CanSubscribe("chat:x") || id.CanSubscribe("news") || !id.CanPublish("chat:lobby") || id.CanPublish("chat:x") || id.IsAdmin() {
				t.Fatal("rights do not follow the claims")
			}
		})
	}
}

// TestAlgorithmConfusion: tokens whose header names an algorithm that the key would verify
// if it were handed over blindly.
func TestAlgorithmConfusion(t *testing.T) {
	k := newKeyring(t)
	c := claims("mallory", []string{"**"}, []string{"**"})
	pubPEM := pem.EncodeToMemory(pkixBlock(t, k.rsa.Public()))
	pubDER, _ := x509.MarshalPKIXPublicKey(k.rsa.Public())
	ecPEM := pem.EncodeToMemory(pkixBlock(t, k.ec.Public()))
	tests := []struct {
		name  string
		cfg   Config
		token string
	}{
		{"HS256 keyed with the RSA public PEM", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodHS256, pubPEM, "", c)},
		{"HS256 keyed with the RSA public DER", Config{PublicKeyFiles: []string{k.rsaFile}}, sign(t, jwt.SigningMethodHS256, pubDER, "", c)},
		{"HS256 keyed with the EC public PEM, secret configured", Config{JWTSecret: testSecret, PublicKeyFiles: []string{k.ecFile}}, sign(t, jwt.SigningMethodHS256, ecPEM, "", c)},
		{"ES256 header, RSA signature", Config{PublicKeyFiles: []string{k.rsaFile, k.ecFile}}, retype(t, sign(t, jwt.SigningMethodRS256, k.rsa, "", c), "ES256")},
		{"EdDSA header, ES256 signature", Config{PublicKeyFiles: []string{k.edFile, k.ecFile}}, retype(t, sign(t, jwt.SigningMethodES256, k.ec, "", c), "EdDSA")},
		{"RS256 header, HS256 signature", Config{JWTSecret: testSecret, PublicKeyFiles: []string{k.rsaFile}}, retype(t, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c), "RS256")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuth(t, tt.cfg)
			_, err := a.AuthenticateToken(context.Background(), tt.token)
			wantCode(t, err, "invalid_token")
		})
	}
}

// retype replaces the alg of a signed token's header, keeping its signature.
func retype(t *testing.T, tok, alg string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	return rawTokenParts(map[string]string{"alg": alg, "typ": "JWT"}, parts[1], parts[2])
}

func rawTokenParts(header any, payload, sig string) string {
	h := strings.SplitN(rawToken(header, nil, nil), ".", 2)[0]
	return h + "." + payload + "." + sig
}

func TestAlgNone(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret})
	c := claims("eve", []string{"**"}, []string{"**"})
	unsigned, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
	parts := strings.Split(good, ".")
	for name, tok := range map[string]string{
		"none":                unsigned,
		"None":                rawToken(map[string]string{"alg": "None"}, c, nil),
		"NONE with signature": rawTokenParts(map[string]string{"alg": "NONE"}, parts[1], parts[2]),
		"none, good sig":      rawTokenParts(map[string]string{"alg": "none"}, parts[1], parts[2]),
		"no alg":              rawTokenParts(map[string]string{"typ": "JWT"}, parts[1], parts[2]),
		"empty alg":           rawTokenParts(map[string]string{"alg": ""}, parts[1], parts[2]),
		"two parts":           parts[0] + "." + parts[1],
		"empty signature":     parts[0] + "." + parts[1] + ".",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.AuthenticateToken(context.Background(), tok)
			wantCode(t, err, "invalid_token")
		})
	}
	if _, err := a.AuthenticateToken(context.Background(), good); err != nil {
		t.Fatalf("the signed original fails: %v", err)
	}
}

func TestExpiryAndLeeway(t *testing.T) {
	at := func(d time.Duration) int64 { return t0.Add(d).Unix() }
	tests := []struct {
		name   string
		leeway time.Duration
		req    bool
		c      jwt.MapClaims
		code   string
	}{
		{"valid", 0, false, jwt.MapClaims{"exp": at(time.Minute)}, ""},
		{"expired", 0, false, jwt.MapClaims{"exp": at(-time.Minute)}, "token_expired"},
		{"expired within default leeway", 0, false, jwt.MapClaims{"exp": at(-3 * time.Second)}, ""},
		{"expired just past default leeway", 0, false, jwt.MapClaims{"exp": at(-6 * time.Second)}, "token_expired"},
		{"no leeway", -1, false, jwt.MapClaims{"exp": at(-time.Second)}, "token_expired"},
		{"larger leeway", time.Minute, false, jwt.MapClaims{"exp": at(-30 * time.Second)}, ""},
		{"nbf future", 0, false, jwt.MapClaims{"nbf": at(time.Minute)}, "token_not_valid_yet"},
		{"nbf within leeway", 0, false, jwt.MapClaims{"nbf": at(3 * time.Second)}, ""},
		{"nbf past", 0, false, jwt.MapClaims{"nbf": at(-time.Minute), "exp": at(time.Minute)}, ""},
		{"no exp", 0, false, jwt.MapClaims{"sub": "x"}, ""},
		{"no exp, required", 0, true, jwt.MapClaims{"sub": "x"}, "invalid_token"},
		{"exp not a number", 0, false, jwt.MapClaims{"exp": "tomorrow"}, "invalid_token"},
		{"fractional exp", 0, false, jwt.MapClaims{"exp": float64(at(time.Minute)) + 0.5}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAuth(t, Config{JWTSecret: testSecret, Leeway: tt.leeway, RequireExpiry: tt.req})
			_, err := a.AuthenticateToken(context.Background(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", tt.c))
			wantCode(t, err, tt.code)
		})
	}
	t.Run("expired token with a bad signature is invalid, not expired", func(t *testing.T) {
		a := newAuth(t, Config{JWTSecret: testSecret})
		_, err := a.AuthenticateToken(context.Background(), sign(t, jwt.SigningMethodHS256, []byte("other"), "", jwt.MapClaims{"exp": at(-time.Hour)}))
		wantCode(t, err, "invalid_token")
	})
}

func TestIdentityExpires(t *testing.T) {
	now := t0
	a := newAuth(t, Config{JWTSecret: testSecret, Now: func() time.Time { return now }})
	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("a", []string{"news"}, nil))
	id, err := a.AuthenticateToken(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(time.Hour + DefaultLeeway); !id.Expires().Equal(want) {
		t.Fatalf("Expires = %v, want %v", id.Expires(), want)
	}
	if id.Expired() || !id.CanSubscribe("news") {
		t.Fatal("fresh identity refused")
	}
	now = t0.Add(time.Hour + DefaultLeeway)
	if !id.Expired() || id.CanSubscribe("news") {
		t.Fatal("expired identity still allowed")
	}
	wantCode(t, id.CheckSubscribe("news"), "token_expired")
	if _, err := a.AuthenticateToken(context.Background(), tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("re-auth = %v, want expired", err)
	}
	for _, id := range []*Identity{a.Anonymous(), newAuth(t, Config{}).Anonymous()} {
		if !id.Expires().IsZero() || id.Expired() {
			t.Fatalf("%v identity expires", id.Kind())
		}
	}
}

func TestIssuerAudience(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret, Issuer: "https://idp", Audience: "crier"})
	for _, tt := range []struct {
		c    jwt.MapClaims
		code string
	}{
		{jwt.MapClaims{"iss": "https://idp", "aud": "crier"}, ""},
		{jwt.MapClaims{"iss": "https://idp", "aud": []string{"x", "crier"}}, ""},
		{jwt.MapClaims{"iss": "https://evil", "aud": "crier"}, "invalid_token"},
		{jwt.MapClaims{"iss": "https://idp", "aud": "other"}, "invalid_token"},
		{jwt.MapClaims{"aud": "crier"}, "invalid_token"},
	} {
		_, err := a.AuthenticateToken(context.Background(), sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", tt.c))
		wantCode(t, err, tt.code)
	}
}

func TestClaims(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret})
	tok := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c) }
	tests := []struct {
		name string
		c    jwt.MapClaims
		code string
		sub  []string // channels that must be allowed
		deny []string
	}{
		{"no crier claim", jwt.MapClaims{"sub": "a"}, "", nil, []string{"news", "a"}},
		{"null crier claim", jwt.MapClaims{"crier": nil}, "", nil, []string{"news"}},
		{"sub pattern", jwt.MapClaims{"sub": "alice", "crier": map[string]any{"subscribe": []string{"user:{sub}"}}}, "", []string{"user:alice"}, []string{"user:bob"}},
		{"bad pattern", jwt.MapClaims{"crier": map[string]any{"subscribe": []string{"news", "a*"}}}, "invalid_token", nil, nil},
		{"bad publish pattern", jwt.MapClaims{"crier": map[string]any{"publish": []string{"{user}"}}}, "invalid_token", nil, nil},
		{"patterns not a list", jwt.MapClaims{"crier": map[string]any{"subscribe": "news"}}, "invalid_token", nil, nil},
		{"crier not an object", jwt.MapClaims{"crier": "all"}, "invalid_token", nil, nil},
		{"sub not a string", jwt.MapClaims{"sub": 7}, "invalid_token", nil, nil},
		{"too many patterns", jwt.MapClaims{"crier": map[string]any{"subscribe": make([]string, MaxPatterns+1)}}, "invalid_token", nil, nil},
		{"unknown crier fields ignored", jwt.MapClaims{"crier": map[string]any{"subscribe": []string{"x"}, "admin": true}}, "", []string{"x"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := a.AuthenticateToken(context.Background(), tok(tt.c))
			wantCode(t, err, tt.code)
			for _, ch := range tt.sub {
				if !id.CanSubscribe(ch) {
					t.Errorf("cannot subscribe to %s", ch)
				}
			}
			for _, ch := range tt.deny {
				wantCode(t, id.CheckSubscribe(ch), "forbidden")
			}
			if id != nil && id.IsAdmin() {
				t.Error("a token is admin")
			}
		})
	}
}

func TestAPIKeys(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret, APIKeys: []string{"key-one", "key-two-longer"}})
	req := func(mod func(r *http.Request)) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v1/sse?channel=x", nil)
		mod(r)
		return r
	}
	tests := []struct {
		name string
		r    *http.Request
		code string
		id   string
	}{
		{"first key", req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer key-one") }), "", "api_key:1"},
		{"second key", req(func(r *http.Request) { r.Header.Set("Authorization", "bearer key-two-longer") }), "", "api_key:2"},
		{"wrong key", req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer key-three") }), "invalid_token", ""},
		{"prefix of a key", req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer key-on") }), "invalid_token", ""},
		{"key in query refused", req(func(r *http.Request) { r.URL.RawQuery = "token=key-one" }), "invalid_token", ""},
		{"key in cookie refused", req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: CookieName, Value: "key-one"}) }), "invalid_token", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := a.Authenticate(tt.r)
			wantCode(t, err, tt.code)
			if err != nil {
				return
			}
			if id.Kind() != KindAPIKey || id.ID() != tt.id || !id.IsAdmin() || id.CheckAdmin() != nil ||
				!id.CanPublish("any:thing") || !id.CanSubscribe("x") || !id.Expires().IsZero() {
				t.Fatalf("API key identity %v %q lacks rights", id.Kind(), id.ID())
			}
		})
	}
	id, err := a.AuthenticateToken(context.Background(), "key-two-longer")
	if err != nil || !id.IsAdmin() {
		t.Fatalf("API key over the auth op: %v", err)
	}
	if got, _ := a.apiKey("key-one"); got != 0 {
		t.Fatalf("apiKey index = %d", got)
	}
}

func TestAnonymousAndOpen(t *testing.T) {
	open := newAuth(t, Config{})
	if open.Configured() {
		t.Fatal("empty config is configured")
	}
	r := httptest.NewRequest(http.MethodGet, "/?token=garbage", nil)
	id, err := open.Authenticate(r)
	if err != nil || id.Kind() != KindOpen || !id.IsAdmin() || !id.CanPublish("a:b") || !id.CanSubscribe("c") {
		t.Fatalf("open mode: %v %v", id.Kind(), err)
	}

	anon := func(ns string) (bool, bool) {
		switch ns {
		case "public":
			return true, false
		case "guestbook":
			return true, true
		}
		return false, false
	}
	a := newAuth(t, Config{JWTSecret: testSecret, Anonymous: anon})
	id, err = a.Authenticate(httptest.NewRequest(http.MethodGet, "/", nil))
	if err != nil || id.Kind() != KindAnonymous {
		t.Fatalf("no credential: %v %v", id.Kind(), err)
	}
	wantCode(t, id.CheckSubscribe("public:news"), "")
	wantCode(t, id.CheckPublish("public:news"), "unauthorized")
	wantCode(t, id.CheckPublish("guestbook:x"), "")
	wantCode(t, id.CheckSubscribe("news"), "unauthorized")
	wantCode(t, id.CheckAdmin(), "unauthorized")

	tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("u", []string{"news"}, nil))
	id, err = a.AuthenticateToken(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, id.CheckSubscribe("news"), "")
	wantCode(t, id.CheckSubscribe("public:x"), "") // the anonymous rights too
	wantCode(t, id.CheckPublish("guestbook:x"), "")
	wantCode(t, id.CheckPublish("news"), "forbidden")
	wantCode(t, id.CheckSubscribe("private:x"), "forbidden")
	wantCode(t, id.CheckAdmin(), "forbidden")
	wantCode(t, id.CheckSubscribe("bad name"), "forbidden")

	// A bad credential is an error even where anonymous access would be allowed.
	r = httptest.NewRequest(http.MethodGet, "/?token=garbage&channel=public:news", nil)
	if _, err := a.Authenticate(r); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("bad token = %v", err)
	}
	// Without an anonymous function nothing is anonymous.
	b := newAuth(t, Config{APIKeys: []string{"k"}})
	wantCode(t, b.Anonymous().CheckSubscribe("news"), "unauthorized")

	var nilID *Identity
	if nilID.CanSubscribe("x") || nilID.IsAdmin() || nilID.Kind() != KindAnonymous || nilID.Expired() {
		t.Fatal("nil identity has rights")
	}
	wantCode(t, nilID.CheckPublish("x"), "unauthorized")
}

func TestHTTPError(t *testing.T) {
	tests := []struct {
		err       error
		status    int
		code      string
		challenge string
	}{
		{ErrUnauthorized, 401, "unauthorized", `Bearer realm="crier"`},
		{newError(ErrInvalidToken, "x", errors.New("cause")), 401, "invalid_token", `Bearer realm="crier", error="invalid_token"`},
		{ErrTokenExpired, 401, "token_expired", `Bearer realm="crier", error="invalid_token"`},
		{ErrTokenNotValidYet, 401, "token_not_valid_yet", `Bearer realm="crier", error="invalid_token"`},
		{ErrForbidden, 403, "forbidden", ""},
		{errors.Join(errors.New("wrapped"), ErrForbidden), 403, "forbidden", ""},
		{errors.New("other"), 500, "internal", ""},
	}
	for _, tt := range tests {
		st, code, msg := HTTPError(tt.err)
		if st != tt.status || code != tt.code || msg == "" || Challenge(tt.err) != tt.challenge {
			t.Errorf("HTTPError(%v) = %d %q %q, challenge %q", tt.err, st, code, msg, Challenge(tt.err))
		}
	}
	e := newError(ErrTokenExpired, "", errors.New("cause"))
	if !errors.Is(e, ErrTokenExpired) || errors.Is(e, ErrInvalidToken) || !strings.Contains(e.Error(), "cause") {
		t.Errorf("errors.Is on %v", e)
	}
}

func TestMint(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret})
	tok, err := MintHS256(testSecret, TokenSpec{Subject: "bob", Subscribe: []string{"user:{sub}:**"}, Publish: []string{"chat:*"}, IssuedAt: t0, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.AuthenticateToken(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject() != "bob" || !id.CanSubscribe("user:bob:inbox") || id.CanSubscribe("user:alice:inbox") || !id.CanPublish("chat:x") {
		t.Fatal("minted token's rights")
	}
	if !id.Expires().Equal(t0.Add(time.Minute + DefaultLeeway)) {
		t.Fatalf("expires %v", id.Expires())
	}
	for _, spec := range []TokenSpec{{TTL: 0}, {TTL: time.Minute, Subscribe: []string{"a*"}}, {TTL: time.Minute, Publish: []string{""}}} {
		if _, err := MintHS256(testSecret, spec); err == nil {
			t.Errorf("MintHS256(%+v) succeeded", spec)
		}
	}
	if _, err := MintHS256("", TokenSpec{TTL: time.Minute}); err == nil {
		t.Error("minted without a secret")
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	k := rsaKeys()[0]
	short := writePEM(t, dir, "short.pem", pkixBlock(t, mustRSA(t, 1024).Public()))
	priv := writePEM(t, dir, "priv.pem", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	empty := writePEM(t, dir, "empty.pem")
	p384 := writePEM(t, dir, "p384.pem", pkixBlock(t, mustP384(t).Public()))
	bad := writePEM(t, dir, "bad.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})
	for name, cfg := range map[string]Config{
		"missing file":   {PublicKeyFiles: []string{dir + "/nope.pem"}},
		"short RSA":      {PublicKeyFiles: []string{short}},
		"private key":    {PublicKeyFiles: []string{priv}},
		"no key":         {PublicKeyFiles: []string{empty}},
		"P-384":          {PublicKeyFiles: []string{p384}},
		"bad DER":        {PublicKeyFiles: []string{bad}},
		"empty API key":  {APIKeys: []string{"a", ""}},
		"missing JWKS":   {JWKS: dir + "/nope.json"},
		"bad JWKS file":  {JWKS: empty},
		"JWKS file://":   {JWKS: "file://" + dir + "/nope.json"},
		"JWKS not a set": {JWKS: writeFile(t, dir, "x.json", `{"foo":[]}`)},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
