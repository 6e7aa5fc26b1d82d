// A whole program that connects, registers and closes: it must then exit by itself, which it
// cannot while the client leaves a socket or a timer behind. Prints its statuses, one a line.
import { connect } from 'iot-ws-client';
import { WebSocket } from 'ws';

const device = connect({
  url: process.env.URL,
  deviceId: process.env.DEVICE_ID,
  token: process.env.TOKEN,
  WebSocket,
  onStatus: ({ status }) => {
    console.log(status);
    if (status === 'registered') device.close();
  },
});
