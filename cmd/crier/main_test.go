package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args []string
		rest []string
		x    string
	}{
		{[]string{"a", "-x", "1", "b"}, []string{"a", "b"}, "1"},
		{[]string{"--x=2", "a"}, []string{"a"}, "2"},
		{[]string{"a", "--", "-x", "b"}, []string{"a", "-x", "b"}, ""},
		{nil, nil, ""},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		x := fs.String("x", "", "")
		rest, err := parseArgs(fs, tt.args)
		if err != nil || !slices.Equal(rest, tt.rest) || *x != tt.x {
			t.Errorf("parseArgs(%q) = %q, x=%q, %v", tt.args, rest, *x, err)
		}
	}
}

// runCmd runs a command line against srv and returns the exit status, stdout and stderr.
func runCmd(t *testing.T, srv *httptest.Server, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	getenv := func(k string) string {
		if k == "CRIER_SERVER" {
			return srv.URL
		}
		return ""
	}
	code := run(context.Background(), args, env{strings.NewReader(stdin), &stdout, &stderr, getenv})
	return code, stdout.String(), stderr.String()
}

func TestPub(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/channels/bad" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":{"code":"forbidden","message":"no publish on bad"}}`)
			return
		}
		if string(body) != "from stdin\n" || r.URL.Query().Get("event") != "e" || r.Header.Get("Authorization") != "Bearer t" {
			t.Errorf("request %s %q %q", r.URL, body, r.Header.Get("Authorization"))
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"channel":"news","offset":1,"epoch":"e","cursor":"news@e:1"}`)
	}))
	defer srv.Close()

	code, out, _ := runCmd(t, srv, "from stdin\n", "pub", "news", "--event", "e", "--token", "t")
	if code != 0 || out != `{"channel":"news","offset":1,"epoch":"e","cursor":"news@e:1"}`+"\n" {
		t.Errorf("pub = %d %q", code, out)
	}
	code, _, errOut := runCmd(t, srv, "", "pub", "bad", "x")
	if code != 1 || !strings.Contains(errOut, "no publish on bad") {
		t.Errorf("pub refused = %d %q", code, errOut)
	}
	if code, _, _ := runCmd(t, srv, "", "pub"); code != 2 {
		t.Errorf("pub without channel = %d, want 2", code)
	}
}

func TestSub(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.URL.Query().Get("cursor"); got != "news@e:4" {
			t.Errorf("cursor = %q", got)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: news@e:5\ndata: {\"channel\":\"news\",\ndata: \"offset\":5,\"epoch\":\"e\",\"cursor\":\"news@e:5\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	code, out, errOut := runCmd(t, srv, "", "sub", "news", "--since", "e:4", "--count", "1")
	if code != 0 || out != `{"channel":"news","offset":5,"epoch":"e","cursor":"news@e:5"}`+"\n" {
		t.Errorf("sub = %d %q %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "--cursor 'news@e:5'") {
		t.Errorf("stderr lacks the resume hint: %q", errOut)
	}
	if code, _, _ := runCmd(t, srv, "", "sub", "a", "b", "--since", "e:1"); code != 2 {
		t.Errorf("--since with two channels = %d, want 2", code)
	}
}

func TestVersionAndUnknown(t *testing.T) {
	if code, out, _ := runCmd(t, nil, "", "version"); code != 0 || !strings.HasPrefix(out, "crier ") {
		t.Errorf("version = %d %q", code, out)
	}
	if code, _, errOut := runCmd(t, nil, "", "nope"); code != 2 || !strings.Contains(errOut, `unknown command "nope"`) {
		t.Errorf("unknown = %d %q", code, errOut)
	}
	if code, _, errOut := runCmd(t, nil, "", "--listen", "0.0.0.0:1"); code != 1 || !strings.Contains(errOut, "--insecure") {
		t.Errorf("open listen = %d %q", code, errOut)
	}
}
