// Node.js: the wasm-bindgen `nodejs` flavour (CommonJS, reads its .wasm synchronously).
import { createRequire } from 'node:module';
import { makeConnect } from './connect.js';

const require = createRequire(import.meta.url);
const { WasmDeviceClient } = require('../dist/node/iot_ws_core.js');

/** See index.d.ts. */
export const connect = makeConnect(WasmDeviceClient);
