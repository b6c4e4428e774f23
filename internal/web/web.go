// Package web serves Crier's browser side from files embedded in the binary: the live demo page
// at / (exactly the root: every other unknown path stays the API's JSON 404), the client library
// crier.js, an ES module with no build step, and its TypeScript types crier.d.ts.
//
// Every file has a strong ETag (a hash of its bytes) and answers If-None-Match with 304. The
// page imports crier.js as /crier.js?v=HASH: a request carrying the current hash may be cached
// for good, one without it is cached briefly.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed static/index.html static/crier.js static/crier.d.ts
var static embed.FS

// Cache policies.
const (
	cachePage      = "no-cache"                            // revalidate each time: cheap with the ETag
	cacheLibrary   = "public, max-age=300"                 // a new crier.js reaches clients within minutes
	cacheVersioned = "public, max-age=31536000, immutable" // ?v= names these exact bytes
)

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string // quoted
	version     string // the hash that ?v= must carry for cacheVersioned
	cache       string
}

var (
	page    *asset
	library *asset
	types   *asset
)

func init() {
	library = newAsset("static/crier.js", "text/javascript; charset=utf-8", cacheLibrary, nil)
	types = newAsset("static/crier.d.ts", "application/typescript; charset=utf-8", cacheLibrary, nil)
	// The page names the library's current version, so that browsers may cache that for good.
	page = newAsset("static/index.html", "text/html; charset=utf-8", cachePage, func(b []byte) []byte {
		return bytes.Replace(b, []byte(`from './crier.js'`), []byte(`from './crier.js?v=`+library.version+`'`), 1)
	})
}

func newAsset(name, contentType, cache string, rewrite func([]byte) []byte) *asset {
	b, err := static.ReadFile(name)
	if err != nil {
		panic("web: embedded file missing: " + name) // a build without its files is broken
	}
	if rewrite != nil {
		b = rewrite(b)
	}
	sum := sha256.Sum256(b)
	v := hex.EncodeToString(sum[:8])
	return &asset{body: b, contentType: contentType, etag: `"` + v + `"`, version: v, cache: cache}
}

// ServeHTTP answers GET and HEAD with the file, or 304 when If-None-Match names its ETag.
func (a *asset) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if a != page && r.URL.Query().Get("v") == a.version {
		h.Set("Cache-Control", cacheVersioned)
	} else {
		h.Set("Cache-Control", a.cache)
	}
	if a == page {
		// The demo frames nothing and is framed by nothing; the iframe transport's own pages
		// come from /v1/iframe, not from here.
		h.Set("X-Frame-Options", "SAMEORIGIN")
		h.Set("Referrer-Policy", "same-origin")
	}
	// ServeContent handles If-None-Match (304), If-Match, HEAD and Range from the ETag set above.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// Register mounts the demo page and the client library on mux: GET (and HEAD) of "/" exactly,
// "/crier.js" and "/crier.d.ts". Other paths stay unrouted, so they keep the mux owner's 404.
func Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /crier.js", library)
	mux.Handle("GET /crier.d.ts", types)
}

// Handler returns a handler that serves only those three paths, with 404 for anything else.
func Handler() http.Handler {
	mux := http.NewServeMux()
	Register(mux)
	return mux
}

// Version is the hash of the crier.js this binary serves, as in /crier.js?v=VERSION.
func Version() string { return library.version }
