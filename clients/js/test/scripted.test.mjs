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
  assert.deepEqual(await joining, { room: 'a', members: undefined });
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
  assert.deepEqual(r.rooms, [{ room: 'a', members: 3 }]);
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
