'use strict';
// Checks that smoke.js passes against a server that follows the protocol and fails, with the
// documented exit status, against one that does not. The fake here is only the three replies the
// smoke test looks at; the real server is tested by cross/smoke.sh and the Rust tests.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const { server: WebSocketServer } = require('websocket');

const SMOKE = path.join(__dirname, '..', 'smoke.js');
const TLS_PAIR = path.join(__dirname, '..', '..', '..', 'bench', 'tls-pair.sh');

/** A throwaway CA and a certificate for localhost it signed (bench/tls-pair.sh, openssl). */
function throwawayPair(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smoke-tls-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync('bash', [TLS_PAIR, dir]);
  const read = (name) => fs.readFileSync(path.join(dir, name), 'utf8');
  return { caPath: path.join(dir, 'ca.pem'), cert: read('cert.pem'), key: read('key.pem') };
}

/**
 * `behaviour`: 'good', 'bad-token' (401 on registration) or 'silent' (never answers); with
 * `tls` ({ cert, key }), the fake serves wss:// for localhost.
 */
async function startFake(behaviour, tls) {
  const httpServer = tls ? https.createServer({ cert: tls.cert, key: tls.key }) : http.createServer();
  const wsServer = new WebSocketServer({ httpServer });
  const devices = new Map();
  wsServer.on('request', (request) => {
    const connection = request.accept('echo-protocol', request.origin);
    connection.on('message', (m) => {
      if (behaviour === 'silent') return;
      const msg = JSON.parse(m.utf8Data);
      if (msg.type === 'device') {
        if (behaviour === 'bad-token') {
          connection.sendUTF('{"code":401,"content":"Invalid device token"}');
          return;
        }
        devices.set(msg.deviceId, connection);
        connection.sendUTF('{"code":200,"content":"device registered"}');
      } else if (msg.type === 'actuation' && msg.credentials.password === 'pw') {
        // Forward the body's own bytes, as the server does.
        const raw = m.utf8Data.slice(m.utf8Data.indexOf('"body":') + 7, -1);
        devices.get(msg.body.content.deviceId).sendUTF(`{"code":1024,"content":${raw}}`);
      } else if (msg.type === 'ping') {
        connection.sendUTF('{"code":202,"content":"PONG"}');
      }
    });
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  return {
    url: tls ? `wss://localhost:${httpServer.address().port}` : `ws://127.0.0.1:${httpServer.address().port}`,
    stop: () => {
      wsServer.shutDown();
      httpServer.close();
    },
  };
}

function runSmoke(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SMOKE, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

function argsFor(url, extra = []) {
  return ['--url', url, '--device-id', 'dev-1', '--token', 'jwt', '--username', 'u', '--password', 'pw', ...extra];
}

test('passes against a server that follows the protocol', async (t) => {
  const fake = await startFake('good');
  t.after(fake.stop);
  const { code, stderr } = await runSmoke(argsFor(fake.url));
  assert.equal(code, 0, stderr);
  assert.match(stderr, /fragmented actuation/);
  assert.match(stderr, /PASSED/);
});

test('fails with status 1 and says why when registration is refused', async (t) => {
  const fake = await startFake('bad-token');
  t.after(fake.stop);
  const { code, stderr } = await runSmoke(argsFor(fake.url));
  assert.equal(code, 1, stderr);
  assert.match(stderr, /expected code 200 on registration, got: \{"code":401/);
});

test('fails with status 3 when the server never answers', async (t) => {
  const fake = await startFake('silent');
  t.after(fake.stop);
  const { code, stderr } = await runSmoke(argsFor(fake.url, ['--timeout-secs', '1']));
  assert.equal(code, 3, stderr);
  assert.match(stderr, /timed out after 1 s while waiting for the device registration/);
});

test('--ca: passes over wss:// trusting the given CA, fails without it', async (t) => {
  const pair = throwawayPair(t);
  const fake = await startFake('good', pair);
  t.after(fake.stop);
  const trusted = await runSmoke(argsFor(fake.url, ['--ca', pair.caPath]));
  assert.equal(trusted.code, 0, trusted.stderr);
  assert.match(trusted.stderr, /PASSED/);
  const untrusted = await runSmoke(argsFor(fake.url, ['--timeout-secs', '5']));
  assert.equal(untrusted.code, 1, untrusted.stderr);
  assert.match(untrusted.stderr, /device connection failed: .*certificate/);
});

test('--ca: status 2 for a missing file or a ws:// URL', async () => {
  const missing = await runSmoke(argsFor('wss://localhost:1', ['--ca', '/nonexistent/ca.pem']));
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--ca \/nonexistent\/ca.pem: ENOENT/);
  const clear = await runSmoke(argsFor('ws://127.0.0.1:1', ['--ca', __filename]));
  assert.equal(clear.code, 2);
  assert.match(clear.stderr, /--ca is for wss:\/\/ URLs/);
});

test('fails with status 2 on a missing argument', async () => {
  const { code, stderr } = await runSmoke(['--url', 'ws://127.0.0.1:1']);
  assert.equal(code, 2);
  assert.match(stderr, /missing --device-id/);
});
