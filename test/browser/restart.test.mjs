// crier.js across a server restart, over each transport in turn: a node with a durable store is
// drained (as by SIGTERM: crier.reconnect, then the connections end) and started again on the
// same port and data directory, and the subscriber resumes from its cursor with every message
// of the channel's one epoch, in order, nothing lost and nothing twice.
//
// Run: CRIER_URL=… CRIER_RESTART_URL=http://127.0.0.1:8082 CRIER_RESTART_CONTROL=http://127.0.0.1:8083 node --test restart.test.mjs
// (go test ./internal/server -run Browser starts both, the control being a small server in the test.)

import {after, before, describe, test} from 'node:test'
import assert from 'node:assert/strict'

import {Client} from './harness.mjs'
import {
  RESTART_BASE, RESTART_CONTROL, assertOffsets, launch, missingTransports, publish, skipReason, sleep,
  uniqueChannel,
} from './lib.mjs'

const TRANSPORTS = ['websocket', 'sse', 'stream', 'longpoll', 'iframe']
const FAST = {base: 100, max: 1000} // backoff for tests: reconnect quickly
const T = 20000 // each test's time limit, in ms (a case takes a few seconds)
const noServer = !RESTART_BASE || !RESTART_CONTROL
  ? 'CRIER_RESTART_URL and CRIER_RESTART_CONTROL (a restartable durable server) are not set'
  : false
const missing = noServer ? new Set() : await missingTransports(RESTART_BASE)

let browser
before(async () => {
  if (!noServer) browser = await launch()
})
after(async () => {
  await browser?.close()
})

/** restart asks the control server to drain the node and start a new one on the same port. */
async function restart() {
  const res = await fetch(`${RESTART_CONTROL}/restart`, {method: 'POST', signal: AbortSignal.timeout(15000)})
  const text = await res.text()
  assert.equal(res.status, 200, `restart: ${res.status} ${text}`)
  return JSON.parse(text)
}

describe('crier.js across a server restart', {skip: noServer}, () => {
  for (const transport of TRANSPORTS) {
    test(`over ${transport}: offsets 1..20 of one epoch, in order, each once`, {skip: skipReason(missing, transport, RESTART_BASE), timeout: T}, async (t) => {
      const page = await browser.newPage(RESTART_BASE)
      try {
        const c = await Client.open(page, {transport, backoff: FAST})
        const ch = uniqueChannel(`restart-${transport}`)
        assert.equal(await c.subscribe(ch), transport)
        const acks = []
        for (let i = 1; i <= 10; i++) acks.push(await publish(RESTART_BASE, ch, {i}))
        await c.waitFor(10, {channel: ch, timeout: 5000})
        const before = (await c.record()).stats.reconnects

        const restarted = await restart()

        for (let i = 11; i <= 20; i++) acks.push(await publish(RESTART_BASE, ch, {i}))
        const epoch = acks[0].epoch
        assert.ok(acks.every((a) => a.epoch === epoch), `the durable store kept the epoch: ${[...new Set(acks.map((a) => a.epoch))]}`)
        assert.deepEqual(acks.map((a) => a.offset), acks.map((a, k) => k + 1))
        await c.waitFor(20, {channel: ch, timeout: 10000})
        await sleep(300) // anything twice would show up here
        const got = await c.received(ch)
        assertOffsets(got, 1, 20, ch)
        assert.ok(got.every((e) => e.epoch === epoch), `one epoch: ${[...new Set(got.map((e) => e.epoch))]}`)
        assert.deepEqual(got.map((e) => e.data.i), got.map((e) => e.offset))
        const rec = await c.record()
        assert.ok(rec.stats.reconnects > before, `no reconnect across the restart (${JSON.stringify(restarted)})`)
        assert.equal(rec.stats.received, 20)
        assert.deepEqual(rec.gaps, [], 'the restart lost no history')
        assert.ok(rec.reconnects.every((r) => r.transport === transport), JSON.stringify(rec.reconnects))
        assert.equal(rec.state, 'open')
        assert.equal(rec.cursor, acks[19].cursor)
        // Errors while the node is down (a refused connection, say) are allowed; report them.
        t.diagnostic(`restart took ${restarted.ms} ms; ${rec.stats.reconnects - before} reconnect(s), ` +
          `${rec.stats.duplicates} duplicate(s) dropped; errors ${JSON.stringify(rec.errors)}`)
        await c.close()
      } finally {
        await page.close()
      }
    })
  }
})
