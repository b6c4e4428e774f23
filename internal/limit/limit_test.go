package limit

import (
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crier-push/crier/internal/auth"
)

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in    string
		burst int
		want  Rate
		err   bool
	}{
		{in: "", want: Rate{}},
		{in: "0", want: Rate{}},
		{in: "none", want: Rate{}},
		{in: "10/s", want: Rate{PerSecond: 10, Burst: 10}},
		{in: "10", want: Rate{PerSecond: 10, Burst: 10}},
		{in: "600/m", want: Rate{PerSecond: 10, Burst: 600}},
		{in: "3600/h", burst: 5, want: Rate{PerSecond: 1, Burst: 5}},
		{in: "0.5/s", want: Rate{PerSecond: 0.5, Burst: 1}},
		{in: " 2 / S ", want: Rate{PerSecond: 2, Burst: 2}},
		{in: "10/d", err: true},
		{in: "fast", err: true},
		{in: "-1/s", err: true},
		{in: "NaN/s", err: true},
		{in: "Inf", err: true},
		{in: "1e10/s", err: true},
		{in: "5/s", burst: -1, err: true},
	} {
		got, err := ParseRate(tt.in, tt.burst)
		if (err != nil) != tt.err || err == nil && got != tt.want {
			t.Errorf("ParseRate(%q, %d) = %+v, %v; want %+v, error %v", tt.in, tt.burst, got, err, tt.want, tt.err)
		}
	}
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBuckets(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	b := NewBuckets(Rate{PerSecond: 2, Burst: 3}, clk.now)
	if g, _ := b.Take("a", 2); g != 2 {
		t.Fatalf("first take = %d", g)
	}
	g, retry := b.Take("a", 2)
	if g != 1 || retry != 500*time.Millisecond {
		t.Fatalf("second take = %d, retry %s; want 1, 500ms", g, retry)
	}
	if g, retry := b.Take("a", 1); g != 0 || retry != 500*time.Millisecond {
		t.Fatalf("empty take = %d, %s", g, retry)
	}
	// Another key has its own bucket.
	if g, _ := b.Take("b", 3); g != 3 {
		t.Fatalf("other key = %d", g)
	}
	clk.add(250 * time.Millisecond)
	if g, retry := b.Take("a", 1); g != 0 || retry != 250*time.Millisecond {
		t.Fatalf("half a token later = %d, %s", g, retry)
	}
	clk.add(250 * time.Millisecond)
	if g, _ := b.Take("a", 1); g != 1 {
		t.Fatalf("a token later = %d", g)
	}
	b.Refund("a", 5)
	if g, _ := b.Take("a", 5); g != 3 {
		t.Fatalf("refund is capped at the burst: took %d", g)
	}
	// Full buckets are forgotten as new keys arrive.
	clk.add(time.Hour)
	for i := range 4 * shardCount * sweepEvery {
		b.Take("k"+itoa(i), 1)
		if i%100 == 0 {
			clk.add(time.Second) // the earlier ones fill up again
		}
	}
	if n := b.Len(); n >= 4*shardCount*sweepEvery {
		t.Fatalf("%d buckets held; idle ones should have been swept", n)
	}
	var nilB *Buckets
	if g, _ := nilB.Take("x", 7); g != 7 {
		t.Fatal("a nil *Buckets must grant everything")
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestPublish(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	p := NewPublish(Rate{PerSecond: 1, Burst: 2}, clk.now)
	a, err := auth.New(auth.Config{JWTSecret: strings.Repeat("s", 32), APIKeys: []string{"key"}})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(sub string) *auth.Identity {
		s, err := auth.MintHS256(strings.Repeat("s", 32), auth.TokenSpec{Subject: sub, Publish: []string{"**"}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		id, err := a.AuthenticateToken(t.Context(), s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	alice, bob := tok("alice"), tok("bob")
	anon := a.Anonymous()
	key, err := a.AuthenticateToken(t.Context(), "key")
	if err != nil {
		t.Fatal(err)
	}

	if g, _ := p.Allow(alice, "1.1.1.1", 3); g != 2 {
		t.Fatalf("alice got %d of 3, want the burst 2", g)
	}
	// The token is spent, whatever the address.
	if g, retry := p.Allow(alice, "2.2.2.2", 1); g != 0 || retry != time.Second {
		t.Fatalf("alice from elsewhere got %d, retry %s", g, retry)
	}
	// 1.1.1.1 is spent too, for everyone there.
	if g, _ := p.Allow(bob, "1.1.1.1", 1); g != 0 {
		t.Fatalf("bob on the spent address got %d", g)
	}
	// bob was refunded: from a fresh address he has his whole burst.
	if g, _ := p.Allow(bob, "3.3.3.3", 2); g != 2 {
		t.Fatalf("bob got %d, want 2 (his token's tokens refunded)", g)
	}
	if g, _ := p.Allow(anon, "1.1.1.1", 1); g != 0 {
		t.Fatalf("anonymous on the spent address got %d", g)
	}
	if g, _ := p.Allow(anon, "4.4.4.4", 5); g != 2 {
		t.Fatalf("anonymous got %d of 5", g)
	}
	// API keys are not limited.
	if g, _ := p.Allow(key, "1.1.1.1", 100); g != 100 {
		t.Fatalf("API key got %d", g)
	}
	clk.add(time.Second)
	if g, _ := p.Allow(alice, "1.1.1.1", 5); g != 1 {
		t.Fatalf("a second later alice got %d, want 1", g)
	}
	var none *Publish
	if g, _ := none.Allow(anon, "x", 9); g != 9 {
		t.Fatal("a nil *Publish must allow all")
	}
}

func TestConns(t *testing.T) {
	c := NewConns(3, 2)
	r1, err := c.Acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire("a"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Acquire("a")
	if e, ok := err.(*TooManyError); !ok || !e.PerIP || e.Limit != 2 {
		t.Fatalf("third from a: %v", err)
	}
	if _, err := c.Acquire("b"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Acquire("c")
	if e, ok := err.(*TooManyError); !ok || e.PerIP || e.Limit != 3 {
		t.Fatalf("fourth in all: %v", err)
	}
	r1()
	r1() // only the first release counts
	if total, fromA := c.Open("a"); total != 2 || fromA != 1 {
		t.Fatalf("after release: %d in all, %d from a", total, fromA)
	}
	if _, err := c.Acquire("c"); err != nil {
		t.Fatal(err)
	}
	if NewConns(0, 0) != nil {
		t.Fatal("no limit should be a nil *Conns")
	}
	var none *Conns
	if rel, err := none.Acquire("x"); err != nil || rel == nil {
		t.Fatal("a nil *Conns must admit")
	}
}

func TestClientAddr(t *testing.T) {
	trusted, err := ParseProxies([]string{"10.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		proxies Proxies
		remote  string
		xff     []string
		want    string
	}{
		{nil, "192.0.2.1:1234", []string{"6.6.6.6"}, "192.0.2.1"}, // not trusted: header ignored
		{trusted, "192.0.2.1:1234", []string{"6.6.6.6"}, "192.0.2.1"},
		{trusted, "10.1.1.1:1234", nil, "10.1.1.1"},
		{trusted, "10.1.1.1:1234", []string{"6.6.6.6"}, "6.6.6.6"},
		{trusted, "10.1.1.1:1234", []string{"6.6.6.6, 7.7.7.7"}, "7.7.7.7"},             // the nearest untrusted
		{trusted, "10.1.1.1:1234", []string{"6.6.6.6, 10.2.2.2"}, "6.6.6.6"},            // through two proxies
		{trusted, "10.1.1.1:1234", []string{"6.6.6.6", "10.2.2.2"}, "6.6.6.6"},          // several header lines
		{trusted, "10.1.1.1:1234", []string{"garbage, 10.2.2.2"}, "10.2.2.2"},           // stops at what parses
		{trusted, "10.1.1.1:1234", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3"},          // all trusted: the leftmost
		{trusted, "[::1]:1234", []string{"[2001:db8::1]:80"}, "2001:db8::1"},            // bracketed with a port
		{trusted, "[::ffff:10.0.0.1]:1234", []string{"::ffff:6.6.6.6"}, "6.6.6.6"},      // v4-mapped
		{trusted, "10.1.1.1:1234", []string{"6.6.6.6:5555"}, "6.6.6.6"},                 // with a port
		{trusted, "not an address", []string{"6.6.6.6"}, "invalid IP"},                  // unknown peer
		{trusted, "10.1.1.1:1234", []string{"fe80::1%eth0"}, "10.1.1.1"},                // zones refused
		{trusted, "10.1.1.1:1234", []string{strings.Repeat("1", 100)}, "10.1.1.1"},      // nonsense
		{trusted, "10.1.1.1:1234", []string{" 2001:db8::5 , 10.9.9.9 "}, "2001:db8::5"}, // spaces
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tt.proxies.ClientAddr(r).String(); got != tt.want {
			t.Errorf("ClientAddr(%s, %q) = %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
	if _, err := ParseProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("bad prefix accepted")
	}
	if _, err := ParseProxy("fe80::1%eth0"); err == nil {
		t.Error("zone accepted")
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1",
		"::ffff:192.0.2.1":     "192.0.2.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ff::1":   "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
	} {
		if got := Key(netip.MustParseAddr(in)); got != want {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
	if Key(netip.Addr{}) != "unknown" {
		t.Error("invalid address")
	}
}

// FuzzParseRate: parsing never panics, and an accepted rate is finite, positive and has a
// burst of at least 1; a limiter built from it never grants more than asked or than the burst.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"10/s", "600/m", "0.5/s", "1/h", "", "none", "x/s", "1e9/s", "1e-300/s", "5/"} {
		f.Add(s, 0, 3)
	}
	f.Fuzz(func(t *testing.T, s string, burst, n int) {
		r, err := ParseRate(s, burst)
		if err != nil {
			return
		}
		if !r.Enabled() {
			return
		}
		if math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0) || r.PerSecond <= 0 || r.Burst < 1 {
			t.Fatalf("ParseRate(%q, %d) = %+v", s, burst, r)
		}
		b := NewBuckets(r, func() time.Time { return time.Unix(0, 0) })
		g, retry := b.Take("k", n)
		if n > 0 && (g < 0 || g > n || g > r.Burst) || n <= 0 && g != n {
			t.Fatalf("Take(%d) with %+v = %d", n, r, g)
		}
		if g < n && n > 0 && retry <= 0 {
			t.Fatalf("Take(%d) with %+v = %d without a retry time", n, r, g)
		}
	})
}

// FuzzClientAddr: never panics; the answer is the peer or an address found in the header, and
// never an address from the header when the peer is not trusted.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.1:80", "6.6.6.6, 10.0.0.2")
	f.Add("192.0.2.1:80", "6.6.6.6")
	f.Add("[::1]:80", "[2001:db8::1]:443")
	f.Add("10.0.0.1:80", ",,,")
	trusted, _ := ParseProxies([]string{"10.0.0.0/8", "::1"})
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		got := trusted.ClientAddr(r)
		peer := peerAddr(remote)
		if !trusted.trusts(peer) || !peer.IsValid() {
			if got != peer {
				t.Fatalf("untrusted peer %q: got %v", remote, got)
			}
			return
		}
		if got != peer && !strings.Contains(xff, ":") && !strings.Contains(xff, got.String()) {
			t.Fatalf("address %v is neither the peer nor in %q", got, xff)
		}
		_ = Key(got)
	})
}
