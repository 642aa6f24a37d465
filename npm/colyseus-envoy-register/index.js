'use strict';
/*
 * registerWithEnvoy: registers this Colyseus process for colyseus-envoy, writing exactly what
 * `colyseus-envoy register` writes (agent/src/layout.rs, whose tests pin this copy):
 *
 *   member  "{processId}/{host}:{port}"  in set  colyseus:nodes  and in set  colyseus-envoy:leased
 *   lease   colyseus-envoy:lease:{member} = refresh time in unix ms, SET ... PX leaseTtlMs
 *   announcement on colyseus:nodes:discovery: JSON string "add,{member}" / "remove,{member}"
 *
 * register and deregister are one MULTI each; a heartbeat every leaseTtlMs/3 (one MULTI)
 * refreshes the lease and re-adds the member to both sets, announcing "add" again when the
 * member was missing from colyseus:nodes (Redis restarted empty, or the lease had lapsed).
 * If the process dies without stop(), the lease runs out and the sync agent removes the member.
 */

const net = require('net');
const path = require('path');
const { pathToFileURL } = require('url');
const Redis = require('ioredis');

const NODES_KEY = 'colyseus:nodes';
const DISCOVERY_CHANNEL = 'colyseus:nodes:discovery';
const LEASED_SET = 'colyseus-envoy:leased';
const LEASE_KEY_PREFIX = 'colyseus-envoy:lease:';
/** Same floor as the agent's registrar (MIN_LEASE_TTL). */
const MIN_LEASE_TTL_MS = 3000;
const MAX_ID_LEN = 64;
const ID_RE = /^[A-Za-z0-9_-]+$/;
/** How long stop() may try to deregister before leaving it to the lease. */
const STOP_GRACE_MS = 5000;

const leaseKey = (member) => `${LEASE_KEY_PREFIX}${member}`;
/** The payload Colyseus's RedisPresence publishes: the JSON encoding of "{action},{member}". */
const announcement = (action, member) => JSON.stringify(`${action},${member}`);

function checkProcessId(processId) {
  if (typeof processId !== 'string' || processId.length === 0) {
    throw new Error(`colyseus-envoy: processId ${JSON.stringify(processId)} is empty or not a string`);
  }
  if (processId.length > MAX_ID_LEN) {
    throw new Error(`colyseus-envoy: processId ${JSON.stringify(processId)} is ${processId.length} characters long, the limit is ${MAX_ID_LEN}`);
  }
  if (!ID_RE.test(processId)) {
    throw new Error(`colyseus-envoy: processId ${JSON.stringify(processId)} has characters outside [A-Za-z0-9_-]`);
  }
  return processId;
}

/** The host as the agent writes it: IPv6 in brackets (canonical form), DNS names lowercased. */
function normalizeHost(host) {
  const bad = (why) => new Error(`colyseus-envoy: host ${JSON.stringify(host)}: ${why}`);
  if (typeof host !== 'string' || ['', 'undefined', 'null'].includes(host.trim())) {
    throw bad('give the address the proxy reaches the game server at');
  }
  let v6 = null;
  if (host.startsWith('[')) {
    if (!host.endsWith(']')) throw bad("unclosed '[' in IPv6 address");
    v6 = host.slice(1, -1);
    if (!net.isIPv6(v6)) throw bad('invalid IPv6 address');
  } else if (net.isIPv6(host)) {
    v6 = host;
  }
  if (v6 !== null) {
    // WHATWG URL serialises IPv6 in the RFC 5952 form, as Rust's Ipv6Addr Display does.
    const canonical = new URL(`http://[${v6}]/`).hostname; // "[...]"
    if (canonical === '[::]') throw bad('unspecified address (0.0.0.0, ::) is not reachable');
    return canonical;
  }
  if (host.includes(':')) throw bad('give the host alone; the port goes in port');
  if (net.isIPv4(host)) {
    if (host === '0.0.0.0') throw bad('unspecified address (0.0.0.0, ::) is not reachable');
    return host;
  }
  const labelOk = (l) => l.length > 0 && l.length <= 63 && !l.startsWith('-') && !l.endsWith('-')
    && /^[A-Za-z0-9_-]+$/.test(l);
  if (host.length > 253 || !host.replace(/\.+$/, '').split('.').every(labelOk)) {
    throw bad('host is neither an IP address nor a DNS name');
  }
  return host.toLowerCase();
}

/** The colyseus:nodes member for this process, validated with the agent's rules. */
function buildMember(processId, host, port) {
  checkProcessId(processId);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`colyseus-envoy: port ${JSON.stringify(port)} must be an integer 1-65535`);
  }
  return `${processId}/${normalizeHost(host)}:${port}`;
}

/**
 * Colyseus's own processId (`matchMaker.processId` of @colyseus/core 0.17, set by
 * `new Server()` / `matchMaker.setup()`). Looks in the application's copy of @colyseus/core,
 * CommonJS build first, then the ES module build (each has its own state).
 */
async function colyseusProcessId() {
  const bases = [process.cwd(), require.main && path.dirname(require.main.filename), __dirname]
    .filter(Boolean);
  let found = false;
  for (const base of bases) {
    let resolved;
    try {
      resolved = require.resolve('@colyseus/core', { paths: [base] });
    } catch (_) {
      continue;
    }
    found = true;
    const candidates = [() => require(resolved)];
    if (/\.cjs$/.test(resolved)) {
      candidates.push(() => import(pathToFileURL(resolved.replace(/\.cjs$/, '.mjs')).href));
    }
    for (const load of candidates) {
      try {
        const core = await load();
        const pid = core && core.matchMaker && core.matchMaker.processId;
        if (pid) return pid;
      } catch (_) { /* try the next build */ }
    }
  }
  throw new Error(found
    ? 'colyseus-envoy: @colyseus/core matchMaker.processId is not set yet: call registerWithEnvoy '
      + 'after gameServer.listen(), or pass { processId: matchMaker.processId }'
    : 'colyseus-envoy: @colyseus/core not found; pass { processId: matchMaker.processId }');
}

/**
 * Registers this process for colyseus-envoy and keeps the registration leased.
 *
 * @param {object} options
 * @param {string} options.redisUrl   Redis the colyseus-envoy agent follows (redis://...)
 * @param {string} options.host       address the proxy reaches this server at (not 0.0.0.0)
 * @param {number} options.port       port the proxy reaches this server at
 * @param {string} [options.processId] default: @colyseus/core's matchMaker.processId
 * @param {number} [options.leaseTtlMs=15000] lease; refreshed every leaseTtlMs/3; min 3000
 * @param {string} [options.nodesKey='colyseus:nodes']
 * @param {string} [options.discoveryChannel='colyseus:nodes:discovery']
 * @param {{warn: Function, info?: Function}} [options.logger=console]
 * @returns {Promise<{member: string, stop(): Promise<void>}>} resolves once registered
 */
async function registerWithEnvoy(options = {}) {
  const {
    redisUrl,
    host,
    port,
    leaseTtlMs = 15000,
    nodesKey = NODES_KEY,
    discoveryChannel = DISCOVERY_CHANNEL,
    logger = console,
  } = options;
  if (typeof redisUrl !== 'string' || !/^rediss?:\/\//.test(redisUrl)) {
    throw new Error(`colyseus-envoy: redisUrl ${JSON.stringify(redisUrl)} is not a redis:// or rediss:// URL`);
  }
  if (!Number.isInteger(leaseTtlMs) || leaseTtlMs < MIN_LEASE_TTL_MS) {
    throw new Error(`colyseus-envoy: leaseTtlMs ${leaseTtlMs} must be an integer >= ${MIN_LEASE_TTL_MS}`);
  }
  const portNumber = typeof port === 'string' && /^\d+$/.test(port) ? Number(port) : port;
  const processId = options.processId === undefined || options.processId === null
    ? await colyseusProcessId()
    : options.processId;
  const member = buildMember(processId, host, portNumber);
  const lease = leaseKey(member);
  const interval = Math.floor(leaseTtlMs / 3);

  const redis = new Redis(redisUrl, {
    lazyConnect: true,
    connectTimeout: Math.min(5000, interval),
    commandTimeout: Math.min(5000, interval),
    maxRetriesPerRequest: 1,
  });
  redis.on('error', () => { /* reported by the failing command */ });
  const setLease = (multi) => multi.set(lease, String(Date.now()), 'PX', leaseTtlMs);
  const exec = async (multi) => {
    const results = await multi.exec();
    const failed = results && results.find(([err]) => err);
    if (failed) throw failed[0];
    if (!results) throw new Error('MULTI aborted');
    return results.map(([, value]) => value);
  };

  const register = () => {
    const m = redis.multi().sadd(nodesKey, member).sadd(LEASED_SET, member);
    setLease(m);
    return exec(m.publish(discoveryChannel, announcement('add', member)));
  };
  const heartbeat = async () => {
    const m = setLease(redis.multi()).sadd(LEASED_SET, member).sadd(nodesKey, member);
    const [, , added] = await exec(m);
    if (added === 1) {
      await redis.publish(discoveryChannel, announcement('add', member));
      logger.warn(`colyseus-envoy: ${member} was missing from ${nodesKey}; restored and announced`);
    }
  };
  const deregister = () => exec(redis.multi()
    .srem(nodesKey, member)
    .srem(LEASED_SET, member)
    .del(lease)
    .publish(discoveryChannel, announcement('remove', member)));

  try {
    await redis.connect();
    await register();
  } catch (err) {
    redis.disconnect();
    throw new Error(`colyseus-envoy: registering ${member} in ${redisUrl.replace(/\/\/[^@/]*@/, '//***@')} failed: ${err && err.message || err}`);
  }

  let timer = null;
  let inFlight = Promise.resolve();
  let stopped = null;
  let failures = 0;
  const schedule = (delay) => {
    timer = setTimeout(() => {
      inFlight = heartbeat().then(() => {
        if (failures > 0) logger.warn(`colyseus-envoy: Redis reachable again after ${failures} failed heartbeat(s)`);
        failures = 0;
        if (!stopped) schedule(interval);
      }, (err) => {
        failures += 1;
        logger.warn(`colyseus-envoy: heartbeat for ${member} failed (${failures}): ${err && err.message || err}`);
        if (!stopped) schedule(Math.min(1000, interval));
      });
    }, delay);
    if (timer.unref) timer.unref();
  };
  schedule(interval);

  const stop = () => {
    if (stopped) return stopped;
    stopped = (async () => {
      clearTimeout(timer);
      await inFlight.catch(() => {});
      const deadline = Date.now() + STOP_GRACE_MS;
      for (let delay = 250; ; delay = Math.min(delay * 2, 1000)) {
        try {
          await deregister();
          break;
        } catch (err) {
          if (Date.now() + delay >= deadline) {
            logger.warn(`colyseus-envoy: could not deregister ${member} (${err && err.message || err}); its lease will expire instead`);
            break;
          }
          await new Promise((r) => setTimeout(r, delay));
        }
      }
      try { await redis.quit(); } catch (_) { redis.disconnect(); }
    })();
    return stopped;
  };
  return { member, stop };
}

module.exports = {
  registerWithEnvoy,
  buildMember,
  leaseKey,
  announcement,
  NODES_KEY,
  DISCOVERY_CHANNEL,
  LEASED_SET,
  LEASE_KEY_PREFIX,
};
