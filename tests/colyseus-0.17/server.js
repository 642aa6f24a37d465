#!/usr/bin/env node
'use strict';
/*
 * Colyseus 0.17 echo server for the colyseus-envoy end-to-end tests (tests/e2e/tests/versions.rs).
 * Colyseus 0.17 no longer registers its processes in Redis: this server registers itself with
 * the repository's helper, @colyseus-envoy/register (npm/colyseus-envoy-register), as the
 * helper's README describes.
 *
 * Environment:
 *   PORT          listen port (default 2567)
 *   HOST          bind address (default 127.0.0.1)
 *   REDIS_URL     Redis the colyseus-envoy agent follows (default redis://127.0.0.1:6379)
 *   SELF_HOSTNAME host written into the registration (default: HOST, or 127.0.0.1 for a
 *                 wildcard HOST)
 *   LEASE_TTL_MS  lease of the registration (default 15000, min 3000)
 *   MAX_CLIENTS   maxClients of the "echo" room (default 4)
 *
 * Presence and driver are local (LocalPresence, LocalDriver): each process matchmakes its own
 * rooms, and the proxy spreads the matchmaking requests over the processes.
 *
 * stdout: exactly one line `READY {"processId":"...","port":N}` once the server listens and is
 * registered. Everything else goes to stderr.
 *
 * Room "echo": on join sends "hello" {processId, roomId}; replies to each "echo" message with
 * "echo" {payload, processId, roomId}.
 *
 * SIGTERM/SIGINT: registration.stop() (deregisters: SREM + "remove" announcement), then
 * Colyseus's graceful shutdown (disposes the rooms) and exit.
 */

const http = require('http');
const https = require('https');

// Node 19+ http.globalAgent has keepAlive and a 5 s socket timeout; keep the example's guard.
http.globalAgent = new http.Agent({ keepAlive: false });
https.globalAgent = new https.Agent({ keepAlive: false });

const PORT = parseInt(process.env.PORT || '2567', 10);
const HOST = process.env.HOST || '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const LEASE_TTL_MS = parseInt(process.env.LEASE_TTL_MS || '15000', 10);
const MAX_CLIENTS = parseInt(process.env.MAX_CLIENTS || '4', 10);
const wildcard = HOST === '0.0.0.0' || HOST === '::' || HOST === '';
const SELF_HOSTNAME = process.env.SELF_HOSTNAME || (wildcard ? '127.0.0.1' : HOST);

const log = (...args) => console.error('[colyseus-0.17]', ...args);
const stderrLogger = {
  debug: (...a) => console.error(...a),
  info: (...a) => console.error(...a),
  warn: (...a) => console.error(...a),
  error: (...a) => console.error(...a),
  trace: (...a) => console.error(...a),
};

const { Server, Room, matchMaker, LocalPresence, LocalDriver } = require('@colyseus/core');
const { WebSocketTransport } = require('@colyseus/ws-transport');
const { registerWithEnvoy } = require('@colyseus-envoy/register');

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
    presence: new LocalPresence(),
    driver: new LocalDriver(),
    greet: false,
    logger: stderrLogger,
  }); // registers SIGINT/SIGTERM/SIGUSR2 -> gracefullyShutdown()
  gameServer.define('echo', EchoRoom);

  let registration = null;
  gameServer.onBeforeShutdown(async () => {
    // Safety net: make sure the process exits even if disposing rooms hangs.
    setTimeout(() => { log('forced exit'); process.exit(1); }, 15000).unref();
    if (registration) {
      await registration.stop();
      log(`deregistered ${registration.member}; disposing rooms`);
    }
  });

  await gameServer.listen(PORT, HOST);
  registration = await registerWithEnvoy({
    redisUrl: REDIS_URL,
    host: SELF_HOSTNAME,
    port: PORT,
    processId: matchMaker.processId,
    leaseTtlMs: LEASE_TTL_MS,
    logger: stderrLogger,
  });
  log(`listening on ${HOST}:${PORT}, registered ${registration.member} (lease ${LEASE_TTL_MS} ms)`);
  process.stdout.write(`READY ${JSON.stringify({ processId: matchMaker.processId, port: PORT })}\n`);
}

main().catch((err) => {
  log('fatal:', err && err.stack || err);
  process.exit(1);
});
