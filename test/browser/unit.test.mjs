// crier.js's own logic in Node.js, without a browser or a server: a scripted driver stands in
// for the network, so that duplicates, gaps, crier.reconnect, fallback and backoff can be
// provoked exactly. The browser tests cover the real transports.
//
// Run: node --test unit.test.mjs

import {test} from 'node:test'
import assert from 'node:assert/strict'

import {
  Crier, CrierError, backoffDelay, drivers, formatCursor, parseCursor, parsePosition, payloadBytes,
} from '../../internal/web/static/crier.js'

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * Scripted is a driver the test controls: every connection it makes is recorded in
 * Scripted.conns, and the test calls open(), send(env) and end() on it.
 */
function scripted({live = false} = {}) {
  return class Scripted {
    static live = live
    static conns = []
    static supported() {
      return true
    }

    constructor(link) {
      this.link = link
      this.isOpen = false
      this.closedByClient = false
      this.commands = []
      Scripted.conns.push(this)
    }

    open() {
      this.query = this.link.query().toString()
      this.channelsAtOpen = this.link.channels()
    }

    // For the test:
    accept() {
      this.isOpen = true
      this.link.opened()
    }

    send(env) {
      this.link.envelope(env)
    }

    end(info = {}) {
      this.isOpen = false
      this.link.closed(info)
    }

    // As a live (WebSocket-like) driver:
    subscribe(channel, since) {
      this.commands.push({op: 'subscribe', channel, since})
    }

    unsubscribe(channel) {
      this.commands.push({op: 'unsubscribe', channel})
    }

    close() {
      this.closedByClient = true
      this.isOpen = false
    }
  }
}

function env(channel, epoch, offset, data = {offset}, event = 'message') {
  return {channel, epoch, offset, event, data, time: new Date().toISOString(), cursor: `${channel}@${epoch}:${offset}`}
}

/** until polls cond every few ms for up to ms. */
async function until(cond, ms = 2000, what = 'condition') {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

function client(transports, opts = {}) {
  const c = new Crier('http://crier.invalid', {transports, resolveLive: false, backoff: {base: 10, max: 40}, ...opts})
  const seen = {message: [], gap: [], reconnect: [], transport: [], error: [], state: []}
  for (const type of Object.keys(seen)) c.on(type, (d) => seen[type].push(d))
  return {c, seen}
}

test('positions and cursors parse and format', () => {
  assert.deepEqual(parsePosition('Ab_9-x:42'), {epoch: 'Ab_9-x', offset: 42})
  assert.equal(parsePosition('nope'), null)
  assert.equal(parsePosition('e:-1'), null)
  assert.equal(parsePosition('e:'), null)
  // Channel names may hold ':', '=', '~', '.', '-', '_'.
  const text = 'chat:lobby@q7Rk2x:42,a.b=c~d@E:0'
  const cur = parseCursor(text)
  assert.deepEqual([...cur.keys()], ['chat:lobby', 'a.b=c~d'])
  assert.deepEqual(cur.get('chat:lobby'), {epoch: 'q7Rk2x', offset: 42})
  assert.equal(formatCursor(cur), text)
  assert.equal(parseCursor('garbage,x@y').size, 0)
})

test('backoff: full jitter under an exponential ceiling, capped', () => {
  const top = () => 0.999999
  assert.equal(backoffDelay(0, {base: 100, max: 5000}, () => 0), 0)
  assert.equal(backoffDelay(0, {base: 100, max: 5000}, top), 99)
  assert.equal(backoffDelay(3, {base: 100, max: 5000}, top), 799)
  assert.equal(backoffDelay(10, {base: 100, max: 5000}, top), 4999)
  assert.equal(backoffDelay(1000, {base: 100, max: 5000}, top), 4999)
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(2, {base: 100, max: 5000})
    assert.ok(d >= 0 && d < 400 && Number.isInteger(d))
  }
})

test('payloadBytes decodes base64 payloads only', () => {
  assert.deepEqual([...payloadBytes({encoding: 'base64', data: 'AQID'})], [1, 2, 3])
  assert.equal(payloadBytes({data: 'AQID'}), null)
})

test('one connection carries every channel: cursor= for known positions, channel= for the rest', async () => {
  const D = drivers.httpish = scripted()
  const {c} = client(['httpish'])
  const a = c.subscribe('news', {since: 'E1:5'})
  c.subscribe('chat:lobby')
  await until(() => D.conns.length === 1, 2000, 'a connection')
  assert.equal(D.conns.length, 1, 'both subscriptions share one connection')
  const q = new URLSearchParams(D.conns[0].query)
  assert.equal(q.get('cursor'), 'news@E1:5')
  assert.deepEqual(q.getAll('channel'), ['chat:lobby'])
  D.conns[0].accept()
  await a.ready
  assert.equal(c.state, 'open')
  D.conns[0].send(env('chat:lobby', 'E2', 1))
  assert.equal(c.cursor, 'news@E1:5,chat:lobby@E2:1')
  // A new channel reopens the HTTP connection with all three, from where each stands.
  c.subscribe('third')
  await until(() => D.conns.length === 2, 2000, 'the reopened connection')
  assert.ok(D.conns[0].closedByClient)
  const q2 = new URLSearchParams(D.conns[1].query)
  assert.equal(q2.get('cursor'), 'news@E1:5,chat:lobby@E2:1')
  assert.deepEqual(q2.getAll('channel'), ['third'])
  c.close()
  assert.equal(c.state, 'closed')
  assert.ok(D.conns[1].closedByClient)
})

test('duplicates are dropped by offset per channel and epoch', async () => {
  const D = drivers.dups = scripted()
  const {c, seen} = client(['dups'])
  const got = []
  c.subscribe('ch', {since: 'E:0', onMessage: (e) => got.push(`${e.epoch}:${e.offset}`)})
  c.subscribe('other', {since: 'E:0'})
  await until(() => D.conns.length === 1)
  const d = D.conns[0]
  d.accept()
  for (const o of [1, 2, 2, 1, 3]) d.send(env('ch', 'E', o))
  d.send(env('other', 'E', 1)) // another channel's offsets are its own
  d.send(env('ch', 'E', 3))
  assert.deepEqual(got, ['E:1', 'E:2', 'E:3'])
  assert.equal(seen.message.length, 4)
  assert.equal(c.stats.duplicates, 3)
  assert.equal(c.stats.received, 4)
  c.close()
})

test('crier.gap moves the position, calls onGap, and later offsets of the new epoch flow', async () => {
  const D = drivers.gaps = scripted()
  const {c, seen} = client(['gaps'])
  const gaps = []
  const got = []
  const sub = c.subscribe('ch', {since: 'old:9', onMessage: (e) => got.push(e.offset), onGap: (e) => gaps.push(e)})
  await until(() => D.conns.length === 1)
  const d = D.conns[0]
  d.accept()
  d.send(env('ch', 'new', 4, {reason: 'epoch'}, 'crier.gap'))
  assert.equal(sub.position, 'new:4')
  assert.equal(gaps.length, 1)
  assert.equal(seen.gap.length, 1)
  assert.equal(got.length, 0, 'a gap is not a message')
  d.send(env('ch', 'new', 5))
  d.send(env('ch', 'new', 4)) // behind the gap's position: a duplicate
  assert.deepEqual(got, [5])
  // A cleared history: a gap to offset 0 of another epoch; offset 1 then counts again.
  d.send(env('ch', 'newer', 0, {reason: 'cleared'}, 'crier.gap'))
  d.send(env('ch', 'newer', 1))
  assert.deepEqual(got, [5, 1])
  assert.equal(c.cursor, 'ch@newer:1')
  c.close()
})

test('crier.reconnect: leave, and come back after data.after_ms with the cursor', async () => {
  const D = drivers.drain = scripted()
  const {c, seen} = client(['drain'], {backoff: {base: 10, max: 10}})
  c.subscribe('ch', {since: 'E:0'})
  await until(() => D.conns.length === 1)
  D.conns[0].accept()
  D.conns[0].send(env('ch', 'E', 1))
  const t0 = Date.now()
  D.conns[0].send(env('ch', 'E', 1, {after_ms: 150}, 'crier.reconnect'))
  assert.ok(D.conns[0].closedByClient, 'the client leaves at once')
  assert.equal(c.state, 'waiting')
  assert.equal(seen.reconnect.length, 1)
  assert.ok(seen.reconnect[0].delay >= 150 && seen.reconnect[0].delay < 160, `delay ${seen.reconnect[0].delay}`)
  await until(() => D.conns.length === 2, 2000, 'the reconnection')
  assert.ok(Date.now() - t0 >= 145, 'not before after_ms')
  assert.equal(new URLSearchParams(D.conns[1].query).get('cursor'), 'ch@E:1')
  assert.equal(seen.message.length, 1, 'crier.reconnect is not a message')
  c.close()
})

test('a connection that ends is resumed from the last position, with backoff after failures', async () => {
  const D = drivers.ends = scripted()
  const {c, seen} = client(['ends'], {backoff: {base: 20, max: 40}})
  c.subscribe('ch', {since: 'E:0'})
  await until(() => D.conns.length === 1)
  D.conns[0].accept()
  D.conns[0].send(env('ch', 'E', 1))
  D.conns[0].send(env('ch', 'E', 2))
  D.conns[0].end() // a clean end (say, the server's max lifetime): no error
  assert.equal(seen.error.length, 0)
  assert.ok(seen.reconnect[0].delay < 20, 'after a connection that was open: attempt 0')
  await until(() => D.conns.length === 2)
  assert.equal(new URLSearchParams(D.conns[1].query).get('cursor'), 'ch@E:2')
  // Failures before open grow the backoff: attempt 1 < 40 (capped), and errors are reported.
  D.conns[1].end({error: new CrierError('connect_failed', 'refused')})
  assert.equal(seen.error.length, 1)
  assert.equal(seen.error[0].transport, 'ends')
  assert.equal(seen.reconnect[1].attempt, 1)
  await until(() => D.conns.length === 3)
  D.conns[2].accept()
  assert.equal(c.state, 'open')
  assert.equal(c.stats.reconnects, 2)
  c.close()
})

test('a connection the server ends at once, without a word, still backs off', async () => {
  const D = drivers.slammed = scripted()
  const {c, seen} = client(['slammed'], {backoff: {base: 5, max: 1000}})
  c.subscribe('ch', {since: 'E:0'})
  for (let i = 0; i < 3; i++) {
    await until(() => D.conns.length === i + 1)
    D.conns[i].accept()
    D.conns[i].end() // opened, delivered nothing, ended within STABLE_MS
    assert.equal(seen.reconnect.at(-1).attempt, i + 1)
  }
  assert.equal(seen.error.length, 0)
  // One that delivers is healthy again: the backoff starts over.
  await until(() => D.conns.length === 4)
  D.conns[3].accept()
  D.conns[3].send(env('ch', 'E', 1))
  D.conns[3].end()
  assert.equal(seen.reconnect.at(-1).attempt, 0)
  c.close()
})

test('fallback: a missing endpoint at once, a failing one after maxFailures, wrapping around', async () => {
  const Missing = drivers.fbMissing = scripted()
  const Flaky = drivers.fbFlaky = scripted()
  const Good = drivers.fbGood = scripted()
  const {c, seen} = client(['fbMissing', 'fbFlaky', 'fbGood'], {maxFailures: 2})
  c.subscribe('ch')
  await until(() => Missing.conns.length === 1)
  Missing.conns[0].end({error: new CrierError('not_found', 'no such endpoint', {status: 404}), fatal: true})
  assert.equal(seen.reconnect.at(-1).delay, 0, 'a missing endpoint: the next transport at once')
  assert.equal(seen.reconnect.at(-1).transport, 'fbFlaky')
  await until(() => Flaky.conns.length === 1)
  Flaky.conns[0].end({error: new CrierError('connect_failed', 'refused')})
  assert.equal(seen.reconnect.at(-1).transport, 'fbFlaky', 'one failure: try the same again')
  await until(() => Flaky.conns.length === 2)
  Flaky.conns[1].end({error: new CrierError('connect_failed', 'refused')})
  assert.equal(seen.reconnect.at(-1).transport, 'fbGood')
  await until(() => Good.conns.length === 1)
  Good.conns[0].accept()
  assert.equal(c.transport, 'fbGood')
  assert.deepEqual(seen.transport, [{transport: 'fbGood', previous: null}])
  // The good one fails twice later: round to the first again.
  Good.conns[0].end()
  await until(() => Good.conns.length === 2)
  Good.conns[1].end({error: new CrierError('connect_failed', 'x')})
  await until(() => Good.conns.length === 3)
  Good.conns[2].end({error: new CrierError('connect_failed', 'x')})
  await until(() => Missing.conns.length === 2, 2000, 'wrapping around to the first transport')
  c.close()
})

test('a forced transport never falls back, and keeps retrying with a capped backoff', async () => {
  const Only = drivers.only = scripted()
  const {c, seen} = client(['websocket'], {transport: 'only', backoff: {base: 5, max: 20}})
  c.subscribe('ch')
  for (let i = 0; i < 4; i++) {
    await until(() => Only.conns.length === i + 1)
    Only.conns[i].end({error: new CrierError('not_found', 'nope', {status: 404}), fatal: true})
    assert.equal(seen.reconnect.at(-1).transport, 'only')
    assert.ok(seen.reconnect.at(-1).delay < 20)
  }
  c.close()
})

test('WebSocket-like drivers subscribe and unsubscribe on the open connection', async () => {
  const D = drivers.livey = scripted({live: true})
  const {c} = client(['livey'])
  const a = c.subscribe('a', {since: 'E:3'})
  await until(() => D.conns.length === 1)
  const d = D.conns[0]
  c.subscribe('b') // while connecting: goes with the open
  d.accept()
  // The driver itself subscribes link.channels() on open (as the WebSocket driver does):
  assert.deepEqual(d.link.channels(), [{channel: 'a', since: 'E:3'}, {channel: 'b', since: undefined}])
  d.link.subscribed('a', {epoch: 'E', offset: 3})
  d.link.subscribed('b', {epoch: 'F', offset: 7})
  await a.ready
  assert.equal(c.positionOf('b'), 'F:7', 'a live subscription starts at the position the server reports')
  const s3 = c.subscribe('c')
  c.subscribe('a').unsubscribe() // a second subscription to a, dropped: a stays
  s3.unsubscribe()
  assert.deepEqual(d.commands, [{op: 'subscribe', channel: 'c', since: undefined}, {op: 'unsubscribe', channel: 'c'}])
  assert.equal(D.conns.length, 1, 'no reconnection for subscription changes')
  // Envelopes of a channel no longer subscribed are ignored.
  d.send(env('c', 'E', 1))
  assert.equal(c.stats.received, 0)
  a.unsubscribe()
  c.channels.forEach((ch) => assert.notEqual(ch, 'a'))
  c.close()
})

test('the last unsubscribe closes the connection; a new subscribe opens one', async () => {
  const D = drivers.idle = scripted()
  const {c} = client(['idle'])
  const s = c.subscribe('ch')
  await until(() => D.conns.length === 1)
  D.conns[0].accept()
  s.unsubscribe()
  assert.equal(c.state, 'idle')
  assert.ok(D.conns[0].closedByClient)
  c.subscribe('ch2')
  await until(() => D.conns.length === 2)
  c.close()
})

test('bad input is refused early', () => {
  const {c} = client(['websocket'])
  assert.throws(() => c.subscribe('bad channel'), /invalid channel/)
  assert.throws(() => c.subscribe('x'.repeat(201)), /invalid channel/)
  assert.throws(() => c.subscribe('ok', {since: 'nope'}), /invalid since/)
  assert.throws(() => new Crier('http://x', {transports: ['carrier-pigeon']}), /unknown transport/)
  c.close()
  assert.throws(() => c.subscribe('ok'), /closed/)
})

test('an exception in onMessage does not stop delivery', async () => {
  const D = drivers.throwing = scripted()
  const {c} = client(['throwing'])
  const got = []
  const origError = console.error
  const reported = []
  console.error = (e) => reported.push(e)
  try {
    c.subscribe('ch', {since: 'E:0', onMessage: () => { throw new Error('boom') }})
    c.subscribe('ch', {onMessage: (e) => got.push(e.offset)})
    await until(() => D.conns.length === 1)
    D.conns[0].accept()
    D.conns[0].send(env('ch', 'E', 1))
    D.conns[0].send(env('ch', 'E', 2))
  } finally {
    console.error = origError
  }
  assert.deepEqual(got, [1, 2])
  assert.equal(reported.length, 2)
  c.close()
})
