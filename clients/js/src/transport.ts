/**
 * The seam between the client and a connection: a byte stream (TCP) or a
 * sequence of messages that each carry one frame (WebSocket). A transport
 * moves bytes and reports its end; it knows nothing of frames.
 */

/** What a transport tells the client. */
export interface TransportHandler {
  /** The connection is up; the client may send. */
  open(): void;
  /** Bytes arrived: any piece of the stream, or exactly one WebSocket message. */
  data(bytes: Uint8Array): void;
  /**
   * The connection is over, whoever ended it. Called exactly once, also
   * when it never opened. `reason` is a WebSocket close reason (the
   * server's fatal error code, if it sent one); `error` a failure to
   * connect or an I/O error.
   */
  closed(end: { error?: Error | undefined; reason?: string | undefined }): void;
}

export interface Transport {
  /** True when each `data` call is exactly one frame (WebSocket). */
  readonly messageFramed: boolean;
  /** Bytes handed to `send` and not yet to the operating system. */
  readonly bufferedAmount: number;
  /** Sends one whole frame. Never called before `open` or after `close`. */
  send(frame: Uint8Array): void;
  /** Ends the connection; `closed` follows. */
  close(): void;
}

/**
 * Opens one connection. The client calls it again for every reconnect, so
 * it must make a new connection each time.
 */
export type Connector = (handler: TransportHandler) => Transport;
