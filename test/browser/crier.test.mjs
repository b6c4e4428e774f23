// crier.js in Chromium, over every transport it speaks, against a real server: messages published
// over HTTP arrive in order with their payloads intact, publish and history work, crier.gap is
// handled, and a subscriber whose connection the server keeps ending (a short --max-lifetime)
// resumes from its cursor with nothing lost and nothing twice. Transports whose endpoint
// answers 404 on the server under test are skipped, and light up when the endpoint lands.
//
// Run: CRIER_URL=http://127.0.0.1:8080 CRIER_SHORT_URL=http://127.0.0.1:8081 node --test crier.test.mjs

import {after, before, describe, test} from 'node:test'
import assert from 'node:assert/strict'

import {Client} from './harness.mjs'
import {
  BASE, SHORT_BASE, assertOffsets, clearHistory, launch, missingTransports, publish, requireServer,
  skipReason, sleep, uniqueChannel,
} from './lib.mjs'

requireServer()

const TRANSPORTS = ['websocket', 'sse', 'stream', 'longpoll', 'iframe']
const missing = await missingTransports(BASE)
const shortMissing = await missingTransports(SHORT_BASE)
const FAST = {base: 100, max: 1000} // backoff for tests: reconnect quickly
const T = 30000 // each test's time limit, in ms

let browser
before(async () => {
  browser = await launch()
})
after(async () => {
  await browser?.close()
})

// A tiny PNG-ish byte string: what matters is that non-text bytes survive base64.
const BYTES = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0x10, 0x80]

function assertEnvelope(env, ack, {event = 'message'} = {}) {
  assert.equal(env.channel, ack.channel)
  assert.equal(env.offset, ack.offset)
  assert.equal(env.epoch, ack.epoch)
  assert.equal(env.event, event)
  assert.match(env.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  // On a connection with several channels the cursor names them all.
  assert.ok(env.cursor.split(',').includes(ack.cursor), `cursor ${env.cursor} holds ${ack.cursor}`)
  assert.equal(env.id, undefined, 'pushed envelopes carry no id')
}

for (const transport of TRANSPORTS) {
  describe(`crier.js over ${transport}`, {skip: skipReason(missing, transport)}, () => {
    test('receives JSON, text and bytes published over HTTP, in order, on two channels', {timeout: T}, async () => {
      const page = await browser.newPage()
      try {
        const c = await Client.open(page, {transport, events: ['update'], backoff: FAST})
        const a = uniqueChannel('a')
        const b = uniqueChannel('b')
        assert.equal(await c.subscribe(a), transport)
        assert.equal(await c.subscribe(b), transport)
        const acks = [
          await publish(BASE, a, {n: 1, text: 'héllo ✓'}),
          await publish(BASE, b, 'plain text', {contentType: 'text/plain; charset=utf-8'}),
          await publish(BASE, a, Buffer.from(BYTES), {contentType: 'application/octet-stream'}),
          await publish(BASE, b, {n: 2}, {event: 'update'}),
        ]
        await c.waitFor(4)
        const gotA = await c.received(a)
        const gotB = await c.received(b)
        assert.deepEqual(gotA.map((e) => e.offset), [1, 2])
        assert.deepEqual(gotB.map((e) => e.offset), [1, 2])
        assertEnvelope(gotA[0], acks[0])
        assert.deepEqual(gotA[0].data, {n: 1, text: 'héllo ✓'})
        assertEnvelope(gotB[0], acks[1])
        assert.equal(gotB[0].data, 'plain text')
        assertEnvelope(gotA[1], acks[2])
        assert.equal(gotA[1].encoding, 'base64')
        assert.equal(gotA[1].content_type, 'application/octet-stream')
        assert.equal(gotA[1].data, Buffer.from(BYTES).toString('base64'))
        const bytes = await page.evaluate((env) => [...window.__crierModule.payloadBytes(env)], gotA[1])
        assert.deepEqual(bytes, BYTES)
        assertEnvelope(gotB[1], acks[3], {event: 'update'})
        assert.deepEqual(gotB[1].data, {n: 2})
        const rec = await c.record()
        assert.deepEqual(rec.errors, [])
        assert.equal(rec.state, 'open')
        assert.deepEqual(rec.transports, [{transport, previous: null}])
        assert.equal(rec.cursor.split(',').sort().join(','), [acks[2].cursor, acks[3].cursor].sort().join(','))
        await c.close()
      } finally {
        await page.close()
      }
    })

    test('publishes (HTTP, and the WebSocket op) and reads history', {timeout: T}, async () => {
      const page = await browser.newPage()
      try {
        const c = await Client.open(page, {transport, backoff: FAST})
        const ch = uniqueChannel('pub')
        await c.subscribe(ch)
        const acks = await c.run(async (c, rec, ch) => [
          await c.publish(ch, {auto: true}), // over the WebSocket when that is the transport
          await c.publish(ch, 'some text', {via: 'http'}),
          await c.publish(ch, new Uint8Array([1, 2, 3]), {event: 'bytes'}),
          await c.publish(ch, {json: true}, {via: 'http', event: 'message'}),
        ], ch)
        assert.deepEqual(acks.map((a) => a.offset), [1, 2, 3, 4])
        for (const a of acks) assert.equal(a.cursor, `${ch}@${a.epoch}:${a.offset}`)
        if (transport === 'websocket') {
          const ack = await c.run((c, rec, ch) => c.publish(ch, {op: 'ws'}, {via: 'ws'}), ch)
          assert.equal(ack.offset, 5)
        } else {
          await assert.rejects(c.run((c, rec, ch) => c.publish(ch, 1, {via: 'ws'}), ch), /not_connected|WebSocket/)
          await publish(BASE, ch, {op: 'ws'})
        }
        // Over SSE the "bytes" event is not listened for (EventSource needs names in advance).
        const want = transport === 'sse' ? 4 : 5
        const got = await c.waitFor(want, {channel: ch})
        assert.deepEqual(got[0].data, {auto: true})
        assert.equal(got[1].data, 'some text')
        if (transport !== 'sse') {
          assert.equal(got[2].event, 'bytes')
          assert.equal(got[2].content_type, 'application/octet-stream')
          assert.equal(got[2].data, 'AQID')
        }
        const history = await c.run((c, rec, {ch, since}) => c.history(ch, {since}), {ch, since: `${acks[0].epoch}:0`})
        assert.deepEqual(history.messages.map((m) => m.offset), [1, 2, 3, 4, 5])
        assert.equal(history.offset, 5)
        assert.equal(history.epoch, acks[0].epoch)
        const last = await c.run((c, rec, ch) => c.history(ch, {limit: 1}), ch)
        assert.deepEqual(last.messages.map((m) => m.data), [{op: 'ws'}])
        await assert.rejects(c.run((c) => c.history('bad channel!')), /invalid channel/)
        await c.close()
      } finally {
        await page.close()
      }
    })

    test('crier.gap: a vanished epoch and a cleared history', {timeout: T}, async () => {
      const page = await browser.newPage()
      try {
        const c = await Client.open(page, {transport, backoff: FAST})
        const ch = uniqueChannel('gap')
        const first = await publish(BASE, ch, {n: 1})
        // A position in an epoch the channel never had: the server answers crier.gap at its latest.
        await c.subscribe(ch, {since: 'vanished:7'})
        await c.waitUntil((rec) => rec.gaps.length >= 1, {what: 'the first crier.gap'})
        let rec = await c.record()
        assert.equal(rec.gaps[0].event, 'crier.gap')
        assert.equal(rec.gaps[0].epoch, first.epoch)
        assert.equal(rec.gaps[0].offset, 1)
        assert.equal(rec.gaps[0].data.reason, 'epoch')
        assert.equal(rec.got.length, 0, 'a gap is not a message')
        const second = await publish(BASE, ch, {n: 2})
        await c.waitFor(1, {channel: ch})
        // Clearing the history moves the channel to a new epoch: crier.gap again, then offset 1.
        const cleared = await clearHistory(BASE, ch)
        assert.notEqual(cleared.epoch, first.epoch)
        await c.waitUntil((rec) => rec.gaps.length >= 2, {what: 'the crier.gap of the clear'})
        const third = await publish(BASE, ch, {n: 3})
        const got = await c.waitFor(2, {channel: ch})
        assertEnvelope(got[0], second)
        assertEnvelope(got[1], third)
        assert.equal(third.offset, 1)
        rec = await c.record()
        assert.equal(rec.gaps[1].epoch, cleared.epoch)
        assert.equal(rec.gaps[1].data.reason, 'cleared')
        assert.equal(rec.cursor, third.cursor)
        await c.close()
      } finally {
        await page.close()
      }
    })

    test('unsubscribe stops one channel and leaves the other flowing', {timeout: T}, async () => {
      const page = await browser.newPage()
      try {
        const c = await Client.open(page, {transport, backoff: FAST})
        const a = uniqueChannel('keep')
        const b = uniqueChannel('drop')
        await c.subscribe(a)
        await c.subscribe(b)
        await publish(BASE, b, {before: true})
        await c.waitFor(1, {channel: b})
        await c.unsubscribe(b)
        await sleep(100) // an HTTP transport reconnects without b
        await publish(BASE, b, {after: true})
        await publish(BASE, a, {n: 1})
        await c.waitFor(1, {channel: a})
        await sleep(300)
        assert.deepEqual((await c.received(b)).map((e) => e.data), [{before: true}])
        const rec = await c.record()
        assert.ok(!rec.cursor.includes(b), `cursor ${rec.cursor} still names ${b}`)
        await c.close()
      } finally {
        await page.close()
      }
    })

    const resumeSkip = !SHORT_BASE ? 'CRIER_SHORT_URL (a server with a short --max-lifetime) is not set' : skipReason(shortMissing, transport, SHORT_BASE)
    test('resumes after the server ends the connection: nothing lost, nothing twice', {skip: resumeSkip, timeout: 2 * T}, async () => {
      const page = await browser.newPage(SHORT_BASE)
      try {
        const c = await Client.open(page, {transport, backoff: FAST})
        const a = uniqueChannel('resume-a')
        const b = uniqueChannel('resume-b')
        await c.subscribe(a)
        await c.subscribe(b)
        // About four seconds of publishing across connections that last 1.5 s each.
        const N = 30
        for (let i = 1; i <= N; i++) {
          await publish(SHORT_BASE, i % 2 ? a : b, {i})
          await sleep(130)
        }
        await c.waitFor(N / 2, {channel: a, timeout: 20000})
        await c.waitFor(N / 2, {channel: b, timeout: 20000})
        await sleep(300) // anything twice would show up here
        const gotA = await c.received(a)
        const gotB = await c.received(b)
        assertOffsets(gotA, 1, N / 2, a)
        assertOffsets(gotB, 1, N / 2, b)
        assert.deepEqual(gotA.map((e) => e.data.i), gotA.map((e, k) => 2 * k + 1))
        const rec = await c.record()
        if (transport !== 'longpoll') {
          // Long polling has no lasting connection to end: each poll resumes from the cursor anyway.
          assert.ok(rec.stats.reconnects >= 2, `the server ended the connection ${rec.stats.reconnects} times, want at least 2`)
        }
        assert.equal(rec.stats.received, N)
        assert.deepEqual(rec.errors, [], 'a connection that ends at its lifetime is not an error')
        assert.ok(rec.reconnects.every((r) => r.transport === transport))
        await c.close()
      } finally {
        await page.close()
      }
    })
  })
}

describe('crier.js transport choice', () => {
  test('skips what the browser lacks, falls back after failures, then connects', {timeout: T}, async () => {
    const page = await browser.newPage()
    try {
      // Three drivers of our own: one the "browser" cannot run, one whose endpoint is missing
      // (fatal at once), one that fails to connect (counts toward maxFailures).
      await page.evaluate(async () => {
        const {drivers, CrierError} = await import('/crier.js')
        window.attempts = {missing: 0, flaky: 0}
        class Fake {
          static live = false
          constructor(link) {
            this.link = link
            this.isOpen = false
          }

          close() {}
        }
        drivers.unsupported = class extends Fake {
          static supported() {
            return false
          }
        }
        drivers.missing = class extends Fake {
          static supported() {
            return true
          }

          open() {
            window.attempts.missing++
            setTimeout(() => this.link.closed({error: new CrierError('not_found', 'no such endpoint'), fatal: true}))
          }
        }
        drivers.flaky = class extends Fake {
          static supported() {
            return true
          }

          open() {
            window.attempts.flaky++
            setTimeout(() => this.link.closed({error: new CrierError('connect_failed', 'refused')}))
          }
        }
      })
      const c = await Client.open(page, {transports: ['unsupported', 'missing', 'flaky', 'websocket'], maxFailures: 2, backoff: {base: 20, max: 80}})
      const ch = uniqueChannel('fallback')
      assert.equal(await c.subscribe(ch), 'websocket')
      const attempts = await page.evaluate(() => window.attempts)
      assert.deepEqual(attempts, {missing: 1, flaky: 2})
      const rec = await c.record()
      assert.deepEqual(rec.transports, [{transport: 'websocket', previous: null}])
      assert.equal(rec.errors.length, 3, JSON.stringify(rec.errors))
      assert.ok(rec.reconnects.length >= 3)
      assert.ok(rec.reconnects.every((r) => r.delay >= 0 && r.delay < 80), JSON.stringify(rec.reconnects))
      const ack = await publish(BASE, ch, {n: 1})
      assertEnvelope((await c.waitFor(1))[0], ack)
      await c.close()
    } finally {
      await page.close()
    }
  })

  test('the default order picks WebSocket in a browser that has it', {timeout: T}, async () => {
    const page = await browser.newPage()
    try {
      const c = await Client.open(page, {})
      assert.equal(await c.subscribe(uniqueChannel('default')), 'websocket')
      await c.close()
    } finally {
      await page.close()
    }
  })
})
