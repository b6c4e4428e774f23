// Package store holds what Crier's Store implementations share: epochs and the rules of
// retention and reading. Each implementation lives in its own sub-package.
package store

import (
	"crypto/rand"
	"time"

	"github.com/crier-push/crier/internal/hub"
)

// NewEpoch returns a short random epoch, URL-safe and free of cursor separators.
func NewEpoch() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// Cutoff returns the time before which messages fall out of history under r, or the zero time.
func Cutoff(r hub.Retention, now time.Time) time.Time {
	if r.Age <= 0 {
		return time.Time{}
	}
	return now.Add(-r.Age)
}
