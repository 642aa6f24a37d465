#!/usr/bin/env node
'use strict';
/*
 * Example Colyseus 0.16 game server used to test colyseus-envoy.
 *
 * Environment:
 *   PORT            listen port (default 2567)
 *   HOST            bind address (default 127.0.0.1)
 *   REDIS_URL       Redis for RedisPresence (and RedisDriver) (default redis://127.0.0.1:6379)
 *   REDIS_SENTINELS "host:port,..." of a Sentinel set: RedisPresence/RedisDriver ask it for the
 *                   master named REDIS_SENTINEL_MASTER (ioredis `sentinels` + `name`;
 *                   REDIS_SENTINEL_PASSWORD: `sentinelPassword`); REDIS_URL then only gives the
 *                   user, password and database
 *   REDIS_CLUSTER_NODES "host:port,..." of a Redis Cluster (ioredis Cluster); REDIS_URL then
 *                   only gives the user and password
 *   REDIS_CA_FILE   PEM CA for a rediss:// REDIS_URL (ioredis `tls.ca`)
 *   SELF_HOSTNAME   host Colyseus writes into Redis discovery. Colyseus 0.16 reads ONLY this
 *                   variable (unset => "pid/undefined:PORT"); this script defaults it to HOST
 *                   (or 127.0.0.1 when HOST is a wildcard such as 0.0.0.0 / ::).
 *   SELF_PORT       port Colyseus writes into discovery (Colyseus reads it; default: PORT)
 *                   => with defaults the node registers as "{processId}/127.0.0.1:{PORT}" in the
 *                      Redis set "colyseus:nodes" and publishes the JSON string
 *                      "add,{processId}/127.0.0.1:{PORT}" on "colyseus:nodes:discovery"
 *                      (and "remove,..." at the start of graceful shutdown).
 *   PRESENCE        "redis" (default, RedisPresence on REDIS_URL) or "local" (LocalPresence and
 *                   LocalDriver: the server writes nothing into Redis and does not register
 *                   itself, like Colyseus 0.17+ or a custom server; DRIVER is then ignored.
 *                   Register it with `colyseus-envoy register`)
 *   DRIVER          "redis" (default, RedisDriver on REDIS_URL) or "mongoose" (MongooseDriver)
 *   MONGO_URI       MongoDB URI for DRIVER=mongoose (default mongodb://127.0.0.1:27017/colyseus)
 *   MAX_CLIENTS     maxClients of the "echo" room (default 4)
 *   FILTER_BY       comma-separated join options the "echo" room is matched by (Colyseus
 *                   filterBy; default none). joinOrCreate calls with the same filter values
 *                   queue behind one Redis lock fleet-wide (a waiter sleeps up to 0.5-1.1 s),
 *                   so the benchmark gives each of its concurrent clients its own value.
 *   SHUTDOWN_DELAY_MS  on SIGTERM/SIGINT, wait this long after unregistering from discovery
 *                   before disposing rooms (default 0), so open WebSockets keep working
 *                   for a while after "remove" (for drain tests)
 *   PUBLIC_ADDRESS  optional Colyseus publicAddress (leave unset behind the proxy)
 *   DEBUG           contains "example" (or "*") => log joins with the client IP to stderr
 *
 * stdout: exactly one line `READY {"processId":"...","port":N}` once the server listens AND
 * is registered in "colyseus:nodes" (with PRESENCE=local: once it listens). Everything else
 * goes to stderr.
 *
 * Room "echo": on join sends "hello" {processId, roomId}; replies to each "echo" message with
 * "echo" {payload, processId, roomId}.
 *
 * Every WebSocket upgrade it accepts (101) carries `X-Colyseus-Process-Id: {processId}`, so a
 * benchmark can tell which process answered a room path (even one naming no room).
 */

const http = require('http');
const https = require('https');

// Node 19+ http.globalAgent has keepAlive and a 5 s socket timeout; anything in this process
// doing HTTP through the global agent would get "socket hang up" on slow answers.
http.globalAgent = new http.Agent({ keepAlive: false });
https.globalAgent = new https.Agent({ keepAlive: false });

const PORT = parseInt(process.env.PORT || '2567', 10);
const HOST = process.env.HOST || '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const PRESENCE = (process.env.PRESENCE || 'redis').toLowerCase();
const DRIVER = (process.env.DRIVER || 'redis').toLowerCase();
const MAX_CLIENTS = parseInt(process.env.MAX_CLIENTS || '4', 10);
const FILTER_BY = (process.env.FILTER_BY || '').split(',').map((s) => s.trim()).filter(Boolean);
const SHUTDOWN_DELAY_MS = parseInt(process.env.SHUTDOWN_DELAY_MS || '0', 10);
const DEBUG_JOINS = /(^|[,\s])(\*|example[^,\s]*)/.test(process.env.DEBUG || '');

if (!process.env.SELF_HOSTNAME) {
  const wildcard = HOST === '0.0.0.0' || HOST === '::' || HOST === '';
  process.env.SELF_HOSTNAME = wildcard ? '127.0.0.1' : HOST;
}

const log = (...args) => console.error('[example]', ...args);

// Colyseus logs through its logger (console by default); keep stdout for the READY line.
const stderrLogger = {
  debug: (...a) => console.error(...a),
  info: (...a) => console.error(...a),
  warn: (...a) => console.error(...a),
  error: (...a) => console.error(...a),
  trace: (...a) => console.error(...a),
};

const { Server, Room, matchMaker, LocalPresence, LocalDriver } = require('@colyseus/core');
const { WebSocketTransport } = require('@colyseus/ws-transport');
const { RedisPresence } = require('@colyseus/redis-presence');

/** "host:port,..." as ioredis nodes. */
function nodeList(list) {
  return list.split(',').map((s) => s.trim()).filter(Boolean).map((item) => {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(item);
    if (!m) throw new Error(`bad node "${item}" (expected host:port)`);
    return { host: m[1], port: parseInt(m[2], 10) };
  });
}

/**
 * The arguments RedisPresence and RedisDriver pass on to ioredis: `[options]` (a URL, or
 * options for a Sentinel set or TLS with a CA file) or `[nodes, clusterOptions]`.
 */
function redisArgs() {
  const url = new URL(REDIS_URL);
  const auth = {
    username: decodeURIComponent(url.username) || undefined,
    password: decodeURIComponent(url.password) || undefined,
  };
  const tls = url.protocol === 'rediss:'
    ? { tls: process.env.REDIS_CA_FILE ? { ca: require('fs').readFileSync(process.env.REDIS_CA_FILE) } : {} }
    : {};
  if (process.env.REDIS_CLUSTER_NODES) {
    return [nodeList(process.env.REDIS_CLUSTER_NODES), { redisOptions: { ...auth, ...tls } }];
  }
  const db = parseInt(url.pathname.slice(1) || '0', 10);
  if (process.env.REDIS_SENTINELS) {
    return [{
      sentinels: nodeList(process.env.REDIS_SENTINELS),
      name: process.env.REDIS_SENTINEL_MASTER || 'mymaster',
      sentinelPassword: process.env.REDIS_SENTINEL_PASSWORD || undefined,
      ...auth, ...tls, db,
    }];
  }
  if (process.env.REDIS_CA_FILE) {
    return [{ host: url.hostname, port: parseInt(url.port || '6379', 10), ...auth, ...tls, db }];
  }
  return [REDIS_URL];
}

function makePresence() {
  if (PRESENCE === 'redis') return new RedisPresence(...redisArgs());
  if (PRESENCE === 'local') return new LocalPresence();
  throw new Error(`unknown PRESENCE "${PRESENCE}" (expected "redis" or "local")`);
}

function makeDriver() {
  if (PRESENCE === 'local') return new LocalDriver();
  if (DRIVER === 'redis') {
    const { RedisDriver } = require('@colyseus/redis-driver');
    return new RedisDriver(...redisArgs());
  }
  if (DRIVER === 'mongoose') {
    const { MongooseDriver } = require('@colyseus/mongoose-driver');
    const mongoose = require('mongoose');
    const driver = new MongooseDriver(process.env.MONGO_URI || undefined);
    // Shim: core 0.16 calls listing.remove() (without awaiting it), which Mongoose 7+
    // removed; without it a disposed room's listing stays in "roomcaches" forever.
    // doc.deleteOne() returns a lazy Query: it must be exec()'d or nothing is sent.
    const RoomCache = mongoose.model('RoomCache');
    if (typeof RoomCache.prototype.remove !== 'function') {
      RoomCache.prototype.remove = function remove() {
        const p = this.deleteOne().exec();
        p.catch((err) => log('roomcache remove failed:', err && err.message || err));
        return p;
      };
    }
    return driver;
  }
  throw new Error(`unknown DRIVER "${DRIVER}" (expected "redis" or "mongoose")`);
}

class EchoRoom extends Room {
  onCreate() {
    this.maxClients = MAX_CLIENTS;
    this.onMessage('echo', (client, payload) => {
      client.send('echo', { payload, processId: matchMaker.processId, roomId: this.roomId });
    });
    this.onMessage('*', (client, type) => {
      if (DEBUG_JOINS) log(`room ${this.roomId}: unhandled message type ${String(type)}`);
    });
  }

  onAuth(client, options, context) {
    const xff = context && context.headers && context.headers['x-forwarded-for'];
    const ip = xff ? String(xff).split(',')[0].trim() : (context && context.ip);
    return { ip: Array.isArray(ip) ? ip[0] : ip };
  }

  onJoin(client, options, auth) {
    if (DEBUG_JOINS) {
      log(`join room=${this.roomId} session=${client.sessionId} ip=${auth && auth.ip}`);
    }
    client.send('hello', { processId: matchMaker.processId, roomId: this.roomId });
  }

  onLeave(client, consented) {
    if (DEBUG_JOINS) log(`leave room=${this.roomId} session=${client.sessionId} consented=${consented}`);
  }
}

async function main() {
  const transport = new WebSocketTransport();
  transport.wss.on('headers', (headers) => {
    headers.push(`X-Colyseus-Process-Id: ${matchMaker.processId}`);
  });
  const serverOptions = {
    transport,
    presence: makePresence(),
    driver: makeDriver(),
    greet: false,
    logger: stderrLogger,
  };
  if (process.env.PUBLIC_ADDRESS) serverOptions.publicAddress = process.env.PUBLIC_ADDRESS;

  const gameServer = new Server(serverOptions); // registers SIGINT/SIGTERM/SIGUSR2 -> gracefullyShutdown()
  const echoRoom = gameServer.define('echo', EchoRoom);
  if (FILTER_BY.length) echoRoom.filterBy(FILTER_BY);

  gameServer.onBeforeShutdown(async () => {
    log(`shutting down (processId ${matchMaker.processId}); unregistered from discovery`);
    // Safety net: make sure the process exits even if disposing rooms hangs.
    setTimeout(() => { log('forced exit'); process.exit(1); }, SHUTDOWN_DELAY_MS + 15000).unref();
    if (SHUTDOWN_DELAY_MS > 0) await new Promise((r) => setTimeout(r, SHUTDOWN_DELAY_MS));
  });

  await gameServer.listen(PORT, HOST);

  // Colyseus registers the node from the server's 'listening' event without awaiting it;
  // wait until the member is really in the set before announcing READY.
  const selfPort = process.env.SELF_PORT || PORT;
  const member = `${matchMaker.processId}/${process.env.SELF_HOSTNAME}:${selfPort}`;
  const presence = gameServer.presence;
  for (let i = 0; PRESENCE === 'redis' && i < 200; i++) {
    if (await presence.sismember('colyseus:nodes', member)) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  if (PRESENCE === 'redis') {
    log(`listening on ${HOST}:${PORT}, driver=${DRIVER}, discovery member ${member}`);
  } else {
    log(`listening on ${HOST}:${PORT}, local presence and driver (not registered in Redis)`);
  }
  process.stdout.write(`READY ${JSON.stringify({ processId: matchMaker.processId, port: PORT })}\n`);
}

main().catch((err) => {
  log('fatal:', err && err.stack || err);
  process.exit(1);
});
