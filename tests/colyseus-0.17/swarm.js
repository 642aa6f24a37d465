#!/usr/bin/env node
'use strict';
/*
 * Load client for Colyseus 0.17 using the real @colyseus/sdk: the checks, command line and JSON
 * output of tests/clients/swarm.js (see there), with this version's client library.
 *
 *   node tests/colyseus-0.17/swarm.js --endpoint http://127.0.0.1:PORT [--clients N]
 *        [--concurrency C] [--messages M] [--room echo] [--hold-ms T] [--leave true|false]
 *
 * @colyseus/sdk makes its matchmaking requests with the global fetch (undici), which does not
 * use http.globalAgent; the shared swarm replaces the global agent anyway.
 */
const { run } = require('../clients/swarm.js'); // first: it fixes http.globalAgent
const { Client } = require('@colyseus/sdk');

run(Client);
