/**
 * Relay frames (SPEC.md section 1): the layout, encoding, and a streaming
 * decoder. Sans-IO: no sockets and no clock here, so the same code serves
 * the TCP byte stream, WebSocket messages and the tests.
 *
 * ```text
 * | length u32 BE | version | type | flags | payload (length - 3 bytes) |
 * ```
 */
/** The only protocol version (SPEC.md 1.1). */
export const VERSION = 0x01;
/** Bytes before the payload: length (4), version, type, flags. */
export const HEADER_SIZE = 7;
/**
 * The largest `length` a client may send, and expects, until the HELLO
 * answer announces the server's own `maxFrameSize` (SPEC.md 2).
 */
export const DEFAULT_MAX_FRAME_SIZE = 1_048_576;
/** Message types (SPEC.md 1.2). */
export const FrameType = {
    HELLO: 0x01,
    JOIN_ROOM: 0x02,
    LEAVE_ROOM: 0x03,
    MESSAGE: 0x04,
    HEARTBEAT: 0x05,
    ERROR: 0x06,
    /** Who is in a room (SPEC.md 3.15); new in protocol 0.4. */
    WHO: 0x07,
};
/** Payload encodings (SPEC.md 1.3); 0x03 and any higher bit are invalid. */
export const Flags = {
    NONE: 0x00,
    JSON: 0x01,
    BINARY: 0x02,
};
/**
 * A malformed frame from the peer. The stream has no frame boundaries after
 * it, so the connection must be closed (SPEC.md 1.4): never skip bytes.
 */
export class FramingError extends Error {
    code;
    constructor(code, message) {
        super(message);
        this.name = 'FramingError';
        this.code = code;
    }
}
/**
 * Encodes one frame. Throws a `RangeError` when the payload makes `length`
 * exceed `maxFrameSize`, since the server would answer with a fatal
 * INVALID_FRAME: better to refuse before the bytes leave.
 */
export function encodeFrame(type, flags, payload = EMPTY, maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
    const length = 3 + payload.length;
    if (length > maxFrameSize) {
        throw new RangeError(`frame of ${length} bytes is over the server's maxFrameSize of ${maxFrameSize}; send less per message`);
    }
    const bytes = new Uint8Array(4 + length);
    new DataView(bytes.buffer).setUint32(0, length, false);
    bytes[4] = VERSION;
    bytes[5] = type;
    bytes[6] = flags;
    bytes.set(payload, HEADER_SIZE);
    return bytes;
}
const EMPTY = new Uint8Array(0);
/**
 * Cuts frames off a byte stream that arrives in pieces of any size.
 *
 * Each header byte is checked as soon as it arrives, in the order of
 * SPEC.md 1.4, so a bad length is refused from its 4 bytes without waiting
 * for (or reserving room for) a body. What the decoder holds is bounded:
 * at most one incomplete frame, itself at most `4 + maxFrameSize` bytes,
 * and the buffer grows with the bytes received, not with the length a
 * frame declares.
 */
export class FrameDecoder {
    /** The largest `length` accepted; raise or lower it after the HELLO answer. */
    maxFrameSize;
    buffer = EMPTY;
    /** Bytes of `buffer` in use, from 0: the start of an incomplete frame. */
    used = 0;
    /** Set once a framing error has been found: the stream is unusable. */
    broken = null;
    constructor(maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
        this.maxFrameSize = maxFrameSize;
    }
    /** Bytes held of a frame not yet complete. */
    get buffered() {
        return this.used;
    }
    /**
     * Adds `chunk` and returns every frame it completes, in order. Throws a
     * {@link FramingError} for a malformed frame; every call after that
     * throws the same error.
     */
    push(chunk) {
        if (this.broken)
            throw this.broken;
        const frames = [];
        let input = chunk;
        // Complete the frame already begun, if any, from the front of `input`.
        if (this.used > 0) {
            const taken = this.fill(input);
            input = input.subarray(taken);
            const frame = this.check(this.buffer.subarray(0, this.used));
            if (frame === null)
                return frames;
            frames.push(copied(frame));
            this.used = 0;
        }
        // Whole frames straight from `input`, without copying.
        let offset = 0;
        while (offset < input.length) {
            const frame = this.check(input.subarray(offset));
            if (frame === null)
                break;
            frames.push(frame.frame);
            offset += frame.size;
        }
        // Keep the incomplete rest; `check` has bounded it already.
        if (offset < input.length) {
            this.used = 0;
            this.fill(input.subarray(offset));
        }
        return frames;
    }
    /**
     * Appends from `input` into the buffer, no more than the frame begun
     * there needs (so the rest stays in `input`, uncopied). Returns how many
     * bytes it took.
     */
    fill(input) {
        let want;
        if (this.used < 4) {
            want = 4 - this.used;
        }
        else {
            want = 4 + readLength(this.buffer) - this.used;
        }
        // Read up to the length first, so the buffer is sized by a checked length.
        if (this.used < 4) {
            const taken = Math.min(want, input.length);
            this.append(input.subarray(0, taken));
            if (this.used < 4)
                return taken;
            const length = readLength(this.buffer);
            this.checkLength(length);
            const rest = Math.min(4 + length - this.used, input.length - taken);
            this.append(input.subarray(taken, taken + rest));
            return taken + rest;
        }
        const taken = Math.min(want, input.length);
        this.append(input.subarray(0, taken));
        return taken;
    }
    append(bytes) {
        const needed = this.used + bytes.length;
        if (needed > this.buffer.length) {
            // Double, to keep appends amortised, but never past one whole frame.
            const cap = 4 + this.maxFrameSize;
            const grown = new Uint8Array(Math.max(needed, Math.min(cap, Math.max(this.buffer.length * 2, 64))));
            grown.set(this.buffer.subarray(0, this.used));
            this.buffer = grown;
        }
        this.buffer.set(bytes, this.used);
        this.used = needed;
    }
    /**
     * Checks the frame at the start of `bytes` as far as its bytes go. Returns
     * it when complete, `null` when more bytes are needed.
     */
    check(bytes) {
        if (bytes.length < 4)
            return null;
        const length = readLength(bytes);
        this.checkLength(length);
        if (bytes.length > 4 && bytes[4] !== VERSION) {
            this.fail('UNSUPPORTED_VERSION', `frame version ${hex(bytes[4])}; this client speaks version 1`);
        }
        const type = bytes[5];
        if (bytes.length > 5 && (type === undefined || type < 0x01 || type > 0x07)) {
            this.fail('UNKNOWN_MESSAGE_TYPE', `unknown frame type ${hex(type)}`);
        }
        const flags = bytes[6];
        if (bytes.length > 6 && (flags === undefined || flags > 0x02)) {
            this.fail('INVALID_FRAME', `invalid frame flags ${hex(flags)}`);
        }
        if (bytes.length < 4 + length)
            return null;
        return {
            frame: {
                type: type,
                flags: flags,
                payload: bytes.subarray(HEADER_SIZE, 4 + length),
            },
            size: 4 + length,
        };
    }
    checkLength(length) {
        if (length < 3) {
            this.fail('INVALID_FRAME', `frame length ${length} is below the minimum of 3`);
        }
        if (length > this.maxFrameSize) {
            this.fail('INVALID_FRAME', `frame length ${length} is over the maximum of ${this.maxFrameSize}`);
        }
    }
    fail(code, message) {
        this.broken = new FramingError(code, `malformed frame from the server: ${message}`);
        this.used = 0;
        this.buffer = EMPTY;
        throw this.broken;
    }
}
function readLength(bytes) {
    return (((bytes[0] ?? 0) << 24) | ((bytes[1] ?? 0) << 16) | ((bytes[2] ?? 0) << 8) | (bytes[3] ?? 0)) >>> 0;
}
/** A frame whose payload no longer shares the decoder's buffer, which is reused. */
function copied(found) {
    return { ...found.frame, payload: found.frame.payload.slice() };
}
function hex(byte) {
    return `0x${(byte ?? 0).toString(16).padStart(2, '0')}`;
}
