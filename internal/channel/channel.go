// Package channel holds the names and positions of Crier's contract: channel names and their
// namespaces, epoch:offset positions, and the cursors that carry one position per channel.
// Everything here parses untrusted input, so it is strict, allocation-light and fuzzed.
package channel

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxNameLen is the longest channel name the contract allows.
const MaxNameLen = 200

// ErrInvalidName is returned for a channel name outside ^[A-Za-z0-9_\-.:=~]{1,200}$.
var ErrInvalidName = errors.New("invalid channel name")

// ErrInvalidPosition is returned for a malformed EPOCH:OFFSET.
var ErrInvalidPosition = errors.New("invalid position")

// ErrInvalidCursor is returned for a malformed cursor.
var ErrInvalidCursor = errors.New("invalid cursor")

// nameChars marks the bytes allowed in a channel name.
var nameChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-.:=~" {
		t[c] = true
	}
	return t
}()

// ValidName reports whether s is a valid channel name.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameChars[s[i]] {
			return false
		}
	}
	return true
}

// CheckName returns a descriptive error when s is not a valid channel name.
func CheckName(s string) error {
	if ValidName(s) {
		return nil
	}
	if len(s) == 0 {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, MaxNameLen)
	}
	return fmt.Errorf("%w: %q may only contain A-Z a-z 0-9 _ - . : = ~", ErrInvalidName, truncate(s, 64))
}

// Namespace returns the part of a channel name before its first ':', or "" for the default
// namespace.
func Namespace(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return ""
}

// epochChars marks the bytes an epoch may contain: URL-safe and free of the cursor's separators.
var epochChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['_'], t['-'] = true, true
	return t
}()

// MaxEpochLen bounds epochs so that positions stay small.
const MaxEpochLen = 32

func validEpoch(s string) bool {
	if len(s) == 0 || len(s) > MaxEpochLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !epochChars[s[i]] {
			return false
		}
	}
	return true
}

// Position is EPOCH:OFFSET: "I have everything up to Offset in Epoch".
type Position struct {
	Epoch  string
	Offset uint64
}

// String formats the position as EPOCH:OFFSET.
func (p Position) String() string {
	return p.Epoch + ":" + strconv.FormatUint(p.Offset, 10)
}

// AppendTo appends EPOCH:OFFSET to b.
func (p Position) AppendTo(b []byte) []byte {
	b = append(b, p.Epoch...)
	b = append(b, ':')
	return strconv.AppendUint(b, p.Offset, 10)
}

// ParsePosition parses EPOCH:OFFSET.
func ParsePosition(s string) (Position, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Position{}, fmt.Errorf("%w: %q is not EPOCH:OFFSET", ErrInvalidPosition, truncate(s, 64))
	}
	epoch, off := s[:i], s[i+1:]
	if !validEpoch(epoch) {
		return Position{}, fmt.Errorf("%w: bad epoch %q", ErrInvalidPosition, truncate(epoch, 64))
	}
	n, err := parseOffset(off)
	if err != nil {
		return Position{}, fmt.Errorf("%w: bad offset %q", ErrInvalidPosition, truncate(off, 64))
	}
	return Position{Epoch: epoch, Offset: n}, nil
}

func parseOffset(s string) (uint64, error) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, ErrInvalidPosition
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrInvalidPosition
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// Entry is one channel's position within a cursor.
type Entry struct {
	Channel string
	Position
}

// MaxCursorEntries bounds how many channels one cursor may name.
const MaxCursorEntries = 1000

// Cursor is a set of channel positions: CHANNEL@EPOCH:OFFSET joined by ','.
type Cursor []Entry

// ParseCursor parses a cursor. Each channel may appear once.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidCursor)
	}
	n := strings.Count(s, ",") + 1
	if n > MaxCursorEntries {
		return nil, fmt.Errorf("%w: more than %d channels", ErrInvalidCursor, MaxCursorEntries)
	}
	c := make(Cursor, 0, n)
	for part := range strings.SplitSeq(s, ",") {
		at := strings.IndexByte(part, '@')
		if at < 0 {
			return nil, fmt.Errorf("%w: %q is not CHANNEL@EPOCH:OFFSET", ErrInvalidCursor, truncate(part, 64))
		}
		name := part[:at]
		if !ValidName(name) {
			return nil, fmt.Errorf("%w: %w", ErrInvalidCursor, CheckName(name))
		}
		pos, err := ParsePosition(part[at+1:])
		if err != nil {
			return nil, fmt.Errorf("%w: channel %s: %w", ErrInvalidCursor, name, err)
		}
		for _, e := range c {
			if e.Channel == name {
				return nil, fmt.Errorf("%w: channel %s named twice", ErrInvalidCursor, name)
			}
		}
		c = append(c, Entry{Channel: name, Position: pos})
	}
	return c, nil
}

// String formats the cursor.
func (c Cursor) String() string { return string(c.AppendTo(nil)) }

// AppendTo appends the cursor's text form to b.
func (c Cursor) AppendTo(b []byte) []byte {
	for i, e := range c {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.Channel...)
		b = append(b, '@')
		b = e.Position.AppendTo(b)
	}
	return b
}

// Lookup returns the position of channel name in the cursor.
func (c Cursor) Lookup(name string) (Position, bool) {
	for _, e := range c {
		if e.Channel == name {
			return e.Position, true
		}
	}
	return Position{}, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
