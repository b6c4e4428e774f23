package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestExtractToken(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		query   string
		cookie  string
		tok     string
		src     Source
		wantErr bool
	}{
		{"nothing", "", "", "", "", SourceNone, false},
		{"header", "Bearer h", "", "", "h", SourceHeader, false},
		{"header scheme case", "BEARER h", "", "", "h", SourceHeader, false},
		{"header extra spaces", "Bearer   h  ", "", "", "h", SourceHeader, false},
		{"header tab", "Bearer\th", "", "", "h", SourceHeader, false},
		{"query", "", "token=q", "", "q", SourceQuery, false},
		{"query first value", "", "token=q1&token=q2", "", "q1", SourceQuery, false},
		{"cookie", "", "", "c", "c", SourceCookie, false},
		{"header over query and cookie", "Bearer h", "token=q", "c", "h", SourceHeader, false},
		{"query over cookie", "", "token=q", "c", "q", SourceQuery, false},
		{"basic header ignored", "Basic dXNlcjpwYXNz", "token=q", "", "q", SourceQuery, false},
		{"basic header alone", "Basic dXNlcjpwYXNz", "", "", "", SourceNone, false},
		{"bearerish scheme ignored", "Bearerx h", "", "c", "c", SourceCookie, false},
		{"empty bearer", "Bearer ", "token=q", "", "", SourceHeader, true},
		{"bare bearer", "Bearer", "", "", "", SourceHeader, true},
		{"empty query", "", "token=", "c", "", SourceQuery, true},
		{"oversized", "Bearer " + strings.Repeat("a", MaxTokenLen+1), "", "", "", SourceHeader, true},
		{"max size", "Bearer " + strings.Repeat("a", MaxTokenLen), "", "", strings.Repeat("a", MaxTokenLen), SourceHeader, false},
		{"query escaped", "", "token=a%2Eb", "", "a.b", SourceQuery, false},
		{"other params", "", "channel=x&tokens=y", "", "", SourceNone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/sse?"+tt.query, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if tt.cookie != "" {
				r.AddCookie(&http.Cookie{Name: CookieName, Value: tt.cookie})
				r.AddCookie(&http.Cookie{Name: "other", Value: "x"})
			}
			tok, src, err := ExtractToken(r)
			if (err != nil) != tt.wantErr || tok != tt.tok || src != tt.src {
				t.Fatalf("ExtractToken = %q, %v, %v; want %q, %v, error %v", tok, src, err, tt.tok, tt.src, tt.wantErr)
			}
			if err != nil {
				wantCode(t, err, "invalid_token")
			}
		})
	}
}

func TestSourceString(t *testing.T) {
	for s, want := range map[Source]string{SourceNone: "none", SourceHeader: "header", SourceQuery: "query", SourceCookie: "cookie", SourceDirect: "direct", 99: "none"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q", s, s.String())
		}
	}
	for k, want := range map[Kind]string{KindOpen: "open", KindAnonymous: "anonymous", KindToken: "token", KindAPIKey: "api_key", 99: "unknown"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q", k, k.String())
		}
	}
}

// TestAuthenticatePrecedence: the header's token wins even when the query's is better, and a
// bad token in the winning source is not rescued by a good one elsewhere.
func TestAuthenticatePrecedence(t *testing.T) {
	a := newAuth(t, Config{JWTSecret: testSecret})
	good := sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("good", []string{"x"}, nil))
	r := httptest.NewRequest(http.MethodGet, "/?token="+good, nil)
	r.Header.Set("Authorization", "Bearer bad")
	if _, err := a.Authenticate(r); err == nil {
		t.Fatal("a bad header token was rescued by the query")
	}
	r = httptest.NewRequest(http.MethodGet, "/?token="+good, nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: "bad"})
	id, err := a.Authenticate(r)
	if err != nil || id.Subject() != "good" || id.Source() != SourceQuery {
		t.Fatalf("query over cookie: %v %v", id, err)
	}
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: good})
	id, err = a.Authenticate(r)
	if err != nil || id.Source() != SourceCookie {
		t.Fatalf("cookie: %v", err)
	}
	if _, err := a.AuthenticateToken(t.Context(), ""); err == nil {
		t.Fatal("empty token accepted")
	}
}
