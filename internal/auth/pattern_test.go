package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern, sub string
		match        []string
		noMatch      []string
	}{
		{"news", "", []string{"news"}, []string{"new", "newsx", "news:a", "a:news", "NEWS"}},
		{"chat:lobby", "", []string{"chat:lobby"}, []string{"chat", "chat:lobby:x", "chat:lobb"}},
		{"*", "", []string{"news", "a"}, []string{"chat:x", ""}},
		{"chat:*", "", []string{"chat:a", "chat:lobby"}, []string{"chat", "chat:", "chat:a:b", "chatx:a", "news"}},
		{"*:lobby", "", []string{"chat:lobby", "x:lobby"}, []string{":lobby", "lobby", "a:b:lobby"}},
		{"chat:**", "", []string{"chat:a", "chat:a:b", "chat:a:b:c"}, []string{"chat", "chat:", "chat::a", "chat:a:", "news:a"}},
		{"**", "", []string{"news", "a:b", "a:b:c"}, []string{"a::b", ":", "a:"}},
		{"**:end", "", []string{"a:end", "a:b:end"}, []string{"end", "a:end:x", ":end"}},
		{"a:**:z", "", []string{"a:b:z", "a:b:c:z"}, []string{"a:z", "a:b:c", "b:a:b:z"}},
		{"a:*:*", "", []string{"a:b:c"}, []string{"a:b", "a:b:c:d"}},
		{"**:**", "", []string{"a:b", "a:b:c"}, []string{"a"}},
		{"a:**:b:**", "", []string{"a:x:b:y", "a:b:b:b", "a:x:y:b:z:w"}, []string{"a:b:y", "a:x:b", "a:x:c:y"}},
		{"*:*:*:*:**", "", []string{"a:b:c:d:e", "a:b:c:d:e:f"}, []string{"a:b:c:d"}},
		{"a::b", "", []string{"a::b"}, []string{"a:b", "a:x:b"}},
		{"a:", "", []string{"a:"}, []string{"a", "a:x"}},
		{"user:{sub}", "alice", []string{"user:alice"}, []string{"user:bob", "user:alice:x", "user:{sub}", "user:*"}},
		{"user:{sub}:**", "alice", []string{"user:alice:inbox", "user:alice:a:b"}, []string{"user:alice", "user:bob:inbox"}},
		{"dm-{sub}", "7", []string{"dm-7"}, []string{"dm-", "dm-77"}},
		{"{sub}.{sub}", "x", []string{"x.x"}, []string{"x.y"}},
		{"{sub}", "news", []string{"news"}, []string{"news:x"}},
		{"x.=~-_:Y", "", []string{"x.=~-_:Y"}, []string{"x.=~-_:y"}},
	}
	for _, tt := range tests {
		p, err := CompilePattern(tt.pattern, tt.sub)
		if err != nil {
			t.Fatalf("CompilePattern(%q): %v", tt.pattern, err)
		}
		if p.String() != tt.pattern {
			t.Errorf("String() = %q", p.String())
		}
		for _, ch := range tt.match {
			if !p.Match(ch) {
				t.Errorf("%q (sub %q) does not match %q", tt.pattern, tt.sub, ch)
			}
		}
		for _, ch := range tt.noMatch {
			if p.Match(ch) {
				t.Errorf("%q (sub %q) matches %q", tt.pattern, tt.sub, ch)
			}
		}
	}
}

func TestPatternSyntax(t *testing.T) {
	bad := []string{
		"", "a*", "*a", "***", "a:b*:c", "{user}", "{sub", "sub}", "a{", "{}", "a b", "a/b", "a@b",
		"é", "a,b", "a\x00", "{SUB}", strings.Repeat("a", MaxPatternLen+1),
	}
	for _, p := range bad {
		if _, err := CompilePattern(p, "alice"); !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("CompilePattern(%q) = %v, want ErrInvalidPattern", p, err)
		}
		if ValidatePattern(p) == nil {
			t.Errorf("ValidatePattern(%q) = nil", p)
		}
	}
	good := []string{"a", "*", "**", "a:*:**", "{sub}", "a:{sub}x{sub}:*", ":", "::", strings.Repeat("a", MaxPatternLen)}
	for _, p := range good {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v", p, err)
		}
	}
}

// TestSubInjection: a subject can only ever be literal text inside one segment.
func TestSubInjection(t *testing.T) {
	victims := []string{"user:bob", "user:bob:inbox", "user:x", "user:x:y", "user:a:b", "user:*", "user", "user:", "news", "a:b:c"}
	subjects := []string{
		"", ":", "x:y", "a:b", "bob:inbox", "*", "**", "x:*", "x:**", "*:*", "{sub}", "a b", "a/b", "bob\x00",
		"bob\n", "../bob", "%2A", "bob,user:x", "bob@e:1", "é", strings.Repeat("a", 300),
	}
	patterns := []string{"user:{sub}", "user:{sub}:**", "{sub}", "user:x{sub}", "{sub}:inbox"}
	for _, sub := range subjects {
		for _, ps := range patterns {
			p, err := CompilePattern(ps, sub)
			if err != nil {
				t.Fatalf("CompilePattern(%q, %q): %v", ps, sub, err)
			}
			for _, ch := range victims {
				if p.Match(ch) {
					t.Errorf("pattern %q with subject %q matches %q", ps, sub, ch)
				}
			}
		}
	}
	// A benign subject matches its own channels only.
	p, _ := CompilePattern("user:{sub}:**", "bob")
	if !p.Match("user:bob:inbox") || p.Match("user:bobby:inbox") {
		t.Error("plain subject")
	}
	// A long subject whose channel would exceed 200 bytes matches nothing rather than panicking.
	long := strings.Repeat("a", 199)
	p, _ = CompilePattern("u:{sub}", long)
	if p.Match("u:" + long) {
		t.Error("matched a name longer than a channel")
	}
}

func TestPatternSet(t *testing.T) {
	set, err := compileSet([]string{"a", "user:{sub}", "b:*"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 2 { // the {sub} pattern is dropped: it can match nothing
		t.Errorf("len = %d", len(set))
	}
	if !set.match("b:c") || set.match("user:") || set.match("c") {
		t.Error("set matching")
	}
	if _, err := compileSet(make([]string, MaxPatterns+1), "x"); err == nil {
		t.Error("too many patterns accepted")
	}
	var nilP *Pattern
	if nilP.Match("a") {
		t.Error("nil pattern matched")
	}
}

// matchRef is a plain recursive matcher of the documented semantics, for cross-checks.
func matchRef(pat, name []string) bool {
	if len(pat) == 0 {
		return len(name) == 0
	}
	switch pat[0] {
	case "*":
		return len(name) > 0 && name[0] != "" && matchRef(pat[1:], name[1:])
	case "**":
		for i := 1; i <= len(name); i++ {
			if name[i-1] == "" {
				return false
			}
			if matchRef(pat[1:], name[i:]) {
				return true
			}
		}
		return false
	default:
		return len(name) > 0 && name[0] == pat[0] && matchRef(pat[1:], name[1:])
	}
}

func BenchmarkMatch(b *testing.B) {
	p, _ := CompilePattern("a:**:b:*:**", "")
	ch := "a:x:y:z:b:c:d:e"
	for b.Loop() {
		if !p.Match(ch) {
			b.Fatal("no match")
		}
	}
}
