// The browser's own EventSource and WebSocket against Crier, without crier.js: what any web page
// can do with the transports as the contract defines them. Plus the multipart transport in a
// plain <img>, skipped while the server answers 404 on /v1/multipart.
//
// Run: CRIER_URL=http://127.0.0.1:8080 CRIER_SHORT_URL=http://127.0.0.1:8081 node --test native.test.mjs

import {after, before, test} from 'node:test'
import assert from 'node:assert/strict'

import {BASE, SHORT_BASE, assertOffsets, launch, missingTransports, publish, requireServer, skipReason, sleep, uniqueChannel} from './lib.mjs'

requireServer()

const missing = await missingTransports(BASE)
const T = 30000

let browser
before(async () => {
  browser = await launch()
})
after(async () => {
  await browser?.close()
})

/** waitIn waits until window[name] has at least n items, and returns them. */
async function waitIn(page, name, n, timeout = 10000) {
  try {
    await page.waitForFunction(({name, n}) => (window[name] || []).length >= n, {name, n}, {timeout, polling: 50})
  } catch (err) {
    const have = await page.evaluate((name) => window[name], name)
    throw new Error(`waiting for ${n} items in ${name}: have ${JSON.stringify(have)}`, {cause: err})
  }
  return page.evaluate((name) => window[name], name)
}

test('native EventSource: envelopes as events, the cursor as lastEventId', {timeout: T}, async () => {
  const page = await browser.newPage()
  try {
    const ch = uniqueChannel('es')
    await page.evaluate((ch) => new Promise((resolve, reject) => {
      window.events = []
      const es = new EventSource(`/v1/sse?channel=${ch}`)
      window.es = es
      const record = (e) => window.events.push({type: e.type, lastEventId: e.lastEventId, data: e.data})
      es.addEventListener('message', record)
      es.addEventListener('update', record)
      es.onopen = () => resolve()
      es.onerror = () => reject(new Error('EventSource failed before open'))
    }), ch)
    await sleep(100) // the subscription is made just after the head is sent
    const a1 = await publish(BASE, ch, {n: 1})
    const a2 = await publish(BASE, ch, 'text', {contentType: 'text/plain'})
    const a3 = await publish(BASE, ch, {n: 3}, {event: 'update'})
    const events = await waitIn(page, 'events', 3)
    assert.deepEqual(events.map((e) => e.type), ['message', 'message', 'update'])
    for (const [i, ack] of [a1, a2, a3].entries()) {
      const env = JSON.parse(events[i].data)
      assert.equal(events[i].lastEventId, ack.cursor, 'the event id is the cursor')
      assert.equal(env.cursor, ack.cursor)
      assert.equal(env.offset, ack.offset)
      assert.equal(env.channel, ch)
    }
    assert.deepEqual(JSON.parse(events[0].data).data, {n: 1})
    assert.equal(JSON.parse(events[1].data).data, 'text')
    assert.equal(JSON.parse(events[2].data).event, 'update')
    assert.equal(await page.evaluate(() => window.es.readyState), 1)
    await page.evaluate(() => window.es.close())
    assert.deepEqual(page.errors, [])
  } finally {
    await page.close()
  }
})

test('native EventSource resumes by itself with Last-Event-ID when the server ends the stream', {
  timeout: T,
  skip: SHORT_BASE ? false : 'CRIER_SHORT_URL (a server with a short --max-lifetime) is not set',
}, async () => {
  const page = await browser.newPage(SHORT_BASE)
  try {
    const ch = uniqueChannel('es-resume')
    await page.evaluate((ch) => new Promise((resolve) => {
      window.envs = []
      window.opens = 0
      const es = new EventSource(`/v1/sse?channel=${ch}`)
      window.es = es
      es.addEventListener('message', (e) => window.envs.push(JSON.parse(e.data)))
      es.onopen = () => {
        window.opens++
        resolve()
      }
    }), ch)
    await sleep(100)
    // The server ends each stream after 1.5 s; EventSource comes back after the retry: delay
    // with the last id it saw, which resumes exactly there.
    const N = 16
    for (let i = 1; i <= N; i++) {
      await publish(SHORT_BASE, ch, {i})
      await sleep(250)
    }
    const envs = await waitIn(page, 'envs', N, 15000)
    await sleep(300)
    assertOffsets(await page.evaluate(() => window.envs), 1, N, 'EventSource over reconnections')
    assert.deepEqual(envs.map((e) => e.data.i), envs.map((e) => e.offset))
    const opens = await page.evaluate(() => window.opens)
    assert.ok(opens >= 2, `EventSource opened ${opens} times; the server should have ended the stream`)
    await page.evaluate(() => window.es.close())
  } finally {
    await page.close()
  }
})

test('native WebSocket: subscribe, receive, publish and ping commands', {timeout: T}, async () => {
  const page = await browser.newPage()
  try {
    const ch = uniqueChannel('ws')
    await page.evaluate(() => new Promise((resolve, reject) => {
      window.frames_ = []
      const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/v1/ws`)
      window.ws = ws
      ws.onmessage = (e) => window.frames_.push(JSON.parse(e.data))
      ws.onopen = () => resolve()
      ws.onerror = () => reject(new Error('WebSocket failed'))
    }))
    await page.evaluate((ch) => window.ws.send(JSON.stringify({id: 1, op: 'subscribe', channel: ch})), ch)
    let frames = await waitIn(page, 'frames_', 1)
    assert.equal(frames[0].id, 1)
    assert.equal(frames[0].ok, true)
    assert.equal(frames[0].channel, ch)
    assert.equal(frames[0].offset, 0)
    const a1 = await publish(BASE, ch, {n: 1})
    frames = await waitIn(page, 'frames_', 2)
    assert.equal(frames[1].id, undefined, 'a pushed envelope has no id')
    assert.equal(frames[1].cursor, a1.cursor)
    assert.deepEqual(frames[1].data, {n: 1})
    await page.evaluate((ch) => {
      window.ws.send(JSON.stringify({id: 'p', op: 'publish', channel: ch, data: {from: 'browser'}, event: 'chat'}))
      window.ws.send(JSON.stringify({id: 3, op: 'ping'}))
    }, ch)
    frames = await waitIn(page, 'frames_', 5)
    const reply = frames.find((f) => f.id === 'p')
    assert.equal(reply.ok, true)
    assert.equal(reply.offset, 2)
    assert.equal(reply.cursor, `${ch}@${a1.epoch}:2`)
    const pushed = frames.find((f) => f.id === undefined && f.offset === 2)
    assert.equal(pushed.event, 'chat')
    assert.deepEqual(pushed.data, {from: 'browser'})
    assert.deepEqual(frames.find((f) => f.id === 3), {id: 3, ok: true})
    // A bad command gets an error reply, and the connection stays.
    await page.evaluate(() => window.ws.send(JSON.stringify({id: 4, op: 'nope'})))
    frames = await waitIn(page, 'frames_', 6)
    const bad = frames.find((f) => f.id === 4)
    assert.equal(bad.ok, false)
    assert.equal(bad.error.code, 'bad_command')
    assert.equal(await page.evaluate(() => window.ws.readyState), 1)
    await page.evaluate(() => window.ws.close())
    assert.deepEqual(page.errors, [])
  } finally {
    await page.close()
  }
})

test('multipart into an <img>: each published image replaces the last', {timeout: T, skip: skipReason(missing, 'multipart')}, async () => {
  const page = await browser.newPage()
  try {
    const ch = uniqueChannel('camera')
    // Draw two PNGs of different sizes in the page and publish them from there.
    await page.evaluate(async (ch) => {
      window.publishPNG = async (w, h) => {
        const canvas = Object.assign(document.createElement('canvas'), {width: w, height: h})
        const ctx = canvas.getContext('2d')
        ctx.fillStyle = '#5b5bd6'
        ctx.fillRect(0, 0, w, h)
        const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'))
        const res = await fetch(`/v1/channels/${ch}`, {method: 'POST', headers: {'Content-Type': 'image/png'}, body: blob})
        if (res.status !== 201) throw new Error(`publish: ${res.status}`)
      }
      const img = document.createElement('img')
      img.id = 'live'
      img.src = `/v1/multipart?channel=${ch}`
      document.body.append(img)
    }, ch)
    await sleep(300) // let the <img> subscribe
    // Chromium shows a part once the next part's head arrives, so frames go on being published
    // (two sizes, in turn) until the <img> has shown both.
    await page.evaluate(() => {
      window.widths = new Set()
      window.sampler = setInterval(() => window.widths.add(document.getElementById('live').naturalWidth), 20)
    })
    let seen = []
    for (let i = 0; i < 30 && !(seen.includes(64) && seen.includes(80)); i++) {
      await page.evaluate((i) => (i % 2 ? window.publishPNG(80, 30) : window.publishPNG(64, 48)), i)
      await sleep(200)
      seen = await page.evaluate(() => [...window.widths])
    }
    assert.ok(seen.includes(64) && seen.includes(80), `the <img> showed widths ${seen}; want 64 and 80`)
  } finally {
    await page.close()
  }
})
