#!/usr/bin/env node
'use strict';
/*
 * Colyseus 0.15 echo server for the colyseus-envoy end-to-end tests (tests/e2e/tests/versions.rs).
 * Colyseus 0.15 registers itself in Redis discovery (RedisPresence), as 0.16 does.
 *
 * Environment:
 *   PORT           listen port (default 2567)
 *   HOST           bind address (default 127.0.0.1)
 *   REDIS_URL      Redis for RedisPresence and RedisDriver (default redis://127.0.0.1:6379)
 *   SELF_HOSTNAME  host Colyseus 0.15 (core 0.15.57) writes into discovery; it reads only this
 *                  variable (unset => "{processId}/undefined:{port}"); this script defaults it
 *                  to HOST (or 127.0.0.1 when HOST is a wildcard)
 *   SELF_PORT      port written into discovery (Colyseus reads it; default: PORT)
 *                  => the node registers as "{processId}/127.0.0.1:{PORT}" in "colyseus:nodes"
 *                     and publishes the JSON string "add,{member}" on "colyseus:nodes:discovery"
 *                     ("remove,{member}" at the start of graceful shutdown)
 *   MAX_CLIENTS    maxClients of the "echo" room (default 4)
 *
 * stdout: exactly one line `READY {"processId":"...","port":N}` once the server listens AND is
 * registered in "colyseus:nodes". Everything else goes to stderr.
 *
 * Room "echo": on join sends "hello" {processId, roomId}; replies to each "echo" message with
 * "echo" {payload, processId, roomId}.
 */

const http = require('http');
const https = require('https');

// Node 19+ http.globalAgent has keepAlive and a 5 s socket timeout; keep the example's guard.
http.globalAgent = new http.Agent({ keepAlive: false });
https.globalAgent = new https.Agent({ keepAlive: false });

const PORT = parseInt(process.env.PORT || '2567', 10);
const HOST = process.env.HOST || '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const MAX_CLIENTS = parseInt(process.env.MAX_CLIENTS || '4', 10);

if (!process.env.SELF_HOSTNAME) {
  const wildcard = HOST === '0.0.0.0' || HOST === '::' || HOST === '';
  process.env.SELF_HOSTNAME = wildcard ? '127.0.0.1' : HOST;
}

const log = (...args) => console.error('[colyseus-0.15]', ...args);
const stderrLogger = {
  debug: (...a) => console.error(...a),
  info: (...a) => console.error(...a),
  warn: (...a) => console.error(...a),
  error: (...a) => console.error(...a),
  trace: (...a) => console.error(...a),
};

const { Server, Room, matchMaker } = require('@colyseus/core');
const { WebSocketTransport } = require('@colyseus/ws-transport');
const { RedisPresence } = require('@colyseus/redis-presence');
const { RedisDriver } = require('@colyseus/redis-driver');

class EchoRoom extends Room {
  onCreate() {
    this.maxClients = MAX_CLIENTS;
    this.onMessage('echo', (client, payload) => {
      client.send('echo', { payload, processId: matchMaker.processId, roomId: this.roomId });
    });
  }

  onJoin(client) {
    client.send('hello', { processId: matchMaker.processId, roomId: this.roomId });
  }
}

async function main() {
  const gameServer = new Server({
    transport: new WebSocketTransport(),
    presence: new RedisPresence(REDIS_URL),
    driver: new RedisDriver(REDIS_URL),
    greet: false,
    logger: stderrLogger,
  }); // registers SIGINT/SIGTERM/SIGUSR2 -> gracefullyShutdown() (unregisters first)
  gameServer.define('echo', EchoRoom);
  gameServer.onBeforeShutdown(() => {
    log(`shutting down (processId ${matchMaker.processId}); unregistered from discovery`);
    setTimeout(() => { log('forced exit'); process.exit(1); }, 15000).unref();
  });

  await gameServer.listen(PORT, HOST);

  // Colyseus registers the node from the server's 'listening' event without awaiting it;
  // wait until the member is really in the set before announcing READY.
  const member = `${matchMaker.processId}/${process.env.SELF_HOSTNAME}:${process.env.SELF_PORT || PORT}`;
  for (let i = 0; i < 200; i++) {
    if (await matchMaker.presence.sismember('colyseus:nodes', member)) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  log(`listening on ${HOST}:${PORT}, discovery member ${member}`);
  process.stdout.write(`READY ${JSON.stringify({ processId: matchMaker.processId, port: PORT })}\n`);
}

main().catch((err) => {
  log('fatal:', err && err.stack || err);
  process.exit(1);
});
