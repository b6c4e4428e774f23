// crier.js: the browser client of Crier, the self-hosted push server.
//
// An ES module with no dependencies and no build step; the server serves it at /crier.js and its
// types at /crier.d.ts. It also runs in Node.js 20+ for the transports whose globals exist there.
//
//   import {Crier} from '/crier.js'
//   const crier = new Crier(location.origin, {transports: ['websocket', 'sse', 'longpoll']})
//   const sub = crier.subscribe('chat:lobby', {onMessage: (env) => console.log(env.data)})
//   await crier.publish('chat:lobby', {text: 'hi'})
//   sub.unsubscribe()
//
// How it works, in short:
//
// - One client holds one connection, whatever the number of subscriptions. Over WebSocket a
//   subscription is a `subscribe` command on the open socket; over the HTTP transports (SSE,
//   NDJSON streaming, long polling, hidden iframe) the connection is reopened with every channel
//   in its query: `cursor=` for the channels whose position is known, `channel=` for the others.
// - The client keeps the position (epoch and offset) of every channel from the envelopes it
//   receives, and resumes from it after any reconnection: the server then sends what was missed
//   and live messages, with no gap and no duplicate. Duplicates are dropped here too, by offset
//   per channel and epoch, in case a transport or a proxy ever repeats one.
// - A channel subscribed "live" (no `since`) over an HTTP transport first reads the channel's
//   position (GET /v1/channels/{channel}), so that a reconnection before its first message still
//   misses nothing.
// - Transports are tried in the order given: the first one this environment supports and that
//   connects is used; after `maxFailures` failed attempts in a row (or at once, when the server
//   says the endpoint does not exist) the next one is tried, wrapping around. Reconnections wait
//   an exponential backoff with full jitter: a random delay in [0, min(max, base * 2^attempt)).
// - The server's `crier.gap` (history lost: resync) is passed to `onGap` and the 'gap' event;
//   its `crier.reconnect` (the server is draining) closes the connection and reconnects after
//   `data.after_ms`.
// - One limit of SSE: EventSource hands over only the event names it listens for, so over SSE a
//   publisher's own event names (other than "message") arrive only when listed in `events`.

/** The transports this client speaks, in the default order of preference. */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'stream', 'longpoll', 'iframe'])

/** The channel name rule of the contract. */
const CHANNEL_RE = /^[A-Za-z0-9_\-.:=~]{1,200}$/

/** Events that the server reserves for itself. */
const EVENT_GAP = 'crier.gap'
const EVENT_RECONNECT = 'crier.reconnect'
const EVENT_JOIN = 'crier.join'
const EVENT_LEAVE = 'crier.leave'

/** How long a connection must stay open, without delivering anything, to count as healthy. */
const STABLE_MS = 1000

/** HTTP statuses that mean "this endpoint does not exist here": try the next transport at once. */
const MISSING_STATUSES = new Set([404, 405, 501])

const DEFAULTS = {
  transports: TRANSPORTS,
  backoff: {base: 500, max: 30000},
  maxFailures: 2,
  connectTimeout: 10000,
  pollWait: 30,
  events: [],
  resolveLive: true,
}

// ---------------------------------------------------------------------------------------------
// Errors, positions, cursors, backoff
// ---------------------------------------------------------------------------------------------

/** An error from the server (its JSON error code and message) or from a connection. */
export class CrierError extends Error {
  constructor(code, message, {status, transport, channel, cause} = {}) {
    super(message, cause === undefined ? undefined : {cause})
    this.name = 'CrierError'
    this.code = code
    if (status !== undefined) this.status = status
    if (transport !== undefined) this.transport = transport
    if (channel !== undefined) this.channel = channel
  }
}

/** Parses a position "EPOCH:OFFSET" into {epoch, offset}; null when it is not one. */
export function parsePosition(text) {
  if (typeof text !== 'string') return null
  const i = text.lastIndexOf(':')
  if (i <= 0) return null
  const offset = Number(text.slice(i + 1))
  if (!Number.isSafeInteger(offset) || offset < 0 || text.slice(i + 1) === '') return null
  return {epoch: text.slice(0, i), offset}
}

/** Formats {epoch, offset} as "EPOCH:OFFSET". */
export function formatPosition(pos) {
  return `${pos.epoch}:${pos.offset}`
}

/**
 * Parses a cursor "CHANNEL@EPOCH:OFFSET,…" into a Map from channel to {epoch, offset}. Entries
 * that do not parse are left out.
 */
export function parseCursor(text) {
  const out = new Map()
  if (typeof text !== 'string') return out
  for (const entry of text.split(',')) {
    const at = entry.lastIndexOf('@')
    if (at <= 0) continue
    const pos = parsePosition(entry.slice(at + 1))
    if (pos) out.set(entry.slice(0, at), pos)
  }
  return out
}

/** Formats a Map (or an iterable of [channel, {epoch, offset}]) as a cursor. */
export function formatCursor(entries) {
  const parts = []
  for (const [channel, pos] of entries) parts.push(`${channel}@${formatPosition(pos)}`)
  return parts.join(',')
}

/**
 * The delay before reconnection attempt number `attempt` (0 for the first): exponential backoff
 * with full jitter, a uniformly random whole number of milliseconds in [0, min(max, base·2^attempt)).
 */
export function backoffDelay(attempt, {base = 500, max = 30000} = {}, random = Math.random) {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30))
  return Math.floor(random() * ceiling)
}

/**
 * The payload of an envelope as bytes, when it travelled as base64 (published with a content
 * type that is neither JSON nor text); null otherwise.
 */
export function payloadBytes(env) {
  if (!env || env.encoding !== 'base64' || typeof env.data !== 'string') return null
  const bin = atob(env.data)
  const out = new Uint8Array(bin.length)
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i)
  return out
}

function checkChannel(channel) {
  if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
    throw new CrierError('invalid_channel', `invalid channel name: ${JSON.stringify(channel)}`)
  }
}

/** Reads a server error answer ({"error":{"code","message"}}) into a CrierError. */
async function errorFromResponse(res, transport) {
  let code = `http_${res.status}`
  let message = `${res.status} ${res.statusText}`.trim()
  try {
    const body = await res.json()
    if (body && body.error) {
      code = body.error.code || code
      message = body.error.message || message
    }
  } catch {
    // Not JSON (a proxy's page, say): keep the status.
  }
  return new CrierError(code, message, {status: res.status, transport})
}

/** Reports an exception thrown by a user's callback without breaking the client. */
function report(err) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(err)
  else console.error(err)
}

function isJSONValue(v) {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return true
  if (typeof v === 'number') return Number.isFinite(v)
  if (typeof v !== 'object') return false
  if (typeof Blob !== 'undefined' && v instanceof Blob) return false
  if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return false
  return true
}

// ---------------------------------------------------------------------------------------------
// Transports. Each driver speaks one protocol for one connection and reports to its `link`:
//   link.opened()               the connection is up
//   link.envelope(env)          an envelope arrived
//   link.subscribed(ch, pos)    (WebSocket) the server confirmed a subscription at pos
//   link.cursor(text)           (long polling) the answer's cursor
//   link.closed({error, fatal}) the connection ended; fatal: the endpoint does not exist
// A driver never reconnects by itself: the client decides when and how.
// ---------------------------------------------------------------------------------------------

/** WebSocket: GET /v1/ws, JSON commands, envelopes as text frames. */
class WebSocketDriver {
  static live = true // channels are added and removed on the open connection
  static supported() {
    return typeof globalThis.WebSocket === 'function'
  }

  constructor(link) {
    this.link = link
    this.isOpen = false
    this.nextId = 1
    this.pending = new Map() // command id → {resolve, reject, timer}
  }

  open() {
    const url = this.link.url('/v1/ws')
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
    const ws = new WebSocket(url)
    this.ws = ws
    ws.onopen = () => {
      this.isOpen = true
      this.link.opened()
      for (const {channel, since} of this.link.channels()) this.subscribe(channel, since)
    }
    ws.onmessage = (e) => this.onFrame(e.data)
    ws.onerror = () => {} // a close event always follows; it carries what we can know
    ws.onclose = (e) => {
      this.failPending(new CrierError('connection_closed', 'the WebSocket closed before the reply'))
      let error = null
      if (!this.isOpen) {
        error = new CrierError('connect_failed', `WebSocket to ${url.pathname} failed (code ${e.code})`)
      } else if (e.code !== 1000 && e.code !== 1001) {
        error = new CrierError('connection_lost', `WebSocket closed: ${e.code} ${e.reason || ''}`.trim())
      }
      this.isOpen = false
      this.link.closed({error, reason: e.reason || `close ${e.code}`})
    }
  }

  onFrame(text) {
    let msg
    try {
      msg = JSON.parse(text)
    } catch {
      this.link.error(new CrierError('bad_frame', 'a WebSocket frame is not JSON'))
      return
    }
    if (msg && msg.id !== undefined) {
      const p = this.pending.get(msg.id)
      if (!p) return
      this.pending.delete(msg.id)
      clearTimeout(p.timer)
      if (msg.ok) p.resolve(msg)
      else p.reject(new CrierError(msg.error?.code || 'error', msg.error?.message || 'command failed'))
      return
    }
    if (msg && msg.ok === false && msg.error) {
      // An error about a frame the server could not read, so without an id.
      this.link.error(new CrierError(msg.error.code, msg.error.message))
      return
    }
    this.link.envelope(msg)
  }

  /** Sends a command and resolves with its reply (ok:true) or rejects with its error. */
  command(cmd) {
    if (!this.isOpen) return Promise.reject(new CrierError('not_connected', 'the WebSocket is not open'))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new CrierError('timeout', `no reply to ${cmd.op} within ${this.link.timeout} ms`))
      }, this.link.timeout)
      this.pending.set(id, {resolve, reject, timer})
      this.ws.send(JSON.stringify({id, ...cmd}))
    })
  }

  subscribe(channel, since) {
    const cmd = {op: 'subscribe', channel}
    if (since) cmd.since = since
    this.command(cmd).then(
      (reply) => this.link.subscribed(channel, {epoch: reply.epoch, offset: reply.offset}),
      (err) => {
        if (err.code === 'already_subscribed' || err.code === 'connection_closed') return
        err.channel = channel
        this.link.error(err)
      },
    )
  }

  unsubscribe(channel) {
    this.command({op: 'unsubscribe', channel}).catch(() => {})
  }

  publish(channel, data, event) {
    const cmd = {op: 'publish', channel, data}
    if (event) cmd.event = event
    return this.command(cmd).then(({channel, offset, epoch, cursor}) => ({channel, offset, epoch, cursor}))
  }

  failPending(err) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.reject(err)
    }
    this.pending.clear()
  }

  close() {
    this.failPending(new CrierError('connection_closed', 'the client closed the connection'))
    const ws = this.ws
    if (!ws) return
    ws.onopen = ws.onmessage = ws.onclose = null
    ws.onerror = () => {}
    if (ws.readyState === 0 || ws.readyState === 1) ws.close(1000)
  }
}

/** Server-Sent Events: GET /v1/sse through the browser's EventSource. */
class SSEDriver {
  static live = false
  static supported() {
    return typeof globalThis.EventSource === 'function'
  }

  constructor(link) {
    this.link = link
    this.isOpen = false
  }

  open() {
    const es = new EventSource(this.link.url('/v1/sse', this.link.query()), {withCredentials: this.link.withCredentials})
    this.es = es
    es.onopen = () => {
      this.isOpen = true
      this.link.opened()
    }
    // EventSource reconnects by itself; this client does it instead, with its own positions
    // and backoff, so any error ends this connection.
    es.onerror = () => {
      const wasOpen = this.isOpen
      this.close()
      this.link.closed({
        error: wasOpen ? null : new CrierError('connect_failed', 'EventSource could not connect to /v1/sse'),
        reason: wasOpen ? 'stream ended' : 'connect failed',
      })
    }
    // SSE names each event after the envelope's event, and EventSource only hands over the
    // event names it was asked for: the reserved ones, "message", and the client's `events`.
    const onEvent = (e) => {
      try {
        this.link.envelope(JSON.parse(e.data))
      } catch {
        this.link.error(new CrierError('bad_frame', 'an SSE event is not a JSON envelope'))
      }
    }
    for (const name of new Set(['message', EVENT_GAP, EVENT_RECONNECT, EVENT_JOIN, EVENT_LEAVE, ...this.link.events])) {
      es.addEventListener(name, onEvent)
    }
  }

  close() {
    if (!this.es) return
    this.es.onopen = this.es.onerror = null
    this.es.close()
    this.isOpen = false
  }
}

/**
 * What the fetch-based drivers share: an AbortController to end the request, and closing the
 * link with a clear error when run() fails. Subclasses set label and implement run().
 */
class FetchDriver {
  constructor(link) {
    this.link = link
    this.isOpen = false
    this.abort = new AbortController()
  }

  open() {
    this.run().catch((err) => {
      if (this.abort.signal.aborted) return
      const wasOpen = this.isOpen
      this.isOpen = false
      this.link.closed({
        error: new CrierError(wasOpen ? 'connection_lost' : 'connect_failed', `${this.label}: ${err.message}`, {cause: err}),
      })
    })
  }

  close() {
    this.isOpen = false
    this.abort.abort()
  }
}

/** HTTP streaming: GET /v1/stream, chunked NDJSON read through fetch. */
class StreamDriver extends FetchDriver {
  label = 'HTTP stream'
  static live = false
  static supported() {
    return typeof globalThis.fetch === 'function' && typeof globalThis.ReadableStream === 'function' &&
      typeof globalThis.TextDecoder === 'function' && typeof globalThis.AbortController === 'function'
  }

  async run() {
    const res = await fetch(this.link.url('/v1/stream', this.link.query()), {
      headers: {Accept: 'application/x-ndjson'},
      cache: 'no-store',
      credentials: this.link.credentials,
      signal: this.abort.signal,
    })
    if (!res.ok) {
      const error = await errorFromResponse(res, 'stream')
      this.link.closed({error, fatal: MISSING_STATUSES.has(res.status)})
      return
    }
    if (!/ndjson/.test(res.headers.get('Content-Type') || '')) {
      res.body?.cancel().catch(() => {})
      this.link.closed({error: new CrierError('bad_response', '/v1/stream did not answer NDJSON'), fatal: true})
      return
    }
    this.isOpen = true
    this.link.opened()
    const reader = res.body.getReader()
    const decoder = new TextDecoder()
    let buffered = ''
    for (;;) {
      const {value, done} = await reader.read()
      if (done) break
      buffered += decoder.decode(value, {stream: true})
      let nl
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl).trim()
        buffered = buffered.slice(nl + 1)
        if (line === '') continue // a heartbeat
        let env
        try {
          env = JSON.parse(line)
        } catch {
          this.link.error(new CrierError('bad_frame', 'an NDJSON line is not a JSON envelope'))
          continue
        }
        this.link.envelope(env)
        if (this.abort.signal.aborted) return
      }
    }
    this.isOpen = false
    if (!this.abort.signal.aborted) this.link.closed({reason: 'stream ended'})
  }
}

/** Long polling: GET /v1/poll?wait=N, one request after the other, each from the latest cursor. */
class LongPollDriver extends FetchDriver {
  label = 'long poll'
  static live = false
  static supported() {
    return typeof globalThis.fetch === 'function' && typeof globalThis.AbortController === 'function'
  }

  async run() {
    // The first request answers at once (wait=0): it tells whether the endpoint is there and
    // where each channel stands; the next ones are held until there is something new.
    let wait = 0
    while (!this.abort.signal.aborted) {
      const q = this.link.query()
      q.set('wait', String(wait))
      const res = await fetch(this.link.url('/v1/poll', q), {
        headers: {Accept: 'application/json'},
        cache: 'no-store',
        credentials: this.link.credentials,
        signal: this.abort.signal,
      })
      if (!res.ok) {
        const error = await errorFromResponse(res, 'longpoll')
        if (!this.abort.signal.aborted) this.link.closed({error, fatal: !this.isOpen && MISSING_STATUSES.has(res.status)})
        return
      }
      const body = await res.json()
      if (this.abort.signal.aborted) return
      if (!this.isOpen) {
        this.isOpen = true
        this.link.opened()
      }
      for (const env of body.messages || []) {
        this.link.envelope(env)
        if (this.abort.signal.aborted) return
      }
      if (body.cursor) this.link.cursor(body.cursor)
      wait = this.link.pollWait
    }
  }
}

let iframeSeq = 0

/**
 * Hidden iframe (script streaming): GET /v1/iframe?callback=NAME streams an HTML page whose
 * scripts call parent.NAME(envelope). Needs a page on the server's origin.
 */
class IframeDriver {
  static live = false
  static supported(client) {
    const doc = globalThis.document
    if (!doc || typeof doc.createElement !== 'function' || !globalThis.location) return false
    return client.baseURL.origin === globalThis.location.origin
  }

  constructor(link) {
    this.link = link
    this.isOpen = false
    this.callback = `crierIframe${++iframeSeq}_${Math.random().toString(36).slice(2, 10)}`
  }

  open() {
    globalThis[this.callback] = (env) => {
      if (!this.isOpen) this.markOpen()
      this.link.envelope(env)
    }
    const q = this.link.query()
    q.set('callback', this.callback)
    const iframe = document.createElement('iframe')
    iframe.setAttribute('aria-hidden', 'true')
    iframe.tabIndex = -1
    iframe.style.cssText = 'position:absolute;width:0;height:0;border:0;visibility:hidden'
    iframe.addEventListener('load', () => this.onLoad())
    iframe.src = this.link.url('/v1/iframe', q).href
    this.iframe = iframe
    ;(document.body || document.documentElement).appendChild(iframe)
    // The iframe's own document replaces about:blank as soon as the answer's head arrives and
    // the page begins to stream: that is "open". Its load event is the end of the stream.
    this.watch = setInterval(() => {
      const doc = this.doc()
      if (doc && doc.readyState === 'loading' && /html/.test(doc.contentType || '')) this.markOpen()
    }, 50)
  }

  doc() {
    try {
      const doc = this.iframe?.contentDocument
      return doc && doc.URL !== 'about:blank' ? doc : null
    } catch {
      return null // another origin: this transport cannot work here
    }
  }

  markOpen() {
    clearInterval(this.watch)
    if (this.isOpen) return
    this.isOpen = true
    this.link.opened()
  }

  onLoad() {
    const doc = this.doc()
    if (!doc) return // the initial about:blank
    const wasOpen = this.isOpen
    clearInterval(this.watch)
    this.cleanup()
    if (wasOpen && /html/.test(doc.contentType || '')) {
      this.link.closed({reason: 'stream ended'})
      return
    }
    // An error answer is a JSON document in the iframe: read its code.
    let code = 'connect_failed'
    let message = '/v1/iframe did not stream a page'
    try {
      const body = JSON.parse((doc.querySelector('pre') || doc.body)?.textContent || '')
      if (body.error) ({code, message} = body.error)
    } catch {
      // not JSON
    }
    this.link.closed({error: new CrierError(code, message, {transport: 'iframe'}), fatal: code === 'not_found' || code === 'method_not_allowed'})
  }

  cleanup() {
    clearInterval(this.watch)
    delete globalThis[this.callback]
    if (this.iframe) {
      this.iframe.remove()
      this.iframe = null
    }
  }

  close() {
    this.isOpen = false
    if (this.iframe) this.iframe.src = 'about:blank'
    this.cleanup()
  }
}

/** The transports by name; a program may add its own driver under a new name. */
export const drivers = {
  websocket: WebSocketDriver,
  sse: SSEDriver,
  stream: StreamDriver,
  longpoll: LongPollDriver,
  iframe: IframeDriver,
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/** One subscribe() call: its callbacks, and unsubscribe(). */
class Subscription {
  #client
  #closed = false

  constructor(client, channel, {onMessage, onGap, onPresence} = {}) {
    this.#client = client
    this.channel = channel
    this.onMessage = onMessage
    this.onGap = onGap
    this.onPresence = onPresence
    this.ready = new Promise((resolve) => (this._resolveReady = resolve))
  }

  /** The last position received on this channel, "EPOCH:OFFSET", or null. */
  get position() {
    return this.#client.positionOf(this.channel)
  }

  get closed() {
    return this.#closed
  }

  unsubscribe() {
    if (this.#closed) return
    this.#closed = true
    this.#client._remove(this)
    this._resolveReady()
  }
}

/**
 * A Crier client: one connection carrying every subscription, and publish and history over HTTP
 * (or over the open WebSocket). Events: 'message', 'gap', 'presence', 'reconnect', 'transport',
 * 'state', 'error'; each event's `detail` carries its data, and on(type, fn) calls fn(detail).
 */
export class Crier extends EventTarget {
  #opts
  #channels = new Map() // channel → {pos: {epoch, offset} | null, subs: Set<Subscription>, ready: boolean}
  #order // the transports to try, in order
  #index = 0 // the one being used or tried
  #driver = null // the current connection
  #generation = 0 // bumps with each connection; a stale driver's reports are dropped
  #state = 'idle'
  #timer = null // the pending (re)connection
  #failStreak = 0 // failed attempts since the last healthy connection, for backoff
  #transportFails = 0 // failed attempts on the current transport, for fallback
  #missing = new Set() // transports whose endpoint answered "not found" since the last open
  #lastOpened = null // the transport of the last connection that opened
  #stats = {received: 0, duplicates: 0, reconnects: 0}
  #connectTimer = null // the current attempt's connectTimeout
  #openedGen = -1 // the generation of the last connection that opened
  #openedAt = 0 // when it opened
  #connReceived = 0 // envelopes it delivered
  #token = undefined // the token of the current connection
  #resyncQueued = false
  #onOnline = () => {
    if (this.#state === 'waiting') this.#connectSoon(0)
  }

  /**
   * @param {string|URL} [baseURL] the server, e.g. "https://push.example.com"; default: this page's origin
   * @param {object} [options] see crier.d.ts
   */
  constructor(baseURL = globalThis.location?.origin, options = {}) {
    super()
    if (!baseURL) throw new TypeError('Crier: give the server\'s base URL')
    this.baseURL = new URL(String(baseURL))
    this.#opts = {
      ...DEFAULTS,
      ...options,
      backoff: {...DEFAULTS.backoff, ...(options.backoff || {})},
    }
    const order = options.transport ? [options.transport] : [...(options.transports || TRANSPORTS)]
    for (const name of order) {
      if (!drivers[name]) throw new TypeError(`Crier: unknown transport ${JSON.stringify(name)}`)
    }
    if (order.length === 0) throw new TypeError('Crier: no transport to use')
    this.#order = order
    globalThis.addEventListener?.('online', this.#onOnline)
  }

  // --- state ----------------------------------------------------------------------------------

  /** 'idle' (nothing subscribed), 'connecting', 'open', 'waiting' (to reconnect) or 'closed'. */
  get state() {
    return this.#state
  }

  /** The transport of the current connection (or of the one being tried); null when idle. */
  get transport() {
    return this.#state === 'idle' || this.#state === 'closed' ? null : this.#order[this.#index]
  }

  /** The cursor of every channel whose position is known: resume from it. */
  get cursor() {
    return formatCursor(this.#positions())
  }

  /** Counters: envelopes received, duplicates dropped, reconnections. */
  get stats() {
    return {...this.#stats}
  }

  /** The channels subscribed. */
  get channels() {
    return [...this.#channels.keys()]
  }

  /** The last position received on channel, "EPOCH:OFFSET", or null. */
  positionOf(channel) {
    const pos = this.#channels.get(channel)?.pos
    return pos ? formatPosition(pos) : null
  }

  /** Adds a listener that receives the event's detail; returns a function that removes it. */
  on(type, fn) {
    const listener = (e) => fn(e.detail, e)
    this.addEventListener(type, listener)
    return () => this.removeEventListener(type, listener)
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}))
  }

  #setState(state) {
    if (this.#state === state) return
    this.#state = state
    this.#emit('state', {state, transport: this.transport})
  }

  // --- subscriptions --------------------------------------------------------------------------

  /**
   * Subscribes to channel. since ("EPOCH:OFFSET") resumes after that position; without it the
   * subscription starts live. A second subscription to a channel already subscribed shares its
   * position (its since is ignored).
   */
  subscribe(channel, {since, onMessage, onGap, onPresence} = {}) {
    checkChannel(channel)
    if (this.#state === 'closed') throw new CrierError('closed', 'this client was closed')
    const sub = new Subscription(this, channel, {onMessage, onGap, onPresence})
    let st = this.#channels.get(channel)
    if (st) {
      st.subs.add(sub)
      if (st.ready) sub._resolveReady()
      return sub
    }
    let pos = null
    if (since !== undefined && since !== null && since !== '') {
      pos = typeof since === 'string' ? parsePosition(since) : since
      if (!pos || typeof pos.epoch !== 'string' || !Number.isSafeInteger(pos.offset)) {
        throw new CrierError('invalid_position', `invalid since: ${JSON.stringify(since)}`)
      }
      pos = {epoch: pos.epoch, offset: pos.offset}
    }
    st = {pos, subs: new Set([sub]), ready: false}
    this.#channels.set(channel, st)
    const d = this.#driver
    if (d && d.constructor.live) {
      // Over an open WebSocket, one more command; while it connects, its open subscribes all.
      if (d.isOpen) d.subscribe(channel, pos ? formatPosition(pos) : undefined)
    } else if (d) {
      this.#resync() // reopen the HTTP connection with the new channel
    } else if (this.#state === 'idle') {
      this.#connectSoon(0)
    } // else: waiting to reconnect; the channel goes with the next attempt
    return sub
  }

  /** Called by Subscription.unsubscribe. */
  _remove(sub) {
    const st = this.#channels.get(sub.channel)
    if (!st || !st.subs.delete(sub) || st.subs.size > 0) return
    this.#channels.delete(sub.channel)
    if (this.#channels.size === 0) {
      this.#stop('idle')
      return
    }
    const d = this.#driver
    if (d && d.constructor.live) {
      if (d.isOpen) d.unsubscribe(sub.channel)
    } else if (d) {
      this.#resync()
    }
  }

  /** Reopens the current HTTP connection with the current channel set, without backoff. */
  #resync() {
    if (this.#resyncQueued) return
    this.#resyncQueued = true
    queueMicrotask(() => {
      this.#resyncQueued = false
      if (!this.#driver) return
      this.#dropDriver()
      this.#connectSoon(0)
    })
  }

  /** Closes the connection and forgets every subscription's callbacks: the client is done. */
  close() {
    for (const st of this.#channels.values()) for (const sub of st.subs) sub._resolveReady()
    this.#channels.clear()
    this.#stop('closed')
    globalThis.removeEventListener?.('online', this.#onOnline)
  }

  /** Drops the connection now and connects again at once (keeping positions). */
  reconnect() {
    if (this.#state === 'closed' || this.#channels.size === 0) return
    this.#dropDriver()
    this.#connectSoon(0)
  }

  #stop(state) {
    clearTimeout(this.#timer)
    this.#timer = null
    this.#dropDriver()
    this.#setState(state)
  }

  #dropDriver() {
    const d = this.#driver
    this.#driver = null
    this.#generation++
    clearTimeout(this.#connectTimer)
    if (d) d.close()
  }

  // --- connecting -----------------------------------------------------------------------------

  #connectSoon(delay) {
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.#connect().catch((err) => this.#emit('error', err))
    }, delay)
  }

  async #connect() {
    if (this.#state === 'closed' || this.#channels.size === 0) {
      if (this.#state !== 'closed') this.#setState('idle')
      return
    }
    this.#dropDriver()
    // Skip transports this environment cannot speak.
    for (let i = 0; i < this.#order.length; i++) {
      if (drivers[this.#order[this.#index]].supported(this)) break
      if (i === this.#order.length - 1) {
        this.#setState('waiting')
        this.#emit('error', new CrierError('unsupported', `none of the transports ${this.#order.join(', ')} works in this environment`))
        return
      }
      this.#index = (this.#index + 1) % this.#order.length
    }
    const name = this.#order[this.#index]
    const Driver = drivers[name]
    const gen = this.#generation
    this.#setState('connecting')
    this.#token = await this.#getToken()
    if (!Driver.live && this.#opts.resolveLive) await this.#resolveLive()
    if (gen !== this.#generation || this.#state !== 'connecting') return // overtaken meanwhile
    const driver = new Driver(this.#link(gen, name))
    this.#driver = driver
    this.#connectTimer = setTimeout(() => {
      if (gen !== this.#generation || driver.isOpen) return
      driver.close()
      this.#closed(gen, {error: new CrierError('timeout', `${name}: not connected within ${this.#opts.connectTimeout} ms`)})
    }, this.#opts.connectTimeout)
    try {
      driver.open()
    } catch (err) {
      this.#closed(gen, {error: new CrierError('connect_failed', `${name}: ${err.message}`, {cause: err})})
    }
  }

  /** Reads the position of every channel subscribed live that has none yet. */
  async #resolveLive() {
    const unplaced = [...this.#channels].filter(([, st]) => !st.pos)
    await Promise.all(unplaced.map(async ([channel, st]) => {
      try {
        const res = await this.#fetch(`/v1/channels/${encodeURIComponent(channel)}`)
        if (!res.ok) return
        const info = await res.json()
        if (!st.pos && typeof info.epoch === 'string' && Number.isSafeInteger(info.offset)) {
          st.pos = {epoch: info.epoch, offset: info.offset}
        }
      } catch {
        // Start live without a position; only a reconnection before the first message could miss one.
      }
    }))
  }

  /** The callbacks one driver reports through, bound to its connection's generation. */
  #link(gen, name) {
    const client = this
    const current = () => gen === client.#generation
    return {
      timeout: this.#opts.connectTimeout,
      pollWait: this.#opts.pollWait,
      events: this.#opts.events,
      withCredentials: !!this.#opts.withCredentials,
      credentials: this.#opts.withCredentials ? 'include' : 'same-origin',
      url: (path, params) => this.#url(path, params, true),
      channels: () => [...this.#channels].map(([channel, st]) => ({channel, since: st.pos ? formatPosition(st.pos) : undefined})),
      query: () => this.#query(),
      opened: () => current() && this.#opened(name, gen),
      envelope: (env) => current() && this.#envelope(env),
      subscribed: (channel, pos) => {
        if (!current()) return
        const st = this.#channels.get(channel)
        if (!st) return
        if (!st.pos && pos.epoch !== undefined) st.pos = pos
        this.#markReady(st)
      },
      cursor: (text) => {
        if (!current()) return
        for (const [channel, pos] of parseCursor(text)) {
          const st = this.#channels.get(channel)
          if (st && !st.pos) st.pos = pos
        }
      },
      error: (err) => current() && this.#emit('error', Object.assign(err, {transport: name})),
      closed: (info) => this.#closed(gen, info),
    }
  }

  #url(path, params, withToken) {
    const url = new URL(this.baseURL.href.replace(/\/+$/, '') + path)
    if (params) for (const [k, v] of params) url.searchParams.append(k, v)
    if (withToken && this.#token) url.searchParams.set('token', this.#token)
    return url
  }

  /** The subscribe query of the HTTP transports: cursor= for known positions, channel= for the rest. */
  #query() {
    const q = new URLSearchParams()
    const cursor = this.cursor
    if (cursor) q.set('cursor', cursor)
    for (const [channel, st] of this.#channels) if (!st.pos) q.append('channel', channel)
    return q
  }

  #positions() {
    const out = []
    for (const [channel, st] of this.#channels) if (st.pos) out.push([channel, st.pos])
    return out
  }

  #markReady(st) {
    if (st.ready) return
    st.ready = true
    for (const sub of st.subs) sub._resolveReady()
  }

  #opened(name, gen) {
    clearTimeout(this.#connectTimer)
    this.#openedGen = gen
    this.#openedAt = Date.now()
    this.#connReceived = 0
    this.#transportFails = 0
    this.#missing.clear()
    if (!drivers[name].live) for (const st of this.#channels.values()) this.#markReady(st)
    this.#setState('open')
    if (this.#lastOpened !== name) {
      const previous = this.#lastOpened
      this.#lastOpened = name
      this.#emit('transport', {transport: name, previous})
    }
  }

  #closed(gen, {error = null, fatal = false, reason, retryAfter} = {}) {
    if (gen !== this.#generation) return
    const name = this.#order[this.#index]
    const wasOpen = this.#openedGen === gen
    this.#dropDriver()
    if (this.#state === 'closed' || this.#channels.size === 0) return
    if (error) {
      if (!error.transport) error.transport = name
      this.#emit('error', error)
    }
    // A connection that opened and delivered something, or lasted a while, was healthy: the next
    // attempt starts the backoff over. One that the server ended at once without a word (it
    // refused the subscription after answering, say) counts as a failure, so that a client
    // does not hammer a server that keeps turning it away.
    const healthy = wasOpen && (this.#connReceived > 0 || Date.now() - this.#openedAt >= STABLE_MS)
    if (healthy) this.#failStreak = 0
    else if (wasOpen && retryAfter === undefined) this.#failStreak++
    if (!wasOpen && retryAfter === undefined) {
      this.#failStreak++
      this.#transportFails++
      if (fatal) this.#missing.add(name)
      if ((fatal || this.#transportFails >= this.#opts.maxFailures) && this.#order.length > 1) {
        this.#index = (this.#index + 1) % this.#order.length
        this.#transportFails = 0
      }
    }
    let delay
    if (retryAfter !== undefined) {
      delay = retryAfter
    } else if (!wasOpen && fatal && this.#order.length > 1 && this.#missing.size < this.#order.length) {
      delay = 0 // that endpoint does not exist here: try the next transport at once
    } else {
      delay = backoffDelay(healthy ? 0 : this.#failStreak - 1, this.#opts.backoff)
    }
    this.#stats.reconnects++
    this.#setState('waiting')
    this.#emit('reconnect', {attempt: this.#failStreak, delay, transport: this.#order[this.#index], reason: reason || error?.message || 'closed'})
    this.#connectSoon(delay)
  }

  // --- receiving ------------------------------------------------------------------------------

  #envelope(env) {
    if (!env || typeof env !== 'object' || typeof env.channel !== 'string') {
      this.#emit('error', new CrierError('bad_frame', 'received something that is not an envelope'))
      return
    }
    this.#connReceived++
    const st = this.#channels.get(env.channel)
    if (!st) return // unsubscribed meanwhile
    switch (env.event) {
      case EVENT_RECONNECT: {
        // The server is draining: leave now, come back after data.after_ms (plus some jitter,
        // so that every client of a node does not return in the same millisecond).
        const after = Math.max(0, Number(env.data?.after_ms) || 0)
        const gen = this.#generation
        this.#closed(gen, {reason: 'server asked to reconnect', retryAfter: after + backoffDelay(0, this.#opts.backoff)})
        return
      }
      case EVENT_JOIN:
      case EVENT_LEAVE:
        for (const sub of st.subs) this.#call(sub.onPresence, env)
        this.#emit('presence', env)
        return
      case EVENT_GAP:
        // What follows starts after the gap's position: resync from there.
        st.pos = {epoch: env.epoch, offset: env.offset}
        for (const sub of st.subs) this.#call(sub.onGap, env)
        this.#emit('gap', env)
        return
    }
    if (st.pos && st.pos.epoch === env.epoch && env.offset <= st.pos.offset) {
      this.#stats.duplicates++
      return
    }
    st.pos = {epoch: env.epoch, offset: env.offset}
    this.#stats.received++
    for (const sub of st.subs) this.#call(sub.onMessage, env)
    this.#emit('message', env)
  }

  #call(fn, env) {
    if (typeof fn !== 'function') return
    try {
      fn(env)
    } catch (err) {
      report(err)
    }
  }

  // --- publishing and history -----------------------------------------------------------------

  async #getToken() {
    const t = this.#opts.token
    return typeof t === 'function' ? t() : t
  }

  async #fetch(path, init = {}, params) {
    const headers = new Headers(init.headers || {})
    const token = await this.#getToken()
    if (token && !headers.has('Authorization')) headers.set('Authorization', `Bearer ${token}`)
    return fetch(this.#url(path, params, false), {
      ...init,
      headers,
      cache: 'no-store',
      credentials: this.#opts.withCredentials ? 'include' : 'same-origin',
    })
  }

  /**
   * Publishes data on channel and resolves with {channel, offset, epoch, cursor}.
   * A Blob, ArrayBuffer or typed array goes as bytes, a string as text, anything else as JSON,
   * unless contentType says otherwise. With via 'auto' (the default) a JSON value without
   * contentType, idempotencyKey or ttl goes over the open WebSocket when there is one; 'http'
   * and 'ws' force the way.
   */
  async publish(channel, data, {event, contentType, idempotencyKey, ttl, via = 'auto'} = {}) {
    checkChannel(channel)
    const d = this.#driver
    const wsUsable = d && d.isOpen && typeof d.publish === 'function' && isJSONValue(data) &&
      contentType === undefined && idempotencyKey === undefined && ttl === undefined
    if (via === 'ws' || (via === 'auto' && wsUsable)) {
      if (!wsUsable) throw new CrierError('not_connected', 'publish via ws needs an open WebSocket and a JSON value')
      return d.publish(channel, data, event)
    }
    let body = data
    let type = contentType
    if (typeof Blob !== 'undefined' && data instanceof Blob) {
      type ??= data.type || 'application/octet-stream'
    } else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      type ??= 'application/octet-stream'
    } else if (typeof data === 'string') {
      type ??= 'text/plain; charset=utf-8'
    } else {
      type ??= 'application/json'
      body = JSON.stringify(data)
    }
    const params = new URLSearchParams()
    if (event) params.set('event', event)
    if (ttl !== undefined) params.set('ttl', String(ttl))
    const headers = {'Content-Type': type}
    if (idempotencyKey !== undefined) headers['Idempotency-Key'] = String(idempotencyKey)
    const res = await this.#fetch(`/v1/channels/${encodeURIComponent(channel)}`, {method: 'POST', headers, body}, params)
    if (!res.ok) throw await errorFromResponse(res)
    return res.json()
  }

  /**
   * Reads a channel's history, oldest first: {messages, epoch, offset, gap?}. Without since, the
   * newest `limit` messages.
   */
  async history(channel, {since, limit} = {}) {
    checkChannel(channel)
    const params = new URLSearchParams()
    if (since) params.set('since', typeof since === 'string' ? since : formatPosition(since))
    if (limit !== undefined) params.set('limit', String(limit))
    const res = await this.#fetch(`/v1/channels/${encodeURIComponent(channel)}/messages`, {}, params)
    if (!res.ok) throw await errorFromResponse(res)
    return res.json()
  }
}

export default Crier
