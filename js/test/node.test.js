// The package as installed from its tarball, in Node.js 20 with the ws package, against the
// release server: registration, actuations byte for byte, a server restart, close(), and a
// refused token. Run by .ci/js.sh inside a temporary project (so `iot-ws-client` resolves
// through node_modules and the package's "exports", as it will for users).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import test from 'node:test';
import { connect } from 'iot-ws-client';
import { WebSocket } from 'ws';
import { actuate, count, freePort, keyPair, Server, trickyBody, until, WAIT_MS, words } from './harness.js';

const keys = keyPair();

test('registers, gets actuations byte for byte, survives a server restart, stops with close()', async () => {
  let server = await Server.start({ publicKey: keys.publicKey, port: await freePort() });
  const statuses = [];
  const actuations = [];
  const device = connect({
    url: server.url,
    deviceId: 'js-node',
    token: keys.token('js-node'),
    WebSocket,
    onStatus: (s) => statuses.push(s),
    onActuation: (body, text) => actuations.push({ body, text }),
  });
  try {
    await until(() => count(statuses, 'registered') === 1, 'registered');
    assert.deepEqual(words(statuses), ['connecting', 'registered']);
    const body = trickyBody('js-node');
    assert.deepEqual(await actuate(server.url, body), { code: 200, content: 'Delivered', deviceId: 'js-node' });
    await until(() => actuations.length === 1, 'the actuation');
    assert.equal(actuations[0].text, body, 'the text exactly as the dashboard sent it');
    assert.deepEqual(actuations[0].body, JSON.parse(body));

    server = await server.restart();
    await until(() => count(statuses, 'registered') === 2, 'registered again after the restart');
    // The core's first delay after a registered connection, announced before the reconnect.
    assert.deepEqual(words(statuses).slice(0, 5), ['connecting', 'registered', 'disconnected', 'backing_off 2500', 'connecting']);
    const after = '{"type":"command","content":{"deviceId":"js-node","after":"restart"}}';
    assert.equal((await actuate(server.url, after)).content, 'Delivered');
    await until(() => actuations.length === 2, 'the actuation after the restart');
    assert.equal(actuations[1].text, after);
  } finally {
    await device.close();
  }
  assert.equal(statuses.at(-1).status, 'closed');
  // The server saw the device go: an actuation now finds nobody, and none reaches the client.
  const notConnected = { code: 500, content: 'Device not connected', deviceId: 'js-node' };
  await until(async () => JSON.stringify(await actuate(server.url, trickyBody('js-node'))) === JSON.stringify(notConnected), 'the server to see the device gone');
  assert.equal(actuations.length, 2);
  await server.stop();
});

test('close() leaves nothing running: a Node.js process exits by itself after it', async () => {
  const server = await Server.start({ publicKey: keys.publicKey, port: await freePort() });
  try {
    const script = fileURLToPath(new URL('./close-exits.js', import.meta.url));
    const child = spawn(process.execPath, [script], {
      env: { ...process.env, URL: server.url, DEVICE_ID: 'js-exit', TOKEN: keys.token('js-exit') },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const timeout = new Promise((resolve) => setTimeout(() => resolve('still running'), WAIT_MS).unref());
    const code = await Promise.race([exited, timeout]);
    if (code === 'still running') child.kill('SIGKILL');
    assert.equal(code, 0, `the process did not end by itself after close(); it printed:\n${output}`);
    assert.deepEqual(output.trim().split('\n'), ['connecting', 'registered', 'closed']);
  } finally {
    await server.stop();
  }
});

test('a refused token ends in rejected and a doubling back-off, not a reconnect storm', async () => {
  const server = await Server.start({ publicKey: keys.publicKey, port: await freePort() });
  const statuses = [];
  const stranger = keyPair(); // a key pair the server does not trust
  const device = connect({
    url: server.url,
    deviceId: 'js-refused',
    token: stranger.token('js-refused'),
    WebSocket,
    onStatus: (s) => statuses.push(s),
  });
  try {
    await until(() => count(statuses, 'backing_off') === 2, 'two back-offs');
  } finally {
    await device.close();
    await server.stop();
  }
  assert.deepEqual(words(statuses), [
    'connecting', 'rejected', 'disconnected', 'backing_off 2500',
    'connecting', 'rejected', 'disconnected', 'backing_off 5000',
    'closed',
  ]);
});

test('without a WebSocket (Node.js 20 has none), connect says to pass one', {
  skip: globalThis.WebSocket !== undefined && 'this Node.js has a global WebSocket',
}, () => {
  assert.throws(() => connect({ url: 'ws://127.0.0.1:1/', deviceId: 'd', token: 't' }), /pass one/);
});
