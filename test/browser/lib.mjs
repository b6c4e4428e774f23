// Shared helpers of the browser tests: the servers under test, the system's Chromium driven by
// playwright-core (no browser is ever downloaded), publishing from Node, and which endpoints the
// server has yet.
//
// Environment:
//   CRIER_URL        a running Crier, e.g. http://127.0.0.1:8080 (required by the browser tests)
//   CRIER_SHORT_URL  a Crier whose connections end soon (--max-lifetime 1500ms): the resume
//                    tests run against it, and are skipped without it
//   CRIER_RESTART_URL      a Crier with a durable store (not --memory) that is restarted during
//                          the restart tests, on the same port and data directory
//   CRIER_RESTART_CONTROL  the server whose POST /restart does that restart and answers 200
//                          once the new node answers /healthz; without both, those tests skip
//   CRIER_CHROMIUM   the browser binary; default /usr/bin/chromium
//   CRIER_ARTIFACTS  where screenshots go; default test-artifacts/ at the repository root
// go test ./internal/server -run Browser starts the servers and sets all of these.

import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {mkdtempSync, rmSync, mkdirSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {chromium} from 'playwright-core'

const here = path.dirname(fileURLToPath(import.meta.url))

export const BASE = trimURL(process.env.CRIER_URL)
export const SHORT_BASE = trimURL(process.env.CRIER_SHORT_URL)
export const RESTART_BASE = trimURL(process.env.CRIER_RESTART_URL)
export const RESTART_CONTROL = trimURL(process.env.CRIER_RESTART_CONTROL)
export const CHROMIUM = process.env.CRIER_CHROMIUM || '/usr/bin/chromium'
export const ARTIFACTS = process.env.CRIER_ARTIFACTS || path.resolve(here, '../../test-artifacts')

function trimURL(u) {
  return (u || '').replace(/\/+$/, '')
}

/** requireServer throws the setup error that a browser test without CRIER_URL should show. */
export function requireServer() {
  if (!BASE) throw new Error('set CRIER_URL to the base URL of a running Crier, e.g. http://127.0.0.1:8080')
}

/** The flags every launch uses: headless, no sandbox (root in CI), nothing phoning home. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

/**
 * launch starts Chromium with a fresh user-data-dir, removed again by close(). It returns the
 * browser context; newPage(origin) opens a page on a server's origin (its /healthz), so that
 * fetch, EventSource, WebSocket and iframes are same-origin.
 */
export async function launch() {
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'crier-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: {width: 1360, height: 1000},
  })
  return {
    context,
    async newPage(origin = BASE) {
      const page = await context.newPage()
      page.errors = []
      page.on('pageerror', (err) => page.errors.push(String(err)))
      // A real answer of the server (not one made up by page.route, which Chromium's local
      // network access checks would treat as a public page calling a loopback address).
      await page.goto(`${origin}/healthz`)
      return page
    },
    async close() {
      await context.close().catch(() => {})
      rmSync(userDataDir, {recursive: true, force: true})
    },
  }
}

/** uniqueChannel returns a channel name no other test uses. */
export function uniqueChannel(prefix) {
  return `${prefix}.${randomBytes(6).toString('hex')}`
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * publish posts a body from Node (a JSON value unless contentType says otherwise) and returns
 * the 201 answer.
 */
export async function publish(base, channel, body, {contentType = 'application/json', event} = {}) {
  const url = new URL(`${base}/v1/channels/${encodeURIComponent(channel)}`)
  if (event) url.searchParams.set('event', event)
  const res = await fetch(url, {
    method: 'POST',
    headers: {'Content-Type': contentType},
    body: contentType === 'application/json' ? JSON.stringify(body) : body,
  })
  const text = await res.text()
  assert.equal(res.status, 201, `publish on ${channel}: ${res.status} ${text}`)
  return JSON.parse(text)
}

/** clearHistory deletes a channel's history: the channel gets a new epoch. */
export async function clearHistory(base, channel) {
  const res = await fetch(`${base}/v1/channels/${encodeURIComponent(channel)}/messages`, {method: 'DELETE'})
  assert.equal(res.status, 200, `clear ${channel}: ${res.status}`)
  return res.json()
}

/**
 * The endpoints of transports that may not exist yet on the server under test, with a probe
 * request each. A transport whose probe answers 404 is "pending": its tests are skipped, and the
 * demo page may log errors about it (and only about it).
 */
export const PENDING_ENDPOINTS = {
  stream: '/v1/stream?channel=probe',
  longpoll: '/v1/poll?channel=probe&wait=0',
  iframe: '/v1/iframe?channel=probe&callback=probe',
  multipart: '/v1/multipart?channel=probe',
}

/**
 * endpointStatus fetches path and returns its status as soon as the head arrives (streaming
 * endpoints never end), or 0 when no head came within ms.
 */
export async function endpointStatus(base, path, ms = 3000) {
  const ac = new AbortController()
  const timer = setTimeout(() => ac.abort(), ms)
  try {
    const res = await fetch(base + path, {signal: ac.signal})
    return res.status
  } catch {
    return 0
  } finally {
    clearTimeout(timer)
    ac.abort()
  }
}

/** missingTransports returns the set of PENDING_ENDPOINTS names whose endpoint answers 404. */
export async function missingTransports(base) {
  const out = new Set()
  if (!base) return out
  await Promise.all(Object.entries(PENDING_ENDPOINTS).map(async ([name, p]) => {
    if ((await endpointStatus(base, p)) === 404) out.add(name)
  }))
  return out
}

/** skipReason is the `skip` option of a test of transport: false, or why it is skipped. */
export function skipReason(missing, transport, base = BASE) {
  if (!missing.has(transport)) return false
  const p = PENDING_ENDPOINTS[transport].split('?')[0]
  return `${base} answers 404 on ${p}: the ${transport} transport is not implemented yet`
}

/** artifact returns the path of a file in the artifacts folder, creating the folder. */
export function artifact(name) {
  mkdirSync(ARTIFACTS, {recursive: true})
  return path.join(ARTIFACTS, name)
}

/** assertOffsets asserts that envs of one channel are offsets from..to, each once, in order. */
export function assertOffsets(envs, from, to, what = 'offsets') {
  const want = []
  for (let o = from; o <= to; o++) want.push(o)
  assert.deepEqual(envs.map((e) => e.offset), want, `${what}: gap-free, in order, each once`)
}
