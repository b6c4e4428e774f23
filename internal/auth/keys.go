package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
)

// MinRSABits is the smallest RSA modulus accepted, from a PEM file or a JWKS.
const MinRSABits = 2048

// The asymmetric algorithms accepted, each with the one key type that verifies it.
const (
	algRS256 = "RS256" // *rsa.PublicKey, at least MinRSABits
	algES256 = "ES256" // *ecdsa.PublicKey on P-256
	algEdDSA = "EdDSA" // ed25519.PublicKey
)

// validMethods is the complete allow-list handed to the JWT parser: "none" and every other
// algorithm are refused before any key is looked up.
var validMethods = []string{"HS256", "HS384", "HS512", algRS256, algES256, algEdDSA}

// pubKey is one verification key.
type pubKey struct {
	kid string // "" for PEM keys, which have none
	alg string // the algorithm this key verifies
	key crypto.PublicKey
}

// algOf returns the one algorithm a supported public key verifies.
func algOf(k crypto.PublicKey) (string, error) {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return "", fmt.Errorf("RSA key of %d bits; at least %d are required", k.N.BitLen(), MinRSABits)
		}
		return algRS256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC key on %s; only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		return algES256, nil
	case ed25519.PublicKey:
		return algEdDSA, nil
	default:
		return "", fmt.Errorf("unsupported key type %T", k)
	}
}

// loadPEMFile reads every public key of a PEM file: PUBLIC KEY (PKIX), RSA PUBLIC KEY (PKCS #1)
// or CERTIFICATE blocks. A private key is refused: the server needs only the public half.
func loadPEMFile(path string) ([]pubKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := parsePEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

func parsePEM(b []byte) ([]pubKey, error) {
	var keys []pubKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		var k crypto.PublicKey
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(block.Bytes); err == nil {
				k = c.PublicKey
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
			return nil, fmt.Errorf("holds a %s; give the public key only (openssl pkey -pubout)", block.Type)
		default:
			continue // parameters and the like
		}
		if err != nil {
			return nil, fmt.Errorf("%s block: %w", block.Type, err)
		}
		alg, err := algOf(k)
		if err != nil {
			return nil, err
		}
		keys = append(keys, pubKey{alg: alg, key: k})
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	return keys, nil
}

// jwk is the part of a JSON Web Key (RFC 7517, 7518, 8037) that verification needs.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS parses a JWK Set. Keys that this package cannot use (symmetric keys, encryption
// keys, other curves, short RSA keys, an alg it does not accept) are skipped and reported in
// skipped; only a document that is not a JWK Set at all is an error.
func parseJWKS(b []byte) (keys []pubKey, skipped []error, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	if set.Keys == nil {
		return nil, nil, errors.New(`not a JWK Set: no "keys" array`)
	}
	for i, raw := range set.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		k, err := j.publicKey()
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d (kid %q): %w", i, truncate(j.Kid, 64), err))
			continue
		}
		keys = append(keys, k)
	}
	return keys, skipped, nil
}

func (j jwk) publicKey() (pubKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return pubKey{}, fmt.Errorf("use %q is not sig", j.Use)
	}
	var k crypto.PublicKey
	switch j.Kty {
	case "RSA":
		n, err := b64(j.N)
		if err != nil {
			return pubKey{}, fmt.Errorf("n: %w", err)
		}
		e, err := b64(j.E)
		if err != nil {
			return pubKey{}, fmt.Errorf("e: %w", err)
		}
		if len(e) == 0 || len(e) > 4 {
			return pubKey{}, errors.New("e out of range")
		}
		exp := new(big.Int).SetBytes(e).Int64()
		if exp < 3 || exp > math.MaxInt32 || exp%2 == 0 {
			return pubKey{}, errors.New("e out of range")
		}
		k = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp)}
	case "EC":
		if j.Crv != "P-256" {
			return pubKey{}, fmt.Errorf("curve %q; only P-256 is supported", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil {
			return pubKey{}, fmt.Errorf("x: %w", err)
		}
		y, err := b64(j.Y)
		if err != nil {
			return pubKey{}, fmt.Errorf("y: %w", err)
		}
		if len(x) != 32 || len(y) != 32 {
			return pubKey{}, errors.New("x and y must be 32 bytes")
		}
		point := append(append([]byte{4}, x...), y...)
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return pubKey{}, err
		}
		k = pk
	case "OKP":
		if j.Crv != "Ed25519" {
			return pubKey{}, fmt.Errorf("curve %q; only Ed25519 is supported", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil {
			return pubKey{}, fmt.Errorf("x: %w", err)
		}
		if len(x) != ed25519.PublicKeySize {
			return pubKey{}, fmt.Errorf("x must be %d bytes", ed25519.PublicKeySize)
		}
		k = ed25519.PublicKey(x)
	default:
		return pubKey{}, fmt.Errorf("kty %q is not supported", j.Kty)
	}
	alg, err := algOf(k)
	if err != nil {
		return pubKey{}, err
	}
	if j.Alg != "" && j.Alg != alg {
		return pubKey{}, fmt.Errorf("alg %q is not accepted for this key (want %s)", j.Alg, alg)
	}
	return pubKey{kid: j.Kid, alg: alg, key: k}, nil
}

func b64(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("missing")
	}
	return base64.RawURLEncoding.DecodeString(s)
}
