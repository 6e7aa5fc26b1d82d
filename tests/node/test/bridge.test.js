'use strict';
// Checks bridge.js against an in-process WebSocket-Node server, so that the Rust tests can trust
// what the bridge reports. Run: `node --test` in tests/node.

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const readline = require('node:readline');
const { spawn } = require('node:child_process');
const { server: WebSocketServer } = require('websocket');

const BRIDGE = path.join(__dirname, '..', 'bridge.js');

/** An echo server that records how many frames each incoming message came in. */
async function startServer() {
  const httpServer = http.createServer((req, res) => {
    res.writeHead(404);
    res.end();
  });
  const wsServer = new WebSocketServer({ httpServer, assembleFragments: false });
  const received = [];
  wsServer.on('request', (request) => {
    const wanted = request.requestedProtocols;
    const connection = request.accept(wanted.includes('echo-protocol') ? 'echo-protocol' : null, request.origin);
    let frames = [];
    connection.on('frame', (frame) => {
      frames.push(frame);
      if (!frame.fin) return;
      const payload = Buffer.concat(frames.map((f) => f.binaryPayload));
      const text = frames[0].opcode === 1;
      received.push({ frames: frames.length, text, length: payload.length });
      frames = [];
      if (text) connection.sendUTF(payload.toString('utf8'));
      else connection.sendBytes(payload);
    });
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = httpServer.address();
  return {
    url: `ws://127.0.0.1:${port}/`,
    received,
    stop: () => {
      wsServer.shutDown();
      httpServer.close();
    },
  };
}

/** Runs bridge.js; `send` writes a command, `next` awaits the next event (5 s limit). */
function startBridge() {
  const child = spawn(process.execPath, [BRIDGE], { stdio: ['pipe', 'pipe', 'inherit'] });
  const events = [];
  const waiters = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const event = JSON.parse(line);
    const waiter = waiters.shift();
    if (waiter) waiter(event);
    else events.push(event);
  });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    send: (cmd) => child.stdin.write(JSON.stringify(cmd) + '\n'),
    sendRaw: (line) => child.stdin.write(line + '\n'),
    next: () => {
      if (events.length > 0) return Promise.resolve(events.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no event from the bridge within 5 s')), 5000);
        waiters.push((e) => {
          clearTimeout(timer);
          resolve(e);
        });
      });
    },
    exited,
    kill: () => child.kill(),
  };
}

test('text, fragmented text, binary and close round-trip through a real server', async (t) => {
  const server = await startServer();
  const bridge = startBridge();
  t.after(() => {
    bridge.kill();
    server.stop();
  });

  bridge.send({ op: 'connect', url: server.url, protocol: 'echo-protocol' });
  assert.deepEqual(await bridge.next(), { event: 'open', protocol: 'echo-protocol' });

  bridge.send({ op: 'send', text: '{"type":"ping"}' });
  assert.deepEqual(await bridge.next(), { event: 'message', text: '{"type":"ping"}' });

  const large = 'y'.repeat(20000);
  bridge.send({ op: 'send', text: large });
  assert.deepEqual(await bridge.next(), { event: 'message', text: large });

  const bytes = Buffer.from([0, 1, 2, 250, 255]).toString('base64');
  bridge.send({ op: 'send_binary', base64: bytes });
  assert.deepEqual(await bridge.next(), { event: 'message', base64: bytes });

  // The agents' fragmentation: 20000 bytes at a 16 KiB threshold arrive as two frames.
  assert.deepEqual(server.received, [
    { frames: 1, text: true, length: 15 },
    { frames: 2, text: true, length: 20000 },
    { frames: 1, text: false, length: 5 },
  ]);

  bridge.send({ op: 'close', code: 1000, reason: 'bye' });
  const closed = await bridge.next();
  assert.equal(closed.event, 'close');
  assert.equal(closed.code, 1000);

  bridge.send({ op: 'exit' });
  assert.equal(await bridge.exited, 0);
});

test('no subprotocol, several connections by id, and drop', async (t) => {
  const server = await startServer();
  const bridge = startBridge();
  t.after(() => {
    bridge.kill();
    server.stop();
  });

  bridge.send({ op: 'connect', id: 'a', url: server.url, protocol: null });
  assert.deepEqual(await bridge.next(), { id: 'a', event: 'open', protocol: null });
  bridge.send({ op: 'connect', id: 'b', url: server.url, protocol: 'echo-protocol' });
  assert.deepEqual(await bridge.next(), { id: 'b', event: 'open', protocol: 'echo-protocol' });

  bridge.send({ op: 'send', id: 'b', text: 'to b' });
  assert.deepEqual(await bridge.next(), { id: 'b', event: 'message', text: 'to b' });

  bridge.send({ op: 'drop', id: 'a' });
  const closed = await bridge.next();
  assert.equal(closed.id, 'a');
  assert.equal(closed.event, 'close');
  assert.equal(closed.code, 1006);
});

test('failures are reported as events, not crashes', async (t) => {
  const server = await startServer();
  const bridge = startBridge();
  t.after(() => bridge.kill());
  const url = server.url;
  server.stop(); // nothing listens there any more

  bridge.send({ op: 'connect', url, protocol: 'echo-protocol' });
  const failed = await bridge.next();
  assert.equal(failed.event, 'connect_failed');
  assert.match(failed.message, /ECONNREFUSED/);

  bridge.send({ op: 'send', text: 'nobody' });
  assert.deepEqual(await bridge.next(), { event: 'error', message: 'send: not connected' });

  bridge.sendRaw('not json');
  assert.equal((await bridge.next()).event, 'error');

  bridge.send({ op: 'warp' });
  assert.deepEqual(await bridge.next(), { event: 'error', message: 'unknown op: "warp"' });

  bridge.send({ op: 'connect', url: 'not a url' });
  assert.equal((await bridge.next()).event, 'connect_failed');
});

test('a rejected handshake is connect_failed with the status', async (t) => {
  const httpServer = http.createServer((req, res) => {
    res.writeHead(404, { 'Content-Length': '0', Connection: 'close' });
    res.end();
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const bridge = startBridge();
  t.after(() => {
    bridge.kill();
    httpServer.close();
  });

  bridge.send({ op: 'connect', url: `ws://127.0.0.1:${httpServer.address().port}/`, protocol: 'echo-protocol' });
  const failed = await bridge.next();
  assert.equal(failed.event, 'connect_failed');
  assert.match(failed.message, /404/);
});
