package auth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves a JWK Set that the test can change, and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	doc     []byte
	status  int
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T, doc []byte) *jwksServer {
	s := &jwksServer{doc: doc, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		doc, status := s.doc, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		_, _ = w.Write(doc)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(doc []byte, status int) {
	s.mu.Lock()
	s.doc, s.status = doc, status
	s.mu.Unlock()
}

// runAuth runs a's refresh loop for the test and waits for it to end at cleanup.
func runAuth(t *testing.T, a *Authorizer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

func TestJWKS(t *testing.T) {
	rk, ec, ed := rsaKeys()[0], newEC(t), newEd(t)
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, &rk.PublicKey, "r1"), jwkOf(t, ec.Public(), "e1"), jwkOf(t, ed.Public(), "d1")))
	a := newAuth(t, Config{JWKS: srv.URL})
	c := claims("k", []string{"x"}, nil)
	tok := sign(t, jwt.SigningMethodES256, ec, "e1", c)
	if _, err := a.AuthenticateToken(t.Context(), tok); err == nil {
		t.Fatal("a token verified before the JWKS was fetched")
	}
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, tok, code string
	}{
		{"RS256 kid", sign(t, jwt.SigningMethodRS256, rk, "r1", c), ""},
		{"ES256 kid", tok, ""},
		{"EdDSA kid", sign(t, jwt.SigningMethodEdDSA, ed, "d1", c), ""},
		{"no kid", sign(t, jwt.SigningMethodEdDSA, ed, "", c), ""},
		{"kid of another key", sign(t, jwt.SigningMethodRS256, rk, "e1", c), "invalid_token"},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rk, "zz", c), "invalid_token"},
		{"right kid, wrong key", sign(t, jwt.SigningMethodES256, newEC(t), "e1", c), "invalid_token"},
		{"HS256 keyed with the JWK's n", sign(t, jwt.SigningMethodHS256, []byte(jwkOf(t, &rk.PublicKey, "")["n"]), "r1", c), "invalid_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.AuthenticateToken(t.Context(), tt.tok)
			wantCode(t, err, tt.code)
		})
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches without a running loop, want 1", n)
	}
}

// TestJWKSRotationByKid: a token naming a new kid makes the running loop fetch the set at
// once; a key the issuer removed stops working.
func TestJWKSRotationByKid(t *testing.T) {
	k1, k2 := rsaKeys()[0], rsaKeys()[1]
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, &k1.PublicKey, "k1")))
	a := newAuth(t, Config{JWKS: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: time.Millisecond})
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	runAuth(t, a)
	c := claims("k", []string{"x"}, nil)
	old, fresh := sign(t, jwt.SigningMethodRS256, k1, "k1", c), sign(t, jwt.SigningMethodRS256, k2, "k2", c)
	if _, err := a.AuthenticateToken(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	srv.set(jwksDoc(t, jwkOf(t, &k2.PublicKey, "k2")), http.StatusOK)
	time.Sleep(5 * time.Millisecond) // past JWKSMinRefresh since the last fetch
	if _, err := a.AuthenticateToken(t.Context(), fresh); err != nil {
		t.Fatalf("token of the rotated-in key: %v", err)
	}
	if _, err := a.AuthenticateToken(t.Context(), old); err == nil {
		t.Fatal("the rotated-out key still verifies")
	}
}

// TestJWKSUnknownKidRateLimit: random kids cannot make the server fetch more than once per
// JWKSMinRefresh.
func TestJWKSUnknownKidRateLimit(t *testing.T) {
	k := rsaKeys()[0]
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, &k.PublicKey, "k1")))
	a := newAuth(t, Config{JWKS: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefresh: time.Hour})
	runAuth(t, a)
	waitFor(t, func() bool { return srv.fetches.Load() == 1 && a.jwks.current() != nil })
	for i := range 20 {
		tok := sign(t, jwt.SigningMethodRS256, k, "random-"+string(rune('a'+i)), claims("", nil, nil))
		wantCode(t, func() error { _, err := a.AuthenticateToken(t.Context(), tok); return err }(), "invalid_token")
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

// TestJWKSBackgroundRefresh: the loop fetches on its own, so a rotated key works without any
// kid hint.
func TestJWKSBackgroundRefresh(t *testing.T) {
	k1, k2 := newEd(t), newEd(t)
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, k1.Public(), "")))
	a := newAuth(t, Config{JWKS: srv.URL, JWKSRefresh: 20 * time.Millisecond})
	runAuth(t, a) // fetches at once: no set is held
	tok1 := sign(t, jwt.SigningMethodEdDSA, k1, "", claims("", nil, nil))
	tok2 := sign(t, jwt.SigningMethodEdDSA, k2, "", claims("", nil, nil))
	waitFor(t, func() bool { _, err := a.AuthenticateToken(t.Context(), tok1); return err == nil })
	srv.set(jwksDoc(t, jwkOf(t, k2.Public(), "")), http.StatusOK)
	waitFor(t, func() bool { _, err := a.AuthenticateToken(t.Context(), tok2); return err == nil })
	if _, err := a.AuthenticateToken(t.Context(), tok1); err == nil {
		t.Fatal("the removed key still verifies")
	}
}

// TestJWKSFailureKeepsKeys: a failed fetch keeps the set; a set that parses replaces it, even
// an empty one.
func TestJWKSFailureKeepsKeys(t *testing.T) {
	ec := newEC(t)
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, ec.Public(), "e")))
	a := newAuth(t, Config{JWKS: srv.URL})
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodES256, ec, "e", claims("", nil, nil))
	for _, bad := range []struct {
		doc    string
		status int
	}{
		{"oops", http.StatusInternalServerError},
		{"<html>login</html>", http.StatusOK},
		{`{"nokeys":1}`, http.StatusOK},
		{strings.Repeat(" ", MaxJWKSSize+1), http.StatusOK},
	} {
		srv.set([]byte(bad.doc), bad.status)
		if err := a.Refresh(t.Context()); err == nil {
			t.Errorf("Refresh of %.20q (%d) succeeded", bad.doc, bad.status)
		}
		if _, err := a.AuthenticateToken(t.Context(), tok); err != nil {
			t.Fatalf("keys lost after a failed fetch: %v", err)
		}
	}
	srv.set([]byte(`{"keys":[]}`), http.StatusOK)
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthenticateToken(t.Context(), tok); err == nil {
		t.Fatal("a key the issuer removed still verifies")
	}
	srv.Close()
	if err := a.Refresh(t.Context()); err == nil {
		t.Fatal("Refresh of a closed server succeeded")
	}
}

func TestJWKSFile(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := newEC(t), newEC(t)
	path := writeFile(t, dir, "jwks.json", string(jwksDoc(t, jwkOf(t, k1.Public(), "a"))))
	a := newAuth(t, Config{JWKS: "file://" + path, JWKSRefresh: 10 * time.Millisecond})
	tok1 := sign(t, jwt.SigningMethodES256, k1, "a", claims("", nil, nil))
	tok2 := sign(t, jwt.SigningMethodES256, k2, "b", claims("", nil, nil))
	if _, err := a.AuthenticateToken(t.Context(), tok1); err != nil {
		t.Fatalf("file read by New: %v", err)
	}
	runAuth(t, a)
	if err := os.WriteFile(path, jwksDoc(t, jwkOf(t, k2.Public(), "b")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := a.AuthenticateToken(t.Context(), tok2); return err == nil })
	if _, err := a.AuthenticateToken(t.Context(), tok1); err == nil {
		t.Fatal("old key still verifies")
	}
}

func TestRunWithoutJWKS(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret})
	done := make(chan error)
	go func() { done <- a.Run(t.Context()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run without a JWKS blocks")
	}
	if err := a.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestRunRetriesAfterFailure: a server that is down at start gets its keys once it answers.
func TestRunRetriesAfterFailure(t *testing.T) {
	ed := newEd(t)
	srv := newJWKSServer(t, nil)
	srv.set([]byte("down"), http.StatusServiceUnavailable)
	a := newAuth(t, Config{JWKS: srv.URL, Logger: slog.New(slog.DiscardHandler)})
	runAuth(t, a)
	waitFor(t, func() bool { return srv.fetches.Load() >= 1 })
	srv.set(jwksDoc(t, jwkOf(t, ed.Public(), "")), http.StatusOK)
	tok := sign(t, jwt.SigningMethodEdDSA, ed, "", claims("", nil, nil))
	waitFor(t, func() bool { _, err := a.AuthenticateToken(t.Context(), tok); return err == nil })
}

func TestParseJWKS(t *testing.T) {
	rk, ec, ed := rsaKeys()[0], newEC(t), newEd(t)
	e := base64.RawURLEncoding
	with := func(j map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range j {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(out, kv[i])
			} else {
				out[kv[i]] = kv[i+1]
			}
		}
		return out
	}
	rj, ej, dj := jwkOf(t, &rk.PublicKey, "r"), jwkOf(t, ec.Public(), "e"), jwkOf(t, ed.Public(), "d")
	short := mustRSA(t, 1024)
	p384 := mustP384(t)
	p384b, _ := p384.PublicKey.Bytes()
	good := []map[string]string{rj, ej, dj, with(rj, "alg", "RS256", "use", "sig"), with(ej, "alg", "ES256"), with(dj, "alg", "EdDSA")}
	bad := []map[string]string{
		{"kty": "oct", "k": e.EncodeToString([]byte("secret"))},
		with(rj, "use", "enc"),
		with(rj, "alg", "RS512"),
		with(rj, "alg", "HS256"),
		with(ej, "alg", "ES384"),
		with(rj, "n", "!!!"),
		with(rj, "e", ""),
		with(rj, "e", e.EncodeToString([]byte{2})),
		with(rj, "e", e.EncodeToString([]byte{1, 0, 0, 0, 1})),
		jwkOf(t, &short.PublicKey, "short"),
		with(ej, "crv", "P-384", "x", e.EncodeToString(p384b[1:49]), "y", e.EncodeToString(p384b[49:])),
		with(ej, "y", e.EncodeToString(make([]byte, 32))), // not on the curve
		with(ej, "x", e.EncodeToString(make([]byte, 31))),
		with(dj, "crv", "X25519"),
		with(dj, "x", e.EncodeToString(make([]byte, 31))),
		{"kty": "PQ"},
	}
	keys, skipped, err := parseJWKS(jwksDoc(t, append(append([]map[string]string{}, good...), bad...)...))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(good) || len(skipped) != len(bad) {
		t.Fatalf("%d keys, %d skipped; want %d, %d: %v", len(keys), len(skipped), len(good), len(bad), skipped)
	}
	if _, _, err := parseJWKS([]byte(`{"keys":[1,"x"]}`)); err != nil {
		t.Fatalf("malformed entries are skipped, not fatal: %v", err)
	}
	for _, doc := range []string{"", "[]", `{"keys":{}}`, `{}`, "null"} {
		if _, _, err := parseJWKS([]byte(doc)); err == nil {
			t.Errorf("parseJWKS(%q) succeeded", doc)
		}
	}
	der, _ := x509.MarshalPKIXPublicKey(ec.Public())
	if _, err := parsePEM(der); err == nil {
		t.Error("DER without PEM accepted")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
