package auth

import (
	"errors"
	"net/http"
)

// Error is an auth failure with the HTTP status and snake_case code it is answered with.
// Compare with errors.Is against the sentinels below: two Errors match when their codes do.
type Error struct {
	Status  int    // 401 or 403
	Code    string // snake_case, as in the API's error body
	Message string // for a person; never holds a credential
	Err     error  // the cause, for logs; may be nil
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches any *Error with the same code, so that errors.Is(err, ErrTokenExpired) holds for
// every expired-token error whatever its message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The kinds of auth failure. Each is also the template that errors of its kind match.
var (
	// ErrUnauthorized: no credential where one is needed (401).
	ErrUnauthorized = &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "a token is required"}
	// ErrInvalidToken: a credential that is malformed, unsigned, signed with a refused
	// algorithm or an unknown key, badly signed, or whose claims are malformed (401).
	ErrInvalidToken = &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Message: "invalid token"}
	// ErrTokenExpired: a token past its exp (plus leeway) (401).
	ErrTokenExpired = &Error{Status: http.StatusUnauthorized, Code: "token_expired", Message: "token has expired"}
	// ErrTokenNotValidYet: a token before its nbf (less leeway) (401).
	ErrTokenNotValidYet = &Error{Status: http.StatusUnauthorized, Code: "token_not_valid_yet", Message: "token is not valid yet"}
	// ErrForbidden: a valid credential without the right asked for (403).
	ErrForbidden = &Error{Status: http.StatusForbidden, Code: "forbidden", Message: "not allowed"}
)

// newError is an error of kind with its own message and cause.
func newError(kind *Error, message string, cause error) *Error {
	if message == "" {
		message = kind.Message
	}
	return &Error{Status: kind.Status, Code: kind.Code, Message: message, Err: cause}
}

// HTTPError returns the HTTP status, snake_case code and message that err is answered with.
// An error that is not an auth error is a 500 "internal", its text kept out of the answer.
func HTTPError(err error) (status int, code, message string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Status, e.Code, e.Message
	}
	return http.StatusInternalServerError, "internal", "internal error"
}

// Challenge returns the WWW-Authenticate header value (RFC 6750) that a 401 answer for err
// should carry, or "" when err is not a 401 auth error.
func Challenge(err error) string {
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusUnauthorized {
		return ""
	}
	if e.Code == ErrUnauthorized.Code {
		return `Bearer realm="crier"`
	}
	return `Bearer realm="crier", error="invalid_token"`
}
