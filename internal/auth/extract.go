package auth

import (
	"net/http"
	"strings"
)

// MaxTokenLen bounds a credential; a longer one is refused before any parsing.
const MaxTokenLen = 16 << 10

// CookieName is the cookie that may carry a token.
const CookieName = "crier_token"

// QueryParam is the query parameter that may carry a token.
const QueryParam = "token"

// Source tells where a request's credential came from.
type Source uint8

const (
	SourceNone   Source = iota // no credential
	SourceHeader               // Authorization: Bearer
	SourceQuery                // ?token=
	SourceCookie               // cookie crier_token
	SourceDirect               // handed over directly (the WebSocket auth op)
)

func (s Source) String() string {
	switch s {
	case SourceHeader:
		return "header"
	case SourceQuery:
		return "query"
	case SourceCookie:
		return "cookie"
	case SourceDirect:
		return "direct"
	default:
		return "none"
	}
}

// ExtractToken returns the credential of a request and where it came from, taking the first
// source that carries one in this order:
//
//  1. Authorization: Bearer TOKEN (scheme case-insensitive). An Authorization header with
//     another scheme (Basic for a proxy in front) is ignored, not an error.
//  2. the query parameter token (its first value).
//  3. the cookie crier_token.
//
// A source that is present but empty or oversized ("Bearer " alone, "?token=") is an
// ErrInvalidToken rather than a fall-through, so that a client's mistake is reported instead
// of silently answered as anonymous. No credential at all is ("", SourceNone, nil).
func ExtractToken(r *http.Request) (string, Source, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := bearer(h); ok {
			return check(tok, SourceHeader)
		}
	}
	if r.URL != nil {
		if vs, ok := r.URL.Query()[QueryParam]; ok && len(vs) > 0 {
			return check(vs[0], SourceQuery)
		}
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return check(c.Value, SourceCookie)
	}
	return "", SourceNone, nil
}

// bearer returns the token of an Authorization header of scheme Bearer.
func bearer(h string) (string, bool) {
	const scheme = "bearer"
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	rest := h[len(scheme):]
	if rest == "" {
		return "", true // "Bearer" alone: a bearer header without its token
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return "", false // another scheme that starts with "bearer"
	}
	return strings.TrimSpace(rest), true
}

func check(tok string, src Source) (string, Source, error) {
	switch {
	case tok == "":
		return "", src, newError(ErrInvalidToken, "empty token in "+src.String(), nil)
	case len(tok) > MaxTokenLen:
		return "", src, newError(ErrInvalidToken, "token too long", nil)
	}
	return tok, src, nil
}
