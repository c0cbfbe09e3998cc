/**
 * `@relay/client`: a client for the Relay message relay (SPEC.md), for
 * browsers and Node. This entry point runs anywhere; `@relay/client/node`
 * adds the TCP transport, which needs `node:net`.
 */
export { RelayClient, CLIENT_VERSION } from './client.js';
export { RelayError } from './errors.js';
export { webSocket } from './websocket.js';
export { DEFAULT_MAX_FRAME_SIZE, Flags, FrameDecoder, FrameType, FramingError, HEADER_SIZE, VERSION, encodeFrame, } from './frame.js';
