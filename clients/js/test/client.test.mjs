// The client against the real relay-server, over TCP and (where the server
// has --ws-addr) WebSocket. Every wait is on an event, with a timeout.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

import { RelayClient, RelayError, webSocket, tcp } from '../dist/node.js';
import { CLI_BIN, WAIT_MS, next, startServer, withTimeout } from '../testing/server.mjs';

/** The transports to run every test over, each a function of the running server. */
const TRANSPORTS = {
  tcp: (server) => tcp({ host: server.addr.host, port: server.addr.port }),
  ws: (server) => webSocket(`ws://${server.ws.host}:${server.ws.port}/`, { WebSocket }),
};

const clients = [];

/** A client that the test's end closes. */
function client(connector, options = {}) {
  const c = new RelayClient({ transport: connector, requestTimeoutMs: WAIT_MS, ...options });
  clients.push(c);
  return c;
}

async function closeAll() {
  for (const c of clients.splice(0)) c.close();
}

for (const [kind, transport] of Object.entries(TRANSPORTS)) {
  describe(`over ${kind}`, () => {
    let server;
    before(async () => {
      server = await startServer(['--ws-addr', '127.0.0.1:0']);
    });
    after(async () => {
      await closeAll();
      await server?.stop();
    });

    test('HELLO: connect resolves with the answer, and the state goes connecting → open', async () => {
      const c = client(transport(server), { userId: 'ann' });
      const states = [];
      c.on('state', ({ state }) => states.push(state));
      const hello = await c.connect();
      assert.match(hello.connectionId, /^c\d+$/);
      assert.equal(hello.maxFrameSize, 1048576);
      assert.equal(hello.idleTimeoutMs, 60000);
      assert.equal(typeof hello.stats?.connections, 'number');
      assert.deepEqual(states, ['connecting', 'open']);
      assert.equal(c.state, 'open');
      assert.equal(c.hello, hello);
    });

    test('join and leave resolve with their answers; the other member sees both', async () => {
      const ann = client(transport(server), { userId: 'ann' });
      const bob = client(transport(server), { userId: 'bob' });
      await Promise.all([ann.connect(), bob.connect()]);
      const first = await ann.join('  physics\t');
      assert.equal(first.room, 'physics');
      assert.equal(first.members, 1);
      assert.deepEqual(first.memberList, [{ connectionId: ann.hello.connectionId, user: 'ann' }]);
      assert.match(first.epoch, /^[0-9A-Za-z_.:-]{1,32}$/);
      assert.equal(first.seq, 0);
      const joined = next(ann, 'memberJoined');
      const second = await bob.join('physics');
      assert.equal(second.room, 'physics');
      assert.equal(second.members, 2);
      assert.equal(second.epoch, first.epoch);
      const event = await joined;
      assert.equal(event.room, 'physics');
      assert.equal(event.user, 'bob');
      assert.equal(event.connectionId, bob.hello.connectionId);
      assert.deepEqual([...ann.rooms], ['physics']);

      const left = next(ann, 'memberLeft');
      assert.deepEqual(await bob.leave('physics'), { room: 'physics', members: 1 });
      assert.equal((await left).connectionId, bob.hello.connectionId);
      assert.deepEqual([...bob.rooms], []);
    });

    test('JSON and binary messages between two clients, byte for byte', async () => {
      const ann = client(transport(server), { userId: 'ann' });
      const bob = client(transport(server));
      await Promise.all([ann.connect(), bob.connect()]);
      await ann.join('chat');
      await bob.join('chat');

      const content = { text: 'héllo ☕', n: [1, 2.5, true, null], nested: { deep: [] } };
      const json = next(bob, 'message');
      ann.publish('chat', content);
      const got = await json;
      assert.equal(got.kind, 'json');
      assert.deepEqual(got.content, content);
      assert.equal(got.room, 'chat');
      assert.equal(got.from, ann.hello.connectionId);
      assert.equal(got.user, 'ann');
      assert.equal(typeof got.timestamp, 'number');

      const bytes = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
      const binary = next(ann, 'message');
      bob.publishBinary('chat', bytes);
      const gotBinary = await binary;
      assert.equal(gotBinary.kind, 'binary');
      assert.equal(gotBinary.room, 'chat');
      assert.equal(gotBinary.from, bob.hello.connectionId);
      assert.deepEqual([...gotBinary.data], [...bytes]);
    });

    test('echo: a client that asks gets its own messages', async () => {
      const ann = client(transport(server), { echo: true });
      await ann.connect();
      await ann.join('mirror');
      const copy = next(ann, 'message');
      ann.publish('mirror', 'me');
      assert.equal((await copy).content, 'me');
    });

    test('non-fatal errors: a refused join rejects, a refused publish is an error event', async () => {
      const c = client(transport(server));
      await c.connect();
      await assert.rejects(c.join('   '), (e) => e instanceof RelayError && e.code === 'INVALID_ROOM' && e.fatal === false && e.fromServer);
      await assert.rejects(c.join('x'.repeat(65)), { code: 'INVALID_ROOM', fatal: false });

      const refused = next(c, 'error');
      const id = c.publish('nowhere', 1);
      const error = await refused;
      assert.equal(error.code, 'NOT_IN_ROOM');
      assert.equal(error.fatal, false);
      assert.equal(error.room, 'nowhere');
      assert.equal(error.requestId, id);
      // The connection carries on.
      assert.equal(c.state, 'open');
      const answer = await c.join('somewhere');
      assert.equal(answer.room, 'somewhere');
      assert.equal(answer.members, 1);
    });

    test('a message over maxFrameSize is refused before it is sent', async () => {
      const c = client(transport(server));
      await c.connect();
      await c.join('big');
      assert.throws(() => c.publishBinary('big', new Uint8Array(1048576)), { code: 'FRAME_TOO_LARGE' });
      assert.equal(c.state, 'open');
    });

    test('heartbeat: ping measures the round trip, and the timer reports it', async () => {
      const c = client(transport(server), { heartbeatIntervalMs: 50 });
      await c.connect();
      const rtt = await c.ping();
      assert.ok(rtt >= 0 && rtt < WAIT_MS, `rtt ${rtt}`);
      const beat = await next(c, 'heartbeat');
      assert.ok(beat.rttMs >= 0);
      assert.equal(typeof c.rttMs, 'number');
    });

    test('publish while not open throws NOT_CONNECTED', async () => {
      const c = client(transport(server));
      assert.throws(() => c.publish('r', 1), { code: 'NOT_CONNECTED' });
      await c.connect();
      c.close();
      assert.equal(c.state, 'closed');
      assert.throws(() => c.publish('r', 1), { code: 'NOT_CONNECTED' });
      await assert.rejects(c.join('r'), { code: 'NOT_CONNECTED' });
    });
  });
}

describe('authentication', () => {
  let server;
  let dir;
  const token = randomBytes(24).toString('hex');
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'relay-js-'));
    const file = path.join(dir, 'tokens');
    writeFileSync(file, `${token} carol join=lobby publish=\n`);
    server = await startServer(['--ws-addr', '127.0.0.1:0', '--auth-tokens', file]);
  });
  after(async () => {
    await closeAll();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [kind, transport] of Object.entries(TRANSPORTS)) {
    test(`over ${kind}: a wrong token is a fatal AUTH_FAILED, and the client is closed`, async () => {
      const c = client(transport(server), { token: 'not-the-token' });
      const closed = next(c, 'close');
      await assert.rejects(c.connect(), (e) => {
        assert.ok(e instanceof RelayError);
        assert.equal(e.code, 'AUTH_FAILED');
        assert.equal(e.fatal, true);
        assert.equal(e.fromServer, true);
        return true;
      });
      assert.equal((await closed).error.code, 'AUTH_FAILED');
      assert.equal(c.state, 'closed');
    });

    test(`over ${kind}: the right token names the user; its permissions refuse with FORBIDDEN`, async () => {
      const c = client(transport(server), { token: () => token });
      await c.connect();
      await c.join('lobby');
      await assert.rejects(c.join('elsewhere'), { code: 'FORBIDDEN', fatal: false, room: 'elsewhere' });
      const refused = next(c, 'error');
      c.publish('lobby', 'hi');
      const error = await refused;
      assert.equal(error.code, 'FORBIDDEN');
      assert.equal(error.room, 'lobby');
    });
  }
});

describe('reconnecting', () => {
  for (const [kind, transport] of Object.entries(TRANSPORTS)) {
    test(`over ${kind}: after the server restarts on the same ports, the clients re-join and talk`, async () => {
      let server = await startServer(['--ws-addr', '127.0.0.1:0', '--drain-timeout', '0']);
      const { addr, ws } = server;
      try {
        const options = { reconnect: { initialDelayMs: 50, maxDelayMs: 500 }, userId: 'r' };
        const ann = client(transport(server), options);
        const bob = client(transport(server), options);
        await Promise.all([ann.connect(), bob.connect()]);
        await ann.join('lobby');
        await ann.join('attic');
        await bob.join('lobby');

        const states = [];
        ann.on('state', ({ state }) => states.push(state));
        const reconnecting = next(ann, 'reconnecting');
        const rejoinedAnn = next(ann, 'rejoined');
        const rejoinedBob = next(bob, 'rejoined');
        await server.stop();
        const why = await reconnecting;
        assert.equal(why.error.code, 'SHUTTING_DOWN');
        assert.ok(why.delayMs >= 1000, `retryAfterMs is honoured: ${why.delayMs}`);
        assert.equal(ann.state, 'reconnecting');

        server = await startServer([
          '--addr', `${addr.host}:${addr.port}`,
          '--ws-addr', `${ws.host}:${ws.port}`,
        ]);
        const again = await rejoinedAnn;
        assert.deepEqual(again.rooms.map((r) => r.room).sort(), ['attic', 'lobby']);
        assert.deepEqual(again.failed, []);
        await rejoinedBob;
        await withTimeout(
          new Promise((resolve) => (ann.state === 'open' ? resolve() : ann.once('open', resolve))),
          WAIT_MS,
          'open',
        );
        assert.deepEqual(states.slice(0, 1), ['reconnecting']);
        assert.equal(states.at(-1), 'open');

        const got = next(bob, 'message');
        ann.publish('lobby', 'back');
        assert.equal((await got).content, 'back');
      } finally {
        await closeAll();
        await server.stop();
      }
    });
  }

  test('the first connection failing rejects connect(), without retrying', async () => {
    const server = await startServer();
    const port = server.addr.port;
    await server.stop();
    const c = client(tcp({ port }));
    await assert.rejects(c.connect(), { code: 'CONNECT_FAILED', fatal: true });
    assert.equal(c.state, 'closed');
  });
});

describe('a TCP client (the relay CLI) and JS clients share a room', () => {
  let server;
  before(async () => {
    server = await startServer(['--ws-addr', '127.0.0.1:0']);
  });
  after(async () => {
    await closeAll();
    await server?.stop();
  });

  test('each sees the others\' messages', async () => {
    const overWs = client(TRANSPORTS.ws(server), { userId: 'web' });
    const overTcp = client(TRANSPORTS.tcp(server), { userId: 'node' });
    await Promise.all([overWs.connect(), overTcp.connect()]);
    await overWs.join('mixed');
    await overTcp.join('mixed');

    const cli = spawn(CLI_BIN, [server.addr.host, String(server.addr.port), '--name', 'cli'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    const out = [];
    const lines = createInterface({ input: cli.stdout });
    const waiters = [];
    lines.on('line', (line) => {
      out.push(line);
      for (const w of [...waiters]) if (line.includes(w.text)) w.resolve(line);
    });
    const printed = (text) =>
      withTimeout(
        new Promise((resolve) => {
          if (out.some((l) => l.includes(text))) resolve();
          else waiters.push({ text, resolve });
        }),
        WAIT_MS,
        `the CLI to print "${text}" (it printed: ${JSON.stringify(out)})`,
      );
    try {
      const cliJoined = next(overWs, 'memberJoined', (e) => e.user === 'cli');
      cli.stdin.write('/join mixed\n');
      await cliJoined;

      const fromCliWs = next(overWs, 'message', (m) => m.user === 'cli');
      const fromCliTcp = next(overTcp, 'message', (m) => m.user === 'cli');
      cli.stdin.write('/send hello from the cli\n');
      assert.equal((await fromCliWs).content, 'hello from the cli');
      assert.equal((await fromCliTcp).content, 'hello from the cli');

      const atTcp = next(overTcp, 'message', (m) => m.user === 'web');
      overWs.publish('mixed', 'hello from websocket');
      overTcp.publish('mixed', 'hello from node tcp');
      await printed('hello from websocket');
      await printed('hello from node tcp');
      assert.equal((await atTcp).content, 'hello from websocket');
    } finally {
      cli.stdin.end();
      const exit = new Promise((resolve) => cli.once('exit', resolve));
      await withTimeout(exit, WAIT_MS, 'the CLI to exit').catch(() => cli.kill('SIGKILL'));
    }
  });
});
