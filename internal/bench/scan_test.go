//go:build linux

package bench

import (
	"bytes"
	"fmt"
	"math"
	"testing"
)

func TestScanEnvelope(t *testing.T) {
	tests := []struct {
		name    string
		env     string
		channel string
		t       int64
		s       uint64
		ok      bool
	}{
		{
			name:    "crier envelope",
			env:     `{"channel":"bench.ab.3","offset":42,"epoch":"q7","time":"2026-11-23T08:00:00.123Z","event":"message","data":{"t":1763884800123456789,"s":42,"p":"xx"},"cursor":"bench.ab.3@q7:42"}`,
			channel: "bench.ab.3",
			t:       1763884800123456789,
			s:       42,
			ok:      true,
		},
		{
			name:    "data first, spaces, no padding",
			env:     `{"data": {"t":5,"s":7}, "channel": "c.0"}`,
			channel: "c.0",
			t:       5,
			s:       7,
			ok:      true,
		},
		{
			name: "server event",
			env:  `{"channel":"c.0","offset":3,"event":"crier.gap","data":{"reason":"x"},"cursor":"c.0@e:3"}`,
		},
		{
			name: "text payload",
			env:  `{"channel":"c.0","data":"{\"t\":1,\"s\":2}"}`,
		},
		{
			name: "command reply",
			env:  `{"id":1,"ok":true,"channel":"c.0"}`,
		},
		{
			name: "t overflows int64",
			env:  `{"channel":"c.0","data":{"t":9999999999999999999,"s":1}}`,
		},
		{
			name: "too many digits",
			env:  `{"channel":"c.0","data":{"t":1,"s":12345678901234567890}}`,
		},
		{
			name: "truncated",
			env:  `{"channel":"c.0","data":{"t":1,"s":2`,
		},
		{
			name: "unterminated channel",
			env:  `{"channel":"c.0`,
		},
	}
	for _, tt := range tests {
		ch, ts, s, ok := scanEnvelope([]byte(tt.env))
		if ok != tt.ok || (ok && (string(ch) != tt.channel || ts != tt.t || s != tt.s)) {
			t.Errorf(
				"%s: got %q %d %d %v, want %q %d %d %v",
				tt.name, ch, ts, s, ok, tt.channel, tt.t, tt.s, tt.ok)
		}
	}
}

func TestChannelIndex(t *testing.T) {
	for _, tt := range []struct {
		name string
		want int
	}{
		{
			name: "p.0",
			want: 0,
		},
		{
			name: "p.9",
			want: 9,
		},
		{
			name: "p.10",
			want: -1,
		},
		{
			name: "p.01",
			want: -1,
		},
		{
			name: "p.",
			want: -1,
		},
		{
			name: "q.1",
			want: -1,
		},
		{
			name: "p.1x",
			want: -1,
		},
	} {
		if got := channelIndex([]byte(tt.name), []byte("p."), 10); got != tt.want {
			t.Errorf(
				"channelIndex(%q) = %d, want %d",
				tt.name, got, tt.want)
		}
	}
}

func TestAppendPayload(t *testing.T) {
	for _, size := range []int{0, 10, 40, 47, 48, 64, 1000, 70000} {
		p := appendPayload(nil, 1763884800123456789, 123, size)
		if size >= 48 && len(p) != size {
			t.Errorf(
				"size %d: payload of %d bytes",
				size, len(p))
		}
		env := fmt.Appendf(nil, `{"channel":"c.0","data":%s}`, p)
		if _, ts, s, ok := scanEnvelope(env); !ok || ts != 1763884800123456789 || s != 123 {
			t.Errorf(
				"size %d: %s scans as %d %d %v",
				size, p, ts, s, ok)
		}
	}
}

func FuzzScanEnvelope(f *testing.F) {
	f.Add([]byte(`{"channel":"c.0","offset":1,"data":{"t":1763884800123456789,"s":1},"cursor":"c.0@e:1"}`), int64(5), uint64(9))
	f.Add([]byte(`{"channel": "c.0", "data": {"t":1,"s":2,"p":"x"}}`), int64(0), uint64(0))
	f.Add([]byte(`{"channel":"`), int64(math.MaxInt64), uint64(math.MaxUint64))
	f.Add([]byte(`"data":{"t":`), int64(-1), uint64(1))
	f.Fuzz(func(t *testing.T, env []byte, ts int64, s uint64) {
		// Arbitrary bytes: no panic, and what is found lies in env.
		ch, _, _, ok := scanEnvelope(env)
		if ok && !bytes.Contains(env, ch) {
			t.Fatalf(
				"channel %q not in %q",
				ch, env)
		}
		// A well-formed envelope around a bench payload: found exactly,
		// whatever the surrounding bytes (quote-free, as Crier's are).
		if ts < 0 || s > 1e19-1 {
			return
		}
		filler := bytes.Map(func(r rune) rune {
			if r == '"' || r == '\\' {
				return '_'
			}
			return r
		}, env)
		e := fmt.Appendf(nil, `{"channel":"c.%d","epoch":"%s","data":%s,"cursor":"%s"}`,
			s%1000, filler, appendPayload(nil, ts, s, int(s%100)), filler)
		ch, gt, gs, ok := scanEnvelope(e)
		if !ok || gt != ts || gs != s || string(ch) != fmt.Sprintf("c.%d", s%1000) {
			t.Fatalf(
				"%s: got %q %d %d %v",
				e, ch, gt, gs, ok)
		}
	})
}
