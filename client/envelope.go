package client

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// Event names the server reserves for its own events.
const (
	EventMessage   = "message"
	EventGap       = "crier.gap"       // part of what was asked for is gone; resync
	EventJoin      = "crier.join"      // presence: a client joined
	EventLeave     = "crier.leave"     // presence: a client left
	EventReconnect = "crier.reconnect" // the server is draining; Subscription handles it
)

// Envelope is one message as every transport delivers it.
type Envelope struct {
	Channel string    `json:"channel"`
	Offset  uint64    `json:"offset"`
	Epoch   string    `json:"epoch"`
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`
	// Data is the payload: the JSON value as published when it was JSON, a JSON string when it
	// was text, and a base64 string (with Encoding "base64") otherwise. Payload decodes it.
	Data        json.RawMessage `json:"data"`
	Encoding    string          `json:"encoding,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	// Cursor resumes the whole subscription right after this message.
	Cursor string `json:"cursor"`

	// Raw is the envelope exactly as the server sent it.
	Raw json.RawMessage `json:"-"`
}

// Position returns the envelope's position as EPOCH:OFFSET, the form of History's since.
func (e *Envelope) Position() string {
	return fmt.Sprintf("%s:%d", e.Epoch, e.Offset)
}

// Payload returns the published bytes where the envelope can tell them: base64 data decoded,
// a JSON string's text (a text payload, or a JSON document that was a string), and any other
// JSON value as published.
func (e *Envelope) Payload() ([]byte, error) {
	if e.Encoding == "base64" {
		var s string
		if err := json.Unmarshal(e.Data, &s); err != nil {
			return nil, fmt.Errorf("crier: base64 data is not a string: %w", err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("crier: bad base64 data: %w", err)
		}
		return b, nil
	}
	if len(e.Data) > 0 && e.Data[0] == '"' {
		var s string
		if err := json.Unmarshal(e.Data, &s); err != nil {
			return nil, fmt.Errorf("crier: bad string data: %w", err)
		}
		return []byte(s), nil
	}
	return e.Data, nil
}

// APIError is an error answer of the HTTP API: {"error":{"code","message"}}.
type APIError struct {
	Status  int    // HTTP status; 0 for one failed message of a batch
	Code    string // snake_case reason, e.g. "unauthorized"
	Message string // for a person

	retryAfter time.Duration // the answer's Retry-After, if any
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("crier: %s (%s)", e.Message, e.Code)
	}
	return fmt.Sprintf("crier: %s (%d %s)", e.Message, e.Status, e.Code)
}

// temporary reports whether trying again later may succeed.
func (e *APIError) temporary() bool {
	switch {
	case e.Status >= 500, e.Status == 408, e.Status == 425, e.Status == 429:
		return true
	}
	return false
}
