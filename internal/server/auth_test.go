package server

// Auth end to end (SPEC section 7) over real sockets: each credential source, each kind of bad
// credential, rights per channel on every endpoint, API keys, anonymous namespaces, and tokens
// that expire under a live connection.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crier-push/crier/internal/auth"
	"github.com/crier-push/crier/internal/config"
)

const (
	testSecret = "crier-test-secret-0123456789abcdef"
	testAPIKey = "crier-test-api-key-0123456789"
)

// startAuthServer is a node with an HMAC secret and an API key, and whatever mutate adds.
func startAuthServer(t testing.TB, mutate func(*config.Config)) *testServer {
	t.Helper()
	return startServer(t, func(c *config.Config) {
		c.JWTSecret = testSecret
		c.APIKeys = []string{testAPIKey}
		if mutate != nil {
			mutate(c)
		}
	})
}

// mint signs an HS256 token valid for an hour.
func mint(t testing.TB, sub string, subscribe, publish []string) string {
	t.Helper()
	tok, err := auth.MintHS256(testSecret, auth.TokenSpec{Subject: sub, Subscribe: subscribe, Publish: publish, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signClaims signs claims with method and key.
func signClaims(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func crierClaims(subscribe, publish []string) map[string]any {
	return map[string]any{"subscribe": subscribe, "publish": publish}
}

// mintExpiring signs a token whose rights end (exp plus the server's leeway of
// auth.DefaultLeeway) between in-1s and in from now; it returns that instant.
func mintExpiring(t testing.TB, in time.Duration, subscribe, publish []string) (string, time.Time) {
	t.Helper()
	end := time.Now().Add(in)
	exp := int64(math.Floor(float64(end.Add(-auth.DefaultLeeway).UnixNano()) / 1e9))
	tok := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret),
		jwt.MapClaims{"sub": "short", "exp": exp, "crier": crierClaims(subscribe, publish)})
	return tok, time.Unix(exp, 0).Add(auth.DefaultLeeway)
}

// expectAuthError checks a 401 or 403 answer: status, code, and the challenge of a 401.
func expectAuthError(t testing.TB, res *http.Response, body []byte, status int, code string) {
	t.Helper()
	checkError(t, res, body, status, code)
	ch := res.Header.Get("WWW-Authenticate")
	switch {
	case status == 401 && code == "unauthorized" && ch != `Bearer realm="crier"`,
		status == 401 && code != "unauthorized" && ch != `Bearer realm="crier", error="invalid_token"`,
		status != 401 && ch != "":
		t.Fatalf("%d %s: WWW-Authenticate %q", status, code, ch)
	}
}

func healthy(t testing.TB, base string) {
	t.Helper()
	if st, out := get(t, base+"/healthz"); st != 200 || out["status"] != "ok" {
		t.Fatalf("/healthz: %d %v", st, out)
	}
}

func TestAuthPublishCredentials(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	good := mint(t, "alice", nil, []string{"news", "user:{sub}:**"})
	other := mint(t, "alice", []string{"news"}, []string{"sports"})
	expired := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret),
		jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix(), "crier": crierClaims(nil, []string{"news"})})
	notYet := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret),
		jwt.MapClaims{"sub": "alice", "nbf": time.Now().Add(time.Minute).Unix(), "crier": crierClaims(nil, []string{"news"})})
	wrongKey := signClaims(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-!!"),
		jwt.MapClaims{"crier": crierClaims(nil, []string{"news"})})
	unsigned := signClaims(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType,
		jwt.MapClaims{"crier": crierClaims(nil, []string{"news"})})
	tampered := good[:strings.LastIndexByte(good, '.')] + ".AAAA"

	pub := func(path string, headers ...string) (*http.Response, []byte) {
		return rawDo(t, "POST", ts.URL+path, []byte(`{"n":1}`), append([]string{"Content-Type", "application/json"}, headers...)...)
	}
	for _, tt := range []struct {
		name    string
		path    string
		headers []string
		status  int
		code    string
	}{
		{"no token", "/v1/channels/news", nil, 401, "unauthorized"},
		{"bad signature", "/v1/channels/news", []string{"Authorization", "Bearer " + wrongKey}, 401, "invalid_token"},
		{"tampered", "/v1/channels/news", []string{"Authorization", "Bearer " + tampered}, 401, "invalid_token"},
		{"alg none", "/v1/channels/news", []string{"Authorization", "Bearer " + unsigned}, 401, "invalid_token"},
		{"garbage", "/v1/channels/news", []string{"Authorization", "Bearer not.a.jwt"}, 401, "invalid_token"},
		{"empty bearer", "/v1/channels/news", []string{"Authorization", "Bearer "}, 401, "invalid_token"},
		{"expired", "/v1/channels/news", []string{"Authorization", "Bearer " + expired}, 401, "token_expired"},
		{"not yet valid", "/v1/channels/news", []string{"Authorization", "Bearer " + notYet}, 401, "token_not_valid_yet"},
		{"bad token in query", "/v1/channels/news?token=" + url.QueryEscape(wrongKey), nil, 401, "invalid_token"},
		{"bad token in cookie", "/v1/channels/news", []string{"Cookie", "crier_token=" + wrongKey}, 401, "invalid_token"},
		{"API key in query", "/v1/channels/news?token=" + testAPIKey, nil, 401, "invalid_token"},
		{"without the right", "/v1/channels/news", []string{"Authorization", "Bearer " + other}, 403, "forbidden"},
		{"another user's channel", "/v1/channels/user:bob:inbox", []string{"Authorization", "Bearer " + good}, 403, "forbidden"},
	} {
		res, b := pub(tt.path, tt.headers...)
		expectAuthError(t, res, b, tt.status, tt.code)
		if strings.Contains(string(b), good) || strings.Contains(string(b), testAPIKey) {
			t.Fatalf("%s: the answer echoes a credential: %s", tt.name, b)
		}
	}
	// With the right, from each source.
	for _, headers := range [][]string{
		{"Authorization", "Bearer " + good},
		{"Authorization", "bearer " + good},
		{"Cookie", "crier_token=" + good},
		{"Authorization", "Bearer " + testAPIKey},
	} {
		res, b := pub("/v1/channels/news", headers...)
		if res.StatusCode != 201 {
			t.Fatalf("publish with %s: %d %s", headers[0], res.StatusCode, b)
		}
	}
	res, b := pub("/v1/channels/news?token=" + url.QueryEscape(good))
	if res.StatusCode != 201 {
		t.Fatalf("publish with ?token=: %d %s", res.StatusCode, b)
	}
	if res, b := pub("/v1/channels/user:alice:inbox", "Authorization", "Bearer "+good); res.StatusCode != 201 {
		t.Fatalf("publish on the subject's own channel: %d %s", res.StatusCode, b)
	}
	// A header with another scheme (a proxy's Basic) is not a credential.
	res, b = pub("/v1/channels/news", "Authorization", "Basic dXNlcjpwYXNz")
	expectAuthError(t, res, b, 401, "unauthorized")

	// Exactly the five publishes with a right went through.
	res, b = rawDo(t, "GET", ts.URL+"/v1/channels/news/messages", nil, "Authorization", "Bearer "+testAPIKey)
	var h historyAnswer
	if res.StatusCode != 200 || json.Unmarshal(b, &h) != nil || h.Offset != 5 {
		t.Fatalf("history: %d %s", res.StatusCode, b)
	}
	healthy(t, ts.URL)
}

func TestAuthReadRights(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, func(c *config.Config) { c.Presence = true })
	reader := mint(t, "r", []string{"news"}, nil)
	writer := mint(t, "w", nil, []string{"news"})
	mustPublish(t, ts.URL, "news", "text/plain", "hi", "Authorization", "Bearer "+writer)
	for _, path := range []string{"/v1/channels/news/messages", "/v1/channels/news", "/v1/channels/news/presence"} {
		res, b := rawDo(t, "GET", ts.URL+path, nil)
		expectAuthError(t, res, b, 401, "unauthorized")
		res, b = rawDo(t, "GET", ts.URL+path, nil, "Authorization", "Bearer "+writer)
		expectAuthError(t, res, b, 403, "forbidden")
		res, b = rawDo(t, "GET", ts.URL+strings.Replace(path, "news", "sports", 1), nil, "Authorization", "Bearer "+reader)
		expectAuthError(t, res, b, 403, "forbidden")
		for _, cred := range []string{"Bearer " + reader, "Bearer " + testAPIKey} {
			if res, b := rawDo(t, "GET", ts.URL+path, nil, "Authorization", cred); res.StatusCode != 200 {
				t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
			}
		}
	}
	healthy(t, ts.URL)
}

func TestAuthClearNeedsAPIKey(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	everything := mint(t, "root", []string{"**"}, []string{"**"})
	a := mustPublish(t, ts.URL, "news", "text/plain", "hi", "Authorization", "Bearer "+everything)
	res, b := rawDo(t, "DELETE", ts.URL+"/v1/channels/news/messages", nil)
	expectAuthError(t, res, b, 401, "unauthorized")
	res, b = rawDo(t, "DELETE", ts.URL+"/v1/channels/news/messages", nil, "Authorization", "Bearer "+everything)
	expectAuthError(t, res, b, 403, "forbidden")
	res, b = rawDo(t, "DELETE", ts.URL+"/v1/channels/news/messages", nil, "Authorization", "Bearer "+testAPIKey)
	var cleared struct{ Epoch string }
	if res.StatusCode != 200 || json.Unmarshal(b, &cleared) != nil || cleared.Epoch == a.Epoch {
		t.Fatalf("clear with the API key: %d %s", res.StatusCode, b)
	}
	// The API key reads and writes everything too.
	mustPublish(t, ts.URL, "any:thing", "text/plain", "x", "Authorization", "Bearer "+testAPIKey)
	healthy(t, ts.URL)
}

func TestAuthBatch(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, func(c *config.Config) {
		c.Namespaces = map[string]config.Namespace{"open": {AnonymousPublish: ptr(true)}}
	})
	tok := mint(t, "a", nil, []string{"a"})
	body := []byte(`{"messages":[{"channel":"a","data":1},{"channel":"b","data":2},{"channel":"a","data":3}]}`)
	res, b := rawDo(t, "POST", ts.URL+"/v1/publish", body, "Authorization", "Bearer "+tok)
	var out struct {
		Results []struct {
			Offset uint64
			Error  *struct{ Code, Message string }
		}
	}
	if res.StatusCode != 200 || json.Unmarshal(b, &out) != nil || len(out.Results) != 3 {
		t.Fatalf("batch: %d %s", res.StatusCode, b)
	}
	if out.Results[0].Offset != 1 || out.Results[2].Offset != 2 || out.Results[1].Error == nil || out.Results[1].Error.Code != "forbidden" {
		t.Fatalf("batch results: %s", b)
	}
	// Without a credential, where nothing is open: 401 for the request.
	res, b = rawDo(t, "POST", ts.URL+"/v1/publish", body)
	expectAuthError(t, res, b, 401, "unauthorized")
	// With a bad one: 401, whatever the messages.
	res, b = rawDo(t, "POST", ts.URL+"/v1/publish", body, "Authorization", "Bearer x.y.z")
	expectAuthError(t, res, b, 401, "invalid_token")
	// Without a credential where part is open: that part goes, the rest is refused one by one.
	res, b = rawDo(t, "POST", ts.URL+"/v1/publish", []byte(`{"messages":[{"channel":"open:x","data":1},{"channel":"a","data":2}]}`))
	if res.StatusCode != 200 || !strings.Contains(string(b), `"code":"unauthorized"`) || !strings.Contains(string(b), `"offset":1`) {
		t.Fatalf("anonymous batch on an open namespace: %d %s", res.StatusCode, b)
	}
	healthy(t, ts.URL)
}

func TestAuthSSE(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	tok := mint(t, "s", []string{"news"}, nil)
	for _, tt := range []struct {
		query   string
		headers []string
		status  int
		code    string
	}{
		{"channel=news", nil, 401, "unauthorized"},
		{"channel=news&token=bad", nil, 401, "invalid_token"},
		{"channel=news&channel=sports", []string{"Authorization", "Bearer " + tok}, 403, "forbidden"},
		{"cursor=sports@e:1", []string{"Authorization", "Bearer " + tok}, 403, "forbidden"},
	} {
		res, b := rawDo(t, "GET", ts.URL+"/v1/sse?"+tt.query, nil, tt.headers...)
		expectAuthError(t, res, b, tt.status, tt.code)
	}
	// Nothing was subscribed by the refusals.
	if n := subscribersWithKey(t, ts.URL, "news"); n != 0 {
		t.Fatalf("%d subscribers after refused requests", n)
	}

	// Each source.
	clients := []*sseClient{
		openSSE(t, ts.URL+"/v1/sse?channel=news", "Authorization", "Bearer "+tok),
		openSSE(t, ts.URL+"/v1/sse?channel=news&token="+url.QueryEscape(tok)),
		openSSE(t, ts.URL+"/v1/sse?channel=news", "Cookie", "crier_token="+tok),
		openSSE(t, ts.URL+"/v1/sse?channel=news", "Authorization", "Bearer "+testAPIKey),
	}
	mustPublish(t, ts.URL, "news", "text/plain", "hi", "Authorization", "Bearer "+testAPIKey)
	for i, c := range clients {
		if e := c.NextEnvelope(t); e.Offset != 1 {
			t.Fatalf("client %d: %+v", i, e)
		}
	}
	healthy(t, ts.URL)
}

// subscribersWithKey is the channel's subscriber count, read with the API key.
func subscribersWithKey(t testing.TB, base, ch string) int {
	t.Helper()
	res, b := rawDo(t, "GET", base+"/v1/channels/"+ch, nil, "Authorization", "Bearer "+testAPIKey)
	var info struct{ Subscribers int }
	if res.StatusCode != 200 || json.Unmarshal(b, &info) != nil {
		t.Fatalf("channel info: %d %s", res.StatusCode, b)
	}
	return info.Subscribers
}

func ptr[T any](v T) *T { return &v }

func TestAuthWebSocket(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	tok := mint(t, "w", []string{"news"}, []string{"chat:*"})
	// The handshake is refused before the upgrade.
	for _, tt := range []struct {
		query  string
		header map[string]string
		status int
		code   string
	}{
		{"channel=news", nil, 401, "unauthorized"},
		{"channel=news&token=bad", nil, 401, "invalid_token"},
		{"channel=sports", map[string]string{"Authorization": "Bearer " + tok}, 403, "forbidden"},
	} {
		res, body := wsHandshake(t, ts.URL+"/v1/ws?"+tt.query, tt.header)
		expectAuthError(t, res, body, tt.status, tt.code)
	}
	// Each source of the handshake.
	for _, p := range []*wsPeer{
		wsDial(t, ts.URL+"/v1/ws?channel=news", http.Header{"Authorization": {"Bearer " + tok}}),
		wsDial(t, ts.URL+"/v1/ws?channel=news&token="+url.QueryEscape(tok), nil),
		wsDial(t, ts.URL+"/v1/ws?channel=news", http.Header{"Cookie": {"crier_token=" + tok}}),
	} {
		p.sync()
	}

	// Without a credential the connection is anonymous: it may do nothing here.
	p := wsOpen(t, ts.URL, "")
	wsExpectError(t, p, map[string]any{"id": 1, "op": "subscribe", "channel": "news"}, "unauthorized")
	wsExpectError(t, p, map[string]any{"id": 2, "op": "history", "channel": "news"}, "unauthorized")
	wsExpectError(t, p, map[string]any{"id": 3, "op": "presence", "channel": "news"}, "unauthorized")
	wsExpectError(t, p, map[string]any{"id": 4, "op": "publish", "channel": "chat:a", "data": 1}, "unauthorized")
	// A bad token is an error reply; the connection stays, still anonymous.
	wsExpectError(t, p, map[string]any{"id": 5, "op": "auth", "token": "bad"}, "invalid_token")
	wsExpectError(t, p, map[string]any{"id": 6, "op": "auth", "token": testAPIKey + "x"}, "invalid_token")
	p.sync()
	// The auth op brings the token's rights.
	p.ok(map[string]any{"id": 7, "op": "auth", "token": tok})
	p.ok(map[string]any{"id": 8, "op": "subscribe", "channel": "news"})
	wsExpectError(t, p, map[string]any{"id": 9, "op": "subscribe", "channel": "sports"}, "forbidden")
	p.ok(map[string]any{"id": 10, "op": "history", "channel": "news"})
	wsExpectError(t, p, map[string]any{"id": 11, "op": "history", "channel": "sports"}, "forbidden")
	p.ok(map[string]any{"id": 12, "op": "publish", "channel": "chat:a", "data": 1})
	wsExpectError(t, p, map[string]any{"id": 13, "op": "publish", "channel": "news", "data": 1}, "forbidden")
	// A token that may not read what the connection follows is refused, and changes nothing.
	narrow := mint(t, "w", []string{"other"}, nil)
	wsExpectError(t, p, map[string]any{"id": 14, "op": "auth", "token": narrow}, "forbidden")
	p.ok(map[string]any{"id": 15, "op": "publish", "channel": "chat:b", "data": 2})
	// An API key, from the auth op, may do everything.
	p.ok(map[string]any{"id": 16, "op": "auth", "token": testAPIKey})
	p.ok(map[string]any{"id": 17, "op": "publish", "channel": "sports", "data": 3})
	p.ok(map[string]any{"id": 18, "op": "subscribe", "channel": "sports"})
	mustPublish(t, ts.URL, "news", "text/plain", "hi", "Authorization", "Bearer "+testAPIKey)
	if e := p.envelope(); e.Channel != "news" || e.Offset != 1 {
		t.Fatalf("envelope %+v", e)
	}
	healthy(t, ts.URL)
}

func TestAuthAnonymousNamespaces(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, func(c *config.Config) {
		c.AnonymousSubscribe = true
		c.Namespaces = map[string]config.Namespace{
			"public": {AnonymousSubscribe: ptr(true), AnonymousPublish: ptr(true)},
			"feed":   {AnonymousSubscribe: ptr(true)},
		}
	})
	pub := func(ch string) (*http.Response, []byte) {
		return rawDo(t, "POST", ts.URL+"/v1/channels/"+ch, []byte("x"), "Content-Type", "text/plain")
	}
	for ch, want := range map[string]int{"news": 401, "public:x": 201, "feed:x": 401, "private:x": 401} {
		res, b := pub(ch)
		if res.StatusCode != want {
			t.Fatalf("anonymous publish on %s: %d, want %d: %s", ch, res.StatusCode, want, b)
		}
	}
	for ch, want := range map[string]int{"news": 200, "public:x": 200, "feed:x": 200, "private:x": 401} {
		res, b := rawDo(t, "GET", ts.URL+"/v1/channels/"+ch+"/messages", nil)
		if res.StatusCode != want {
			t.Fatalf("anonymous history of %s: %d, want %d: %s", ch, res.StatusCode, want, b)
		}
	}
	c := openSSE(t, ts.URL+"/v1/sse?channel=public:x&channel=news")
	res, b := rawDo(t, "GET", ts.URL+"/v1/sse?channel=private:x", nil)
	expectAuthError(t, res, b, 401, "unauthorized")
	if res, _ := pub("public:x"); res.StatusCode != 201 {
		t.Fatal("second anonymous publish")
	}
	if e := c.NextEnvelope(t); e.Channel != "public:x" || e.Offset != 2 {
		t.Fatalf("anonymous SSE got %+v", e)
	}
	// A token holder keeps the anonymous rights.
	tok := mint(t, "x", nil, []string{"private:x"})
	if res, b := rawDo(t, "POST", ts.URL+"/v1/channels/public:y", []byte("x"), "Authorization", "Bearer "+tok); res.StatusCode != 201 {
		t.Fatalf("token on an anonymous namespace: %d %s", res.StatusCode, b)
	}
	// The default namespace's switch for publishing.
	ts2 := startAuthServer(t, func(c *config.Config) { c.AnonymousPublish = true })
	if res, b := rawDo(t, "POST", ts2.URL+"/v1/channels/news", []byte("x")); res.StatusCode != 201 {
		t.Fatalf("--anonymous-publish: %d %s", res.StatusCode, b)
	}
	res, b = rawDo(t, "POST", ts2.URL+"/v1/channels/chat:x", []byte("x"))
	expectAuthError(t, res, b, 401, "unauthorized") // other namespaces do not inherit it
	healthy(t, ts.URL)
}

func TestAuthPublicKey(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	file := filepath.Join(t.TempDir(), "es256.pem")
	if err := os.WriteFile(file, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *config.Config) { c.JWTPublicKeys = []string{file} })
	claims := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "crier": crierClaims(nil, []string{"news"})}
	good := signClaims(t, jwt.SigningMethodES256, key, claims)
	if res, b := rawDo(t, "POST", ts.URL+"/v1/channels/news", []byte("x"), "Authorization", "Bearer "+good); res.StatusCode != 201 {
		t.Fatalf("ES256 token: %d %s", res.StatusCode, b)
	}
	// The public key used as an HMAC secret (algorithm confusion) is refused.
	confused := signClaims(t, jwt.SigningMethodHS256, pemBytes, claims)
	res, b := rawDo(t, "POST", ts.URL+"/v1/channels/news", []byte("x"), "Authorization", "Bearer "+confused)
	expectAuthError(t, res, b, 401, "invalid_token")
	// Auth is configured by the key alone: anonymous requests are refused.
	res, b = rawDo(t, "POST", ts.URL+"/v1/channels/news", []byte("x"))
	expectAuthError(t, res, b, 401, "unauthorized")

	// The same key from a JWK Set file (--jwks), selected by kid.
	raw, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	jwks := fmt.Sprintf(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig","x":%q,"y":%q}]}`,
		base64.RawURLEncoding.EncodeToString(raw[1:33]), base64.RawURLEncoding.EncodeToString(raw[33:]))
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, []byte(jwks), 0o600); err != nil {
		t.Fatal(err)
	}
	ts2 := startServer(t, func(c *config.Config) { c.JWKS = jwksFile })
	withKid := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	withKid.Header["kid"] = "k1"
	signed, err := withKid.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	if res, b := rawDo(t, "POST", ts2.URL+"/v1/channels/news", []byte("x"), "Authorization", "Bearer "+signed); res.StatusCode != 201 {
		t.Fatalf("JWKS token: %d %s", res.StatusCode, b)
	}
	res, b = rawDo(t, "POST", ts2.URL+"/v1/channels/news", []byte("x"))
	expectAuthError(t, res, b, 401, "unauthorized")
}

func TestAuthTokenExpiresOnWebSocket(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	short, end := mintExpiring(t, 1500*time.Millisecond, []string{"news"}, nil)
	long := mint(t, "l", []string{"news"}, nil)
	expiring := wsDial(t, ts.URL+"/v1/ws?channel=news&token="+url.QueryEscape(short), nil)
	staying := wsDial(t, ts.URL+"/v1/ws?channel=news&token="+url.QueryEscape(long), nil)
	expiring.sync()
	_ = expiring.nc.SetReadDeadline(end.Add(time.Second))
	expiring.expectClose(1008, "token_expired")
	if late := time.Since(end); late < -50*time.Millisecond || late > 500*time.Millisecond {
		t.Fatalf("closed %s after the token's end", late)
	}
	// Nothing else was disturbed.
	staying.sync()
	mustPublish(t, ts.URL, "news", "text/plain", "hi", "Authorization", "Bearer "+testAPIKey)
	if e := staying.envelope(); e.Offset != 1 {
		t.Fatalf("staying subscriber got %+v", e)
	}
	healthy(t, ts.URL)
}

func TestAuthTokenExpiresOnSSE(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	// exp has whole seconds: the token ends 2 to 3 s from now, well after the set-up below.
	short, end := mintExpiring(t, 3*time.Second, []string{"news"}, nil)
	c := openSSE(t, ts.URL+"/v1/sse?channel=news&token="+url.QueryEscape(short))
	mustPublish(t, ts.URL, "news", "text/plain", "hi", "Authorization", "Bearer "+testAPIKey)
	e := c.NextEnvelope(t)
	ev, err := c.Next()
	if err != nil || ev.Event != "crier.token_expired" || ev.ID != "" {
		t.Fatalf("expected the crier.token_expired event, got %+v, %v", ev, err)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal([]byte(ev.Data), &body) != nil || body.Error.Code != "token_expired" || body.Error.Message == "" {
		t.Fatalf("token_expired data %q", ev.Data)
	}
	if late := time.Since(end); late < -50*time.Millisecond || late > 500*time.Millisecond {
		t.Fatalf("ended %s after the token's end", late)
	}
	if _, err := c.Next(); err != io.EOF {
		t.Fatalf("the stream goes on after token_expired: %v", err)
	}
	// The cursor it had resumes with a fresh token, missing nothing.
	if c.LastID != e.Cursor {
		t.Fatalf("last id %q, want the cursor %q", c.LastID, e.Cursor)
	}
	healthy(t, ts.URL)
}

func TestAuthRefreshKeepsWebSocketOpen(t *testing.T) {
	t.Parallel()
	ts := startAuthServer(t, nil)
	short, end := mintExpiring(t, 1500*time.Millisecond, []string{"news"}, nil)
	p := wsDial(t, ts.URL+"/v1/ws?channel=news&token="+url.QueryEscape(short), nil)
	p.ok(map[string]any{"id": 1, "op": "auth", "token": mint(t, "l", []string{"news"}, nil)})
	time.Sleep(time.Until(end.Add(200 * time.Millisecond)))
	p.sync()
	mustPublish(t, ts.URL, "news", "text/plain", "hi", "Authorization", "Bearer "+testAPIKey)
	if e := p.envelope(); e.Offset != 1 {
		t.Fatalf("after the first token's end: %+v", e)
	}
}
