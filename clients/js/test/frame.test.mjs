// The frame layer alone: encoding, and the streaming decoder under every
// split of a byte stream (SPEC.md 1.1, 1.4), with SPEC.md's own vectors.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { encodeFrame, FrameDecoder, FramingError, FrameType, Flags } from '../dist/index.js';

const utf8 = new TextEncoder();
const hex = (text) => Uint8Array.from(text.trim().split(/\s+/), (b) => parseInt(b, 16));

test('encodes SPEC.md 1.1: the smallest frame', () => {
  assert.deepEqual(encodeFrame(FrameType.HEARTBEAT, Flags.NONE), hex('00 00 00 03 01 05 00'));
});

test('encodes SPEC.md 3.8: a binary MESSAGE', () => {
  const frame = encodeFrame(FrameType.MESSAGE, Flags.BINARY, hex('04 74 65 73 74 00 01 fe ff'));
  assert.deepEqual(frame, hex('00 00 00 0c 01 04 02 04 74 65 73 74 00 01 fe ff'));
});

test('refuses to encode a frame over maxFrameSize, and takes one at it', () => {
  assert.equal(encodeFrame(FrameType.HEARTBEAT, Flags.BINARY, new Uint8Array(13), 16).length, 20);
  assert.throws(() => encodeFrame(FrameType.HEARTBEAT, Flags.BINARY, new Uint8Array(14), 16), RangeError);
});

/** Three frames back to back: empty, JSON, and binary with every byte value. */
function stream() {
  const body = Uint8Array.from({ length: 256 }, (_, i) => i);
  const frames = [
    { type: FrameType.HEARTBEAT, flags: Flags.NONE, payload: new Uint8Array(0) },
    { type: FrameType.MESSAGE, flags: Flags.JSON, payload: utf8.encode('{"room":"test","content":"héllo ☕"}') },
    { type: FrameType.MESSAGE, flags: Flags.BINARY, payload: body },
  ];
  const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.flags, f.payload)));
  return { frames, bytes: new Uint8Array(bytes) };
}

function plain(frames) {
  return frames.map((f) => ({ type: f.type, flags: f.flags, payload: [...f.payload] }));
}

test('decodes the same frames under every split into two and three pieces', () => {
  const { frames, bytes } = stream();
  const expected = plain(frames);
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j += i < 20 ? 1 : 7) {
      const decoder = new FrameDecoder();
      const out = [
        ...decoder.push(bytes.subarray(0, i)),
        ...decoder.push(bytes.subarray(i, j)),
        ...decoder.push(bytes.subarray(j)),
      ];
      assert.deepEqual(plain(out), expected, `split at ${i} and ${j}`);
      assert.equal(decoder.buffered, 0);
    }
  }
});

test('decodes byte by byte, and the buffer never holds more than one frame', () => {
  const { frames, bytes } = stream();
  const decoder = new FrameDecoder();
  const out = [];
  let most = 0;
  for (const byte of bytes) {
    out.push(...decoder.push(Uint8Array.of(byte)));
    most = Math.max(most, decoder.buffered);
  }
  assert.deepEqual(plain(out), plain(frames));
  assert.equal(most, 4 + 3 + 256 - 1);
});

test('a frame payload survives the decoder reusing its buffer', () => {
  const { bytes } = stream();
  const decoder = new FrameDecoder();
  const out = [];
  for (let i = 0; i < bytes.length; i += 5) out.push(...decoder.push(bytes.subarray(i, i + 5)));
  assert.equal(new TextDecoder().decode(out[1].payload), '{"room":"test","content":"héllo ☕"}');
});

// SPEC.md 9.2 and 2: each malformed frame is refused at the byte that proves
// it, and every shorter prefix is merely incomplete.
const malformed = [
  ['length 2', '00 00 00 02', 'INVALID_FRAME'],
  ['length over the maximum (16)', '00 00 00 11', 'INVALID_FRAME', 16],
  ['version 2', '00 00 00 03 02', 'UNSUPPORTED_VERSION'],
  ['type 0', '00 00 00 03 01 00', 'UNKNOWN_MESSAGE_TYPE'],
  ['type 8', '00 00 00 03 01 08', 'UNKNOWN_MESSAGE_TYPE'],
  ['flags 3', '00 00 00 03 01 05 03', 'INVALID_FRAME'],
  ['flags 0x80', '00 00 00 03 01 05 80', 'INVALID_FRAME'],
  ['length 4 GiB - 1', 'ff ff ff ff', 'INVALID_FRAME'],
];

for (const [name, bytes, code, max] of malformed) {
  test(`refuses ${name} with ${code}, at its last byte and not before`, () => {
    const all = hex(bytes);
    const decoder = new FrameDecoder(max);
    for (let i = 0; i < all.length - 1; i++) {
      assert.deepEqual(decoder.push(all.subarray(i, i + 1)), [], `prefix of ${i + 1} bytes`);
    }
    assert.throws(
      () => decoder.push(all.subarray(all.length - 1)),
      (e) => e instanceof FramingError && e.code === code,
    );
    // The stream is unusable from then on.
    assert.throws(() => decoder.push(hex('00 00 00 03 01 05 00')), FramingError);
    assert.equal(decoder.buffered, 0);
  });
}

test('a frame exactly at maxFrameSize passes, in one piece or two', () => {
  const frame = encodeFrame(FrameType.HEARTBEAT, Flags.BINARY, new Uint8Array(13), 16);
  assert.equal(new FrameDecoder(16).push(frame).length, 1);
  const decoder = new FrameDecoder(16);
  assert.equal(decoder.push(frame.subarray(0, 9)).length, 0);
  assert.equal(decoder.push(frame.subarray(9)).length, 1);
});

test('a declared length reserves nothing: 1 MiB announced, 5 bytes held', () => {
  const decoder = new FrameDecoder();
  decoder.push(hex('00 10 00 00 01 04 02 61'));
  assert.equal(decoder.buffered, 8);
});
