/**
 * The TCP transport for Node (`node:net`): the frames as a byte stream,
 * exactly as SPEC.md section 1 describes them.
 */

import { createConnection, type Socket } from 'node:net';

import type { Connector, Transport, TransportHandler } from './transport.js';

export interface TcpOptions {
  host?: string;
  /** The server's `--addr` port (4000 by default). */
  port: number;
}

/** How long a FIN sent by `close()` may wait for the server's before the socket is destroyed. */
const CLOSE_GRACE_MS = 2000;

/** Connects to a Relay server's plain TCP port. */
export function tcp(options: TcpOptions): Connector {
  return (handler) => new TcpTransport(options, handler);
}

class TcpTransport implements Transport {
  readonly messageFramed = false;
  private socket: Socket;

  constructor(options: TcpOptions, handler: TransportHandler) {
    let failure: Error | undefined;
    this.socket = createConnection({ host: options.host ?? '127.0.0.1', port: options.port });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => handler.open());
    this.socket.on('data', (chunk: Buffer) => handler.data(chunk));
    this.socket.on('error', (error) => {
      failure = error;
    });
    // 'close' comes once, after 'error' if there was one.
    this.socket.on('close', () => handler.closed({ error: failure }));
    // The server half-closes after a fatal ERROR; finish our side too.
    this.socket.on('end', () => this.socket.end());
  }

  get bufferedAmount(): number {
    return this.socket.writableLength;
  }

  send(frame: Uint8Array): void {
    this.socket.write(frame);
  }

  close(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
  }
}
