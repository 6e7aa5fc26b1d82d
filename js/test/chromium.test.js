// The package as installed from its tarball, in headless Chromium (the browser's own
// WebSocket, the `web` flavour fetched by the page), against the release server: registration,
// an actuation byte for byte, a server restart, close(), and a refused token. The browser is
// driven over WebDriver (chromedriver) with plain fetch; the page is served from the installed
// package by a small static server.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize } from 'node:path';
import test from 'node:test';
import { actuate, count, freePort, keyPair, Server, trickyBody, until, WAIT_MS, words } from './harness.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CHROMEDRIVER = process.env.CHROMEDRIVER ?? '/usr/bin/chromedriver';
// Where npm installed the package (its package.json is exported for exactly this kind of use).
const packageDir = dirname(createRequire(import.meta.url).resolve('iot-ws-client/package.json'));

const PAGE = `<!doctype html>
<meta charset="utf-8"><title>iot-ws-client in a browser</title>
<script>
  window.__errors = [];
  addEventListener('error', (e) => __errors.push(String(e.message)));
  addEventListener('unhandledrejection', (e) => __errors.push(String(e.reason)));
</script>
<script type="importmap">{ "imports": { "iot-ws-client": "/pkg/src/web.js" } }</script>
<script type="module">
  import { connect } from 'iot-ws-client';
  const p = new URLSearchParams(location.search);
  const state = (window.__state = { statuses: [], actuations: [], closed: false });
  const device = connect({
    url: p.get('url'), deviceId: p.get('deviceId'), token: p.get('token'),
    onStatus: (s) => state.statuses.push(s),
    onActuation: (body, text) => state.actuations.push({ body, text }),
  });
  window.__close = () => device.close().then(() => { state.closed = true; });
</script>`;

const TYPES = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

/** Serves the page at / and the installed package under /pkg/. */
async function staticServer() {
  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
      return;
    }
    const file = normalize(join(packageDir, path.replace(/^\/pkg\//, '')));
    if (!path.startsWith('/pkg/') || !file.startsWith(packageDir)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** A headless Chromium session through chromedriver's WebDriver API. */
class Browser {
  static async start() {
    const port = await freePort();
    const driver = spawn(CHROMEDRIVER, [`--port=${port}`], { stdio: 'ignore' });
    const browser = new Browser(driver, `http://127.0.0.1:${port}`);
    await until(async () => (await fetch(`${browser.base}/status`).then((r) => r.json(), () => null))?.value?.ready, 'chromedriver');
    const args = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'];
    const session = await browser.call('POST', '/session', {
      capabilities: { alwaysMatch: { browserName: 'chrome', 'goog:chromeOptions': { binary: CHROMIUM, args } } },
    });
    browser.session = `/session/${session.sessionId}`;
    return browser;
  }

  constructor(driver, base) {
    this.driver = driver;
    this.base = base;
  }

  async call(method, path, body) {
    const response = await fetch(this.base + path, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const json = await response.json();
    if (!response.ok) throw new Error(`WebDriver ${method} ${path}: ${JSON.stringify(json.value)}`);
    return json.value;
  }

  open(url) {
    return this.call('POST', `${this.session}/url`, { url });
  }

  run(script) {
    return this.call('POST', `${this.session}/execute/sync`, { script, args: [] });
  }

  /** The page's record so far; fails on any error the page reported. */
  async state() {
    const { state, errors } = await this.run('return { state: window.__state, errors: window.__errors }');
    assert.deepEqual(errors, [], 'errors in the page');
    return state ?? { statuses: [], actuations: [], closed: false };
  }

  async stop() {
    if (this.session) await this.call('DELETE', this.session).catch(() => {});
    this.driver.kill();
  }
}

const keys = keyPair();

test('in headless Chromium', async (t) => {
  const pages = await staticServer();
  const browser = await Browser.start();
  const pageUrl = (server, deviceId, token) =>
    `http://127.0.0.1:${pages.address().port}/?` + new URLSearchParams({ url: server.url, deviceId, token });
  try {
    await t.test('registers, gets an actuation byte for byte, survives a server restart, stops with close()', async () => {
      let server = await Server.start({ publicKey: keys.publicKey, port: await freePort() });
      try {
        await browser.open(pageUrl(server, 'js-chromium', keys.token('js-chromium')));
        await until(async () => count((await browser.state()).statuses, 'registered') === 1, 'registered');
        const body = trickyBody('js-chromium');
        assert.equal((await actuate(server.url, body)).content, 'Delivered');
        const got = await until(async () => (await browser.state()).actuations[0], 'the actuation');
        assert.equal(got.text, body, 'the text exactly as the dashboard sent it');
        // WebDriver carries the page's values as JSON, which has no -0: compare as JSON does.
        assert.deepEqual(got.body, JSON.parse(JSON.stringify(JSON.parse(body))));

        server = await server.restart();
        await until(async () => count((await browser.state()).statuses, 'registered') === 2, 'registered again');
        const after = '{"type":"command","content":{"deviceId":"js-chromium","after":"restart"}}';
        assert.equal((await actuate(server.url, after)).content, 'Delivered');
        await until(async () => (await browser.state()).actuations[1]?.text === after, 'the actuation after the restart');

        await browser.run('window.__close()');
        const state = await until(async () => ((await browser.state()).closed ? browser.state() : null), 'close()');
        assert.deepEqual(words(state.statuses).slice(0, 5), ['connecting', 'registered', 'disconnected', 'backing_off 2500', 'connecting']);
        assert.equal(state.statuses.at(-1).status, 'closed');
        await until(async () => (await actuate(server.url, after)).content === 'Device not connected', 'the server to see it gone');
      } finally {
        await server.stop();
      }
    });

    await t.test('a refused token ends in rejected and a doubling back-off', async () => {
      const server = await Server.start({ publicKey: keys.publicKey, port: await freePort() });
      try {
        await browser.open(pageUrl(server, 'js-refused', keyPair().token('js-refused')));
        await until(async () => count((await browser.state()).statuses, 'backing_off') === 2, 'two back-offs');
        await browser.run('window.__close()');
        const state = await until(async () => ((await browser.state()).closed ? browser.state() : null), 'close()');
        assert.deepEqual(words(state.statuses), [
          'connecting', 'rejected', 'disconnected', 'backing_off 2500',
          'connecting', 'rejected', 'disconnected', 'backing_off 5000',
          'closed',
        ]);
      } finally {
        await server.stop();
      }
    });
  } finally {
    await browser.stop();
    pages.closeAllConnections?.();
    pages.close();
  }
});
