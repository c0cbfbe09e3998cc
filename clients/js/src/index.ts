/**
 * `@relay/client`: a client for the Relay message relay (SPEC.md), for
 * browsers and Node. This entry point runs anywhere; `@relay/client/node`
 * adds the TCP transport, which needs `node:net`.
 */

export { RelayClient, CLIENT_VERSION } from './client.js';
export type { ConnectionState, JoinOptions, ReconnectOptions, RelayClientEvents, RelayClientOptions } from './client.js';
export { RelayError } from './errors.js';
export type { ClientErrorCode, ErrorCode, RelayErrorInit, RequestId, ServerErrorCode } from './errors.js';
export { webSocket } from './websocket.js';
export type { WebSocketConstructor, WebSocketLike, WebSocketOptions } from './websocket.js';
export type { Connector, Transport, TransportHandler } from './transport.js';
export type {
  Ack,
  BinaryMessage,
  DirectMessage,
  Gap,
  HelloAnswer,
  JoinAnswer,
  JsonMessage,
  Member,
  MemberEvent,
  Message,
  Position,
  Recipient,
  RoomAnswer,
  WhoAnswer,
} from './payloads.js';
export {
  DEFAULT_MAX_FRAME_SIZE,
  Flags,
  FrameDecoder,
  FrameType,
  FramingError,
  HEADER_SIZE,
  VERSION,
  encodeFrame,
} from './frame.js';
export type { Frame, FramingErrorCode } from './frame.js';
