// The in-page side of the crier.js tests: a Crier created inside a real page (imported from the
// server's own /crier.js), whose events are recorded in window.__crier[id] for the test to read.

let nextId = 0

/**
 * Client is a Crier living in page. opts are Crier options; they go through JSON, so only
 * plain values.
 */
export class Client {
  static async open(page, opts) {
    const id = `c${++nextId}`
    await page.evaluate(async ({id, opts}) => {
      const mod = await import('/crier.js')
      window.__crierModule = mod
      const c = new mod.Crier(location.origin, opts)
      const rec = {c, got: [], gaps: [], errors: [], reconnects: [], transports: [], states: [], subs: new Map()}
      c.on('message', (env) => rec.got.push(env))
      c.on('gap', (env) => rec.gaps.push(env))
      c.on('error', (err) => rec.errors.push(`${err.transport || ''} ${err.code}: ${err.message}`))
      c.on('reconnect', (r) => rec.reconnects.push(r))
      c.on('transport', (t) => rec.transports.push(t))
      c.on('state', (s) => rec.states.push(s.state))
      window.__crier = window.__crier || {}
      window.__crier[id] = rec
    }, {id, opts})
    return new Client(page, id)
  }

  constructor(page, id) {
    this.page = page
    this.id = id
  }

  /** subscribe subscribes in the page and waits until the channel is live. */
  async subscribe(channel, {since, wait = true, timeout = 10000} = {}) {
    const transport = await this.page.evaluate(async ({id, channel, since, wait, timeout}) => {
      const rec = window.__crier[id]
      const sub = rec.c.subscribe(channel, {since})
      rec.subs.set(channel, sub)
      if (!wait) return rec.c.transport
      const late = new Promise((resolve) => setTimeout(() => resolve('late'), timeout))
      return (await Promise.race([sub.ready, late])) === 'late' ? null : rec.c.transport
    }, {id: this.id, channel, since, wait, timeout})
    if (wait && transport === null) {
      const rec = await this.record()
      throw new Error(`subscription to ${channel} not live within ${timeout} ms: state ${rec.state}, errors ${JSON.stringify(rec.errors)}`)
    }
    return transport
  }

  unsubscribe(channel) {
    return this.page.evaluate(({id, channel}) => {
      const rec = window.__crier[id]
      rec.subs.get(channel).unsubscribe()
      rec.subs.delete(channel)
    }, {id: this.id, channel})
  }

  /** run evaluates fn(crier, rec, arg) in the page. */
  run(fn, arg) {
    return this.page.evaluate(({id, src, arg}) => {
      const rec = window.__crier[id]
      // eslint-disable-next-line no-new-func
      return new Function('c', 'rec', 'arg', `return (${src})(c, rec, arg)`)(rec.c, rec, arg)
    }, {id: this.id, src: fn.toString(), arg})
  }

  /** received returns the envelopes received so far (of channel, when given). */
  received(channel) {
    return this.page.evaluate(({id, channel}) => window.__crier[id].got.filter((e) => !channel || e.channel === channel), {id: this.id, channel})
  }

  record() {
    return this.page.evaluate((id) => {
      const {got, gaps, errors, reconnects, transports, states, c} = window.__crier[id]
      return {got, gaps, errors, reconnects, transports, states, stats: c.stats, state: c.state, transport: c.transport, cursor: c.cursor}
    }, this.id)
  }

  /** waitFor waits until at least n envelopes (of channel, when given) arrived. */
  async waitFor(n, {channel, timeout = 10000} = {}) {
    try {
      await this.page.waitForFunction(({id, channel, n}) =>
        window.__crier[id].got.filter((e) => !channel || e.channel === channel).length >= n,
      {id: this.id, channel, n}, {timeout, polling: 50})
    } catch (err) {
      const rec = await this.record()
      throw new Error(`waiting for ${n} envelopes${channel ? ' on ' + channel : ''}: got ${rec.got.length} ` +
        `(offsets ${rec.got.map((e) => e.offset).join(',')}); state ${rec.state}; errors ${JSON.stringify(rec.errors)}`, {cause: err})
    }
    return this.received(channel)
  }

  /** waitUntil waits until predicate(rec) holds in the page. */
  async waitUntil(predicate, {timeout = 10000, what = 'condition'} = {}) {
    try {
      await this.page.waitForFunction(({id, src}) =>
        // eslint-disable-next-line no-new-func
        new Function('rec', `return (${src})(rec)`)(window.__crier[id]),
      {id: this.id, src: predicate.toString()}, {timeout, polling: 50})
    } catch (err) {
      const rec = await this.record()
      throw new Error(`waiting for ${what}: state ${rec.state}, errors ${JSON.stringify(rec.errors)}`, {cause: err})
    }
  }

  close() {
    return this.page.evaluate((id) => window.__crier[id].c.close(), this.id).catch(() => {})
  }
}
