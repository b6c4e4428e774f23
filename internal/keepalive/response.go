package keepalive

import (
	"net/http"
	"strconv"
	"time"
)

// response is the ResponseWriter of an adopted request: it keeps the answer, which finish
// renders as HTTP/1.1 after the handler returns. It offers no Flush and no Hijack; the
// requests adopted have plain answers.
type response struct {
	header      http.Header
	status      int
	wroteHeader bool
	buf         []byte // the answer's body, then (finish) the whole answer
	closes      bool   // the answer says Connection: close
	in          *body  // the request's, for SetReadDeadline
	// writeBy is the handler's write deadline (http.ResponseController), zero for none.
	writeBy time.Time
}

// reset readies w for a request, rendering into buf.
func (w *response) reset(buf []byte, in *body) {
	*w = response{header: make(http.Header, 4), buf: buf, in: in}
}

func (w *response) Header() http.Header { return w.header }

// SetReadDeadline is for http.ResponseController: it bounds the reads of the request's body
// from now on, as net/http's does.
func (w *response) SetReadDeadline(t time.Time) error {
	w.in.by = t
	return nil
}

// SetWriteDeadline is for http.ResponseController: it bounds the answer's write instead of
// WriteTimeout.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.writeBy = t
	return nil
}

func (w *response) WriteHeader(status int) {
	if w.wroteHeader || status < 200 { // informational answers are not sent; the final one is
		return
	}
	w.wroteHeader = true
	w.status = status
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// finish renders the answer: status line, header fields, the Content-Length and Date that
// net/http would add, and the body. keep false adds Connection: close.
func (w *response) finish(keep bool) []byte {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	body := w.buf
	h := w.header
	if h.Get("Content-Type") == "" && len(body) > 0 {
		h.Set("Content-Type", http.DetectContentType(body))
	}
	if hasToken(h.Get("Connection"), "close") {
		w.closes = true
	} else if !keep {
		h.Set("Connection", "close")
		w.closes = true
	}
	// The head is rendered after the body, in the same buffer, then moves to the front with a
	// second copy of the body behind it: one buffer, kept for the connection's next answers.
	out := body
	at := len(out)
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(w.status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(w.status)...)
	out = append(out, "\r\n"...)
	for k, vs := range h {
		if k == "Content-Length" || k == "Date" {
			continue
		}
		for _, v := range vs {
			out = append(out, k...)
			out = append(out, ": "...)
			out = appendFieldValue(out, v)
			out = append(out, "\r\n"...)
		}
	}
	if bodyAllowed(w.status) {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, int64(len(body)), 10)
		out = append(out, "\r\n"...)
	}
	out = append(out, "Date: "...)
	out = time.Now().UTC().AppendFormat(out, http.TimeFormat)
	out = append(out, "\r\n\r\n"...)
	headLen := len(out) - at
	out = append(out, body...)
	copy(out, out[at:])
	w.buf = out[:headLen+len(body)]
	return w.buf
}

// bodyAllowed reports whether an answer of status may carry a body.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && (status < 100 || status > 199)
}

// appendFieldValue appends v with CR and LF replaced by spaces, as net/http writes values:
// a value cannot add a field of its own.
func appendFieldValue(dst []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}
