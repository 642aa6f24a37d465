#!/usr/bin/env node
'use strict';
/*
 * The full Colyseus flow, for scripts/bench.sh: N real colyseus.js 0.16 clients, C at a time,
 * each joinOrCreate(room) through the endpoint (matchmaking POST, then the room's WebSocket),
 * wait for the room's "hello" message (the join is done), then leave and wait for the close.
 *
 *   node bench/flow.js --endpoint http://127.0.0.1:PORT[,http://...] [--n 500]
 *        [--concurrency 20] [--room echo] [--timeout-ms 10000] [--watch-pid P,..]
 *        [--server-pid P,..] [--label NAME]
 *
 * Each worker joins with the option {lane: its index}: game servers started with
 * FILTER_BY=lane match rooms per lane, so concurrent joins do not queue behind Colyseus's
 * fleet-wide joinOrCreate lock (see example/server.js); without it they do.
 *
 * Several endpoints: join i goes to endpoint i mod count (direct to the game processes, each
 * started with publicAddress, so the client opens the room's WebSocket on the room's process).
 * Join latency: from joinOrCreate() to "hello". joins/s: completed joins over the wall time
 * of the whole run (leaves included: a worker starts its next join after its leave).
 *
 * CPU time (utime+stime from /proc/PID/stat) before and after the run, for --watch-pid (the
 * proxy), --server-pid (the game servers) and this process, so the result shows which of
 * them set the pace. stdout: one JSON object.
 */

const fs = require('fs');
const http = require('http');
const https = require('https');

// Before colyseus.js loads: its HTTP client captures the global agent, and Node 19+'s
// keep-alive agent times idle sockets out after 5 s ("socket hang up" on later joins).
http.globalAgent = new http.Agent({ keepAlive: false });
https.globalAgent = new https.Agent({ keepAlive: false });

const { Client } = require('colyseus.js');

function parseArgs(argv) {
  const o = {
    endpoint: '', n: '500', concurrency: '20', room: 'echo', 'timeout-ms': '10000',
    'watch-pid': '', 'server-pid': '', label: '',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in o) || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`);
    o[k] = argv[i + 1];
  }
  const int = (k) => {
    const v = parseInt(o[k], 10);
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${k} must be a non-negative integer`);
    return v;
  };
  const list = (s) => s.split(',').filter(Boolean);
  const endpoints = list(o.endpoint);
  if (!endpoints.length) throw new Error('--endpoint is required');
  return {
    endpoints, n: int('n'), concurrency: Math.max(1, int('concurrency')), room: o.room,
    timeoutMs: int('timeout-ms'), label: o.label,
    watch: list(o['watch-pid']).map(Number), servers: list(o['server-pid']).map(Number),
  };
}

/** utime+stime of a process in seconds, or null when it is gone. USER_HZ is 100 on Linux. */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return null;
  }
}

const sum = (pids) => pids.reduce((s, p) => s + (cpuSeconds(p) || 0), 0);

function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

/** Attaches the "hello" handler when the room is created, before its WebSocket opens, so the
 * message cannot arrive before anyone listens for it. */
class FlowClient extends Client {
  createRoom(roomName, rootSchema) {
    const room = super.createRoom(roomName, rootSchema);
    room.onMessage('hello', () => this.onHello());
    return room;
  }
}

/** One join: resolves with its latency in ms, after the leave. */
async function joinOnce(endpoint, lane, cfg) {
  const client = new FlowClient(endpoint);
  const hello = new Promise((resolve) => { client.onHello = resolve; });
  const t0 = performance.now();
  const joining = client.joinOrCreate(cfg.room, { lane });
  let room;
  try {
    room = await withTimeout(joining, cfg.timeoutMs, 'joinOrCreate');
    await withTimeout(hello, cfg.timeoutMs, 'hello');
  } catch (e) {
    // A join that times out may still complete later: close it then.
    joining.then((r) => r.leave(false), () => {});
    throw e;
  }
  const ms = performance.now() - t0;
  await withTimeout(room.leave(true), cfg.timeoutMs, 'leave');
  return ms;
}

function errorKind(e) {
  const msg = (e && e.message) || String(e);
  const code = e && e.code !== undefined ? ` (code ${e.code})` : '';
  // Room ids and ports vary per error; keep the kinds countable.
  return `${msg.replace(/[A-Za-z0-9_-]{9}(?= is already full)/, 'ROOM').replace(/:\d+/g, ':PORT')}${code}`.slice(0, 120);
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length, Math.max(1, Math.ceil(p * sorted.length))) - 1;
  return Math.round(sorted[i] * 100) / 100;
}

async function main() {
  const cfg = parseArgs(process.argv.slice(2));
  const lat = [];
  const errors = {};
  let next = 0;
  const before = { at: performance.now(), me: cpuSeconds('self'), proxy: sum(cfg.watch), servers: sum(cfg.servers) };
  const worker = async (_, lane) => {
    for (let i = next++; i < cfg.n; i = next++) {
      try {
        lat.push(await joinOnce(cfg.endpoints[i % cfg.endpoints.length], lane, cfg));
      } catch (e) {
        const k = errorKind(e);
        errors[k] = (errors[k] || 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.concurrency, cfg.n) }, worker));
  const wall = (performance.now() - before.at) / 1000;
  const cpu = {
    client: cpuSeconds('self') - before.me,
    proxy: sum(cfg.watch) - before.proxy,
    servers: sum(cfg.servers) - before.servers,
  };
  lat.sort((a, b) => a - b);
  const ok = lat.length;
  const perJoin = (s) => (ok ? (s * 1e6) / ok : null);
  process.stdout.write(`${JSON.stringify({
    mode: 'flow',
    label: cfg.label,
    n: cfg.n,
    concurrency: cfg.concurrency,
    endpoints: cfg.endpoints.length,
    ok,
    failed: cfg.n - ok,
    error_kinds: errors,
    wall_s: wall,
    joins_per_s: ok / Math.max(wall, 1e-9),
    join_ms: { p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: pct(lat, 1) },
    cpu_s: cpu,
    // Per completed join, in µs; "busy" = CPU time over wall time (1.0 = one core).
    proxy_cpu_us_per_join: perJoin(cpu.proxy),
    servers_cpu_us_per_join: perJoin(cpu.servers),
    client_cpu_us_per_join: perJoin(cpu.client),
    client_busy: cpu.client / wall,
    servers_busy: cpu.servers / wall,
    proxy_busy: cpu.proxy / wall,
  })}\n`);
  // Sockets of timed-out joins may linger; the result is out (the caller judges it).
  setTimeout(() => process.exit(0), 50);
}

main().catch((e) => {
  process.stderr.write(`flow.js: ${(e && e.stack) || e}\n`);
  process.exit(2);
});
