package transport

import (
	"net/http"
	"strings"
)

// corsFields are the response fields the server sets on every answer to a browser's
// cross-origin request (Access-Control-*) and for caches (Vary).
var corsFields = []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
	"Access-Control-Expose-Headers", "Vary"}

// AppendCORSFields appends to a response head that a transport writes itself, on a hijacked
// connection, the CORS fields the server set on its ResponseWriter: without them a browser
// would not let a page of another allowed origin read the stream. Each is "Name: value\r\n".
func AppendCORSFields(dst []byte, h http.Header) []byte {
	for _, name := range corsFields {
		vals := h.Values(name)
		if len(vals) == 0 {
			continue
		}
		v := strings.Join(vals, ", ")
		if strings.ContainsAny(v, "\r\n") {
			continue
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		dst = append(dst, v...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}
