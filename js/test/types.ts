// Compiled (never run) by .ci/js.sh with tsc --strict against the installed package: its
// declarations resolve through "exports" and describe what a browser program writes.
import { connect, type Connection, type Status } from 'iot-ws-client';

const device: Connection = connect({
  url: 'ws://gateway:5000/',
  deviceId: 'my-device',
  token: 'a.b.c',
  WebSocket, // the browser's own
  onActuation: (body: unknown, text: string) => console.log(body, text.length),
  onStatus: (s: Status) => {
    if (s.status === 'backing_off') console.log(s.delayMs.toFixed(0));
  },
});
const closed: Promise<void> = device.close();
void closed;

// @ts-expect-error deviceId is required
connect({ url: 'ws://gateway:5000/', token: 'a.b.c' });
// @ts-expect-error only backing_off carries a delay
connect({ url: '', deviceId: '', token: '', onStatus: (s) => s.status === 'registered' && s.delayMs });
