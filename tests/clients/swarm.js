#!/usr/bin/env node
'use strict';
/*
 * Load client for Colyseus 0.16 using the real colyseus.js.
 * tests/colyseus-0.15/swarm.js and tests/colyseus-0.17/swarm.js run the same checks with their
 * version's client library: `require('.../tests/clients/swarm.js').run(Client)`.
 *
 *   node tests/clients/swarm.js --endpoint http://127.0.0.1:PORT [--clients N] [--concurrency C]
 *        [--messages M] [--room echo] [--hold-ms T] [--leave true|false] [--timeout-ms X]
 *
 * Every flag may also be given by env: SWARM_ENDPOINT, SWARM_CLIENTS, SWARM_CONCURRENCY,
 * SWARM_MESSAGES, SWARM_ROOM, SWARM_HOLD_MS, SWARM_LEAVE, SWARM_TIMEOUT_MS.
 *
 * Each client: joinOrCreate(room), wait for "hello" {processId, roomId}, then M sequential
 * "echo" round trips, each checked (payload, processId and roomId equal the hello's).
 * --hold-ms T keeps all connections open T ms after the messages. --hold-ms -1 prints
 * "HOLDING" on stdout and waits for SIGUSR2; then it checks that every connection is still
 * open, does one more echo on each, and finishes. Any unexpected onLeave/onError is an error.
 *
 * stdout: one JSON line at the end (after "HOLDING" in hold mode):
 *   {"clients":N,"ok":K,"errors":[{"i":..,"error":".."}],"byProcess":{pid:count},
 *    "rooms":{roomId:pid},"joinMs":{"p50":..,"max":..},"echoMs":{"p50":..,"max":..}}
 * exit code 0 iff every client is ok.
 */

const http = require('http');
const https = require('https');

// Must happen before colyseus.js is loaded: @colyseus/httpie captures http.globalAgent at
// require time, and Node 19+'s global agent times sockets out after 5 s ("socket hang up").
http.globalAgent = new http.Agent({ keepAlive: false });
https.globalAgent = new https.Agent({ keepAlive: false });

// Remembers the seat reservation so the processId the matchmaker chose can be checked
// against the one the room reports.
function tracingClient(Client) {
  return class TracingClient extends Client {
    consumeSeatReservation(response, ...rest) {
      this.reservation = response;
      return super.consumeSeatReservation(response, ...rest);
    }
  };
}
let TracingClient = null; // set by run()

function parseArgs(argv) {
  const env = process.env;
  const opts = {
    endpoint: env.SWARM_ENDPOINT || 'http://127.0.0.1:2567',
    clients: env.SWARM_CLIENTS || '1',
    concurrency: env.SWARM_CONCURRENCY || '10',
    messages: env.SWARM_MESSAGES || '3',
    room: env.SWARM_ROOM || 'echo',
    'hold-ms': env.SWARM_HOLD_MS || '0',
    leave: env.SWARM_LEAVE || 'true',
    'timeout-ms': env.SWARM_TIMEOUT_MS || '15000',
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    a = a.slice(2);
    let val;
    const eq = a.indexOf('=');
    if (eq >= 0) { val = a.slice(eq + 1); a = a.slice(0, eq); }
    if (a === 'help' || a === 'h') {
      process.stderr.write(require('fs').readFileSync(__filename, 'utf8').split('*/')[0]);
      process.exit(2);
    }
    if (a === 'no-leave') { opts.leave = 'false'; continue; }
    if (!(a in opts)) throw new Error(`unknown option --${a}`);
    if (val === undefined) {
      const next = argv[i + 1];
      if (a === 'leave' && (next === undefined || next.startsWith('--'))) { val = 'true'; }
      else { val = next; i++; }
    }
    if (val === undefined) throw new Error(`--${a} needs a value`);
    opts[a] = val;
  }
  const int = (k) => {
    const n = parseInt(opts[k], 10);
    if (!Number.isFinite(n)) throw new Error(`--${k} must be an integer`);
    return n;
  };
  return {
    endpoint: opts.endpoint,
    clients: int('clients'),
    concurrency: Math.max(1, int('concurrency')),
    messages: int('messages'),
    room: opts.room,
    holdMs: int('hold-ms'),
    leave: !/^(false|0|no)$/i.test(opts.leave),
    timeoutMs: int('timeout-ms'),
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout after ${ms}ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

function errString(e) {
  if (e == null) return String(e);
  if (typeof e === 'string') return e;
  const code = e.code !== undefined ? ` (code ${e.code})` : '';
  return `${e.name && e.name !== 'Error' ? e.name + ': ' : ''}${e.message || String(e)}${code}`;
}

function stats(arr) {
  if (!arr.length) return { p50: null, max: null };
  const s = arr.slice().sort((a, b) => a - b);
  const r = (x) => Math.round(x * 10) / 10;
  return { p50: r(s[Math.floor((s.length - 1) / 2)]), max: r(s[s.length - 1]) };
}

class SwarmClient {
  constructor(i, cfg, result) {
    this.i = i;
    this.cfg = cfg;
    this.result = result;
    this.room = null;
    this.processId = null;
    this.roomId = null;
    this.errors = [];
    this.closed = false;
    this.leaving = false;
    this.waiters = { hello: [], echo: [] };
    this.seq = 0;
  }

  fail(msg) { this.errors.push(msg); }

  waitFor(type) {
    return new Promise((resolve, reject) => {
      this.waiters[type].push({ resolve, reject });
    });
  }

  rejectAll(err) {
    for (const type of Object.keys(this.waiters)) {
      const w = this.waiters[type];
      this.waiters[type] = [];
      w.forEach((x) => x.reject(err));
    }
  }

  async join() {
    const client = new TracingClient(this.cfg.endpoint);
    const t0 = performance.now();
    const room = await withTimeout(client.joinOrCreate(this.cfg.room, { i: this.i }), this.cfg.timeoutMs, 'joinOrCreate');
    this.room = room;
    room.onMessage('hello', (m) => {
      const w = this.waiters.hello.shift();
      if (w) w.resolve(m); else this.helloEarly = m;
    });
    room.onMessage('echo', (m) => {
      const w = this.waiters.echo.shift();
      if (w) w.resolve(m); else this.fail(`unexpected echo ${JSON.stringify(m)}`);
    });
    room.onMessage('*', (type, m) => this.fail(`unexpected message type ${String(type)}: ${JSON.stringify(m)}`));
    room.onLeave((code) => {
      this.closed = true;
      if (!this.leaving) {
        const e = new Error(`unexpected onLeave code ${code}`);
        this.fail(e.message);
        this.rejectAll(e);
      }
    });
    room.onError((code, message) => {
      const e = new Error(`onError code ${code}: ${message}`);
      this.fail(e.message);
      this.rejectAll(e);
    });
    const hello = this.helloEarly || await withTimeout(this.waitFor('hello'), this.cfg.timeoutMs, 'hello');
    this.result.joinMs.push(performance.now() - t0);
    if (!hello || typeof hello.processId !== 'string' || typeof hello.roomId !== 'string') {
      throw new Error(`bad hello ${JSON.stringify(hello)}`);
    }
    if (hello.roomId !== room.roomId) throw new Error(`hello roomId ${hello.roomId} != room.roomId ${room.roomId}`);
    // Up to 0.16 the reservation nests the room ({room: {processId}}); 0.17 flattens it.
    const resv = client.reservation && (client.reservation.room || client.reservation);
    if (resv && resv.processId !== hello.processId) {
      throw new Error(`hello processId ${hello.processId} != seat reservation processId ${resv.processId}`);
    }
    this.processId = hello.processId;
    this.roomId = hello.roomId;
  }

  async echo() {
    if (this.closed) throw new Error('connection already closed');
    const payload = { i: this.i, seq: ++this.seq, r: Math.random().toString(36).slice(2) };
    const t0 = performance.now();
    const p = withTimeout(this.waitFor('echo'), this.cfg.timeoutMs, `echo ${this.seq}`);
    this.room.send('echo', payload);
    const m = await p;
    this.result.echoMs.push(performance.now() - t0);
    if (!m || JSON.stringify(m.payload) !== JSON.stringify(payload)) {
      throw new Error(`echo payload mismatch: sent ${JSON.stringify(payload)} got ${JSON.stringify(m && m.payload)}`);
    }
    if (m.processId !== this.processId) throw new Error(`echo processId ${m.processId} != ${this.processId}`);
    if (m.roomId !== this.roomId) throw new Error(`echo roomId ${m.roomId} != ${this.roomId}`);
  }

  async leave() {
    if (!this.room || this.closed) return;
    this.leaving = true;
    try {
      await withTimeout(this.room.leave(true), 5000, 'leave');
    } catch (e) {
      this.fail(`leave: ${errString(e)}`);
    }
  }
}

async function pool(items, concurrency, fn) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(concurrency, items.length); w++) {
    workers.push((async () => {
      while (next < items.length) {
        const idx = next++;
        await fn(items[idx]);
      }
    })());
  }
  await Promise.all(workers);
}

async function main(Client) {
  TracingClient = tracingClient(Client);
  let cfg;
  try {
    cfg = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`swarm.js: ${e.message}\n`);
    process.exit(2);
  }
  const result = { joinMs: [], echoMs: [] };
  const swarm = [];
  for (let i = 0; i < cfg.clients; i++) swarm.push(new SwarmClient(i, cfg, result));
  const dead = new Set(); // clients whose run threw

  const guard = async (c, fn) => {
    if (dead.has(c)) return;
    try { await fn(); } catch (e) { c.fail(errString(e)); dead.add(c); }
  };

  // Joins (at most `concurrency` in flight), each followed by its echo round trips.
  await pool(swarm, cfg.concurrency, (c) => guard(c, async () => {
    await c.join();
    for (let k = 0; k < cfg.messages; k++) await c.echo();
  }));

  if (cfg.holdMs > 0) {
    await sleep(cfg.holdMs);
  } else if (cfg.holdMs < 0) {
    // A signal listener does not keep Node alive: if every socket closes we must still wait.
    const keepAlive = setInterval(() => {}, 1 << 30);
    const got = new Promise((resolve) => process.once('SIGUSR2', resolve));
    process.stdout.write('HOLDING\n');
    await got;
    clearInterval(keepAlive);
  }
  if (cfg.holdMs !== 0) {
    // Every connection must still be open; one more echo on each.
    await pool(swarm, Math.max(cfg.concurrency, 50), (c) => guard(c, async () => {
      if (!c.room) return;
      if (c.closed) throw new Error('connection closed during hold');
      await c.echo();
    }));
  }

  if (cfg.leave) {
    await pool(swarm, Math.max(cfg.concurrency, 50), (c) => c.leave());
  }

  const out = {
    clients: cfg.clients,
    ok: 0,
    errors: [],
    byProcess: {},
    rooms: {},
    joinMs: stats(result.joinMs),
    echoMs: stats(result.echoMs),
  };
  for (const c of swarm) {
    if (c.errors.length === 0 && c.room) {
      out.ok++;
    } else {
      out.errors.push({ i: c.i, error: c.errors.length ? c.errors.join('; ') : 'not joined' });
    }
    if (c.processId) {
      out.byProcess[c.processId] = (out.byProcess[c.processId] || 0) + 1;
      out.rooms[c.roomId] = c.processId;
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  const code = out.ok === cfg.clients ? 0 : 1;
  // Without --leave the sockets stay open; exit explicitly either way.
  setTimeout(() => process.exit(code), 50);
}

/** Runs the swarm (CLI arguments from process.argv) with `Client` of a Colyseus client library. */
function run(Client) {
  main(Client).catch((e) => {
    process.stderr.write(`swarm.js fatal: ${e && e.stack || e}\n`);
    process.exit(1);
  });
}

if (require.main === module) {
  run(require('colyseus.js').Client);
} else {
  module.exports = { run };
}
