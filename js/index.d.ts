/** What the client is doing; `onStatus` hears each change. */
export type Status =
  | { status: 'connecting' }
  /** The server answered the registration with 200. */
  | { status: 'registered' }
  /** The server refused the token or the message (401); it closes, the client backs off. */
  | { status: 'rejected' }
  /** The server could not record the binding (500); it closes, the client backs off. */
  | { status: 'server_error' }
  /** The answer to the client's ping (every 30 s once registered). */
  | { status: 'pong' }
  /** No pong within 10 s: the client closes and backs off. */
  | { status: 'pong_missed' }
  /** The connection ended or could not be opened. */
  | { status: 'disconnected'; error?: string }
  /** The next attempt is `delayMs` away: 2.5 s, doubling to 10 min, 2.5 s again after a 200. */
  | { status: 'backing_off'; delayMs: number }
  /** `close()` finished: no socket, no timer, nothing more will be heard. */
  | { status: 'closed' };

/**
 * The part of a WebSocket the client uses: the browser's, or the `ws` package's. The handlers'
 * events are `any` so that both implementations' own event types fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number): void;
}

export interface ConnectOptions {
  /** The server, e.g. `ws://gateway:5000/`. */
  url: string;
  deviceId: string;
  /** The device's RS256 JWT, whose `sub` is `deviceId`. */
  token: string;
  /**
   * Each actuation: the dashboard's body parsed, and exactly as the dashboard sent it (key
   * order, number spelling and escapes kept).
   */
  onActuation?: (body: unknown, text: string) => void;
  onStatus?: (status: Status) => void;
  /** A WebSocket constructor; defaults to `globalThis.WebSocket` (Node.js 20 has none). */
  WebSocket?: new (url: string, protocol: string) => WebSocketLike;
}

export interface Connection {
  /** Closes the socket (code 1000), stops the timer and reconnects; resolves when closed. */
  close(): Promise<void>;
}

/** Connects now, registers, keeps the connection alive and reconnects until `close()`. */
export function connect(options: ConnectOptions): Connection;
