// Crier's Server-Sent Events transport driven by the `eventsource` package, a third-party
// WhatWG-compatible EventSource.
// Run: CRIER_URL=http://127.0.0.1:8080 node --test sse.test.mjs
// The reconnect test wants a server whose streams end soon (--max-lifetime 700ms, and a short
// --sse-retry and --heartbeat so that it runs quickly); it is skipped unless
// CRIER_MAX_LIFETIME_MS says what the server's lifetime is.

import {test} from 'node:test'
import assert from 'node:assert/strict'
import {EventSource} from 'eventsource'

import {BASE, Inbox, assertSequence, channelInfo, checkEnvelope, publish, sleep, uniqueChannel} from './lib.mjs'

const LIFETIME_MS = Number(process.env.CRIER_MAX_LIFETIME_MS || 0)

// open starts an EventSource on /v1/sse with query and records what it sees. Each request's
// Last-Event-ID is recorded in requests, through the fetch option.
function open(query, events = ['message']) {
  const requests = []
  const es = new EventSource(`${BASE}/v1/sse?${query}`, {
    fetch: (input, init) => {
      requests.push({lastEventId: new Headers(init.headers).get('Last-Event-ID')})
      return fetch(input, init)
    },
  })
  const inbox = new Inbox()
  for (const name of events) {
    es.addEventListener(name, (ev) => {
      const env = JSON.parse(ev.data)
      inbox.push({type: ev.type, lastEventId: ev.lastEventId, env})
    })
  }
  let opens = 0
  const errors = []
  es.addEventListener('open', () => opens++)
  es.addEventListener('error', (ev) => errors.push(ev))
  // failed rejects when EventSource gives up for good (a refused request is not retried).
  const failed = new Promise((resolve, reject) => {
    es.addEventListener('error', (ev) => {
      if (es.readyState === EventSource.CLOSED) reject(new Error(`EventSource gave up: ${ev.code ?? ''} ${ev.message ?? ''}`))
    })
  })
  failed.catch(() => {}) // observed through next() and opened
  const opened = Promise.race([new Promise((resolve) => es.addEventListener('open', resolve, {once: true})), failed])
  return {
    es,
    requests,
    errors,
    opened,
    get size() {
      return inbox.size
    },
    // next returns the next event received, or rejects on a timeout or when EventSource gave up.
    next(ms = 5000, what = 'event') {
      return Promise.race([inbox.next(ms, what), failed])
    },
    get opens() {
      return opens
    },
  }
}

// since returns the channel's position, so that a stream opened with it misses nothing
// published afterwards, however long the subscription takes to start.
async function since(channel) {
  const info = await channelInfo(channel)
  return `since=${info.epoch}:${info.offset}`
}

test('messages arrive with lastEventId equal to the cursor', async () => {
  const ch = uniqueChannel('sse:msg')
  const s = open(`channel=${ch}&${await since(ch)}`)
  try {
    await s.opened
    const sent = []
    for (let i = 1; i <= 5; i++) {
      const data = {i, text: `message ${i}`}
      sent.push({ack: await publish(ch, data), data})
    }
    for (const {ack, data} of sent) {
      const got = await s.next(5000, `message ${ack.offset}`)
      assert.equal(got.type, 'message')
      assert.equal(got.lastEventId, got.env.cursor)
      assert.equal(got.lastEventId, ack.cursor)
      checkEnvelope(got.env, ack, data)
    }
  } finally {
    s.es.close()
  }
})

test('named events reach addEventListener(name), not onmessage', async () => {
  const ch = uniqueChannel('sse:named')
  const s = open(`channel=${ch}&${await since(ch)}`, ['message', 'alert', 'update'])
  try {
    await s.opened
    const a = await publish(ch, {level: 'high'}, {event: 'alert'})
    const m = await publish(ch, {plain: true})
    const u = await publish(ch, 'text body', {contentType: 'text/plain', event: 'update'})
    const got = [await s.next(), await s.next(), await s.next()]
    assert.deepEqual(
      got.map((g) => g.type),
      ['alert', 'message', 'update'],
    )
    checkEnvelope(got[0].env, a, {level: 'high'}, 'alert')
    checkEnvelope(got[1].env, m, {plain: true})
    checkEnvelope(got[2].env, u, 'text body', 'update')
    for (const g of got) assert.equal(g.lastEventId, g.env.cursor)
  } finally {
    s.es.close()
  }
})

test('two channels: one cursor for both, resumed with cursor=', async () => {
  const a = uniqueChannel('sse:a')
  const b = uniqueChannel('sse:b')
  const s = open(`channel=${a}&channel=${b}`)
  let last
  try {
    await s.opened
    // The subscription starts live: wait until it is in place before publishing.
    for (let i = 0; i < 100 && (await channelInfo(b)).subscribers < 1; i++) await sleep(20)
    await publish(a, {n: 1})
    await publish(b, {n: 2})
    const one = await s.next()
    last = await s.next()
    assert.deepEqual([one.env.channel, last.env.channel], [a, b])
    // The id holds the position of both channels.
    const parts = last.lastEventId.split(',').sort()
    assert.deepEqual(parts, [`${a}@${one.env.epoch}:1`, `${b}@${last.env.epoch}:1`].sort())
    assert.equal(last.env.cursor, last.lastEventId)
  } finally {
    s.es.close()
  }
  await publish(a, {n: 3})
  const r = open(`cursor=${encodeURIComponent(last.lastEventId)}`)
  try {
    const got = await r.next()
    assert.equal(got.env.channel, a)
    assert.equal(got.env.offset, 2)
  } finally {
    r.es.close()
  }
})

// The first connection starts from the URL, with since= or cursor=; EventSource reconnects to
// that same URL with Last-Event-ID, which must win over the URL's starting point. With two
// channels, Last-Event-ID must hold the position of both.
for (const form of ['since', 'cursor', 'two channels']) {
  test(`the server ends the stream; EventSource resumes with Last-Event-ID (${form}), nothing lost or repeated`, {
    skip: LIFETIME_MS > 0 ? false : 'set CRIER_MAX_LIFETIME_MS to the server --max-lifetime to run this',
  }, async () => {
    const tag = form.replace(' ', '-')
    const chans = form === 'two channels' ? [uniqueChannel(`sse:rc-${tag}`), uniqueChannel(`sse:rc-${tag}`)] : [uniqueChannel(`sse:rc-${tag}`)]
    const infos = await Promise.all(chans.map(channelInfo))
    const cursorOf = (i) => `${chans[i]}@${infos[i].epoch}:${infos[i].offset}`
    const start =
      form === 'since'
        ? `channel=${chans[0]}&since=${infos[0].epoch}:${infos[0].offset}`
        : `cursor=${encodeURIComponent(chans.map((_, i) => cursorOf(i)).join(','))}`
    const s = open(start)
    const total = 80
    const received = []
    try {
      await s.opened
      // Publish steadily across several lifetimes of the stream, round robin over the channels.
      const pace = Math.max(5, Math.ceil((LIFETIME_MS * 3.5) / total))
      const publisher = (async () => {
        for (let i = 1; i <= total; i++) {
          await publish(chans[i % chans.length], {i})
          await sleep(pace)
        }
      })()
      while (received.length < total) {
        const got = await s.next(LIFETIME_MS + 5000, `message ${received.length + 1}`)
        assert.equal(got.lastEventId, got.env.cursor)
        received.push(got.env)
      }
      await publisher
      chans.forEach((ch, c) => {
        const mine = received.filter((e) => e.channel === ch)
        assertSequence(mine, infos[c].epoch, infos[c].offset + 1, infos[c].offset + mine.length)
      })
      // Order holds within a channel only: after a reconnect, channels resume one after another.
      const all = received.map((e) => e.data.i).sort((x, y) => x - y)
      assert.deepEqual(all, Array.from({length: total}, (_, i) => i + 1), 'every message once')
      for (const ch of chans) {
        const is = received.filter((e) => e.channel === ch).map((e) => e.data.i)
        assert.deepEqual(is, [...is].sort((x, y) => x - y), `${ch} in publish order`)
      }
      await sleep(100)
      assert.equal(s.size, 0, 'no message after the last one')

      assert.ok(s.opens >= 3, `the stream should have ended and been reopened a few times, opened ${s.opens} times`)
      assert.ok(s.requests.length >= s.opens)
      // The first request starts from the URL; later ones resume from Last-Event-ID, the cursor
      // of the last message received before the stream ended, naming every channel.
      assert.equal(s.requests[0].lastEventId, null)
      const resumed = s.requests.slice(1).filter((r) => r.lastEventId !== null)
      assert.ok(resumed.length >= 2, `reconnects sent Last-Event-ID ${JSON.stringify(s.requests)}`)
      for (const r of resumed) {
        const names = r.lastEventId.split(',').map((p) => p.slice(0, p.lastIndexOf('@')))
        assert.deepEqual(names.sort(), [...chans].sort(), `Last-Event-ID ${r.lastEventId}`)
      }
    } finally {
      s.es.close()
    }
  })
}
