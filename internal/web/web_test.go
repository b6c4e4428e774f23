package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func serve(t *testing.T, h http.Handler, method, target string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestContentTypes(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		path, contentType, contains, cache string
	}{
		{"/", "text/html; charset=utf-8", "<title>Crier", "no-cache"},
		{"/crier.js", "text/javascript; charset=utf-8", "export class Crier", "public, max-age=300"},
		{"/crier.d.ts", "application/typescript; charset=utf-8", "export declare class Crier", "public, max-age=300"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res := serve(t, h, "GET", tc.path)
			if res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			if got := res.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if got := res.Header.Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			etag := res.Header.Get("ETag")
			if len(etag) < 10 || etag[0] != '"' || etag[len(etag)-1] != '"' {
				t.Errorf("ETag %q is not a strong quoted tag", etag)
			}
			b := body(t, res)
			if !strings.Contains(b, tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			if got := res.Header.Get("Content-Length"); got == "" {
				t.Error("no Content-Length")
			}
		})
	}
}

func TestETagAnd304(t *testing.T) {
	h := Handler()
	for _, path := range []string{"/", "/crier.js", "/crier.d.ts"} {
		res := serve(t, h, "GET", path)
		etag := res.Header.Get("ETag")
		if again := serve(t, h, "GET", path).Header.Get("ETag"); again != etag {
			t.Fatalf("%s: ETag changed between requests: %q, %q", path, etag, again)
		}
		res = serve(t, h, "GET", path, "If-None-Match", etag)
		if res.StatusCode != http.StatusNotModified {
			t.Fatalf("%s with If-None-Match %s: status %d, want 304", path, etag, res.StatusCode)
		}
		if b := body(t, res); b != "" {
			t.Errorf("%s: 304 with a body: %q", path, b)
		}
		if res.Header.Get("ETag") != etag {
			t.Errorf("%s: 304 without the ETag", path)
		}
		res = serve(t, h, "GET", path, "If-None-Match", `"other", `+etag)
		if res.StatusCode != http.StatusNotModified {
			t.Errorf("%s: a list holding the ETag: status %d, want 304", path, res.StatusCode)
		}
		res = serve(t, h, "GET", path, "If-None-Match", `"stale"`)
		if res.StatusCode != 200 {
			t.Errorf("%s with a stale ETag: status %d, want 200", path, res.StatusCode)
		}
	}
	// Files differ, so do their tags.
	a := serve(t, h, "GET", "/").Header.Get("ETag")
	b := serve(t, h, "GET", "/crier.js").Header.Get("ETag")
	if a == b {
		t.Errorf("page and library share the ETag %s", a)
	}
}

func TestHead(t *testing.T) {
	res := serve(t, Handler(), "HEAD", "/crier.js")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("HEAD: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if b := body(t, res); b != "" {
		t.Errorf("HEAD with a body of %d bytes", len(b))
	}
}

func TestOnlyTheRoot(t *testing.T) {
	h := Handler()
	for _, path := range []string{"/index.html", "/nope", "/v1/anything", "/crier.js/x", "/static/crier.js", "/crier"} {
		if res := serve(t, h, "GET", path); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, res.StatusCode)
		}
	}
	if res := serve(t, h, "POST", "/"); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", res.StatusCode)
	}
	// On a mux that already has routes of its own, / takes nothing from them.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	Register(mux)
	if b := body(t, serve(t, mux, "GET", "/healthz")); b != "ok" {
		t.Errorf("/healthz: %q", b)
	}
	if res := serve(t, mux, "GET", "/unknown"); res.StatusCode != http.StatusNotFound {
		t.Errorf("/unknown beside Register: %d", res.StatusCode)
	}
	if _, pattern := mux.Handler(httptest.NewRequest("GET", "/unknown", nil)); pattern != "" {
		t.Errorf("/unknown matched the pattern %q; unrouted paths must stay unmatched", pattern)
	}
}

func TestVersionedLibrary(t *testing.T) {
	h := Handler()
	page := body(t, serve(t, h, "GET", "/"))
	want := "from './crier.js?v=" + Version() + "'"
	if !strings.Contains(page, want) {
		t.Fatalf("the page does not import %s", want)
	}
	res := serve(t, h, "GET", "/crier.js?v="+Version())
	if got := res.Header.Get("Cache-Control"); got != cacheVersioned {
		t.Errorf("versioned crier.js: Cache-Control %q", got)
	}
	res = serve(t, h, "GET", "/crier.js?v=old")
	if got := res.Header.Get("Cache-Control"); got != cacheLibrary {
		t.Errorf("crier.js of another version: Cache-Control %q", got)
	}
	// The versioned URL names the very bytes of the unversioned one.
	if body(t, res) != body(t, serve(t, h, "GET", "/crier.js")) {
		t.Error("?v= changed the body")
	}
}

// The page must stay self-contained: no asset from anywhere else.
func TestPageSelfContained(t *testing.T) {
	page := body(t, serve(t, Handler(), "GET", "/"))
	for _, bad := range []string{"http://", "https://", "//cdn", "<link rel=\"stylesheet\"", "<script src="} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q", bad)
		}
	}
	for _, want := range []string{"import {Crier} from './crier.js", "v1/multipart?channel=", "demo:camera", "prefers-color-scheme: dark"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}
