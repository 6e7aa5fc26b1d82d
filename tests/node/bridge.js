#!/usr/bin/env node
'use strict';
// JSON-lines bridge: lets a test in any language drive a real WebSocket-Node client.
//
// Commands, one JSON object per line on stdin:
//   {"op":"connect","url":"ws://127.0.0.1:PORT/","protocol":"echo-protocol"}  protocol optional; null = none
//                                           for wss://, "ca":"PEM" trusts that CA (and only it)
//   {"op":"send","text":"..."}              one text message (fragmented above 16 KiB, as the agents do)
//   {"op":"send_binary","base64":"..."}     one binary message
//   {"op":"close","code":1000,"reason":""}  close handshake; code and reason optional
//   {"op":"drop"}                           destroy the TCP socket without a Close frame
//   {"op":"exit"}                           exit at once (status 0)
// Events, one JSON object per line on stdout, written as they happen:
//   {"event":"open","protocol":"echo-protocol"|null}
//   {"event":"connect_failed","message":"..."}
//   {"event":"message","text":"..."}  or  {"event":"message","base64":"..."}
//   {"event":"close","code":1000,"reason":"..."}   1006 when the TCP connection ended without Close
//   {"event":"error","message":"..."}              socket errors and bad commands
// Every command may carry an "id" (string or number) to run several connections in one bridge; the
// events of that connection then carry the same "id". Without one, all commands address one
// default connection. End of stdin drops every connection and exits 0.

const readline = require('readline');
const { openConnection } = require('./ws');

const DEFAULT_ID = null;
/** id -> { connection | null while connecting } */
const connections = new Map();

function emit(id, event) {
  const line = id === DEFAULT_ID ? event : Object.assign({ id }, event);
  // Writes to a pipe are synchronous on Linux, so each line is out before the next event.
  process.stdout.write(JSON.stringify(line) + '\n');
}

function idOf(cmd) {
  return cmd.id === undefined ? DEFAULT_ID : cmd.id;
}

function errorMessage(err) {
  return err && err.message ? err.message : String(err);
}

function connect(id, cmd) {
  if (connections.has(id)) {
    emit(id, { event: 'error', message: 'already connected or connecting' });
    return;
  }
  if (typeof cmd.url !== 'string') {
    emit(id, { event: 'connect_failed', message: 'connect needs a "url" string' });
    return;
  }
  const slot = { connection: null };
  connections.set(id, slot);
  openConnection(cmd.url, cmd.protocol, cmd.ca).then(
    (connection) => {
      slot.connection = connection;
      emit(id, { event: 'open', protocol: connection.protocol || null });
      connection.on('message', (msg) => {
        if (msg.type === 'utf8') {
          emit(id, { event: 'message', text: msg.utf8Data });
        } else {
          emit(id, { event: 'message', base64: msg.binaryData.toString('base64') });
        }
      });
      connection.on('error', (err) => emit(id, { event: 'error', message: errorMessage(err) }));
      connection.on('close', (code, reason) => {
        connections.delete(id);
        emit(id, { event: 'close', code, reason: reason || '' });
      });
    },
    (err) => {
      connections.delete(id);
      emit(id, { event: 'connect_failed', message: errorMessage(err) });
    },
  );
}

function withConnection(id, what, fn) {
  const slot = connections.get(id);
  if (!slot || !slot.connection) {
    emit(id, { event: 'error', message: `${what}: not connected` });
    return;
  }
  try {
    fn(slot.connection);
  } catch (err) {
    emit(id, { event: 'error', message: `${what}: ${errorMessage(err)}` });
  }
}

function handle(cmd) {
  const id = idOf(cmd);
  switch (cmd.op) {
    case 'connect':
      connect(id, cmd);
      break;
    case 'send':
      withConnection(id, 'send', (c) => c.sendUTF(String(cmd.text)));
      break;
    case 'send_binary':
      withConnection(id, 'send_binary', (c) => c.sendBytes(Buffer.from(String(cmd.base64), 'base64')));
      break;
    case 'close':
      withConnection(id, 'close', (c) => c.close(cmd.code === undefined ? 1000 : cmd.code, cmd.reason || ''));
      break;
    case 'drop':
      withConnection(id, 'drop', (c) => c.socket.destroy());
      break;
    case 'exit':
      process.exit(0);
      break;
    default:
      emit(id, { event: 'error', message: `unknown op: ${JSON.stringify(cmd.op)}` });
  }
}

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on('line', (line) => {
  if (line.trim() === '') return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    emit(DEFAULT_ID, { event: 'error', message: `bad command (not JSON): ${errorMessage(err)}` });
    return;
  }
  if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) {
    emit(DEFAULT_ID, { event: 'error', message: 'bad command: not a JSON object' });
    return;
  }
  handle(cmd);
});
input.on('close', () => {
  for (const slot of connections.values()) {
    if (slot.connection) slot.connection.socket.destroy();
  }
  process.exit(0);
});
