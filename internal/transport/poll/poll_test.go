package poll

import (
	"strings"
	"testing"
	"time"
)

func TestParseWait(t *testing.T) {
	tests := []struct {
		in   []string
		want time.Duration
		ok   bool
	}{
		{nil, DefaultWait, true},
		{[]string{"0"}, 0, true},
		{[]string{"00"}, 0, true},
		{[]string{"7"}, 7 * time.Second, true},
		{[]string{"60"}, 60 * time.Second, true},
		{[]string{"61"}, 0, false},
		{[]string{"99"}, 0, false},
		{[]string{"100"}, 0, false},
		{[]string{""}, 0, false},
		{[]string{"-1"}, 0, false},
		{[]string{"+1"}, 0, false},
		{[]string{"1.5"}, 0, false},
		{[]string{"1s"}, 0, false},
		{[]string{" 1"}, 0, false},
		{[]string{"1", "2"}, 0, false},
	}
	for _, tt := range tests {
		got, err := ParseWait(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseWait(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func FuzzParseWait(f *testing.F) {
	for _, s := range []string{"", "0", "30", "60", "61", "-1", "1.5", "9999999999999999999999", "٣", "1e1", "0x1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseWait([]string{s})
		if err != nil {
			if d != 0 {
				t.Fatalf("ParseWait(%q) = %v with error %v", s, d, err)
			}
			return
		}
		if d < 0 || d > MaxWait*time.Second || d%time.Second != 0 {
			t.Fatalf("ParseWait(%q) = %v", s, d)
		}
		if strings.Trim(s, "0123456789") != "" || len(s) == 0 || len(s) > 2 {
			t.Fatalf("ParseWait accepted %q", s)
		}
	})
}

func TestNoneMatch(t *testing.T) {
	const cur = "a@e:1,b@f:2"
	tests := []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{`"a@e:1,b@f:2"`}, true},
		{[]string{`W/"a@e:1,b@f:2"`}, true},
		{[]string{`"x", "a@e:1,b@f:2"`}, true},
		{[]string{`"x"`, `"a@e:1,b@f:2"`}, true},
		{[]string{`*`}, true},
		{[]string{`"a@e:1"`}, false},
		{[]string{`a@e:1,b@f:2`}, false},
		{[]string{`"a@e:1,b@f:2`}, false},
		{[]string{`"x" junk, "a@e:1,b@f:2"`}, false},
		{[]string{``, ` , `}, false},
	}
	for _, tt := range tests {
		if got := NoneMatch(tt.values, cur); got != tt.want {
			t.Errorf("NoneMatch(%q) = %v", tt.values, got)
		}
	}
}

// FuzzNoneMatch: NoneMatch never panics, and matches only a list naming the tag, quoted, or "*".
func FuzzNoneMatch(f *testing.F) {
	for _, s := range []string{`"a@e:1"`, `W/"a@e:1"`, `*`, `"x", "a@e:1"`, `"`, `W/`, `,,,`, `"a@e:1`, ` "a@e:1" `} {
		f.Add(s, "a@e:1")
	}
	f.Fuzz(func(t *testing.T, v, tag string) {
		if NoneMatch([]string{v}, tag) && !strings.Contains(v, "*") && !strings.Contains(v, `"`+tag+`"`) {
			t.Fatalf("NoneMatch(%q, %q) = true", v, tag)
		}
	})
}
