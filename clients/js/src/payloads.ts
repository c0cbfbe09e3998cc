/**
 * The payloads of SPEC.md section 3: building requests, and reading the
 * server's answers leniently (unknown keys ignored, and the original
 * server's shapes accepted as SPEC.md 8 asks).
 */

import { Flags, FrameType, type Frame } from './frame.js';
import { RelayError, type RequestId } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The original server's limit, for an answer without `maxFrameSize` (SPEC.md 8). */
export const ORIGINAL_MAX_FRAME_SIZE = 10_485_760;

/** The server's HELLO answer (SPEC.md 3.2). */
export interface HelloAnswer {
  connectionId: string;
  serverVersion: string | undefined;
  /** The largest frame the server accepts and sends. */
  maxFrameSize: number;
  /** The server's idle timeout; `undefined` when it has none. */
  idleTimeoutMs: number | undefined;
  /** The server's counters, as sent (SPEC.md 3.2); may be absent. */
  stats: Record<string, unknown> | undefined;
}

/** A JOIN_ROOM or LEAVE_ROOM answer (SPEC.md 3.3, 3.4). */
export interface RoomAnswer {
  /** The room, trimmed by the server. */
  room: string;
  /** Members after the join or leave; `undefined` from the original server. */
  members: number | undefined;
}

/** A JSON message delivered to a room (SPEC.md 3.9). */
export interface JsonMessage {
  kind: 'json';
  room: string;
  /** The publisher's connection id. */
  from: string;
  /** The publisher's user name, when it has one. */
  user: string | undefined;
  /** The published JSON value, parsed. */
  content: unknown;
  /** Server time, milliseconds since the Unix epoch. */
  timestamp: number | undefined;
}

/** A binary message delivered to a room (SPEC.md 3.10): no user, no timestamp. */
export interface BinaryMessage {
  kind: 'binary';
  room: string;
  from: string;
  data: Uint8Array;
}

export type Message = JsonMessage | BinaryMessage;

/** A member joined or left a room the client is in (SPEC.md 3.5). */
export interface MemberEvent {
  room: string;
  connectionId: string;
  user: string | undefined;
  timestamp: number | undefined;
}

/** What the client may say in HELLO (SPEC.md 3.1). */
export interface HelloRequest {
  userId?: string | undefined;
  clientVersion?: string | undefined;
  echo?: boolean | undefined;
  token?: string | undefined;
  id: RequestId;
}

export function jsonPayload(value: object): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function helloPayload(hello: HelloRequest): Uint8Array {
  const body: Record<string, unknown> = {};
  if (hello.userId !== undefined) body.userId = hello.userId;
  if (hello.clientVersion !== undefined) body.clientVersion = hello.clientVersion;
  if (hello.echo) body.echo = true;
  body.id = hello.id;
  if (hello.token !== undefined) body.token = hello.token;
  return jsonPayload(body);
}

/**
 * `{"room":R,"content":C,"id":N}`. Throws a `TypeError` for content JSON
 * cannot carry (`undefined`, a function), which the server would never see.
 */
export function messagePayload(room: string, content: unknown, id: RequestId): Uint8Array {
  const text = JSON.stringify(content);
  if (text === undefined) {
    throw new TypeError('message content must be a JSON value (null, a number, a string, an array or an object)');
  }
  return encoder.encode(`{"room":${JSON.stringify(room)},"content":${text},"id":${JSON.stringify(id)}}`);
}

/** `| room_len u8 | room | body |` (SPEC.md 3.8). */
export function binaryMessagePayload(room: string, body: Uint8Array): Uint8Array {
  const name = encoder.encode(room);
  if (name.length > 255) {
    throw new RangeError(`room name of ${name.length} bytes; a room name is at most 64 bytes of UTF-8`);
  }
  const payload = new Uint8Array(1 + name.length + body.length);
  payload[0] = name.length;
  payload.set(name, 1);
  payload.set(body, 1 + name.length);
  return payload;
}

/** The JSON object of a frame, or a PROTOCOL_ERROR saying why there is none. */
export function readObject(frame: Frame, what: string): Record<string, unknown> {
  if (frame.flags !== Flags.JSON) {
    throw protocolError(`${what} without the JSON flag`);
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(frame.payload));
  } catch (cause) {
    throw protocolError(`${what} is not valid UTF-8 JSON`, cause);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw protocolError(`${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

export function readHello(object: Record<string, unknown>): HelloAnswer {
  const connectionId = str(object.connectionId);
  if (connectionId === undefined) throw protocolError('HELLO answer without a connectionId');
  const max = int(object.maxFrameSize);
  const stats = object.stats;
  return {
    connectionId,
    serverVersion: str(object.serverVersion),
    maxFrameSize: max !== undefined && max >= 3 ? max : ORIGINAL_MAX_FRAME_SIZE,
    idleTimeoutMs: int(object.idleTimeoutMs),
    stats: typeof stats === 'object' && stats !== null ? (stats as Record<string, unknown>) : undefined,
  };
}

export function readRoomAnswer(object: Record<string, unknown>): RoomAnswer {
  const room = str(object.room);
  if (room === undefined) throw protocolError('room answer without a room');
  return { room, members: int(object.members) };
}

/** A delivery, a member event, or `null` for a MESSAGE of an unknown `type`. */
export function readMessage(
  frame: Frame,
): { message: Message } | { joined: MemberEvent } | { left: MemberEvent } | null {
  if (frame.flags === Flags.BINARY) return { message: readBinaryDelivery(frame.payload) };
  const object = readObject(frame, 'MESSAGE');
  const room = str(object.room);
  if (object.type !== undefined) {
    const connectionId = str(object.connectionId);
    if (room === undefined || connectionId === undefined) return null;
    const event = { room, connectionId, user: str(object.user), timestamp: int(object.timestamp) };
    if (object.type === 'userJoined') return { joined: event };
    if (object.type === 'userLeft') return { left: event };
    // SPEC.md 3.5: a MESSAGE whose type the client does not know is ignored.
    return null;
  }
  const from = str(object.from);
  if (room === undefined || from === undefined) throw protocolError('delivery without room or from');
  return {
    message: {
      kind: 'json',
      room,
      from,
      user: str(object.user),
      content: object.content,
      timestamp: int(object.timestamp),
    },
  };
}

/** `| room_len u8 | room | from_len u8 | from | body |` (SPEC.md 3.10). */
function readBinaryDelivery(payload: Uint8Array): BinaryMessage {
  const roomEnd = 1 + (payload[0] ?? 0);
  const fromLen = payload[roomEnd];
  if (payload.length < 1 || fromLen === undefined || payload.length < roomEnd + 1 + fromLen) {
    throw protocolError('binary delivery shorter than its room and sender');
  }
  try {
    return {
      kind: 'binary',
      room: decoder.decode(payload.subarray(1, roomEnd)),
      from: decoder.decode(payload.subarray(roomEnd + 1, roomEnd + 1 + fromLen)),
      data: payload.subarray(roomEnd + 1 + fromLen),
    };
  } catch (cause) {
    throw protocolError('binary delivery with a room or sender that is not UTF-8', cause);
  }
}

/**
 * An ERROR frame as a {@link RelayError}. The original server's
 * `{"error": "text"}` has neither code nor fatality (SPEC.md 8); it closes
 * the connection itself when it means to.
 */
export function readError(frame: Frame): RelayError {
  const object = readObject(frame, 'ERROR');
  const code = str(object.code);
  if (code === undefined) {
    return new RelayError({
      code: 'ERROR',
      message: str(object.error) ?? str(object.message) ?? 'the server reported an error',
      fatal: false,
      fromServer: true,
    });
  }
  return new RelayError({
    code,
    message: str(object.message) ?? code,
    fatal: object.fatal === true,
    fromServer: true,
    room: str(object.room),
    requestId: typeof object.id === 'number' || typeof object.id === 'string' ? object.id : undefined,
    retryAfterMs: int(object.retryAfterMs),
  });
}

/** The request id an answer carries, if any. */
export function readId(object: Record<string, unknown>): RequestId | undefined {
  const id = object.id;
  return typeof id === 'number' || typeof id === 'string' ? id : undefined;
}

export function protocolError(message: string, cause?: unknown): RelayError {
  return RelayError.client('PROTOCOL_ERROR', `the server broke the protocol: ${message}`, true, cause);
}

export function frameName(type: FrameType): string {
  for (const [name, value] of Object.entries(FrameType)) {
    if (value === type) return name;
  }
  return `type ${type}`;
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function int(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : undefined;
}
