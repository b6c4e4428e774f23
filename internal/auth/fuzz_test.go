package auth

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/crier-push/crier/internal/channel"
)

// FuzzPattern: compiling and matching never panic; a pattern without wildcards or {sub}
// matches only itself; every match agrees with the plain recursive reference matcher; a
// subject never widens a pattern beyond what the subject-free pattern with that literal
// would match.
func FuzzPattern(f *testing.F) {
	for _, s := range [][3]string{
		{"news", "", "news"}, {"chat:*", "", "chat:a"}, {"chat:**", "", "chat:a:b"}, {"a::b", "", "a::b"},
		{"**:x:**", "", "a:x:b"}, {"user:{sub}", "alice", "user:alice"}, {"user:{sub}", "a:b", "user:a:b"},
		{"{sub}", "*", "x"}, {"a*", "", "a"}, {"*:*", "", ":"}, {"**", "", "a::b"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, pattern, sub, name string) {
		p, err := CompilePattern(pattern, sub)
		if err != nil {
			if p != nil {
				t.Fatal("pattern with an error")
			}
			return
		}
		got := p.Match(name)
		if !channel.ValidName(name) && got {
			t.Fatalf("%q matched invalid name %q", pattern, name)
		}
		hasSub := strings.Contains(pattern, subPlaceholder)
		wild := strings.Contains(pattern, "*")
		if !wild && !hasSub && got != (name == pattern) {
			t.Fatalf("literal %q vs %q: Match = %v", pattern, name, got)
		}
		if hasSub && got {
			// The subject must have been usable, and the name must match the pattern with
			// the subject written in as a literal.
			if !validSubject(sub) {
				t.Fatalf("%q with unusable subject %q matched %q", pattern, sub, name)
			}
			if strings.Count(name, ":") != strings.Count(pattern, ":") && !strings.Contains(pattern, "**") {
				t.Fatalf("subject %q changed the segment count: %q matched %q", sub, pattern, name)
			}
		}
		if channel.ValidName(name) && !hasSub && len(name) <= 64 && strings.Count(pattern, "**") <= 4 {
			if want := matchRef(strings.Split(pattern, ":"), strings.Split(name, ":")); got != want {
				t.Fatalf("%q vs %q: Match = %v, reference %v", pattern, name, got, want)
			}
		}
	})
}

// FuzzExtractToken: any Authorization header, query and cookie: no panic, a token only from
// the documented precedence, never longer than MaxTokenLen, never empty without an error.
func FuzzExtractToken(f *testing.F) {
	f.Add("Bearer abc", "token=q", "c")
	f.Add("Basic x", "token=", "")
	f.Add("bearer", "token=a&token=b", "crier_token=x; a=b")
	f.Add("", "%zz", "\x00")
	f.Fuzz(func(t *testing.T, header, query, cookie string) {
		r := &http.Request{Method: http.MethodGet, Header: http.Header{}, URL: &url.URL{Path: "/", RawQuery: query}}
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		tok, src, err := ExtractToken(r)
		if err != nil {
			if tok != "" {
				t.Fatal("token with an error")
			}
			wantCode(t, err, "invalid_token")
			return
		}
		if len(tok) > MaxTokenLen {
			t.Fatal("oversized token")
		}
		switch src {
		case SourceNone:
			if tok != "" {
				t.Fatal("token without a source")
			}
		case SourceHeader:
			if !strings.Contains(header, tok) {
				t.Fatalf("header token %q not in %q", tok, header)
			}
		case SourceQuery:
			if _, ok := bearer(header); ok {
				t.Fatal("query used over a bearer header")
			}
		case SourceCookie:
			if _, ok := bearer(header); ok || r.URL.Query().Has(QueryParam) {
				t.Fatal("cookie used over a higher source")
			}
		}
		if src != SourceNone && tok == "" {
			t.Fatal("empty token without an error")
		}
	})
}

// FuzzParse: random token strings never panic and never authenticate, whatever keys are
// configured; a valid token with one byte changed never authenticates either.
func FuzzParse(f *testing.F) {
	ec, ed := newEC(f), newEd(f)
	dir := f.TempDir()
	files := []string{
		writePEM(f, dir, "ec.pem", pkixBlock(f, ec.Public())),
		writePEM(f, dir, "ed.pem", pkixBlock(f, ed.Public())),
	}
	a := newAuth(f, Config{JWTSecret: testSecret, PublicKeyFiles: files, APIKeys: []string{"the-api-key"}})
	valid := []string{
		sign(f, jwt.SigningMethodHS256, []byte(testSecret), "", claims("s", []string{"**"}, []string{"a"})),
		sign(f, jwt.SigningMethodES256, ec, "k", claims("s", []string{"**"}, nil)),
		sign(f, jwt.SigningMethodEdDSA, ed, "", claims("s", nil, []string{"**"})),
	}
	for _, v := range valid {
		if _, err := a.AuthenticateToken(context.Background(), v); err != nil {
			f.Fatalf("seed token invalid: %v", err)
		}
		f.Add(v, 0, byte(0))
		f.Add(v, len(v)/2, byte('A'))
	}
	f.Add("", 0, byte(0))
	f.Add("a.b.c", 1, byte('.'))
	f.Add(rawToken(map[string]string{"alg": "none"}, claims("x", []string{"**"}, nil), nil), 0, byte(0))
	f.Fuzz(func(t *testing.T, tok string, pos int, b byte) {
		for _, v := range valid {
			// A valid token with one byte changed. Some changes leave the decoded token
			// intact (base64 of the last, padding bits of a signature), which strict
			// decoding refuses, so every real change must fail.
			if len(v) > 0 {
				i := ((pos % len(v)) + len(v)) % len(v)
				if v[i] != b {
					mutated := v[:i] + string([]byte{b}) + v[i+1:]
					if id, err := a.AuthenticateToken(context.Background(), mutated); err == nil {
						t.Fatalf("mutated token authenticated (byte %d %q→%q): %v", i, v[i], b, id.Subject())
					}
				}
			}
		}
		if tok == "the-api-key" {
			return
		}
		for _, v := range valid {
			if tok == v {
				return
			}
		}
		id, err := a.AuthenticateToken(context.Background(), tok)
		if err == nil {
			t.Fatalf("random token authenticated as %v %q", id.Kind(), id.Subject())
		}
		if st, _, _ := HTTPError(err); st != http.StatusUnauthorized {
			t.Fatalf("status %d for a bad token: %v", st, err)
		}
	})
}
