'use strict';
// The WebSocket-Node client, configured the way the platform's device agents and dashboard use it.
// Shared by bridge.js (driven by the Rust tests) and smoke.js (end-to-end check).

const { client: WebSocketClient } = require('websocket');

/** Client options: the agents fragment outgoing messages above 16 KiB. */
const CLIENT_CONFIG = Object.freeze({
  fragmentOutgoingMessages: true,
  fragmentationThreshold: 16384,
});

/**
 * Opens one connection. `protocol` is a subprotocol name, or null/undefined/"" for none; `ca`, a
 * PEM CA certificate that wss:// trusts instead of the system's (optional).
 * Resolves with the WebSocket-Node `connection`; rejects with an Error on a failed handshake,
 * a refused TCP connection or an invalid URL.
 */
function openConnection(url, protocol, ca) {
  return new Promise((resolve, reject) => {
    const config = ca ? Object.assign({ tlsOptions: { ca } }, CLIENT_CONFIG) : CLIENT_CONFIG;
    const client = new WebSocketClient(config);
    client.on('connect', resolve);
    client.on('connectFailed', (err) => reject(err instanceof Error ? err : new Error(String(err))));
    try {
      client.connect(url, protocol ? [protocol] : []);
    } catch (err) {
      // Bad URLs and bad protocol tokens throw synchronously.
      reject(err);
    }
  });
}

module.exports = { CLIENT_CONFIG, openConnection };
