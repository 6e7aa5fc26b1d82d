// The driver between a WebSocket and the core's WasmDeviceClient. It moves bytes and timers
// only: when to connect, register, ping, give a connection up and how long to back off are the
// core's decisions (core/src/client.rs), so that browsers, Node.js and the native
// `iot-ws-server device` behave alike.
//
// Contract of the core (core/src/wasm.rs): after each handle_* call, drain poll_output() until
// it returns undefined, then re-arm the one timer from poll_timeout().

const CLOSED = 3; // WebSocket.CLOSED, the same number in browsers and in the ws package

/** Builds `connect` around one flavour (web or Node.js) of the WASM client class. */
export function makeConnect(WasmDeviceClient) {
  return function connect(options) {
    const { url, deviceId, token } = options ?? {};
    const onActuation = options?.onActuation ?? (() => {});
    const onStatus = options?.onStatus ?? (() => {});
    const WebSocketImpl = options?.WebSocket ?? globalThis.WebSocket;
    for (const [name, value] of Object.entries({ url, deviceId, token })) {
      if (typeof value !== 'string') throw new TypeError(`connect: ${name} must be a string`);
    }
    if (typeof WebSocketImpl !== 'function') {
      throw new TypeError(
        'connect: this runtime has no WebSocket (Node.js 20): pass one, e.g. ' +
          "connect({ ..., WebSocket: (await import('ws')).WebSocket })",
      );
    }

    const now = () => performance.now();
    const client = new WasmDeviceClient(now(), deviceId, token);
    let socket = null;
    let timer;
    let stopped = false;
    let resolveClosed;
    const closed = new Promise((resolve) => (resolveClosed = resolve));

    // A callback that throws must not leave the core's outputs half drained: report it the way
    // an uncaught error in an event handler would be, after this turn.
    const call = (callback, ...args) => {
      try {
        callback(...args);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    };

    function pump() {
      for (let out; !stopped && (out = client.poll_output()) !== undefined; ) perform(JSON.parse(out));
      if (stopped) return;
      clearTimeout(timer);
      timer = undefined;
      const at = client.poll_timeout();
      if (at !== undefined) {
        timer = setTimeout(() => {
          timer = undefined;
          client.handle_timeout(now());
          pump();
        }, Math.max(0, at - now()));
      }
    }

    function perform(out) {
      switch (out.kind) {
        case 'connect':
          open();
          break;
        case 'send':
          socket?.send(out.text);
          break;
        case 'close':
          // Its close event tells the core, as for any other end of the connection.
          socket?.close(1000);
          break;
        case 'event':
          report(out);
          break;
      }
    }

    function open() {
      call(onStatus, { status: 'connecting' });
      let ws;
      try {
        ws = new WebSocketImpl(url, 'echo-protocol');
      } catch (error) {
        // A URL the runtime refuses outright: a failed attempt like any other.
        call(onStatus, { status: 'disconnected', error: String(error) });
        client.handle_disconnected(now());
        return;
      }
      socket = ws;
      ws.onopen = () => {
        if (socket !== ws) return;
        client.handle_connected(now());
        pump();
      };
      ws.onmessage = (message) => {
        // The protocol is text only; the core ignores what it does not understand.
        if (socket !== ws || typeof message.data !== 'string') return;
        client.handle_text(now(), message.data);
        pump();
      };
      // Every error is followed by a close event; the ws package throws on an unheard error.
      ws.onerror = () => {};
      ws.onclose = () => {
        if (socket !== ws) return;
        socket = null;
        call(onStatus, { status: 'disconnected' });
        client.handle_disconnected(now());
        pump();
      };
    }

    function report(out) {
      switch (out.event) {
        case 'actuation':
          call(onActuation, out.body, out.text);
          break;
        case 'backing_off':
          call(onStatus, { status: 'backing_off', delayMs: out.delayMs });
          break;
        default: // registered, rejected, server_error, pong, pong_missed
          call(onStatus, { status: out.event });
      }
    }

    function finish() {
      client.free();
      call(onStatus, { status: 'closed' });
      resolveClosed();
    }

    function close() {
      if (stopped) return closed;
      stopped = true;
      clearTimeout(timer);
      timer = undefined;
      const ws = socket;
      socket = null;
      if (ws && ws.readyState !== CLOSED) {
        ws.onclose = finish;
        ws.close(1000);
      } else {
        finish();
      }
      return closed;
    }

    pump();
    return { close };
  };
}
