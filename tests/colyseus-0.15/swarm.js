#!/usr/bin/env node
'use strict';
/*
 * Load client for Colyseus 0.15 using the real colyseus.js 0.15: the checks, command line and
 * JSON output of tests/clients/swarm.js (see there), with this version's client library.
 *
 *   node tests/colyseus-0.15/swarm.js --endpoint http://127.0.0.1:PORT [--clients N]
 *        [--concurrency C] [--messages M] [--room echo] [--hold-ms T] [--leave true|false]
 */
// First: the shared swarm replaces Node's http.globalAgent (5 s socket timeout since Node 19)
// before colyseus.js loads httpie, which captures the global agent at require time.
const { run } = require('../clients/swarm.js');
const { Client } = require('colyseus.js');

run(Client);
