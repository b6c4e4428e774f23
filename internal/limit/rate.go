// Package limit holds the limits that protect a node from its clients (SPEC section 7):
// token-bucket publish rates per credential and per IP, counts of open connections in all and
// per IP, and the client address those are keyed on (X-Forwarded-For only from trusted
// proxies; IPv6 clients by their /64).
//
// Every limiter here is safe for concurrent use, allocates nothing per request once a key is
// known, and starts no goroutine: idle keys are swept as keys are added.
package limit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crier-push/crier/internal/auth"
)

// Rate is a sustained rate with a burst: a token bucket that holds Burst tokens and gains
// PerSecond tokens a second. The zero Rate is no limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Enabled reports whether r limits anything.
func (r Rate) Enabled() bool { return r.PerSecond > 0 }

func (r Rate) String() string {
	if !r.Enabled() {
		return "none"
	}
	return strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + "/s burst " + strconv.Itoa(r.Burst)
}

// maxRetry bounds the retry time Take reports, whatever the rate.
const maxRetry = 24 * time.Hour

// maxRateCount bounds the N of "N/unit", so that burst and refill arithmetic stay exact.
const maxRateCount = 1e9

// ParseRate parses a rate as the --publish-rate flag gives it: "N/s", "N/m" or "N/h" (N
// events per second, minute or hour; N may have a fraction, as in "0.5/s"), or a bare N per
// second. "", "0" and "none" mean no limit. burst is the bucket's size: 0 takes N rounded up
// (one unit's worth, at least 1).
func ParseRate(s string, burst int) (Rate, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "", "0", "none", "off":
		return Rate{}, nil
	}
	num, unit, hasUnit := strings.Cut(s, "/")
	per := time.Second
	if hasUnit {
		switch strings.ToLower(strings.TrimSpace(unit)) {
		case "s", "sec", "second":
			per = time.Second
		case "m", "min", "minute":
			per = time.Minute
		case "h", "hour":
			per = time.Hour
		default:
			return Rate{}, fmt.Errorf("%q: the unit after / must be s, m or h", s)
		}
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || n <= 0 || n > maxRateCount {
		return Rate{}, fmt.Errorf("%q is not a rate like 10/s, 600/m or 0.5/s", s)
	}
	switch {
	case burst < 0:
		return Rate{}, fmt.Errorf("burst must not be negative, got %d", burst)
	case burst == 0:
		burst = int(math.Ceil(n))
	}
	return Rate{PerSecond: n / per.Seconds(), Burst: burst}, nil
}

// Buckets is a token bucket per key, all of one Rate.
type Buckets struct {
	rate   Rate
	now    func() time.Time
	seed   maphash.Seed
	shards [shardCount]shard
}

const shardCount = 32

// sweepEvery is how many keys a shard may gain between two sweeps of its idle buckets.
const sweepEvery = 256

type shard struct {
	mu    sync.Mutex
	m     map[string]bucket
	added int // keys added since the last sweep
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last refill
}

// NewBuckets returns the buckets of r; nil when r is no limit (a nil *Buckets grants all).
// now is the clock; nil means time.Now.
func NewBuckets(r Rate, now func() time.Time) *Buckets {
	if !r.Enabled() {
		return nil
	}
	if r.Burst < 1 {
		r.Burst = 1
	}
	if now == nil {
		now = time.Now
	}
	return &Buckets{rate: r, now: now, seed: maphash.MakeSeed()}
}

// Take takes up to n tokens from key's bucket and returns how many it took. When it took fewer
// than n, retry is how long until the bucket holds one token again.
func (b *Buckets) Take(key string, n int) (granted int, retry time.Duration) {
	if b == nil || n <= 0 {
		return n, 0
	}
	now := b.now().UnixNano()
	sh := &b.shards[maphash.String(b.seed, key)%shardCount]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	bk, ok := sh.m[key]
	if !ok {
		if sh.m == nil {
			sh.m = make(map[string]bucket)
		}
		if sh.added++; sh.added >= sweepEvery {
			b.sweep(sh, now)
		}
		bk = bucket{tokens: float64(b.rate.Burst), last: now}
	}
	b.refill(&bk, now)
	granted = min(n, int(bk.tokens))
	bk.tokens -= float64(granted)
	sh.m[key] = bk
	if granted < n {
		missing := 1 - (bk.tokens - math.Floor(bk.tokens))
		wait := math.Ceil(missing / b.rate.PerSecond * float64(time.Second))
		retry = time.Duration(min(max(wait, 1), float64(maxRetry)))
	}
	return granted, retry
}

// Refund gives back n tokens taken from key that were not used after all.
func (b *Buckets) Refund(key string, n int) {
	if b == nil || n <= 0 {
		return
	}
	sh := &b.shards[maphash.String(b.seed, key)%shardCount]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if bk, ok := sh.m[key]; ok {
		bk.tokens = min(float64(b.rate.Burst), bk.tokens+float64(n))
		sh.m[key] = bk
	}
}

// Len returns how many keys hold a bucket, for tests.
func (b *Buckets) Len() int {
	if b == nil {
		return 0
	}
	n := 0
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

func (b *Buckets) refill(bk *bucket, now int64) {
	if now > bk.last {
		bk.tokens = min(float64(b.rate.Burst), bk.tokens+float64(now-bk.last)/1e9*b.rate.PerSecond)
		bk.last = now
	}
}

// sweep drops the buckets that are full again: forgetting them changes nothing, since a new
// bucket starts full. Memory is so bounded by the keys active within one refill period.
func (b *Buckets) sweep(sh *shard, now int64) {
	sh.added = 0
	for k, bk := range sh.m {
		b.refill(&bk, now)
		if bk.tokens >= float64(b.rate.Burst) {
			delete(sh.m, k)
		}
	}
}

// Publish limits publishing: each message takes a token from the bucket of its credential
// (a JWT, by Identity.ID) and from that of its client's IP (Key). API keys, the credentials of
// server-side publishers and operators, are not limited. A nil *Publish limits nothing.
type Publish struct {
	tokens, ips *Buckets
}

// NewPublish returns the publish limiter of r; nil when r is no limit.
func NewPublish(r Rate, now func() time.Time) *Publish {
	if !r.Enabled() {
		return nil
	}
	return &Publish{tokens: NewBuckets(r, now), ips: NewBuckets(r, now)}
}

// ErrRateLimited is what a publish over the rate is answered with (429 rate_limited).
var ErrRateLimited = errors.New("rate_limited")

// Allow takes n messages' worth from the buckets of id and ip (a Key) and returns how many of
// the n may be published now; for the rest, retry is how long until one more may.
func (p *Publish) Allow(id *auth.Identity, ip string, n int) (granted int, retry time.Duration) {
	if p == nil || n <= 0 || id.Kind() == auth.KindAPIKey {
		return n, 0
	}
	granted = n
	tok := id.ID()
	if tok != "" {
		granted, retry = p.tokens.Take(tok, n)
		if granted == 0 {
			return 0, retry
		}
	}
	g, r := p.ips.Take("ip:"+ip, granted)
	if g < granted {
		if tok != "" {
			p.tokens.Refund(tok, granted-g)
		}
		granted, retry = g, max(retry, r)
	}
	return granted, retry
}
