/**
 * The payloads of SPEC.md section 3: building requests, and reading the
 * server's answers leniently (unknown keys ignored, and the original
 * server's shapes accepted as SPEC.md 8 asks).
 */
import { Flags, FrameType } from './frame.js';
import { RelayError } from './errors.js';
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
/** The original server's limit, for an answer without `maxFrameSize` (SPEC.md 8). */
export const ORIGINAL_MAX_FRAME_SIZE = 10_485_760;
export function jsonPayload(value) {
    return encoder.encode(JSON.stringify(value));
}
export function helloPayload(hello) {
    const body = {};
    if (hello.userId !== undefined)
        body.userId = hello.userId;
    if (hello.clientVersion !== undefined)
        body.clientVersion = hello.clientVersion;
    if (hello.echo)
        body.echo = true;
    body.id = hello.id;
    if (hello.token !== undefined)
        body.token = hello.token;
    return jsonPayload(body);
}
/**
 * `{"room":R,"content":C,"id":N}`. Throws a `TypeError` for content JSON
 * cannot carry (`undefined`, a function), which the server would never see.
 */
export function messagePayload(room, content, id) {
    const text = JSON.stringify(content);
    if (text === undefined) {
        throw new TypeError('message content must be a JSON value (null, a number, a string, an array or an object)');
    }
    return encoder.encode(`{"room":${JSON.stringify(room)},"content":${text},"id":${JSON.stringify(id)}}`);
}
/** `| room_len u8 | room | body |` (SPEC.md 3.8). */
export function binaryMessagePayload(room, body) {
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
export function readObject(frame, what) {
    if (frame.flags !== Flags.JSON) {
        throw protocolError(`${what} without the JSON flag`);
    }
    let value;
    try {
        value = JSON.parse(decoder.decode(frame.payload));
    }
    catch (cause) {
        throw protocolError(`${what} is not valid UTF-8 JSON`, cause);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw protocolError(`${what} is not a JSON object`);
    }
    return value;
}
export function readHello(object) {
    const connectionId = str(object.connectionId);
    if (connectionId === undefined)
        throw protocolError('HELLO answer without a connectionId');
    const max = int(object.maxFrameSize);
    const stats = object.stats;
    return {
        connectionId,
        serverVersion: str(object.serverVersion),
        maxFrameSize: max !== undefined && max >= 3 ? max : ORIGINAL_MAX_FRAME_SIZE,
        idleTimeoutMs: int(object.idleTimeoutMs),
        stats: typeof stats === 'object' && stats !== null ? stats : undefined,
    };
}
export function readRoomAnswer(object) {
    const room = str(object.room);
    if (room === undefined)
        throw protocolError('room answer without a room');
    return { room, members: int(object.members) };
}
/** A delivery, a member event, or `null` for a MESSAGE of an unknown `type`. */
export function readMessage(frame) {
    if (frame.flags === Flags.BINARY)
        return { message: readBinaryDelivery(frame.payload) };
    const object = readObject(frame, 'MESSAGE');
    const room = str(object.room);
    if (object.type !== undefined) {
        const connectionId = str(object.connectionId);
        if (room === undefined || connectionId === undefined)
            return null;
        const event = { room, connectionId, user: str(object.user), timestamp: int(object.timestamp) };
        if (object.type === 'userJoined')
            return { joined: event };
        if (object.type === 'userLeft')
            return { left: event };
        // SPEC.md 3.5: a MESSAGE whose type the client does not know is ignored.
        return null;
    }
    const from = str(object.from);
    if (room === undefined || from === undefined)
        throw protocolError('delivery without room or from');
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
function readBinaryDelivery(payload) {
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
    }
    catch (cause) {
        throw protocolError('binary delivery with a room or sender that is not UTF-8', cause);
    }
}
/**
 * An ERROR frame as a {@link RelayError}. The original server's
 * `{"error": "text"}` has neither code nor fatality (SPEC.md 8); it closes
 * the connection itself when it means to.
 */
export function readError(frame) {
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
export function readId(object) {
    const id = object.id;
    return typeof id === 'number' || typeof id === 'string' ? id : undefined;
}
export function protocolError(message, cause) {
    return RelayError.client('PROTOCOL_ERROR', `the server broke the protocol: ${message}`, true, cause);
}
export function frameName(type) {
    for (const [name, value] of Object.entries(FrameType)) {
        if (value === type)
            return name;
    }
    return `type ${type}`;
}
function str(value) {
    return typeof value === 'string' ? value : undefined;
}
function int(value) {
    return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : undefined;
}
