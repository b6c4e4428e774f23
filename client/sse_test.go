package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// parseAll returns every event of in and the error that ended the stream.
func parseAll(r io.Reader, max int) ([]sseEvent, time.Duration, error) {
	p := newSSEParser(r, max)
	var evs []sseEvent
	for {
		ev, err := p.Next()
		if err != nil {
			return evs, p.retry, err
		}
		evs = append(evs, ev)
	}
}

func TestSSEParser(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  []sseEvent
		retry time.Duration
		err   error
	}{
		{name: "simple", in: "data: hi\n\n", want: []sseEvent{{Data: []byte("hi")}}},
		{name: "crlf", in: "id: c1\r\nevent: message\r\ndata: {}\r\n\r\n",
			want: []sseEvent{{Type: "message", Data: []byte("{}"), ID: "c1", HasID: true}}},
		{name: "cr only", in: "data: a\rdata: b\r\rdata: c\r\r",
			want: []sseEvent{{Data: []byte("a\nb")}, {Data: []byte("c")}}},
		{name: "mixed endings", in: "data:x\r\n\ndata:y\n\r\n",
			want: []sseEvent{{Data: []byte("x")}, {Data: []byte("y")}}},
		{name: "multi-line data", in: "data: {\"a\":\ndata: 1}\n\n", want: []sseEvent{{Data: []byte("{\"a\":\n1}")}}},
		{name: "no space, two spaces", in: "data:a\ndata:  b\n\n", want: []sseEvent{{Data: []byte("a\n b")}}},
		{name: "empty data dispatches", in: "data\n\ndata:\n\n", want: []sseEvent{{Data: []byte{}}, {Data: []byte{}}}},
		{name: "comments and heartbeats", in: ": hi\n:\n\ndata: x\n: mid\n\n", want: []sseEvent{{Data: []byte("x")}}},
		{name: "retry", in: "retry: 2000\n\ndata: x\n\n", retry: 2 * time.Second, want: []sseEvent{{Data: []byte("x")}}},
		{name: "bad retry ignored", in: "retry: 2s\nretry: -1\nretry:\ndata: x\n\n", want: []sseEvent{{Data: []byte("x")}}},
		{name: "id persists, id-only dispatches", in: "id: c1\n\ndata: x\n\nid\ndata: y\n\n",
			want: []sseEvent{{ID: "c1", HasID: true, IDOnly: true}, {Data: []byte("x"), ID: "c1"}, {Data: []byte("y"), HasID: true}}},
		{name: "id with NUL ignored", in: "id: a\x00b\ndata: x\n\n", want: []sseEvent{{Data: []byte("x")}}},
		{name: "event type resets", in: "event: crier.gap\ndata: 1\n\ndata: 2\n\n",
			want: []sseEvent{{Type: "crier.gap", Data: []byte("1")}, {Data: []byte("2")}}},
		{name: "unknown fields ignored", in: "foo: bar\ndata: x\nDATA: y\n\n", want: []sseEvent{{Data: []byte("x")}}},
		{name: "colon in value", in: "data: a:b: c\n\n", want: []sseEvent{{Data: []byte("a:b: c")}}},
		{name: "BOM", in: "\xEF\xBB\xBFdata: x\n\n", want: []sseEvent{{Data: []byte("x")}}},
		{name: "unfinished event dropped", in: "data: x\n\ndata: y\n", want: []sseEvent{{Data: []byte("x")}}},
		{name: "unfinished line dropped", in: "data: x\n\ndata: y", want: []sseEvent{{Data: []byte("x")}}},
		{name: "line too long", in: "data: x\n\ndata: " + strings.Repeat("z", 100) + "\n\n",
			want: []sseEvent{{Data: []byte("x")}}, err: ErrLineTooLong},
		{name: "event too long", in: strings.Repeat("data: 0123456789\n", 10) + "\n", err: ErrLineTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr := tt.err
			if wantErr == nil {
				wantErr = io.EOF
			}
			for name, r := range map[string]io.Reader{
				"whole":    strings.NewReader(tt.in),
				"one byte": iotest.OneByteReader(strings.NewReader(tt.in)),
			} {
				got, retry, err := parseAll(r, 64)
				if !errors.Is(err, wantErr) {
					t.Errorf("%s: err = %v, want %v", name, err, wantErr)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: events =\n%+v\nwant\n%+v", name, got, tt.want)
				}
				if retry != tt.retry {
					t.Errorf("%s: retry = %v, want %v", name, retry, tt.retry)
				}
			}
		})
	}
}

// TestSSEParserCRDoesNotWait checks that a line ended by a lone CR is returned before the next
// byte arrives, so that an event is never held back waiting for a possible LF.
func TestSSEParserCRDoesNotWait(t *testing.T) {
	pr, pw := io.Pipe()
	p := newSSEParser(pr, 1024)
	go func() { _, _ = pw.Write([]byte("data: x\r\r")) }()
	got := make(chan sseEvent)
	go func() {
		ev, _ := p.Next()
		got <- ev
	}()
	select {
	case ev := <-got:
		if string(ev.Data) != "x" {
			t.Fatalf("data = %q", ev.Data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("parser waited for the byte after CR")
	}
	go func() { _, _ = pw.Write([]byte("\ndata: y\n\n")) }() // the LF belongs to the CR before it
	ev, err := p.Next()
	if err != nil || string(ev.Data) != "y" {
		t.Fatalf("next = %+v, %v", ev, err)
	}
	pw.Close()
}

func FuzzSSEParser(f *testing.F) {
	for _, s := range []string{
		"data: hi\n\n",
		"id: news@e:1\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\n",
		"data: a\rdata: b\r\r",
		": heartbeat\n\nretry: 10\nid: x\n\n",
		"\xEF\xBB\xBFdata\n\n",
		"id: a\x00b\ndata:\n\n",
		"data: " + strings.Repeat("x", 300) + "\n\n",
	} {
		f.Add([]byte(s))
	}
	const max = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, retry1, err1 := parseAll(bytes.NewReader(in), max)
		// Splitting the input differently must not change the result: line endings split
		// across reads (CR | LF) are the parser's subtle part.
		bytewise, retry2, err2 := parseAll(iotest.OneByteReader(bytes.NewReader(in)), max)
		small, retry3, err3 := parseAll(bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(in)), 16), max)
		if !reflect.DeepEqual(whole, bytewise) || !reflect.DeepEqual(whole, small) {
			t.Fatalf("events depend on read sizes:\n%+v\n%+v\n%+v", whole, bytewise, small)
		}
		if retry1 != retry2 || retry1 != retry3 || !errors.Is(err2, err1) || !errors.Is(err3, err1) {
			t.Fatalf("outcome depends on read sizes: %v %v %v / %v %v %v", retry1, retry2, retry3, err1, err2, err3)
		}
		if !errors.Is(err1, io.EOF) && !errors.Is(err1, ErrLineTooLong) {
			t.Fatalf("unexpected error %v", err1)
		}
		for _, ev := range whole {
			if len(ev.Data) >= max || strings.ContainsRune(ev.ID, 0) || (ev.IDOnly && ev.Data != nil) {
				t.Fatalf("bad event %+v", ev)
			}
			if bytes.ContainsAny(ev.Data, "\r") || strings.ContainsAny(ev.Type+ev.ID, "\r\n") {
				t.Fatalf("line ending inside a field: %+v", ev)
			}
		}
	})
}

// TestSSERoundTrip writes events the way a server does and reads them back.
func TestSSERoundTrip(t *testing.T) {
	var b strings.Builder
	b.WriteString("retry: 1500\n\n")
	want := []sseEvent{}
	for i, data := range []string{"{}", "line1\nline2", "", "x:y"} {
		id := strings.Repeat("i", i+1)
		b.WriteString("id: " + id + "\nevent: e\n")
		for line := range strings.SplitSeq(data, "\n") {
			b.WriteString("data: " + line + "\n")
		}
		b.WriteString(":heartbeat\n\n")
		want = append(want, sseEvent{Type: "e", Data: []byte(data), ID: id, HasID: true})
	}
	got, retry, err := parseAll(strings.NewReader(b.String()), 1<<10)
	if !errors.Is(err, io.EOF) || retry != 1500*time.Millisecond || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, %v, %v", got, retry, err)
	}
}
