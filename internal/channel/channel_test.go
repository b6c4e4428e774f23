package channel

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"news", true},
		{"chat:lobby", true},
		{"a_b-c.d:e=f~g", true},
		{strings.Repeat("x", 200), true},
		{strings.Repeat("x", 201), false},
		{"", false},
		{"has space", false},
		{"slash/no", false},
		{"at@no", false},
		{"comma,no", false},
		{"ünï", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.name); got != tt.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
		if err := CheckName(tt.name); (err == nil) != tt.ok {
			t.Errorf("CheckName(%q) = %v", tt.name, err)
		}
	}
}

func TestNamespace(t *testing.T) {
	for in, want := range map[string]string{"chat:lobby": "chat", "news": "", "a:b:c": "a", ":x": ""} {
		if got := Namespace(in); got != want {
			t.Errorf("Namespace(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParsePosition(t *testing.T) {
	tests := []struct {
		in   string
		want Position
		ok   bool
	}{
		{"q7Rk2x:42", Position{"q7Rk2x", 42}, true},
		{"e:0", Position{"e", 0}, true},
		{"e:18446744073709551615", Position{"e", 18446744073709551615}, true},
		{"e:18446744073709551616", Position{}, false},
		{"e:01", Position{}, false},
		{"e:-1", Position{}, false},
		{"e:", Position{}, false},
		{":5", Position{}, false},
		{"5", Position{}, false},
		{"a.b:5", Position{}, false},
		{"a:b:5", Position{}, false},
	}
	for _, tt := range tests {
		got, err := ParsePosition(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("round trip %q -> %q", tt.in, got.String())
		}
	}
}

func TestParseCursor(t *testing.T) {
	c, err := ParseCursor("chat:lobby@q7Rk2x:42,news@ab:0")
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 2 || c[0].Channel != "chat:lobby" || c[0].Offset != 42 || c[1].Epoch != "ab" {
		t.Fatalf("got %+v", c)
	}
	if p, ok := c.Lookup("news"); !ok || p.Offset != 0 {
		t.Fatalf("Lookup = %v %v", p, ok)
	}
	if c.String() != "chat:lobby@q7Rk2x:42,news@ab:0" {
		t.Fatalf("String = %q", c.String())
	}
	for _, bad := range []string{"", "news", "news@", "news@e", "a b@e:1", "x@e:1,x@e:2", "x@e:1,", ",x@e:1", "x@e:1@e:2"} {
		if _, err := ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) succeeded", bad)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"news", "chat:lobby", "", "a b", strings.Repeat("z", 201)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ok := ValidName(s)
		if ok != (CheckName(s) == nil) {
			t.Fatalf("ValidName and CheckName disagree on %q", s)
		}
		if ok && (len(s) > MaxNameLen || strings.ContainsAny(s, " /@,\x00")) {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"chat:lobby@q7Rk2x:42,news@ab:0", "x@e:1", "", "@:", "a@b:c:1", "x@e:01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			return
		}
		// A parsed cursor formats back to something that parses to the same cursor.
		again, err := ParseCursor(c.String())
		if err != nil {
			t.Fatalf("reformatted cursor %q does not parse: %v", c.String(), err)
		}
		if again.String() != c.String() {
			t.Fatalf("round trip %q != %q", again.String(), c.String())
		}
		for _, e := range c {
			if !ValidName(e.Channel) {
				t.Fatalf("invalid channel %q accepted", e.Channel)
			}
		}
	})
}

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"q7Rk2x:42", "e:0", ":", "e:01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err == nil && p.String() != s {
			t.Fatalf("round trip %q -> %q", s, p.String())
		}
	})
}
