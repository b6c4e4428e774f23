package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/crier-push/crier/internal/channel"
)

// MaxPatternLen bounds one pattern as written in a token, before {sub} is replaced.
const MaxPatternLen = 512

// MaxPatterns bounds how many patterns one token may carry in each of its lists.
const MaxPatterns = 256

// subPlaceholder is replaced by the token's subject.
const subPlaceholder = "{sub}"

// ErrInvalidPattern is returned for a pattern that breaks the syntax of the package doc.
var ErrInvalidPattern = errors.New("invalid channel pattern")

type elemKind uint8

const (
	elemLiteral elemKind = iota // a segment equal to lit
	elemOne                     // *: exactly one non-empty segment
	elemMany                    // **: one or more non-empty segments
)

type elem struct {
	kind elemKind
	lit  string
}

// Pattern is a compiled channel pattern: a pattern whose {sub} has been replaced by one subject.
// It is immutable and safe for concurrent use.
type Pattern struct {
	src   string // as written
	exact bool   // no wildcard: matches lit only
	never bool   // matches nothing ({sub} with an unusable subject)
	lit   string
	elems []elem
}

// String returns the pattern as written, with {sub} not replaced.
func (p *Pattern) String() string { return p.src }

// ValidatePattern checks a pattern's syntax without a subject.
func ValidatePattern(pattern string) error {
	_, err := CompilePattern(pattern, "x")
	return err
}

// CompilePattern compiles pattern for a token whose subject is subject. A syntax error is an
// error whatever the subject; a {sub} whose subject could not stand inside one segment of a
// channel name (empty, containing ':' or any byte not allowed in a channel name) gives a
// Pattern that matches nothing.
func CompilePattern(pattern, subject string) (*Pattern, error) {
	if pattern == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidPattern)
	}
	if len(pattern) > MaxPatternLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidPattern, MaxPatternLen)
	}
	p := &Pattern{src: pattern, exact: true}
	subOK := validSubject(subject)
	var lits []string // the literal form of each segment, for the exact case
	for seg := range strings.SplitSeq(pattern, ":") {
		switch seg {
		case "*":
			p.exact = false
			p.elems = append(p.elems, elem{kind: elemOne})
			continue
		case "**":
			p.exact = false
			p.elems = append(p.elems, elem{kind: elemMany})
			continue
		}
		lit, hasSub, err := literalSegment(seg)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrInvalidPattern, truncate(pattern, 64), err)
		}
		if hasSub {
			if !subOK {
				p.never = true
			}
			lit = strings.ReplaceAll(lit, subPlaceholder, subject)
		}
		lits = append(lits, lit)
		p.elems = append(p.elems, elem{kind: elemLiteral, lit: lit})
	}
	if p.never {
		p.elems = nil
		return p, nil
	}
	if p.exact {
		p.lit = strings.Join(lits, ":")
		p.elems = nil
		if !channel.ValidName(p.lit) { // e.g. longer than a channel name may be
			p.never = true
		}
	}
	return p, nil
}

// literalSegment checks a segment that is not a wildcard: channel-name bytes and {sub}
// placeholders only. It returns the segment unchanged and whether it holds a placeholder.
func literalSegment(seg string) (string, bool, error) {
	hasSub := false
	for i := 0; i < len(seg); {
		c := seg[i]
		switch {
		case c == '{':
			if !strings.HasPrefix(seg[i:], subPlaceholder) {
				return "", false, errors.New("'{' starts no {sub}")
			}
			hasSub = true
			i += len(subPlaceholder)
			continue
		case c == '*':
			return "", false, errors.New("'*' and '**' must be a whole segment")
		case !channel.ValidName(seg[i : i+1]):
			return "", false, fmt.Errorf("byte %q is not allowed in a channel name", c)
		}
		i++
	}
	return seg, hasSub, nil
}

// validSubject reports whether a subject can replace {sub} inside one segment: a non-empty
// channel name without ':'.
func validSubject(s string) bool {
	return s != "" && !strings.Contains(s, ":") && channel.ValidName(s)
}

// Match reports whether the channel name matches the pattern. A name that is not a valid
// channel name matches nothing.
func (p *Pattern) Match(name string) bool {
	if p == nil || p.never || !channel.ValidName(name) {
		return false
	}
	if p.exact {
		return name == p.lit
	}
	// Segment boundaries: segment j is name[start[j]:start[j+1]-1]. A valid name has at most
	// MaxNameLen ':' so at most MaxNameLen+1 segments.
	var start [channel.MaxNameLen + 2]int
	n := 0
	for i := 0; i < len(name); i++ {
		if name[i] == ':' {
			n++
			start[n] = i + 1
		}
	}
	n++
	start[n] = len(name) + 1
	seg := func(j int) string { return name[start[j] : start[j+1]-1] }

	// reach[j]: the elements so far can consume exactly segments 0..j-1. One pass per element
	// keeps matching O(segments × elements), whatever the number of '**'.
	var reach, next [channel.MaxNameLen + 2]bool
	reach[0] = true
	for _, e := range p.elems {
		next = [channel.MaxNameLen + 2]bool{}
		ok := false
		switch e.kind {
		case elemLiteral:
			for j := 0; j < n; j++ {
				if reach[j] && seg(j) == e.lit {
					next[j+1], ok = true, true
				}
			}
		case elemOne:
			for j := 0; j < n; j++ {
				if reach[j] && seg(j) != "" {
					next[j+1], ok = true, true
				}
			}
		case elemMany:
			run := false
			for j := 0; j < n; j++ {
				run = (run || reach[j]) && seg(j) != ""
				if run {
					next[j+1], ok = true, true
				}
			}
		}
		if !ok {
			return false
		}
		reach = next
	}
	return reach[n]
}

// patternSet is one list of a token's compiled patterns.
type patternSet []*Pattern

func compileSet(patterns []string, subject string) (patternSet, error) {
	if len(patterns) > MaxPatterns {
		return nil, fmt.Errorf("%w: more than %d patterns", ErrInvalidPattern, MaxPatterns)
	}
	set := make(patternSet, 0, len(patterns))
	for _, s := range patterns {
		p, err := CompilePattern(s, subject)
		if err != nil {
			return nil, err
		}
		if !p.never {
			set = append(set, p)
		}
	}
	return set, nil
}

func (s patternSet) match(name string) bool {
	for _, p := range s {
		if p.Match(name) {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
