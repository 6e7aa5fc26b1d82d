// The real things the package's tests run against: the release iot-ws-server binary
// (IOT_WS_SERVER_BIN), RSA key pairs and device tokens made by that binary's own `keygen` and
// `token`, and a dashboard that sends acknowledged actuations with the ws package. Loopback only;
// every wait has a deadline.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { WebSocket } from 'ws';

export const BIN = process.env.IOT_WS_SERVER_BIN;
if (!BIN) throw new Error('IOT_WS_SERVER_BIN must name the iot-ws-server binary to test');

/** The one generous deadline for anything that should happen "at once" on loopback. */
export const WAIT_MS = 20_000;
export const ACTUATOR = { username: 'dashboard', password: 'js-Test-Pa55' };

/** A fresh key pair on disk, and tokens signed with it. */
export function keyPair() {
  const dir = mkdtempSync(join(tmpdir(), 'iot-ws-js-keys-'));
  execFileSync(BIN, ['keygen', '--dir', dir], { stdio: 'ignore' });
  return {
    publicKey: join(dir, 'public.pem'),
    token: (deviceId) =>
      execFileSync(BIN, ['token', '--private-key', join(dir, 'private.pem'), '--device-id', deviceId, '--ttl', '3600'])
        .toString()
        .trim(),
  };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Polls `check` (which may be async) until it is truthy; throws after `ms`. */
export async function until(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** One server process on 127.0.0.1:port; holding actuations is off, so a device that left is
 *  "not connected" at once. */
export class Server {
  static async start({ publicKey, port }) {
    const args = ['--listen', `127.0.0.1:${port}`, '--public-key', publicKey, '--external-address', `127.0.0.1:${port}`];
    args.push('--actuator-username', ACTUATOR.username, '--actuator-password', ACTUATOR.password);
    args.push('--hold-actuations-secs', '0');
    for (let attempt = 0; ; attempt++) {
      const server = new Server(spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] }), { publicKey, port });
      const started = await server.#listening();
      if (started) return server;
      // The previous process's socket may linger a moment after a restart.
      if (attempt >= 50 || !server.log.some((l) => l.includes('in use'))) {
        throw new Error(`the server did not start:\n${server.log.join('\n')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  constructor(child, options) {
    this.child = child;
    this.options = options;
    this.url = `ws://127.0.0.1:${options.port}/`;
    // Its log: info lines on stdout, warnings, errors and a refused start on stderr.
    this.log = [];
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => this.log.push(line));
    }
  }

  async #listening() {
    const listening = until(() => this.log.some((l) => l.includes('listening on ')), 'listening on');
    const result = await Promise.race([listening.then(() => true), this.exited.then(() => false)]);
    if (!result) await new Promise((resolve) => setTimeout(resolve, 50)); // the last log lines
    return result;
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error('no exit after SIGTERM')), WAIT_MS).unref());
    return Promise.race([this.exited, deadline]);
  }

  /** Stopped gracefully and started again on the same address, as an upgrade would. */
  async restart() {
    await this.stop();
    return Server.start(this.options);
  }
}

/** Sends one actuation (the body's text exactly as given) with an ack; resolves with the ack. */
export function actuate(url, body, credentials = ACTUATOR) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'echo-protocol');
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error('no ack'));
    }, WAIT_MS);
    ws.on('error', reject);
    ws.on('open', () => {
      ws.send(`{"type":"actuation","credentials":${JSON.stringify(credentials)},"body":${body},"ack":true}`);
    });
    ws.on('message', (data) => {
      clearTimeout(timer);
      ws.close(1000);
      resolve(JSON.parse(data.toString()));
    });
  });
}

/** The statuses as short words, `backing_off` with its delay: easy to compare as a list. */
export const words = (statuses) =>
  statuses.map((s) => (s.status === 'backing_off' ? `backing_off ${s.delayMs}` : s.status)).filter((w) => w !== 'pong');

export const count = (statuses, status) => statuses.filter((s) => s.status === status).length;

/** An actuation body with spellings that JSON.parse + JSON.stringify would not keep. */
export const trickyBody = (deviceId) =>
  `{"type":"command","content":{"deviceId":"${deviceId}","v":1.50,"s":"\\u00e9\\"","n":[-0.0,1E2]}}`;
