// The client against a scripted server in memory: the cases a real server
// does not produce on demand (malformed frames, a WebSocket message with two
// frames, a close reason without its ERROR, the original server's answers,
// a server that stops answering heartbeats).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { RelayClient, FrameDecoder, FrameType, Flags, encodeFrame } from '../dist/index.js';
import { next } from '../testing/server.mjs';

const utf8 = new TextEncoder();
const text = new TextDecoder();

/**
 * A Connector whose connections the test drives. `connections` lists each
 * one made: `{ open(), reply(type, object), raw(bytes), end(close), sent }`,
 * where `sent` is the frames the client sent, decoded.
 */
function scripted({ messageFramed = true } = {}) {
  const connections = [];
  const waiting = [];
  const connector = (handler) => {
    const decoder = new FrameDecoder();
    const conn = {
      sent: [],
      closed: false,
      open: () => handler.open(),
      raw: (bytes) => handler.data(bytes),
      reply: (type, object) =>
        handler.data(encodeFrame(type, Flags.JSON, utf8.encode(JSON.stringify(object)))),
      end: (close = {}) => {
        if (!conn.closed) {
          conn.closed = true;
          handler.closed(close);
        }
      },
      sentJson: (i) => JSON.parse(text.decode(conn.sent[i].payload)),
    };
    const transport = {
      messageFramed,
      bufferedAmount: 0,
      send: (bytes) => conn.sent.push(...decoder.push(bytes)),
      close: () => queueMicrotask(() => conn.end({})),
    };
    connections.push(conn);
    for (const w of waiting.splice(0)) w();
    return transport;
  };
  const connection = async (n) => {
    while (connections.length <= n) await new Promise((resolve) => waiting.push(resolve));
    return connections[n];
  };
  return { connector, connections, connection };
}

/** Opens `conn` and answers its HELLO. */
function welcome(conn, extra = {}) {
  conn.open();
  const hello = conn.sentJson(0);
  conn.reply(FrameType.HELLO, {
    status: 'connected',
    connectionId: 'c1',
    maxFrameSize: 1048576,
    idleTimeoutMs: 60000,
    id: hello.id,
    ...extra,
  });
}

test('HELLO carries userId, echo, token and an id; the answer opens the client', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, userId: 'ann', echo: true, token: 'tok', reconnect: false });
  const connected = c.connect();
  const conn = await s.connection(0);
  conn.open();
  assert.equal(conn.sent[0].type, FrameType.HELLO);
  assert.equal(conn.sent[0].flags, Flags.JSON);
  const hello = conn.sentJson(0);
  assert.equal(hello.userId, 'ann');
  assert.equal(hello.echo, true);
  assert.equal(hello.token, 'tok');
  assert.equal(typeof hello.id, 'number');
  conn.reply(FrameType.HELLO, { status: 'connected', connectionId: 'c9', maxFrameSize: 2048, id: hello.id });
  const answer = await connected;
  assert.equal(answer.connectionId, 'c9');
  assert.equal(answer.maxFrameSize, 2048);
  // The announced maximum now bounds what the client sends.
  assert.throws(() => c.publishBinary('r', new Uint8Array(2048)), { code: 'FRAME_TOO_LARGE' });
  c.close();
});

test("the original server's answers: no ids, no maxFrameSize, {\"error\": text}", async () => {
  const s = scripted({ messageFramed: false });
  const c = new RelayClient({ transport: s.connector, reconnect: false });
  const connected = c.connect();
  const conn = await s.connection(0);
  conn.open();
  conn.reply(FrameType.HELLO, { status: 'connected', connectionId: 'c1' });
  const hello = await connected;
  assert.equal(hello.maxFrameSize, 10485760);
  assert.equal(hello.idleTimeoutMs, undefined);
  const joining = c.join('a');
  await new Promise((resolve) => setImmediate(resolve));
  conn.reply(FrameType.JOIN_ROOM, { status: 'joined', room: 'a' });
  assert.deepEqual(await joining, { room: 'a', members: undefined, epoch: undefined, seq: undefined, memberList: undefined });
  const error = next(c, 'error');
  conn.reply(FrameType.ERROR, { error: 'something went wrong' });
  const e = await error;
  assert.equal(e.code, 'ERROR');
  assert.equal(e.detail, 'something went wrong');
  c.close();
});

test('a WebSocket message with two frames, or half of one, ends the connection as PROTOCOL_ERROR', async () => {
  for (const bytes of [
    new Uint8Array([...encodeFrame(FrameType.HEARTBEAT, Flags.NONE), ...encodeFrame(FrameType.HEARTBEAT, Flags.NONE)]),
    encodeFrame(FrameType.HEARTBEAT, Flags.NONE).subarray(0, 5),
  ]) {
    const s = scripted();
    const c = new RelayClient({ transport: s.connector });
    const connected = c.connect();
    const conn = await s.connection(0);
    welcome(conn);
    await connected;
    const closed = next(c, 'close');
    conn.raw(bytes);
    const { error } = await closed;
    assert.equal(error.code, 'PROTOCOL_ERROR');
    assert.equal(c.state, 'closed', 'a broken server is not retried');
  }
});

test('a malformed frame from the server is PROTOCOL_ERROR, named after the framing check', async () => {
  const s = scripted({ messageFramed: false });
  const c = new RelayClient({ transport: s.connector });
  const connected = c.connect();
  const conn = await s.connection(0);
  welcome(conn);
  await connected;
  const closed = next(c, 'close');
  conn.raw(Uint8Array.of(0, 0, 0, 3, 2));
  const { error } = await closed;
  assert.equal(error.code, 'PROTOCOL_ERROR');
  assert.match(error.message, /version 0x02/);
});

test('a byte stream split anywhere still gives whole frames (TCP)', async () => {
  const s = scripted({ messageFramed: false });
  const c = new RelayClient({ transport: s.connector, reconnect: false });
  const connected = c.connect();
  const conn = await s.connection(0);
  welcome(conn);
  await connected;
  const got = [];
  c.on('message', (m) => got.push(m.content));
  const frames = [1, 2, 3].map((n) =>
    encodeFrame(FrameType.MESSAGE, Flags.JSON, utf8.encode(JSON.stringify({ room: 'r', from: 'c2', content: n, timestamp: 1 }))),
  );
  const all = new Uint8Array(frames.reduce((a, f) => [...a, ...f], []));
  for (let i = 0; i < all.length; i += 3) conn.raw(all.subarray(i, i + 3));
  assert.deepEqual(got, [1, 2, 3]);
  c.close();
});

test('a close reason that is an error code, without its ERROR frame, is reported as that code', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  const connected = c.connect();
  welcome(await s.connection(0));
  await connected;
  const reconnecting = next(c, 'reconnecting');
  (await s.connection(0)).end({ reason: 'SLOW_CONSUMER' });
  const { error, attempt } = await reconnecting;
  assert.equal(error.code, 'SLOW_CONSUMER');
  assert.equal(error.fatal, true);
  assert.equal(attempt, 1);
  c.close();
});

test('reconnect: backoff grows, jitter stays within it, rooms are re-joined, refused ones dropped', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, reconnect: { initialDelayMs: 4, maxDelayMs: 16, factor: 2 } });
  const connected = c.connect();
  const first = await s.connection(0);
  welcome(first);
  await connected;
  const joins = [c.join('a'), c.join('b')];
  await new Promise((resolve) => setImmediate(resolve));
  for (const i of [1, 2]) {
    const { room, id } = first.sentJson(i);
    first.reply(FrameType.JOIN_ROOM, { status: 'joined', room, members: 1, id });
  }
  await Promise.all(joins);

  const delays = [];
  c.on('reconnecting', ({ attempt, delayMs }) => delays.push({ attempt, delayMs }));
  first.end({ error: new Error('reset') });
  // Three attempts fail at once (connection refused), the fourth gets through.
  for (const n of [1, 2, 3]) (await s.connection(n)).end({ error: new Error('ECONNREFUSED') });
  const rejoined = next(c, 'rejoined');
  const open = next(c, 'open');
  const last = await s.connection(4);
  welcome(last);
  await new Promise((resolve) => setImmediate(resolve));
  const again = [1, 2].map((i) => last.sentJson(i));
  assert.deepEqual(again.map((j) => j.room).sort(), ['a', 'b']);
  for (const { room, id } of again) {
    if (room === 'a') last.reply(FrameType.JOIN_ROOM, { status: 'joined', room, members: 3, id });
    else last.reply(FrameType.ERROR, { code: 'FORBIDDEN', message: 'no', fatal: false, room, id });
  }
  const r = await rejoined;
  assert.deepEqual(r.rooms, [{ room: 'a', members: 3, epoch: undefined, seq: undefined, memberList: undefined }]);
  assert.equal(r.failed.length, 1);
  assert.equal(r.failed[0].room, 'b');
  assert.equal(r.failed[0].error.code, 'FORBIDDEN');
  assert.equal((await open).reconnected, true);
  assert.deepEqual([...c.rooms], ['a']);

  assert.deepEqual(delays.map((d) => d.attempt), [1, 2, 3, 4]);
  const ceilings = [4, 8, 16, 16];
  delays.forEach(({ delayMs }, i) => {
    assert.ok(delayMs >= ceilings[i] / 2 && delayMs <= ceilings[i], `attempt ${i + 1}: ${delayMs} ms`);
  });
  c.close();
});

test('after an open connection, the attempt count starts again from 1', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  const connected = c.connect();
  welcome(await s.connection(0));
  await connected;
  for (const n of [0, 1]) {
    const reconnecting = next(c, 'reconnecting');
    (await s.connection(n)).end({ error: new Error('reset') });
    assert.equal((await reconnecting).attempt, 1);
    const open = next(c, 'open');
    welcome(await s.connection(n + 1));
    await open;
  }
  c.close();
});

test('AUTH_FAILED after a reconnect closes the client instead of retrying', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  const connected = c.connect();
  welcome(await s.connection(0));
  await connected;
  (await s.connection(0)).end({ error: new Error('reset') });
  const second = await s.connection(1);
  second.open();
  const closed = next(c, 'close');
  second.reply(FrameType.ERROR, { code: 'AUTH_FAILED', message: 'authentication failed', fatal: true });
  second.end({});
  const { error } = await closed;
  assert.equal(error.code, 'AUTH_FAILED');
  assert.equal(c.state, 'closed');
  assert.equal(s.connections.length, 2);
});

test('a server that stops answering heartbeats is left, and the client reconnects', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, heartbeatIntervalMs: 20, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  const connected = c.connect();
  const conn = await s.connection(0);
  welcome(conn);
  await connected;
  const { error } = await next(c, 'reconnecting', () => true, 30_000);
  assert.equal(error.code, 'TIMEOUT');
  assert.match(error.message, /heartbeat/);
  assert.ok(conn.sent.some((f) => f.type === FrameType.HEARTBEAT));
  c.close();
});

test('pending requests are rejected when the connection is lost, with why', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, reconnect: false });
  const connected = c.connect();
  const conn = await s.connection(0);
  welcome(conn);
  await connected;
  const joining = c.join('a');
  await new Promise((resolve) => setImmediate(resolve));
  conn.reply(FrameType.ERROR, { code: 'SHUTTING_DOWN', message: 'bye', fatal: true, retryAfterMs: 1000 });
  conn.end({});
  await assert.rejects(joining, { code: 'SHUTTING_DOWN', fatal: true, retryAfterMs: 1000 });
  assert.equal(c.state, 'closed');
});

test('a JOIN that times out rejects with TIMEOUT and the connection carries on', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, reconnect: false, requestTimeoutMs: 20 });
  const connected = c.connect();
  welcome(await s.connection(0));
  await connected;
  await assert.rejects(c.join('slow'), { code: 'TIMEOUT', fatal: false });
  assert.equal(c.state, 'open');
  assert.deepEqual([...c.rooms], []);
  c.close();
});

// ---- rooms with an order (SPEC.md 5.11), and the original server (SPEC.md 8) ----

/** One frame's bytes for each object, joined: frames that arrive in one read. */
function frames(...list) {
  const parts = list.map(([type, object]) => encodeFrame(type, Flags.JSON, utf8.encode(JSON.stringify(object))));
  return new Uint8Array(parts.reduce((a, f) => [...a, ...f], []));
}

/** Lets the client's promise continuations run, so it sends what it means to. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Loses `conn`, then answers the next connection's HELLO; resolves with that connection. */
async function reconnectAfter(s, conn, n, helloExtra = {}) {
  conn.end({ error: new Error('reset') });
  const again = await s.connection(n);
  welcome(again, helloExtra);
  await settle();
  return again;
}

const ORIGINAL_HELLO = { status: 'connected', connectionId: 'c1' };

for (const [name, helloExtra] of [
  ['the original server (no maxFrameSize in HELLO)', { maxFrameSize: undefined, idleTimeoutMs: undefined }],
  ['a Relay server before 0.4 (JOIN answers without epoch)', {}],
]) {
  test(`${name}: no since on re-join, and no WHO, ack or direct message is sent`, async () => {
    const s = scripted({ messageFramed: false });
    const c = new RelayClient({ transport: s.connector, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
    const connected = c.connect();
    const conn = await s.connection(0);
    welcome(conn, helloExtra);
    await connected;
    const joining = c.join('a');
    await settle();
    const { id } = conn.sentJson(1);
    conn.raw(
      frames(
        [FrameType.JOIN_ROOM, { status: 'joined', room: 'a', members: 1, id }],
        [FrameType.MESSAGE, { room: 'a', from: 'c2', content: 1, timestamp: 1 }],
      ),
    );
    const answer = await joining;
    assert.equal(answer.epoch, undefined);
    assert.equal(c.position('a'), undefined);
    const sent = conn.sent.length;
    await assert.rejects(c.who('a'), { code: 'UNSUPPORTED', fromServer: false });
    await assert.rejects(c.publish('a', 1, { ack: true }), { code: 'UNSUPPORTED' });
    assert.throws(() => c.sendDirect({ toUser: 'bob' }, 1), { code: 'UNSUPPORTED' });
    await assert.rejects(c.join('b', { history: 5 }), { code: 'UNSUPPORTED' });
    assert.equal(conn.sent.length, sent, 'nothing more was sent');

    const again = await reconnectAfter(s, conn, 1, helloExtra);
    const rejoin = again.sentJson(1);
    assert.deepEqual(Object.keys(rejoin).sort(), ['id', 'room']);
    assert.equal(rejoin.room, 'a');
    c.close();
  });
}

test('the original HELLO answer alone is enough to send it no WHO', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, reconnect: false });
  const connected = c.connect();
  const conn = await s.connection(0);
  conn.open();
  conn.reply(FrameType.HELLO, ORIGINAL_HELLO);
  await connected;
  await assert.rejects(c.who('a'), { code: 'UNSUPPORTED' });
  assert.equal(conn.sent.length, 1);
  c.close();
});

test('positions: the JOIN answer, then each delivery in the same read; a re-join asks since the last', async () => {
  const s = scripted({ messageFramed: false });
  const c = new RelayClient({ transport: s.connector, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  const connected = c.connect();
  const conn = await s.connection(0);
  welcome(conn);
  await connected;
  const joining = c.join('a');
  await settle();
  const { id } = conn.sentJson(1);
  // The answer and two deliveries in one read: the position follows them before any promise continuation.
  conn.raw(
    frames(
      [FrameType.JOIN_ROOM, { status: 'joined', room: 'a', members: 1, id, epoch: 'E1', seq: 3, memberList: [{ connectionId: 'c1' }] }],
      [FrameType.MESSAGE, { room: 'a', from: 'c2', content: 'x', timestamp: 1, seq: 4, epoch: 'E1' }],
      [FrameType.MESSAGE, { room: 'a', from: 'c2', content: 'y', timestamp: 1, seq: 5, epoch: 'E1' }],
    ),
  );
  const answer = await joining;
  assert.deepEqual(answer.memberList, [{ connectionId: 'c1', user: undefined }]);
  assert.deepEqual(c.position('a'), { epoch: 'E1', seq: 5 });
  // A delivery for a room not joined moves nothing.
  conn.reply(FrameType.MESSAGE, { room: 'b', from: 'c2', content: 'z', timestamp: 1, seq: 9, epoch: 'E9' });
  assert.equal(c.position('b'), undefined);

  const again = await reconnectAfter(s, conn, 1);
  const rejoin = again.sentJson(1);
  assert.deepEqual(rejoin.since, { epoch: 'E1', seq: 5 });
  const gaps = [];
  c.on('gap', (g) => gaps.push(g));
  const got = [];
  c.on('message', (m) => got.push(m.seq));
  again.raw(
    frames(
      [FrameType.JOIN_ROOM, { status: 'joined', room: 'a', members: 2, id: rejoin.id, epoch: 'E1', seq: 9 }],
      [FrameType.MESSAGE, { type: 'gap', room: 'a', epoch: 'E1', from: 6, to: 7 }],
      [FrameType.MESSAGE, { room: 'a', from: 'c2', content: 8, timestamp: 1, seq: 8, epoch: 'E1' }],
    ),
  );
  assert.deepEqual(gaps, [{ room: 'a', epoch: 'E1', from: 6, to: 7, previousEpoch: undefined }]);
  assert.deepEqual(got, [8]);
  assert.deepEqual(c.position('a'), { epoch: 'E1', seq: 8 });
  c.close();
});

test('a join with history starts the position where the replay does; recover: false re-joins plainly', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, recover: false, reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  const connected = c.connect();
  const conn = await s.connection(0);
  welcome(conn);
  await connected;
  const joining = c.join('a', { history: 4 });
  await settle();
  const request = conn.sentJson(1);
  assert.equal(request.history, 4);
  conn.reply(FrameType.JOIN_ROOM, { status: 'joined', room: 'a', members: 1, id: request.id, epoch: 'E', seq: 10 });
  await joining;
  assert.deepEqual(c.position('a'), { epoch: 'E', seq: 6 });
  const again = await reconnectAfter(s, conn, 1);
  assert.equal(again.sentJson(1).since, undefined);
  c.close();
});

test('an ack resolves the publish by id; malformed gaps and sequenced binaries are PROTOCOL_ERROR', async () => {
  const s = scripted();
  const c = new RelayClient({ transport: s.connector, binarySeq: true, memberEvents: false, reconnect: false });
  const connected = c.connect();
  const conn = await s.connection(0);
  conn.open();
  const hello = conn.sentJson(0);
  assert.equal(hello.binarySeq, true);
  assert.equal(hello.memberEvents, false);
  conn.reply(FrameType.HELLO, { status: 'connected', connectionId: 'c1', maxFrameSize: 1048576, id: hello.id });
  await connected;
  const acked = c.publish('a', 'hi', { ack: true });
  const sent = conn.sentJson(1);
  assert.equal(sent.ack, true);
  conn.reply(FrameType.MESSAGE, { type: 'ack', room: 'a', id: sent.id, seq: 58, epoch: 'E', members: 3 });
  assert.deepEqual(await acked, { room: 'a', seq: 58, epoch: 'E', members: 3 });

  // room "test", from "c5", seq 58, epoch "9f86d081884c7d65", body 00 01 fe ff (SPEC.md 3.10).
  const vector = Uint8Array.from(
    '04 74 65 73 74 02 63 35 00 00 00 00 00 00 00 3a 10 39 66 38 36 64 30 38 31 38 38 34 63 37 64 36 35 00 01 fe ff'
      .split(' ')
      .map((h) => parseInt(h, 16)),
  );
  const message = next(c, 'message');
  conn.raw(encodeFrame(FrameType.MESSAGE, Flags.BINARY, vector));
  const m = await message;
  assert.deepEqual([m.room, m.from, m.seq, m.epoch, [...m.data]], ['test', 'c5', 58, '9f86d081884c7d65', [0, 1, 0xfe, 0xff]]);

  const closed = next(c, 'close');
  conn.raw(encodeFrame(FrameType.MESSAGE, Flags.BINARY, vector.subarray(0, 20)));
  assert.equal((await closed).error.code, 'PROTOCOL_ERROR');

  const s2 = scripted();
  const c2 = new RelayClient({ transport: s2.connector, reconnect: false });
  const connected2 = c2.connect();
  const conn2 = await s2.connection(0);
  welcome(conn2);
  await connected2;
  const closed2 = next(c2, 'close');
  conn2.reply(FrameType.MESSAGE, { type: 'gap', room: 'a', epoch: 'E', from: 9, to: 3 });
  assert.equal((await closed2).error.code, 'PROTOCOL_ERROR');
});
