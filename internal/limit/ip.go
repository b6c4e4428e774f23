package limit

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the reverse proxies whose X-Forwarded-For is believed (--trust-proxy). Without
// any, the client is the peer of the TCP connection and X-Forwarded-For is ignored: anyone can
// write that header, so believing it from anyone would let a client choose the address its
// limits are counted on.
type Proxies []netip.Prefix

// ParseProxies parses CIDR prefixes ("10.0.0.0/8", "fd00::/8") and single addresses
// ("127.0.0.1", a /32 or /128).
func ParseProxies(list []string) (Proxies, error) {
	var out Proxies
	for _, s := range list {
		p, err := ParseProxy(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseProxy parses one --trust-proxy value.
func ParseProxy(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix like 10.0.0.0/8", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix like 10.0.0.0/8", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (p Proxies) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, pr := range p {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr returns the address of the client that made r: the TCP peer, or, when the peer is
// a trusted proxy, the nearest address in X-Forwarded-For that is not a trusted proxy (walking
// from the right, where each proxy appends the address it saw). An entry that does not parse
// stops the walk at the last address known good. The zero Addr means the peer's address is
// unknown.
func (p Proxies) ClientAddr(r *http.Request) netip.Addr {
	client := peerAddr(r.RemoteAddr)
	if len(p) == 0 || !client.IsValid() || !p.trusts(client) {
		return client
	}
	vals := r.Header.Values("X-Forwarded-For")
	for i := len(vals) - 1; i >= 0; i-- {
		entries := strings.Split(vals[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a := parseForwarded(entries[j])
			if !a.IsValid() {
				return client
			}
			client = a
			if !p.trusts(a) {
				return a
			}
		}
	}
	return client
}

// ClientKey is Key(ClientAddr(r)).
func (p Proxies) ClientKey(r *http.Request) string { return Key(p.ClientAddr(r)) }

func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}

// parseForwarded parses one X-Forwarded-For entry: an address, perhaps with a port, IPv6
// perhaps in brackets.
func parseForwarded(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap()
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Zone() == "" {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// Key is the name a client address is counted under: an IPv4 address itself, an IPv6 address
// by its /64, which is what one subscriber line or host usually gets, so that a client cannot
// escape its limits by walking its own prefix. The invalid Addr is "unknown".
func Key(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
