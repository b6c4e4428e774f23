package transport

import (
	"errors"
	"net/http"

	"github.com/crier-push/crier/internal/auth"
)

// Admit authenticates a subscribe request and checks that its identity may subscribe to every
// target. Every transport calls it before it takes the connection, so that auth lives in one
// place. Without an authorizer (tests, embedded use) everyone is admitted with a nil identity.
func (e *Env) Admit(r *http.Request, targets []Target) (*auth.Identity, error) {
	if e.Auth == nil {
		return nil, nil
	}
	id, err := e.Auth.Authenticate(r)
	if err != nil {
		return nil, AuthError(err)
	}
	for _, t := range targets {
		if err := id.CheckSubscribe(t.Channel); err != nil {
			return nil, AuthError(err)
		}
	}
	return id, nil
}

// AuthError turns an auth failure into the API's error (401 or 403 with a snake_case code).
func AuthError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	status, code, message := auth.HTTPError(err)
	return &Error{Status: status, Code: code, Message: message, Challenge: auth.Challenge(err)}
}

// AdmitSubscribe is the start every subscribe endpoint shares: it parses the request's
// channels and positions (lastEventID is SSE's Last-Event-ID, "" elsewhere), requires at least
// one channel, and admits the request. On failure it has answered w and ok is false.
func (e *Env) AdmitSubscribe(w http.ResponseWriter, r *http.Request, lastEventID string) (targets []Target, id *auth.Identity, ok bool) {
	targets, err := SubscribeParams(r.URL.Query(), lastEventID, e.MaxChannels)
	if err == nil && len(targets) == 0 {
		err = Errorf(http.StatusBadRequest, "no_channel", "name at least one channel= or a cursor=")
	}
	if err == nil {
		id, err = e.Admit(r, targets)
	}
	if err != nil {
		WriteError(w, err)
		return nil, nil, false
	}
	return targets, id, true
}
