// Browsers (and bundlers): the wasm-bindgen `web` flavour, fetched next to this module.
import init, { WasmDeviceClient } from '../dist/web/iot_ws_core.js';
import { makeConnect } from './connect.js';

await init();

/** See index.d.ts. */
export const connect = makeConnect(WasmDeviceClient);
