// Crier's WebSocket transport driven by the `ws` package, a third-party RFC 6455 client.
// Run: CRIER_URL=http://127.0.0.1:8080 node --test ws.test.mjs
// The heartbeat test runs when CRIER_HEARTBEAT_MS gives the server's --heartbeat (keep it short).

import {test} from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'

import {BASE, Inbox, assertSequence, channelInfo, checkEnvelope, publish, sleep, uniqueChannel} from './lib.mjs'

const WS_URL = BASE.replace(/^http/, 'ws') + '/v1/ws'
const HEARTBEAT_MS = Number(process.env.CRIER_HEARTBEAT_MS || 0)

// Client is a ws connection whose text frames are parsed into an inbox.
class Client {
  constructor(query = '') {
    this.ws = new WebSocket(WS_URL + query)
    this.inbox = new Inbox()
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => resolve({code, reason: reason.toString()}))
    })
    this.ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'the server sends text frames only')
      this.inbox.push(JSON.parse(data.toString('utf8')))
    })
    this.ws.on('error', () => {}) // a close event follows; tests look at that
    this.nextId = 1
  }

  open() {
    if (this.ws.readyState === WebSocket.OPEN) return Promise.resolve()
    return new Promise((resolve, reject) => {
      this.ws.once('open', resolve)
      this.ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)))
      this.ws.once('error', reject)
    })
  }

  send(cmd) {
    this.ws.send(JSON.stringify(cmd))
  }

  next(what) {
    return this.inbox.next(5000, what)
  }

  // command sends cmd with a fresh id and returns its reply; envelopes that arrive first are
  // kept in order in this.pushed.
  async command(cmd) {
    const id = this.nextId++
    this.send({id, ...cmd})
    for (;;) {
      const m = await this.next(`reply to ${cmd.op} ${id}`)
      if (m.id === undefined) {
        ;(this.pushed ??= []).push(m)
        continue
      }
      assert.equal(m.id, id, `reply ids come in command order: ${JSON.stringify(m)}`)
      return m
    }
  }

  // envelope returns the next pushed envelope (those held back by command first).
  async envelope() {
    if (this.pushed?.length) return this.pushed.shift()
    const m = await this.next('envelope')
    assert.equal(m.id, undefined, `expected an envelope, got a reply ${JSON.stringify(m)}`)
    return m
  }

  close() {
    this.ws.close()
    return this.closed
  }
}

async function connect(query) {
  const c = new Client(query)
  await c.open()
  return c
}

test('subscribe with an id, then receive an HTTP publish as an envelope', async () => {
  const ch = uniqueChannel('ws:sub')
  const c = await connect()
  try {
    const reply = await c.command({op: 'subscribe', channel: ch})
    assert.equal(reply.ok, true, JSON.stringify(reply))
    assert.equal(reply.channel, ch)
    assert.equal(typeof reply.epoch, 'string')
    assert.equal(reply.offset, 0)
    assert.equal(reply.cursor, `${ch}@${reply.epoch}:0`)

    const data = {text: 'hello from fetch', n: 1, nested: {ok: true}}
    const ack = await publish(ch, data)
    assert.equal(ack.epoch, reply.epoch)
    assert.equal(ack.offset, 1)
    checkEnvelope(await c.envelope(), ack, data)

    const text = await publish(ch, 'plain text', {contentType: 'text/plain; charset=utf-8', event: 'note'})
    checkEnvelope(await c.envelope(), text, 'plain text', 'note')

    const dup = await c.command({op: 'subscribe', channel: ch})
    assert.equal(dup.ok, false)
    assert.equal(dup.error.code, 'already_subscribed')
  } finally {
    await c.close()
  }
})

test('publish op over the WebSocket', async () => {
  const ch = uniqueChannel('ws:pub')
  const c = await connect()
  try {
    assert.equal((await c.command({op: 'subscribe', channel: ch})).ok, true)
    const data = {from: 'ws', list: [1, 2, 3]}
    const reply = await c.command({op: 'publish', channel: ch, data, event: 'update'})
    assert.equal(reply.ok, true, JSON.stringify(reply))
    assert.equal(reply.channel, ch)
    assert.equal(reply.offset, 1)
    assert.equal(reply.cursor, `${ch}@${reply.epoch}:1`)
    checkEnvelope(await c.envelope(), reply, data, 'update')

    const hist = await c.command({op: 'history', channel: ch, since: `${reply.epoch}:0`})
    assert.equal(hist.ok, true)
    assert.equal(hist.offset, 1)
    assert.equal(hist.messages.length, 1)
    assert.deepEqual(hist.messages[0].data, data)

    const bad = await c.command({op: 'publish', channel: ch})
    assert.equal(bad.ok, false)
    assert.equal(typeof bad.error.code, 'string')
    assert.equal(typeof bad.error.message, 'string')
  } finally {
    await c.close()
  }
})

test('resume with since after a disconnect: no gap, no duplicate', async () => {
  const ch = uniqueChannel('ws:resume')
  const received = []
  let c = await connect()
  const sub = await c.command({op: 'subscribe', channel: ch})
  const epoch = sub.epoch
  for (let i = 1; i <= 5; i++) await publish(ch, {i})
  for (let i = 1; i <= 5; i++) received.push(await c.envelope())
  await c.close()

  // Missed while away.
  for (let i = 6; i <= 20; i++) await publish(ch, {i})

  const last = received.at(-1)
  c = await connect()
  try {
    // Live publishes race the resume: the seam between history and live must hold.
    const racing = (async () => {
      for (let i = 21; i <= 60; i++) await publish(ch, {i})
    })()
    const reply = await c.command({op: 'subscribe', channel: ch, since: `${last.epoch}:${last.offset}`})
    assert.equal(reply.ok, true, JSON.stringify(reply))
    assert.equal(c.pushed?.length ?? 0, 0, 'the subscribe reply comes before the replayed messages')
    assert.equal(reply.epoch, epoch)
    await racing
    while (received.length < 60) received.push(await c.envelope())
    assertSequence(received, epoch, 1, 60)
    received.forEach((e, i) => assert.deepEqual(e.data, {i: i + 1}))

    // Nothing more, and the channel agrees.
    await assert.rejects(c.inbox.next(200), /no item/)
    const info = await channelInfo(ch)
    assert.equal(info.offset, 60)
  } finally {
    await c.close()
  }

  // Resume through the URL with the last cursor too.
  for (let i = 61; i <= 65; i++) await publish(ch, {i})
  c = await connect(`?cursor=${encodeURIComponent(received.at(-1).cursor)}`)
  try {
    const more = []
    for (let i = 0; i < 5; i++) more.push(await c.envelope())
    assertSequence(more, epoch, 61, 65)
  } finally {
    await c.close()
  }
})

test('a text frame that is not UTF-8 closes with 1007', async () => {
  const c = await connect()
  c.ws.send(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), {binary: false})
  const {code} = await c.closed
  assert.equal(code, 1007)
})

test('ping op gets a reply, and a WebSocket ping gets a pong', async () => {
  const c = await connect()
  try {
    const reply = await c.command({op: 'ping'})
    assert.deepEqual(reply, {id: reply.id, ok: true})

    const pong = new Promise((resolve) => c.ws.once('pong', (data) => resolve(data.toString())))
    c.ws.ping('are you there')
    assert.equal(await pong, 'are you there')

    // The connection still works after both.
    assert.equal((await c.command({op: 'ping'})).ok, true)
  } finally {
    await c.close()
  }
})

test('a binary frame closes with 1003', async () => {
  const c = await connect()
  c.ws.send(Buffer.from('{"op":"ping"}'), {binary: true})
  const {code} = await c.closed
  assert.equal(code, 1003)
})

test('a clean close is answered with a clean close', async () => {
  const c = await connect()
  assert.equal((await c.command({op: 'ping'})).ok, true)
  c.ws.close(1000, 'bye')
  const {code} = await c.closed
  assert.equal(code, 1000)
})

test('an idle connection gets WebSocket pings as heartbeats', {
  skip: HEARTBEAT_MS > 0 ? false : 'set CRIER_HEARTBEAT_MS to the server --heartbeat to run this',
}, async () => {
  const c = await connect()
  try {
    const ch = uniqueChannel('ws:idle')
    assert.equal((await c.command({op: 'subscribe', channel: ch})).ok, true)
    let pings = 0
    c.ws.on('ping', () => pings++) // ws answers each with a pong by itself
    const start = Date.now()
    const open = () => c.ws.readyState === WebSocket.OPEN
    while (pings < 2 && open() && Date.now() - start < HEARTBEAT_MS * 10 + 2000) await sleep(HEARTBEAT_MS / 4)
    if (!open()) assert.fail(`the connection closed while idle: ${JSON.stringify(await c.closed)}`)
    assert.ok(pings >= 2, `${pings} pings in ${Date.now() - start} ms with a ${HEARTBEAT_MS} ms heartbeat`)
    // Still subscribed and delivering after the pongs.
    const ack = await publish(ch, {after: 'pings'})
    checkEnvelope(await c.envelope(), ack, {after: 'pings'})
  } finally {
    await c.close()
  }
})
