package auth

import (
	"time"

	"github.com/crier-push/crier/internal/channel"
)

// Kind tells what an Identity was authenticated with.
type Kind uint8

const (
	KindOpen      Kind = iota // no auth configured: every right
	KindAnonymous             // no credential: the namespaces' anonymous rights only
	KindToken                 // a JWT: its patterns, plus the anonymous rights
	KindAPIKey                // an API key: every right, the admin API included
)

func (k Kind) String() string {
	switch k {
	case KindOpen:
		return "open"
	case KindAnonymous:
		return "anonymous"
	case KindToken:
		return "token"
	case KindAPIKey:
		return "api_key"
	default:
		return "unknown"
	}
}

// Identity is who a request or connection is, and what it may do. It is immutable and safe for
// concurrent use. A nil *Identity may do nothing.
type Identity struct {
	kind               Kind
	subject            string
	id                 string
	source             Source
	expires            time.Time // exp + leeway; zero: never
	subscribe, publish patternSet
	anon               func(namespace string) (anonSub, anonPub bool)
	now                func() time.Time
}

// Kind returns what the identity was authenticated with.
func (id *Identity) Kind() Kind {
	if id == nil {
		return KindAnonymous
	}
	return id.kind
}

// Subject is the token's sub claim; "" for other kinds.
func (id *Identity) Subject() string {
	if id == nil {
		return ""
	}
	return id.subject
}

// ID names the credential for rate limits and logs without revealing it: "jwt:" and 16 hex
// digits of the token's SHA-256, or "api_key:N" (N counts the configured keys from 1); "" for
// anonymous and open identities.
func (id *Identity) ID() string {
	if id == nil {
		return ""
	}
	return id.id
}

// Source tells where the credential came from.
func (id *Identity) Source() Source {
	if id == nil {
		return SourceNone
	}
	return id.source
}

// Expires is the instant the identity's rights end: the token's exp plus the leeway. A
// connection should be told and closed then. The zero time means never (API keys, anonymous,
// no auth, a token without exp).
func (id *Identity) Expires() time.Time {
	if id == nil {
		return time.Time{}
	}
	return id.expires
}

// Expired reports whether the identity's rights have ended.
func (id *Identity) Expired() bool {
	return id != nil && !id.expires.IsZero() && !id.now().Before(id.expires)
}

// IsAdmin reports whether the identity may use the admin API: API keys, and everyone when no
// auth is configured.
func (id *Identity) IsAdmin() bool {
	return id != nil && (id.kind == KindAPIKey || id.kind == KindOpen)
}

// CanSubscribe reports whether the identity may subscribe to the channel (and read its
// history and presence).
func (id *Identity) CanSubscribe(name string) bool { return id.CheckSubscribe(name) == nil }

// CanPublish reports whether the identity may publish on the channel.
func (id *Identity) CanPublish(name string) bool { return id.CheckPublish(name) == nil }

// CheckSubscribe is CanSubscribe as the error to answer: nil, ErrUnauthorized for an
// anonymous identity (a token would be needed), ErrTokenExpired once Expires has passed, or
// ErrForbidden. An invalid channel name is forbidden; callers validate names first to answer
// 400.
func (id *Identity) CheckSubscribe(name string) error {
	return id.check(name, "subscribe to", func(sub, _ bool) bool { return sub }, func(id *Identity) patternSet { return id.subscribe })
}

// CheckPublish is CanPublish as the error to answer, as CheckSubscribe.
func (id *Identity) CheckPublish(name string) error {
	return id.check(name, "publish on", func(_, pub bool) bool { return pub }, func(id *Identity) patternSet { return id.publish })
}

// CheckAdmin is IsAdmin as the error to answer.
func (id *Identity) CheckAdmin() error {
	switch {
	case id.IsAdmin():
		return nil
	case id == nil || id.kind == KindAnonymous:
		return newError(ErrUnauthorized, "the admin API needs an API key", nil)
	default:
		return newError(ErrForbidden, "the admin API needs an API key", nil)
	}
}

func (id *Identity) check(name, verb string, anonRight func(sub, pub bool) bool, set func(*Identity) patternSet) error {
	if id == nil {
		return newError(ErrUnauthorized, "", nil)
	}
	switch id.kind {
	case KindOpen, KindAPIKey:
		return nil
	}
	if !channel.ValidName(name) {
		return newError(ErrForbidden, "not allowed: invalid channel name", nil)
	}
	if id.Expired() {
		return newError(ErrTokenExpired, "", nil)
	}
	if id.kind == KindToken && set(id).match(name) {
		return nil
	}
	if id.anon != nil && anonRight(id.anon(channel.Namespace(name))) {
		return nil
	}
	if id.kind == KindAnonymous {
		return newError(ErrUnauthorized, "a token is required to "+verb+" "+name, nil)
	}
	return newError(ErrForbidden, "the token may not "+verb+" "+name, nil)
}
