/**
 * The WebSocket transport: one binary message per frame, both ways
 * (SPEC.md 13). Works with a browser's WebSocket, Node
 * 22's global one, or any constructor with the same API (the `ws` package
 * on Node 20).
 */

import type { Connector, Transport, TransportHandler } from './transport.js';

/**
 * The part of the WHATWG WebSocket API the transport uses. The handlers'
 * events are `any` so that implementations with richer event types (the
 * `ws` package's) fit; the transport reads only `data`, `code` and `reason`.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly bufferedAmount: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket class: the browser's, Node 22's, or the `ws` package's. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface WebSocketOptions {
  /**
   * The WebSocket class. Default: the global `WebSocket` (browsers, Node
   * 22 and later). On Node 20 pass the `ws` package's: `{ WebSocket }`.
   */
  WebSocket?: WebSocketConstructor;
}

/**
 * Connects to `url` (`ws://host:port/` or `wss://...`). Throws a
 * `TypeError` at once when there is no WebSocket class to use.
 */
export function webSocket(url: string | URL, options: WebSocketOptions = {}): Connector {
  const Ctor =
    options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (Ctor === undefined) {
    throw new TypeError(
      'no WebSocket class: this runtime has no global WebSocket; pass one, e.g. webSocket(url, { WebSocket }) with WebSocket from the "ws" package',
    );
  }
  const href = String(url);
  return (handler) => new WebSocketTransport(new Ctor(href), handler);
}

class WebSocketTransport implements Transport {
  readonly messageFramed = true;
  private ended = false;
  private socket: WebSocketLike;

  constructor(socket: WebSocketLike, handler: TransportHandler) {
    this.socket = socket;
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => handler.open();
    socket.onmessage = (event: { data: unknown }) => {
      const data = event.data;
      if (data instanceof ArrayBuffer) {
        handler.data(new Uint8Array(data));
      } else if (ArrayBuffer.isView(data)) {
        handler.data(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } else {
        // A text message is no frame; an empty "frame" makes the client say so.
        handler.data(new Uint8Array(0));
      }
    };
    socket.onerror = () => {
      // A close event always follows; it carries what there is to say.
    };
    socket.onclose = (event: { code: number; reason: string }) => {
      if (this.ended) return;
      this.ended = true;
      handler.closed(
        event.code === 1000 || event.code === 1001 || event.reason !== ''
          ? { reason: event.reason || undefined }
          : { error: new Error(`WebSocket closed with code ${event.code}`) },
      );
    };
  }

  get bufferedAmount(): number {
    return this.socket.bufferedAmount;
  }

  send(frame: Uint8Array): void {
    this.socket.send(frame);
  }

  close(): void {
    this.socket.close(1000);
  }
}
