// The JavaScript that `iot-ws-server --demo` prints, run as printed (in this project, where
// iot-ws-client and ws are installed): it registers and shows the actuation the dashboard sends.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import { actuate, BIN, freePort, until, WAIT_MS } from './harness.js';

/** The lines a process writes on `stream`, as they come. */
function collect(stream) {
  const lines = [];
  createInterface({ input: stream }).on('line', (line) => lines.push(line));
  return lines;
}

test("the demo's JavaScript snippet works as printed", async () => {
  const port = await freePort();
  const demo = spawn(BIN, ['--demo', '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = collect(demo.stdout);
  collect(demo.stderr); // drained: its warnings only
  let snippet;
  try {
    // The instructions and the log's info lines (`listening on`) are both on stdout.
    await until(() => out.some((l) => l.includes('listening on ')) && out.some((l) => l.startsWith('Any WebSocket')), 'the demo');
    const heading = out.findIndex((l) => l.startsWith('Or be the device in JavaScript'));
    const end = out.findIndex((l, i) => i > heading && l.trim() === '');
    assert.ok(heading >= 0 && end > heading, `no JavaScript in the demo's text:\n${out.join('\n')}`);
    const file = fileURLToPath(new URL('./demo-snippet.mjs', import.meta.url));
    writeFileSync(file, out.slice(heading + 1, end).join('\n') + '\n');

    snippet = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const printed = collect(snippet.stdout);
    await until(() => printed.includes('registered'), 'the snippet to register');
    const [, username, password] = out.find((l) => l.startsWith('Actuator credentials:')).match(/username (\S+) password (\S+)/);
    const body = '{"type":"command","content":{"deviceId":"demo-device","actuation":"LED on","level":0.50}}';
    const ack = await actuate(`ws://127.0.0.1:${port}/`, body, { username, password });
    assert.equal(ack.content, 'Delivered');
    await until(() => printed.includes(`actuation ${body}`), 'the snippet to print the actuation', WAIT_MS);
  } finally {
    snippet?.kill();
    demo.kill('SIGTERM');
  }
});
