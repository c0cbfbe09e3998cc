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

/** A member of a room, as JOIN answers and WHO list them (SPEC.md 3.3). */
export interface Member {
  connectionId: string;
  /** Its `userId`; `undefined` when it gave none. */
  user: string | undefined;
}

/**
 * A JOIN_ROOM answer (SPEC.md 3.3). `epoch`, `seq` and `memberList` are
 * `undefined` from a server before protocol 0.4 (the original among them).
 */
export interface JoinAnswer extends RoomAnswer {
  /** The room's epoch: `seq` counts within it. */
  epoch: string | undefined;
  /** The last `seq` given in the room before the answer; later deliveries have higher ones. */
  seq: number | undefined;
  /** The members, oldest first, at most 100 (`members` counts them all); this client among them. */
  memberList: Member[] | undefined;
}

/** A WHO answer (SPEC.md 3.15). */
export interface WhoAnswer {
  room: string;
  /** Members now; 0 for a room that does not exist. */
  members: number;
  /** At most 100 of them, oldest first. */
  memberList: Member[];
}

/** Where a client is in a room's order: the last message it has, or is told it cannot have. */
export interface Position {
  epoch: string;
  seq: number;
}

/**
 * Messages of a room the client asked for and will never get (SPEC.md
 * 3.13): `from` to `to` of `epoch` (both included), and when
 * `previousEpoch` is set, everything that epoch had after the position the
 * client asked from, however much it was.
 */
export interface Gap {
  room: string;
  /** The room's epoch now. */
  epoch: string;
  /** First `seq` of `epoch` that is gone; `undefined` when none of this epoch is. */
  from: number | undefined;
  /** Last `seq` of `epoch` that is gone. */
  to: number | undefined;
  /** The epoch the client asked from, when the room has started over since. */
  previousEpoch: string | undefined;
}

/** A publish acknowledged (SPEC.md 3.14). */
export interface Ack {
  room: string;
  /** The `seq` the message got. */
  seq: number;
  epoch: string;
  /** The members it was queued for (others, and the publisher with echo). */
  members: number;
}

/** A direct message to this connection or its user (SPEC.md 3.16). */
export interface DirectMessage {
  /** The sender's connection id. */
  from: string;
  /** The sender's user name, when it has one. */
  user: string | undefined;
  /** The sent JSON value, parsed. */
  content: unknown;
  /** Server time, milliseconds since the Unix epoch. */
  timestamp: number | undefined;
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
  /** Its place in the room's order; `undefined` from a server before protocol 0.4. */
  seq: number | undefined;
  /** The room's epoch, within which `seq` counts. */
  epoch: string | undefined;
}

/**
 * A binary message delivered to a room (SPEC.md 3.10): no user, no
 * timestamp, and `seq`/`epoch` only with the `binarySeq` option.
 */
export interface BinaryMessage {
  kind: 'binary';
  room: string;
  from: string;
  data: Uint8Array;
  seq: number | undefined;
  epoch: string | undefined;
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
  binarySeq?: boolean | undefined;
  memberEvents?: boolean | undefined;
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
  // Sent only when they differ from the default: a HELLO without them is the original's.
  if (hello.binarySeq === true) body.binarySeq = true;
  if (hello.memberEvents === false) body.memberEvents = false;
  return jsonPayload(body);
}

/**
 * `{"room":R,"content":C,"id":N}`. Throws a `TypeError` for content JSON
 * cannot carry (`undefined`, a function), which the server would never see.
 */
export function messagePayload(room: string, content: unknown, id: RequestId, ack = false): Uint8Array {
  const text = contentText(content);
  return encoder.encode(
    `{"room":${JSON.stringify(room)},"content":${text},"id":${JSON.stringify(id)}${ack ? ',"ack":true' : ''}}`,
  );
}

/** Whom a direct message goes to (SPEC.md 3.16): every connection of a user, or one connection. */
export type Recipient = { toUser: string } | { toConnection: string };

/** `{"toUser":U,"content":C,"id":N}` or the same with `toConnection` (SPEC.md 3.16). */
export function directPayload(to: Recipient, content: unknown, id: RequestId): Uint8Array {
  const text = contentText(content);
  const target =
    'toUser' in to && typeof to.toUser === 'string'
      ? `"toUser":${JSON.stringify(to.toUser)}`
      : 'toConnection' in to && typeof to.toConnection === 'string'
        ? `"toConnection":${JSON.stringify(to.toConnection)}`
        : undefined;
  if (target === undefined) {
    throw new TypeError('a direct message goes to { toUser: string } or { toConnection: string }');
  }
  return encoder.encode(`{${target},"content":${text},"id":${JSON.stringify(id)}}`);
}

function contentText(content: unknown): string {
  const text = JSON.stringify(content);
  if (text === undefined) {
    throw new TypeError('message content must be a JSON value (null, a number, a string, an array or an object)');
  }
  return text;
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

export function readJoinAnswer(object: Record<string, unknown>): JoinAnswer {
  const answer = readRoomAnswer(object);
  const epoch = str(object.epoch);
  return {
    ...answer,
    epoch,
    seq: epoch === undefined ? undefined : int(object.seq),
    memberList: object.memberList === undefined ? undefined : readMembers(object.memberList),
  };
}

export function readWho(object: Record<string, unknown>): WhoAnswer {
  const room = str(object.room);
  if (room === undefined) throw protocolError('WHO answer without a room');
  return { room, members: int(object.members) ?? 0, memberList: readMembers(object.memberList) };
}

/** A member list; entries that are not `{connectionId}` objects are skipped, as unknown keys are. */
function readMembers(value: unknown): Member[] {
  if (!Array.isArray(value)) return [];
  const members: Member[] = [];
  for (const entry of value as unknown[]) {
    if (typeof entry !== 'object' || entry === null) continue;
    const record = entry as Record<string, unknown>;
    const connectionId = str(record.connectionId);
    if (connectionId !== undefined) members.push({ connectionId, user: str(record.user) });
  }
  return members;
}

/** What a MESSAGE frame from the server is (SPEC.md 3.5, 3.9, 3.10, 3.13, 3.14, 3.16). */
export type ServerMessage =
  | { message: Message }
  | { joined: MemberEvent }
  | { left: MemberEvent }
  | { gap: Gap }
  | { ack: Ack; id: RequestId }
  | { direct: DirectMessage };

/**
 * A MESSAGE frame from the server, or `null` for one of a `type` the
 * client does not know (SPEC.md 3.5). `binarySeq`: whether this
 * connection's HELLO asked for the sequenced binary layout.
 */
export function readMessage(frame: Frame, binarySeq = false): ServerMessage | null {
  if (frame.flags === Flags.BINARY) return { message: readBinaryDelivery(frame.payload, binarySeq) };
  const object = readObject(frame, 'MESSAGE');
  const room = str(object.room);
  switch (object.type) {
    case undefined:
      break;
    case 'userJoined':
    case 'userLeft': {
      const connectionId = str(object.connectionId);
      if (room === undefined || connectionId === undefined) return null;
      const event = { room, connectionId, user: str(object.user), timestamp: int(object.timestamp) };
      return object.type === 'userJoined' ? { joined: event } : { left: event };
    }
    case 'gap': {
      const epoch = str(object.epoch);
      if (room === undefined || epoch === undefined) throw protocolError('gap notice without room or epoch');
      const from = int(object.from);
      const to = int(object.to);
      if ((from === undefined) !== (to === undefined) || (from !== undefined && to !== undefined && from > to)) {
        throw protocolError('gap notice with a range that is not from ≤ to');
      }
      return { gap: { room, epoch, from, to, previousEpoch: str(object.previousEpoch) } };
    }
    case 'ack': {
      const id = readId(object);
      const seq = int(object.seq);
      const epoch = str(object.epoch);
      const members = int(object.members);
      if (room === undefined || id === undefined || seq === undefined || epoch === undefined || members === undefined) {
        throw protocolError('ack without room, id, seq, epoch or members');
      }
      return { ack: { room, seq, epoch, members }, id };
    }
    case 'direct': {
      const from = str(object.from);
      if (from === undefined) throw protocolError('direct message without from');
      return { direct: { from, user: str(object.user), content: object.content, timestamp: int(object.timestamp) } };
    }
    default:
      return null;
  }
  const from = str(object.from);
  if (room === undefined || from === undefined) throw protocolError('delivery without room or from');
  const epoch = str(object.epoch);
  return {
    message: {
      kind: 'json',
      room,
      from,
      user: str(object.user),
      content: object.content,
      timestamp: int(object.timestamp),
      seq: epoch === undefined ? undefined : int(object.seq),
      epoch,
    },
  };
}

/**
 * `| room_len u8 | room | from_len u8 | from | body |`, or with
 * `binarySeq` `... | from | seq u64 BE | epoch_len u8 | epoch | body |`
 * (SPEC.md 3.10). A `seq` past 2^53 loses precision as a JavaScript
 * number, as it does in JSON; no room gets near it.
 */
function readBinaryDelivery(payload: Uint8Array, binarySeq: boolean): BinaryMessage {
  const roomEnd = 1 + (payload[0] ?? 0);
  const fromLen = payload[roomEnd];
  if (payload.length < 1 || fromLen === undefined || payload.length < roomEnd + 1 + fromLen) {
    throw protocolError('binary delivery shorter than its room and sender');
  }
  const fromEnd = roomEnd + 1 + fromLen;
  let bodyStart = fromEnd;
  let seq: number | undefined;
  let epoch: string | undefined;
  try {
    if (binarySeq) {
      const epochLen = payload[fromEnd + 8];
      if (epochLen === undefined || payload.length < fromEnd + 9 + epochLen) {
        throw protocolError('sequenced binary delivery shorter than its seq and epoch');
      }
      const view = new DataView(payload.buffer, payload.byteOffset + fromEnd, 8);
      seq = Number(view.getBigUint64(0));
      epoch = decoder.decode(payload.subarray(fromEnd + 9, fromEnd + 9 + epochLen));
      bodyStart = fromEnd + 9 + epochLen;
    }
    return {
      kind: 'binary',
      room: decoder.decode(payload.subarray(1, roomEnd)),
      from: decoder.decode(payload.subarray(roomEnd + 1, fromEnd)),
      data: payload.subarray(bodyStart),
      seq,
      epoch,
    };
  } catch (cause) {
    if (cause instanceof RelayError) throw cause;
    throw protocolError('binary delivery with a room, sender or epoch that is not UTF-8', cause);
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
