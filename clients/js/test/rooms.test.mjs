// Rooms with an order (SPEC.md 5.11, 3.13–3.16) against the real
// relay-server: recovery across a cut, gap notices, acks, WHO, member lists,
// direct messages. Connections go through a proxy the test can cut and
// hold shut; every wait is on an event, with a timeout.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { RelayClient, RelayError, tcp } from '../dist/node.js';
import { WAIT_MS, next, startServer, withTimeout } from '../testing/server.mjs';
import { startProxy } from '../testing/proxy.mjs';

const cleanup = [];
after(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function server(args) {
  const s = await startServer(args);
  // Killed, not drained: a drain spreads the closing of connections still open over seconds.
  cleanup.push(() => s.kill());
  return s;
}

async function proxyTo(s) {
  const p = await startProxy(s.addr);
  cleanup.push(() => p.close());
  return p;
}

/** A connected client on `port`; quick retries, so a held proxy is tried often. */
async function connect(port, options = {}) {
  const c = new RelayClient({
    transport: tcp({ host: '127.0.0.1', port }),
    requestTimeoutMs: WAIT_MS,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    ...options,
  });
  cleanup.push(() => c.close());
  await c.connect();
  return c;
}

/** Resolves once `check()` is true, re-checked on each `event` of `emitter`. */
function until(emitter, event, check, what) {
  if (check()) return Promise.resolve();
  let off;
  const done = new Promise((resolve) => {
    off = emitter.on(event, () => {
      if (check()) resolve();
    });
  });
  return withTimeout(done, WAIT_MS, what).finally(() => off());
}

/** Every message and gap `c` receives in `room`, in order. */
function record(c, room) {
  const seen = [];
  c.on('message', (m) => {
    if (m.room === room) seen.push({ seq: m.seq, epoch: m.epoch, content: m.content });
  });
  c.on('gap', (g) => {
    if (g.room === room) seen.push({ gap: g });
  });
  return seen;
}

describe('recovery', () => {
  test('a connection cut while a room is busy re-joins with since: every message once, in order, no gap', async () => {
    const s = await server(['--history-messages', '100000']);
    const proxy = await proxyTo(s);
    const reader = await connect(proxy.port, { userId: 'reader' });
    const writer = await connect(s.addr.port, { userId: 'writer' });
    await reader.join('busy');
    await writer.join('busy');
    const seen = record(reader, 'busy');
    // Cut the reader's connection as soon as the 100th message arrives: in the middle of the stream.
    let cutDone = false;
    reader.on('message', () => {
      if (!cutDone && seen.length >= 100) {
        cutDone = true;
        proxy.cut();
      }
    });
    const reconnecting = next(reader, 'reconnecting');
    const rejoined = next(reader, 'rejoined');
    let last;
    for (let i = 1; i <= 600; i++) {
      // An ack now and then paces the writer by the server, not by a clock.
      if (i % 50 === 0) last = await writer.publish('busy', i, { ack: true });
      else writer.publish('busy', i);
      if (i === 300) await reconnecting;
    }
    const { rooms } = await rejoined;
    assert.equal(rooms[0].room, 'busy');
    await until(reader, 'message', () => reader.position('busy')?.seq === last.seq, 'the reader to reach the last seq');
    assert.equal(last.seq, 600);
    assert.ok(!seen.some((e) => e.gap), 'no gap: the server kept everything');
    assert.deepEqual(
      seen.map((e) => e.seq),
      Array.from({ length: 600 }, (_, i) => i + 1),
      'every seq exactly once, in order',
    );
    assert.deepEqual(
      seen.map((e) => e.content),
      Array.from({ length: 600 }, (_, i) => i + 1),
    );
    assert.ok(seen.every((e) => e.epoch === last.epoch));
  });

  test('with recover: false the re-join asks for nothing, and what was missed stays missed', async () => {
    const s = await server(['--history-messages', '1000']);
    const proxy = await proxyTo(s);
    const reader = await connect(proxy.port, { recover: false });
    const writer = await connect(s.addr.port);
    await reader.join('r');
    await writer.join('r');
    const seen = record(reader, 'r');
    proxy.held = true;
    const reconnecting = next(reader, 'reconnecting');
    proxy.cut();
    await reconnecting;
    for (let i = 1; i < 5; i++) writer.publish('r', i);
    await writer.publish('r', 5, { ack: true });
    const rejoined = next(reader, 'rejoined');
    proxy.held = false;
    await rejoined;
    const ack = await writer.publish('r', 6, { ack: true });
    await until(reader, 'message', () => seen.length === 1, 'the live message');
    assert.deepEqual(seen, [{ seq: ack.seq, epoch: ack.epoch, content: 6 }]);
  });

  test('history too short: a gap notice names exactly the missed range, before the kept messages', async () => {
    const s = await server(['--history-messages', '5']);
    const proxy = await proxyTo(s);
    const reader = await connect(proxy.port);
    const writer = await connect(s.addr.port);
    await reader.join('short');
    await writer.join('short');
    const seen = record(reader, 'short');
    await writer.publish('short', 1, { ack: true });
    await until(reader, 'message', () => seen.length === 1, 'the first message');
    proxy.held = true;
    const reconnecting = next(reader, 'reconnecting');
    proxy.cut();
    await reconnecting;
    for (let i = 2; i < 20; i++) writer.publish('short', i);
    const last = await writer.publish('short', 20, { ack: true });
    proxy.held = false;
    await until(reader, 'message', () => reader.position('short')?.seq === 20, 'the reader to recover');
    assert.deepEqual(seen, [
      { seq: 1, epoch: last.epoch, content: 1 },
      { gap: { room: 'short', epoch: last.epoch, from: 2, to: 15, previousEpoch: undefined } },
      ...[16, 17, 18, 19, 20].map((n) => ({ seq: n, epoch: last.epoch, content: n })),
    ]);
  });

  test('an explicit join with since or history replays, with a gap for what is gone', async () => {
    const s = await server(['--history-messages', '5']);
    const writer = await connect(s.addr.port);
    const { epoch } = await writer.join('past');
    for (let i = 1; i < 8; i++) writer.publish('past', i);
    await writer.publish('past', 8, { ack: true });

    const a = await connect(s.addr.port);
    const seenA = record(a, 'past');
    const answer = await a.join('past', { since: { epoch, seq: 2 } });
    assert.equal(answer.seq, 8);
    await until(a, 'message', () => a.position('past')?.seq === 8, 'the replay');
    assert.deepEqual(seenA, [
      { gap: { room: 'past', epoch, from: 3, to: 3, previousEpoch: undefined } },
      ...[4, 5, 6, 7, 8].map((n) => ({ seq: n, epoch, content: n })),
    ]);

    const b = await connect(s.addr.port);
    const seenB = record(b, 'past');
    await b.join('past', { history: 2 });
    await until(b, 'message', () => seenB.length === 2, 'the last two');
    assert.deepEqual(seenB.map((e) => e.seq), [7, 8]);
    assert.deepEqual(b.position('past'), { epoch, seq: 8 });

    await assert.rejects(b.join('past2', { history: 1, since: { epoch, seq: 1 } }), TypeError);
  });

  test('a restarted server: the gap names the previous epoch, and the new epoch is replayed', async () => {
    const first = await server(['--history-messages', '100']);
    const proxy = await proxyTo(first);
    const reader = await connect(proxy.port);
    const writer = await connect(first.addr.port);
    const { epoch: old } = await reader.join('news');
    await writer.join('news');
    const seen = record(reader, 'news');
    writer.publish('news', 'a');
    await writer.publish('news', 'b', { ack: true });
    await until(reader, 'message', () => seen.length === 2, 'the first epoch');
    proxy.held = true;
    const reconnecting = next(reader, 'reconnecting');
    await first.kill();
    await reconnecting;

    const second = await server(['--history-messages', '100']);
    proxy.upstream = second.addr;
    const writer2 = await connect(second.addr.port);
    const { epoch: now } = await writer2.join('news');
    assert.notEqual(now, old);
    writer2.publish('news', 'c');
    await writer2.publish('news', 'd', { ack: true });
    proxy.held = false;
    await until(reader, 'message', () => seen.length === 5, 'the new epoch');
    assert.deepEqual(seen.slice(2), [
      { gap: { room: 'news', epoch: now, from: undefined, to: undefined, previousEpoch: old } },
      { seq: 1, epoch: now, content: 'c' },
      { seq: 2, epoch: now, content: 'd' },
    ]);
    assert.deepEqual(reader.position('news'), { epoch: now, seq: 2 });
  });
});

describe('presence, acks and direct messages', () => {
  let s;
  test('start', async () => {
    s = await server([]);
  });

  test('an ack carries the seq and the members queued for; a refused one rejects', async () => {
    const ann = await connect(s.addr.port, { userId: 'ann' });
    const bob = await connect(s.addr.port, { userId: 'bob' });
    const { epoch } = await ann.join('acks');
    await bob.join('acks');
    const delivered = next(bob, 'message');
    const ack = await ann.publish('acks', 'one', { ack: true });
    assert.deepEqual(ack, { room: 'acks', seq: 1, epoch, members: 1 });
    const m = await delivered;
    assert.equal(m.seq, 1);
    assert.equal(m.epoch, epoch);
    await assert.rejects(
      ann.publish('elsewhere', 'x', { ack: true }),
      (e) => e instanceof RelayError && e.code === 'NOT_IN_ROOM' && !e.fatal,
    );
  });

  test('the JOIN answer lists members who joined before; WHO lists them to anyone', async () => {
    const ann = await connect(s.addr.port, { userId: 'ann' });
    const bob = await connect(s.addr.port);
    const cat = await connect(s.addr.port, { userId: 'cat' });
    await ann.join('who');
    await bob.join('who');
    const answer = await cat.join('who');
    assert.equal(answer.members, 3);
    assert.deepEqual(answer.memberList, [
      { connectionId: ann.hello.connectionId, user: 'ann' },
      { connectionId: bob.hello.connectionId, user: undefined },
      { connectionId: cat.hello.connectionId, user: 'cat' },
    ]);
    const outsider = await connect(s.addr.port);
    const who = await outsider.who(' who ');
    assert.deepEqual(who, { room: 'who', members: 3, memberList: answer.memberList });
    assert.deepEqual(await outsider.who('empty'), { room: 'empty', members: 0, memberList: [] });
    await assert.rejects(outsider.who(''), { code: 'INVALID_ROOM', fatal: false });
  });

  test('memberEvents: false hears no userJoined, but still the messages', async () => {
    const quiet = await connect(s.addr.port, { memberEvents: false });
    const loud = await connect(s.addr.port);
    const events = [];
    quiet.on('memberJoined', (e) => events.push(e));
    await quiet.join('quiet');
    const heard = next(loud, 'memberJoined');
    const other = await connect(s.addr.port);
    await loud.join('quiet');
    await other.join('quiet');
    await heard;
    const message = next(quiet, 'message');
    other.publish('quiet', 'after the joins');
    assert.equal((await message).content, 'after the joins');
    assert.deepEqual(events, [], 'an event would have come before the message');
  });

  test('direct messages reach a user or a connection; NOT_FOUND when none is connected', async () => {
    const ann = await connect(s.addr.port, { userId: 'ann' });
    const bob1 = await connect(s.addr.port, { userId: 'bob' });
    const bob2 = await connect(s.addr.port, { userId: 'bob' });
    const both = Promise.all([next(bob1, 'direct'), next(bob2, 'direct')]);
    ann.sendDirect({ toUser: 'bob' }, { text: 'psst' });
    for (const d of await both) {
      assert.deepEqual(d.content, { text: 'psst' });
      assert.equal(d.from, ann.hello.connectionId);
      assert.equal(d.user, 'ann');
      assert.equal(typeof d.timestamp, 'number');
    }
    const one = next(bob2, 'direct');
    bob1.sendDirect({ toConnection: bob2.hello.connectionId }, 'just you');
    assert.equal((await one).content, 'just you');

    const refused = next(ann, 'error');
    const id = ann.sendDirect({ toUser: 'nobody' }, 1);
    const error = await refused;
    assert.equal(error.code, 'NOT_FOUND');
    assert.equal(error.fatal, false);
    assert.equal(error.requestId, id);
    assert.throws(() => ann.sendDirect({}, 1), TypeError);
  });

  test('binarySeq: binary deliveries carry seq and epoch; without it they do not', async () => {
    const withSeq = await connect(s.addr.port, { binarySeq: true });
    const without = await connect(s.addr.port);
    const writer = await connect(s.addr.port);
    const { epoch } = await withSeq.join('bin');
    await without.join('bin');
    await writer.join('bin');
    writer.publish('bin', 'first');
    const a = next(withSeq, 'message', (m) => m.kind === 'binary');
    const b = next(without, 'message', (m) => m.kind === 'binary');
    writer.publishBinary('bin', new Uint8Array([0, 1, 0xfe, 0xff]));
    const [ma, mb] = await Promise.all([a, b]);
    assert.deepEqual([...ma.data], [0, 1, 0xfe, 0xff]);
    assert.equal(ma.seq, 2);
    assert.equal(ma.epoch, epoch);
    assert.deepEqual([...mb.data], [0, 1, 0xfe, 0xff]);
    assert.equal(mb.seq, undefined);
    assert.deepEqual(withSeq.position('bin'), { epoch, seq: 2 });
  });
});
