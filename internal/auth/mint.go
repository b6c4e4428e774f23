package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenSpec is what MintHS256 puts in a token.
type TokenSpec struct {
	Subject   string
	Subscribe []string      // patterns
	Publish   []string      // patterns
	IssuedAt  time.Time     // iat and nbf; zero: now
	TTL       time.Duration // exp = IssuedAt + TTL; must be positive
}

// MintHS256 signs a token for spec with secret, checking each pattern's syntax first.
func MintHS256(secret string, spec TokenSpec) (string, error) {
	if secret == "" {
		return "", errors.New("no JWT secret")
	}
	if spec.TTL <= 0 {
		return "", fmt.Errorf("ttl must be positive, got %s", spec.TTL)
	}
	for _, list := range [][]string{spec.Subscribe, spec.Publish} {
		if len(list) > MaxPatterns {
			return "", fmt.Errorf("%w: more than %d patterns", ErrInvalidPattern, MaxPatterns)
		}
		for _, p := range list {
			if err := ValidatePattern(p); err != nil {
				return "", err
			}
		}
	}
	iat := spec.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	claims := jwt.MapClaims{
		"iat": iat.Unix(),
		"nbf": iat.Unix(),
		"exp": iat.Add(spec.TTL).Unix(),
	}
	if spec.Subject != "" {
		claims["sub"] = spec.Subject
	}
	crier := map[string][]string{}
	if len(spec.Subscribe) > 0 {
		crier["subscribe"] = spec.Subscribe
	}
	if len(spec.Publish) > 0 {
		crier["publish"] = spec.Publish
	}
	if len(crier) > 0 {
		claims["crier"] = crier
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}
