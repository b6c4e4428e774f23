package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "0123456789abcdef0123456789abcdef-test-secret"

// t0 is the fixed clock of most tests.
var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func fixedNow() time.Time { return t0 }

// RSA key generation is slow, so the tests share a few keys.
var rsaKeys = sync.OnceValue(func() []*rsa.PrivateKey {
	keys := make([]*rsa.PrivateKey, 3)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	return keys
})

func newEC(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEd(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writePEM writes blocks of the given type and DER to a file in dir and returns its path.
func writePEM(t testing.TB, dir, name string, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pkixBlock(t testing.TB, pub crypto.PublicKey) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PUBLIC KEY", Bytes: der}
}

func certBlock(t testing.TB, priv crypto.Signer) *pem.Block {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "CERTIFICATE", Bytes: der}
}

// claims builds token claims around t0.
func claims(sub string, subscribe, publish []string) jwt.MapClaims {
	c := jwt.MapClaims{"exp": t0.Add(time.Hour).Unix(), "iat": t0.Unix()}
	if sub != "" {
		c["sub"] = sub
	}
	cr := map[string]any{}
	if subscribe != nil {
		cr["subscribe"] = subscribe
	}
	if publish != nil {
		cr["publish"] = publish
	}
	c["crier"] = cr
	return c
}

// sign signs claims with method and key, with a kid header when kid is not "".
func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawToken assembles a token from a header, claims and signature bytes, signing nothing.
func rawToken(header, payload any, sig []byte) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(payload)
	e := base64.RawURLEncoding
	return e.EncodeToString(h) + "." + e.EncodeToString(p) + "." + e.EncodeToString(sig)
}

func newAuth(t testing.TB, cfg Config) *Authorizer {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = fixedNow
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// wantCode fails unless err is an auth error of the code ("" for no error).
func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	_, got, _ := HTTPError(err)
	if err == nil || got != code {
		t.Fatalf("err = %v (code %q), want code %q", err, got, code)
	}
}

// jwkOf encodes a public key as a JWK.
func jwkOf(t testing.TB, pub crypto.PublicKey, kid string) map[string]string {
	t.Helper()
	e := base64.RawURLEncoding
	var j map[string]string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		j = map[string]string{"kty": "RSA", "n": e.EncodeToString(k.N.Bytes()), "e": e.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		j = map[string]string{"kty": "EC", "crv": "P-256", "x": e.EncodeToString(b[1:33]), "y": e.EncodeToString(b[33:])}
	case ed25519.PublicKey:
		j = map[string]string{"kty": "OKP", "crv": "Ed25519", "x": e.EncodeToString(k)}
	default:
		t.Fatalf("jwkOf %T", pub)
	}
	if kid != "" {
		j["kid"] = kid
	}
	return j
}

func jwksDoc(t testing.TB, keys ...map[string]string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRSA(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustP384(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
