package limit

import (
	"fmt"
	"sync"
)

// Conns counts open connections in all and per client IP (a Key), refusing those past either
// limit. A limit of 0 is none; a nil *Conns counts nothing.
type Conns struct {
	max, perIP int
	mu         sync.Mutex
	total      int
	byIP       map[string]int
}

// NewConns returns the counter of these limits; nil when both are 0.
func NewConns(max, perIP int) *Conns {
	if max <= 0 && perIP <= 0 {
		return nil
	}
	return &Conns{max: max, perIP: perIP, byIP: make(map[string]int)}
}

// TooManyError says which limit refused a connection.
type TooManyError struct {
	PerIP bool
	Limit int
}

func (e *TooManyError) Error() string {
	if e.PerIP {
		return fmt.Sprintf("too many connections from your address (at most %d)", e.Limit)
	}
	return fmt.Sprintf("too many connections to this server (at most %d)", e.Limit)
}

// Acquire counts one connection from ip, or refuses it with a *TooManyError. release uncounts
// it; it may be called more than once, and only the first call counts.
func (c *Conns) Acquire(ip string) (release func(), err error) {
	if c == nil {
		return func() {}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.total >= c.max {
		return nil, &TooManyError{Limit: c.max}
	}
	if c.perIP > 0 && c.byIP[ip] >= c.perIP {
		return nil, &TooManyError{PerIP: true, Limit: c.perIP}
	}
	c.total++
	c.byIP[ip]++
	var once sync.Once
	return func() { once.Do(func() { c.release(ip) }) }, nil
}

func (c *Conns) release(ip string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if n := c.byIP[ip] - 1; n > 0 {
		c.byIP[ip] = n
	} else {
		delete(c.byIP, ip)
	}
}

// Open returns the connections counted in all and from ip.
func (c *Conns) Open(ip string) (total, fromIP int) {
	if c == nil {
		return 0, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, c.byIP[ip]
}
