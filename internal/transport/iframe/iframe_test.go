package iframe

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// callbackRE is the contract of CallbackOK.
var callbackRE = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,3}$`)

var callbackSeeds = []string{"", "a", "$", "_x", "a.b", "a.b.c.d", "a.b.c.d.e", "1a", "a.1", "a..b", ".a", "a.",
	"onMessage", "parent.x", "a-b", "a b", "alert(1)", "a;b", "é", "a\x00", strings.Repeat("a", 64),
	strings.Repeat("a", 65), strings.Repeat("a.", 4) + "b", "a." + strings.Repeat("b", 64), "a." + strings.Repeat("b", 65)}

func TestCallbackOK(t *testing.T) {
	for _, s := range callbackSeeds {
		if got, want := CallbackOK(s), callbackRE.MatchString(s); got != want {
			t.Errorf("CallbackOK(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzCallbackName(f *testing.F) {
	for _, s := range callbackSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := CallbackOK(s), callbackRE.MatchString(s); got != want {
			t.Fatalf("CallbackOK(%q) = %v, the regexp says %v", s, got, want)
		}
	})
}

func TestAppendScriptSafe(t *testing.T) {
	in := `{"a":"</script><!--&>","b":"` + "\u2028\u2029\u2027" + `"}`
	want := `{"a":"\u003c/script\u003e\u003c!--\u0026\u003e","b":"\u2028\u2029` + "\u2027" + `"}`
	if got := string(AppendScriptSafe([]byte("x"), []byte(in))); got != "x"+want {
		t.Fatalf("got %s", got)
	}
}

// FuzzScriptSafe: whatever JSON goes in, what comes out has none of the characters that could
// end a script element or a JavaScript line, and is the same JSON value.
func FuzzScriptSafe(f *testing.F) {
	for _, s := range []string{`{}`, `"</script>"`, `["&amp;", "<!--"]`, "\"\u2028\"", `{"a":1}`, `"\u003c"`, "\"\xe2\x80\"", `""`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		out := AppendScriptSafe(nil, js)
		if bytes.ContainsAny(out, "<>&") || bytes.Contains(out, []byte("\u2028")) || bytes.Contains(out, []byte("\u2029")) {
			t.Fatalf("%q escaped as %q", js, out)
		}
		if !json.Valid(js) || !utf8.Valid(js) {
			return
		}
		var a, b any
		_ = json.Unmarshal(js, &a)
		if err := json.Unmarshal(out, &b); err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("%q escaped as %q: another value (%v)", js, out, err)
		}
	})
}
