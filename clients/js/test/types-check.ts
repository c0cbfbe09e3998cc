// Compiled, never run (`npm test` type-checks it first): the README's
// examples must type-check for TypeScript users, the `ws` package's
// WebSocket class included.

import WebSocket from 'ws';

import { RelayClient, RelayError, webSocket, type Ack, type Gap, type Message, type WhoAnswer } from '../src/index.js';
import { tcp } from '../src/node.js';

const overWs = new RelayClient({ transport: webSocket('ws://127.0.0.1:4001/', { WebSocket }), userId: 'ann' });
const overTcp = new RelayClient({ transport: tcp({ host: '127.0.0.1', port: 4000 }), token: async () => 'token' });

overWs.on('message', (m: Message) => {
  if (m.kind === 'json') console.log(m.room, m.user ?? m.from, m.content, m.timestamp);
  else console.log(m.room, m.from, m.data.byteLength);
});
overTcp.on('state', ({ state, previous }) => console.log(previous, '→', state));
overTcp.on('reconnecting', ({ attempt, delayMs, error }) => console.log(attempt, delayMs, error.code));
overTcp.on('rejoined', ({ rooms, failed }) => console.log(rooms.map((r) => r.room), failed.length));
overTcp.on('error', (e: RelayError) => console.log(e.code, e.fatal, e.room, e.requestId, e.detail));

export async function example(): Promise<void> {
  const hello = await overWs.connect();
  console.log(hello.connectionId, hello.maxFrameSize);
  const { room, members } = await overWs.join('lobby');
  console.log(room, members);
  const id = overWs.publish('lobby', { text: 'hello' });
  overWs.publishBinary('lobby', new Uint8Array([0, 1, 254, 255]));
  console.log(id, await overWs.ping());
  try {
    await overWs.join('secret');
  } catch (e) {
    if (e instanceof RelayError && e.code === 'FORBIDDEN') console.log(e.detail);
  }
  overWs.close();
}

export async function rooms(client: RelayClient): Promise<void> {
  client.on('gap', (g: Gap) => {
    if (g.from !== undefined && g.to !== undefined) console.log(`[${g.room}] ${g.to - g.from + 1} messages missed`);
    if (g.previousEpoch !== undefined) console.log(g.room, g.previousEpoch, '→', g.epoch);
  });
  client.on('direct', (d) => console.log(d.user ?? d.from, d.content, d.timestamp));
  client.on('message', (m) => console.log(m.seq, m.epoch));
  const joined = await client.join('news', { history: 50 });
  console.log(joined.epoch, joined.seq, joined.members, joined.memberList?.map((m) => m.user ?? m.connectionId));
  await client.join('news', { since: { epoch: 'e', seq: 41 } });
  const ack: Ack = await client.publish('news', { text: 'hi' }, { ack: true });
  const id: string | number = client.publish('news', 'no ack');
  console.log(ack.seq, ack.members, id, client.position('news')?.seq);
  const who: WhoAnswer = await client.who('news');
  console.log(who.members, who.memberList.length);
  client.sendDirect({ toUser: 'bob' }, { text: 'psst' });
  client.sendDirect({ toConnection: 'c5' }, 1);
}
