// Shared helpers of the Node.js client tests. CRIER_URL is the server's base URL, such as
// http://127.0.0.1:8080 (go test ./internal/server -run Node starts one and sets it).

import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'

export const BASE = (process.env.CRIER_URL || '').replace(/\/+$/, '')
if (!BASE) {
  throw new Error('set CRIER_URL to the base URL of a running Crier, e.g. http://127.0.0.1:8080')
}

// uniqueChannel returns a channel name no other test uses.
export function uniqueChannel(prefix) {
  return `${prefix}.${randomBytes(6).toString('hex')}`
}

// publish posts body (a JSON value unless contentType says otherwise) and returns the 201 answer.
export async function publish(channel, body, {contentType = 'application/json', event} = {}) {
  const url = new URL(`${BASE}/v1/channels/${encodeURIComponent(channel)}`)
  if (event) url.searchParams.set('event', event)
  const res = await fetch(url, {
    method: 'POST',
    headers: {'Content-Type': contentType},
    body: contentType === 'application/json' ? JSON.stringify(body) : body,
  })
  const text = await res.text()
  assert.equal(res.status, 201, `publish on ${channel}: ${res.status} ${text}`)
  const ack = JSON.parse(text)
  assert.equal(ack.channel, channel)
  assert.equal(ack.cursor, `${channel}@${ack.epoch}:${ack.offset}`)
  return ack
}

// channelInfo returns GET /v1/channels/{channel}: {channel, epoch, offset, subscribers}.
export async function channelInfo(channel) {
  const res = await fetch(`${BASE}/v1/channels/${encodeURIComponent(channel)}`)
  assert.equal(res.status, 200)
  return res.json()
}

// checkEnvelope asserts the contract's envelope fields against a publish answer.
export function checkEnvelope(env, ack, data, event = 'message') {
  assert.equal(env.channel, ack.channel)
  assert.equal(env.offset, ack.offset)
  assert.equal(env.epoch, ack.epoch)
  assert.equal(env.cursor, ack.cursor)
  assert.equal(env.event, event)
  assert.deepEqual(env.data, data)
  assert.match(env.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  assert.equal(env.id, undefined, 'pushed envelopes carry no id')
}

// Inbox turns callbacks into awaitable items: push from an event handler, await next().
export class Inbox {
  #items = []
  #waiters = []

  push(item) {
    const w = this.#waiters.shift()
    if (w) {
      clearTimeout(w.timer)
      w.resolve(item)
    } else {
      this.#items.push(item)
    }
  }

  get size() {
    return this.#items.length
  }

  // next resolves with the oldest item, or rejects after ms.
  next(ms = 5000, what = 'item') {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift())
    return new Promise((resolve, reject) => {
      const w = {resolve}
      w.timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1)
        reject(new Error(`no ${what} within ${ms} ms`))
      }, ms)
      this.#waiters.push(w)
    })
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// assertSequence asserts that envs are offsets from..to of one epoch, each once, in order.
export function assertSequence(envs, epoch, from, to) {
  const offsets = envs.map((e) => e.offset)
  const want = []
  for (let o = from; o <= to; o++) want.push(o)
  assert.deepEqual(offsets, want, 'offsets must be gap-free, in order, each once')
  for (const e of envs) assert.equal(e.epoch, epoch)
}
