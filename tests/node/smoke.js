#!/usr/bin/env node
'use strict';
// End-to-end smoke test of a running iot-ws-server with real WebSocket-Node clients:
//   1. a device registers with its JWT                       -> {"code":200,...}
//   2. a dashboard sends an actuation for that device         -> the device gets {"code":1024,"content":<body>}
//   3. the same with a body above 16 KiB (sent fragmented)     -> delivered whole
//   4. the device pings                                       -> {"code":202,"content":"PONG"}
//
// node smoke.js --url ws://127.0.0.1:PORT --device-id ID --token JWT --username U --password P
//               [--protocol echo-protocol] [--timeout-secs 15] [--large-bytes 20000] [--ca PATH]
// --ca: for a wss:// URL, the PEM CA certificate to trust instead of the system's.
// Exit status: 0 passed, 1 a check failed, 2 bad usage, 3 timed out.

const crypto = require('crypto');
const fs = require('fs');
const { isDeepStrictEqual } = require('util');
const { openConnection } = require('./ws');

const USAGE =
  'usage: node smoke.js --url ws://HOST:PORT --device-id ID --token JWT --username U --password P\n' +
  '                     [--protocol NAME] [--timeout-secs N] [--large-bytes N (0 = skip)]\n' +
  '                     [--ca PATH (wss://: the PEM CA to trust)]';

function parseArgs(argv) {
  const opts = { protocol: 'echo-protocol', 'timeout-secs': '15', 'large-bytes': '20000' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    if (!key.startsWith('--') || i + 1 >= argv.length) usageError(`bad argument: ${key}`);
    opts[key.slice(2)] = argv[i + 1];
  }
  for (const required of ['url', 'device-id', 'token', 'username', 'password']) {
    if (!opts[required]) usageError(`missing --${required}`);
  }
  if (opts.ca !== undefined) {
    if (!opts.url.startsWith('wss://')) usageError('--ca is for wss:// URLs');
    try {
      opts.caPem = fs.readFileSync(opts.ca, 'utf8');
    } catch (err) {
      usageError(`--ca ${opts.ca}: ${err.message}`);
    }
    if (!opts.caPem.includes('-----BEGIN CERTIFICATE-----')) usageError(`--ca ${opts.ca}: no PEM certificate in it`);
  }
  return opts;
}

function usageError(message) {
  process.stderr.write(`smoke: ${message}\n${USAGE}\n`);
  process.exit(2);
}

class Failure extends Error {}

const started = Date.now();
let step = 'starting';

function log(message) {
  process.stderr.write(`smoke: ${message} (${Date.now() - started} ms)\n`);
}

/** Queues a connection's messages and closes so that a test can await them in order. */
class Inbox {
  constructor(name, connection) {
    this.name = name;
    this.items = [];
    this.waiters = [];
    connection.on('message', (m) =>
      this.push(m.type === 'utf8' ? { text: m.utf8Data } : { binary: m.binaryData.length }));
    connection.on('close', (code, reason) => this.push({ closed: code, reason }));
  }

  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  next() {
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** The next message, parsed; fails on a close, a binary message or text that is not JSON. */
  async nextJson() {
    const item = await this.next();
    if (item.closed !== undefined) {
      throw new Failure(`${this.name} connection closed (${item.closed} ${item.reason || ''}) while ${step}`);
    }
    if (item.text === undefined) throw new Failure(`${this.name} got a binary message while ${step}`);
    try {
      return { text: item.text, json: JSON.parse(item.text) };
    } catch (err) {
      throw new Failure(`${this.name} got non-JSON text while ${step}: ${item.text.slice(0, 200)}`);
    }
  }
}

async function open(name, opts) {
  step = `opening the ${name} connection`;
  let connection;
  try {
    connection = await openConnection(opts.url, opts.protocol, opts.caPem);
  } catch (err) {
    throw new Failure(`${name} connection failed: ${err.message}`);
  }
  if (opts.protocol && connection.protocol !== opts.protocol) {
    throw new Failure(`${name}: server chose subprotocol ${connection.protocol}, wanted ${opts.protocol}`);
  }
  return { connection, inbox: new Inbox(name, connection) };
}

function expect(condition, message) {
  if (!condition) throw new Failure(message);
}

async function checkActuation(device, dashboard, opts, body, label) {
  step = `waiting for the ${label} actuation (1024)`;
  const bodyText = JSON.stringify(body);
  // JSON.stringify writes `body` inside the message exactly as `bodyText`.
  dashboard.connection.sendUTF(JSON.stringify({
    type: 'actuation',
    credentials: { username: opts.username, password: opts.password },
    body,
  }));
  const got = await device.inbox.nextJson();
  expect(got.json.code === 1024, `device expected code 1024 for the ${label} actuation, got: ${got.text.slice(0, 300)}`);
  expect(isDeepStrictEqual(got.json.content, body),
    `device got a different ${label} actuation body: ${got.text.slice(0, 300)}`);
  // The server forwards the body's bytes as they came; a re-serialised body would still be equal.
  expect(got.text.includes(bodyText), `the ${label} actuation body was not forwarded byte for byte`);
  log(`device received the ${label} actuation (1024, ${bodyText.length} bytes of body)`);
}

function actuationBody(deviceId, marker, padding) {
  return {
    type: 'command',
    transport: 'ws',
    content: {
      domainId: 'smoke-domain',
      deviceId,
      gatewayId: deviceId,
      actuations: [{
        componentId: 'smoke-component',
        command: 'LED.v1.0',
        params: [{ name: 'LED', value: '1' }, { name: 'marker', value: marker }],
      }],
      ...(padding ? { padding } : {}),
    },
  };
}

async function run(opts) {
  const deviceId = opts['device-id'];
  const device = await open('device', opts);
  step = 'waiting for the device registration (200)';
  device.connection.sendUTF(JSON.stringify({ type: 'device', deviceId, deviceToken: opts.token }));
  const reg = await device.inbox.nextJson();
  expect(reg.json.code === 200, `device expected code 200 on registration, got: ${reg.text.slice(0, 300)}`);
  log('device registered (200)');

  const dashboard = await open('dashboard', opts);
  const marker = `smoke-${crypto.randomUUID()}`;
  await checkActuation(device, dashboard, opts, actuationBody(deviceId, marker), 'small');

  const largeBytes = Number(opts['large-bytes']);
  if (largeBytes > 0) {
    // Above the 16 KiB fragmentation threshold: WebSocket-Node sends it as several frames.
    const padding = 'x'.repeat(largeBytes);
    await checkActuation(device, dashboard, opts, actuationBody(deviceId, `${marker}-large`, padding), 'fragmented');
  }

  step = 'waiting for the pong (202)';
  device.connection.sendUTF(JSON.stringify({ type: 'ping' }));
  const pong = await device.inbox.nextJson();
  expect(pong.json.code === 202 && pong.json.content === 'PONG',
    `device expected {"code":202,"content":"PONG"}, got: ${pong.text.slice(0, 300)}`);
  log('ping answered (202 PONG)');

  dashboard.connection.close(1000, 'smoke done');
  device.connection.close(1000, 'smoke done');
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const timeoutSecs = Number(opts['timeout-secs']);
  if (!(timeoutSecs > 0)) usageError('--timeout-secs must be a positive number');
  const timer = setTimeout(() => {
    process.stderr.write(`smoke: FAILED: timed out after ${timeoutSecs} s while ${step}\n`);
    process.exit(3);
  }, timeoutSecs * 1000);
  run(opts).then(
    () => {
      clearTimeout(timer);
      log('PASSED');
      process.exit(0);
    },
    (err) => {
      clearTimeout(timer);
      process.stderr.write(`smoke: FAILED: ${err instanceof Failure ? err.message : err.stack}\n`);
      process.exit(1);
    },
  );
}

main();
