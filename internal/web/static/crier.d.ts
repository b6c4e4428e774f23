// Types of crier.js, the browser client of Crier. Served at /crier.d.ts beside /crier.js.

/** A transport crier.js speaks. */
export type TransportName = 'websocket' | 'sse' | 'stream' | 'longpoll' | 'iframe'

/** The transports in the default order of preference. */
export declare const TRANSPORTS: readonly TransportName[]

/** A position in one epoch of a channel's history: "I have everything up to offset". */
export interface Position {
  epoch: string
  offset: number
}

/** What every transport delivers: one message (or one of the server's crier.* events). */
export interface Envelope<T = unknown> {
  channel: string
  offset: number
  epoch: string
  /** RFC 3339 with milliseconds, UTC. */
  time: string
  /** The publisher's event type ("message" by default); crier.gap, crier.reconnect, crier.join, crier.leave are the server's. */
  event: string
  /** JSON as published; a string for text; standard base64 for anything else (see encoding). */
  data: T
  encoding?: 'base64'
  content_type?: string
  /** The cursor of the connection after this message. */
  cursor: string
}

/** A publish answer. */
export interface PublishResult {
  channel: string
  offset: number
  epoch: string
  cursor: string
}

/** A history answer, oldest first; gap: part of what follows since is no longer held. */
export interface HistoryResult {
  messages: Envelope[]
  epoch: string
  /** The channel's latest offset. */
  offset: number
  gap?: boolean
}

export interface BackoffOptions {
  /** Milliseconds; the first retry waits up to this. Default 500. */
  base?: number
  /** Milliseconds; no retry waits longer. Default 30000. */
  max?: number
}

export interface CrierOptions {
  /** Transports to try, in order. Default: all, as in TRANSPORTS. */
  transports?: TransportName[]
  /** Use this transport only (no fallback); for tests and demos. */
  transport?: TransportName
  /** A JWT (or a function that returns one) sent as ?token= on connections, Bearer on HTTP calls. */
  token?: string | (() => string | undefined | Promise<string | undefined>)
  /** Reconnection delays: exponential backoff with full jitter. */
  backoff?: BackoffOptions
  /** Failed attempts in a row on one transport before trying the next. Default 2. */
  maxFailures?: number
  /** Milliseconds for a connection to open (and for a WebSocket command's reply). Default 10000. */
  connectTimeout?: number
  /** Seconds a long poll is held. Default 30. */
  pollWait?: number
  /**
   * Publisher event names to receive over SSE besides "message": EventSource only hands over
   * the event names it listens for. Other transports deliver every event.
   */
  events?: string[]
  /** Read the position of channels subscribed live before an HTTP transport connects. Default true. */
  resolveLive?: boolean
  /** Send cookies to another origin (EventSource withCredentials, fetch credentials "include"). */
  withCredentials?: boolean
}

export interface SubscribeOptions<T = unknown> {
  /** "EPOCH:OFFSET" (or a Position): resume after it. Without it the subscription starts live. */
  since?: string | Position
  onMessage?: (env: Envelope<T>) => void
  /** crier.gap: part of what was asked for is gone; env's epoch:offset is where the channel now stands. */
  onGap?: (env: Envelope<{ reason?: string }>) => void
  /** crier.join and crier.leave, where the namespace has presence. */
  onPresence?: (env: Envelope) => void
}

export interface Subscription {
  readonly channel: string
  /** The last position received on the channel, "EPOCH:OFFSET", or null. */
  readonly position: string | null
  readonly closed: boolean
  /** Resolves once the channel is live on a connection (or the subscription is closed). */
  readonly ready: Promise<void>
  unsubscribe(): void
}

export interface PublishOptions {
  /** The event type; default "message". */
  event?: string
  /** Default: the Blob's type, application/octet-stream for bytes, text/plain for a string, application/json otherwise. */
  contentType?: string
  idempotencyKey?: string
  /** Seconds the message stays in history. */
  ttl?: number
  /** 'auto' (default): a plain JSON value goes over the open WebSocket if there is one; else HTTP POST. */
  via?: 'auto' | 'http' | 'ws'
}

export interface HistoryOptions {
  since?: string | Position
  limit?: number
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'waiting' | 'closed'

export interface CrierEventMap {
  message: Envelope
  gap: Envelope
  presence: Envelope
  reconnect: { attempt: number; delay: number; transport: TransportName; reason: string }
  transport: { transport: TransportName; previous: TransportName | null }
  state: { state: ConnectionState; transport: TransportName | null }
  error: CrierError
}

export declare class CrierError extends Error {
  /** The server's snake_case error code, or connect_failed, connection_lost, timeout, not_connected, … */
  code: string
  status?: number
  transport?: TransportName
  channel?: string
  constructor(code: string, message: string, extra?: { status?: number; transport?: TransportName; channel?: string; cause?: unknown })
}

export declare class Crier extends EventTarget {
  /** baseURL defaults to the page's origin. */
  constructor(baseURL?: string | URL, options?: CrierOptions)
  readonly baseURL: URL
  readonly state: ConnectionState
  readonly transport: TransportName | null
  /** The cursor of every channel whose position is known. */
  readonly cursor: string
  readonly channels: string[]
  readonly stats: { received: number; duplicates: number; reconnects: number }
  positionOf(channel: string): string | null

  subscribe<T = unknown>(channel: string, options?: SubscribeOptions<T>): Subscription
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<PublishResult>
  history(channel: string, options?: HistoryOptions): Promise<HistoryResult>
  /** Drops the connection and connects again at once, keeping positions. */
  reconnect(): void
  /** Closes the connection and drops every subscription. */
  close(): void

  /** Calls fn with each event's detail; returns a function that removes it. */
  on<K extends keyof CrierEventMap>(type: K, fn: (detail: CrierEventMap[K], event: CustomEvent<CrierEventMap[K]>) => void): () => void
  addEventListener<K extends keyof CrierEventMap>(type: K, listener: (event: CustomEvent<CrierEventMap[K]>) => void, options?: boolean | AddEventListenerOptions): void
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void
}

/** A driver: one connection over one transport, reporting to the client through link. */
export interface DriverClass {
  new (link: unknown): { isOpen: boolean; open(): void; close(): void }
  /** True when channels are added on the open connection (WebSocket). */
  live: boolean
  supported(client: Crier): boolean
}

/** The drivers by transport name; a program may register its own. */
export declare const drivers: Record<string, DriverClass>

export declare function parsePosition(text: string): Position | null
export declare function formatPosition(pos: Position): string
export declare function parseCursor(text: string): Map<string, Position>
export declare function formatCursor(entries: Iterable<[string, Position]>): string
/** A random delay in [0, min(max, base·2^attempt)) milliseconds. */
export declare function backoffDelay(attempt: number, backoff?: BackoffOptions, random?: () => number): number
/** The payload as bytes when it travelled as base64; null otherwise. */
export declare function payloadBytes(env: Envelope): Uint8Array | null

export default Crier
