/**
 * One error type for everything that goes wrong: the server's ERROR frames
 * (SPEC.md 3.12 and 4) and the client's own failures (a lost connection, a
 * timeout), told apart by `fromServer`.
 */

/** The error codes of SPEC.md section 4. A server may send others. */
export type ServerErrorCode =
  | 'INVALID_FRAME'
  | 'UNSUPPORTED_VERSION'
  | 'UNKNOWN_MESSAGE_TYPE'
  | 'PARSE_ERROR'
  | 'HELLO_REQUIRED'
  | 'SLOW_CONSUMER'
  | 'IDLE_TIMEOUT'
  | 'SERVER_FULL'
  | 'SHUTTING_DOWN'
  | 'INVALID_ROOM'
  | 'INVALID_PAYLOAD'
  | 'NOT_IN_ROOM'
  | 'AUTH_FAILED'
  | 'TOKEN_EXPIRED'
  | 'FORBIDDEN'
  | 'RATE_LIMITED'
  | 'OVERLOADED'
  | 'NOT_FOUND';

/**
 * Codes the client itself gives (never sent by a server):
 * - `CONNECT_FAILED`: the transport could not connect;
 * - `DISCONNECTED`: the connection ended before the answer came;
 * - `TIMEOUT`: no answer in time (a request, the HELLO, a heartbeat);
 * - `CLOSED`: `close()` was called;
 * - `NOT_CONNECTED`: the client is not open (publish while reconnecting);
 * - `PROTOCOL_ERROR`: the server broke the protocol (a malformed frame, an
 *   answer that is not JSON);
 * - `FRAME_TOO_LARGE`: the request would be over the server's `maxFrameSize`;
 * - `BACKPRESSURE`: too many bytes are waiting to be sent already;
 * - `UNSUPPORTED`: the server does not number messages (the original
 *   server, SPEC.md 8), so it would not understand WHO, `since`,
 *   `history`, `ack` or a direct message, and the client did not send it.
 */
export type ClientErrorCode =
  | 'CONNECT_FAILED'
  | 'DISCONNECTED'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'NOT_CONNECTED'
  | 'PROTOCOL_ERROR'
  | 'FRAME_TOO_LARGE'
  | 'BACKPRESSURE'
  | 'UNSUPPORTED';

export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

/** A request id (SPEC.md 3.0). */
export type RequestId = number | string;

export interface RelayErrorInit {
  code: ErrorCode;
  message: string;
  fatal: boolean;
  fromServer: boolean;
  room?: string | undefined;
  requestId?: RequestId | undefined;
  retryAfterMs?: number | undefined;
  cause?: unknown;
}

/**
 * An ERROR from the server, or a failure of the client.
 *
 * `fatal` is true when the connection is over: the server closes it after a
 * fatal ERROR, and client-side codes that end a connection are fatal too.
 * The client reconnects after most fatal errors by itself (see the README).
 */
export class RelayError extends Error {
  /** A code of SPEC.md section 4, or a {@link ClientErrorCode}. */
  readonly code: ErrorCode;
  readonly fatal: boolean;
  /** True for an ERROR frame the server sent. */
  readonly fromServer: boolean;
  /** The room the error is about, when the server named one. */
  readonly room: string | undefined;
  /** The `id` of the request that caused it. */
  readonly requestId: RequestId | undefined;
  /** How long to wait before retrying (RATE_LIMITED) or reconnecting (SHUTTING_DOWN). */
  readonly retryAfterMs: number | undefined;
  /** The message without the code: the server's sentence, for showing to a person. */
  readonly detail: string;

  constructor(init: RelayErrorInit) {
    super(`${init.code}: ${init.message}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'RelayError';
    this.code = init.code;
    this.fatal = init.fatal;
    this.fromServer = init.fromServer;
    this.room = init.room;
    this.requestId = init.requestId;
    this.retryAfterMs = init.retryAfterMs;
    this.detail = init.message;
  }

  /** The same error, naming `room` (the client knows which room a publish was for). */
  withRoom(room: string): RelayError {
    return new RelayError({
      code: this.code,
      message: this.detail,
      fatal: this.fatal,
      fromServer: this.fromServer,
      room,
      requestId: this.requestId,
      retryAfterMs: this.retryAfterMs,
      cause: this.cause,
    });
  }

  /** A client-side error. */
  static client(code: ClientErrorCode, message: string, fatal: boolean, cause?: unknown): RelayError {
    return new RelayError({ code, message, fatal, fromServer: false, cause });
  }
}
