// Package auth decides who a request is and what it may do: JWTs, API keys, anonymous access
// per namespace, and the channel patterns that tokens grant (SPEC section 7).
//
// # Use
//
//	a, err := auth.New(auth.Config{JWTSecret: s, APIKeys: keys, Anonymous: nsFunc})
//	_ = a.Refresh(ctx) // only matters with a JWKS URL: hold keys before serving
//	go a.Run(ctx)      // keeps a JWKS fresh until ctx ends; returns at once without one
//
//	id, err := a.Authenticate(r)           // or a.AuthenticateToken(ctx, tok) for the WebSocket auth op
//	if err == nil { err = id.CheckSubscribe(ch) }
//	if err != nil { status, code, msg := auth.HTTPError(err); … }
//
// Authenticate returns an error only for a credential that is present and bad; a request
// without one gets an anonymous identity, and the Check methods then answer 401
// (ErrUnauthorized) where a token would be needed and 403 (ErrForbidden) where a valid token
// lacks the right. HTTPError maps every error of this package to its status, snake_case code
// and message; Challenge gives the WWW-Authenticate header of a 401. A long-lived connection
// is told and closed at Identity.Expires.
//
// # Modes
//
// With nothing configured (no secret, PEM key, JWKS or API key) every identity has every
// right, the admin API included, and credentials are ignored. Once anything is configured,
// anonymous requests may only do what Config.Anonymous allows per namespace.
//
// # Credentials and their sources
//
// ExtractToken takes the first source that is present, in this order:
//
//  1. Authorization: Bearer TOKEN (a header with another scheme is ignored);
//  2. the query parameter token (first value);
//  3. the cookie crier_token.
//
// A present but empty source is an error, not a fall-through. A credential is first compared
// in constant time with every API key (SHA-256 digests, so lengths do not leak either). An API
// key counts only from the Authorization header or AuthenticateToken: one sent in ?token= or
// the cookie is refused, since URLs end up in logs. Anything else is parsed as a JWT.
//
// # JWTs
//
// Accepted algorithms, and nothing else (alg "none" included): HS256, HS384 and HS512 with
// Config.JWTSecret; RS256 (RSA of at least 2048 bits), ES256 (P-256) and EdDSA (Ed25519) with
// public keys from PEM files and a JWK Set. A key only ever verifies its own algorithm: the
// secret only HS*, an RSA key only RS256, and so on, so that a public key can never be
// replayed as an HMAC secret. A token's kid selects JWKS keys of that kid (and keys without
// a kid); PEM keys have no kid and are tried for any token of their algorithm. A kid the JWKS
// lacks makes the running refresh loop fetch the set at once, at most once per
// JWKSMinRefresh, and the token waits for that fetch (at most 5 s).
//
// exp and nbf are enforced with Config.Leeway (default 5 s) either way; exp is optional
// unless Config.RequireExpiry. iss and aud are checked when configured. Claims are validated
// only once the signature is, so a forged token learns nothing from the answer.
//
// Crier's own claims:
//
//	{"sub": "alice", "crier": {"subscribe": ["chat:*", "user:{sub}:**"], "publish": ["chat:lobby"]}}
//
// A token without "crier" has no right beyond the anonymous ones. Any malformed pattern makes
// the whole token invalid (401), as does more than MaxPatterns patterns in a list. A token
// also has the anonymous rights of each namespace. Tokens never grant the admin API.
//
// # Patterns
//
// A pattern is matched against a whole channel name, segment by segment, where segments are
// the parts between ':' (so "chat:room:1" has the segments chat, room and 1; a channel name
// may have empty segments, as in "a::b").
//
//   - A segment "*" matches exactly one segment, which must not be empty.
//   - A segment "**" matches one or more segments, none of them empty. "chat:**" matches
//     "chat:a" and "chat:a:b" but neither "chat" nor "chat:" nor "chat::a"; "**" matches every
//     channel without an empty segment.
//   - '*' anywhere else ("a*", "***") is a syntax error: there are no partial wildcards.
//   - "{sub}" inside any other segment ("user:{sub}", "dm-{sub}", "{sub}") is replaced by the
//     token's subject before matching, as literal text inside that one segment. A subject
//     that could not stand inside one segment (empty, containing ':' or any byte outside the
//     channel-name alphabet, '*' included) makes every pattern that uses {sub} match nothing,
//     so a subject can never add segments or wildcards. Any other '{' is a syntax error.
//   - Every other segment is literal and matches only itself, empty segments included. A
//     pattern without wildcards matches exactly the one channel it spells (after {sub}).
//   - Otherwise a pattern holds only channel-name bytes (A-Z a-z 0-9 _ - . : = ~) and is at
//     most MaxPatternLen bytes.
//
// Namespaces are not special: "*" matches only channels of the default namespace without ':'
// ("news"), and "chat:*" only channels of namespace chat with two segments. Patterns are
// compiled once per token; matching costs O(segments × pattern segments) whatever the
// number of "**", with no allocation.
//
// # JWKS refresh
//
// Config.JWKS is a URL (fetched by Refresh and Run) or a file (read by New, re-read by Run).
// Run fetches every JWKSRefresh (default 5 min), retries a failure after 1 s doubling up to a
// minute, and keeps the keys it holds until a fetch succeeds: a set that parses replaces them
// wholly (so a key removed by the issuer stops working), a failed fetch never does. Keys the
// package cannot use (symmetric, encryption-only, other curves, short RSA) are skipped and
// logged. The set is at most MaxJWKSSize bytes. There is no global state: the only goroutine
// is the caller's Run.
package auth
