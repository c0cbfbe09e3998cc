// A TCP proxy in front of a relay-server that a test can cut, hold shut and
// point at another server: a dropped network and a restart at the same
// address, without port reuse or fixed sleeps.

import net from 'node:net';

/**
 * Listens on 127.0.0.1:0 and forwards each connection to `upstream`
 * (`{ host, port }`, changeable). `cut()` ends every forwarded connection;
 * while `held`, new connections are refused (closed at once).
 */
export async function startProxy(upstream) {
  const pairs = new Set();
  const proxy = {
    upstream,
    held: false,
    port: 0,
    /** Connections forwarded so far. */
    accepted: 0,
    cut() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    close() {
      proxy.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  const server = net.createServer((down) => {
    if (proxy.held) {
      down.destroy();
      return;
    }
    proxy.accepted += 1;
    const up = net.connect(proxy.upstream.port, proxy.upstream.host);
    const pair = [down, up];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = server.address().port;
  return proxy;
}
