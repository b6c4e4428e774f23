// The demo page at / in Chromium: it renders, every transport's panel connects (or, for a
// transport the server does not have yet, shows a clear error state), a message published from
// its form reaches every connected panel with a latency, the camera publishes PNG frames, the
// live <img> shows them when the multipart endpoint exists, and the page logs no console error
// except the failed requests of those missing transports. Screenshots go to
// test-artifacts/demo.png (light) and test-artifacts/demo-dark.png.
//
// Run: CRIER_URL=http://127.0.0.1:8080 node --test demo.test.mjs

import {after, before, test} from 'node:test'
import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'

import {BASE, artifact, launch, missingTransports, requireServer} from './lib.mjs'

requireServer()

// The panels of the page, by transport.
const PANELS = ['websocket', 'sse', 'stream', 'longpoll', 'iframe']

// The only console errors the page may log: failed requests to the endpoint of a transport that
// the server under test answers 404 on. Nothing else, and nothing for transports it has.
const PENDING_PATHS = {stream: '/v1/stream', longpoll: '/v1/poll', iframe: '/v1/iframe', multipart: '/v1/multipart'}

const missing = await missingTransports(BASE)
const allowedPaths = [...missing].map((name) => PENDING_PATHS[name])
const T = 60000

let browser
before(async () => {
  browser = await launch()
})
after(async () => {
  await browser?.close()
})

function allowed({url}) {
  try {
    return allowedPaths.includes(new URL(url, BASE).pathname)
  } catch {
    return false
  }
}

test('the demo page shows every transport side by side', {timeout: T}, async (t) => {
  const page = await browser.context.newPage()
  const consoleErrors = []
  const pageErrors = []
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push({text: msg.text(), url: msg.location().url || ''})
  })
  page.on('pageerror', (err) => pageErrors.push(String(err)))
  try {
    const res = await page.goto(`${BASE}/`)
    assert.equal(res.status(), 200)
    assert.equal(await page.title(), 'Crier · live demo')

    // Each panel reaches its state: open where the server has the transport, an error where not.
    for (const t of PANELS) {
      const want = missing.has(t) ? 'error' : 'open'
      await page.waitForFunction(({t, want}) => document.getElementById(`panel-${t}`)?.dataset.state === want,
        {t, want}, {timeout: 15000}).catch(async (err) => {
        const state = await page.evaluate((t) => document.getElementById(`panel-${t}`)?.dataset.state, t)
        throw new Error(`panel ${t}: state ${state}, want ${want}`, {cause: err})
      })
      if (want === 'error') {
        const problem = await page.textContent(`#panel-${t} .problem`)
        assert.match(problem, /Not available on this server yet: .*404/, `panel ${t} explains itself`)
        assert.equal(await page.textContent(`#panel-${t} .badge`), 'unavailable')
      }
    }
    const open = PANELS.filter((t) => !missing.has(t))

    // Publish from the form: every connected panel receives it, with a latency.
    const text = `hello from the browser test ${randomBytes(3).toString('hex')}`
    await page.fill('#text', text)
    await page.click('#send')
    for (const t of open) {
      await page.waitForFunction(({t, text}) =>
        [...document.querySelectorAll(`#panel-${t} .log li .body`)].some((el) => el.textContent === text),
      {t, text}, {timeout: 10000})
      assert.match(await page.textContent(`#panel-${t} .latency`), /^\d+ ms$/)
      assert.notEqual(await page.textContent(`#panel-${t} .count`), '0')
    }
    assert.match(await page.textContent('#publish-status'), /^Published demo@\w+:\d+$/)

    // The camera publishes PNG frames to demo:camera once a second.
    await page.click('#camera')
    await page.waitForFunction(() => /frame [2-9]\d* published/.test(document.getElementById('camera-status').textContent),
      null, {timeout: 10000})
    const hist = await (await fetch(`${BASE}/v1/channels/demo:camera/messages?limit=1`)).json()
    assert.equal(hist.messages[0].content_type, 'image/png')
    assert.equal(hist.messages[0].encoding, 'base64')
    assert.ok(Buffer.from(hist.messages[0].data, 'base64').subarray(1, 4).toString() === 'PNG')
    if (missing.has('multipart')) {
      await page.waitForFunction(() => document.getElementById('live-overlay').classList.contains('error'), null, {timeout: 10000})
      assert.match(await page.textContent('#live-overlay'), /404/)
    } else {
      await page.waitForFunction(() => document.getElementById('live').naturalWidth === 320, null, {timeout: 10000})
    }

    await page.screenshot({path: artifact('demo.png'), fullPage: true})
    await page.emulateMedia({colorScheme: 'dark'})
    await page.screenshot({path: artifact('demo-dark.png'), fullPage: true})
    await page.click('#camera') // off

    assert.deepEqual(pageErrors, [], 'uncaught exceptions in the page')
    const expected = consoleErrors.filter(allowed)
    t.diagnostic(`${expected.length} console errors from the missing endpoints ${allowedPaths.join(', ') || '(none)'}: ` +
      [...new Set(expected.map((e) => e.text))].join(' | '))
    const unexpected = consoleErrors.filter((e) => !allowed(e))
    assert.deepEqual(unexpected, [], `console errors beyond those of the missing endpoints ${allowedPaths.join(', ') || '(none)'}`)
  } finally {
    await page.close()
  }
})

test('/ is the demo exactly; other unknown paths keep the JSON 404', {timeout: T}, async () => {
  const page = await fetch(`${BASE}/`)
  assert.equal(page.status, 200)
  assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8')
  const html = await page.text()
  const m = html.match(/from '\.\/crier\.js\?v=([0-9a-f]+)'/)
  assert.ok(m, 'the page imports a versioned crier.js')
  for (const path of ['/index.html', '/nope', '/demo', '/crier.jsx']) {
    const res = await fetch(BASE + path)
    assert.equal(res.status, 404, path)
    assert.equal(res.headers.get('content-type'), 'application/json')
    assert.equal((await res.json()).error.code, 'not_found')
  }
  const js = await fetch(`${BASE}/crier.js?v=${m[1]}`)
  assert.equal(js.status, 200)
  assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8')
  assert.match(js.headers.get('cache-control'), /immutable/)
  const etag = js.headers.get('etag')
  const again = await fetch(`${BASE}/crier.js`, {headers: {'If-None-Match': etag}})
  assert.equal(again.status, 304)
  const types = await fetch(`${BASE}/crier.d.ts`)
  assert.equal(types.status, 200)
  assert.match(await types.text(), /export declare class Crier/)
})
