// Package transport holds what every push transport shares: the API's JSON errors, parsing a
// subscribe request, tracking a connection's cursor, its set of subscriptions, and the registry
// that mounts transports on the server. Transports live in sub-packages and depend on the hub;
// the hub knows none of them.
package transport

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/crier-push/crier/internal/hub"
)

// Error is an API error: an HTTP status and a snake_case code with a message for a person.
type Error struct {
	Status  int
	Code    string
	Message string
	// Challenge, on a 401, is the WWW-Authenticate value.
	Challenge string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// BadRequest is a 400 with code bad_request unless given.
func BadRequest(code string, err error) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: err.Error()}
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// AsError maps any error to an API error.
func AsError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, hub.ErrBadRequest):
		return &Error{Status: http.StatusBadRequest, Code: "bad_request", Message: err.Error()}
	case errors.Is(err, hub.ErrPresenceDisabled):
		return &Error{Status: http.StatusNotFound, Code: "presence_disabled", Message: err.Error()}
	case errors.Is(err, hub.ErrClosed):
		return &Error{Status: http.StatusServiceUnavailable, Code: "draining", Message: "server is shutting down; retry shortly"}
	default:
		return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
	}
}

// JSON encodes an error's body.
func (e *Error) JSON() []byte {
	var b ErrorBody
	b.Error.Code, b.Error.Message = e.Code, e.Message
	out, _ := json.Marshal(b)
	return out
}

// WriteError answers err as JSON with its status.
func WriteError(w http.ResponseWriter, err error) {
	e := AsError(err)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if e.Challenge != "" {
		h.Set("WWW-Authenticate", e.Challenge)
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(e.JSON(), '\n'))
}
