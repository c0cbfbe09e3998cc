/**
 * The Relay client: HELLO, rooms, publishing, heartbeats, and reconnecting
 * with backoff that re-joins the rooms. One connection at a time, over any
 * {@link Connector}; everything a request waits for is bounded by a timeout.
 */

import { DEFAULT_MAX_FRAME_SIZE, Flags, FrameDecoder, FramingError, FrameType, encodeFrame, type Frame } from './frame.js';
import { Emitter } from './emitter.js';
import { RelayError, type RequestId } from './errors.js';
import {
  binaryMessagePayload,
  directPayload,
  frameName,
  helloPayload,
  jsonPayload,
  messagePayload,
  protocolError,
  readError,
  readHello,
  readId,
  readMessage,
  readObject,
  readJoinAnswer,
  readRoomAnswer,
  readWho,
  type Ack,
  type DirectMessage,
  type Gap,
  type HelloAnswer,
  type JoinAnswer,
  type MemberEvent,
  type Message,
  type Position,
  type Recipient,
  type RoomAnswer,
  type WhoAnswer,
} from './payloads.js';
import type { Connector, Transport } from './transport.js';

/** The client's own version, sent as `clientVersion` unless one is given. */
export const CLIENT_VERSION = 'relay-js/0.1.0';

/**
 * - `idle`: made, `connect()` not called yet;
 * - `connecting`: the first connection is being made (up to the HELLO answer);
 * - `open`: HELLO answered (and, after a reconnect, the rooms re-joined);
 * - `reconnecting`: the connection was lost; waiting to retry, or retrying;
 * - `closed`: `close()` was called, the first connection failed, or an
 *   error made retrying pointless (see `RelayClientOptions.reconnect`).
 */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ReconnectOptions {
  /** The first retry waits up to this long. Default 250 ms. */
  initialDelayMs: number;
  /** No wait is longer. Default 10 s. */
  maxDelayMs: number;
  /** Each failed attempt multiplies the wait. Default 2. */
  factor: number;
  /** Attempts in a row before giving up (state `closed`). Default: no limit. */
  maxAttempts: number;
}

export interface RelayClientOptions {
  /** How to connect: `webSocket(url)`, or `tcp({ port })` from `@relay/client/node`. */
  transport: Connector;
  /** The name others see (`userId` in HELLO). */
  userId?: string;
  /**
   * For a server that requires authentication. A function is called before
   * every connection, so a reconnect can use a fresh token.
   */
  token?: string | (() => string | Promise<string>);
  /** Also receive your own messages. Default false. */
  echo?: boolean;
  clientVersion?: string;
  /** Reconnect after a lost connection. Default true; `false` to turn off. */
  reconnect?: boolean | Partial<ReconnectOptions>;
  /**
   * Milliseconds between heartbeats. Default: half the server's idle
   * timeout, at most 15 s. 0 turns them off. A heartbeat unanswered for
   * an interval (at least 5 s) ends the connection, and the client
   * reconnects: so a dead connection is found even when nothing is sent.
   */
  heartbeatIntervalMs?: number;
  /** How long join, leave and ping wait for their answer. Default 10 s. */
  requestTimeoutMs?: number;
  /** How long a connection may take up to the HELLO answer. Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * Bytes that may wait to be sent before `publish` throws BACKPRESSURE
   * instead of buffering more. Default 4 MiB.
   */
  maxBufferedBytes?: number;
  /**
   * After a reconnect, re-join each room from the last message received in
   * it (`since`, SPEC.md 5.11), so the server replays what was missed or
   * sends a `gap` event for what it no longer has. Default true. Needs a
   * server that keeps history (`--history-messages`); without it, what was
   * missed is reported as a gap.
   */
  recover?: boolean;
  /** Ask for `seq` and `epoch` on binary deliveries too (`binarySeq`, SPEC.md 3.1). Default false. */
  binarySeq?: boolean;
  /** `false`: no `memberJoined`/`memberLeft` events (SPEC.md 3.1), for big rooms; `who()` still works. */
  memberEvents?: boolean;
}

/** What a {@link RelayClient.join} may ask for besides joining (SPEC.md 3.3); one of the two. */
export interface JoinOptions {
  /** Replay the room's last `history` messages (those the server keeps). */
  history?: number;
  /** Replay every message after this one: what a client that last saw it missed. */
  since?: Position;
}

/** The events of a {@link RelayClient}. */
export interface RelayClientEvents {
  /** Every change of {@link ConnectionState}. */
  state: { state: ConnectionState; previous: ConnectionState };
  /** HELLO answered; `reconnected` after a lost connection. */
  open: { hello: HelloAnswer; reconnected: boolean };
  /** A message delivered to a room the client is in (JSON or binary). */
  message: Message;
  /** Another connection joined one of the client's rooms. */
  memberJoined: MemberEvent;
  /** Another connection left one of the client's rooms (or disconnected). */
  memberLeft: MemberEvent;
  /**
   * Messages asked for (a recovering re-join, or `join` with `history` or
   * `since`) that the server no longer has: sent before the first message
   * after them.
   */
  gap: Gap;
  /** A direct message to this connection or its user. */
  direct: DirectMessage;
  /**
   * An error no promise receives: an ERROR about a `publish`, a fatal
   * ERROR, or the reason a connection was lost.
   */
  error: RelayError;
  /** The connection was lost and the client will retry after `delayMs`. */
  reconnecting: { attempt: number; delayMs: number; error: RelayError };
  /** After a reconnect: the rooms joined again, and those the server refused. */
  rejoined: { rooms: JoinAnswer[]; failed: { room: string; error: RelayError }[] };
  /** A heartbeat's round trip. */
  heartbeat: { rttMs: number };
  /** The client is `closed` for good; `error` says why, unless `close()` was called. */
  close: { error: RelayError | undefined };
}

/** Defaults; see {@link RelayClientOptions}. */
const DEFAULTS = {
  reconnect: { initialDelayMs: 250, maxDelayMs: 10_000, factor: 2, maxAttempts: Infinity },
  heartbeatMaxMs: 15_000,
  heartbeatMinDeadMs: 5_000,
  closeGraceMs: 5_000,
  requestTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
  maxBufferedBytes: 4 << 20,
};

/** Fatal codes after which a new connection would fail the same way. */
const HOPELESS = new Set([
  'AUTH_FAILED',
  'INVALID_FRAME',
  'UNSUPPORTED_VERSION',
  'UNKNOWN_MESSAGE_TYPE',
  'PARSE_ERROR',
  'HELLO_REQUIRED',
  'PROTOCOL_ERROR',
]);

interface Pending {
  kind: FrameType;
  /**
   * Called with the answer as soon as it is read, before any later frame:
   * what the answer changes (a room's position) must be in place before the
   * deliveries that follow it, which a promise's continuation would not be.
   */
  onAnswer?: ((value: unknown) => void) | undefined;
  resolve(value: unknown): void;
  reject(error: RelayError): void;
  timer: ReturnType<typeof setTimeout>;
}

/** One connection: its transport and what belongs to it alone. */
interface Link {
  transport: Transport;
  decoder: FrameDecoder;
  open: boolean;
  hello: HelloAnswer | undefined;
  helloId: RequestId;
  /**
   * Whether the server numbers messages (its JOIN answers carry `epoch`):
   * only then does it know WHO, `since`, `history`, `ack` and direct
   * messages (SPEC.md 8). `undefined` until a JOIN answer tells, and
   * `false` at once for the original server (no `maxFrameSize` in HELLO).
   */
  sequenced: boolean | undefined;
  /** The fatal ERROR, or the client's reason for ending the link. */
  error: RelayError | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  heartbeat: ReturnType<typeof setInterval> | undefined;
}

/**
 * A connection to a Relay server, kept up across failures.
 *
 * ```ts
 * const client = new RelayClient({ transport: webSocket('ws://127.0.0.1:4001/'), userId: 'ann' });
 * client.on('message', (m) => console.log(m.room, m.kind === 'json' ? m.content : m.data));
 * await client.connect();
 * await client.join('lobby');
 * client.publish('lobby', { text: 'hi' });
 * ```
 */
export class RelayClient extends Emitter<RelayClientEvents> {
  private readonly options: RelayClientOptions;
  private readonly retry: ReconnectOptions | undefined;
  private current: ConnectionState = 'idle';
  private link: Link | undefined;
  private nextId = 1;
  private pending = new Map<RequestId, Pending>();
  /** Publishes in flight, by id, for naming the room of an ERROR about one. */
  private published = new Map<RequestId, string>();
  /** Rooms to be in: joined, and re-joined after a reconnect. */
  private joined = new Set<string>();
  /**
   * The last message of each joined room received (or reported gone), to
   * re-join from after a reconnect. One entry per joined room, so bounded
   * by the server's rooms-per-connection limit.
   */
  private positions = new Map<string, Position>();
  /** Heartbeat seq → when it was sent. */
  private pings = new Map<number, { sent: number; resolve(rtt: number): void; reject(e: RelayError): void }>();
  private attempts = 0;
  private everOpen = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private firstConnect: { resolve(h: HelloAnswer): void; reject(e: RelayError): void } | undefined;
  private waiters = new Set<{ resolve(): void; reject(e: RelayError): void }>();
  private rtt: number | undefined;

  constructor(options: RelayClientOptions) {
    super();
    this.options = options;
    const reconnect = options.reconnect ?? true;
    this.retry =
      reconnect === false ? undefined : { ...DEFAULTS.reconnect, ...(reconnect === true ? {} : reconnect) };
  }

  get state(): ConnectionState {
    return this.current;
  }

  /** The current connection's HELLO answer. */
  get hello(): HelloAnswer | undefined {
    return this.link?.hello;
  }

  /** The rooms the client is in (or will re-join after reconnecting). */
  get rooms(): ReadonlySet<string> {
    return this.joined;
  }

  /**
   * Where the client is in `room`'s order: the last message received, or
   * the JOIN answer's position before any; what a reconnect re-joins from.
   * `undefined` for a room not joined, or on a server that numbers nothing.
   */
  position(room: string): Position | undefined {
    const position = this.positions.get(room);
    return position === undefined ? undefined : { ...position };
  }

  /** The last heartbeat's round trip, in milliseconds. */
  get rttMs(): number | undefined {
    return this.rtt;
  }

  /**
   * Connects and says HELLO. Resolves with the server's answer; rejects
   * with a {@link RelayError} when this first connection fails (a refused
   * token is `AUTH_FAILED`), and the client is then `closed`.
   */
  connect(): Promise<HelloAnswer> {
    if (this.current !== 'idle' && this.current !== 'closed') {
      return Promise.reject(RelayError.client('NOT_CONNECTED', `connect() while ${this.current}; call close() first`, false));
    }
    this.attempts = 0;
    this.everOpen = false;
    return new Promise((resolve, reject) => {
      this.firstConnect = { resolve, reject };
      this.setState('connecting');
      void this.dial();
    });
  }

  /**
   * Joins `room`; resolves with the trimmed name, the member count, the
   * room's `epoch` and `seq`, and its member list. With `history` or
   * `since`, the kept messages asked for follow the answer as `message`
   * events, after a `gap` event for any that are gone.
   */
  async join(room: string, options: JoinOptions = {}): Promise<JoinAnswer> {
    await this.ready();
    const body: { room: string } & Record<string, unknown> = { room };
    if (options.history !== undefined && options.since !== undefined) {
      throw new TypeError('join: give history or since, not both');
    }
    if (options.history !== undefined) {
      if (!Number.isSafeInteger(options.history) || options.history < 0) {
        throw new RangeError('join: history must be a whole number of messages, 0 or more');
      }
      body.history = options.history;
    }
    if (options.since !== undefined) body.since = { epoch: options.since.epoch, seq: options.since.seq };
    if (body.history !== undefined || body.since !== undefined) this.requireSequenced('join with history or since');
    return (await this.request(FrameType.JOIN_ROOM, body, (answer) =>
      this.joinedRoom(answer as JoinAnswer, options),
    )) as JoinAnswer;
  }

  /** Leaves `room` (also when not in it, as the server does). */
  async leave(room: string): Promise<RoomAnswer> {
    // Not re-joined after a reconnect, whatever happens to this request.
    this.joined.delete(room);
    this.joined.delete(room.trim());
    this.positions.delete(room);
    this.positions.delete(room.trim());
    await this.ready();
    const answer = (await this.request(FrameType.LEAVE_ROOM, { room })) as RoomAnswer;
    this.joined.delete(answer.room);
    return answer;
  }

  /**
   * Publishes a JSON value to a joined room. Success has no answer
   * (SPEC.md 3.7); a refusal comes as an `error` event whose `requestId` is
   * the id returned here. Throws NOT_CONNECTED unless open, FRAME_TOO_LARGE
   * or BACKPRESSURE.
   *
   * With `{ ack: true }` it returns a promise of the server's ack instead
   * (SPEC.md 3.14): the `seq` the message got and the members it was queued
   * for; a refusal rejects it, and so does any of the errors above.
   */
  publish(room: string, content: unknown): RequestId;
  publish(room: string, content: unknown, options: { ack: true }): Promise<Ack>;
  publish(room: string, content: unknown, options?: { ack?: boolean }): RequestId | Promise<Ack>;
  publish(room: string, content: unknown, options: { ack?: boolean } = {}): RequestId | Promise<Ack> {
    if (options.ack === true) return this.publishAcked(room, content);
    const id = this.newId();
    this.sendNow(FrameType.MESSAGE, Flags.JSON, messagePayload(room, content, id));
    this.track(id, room);
    return id;
  }

  private publishAcked(room: string, content: unknown): Promise<Ack> {
    const id = this.newId();
    const timeoutMs = this.options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      try {
        this.requireSequenced('publish with ack');
        const payload = messagePayload(room, content, id, true);
        const timer = setTimeout(() => {
          this.settle(id)?.reject(
            RelayError.client('TIMEOUT', `no ack for a MESSAGE to ${JSON.stringify(room)} within ${timeoutMs} ms`, false),
          );
        }, timeoutMs);
        this.pending.set(id, { kind: FrameType.MESSAGE, resolve: resolve as (value: unknown) => void, reject, timer });
        this.sendNow(FrameType.MESSAGE, Flags.JSON, payload);
      } catch (error) {
        this.settle(id);
        // Content JSON cannot carry is the caller's TypeError, as for publish without ack.
        reject(error instanceof TypeError ? error : asRelayError(error));
      }
    });
  }

  /**
   * Sends a JSON value to one user (all of its connections) or one
   * connection (SPEC.md 3.16); the recipient gets a `direct` event.
   * Success has no answer; NOT_FOUND (nobody of that user or connection is
   * connected) or FORBIDDEN comes as an `error` event with the returned
   * `requestId`. Throws as `publish` does, and UNSUPPORTED for the original
   * server.
   */
  sendDirect(to: Recipient, content: unknown): RequestId {
    this.requireSequenced('a direct message');
    const id = this.newId();
    this.sendNow(FrameType.MESSAGE, Flags.JSON, directPayload(to, content, id));
    return id;
  }

  /**
   * Who is in `room` now (SPEC.md 3.15): a member or not, any connection
   * that may join it may ask. Rejects with UNSUPPORTED for a server whose
   * JOIN answers carry no `epoch` (the original closes the connection on WHO).
   */
  async who(room: string): Promise<WhoAnswer> {
    await this.ready();
    this.requireSequenced('WHO');
    return (await this.request(FrameType.WHO, { room })) as WhoAnswer;
  }

  /**
   * Publishes raw bytes (SPEC.md 3.8). Binary MESSAGEs carry no id, so a
   * refusal comes as an `error` event without `requestId`.
   */
  publishBinary(room: string, data: Uint8Array): void {
    this.sendNow(FrameType.MESSAGE, Flags.BINARY, binaryMessagePayload(room, data));
  }

  /** Sends a HEARTBEAT and resolves with the round trip in milliseconds. */
  async ping(): Promise<number> {
    await this.ready();
    return this.sendPing();
  }

  /** Ends the connection and any reconnecting; the client is `closed`. */
  close(): void {
    if (this.current === 'closed' || this.current === 'idle') return;
    this.finish(RelayError.client('CLOSED', 'the client was closed', true), undefined);
  }

  // ---- connection lifecycle ----

  private async dial(): Promise<void> {
    this.retryTimer = undefined;
    let token: string | undefined;
    try {
      const source = this.options.token;
      token = typeof source === 'function' ? await source() : source;
    } catch (cause) {
      this.lost(undefined, RelayError.client('CONNECT_FAILED', 'the token function failed', true, cause));
      return;
    }
    if (this.current !== 'connecting' && this.current !== 'reconnecting') return;
    const helloId = this.newId();
    let link: Link | undefined;
    const handler = {
      open: () => {
        if (link === undefined || this.link !== link) return;
        const hello = helloPayload({
          userId: this.options.userId,
          clientVersion: this.options.clientVersion ?? CLIENT_VERSION,
          echo: this.options.echo,
          token,
          binarySeq: this.options.binarySeq,
          memberEvents: this.options.memberEvents,
          id: helloId,
        });
        try {
          this.write(link, FrameType.HELLO, Flags.JSON, hello);
        } catch (error) {
          // A HELLO over the frame limit (an enormous token) cannot be sent at all.
          this.abort(link, asRelayError(error));
        }
      },
      data: (bytes: Uint8Array) => {
        if (link !== undefined && this.link === link) this.receive(link, bytes);
      },
      closed: (end: { error?: Error | undefined; reason?: string | undefined }) => {
        if (link === undefined || this.link !== link) return;
        this.lost(link, link.error ?? endError(link, end));
      },
    };
    try {
      link = {
        transport: this.options.transport(handler),
        decoder: new FrameDecoder(DEFAULT_MAX_FRAME_SIZE),
        open: false,
        hello: undefined,
        helloId,
        sequenced: undefined,
        error: undefined,
        timer: undefined,
        heartbeat: undefined,
      };
    } catch (cause) {
      this.lost(undefined, RelayError.client('CONNECT_FAILED', `cannot connect: ${String(cause)}`, true, cause));
      return;
    }
    this.link = link;
    const connectTimeout = this.options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    const current = link;
    link.timer = setTimeout(() => {
      this.abort(current, RelayError.client('TIMEOUT', `no HELLO answer within ${connectTimeout} ms`, true));
    }, connectTimeout);
  }

  /** Ends `link` with `error`; its `closed` then decides what comes next. */
  private abort(link: Link, error: RelayError): void {
    if (link.error === undefined) link.error = error;
    link.transport.close();
  }

  /** The link ended: reject what waited on it, then retry or close. */
  private lost(link: Link | undefined, error: RelayError): void {
    if (link !== undefined) {
      this.clearLink(link);
      this.link = undefined;
    }
    this.failPending(error);
    if (this.current === 'closed') return;
    if (!this.everOpen) {
      this.finish(error, error);
      return;
    }
    this.emit('error', error);
    const retry = this.retry;
    const hopeless =
      HOPELESS.has(error.code) ||
      (error.code === 'TOKEN_EXPIRED' && typeof this.options.token !== 'function') ||
      // A refused HELLO would be refused again.
      (error.fromServer && error.requestId !== undefined && error.requestId === link?.helloId);
    if (retry === undefined || hopeless || this.attempts >= retry.maxAttempts) {
      this.finish(error, error);
      return;
    }
    this.attempts += 1;
    const ceiling = Math.min(retry.maxDelayMs, retry.initialDelayMs * retry.factor ** (this.attempts - 1));
    // Half fixed, half random: apart enough that clients cut off together come back apart.
    let delayMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    if (error.retryAfterMs !== undefined) delayMs = Math.max(delayMs, error.retryAfterMs);
    this.setState('reconnecting');
    this.emit('reconnecting', { attempt: this.attempts, delayMs, error });
    this.retryTimer = setTimeout(() => void this.dial(), delayMs);
  }

  /** The client is closed for good. */
  private finish(error: RelayError, reported: RelayError | undefined): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const link = this.link;
    this.link = undefined;
    if (link !== undefined) {
      this.clearLink(link);
      link.transport.close();
    }
    this.failPending(error);
    // A closed client is in no room; a later connect() starts with none.
    this.joined.clear();
    this.positions.clear();
    for (const waiter of this.waiters) waiter.reject(error);
    this.waiters.clear();
    const first = this.firstConnect;
    this.firstConnect = undefined;
    this.setState('closed');
    first?.reject(error);
    this.emit('close', { error: reported });
  }

  private clearLink(link: Link): void {
    if (link.timer !== undefined) clearTimeout(link.timer);
    if (link.heartbeat !== undefined) clearInterval(link.heartbeat);
    link.timer = undefined;
    link.heartbeat = undefined;
  }

  /** HELLO answered: open, after re-joining the rooms when reconnected. */
  private async opened(link: Link, hello: HelloAnswer): Promise<void> {
    if (link.timer !== undefined) clearTimeout(link.timer);
    link.timer = undefined;
    link.hello = hello;
    link.decoder.maxFrameSize = hello.maxFrameSize;
    link.open = true;
    this.startHeartbeat(link, hello);
    const reconnected = this.everOpen;
    if (reconnected && this.joined.size > 0) {
      const rooms = [...this.joined];
      const recover = (this.options.recover ?? true) && link.sequenced !== false;
      const results = await Promise.allSettled(
        rooms.map((room) => {
          const since = recover ? this.positions.get(room) : undefined;
          const options: JoinOptions = since === undefined ? {} : { since: { ...since } };
          const body = since === undefined ? { room } : { room, since: { epoch: since.epoch, seq: since.seq } };
          return this.request(FrameType.JOIN_ROOM, body, (answer) =>
            this.joinedRoom(answer as JoinAnswer, options),
          ) as Promise<JoinAnswer>;
        }),
      );
      if (this.link !== link) return;
      const joined: JoinAnswer[] = [];
      const failed: { room: string; error: RelayError }[] = [];
      results.forEach((result, i) => {
        const room = rooms[i] as string;
        if (result.status === 'fulfilled') {
          joined.push(result.value);
        } else {
          const error = asRelayError(result.reason);
          // A room the server refuses (FORBIDDEN, say) is given up; a lost link is retried.
          if (error.fromServer) {
            this.joined.delete(room);
            this.positions.delete(room);
          }
          failed.push({ room, error });
        }
      });
      const lostLink = failed.find((f) => !f.error.fromServer);
      if (lostLink !== undefined) {
        // Lost or timed out: retry the whole connection rather than open without the room.
        this.abort(link, lostLink.error);
        return;
      }
      this.emit('rejoined', { rooms: joined, failed });
    }
    this.attempts = 0;
    this.everOpen = true;
    this.setState('open');
    this.emit('open', { hello, reconnected });
    const first = this.firstConnect;
    this.firstConnect = undefined;
    first?.resolve(hello);
    for (const waiter of this.waiters) waiter.resolve();
    this.waiters.clear();
  }

  private startHeartbeat(link: Link, hello: HelloAnswer): void {
    const idle = hello.idleTimeoutMs;
    const every =
      this.options.heartbeatIntervalMs ??
      Math.min(DEFAULTS.heartbeatMaxMs, idle !== undefined && idle > 0 ? Math.floor(idle / 2) : DEFAULTS.heartbeatMaxMs);
    if (every <= 0) return;
    // Short intervals (tests, fast RTT displays) must not turn a busy moment into a reconnect.
    const deadline = Math.max(every, DEFAULTS.heartbeatMinDeadMs);
    link.heartbeat = setInterval(() => {
      if (this.link !== link) return;
      const now = performance.now();
      for (const ping of this.pings.values()) {
        if (now - ping.sent >= deadline) {
          this.abort(link, RelayError.client('TIMEOUT', `no heartbeat answer within ${deadline} ms`, true));
          return;
        }
      }
      this.sendPing().catch(() => {
        // Its failure ends the link, which reports it.
      });
    }, every);
  }

  // ---- frames in ----

  private receive(link: Link, bytes: Uint8Array): void {
    if (link.error !== undefined) return;
    let frames: Frame[];
    try {
      frames = link.decoder.push(bytes);
      if (link.transport.messageFramed && (frames.length !== 1 || link.decoder.buffered !== 0)) {
        throw protocolError('a WebSocket message must carry exactly one whole frame');
      }
    } catch (error) {
      this.abort(link, error instanceof FramingError ? protocolError(error.message, error) : asRelayError(error));
      return;
    }
    for (const frame of frames) {
      if (this.link !== link || link.error !== undefined) return;
      try {
        this.dispatch(link, frame);
      } catch (error) {
        this.abort(link, asRelayError(error));
        return;
      }
    }
  }

  private dispatch(link: Link, frame: Frame): void {
    switch (frame.type) {
      case FrameType.HELLO: {
        const object = readObject(frame, 'HELLO answer');
        if (!link.open) {
          // Only the original server leaves maxFrameSize out (SPEC.md 8), and it numbers nothing.
          if (object.maxFrameSize === undefined) link.sequenced = false;
          void this.opened(link, readHello(object));
        }
        return;
      }
      case FrameType.JOIN_ROOM: {
        const object = readObject(frame, 'JOIN_ROOM answer');
        const answer = readJoinAnswer(object);
        link.sequenced = answer.epoch !== undefined;
        this.answer(frame.type, readId(object), answer);
        return;
      }
      case FrameType.LEAVE_ROOM: {
        const object = readObject(frame, 'LEAVE_ROOM answer');
        this.answer(frame.type, readId(object), readRoomAnswer(object));
        return;
      }
      case FrameType.WHO: {
        const object = readObject(frame, 'WHO answer');
        this.answer(frame.type, readId(object), readWho(object));
        return;
      }
      case FrameType.MESSAGE: {
        const read = readMessage(frame, this.options.binarySeq === true);
        if (read === null) return;
        if ('message' in read) {
          this.advance(read.message.room, read.message.epoch, read.message.seq);
          this.emit('message', read.message);
        } else if ('joined' in read) this.emit('memberJoined', read.joined);
        else if ('left' in read) this.emit('memberLeft', read.left);
        else if ('gap' in read) {
          if (read.gap.to !== undefined) this.advance(read.gap.room, read.gap.epoch, read.gap.to);
          this.emit('gap', read.gap);
        } else if ('ack' in read) this.settle(read.id)?.resolve(read.ack);
        else this.emit('direct', read.direct);
        return;
      }
      case FrameType.HEARTBEAT: {
        this.pong(frame);
        return;
      }
      case FrameType.ERROR: {
        this.serverError(link, readError(frame));
        return;
      }
    }
  }

  private serverError(link: Link, error: RelayError): void {
    let named = error;
    const id = error.requestId;
    if (id !== undefined && id === link.helloId && !error.fatal) {
      // A refused HELLO leaves the link useless to us (the client sent a valid one).
      this.abort(link, error);
      return;
    }
    if (id !== undefined && this.pending.has(id) && !error.fatal) {
      this.settle(id)?.reject(error);
      return;
    }
    if (id !== undefined && this.published.has(id)) {
      const room = this.published.get(id);
      this.published.delete(id);
      if (error.room === undefined && room !== undefined) named = error.withRoom(room);
    }
    if (error.fatal) {
      // SPEC.md 5.10: send nothing more, and read until the server closes.
      link.error = named;
      this.clearLink(link);
      // The server closes next; one that does not is not waited for long.
      link.timer = setTimeout(() => link.transport.close(), DEFAULTS.closeGraceMs);
      return;
    }
    this.emit('error', named);
  }

  /** Resolves the request `id`, or the oldest of its kind for the original server, which sends no ids. */
  private answer(kind: FrameType, id: RequestId | undefined, value: RoomAnswer | WhoAnswer): void {
    let key = id;
    if (key === undefined) {
      for (const [pendingId, pending] of this.pending) {
        if (pending.kind === kind) {
          key = pendingId;
          break;
        }
      }
    }
    if (key === undefined) return;
    const pending = this.settle(key);
    pending?.onAnswer?.(value);
    pending?.resolve(value);
  }

  /**
   * A JOIN answer read: the room is joined from here on, and its position
   * is where the replay asked for starts (SPEC.md 5.11), so that a reconnect
   * during the replay asks again from what actually arrived.
   */
  private joinedRoom(answer: JoinAnswer, options: JoinOptions): void {
    this.joined.add(answer.room);
    if (answer.epoch === undefined) return;
    const last = answer.seq ?? 0;
    let seq = last;
    if (options.since !== undefined) {
      seq = options.since.epoch === answer.epoch ? Math.min(options.since.seq, last) : 0;
    } else if (options.history !== undefined) {
      seq = Math.max(0, last - options.history);
    }
    this.positions.set(answer.room, { epoch: answer.epoch, seq });
  }

  /** A room's position moves to (`epoch`, `seq`): never back within one epoch. */
  private advance(room: string, epoch: string | undefined, seq: number | undefined): void {
    if (epoch === undefined || seq === undefined || !this.joined.has(room)) return;
    const position = this.positions.get(room);
    if (position === undefined || position.epoch !== epoch || seq > position.seq) {
      this.positions.set(room, { epoch, seq });
    }
  }

  /** Throws UNSUPPORTED for a server that would not understand `what` (SPEC.md 8). */
  private requireSequenced(what: string): void {
    if (this.link?.sequenced === false) {
      throw RelayError.client(
        'UNSUPPORTED',
        `the server does not number messages (its JOIN answers carry no epoch), so it does not support ${what}`,
        false,
      );
    }
  }

  private pong(frame: Frame): void {
    let seq: unknown;
    try {
      seq = (readObject(frame, 'HEARTBEAT') as { ping?: unknown }).ping;
    } catch {
      return; // Not one of ours.
    }
    if (typeof seq !== 'number') return;
    const ping = this.pings.get(seq);
    if (ping === undefined) return;
    this.pings.delete(seq);
    const rttMs = performance.now() - ping.sent;
    this.rtt = rttMs;
    ping.resolve(rttMs);
    this.emit('heartbeat', { rttMs });
  }

  // ---- frames out ----

  private request(
    kind: FrameType,
    body: { room: string } & Record<string, unknown>,
    onAnswer?: (value: unknown) => void,
  ): Promise<unknown> {
    const link = this.link;
    if (link === undefined || !link.open || link.error !== undefined) {
      return Promise.reject(RelayError.client('NOT_CONNECTED', 'not connected', false));
    }
    const id = this.newId();
    const timeoutMs = this.options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settle(id)?.reject(
          RelayError.client('TIMEOUT', `no answer to ${frameName(kind)} ${JSON.stringify(body.room)} within ${timeoutMs} ms`, false),
        );
      }, timeoutMs);
      this.pending.set(id, { kind, onAnswer, resolve, reject, timer });
      try {
        this.write(link, kind, Flags.JSON, jsonPayload({ ...body, id }));
      } catch (error) {
        this.settle(id)?.reject(asRelayError(error));
      }
    });
  }

  private sendPing(): Promise<number> {
    const link = this.link;
    if (link === undefined || !link.open || link.error !== undefined) {
      return Promise.reject(RelayError.client('NOT_CONNECTED', 'not connected', false));
    }
    const seq = this.nextId++;
    const timeoutMs = this.options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pings.delete(seq)) reject(RelayError.client('TIMEOUT', `no heartbeat answer within ${timeoutMs} ms`, false));
      }, timeoutMs);
      this.pings.set(seq, {
        sent: performance.now(),
        resolve: (rtt) => {
          clearTimeout(timer);
          resolve(rtt);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.write(link, FrameType.HEARTBEAT, Flags.JSON, jsonPayload({ ping: seq }));
    });
  }

  /** Sends on the open link now, or throws why it cannot. */
  private sendNow(type: FrameType, flags: Flags, payload: Uint8Array): void {
    const link = this.link;
    if (link === undefined || !link.open || link.error !== undefined || this.current !== 'open') {
      throw RelayError.client('NOT_CONNECTED', `cannot publish while ${this.current}; wait for the "open" event`, false);
    }
    const max = this.options.maxBufferedBytes ?? DEFAULTS.maxBufferedBytes;
    if (link.transport.bufferedAmount > max) {
      throw RelayError.client('BACKPRESSURE', `over ${max} bytes wait to be sent; publish less often`, false);
    }
    this.write(link, type, flags, payload);
  }

  private write(link: Link, type: FrameType, flags: Flags, payload: Uint8Array): void {
    let frame: Uint8Array;
    try {
      frame = encodeFrame(type, flags, payload, link.hello?.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE);
    } catch (error) {
      throw RelayError.client('FRAME_TOO_LARGE', (error as Error).message, false, error);
    }
    link.transport.send(frame);
  }

  // ---- bookkeeping ----

  /** Waits until open; rejects at once when there is nothing to wait for. */
  private ready(): Promise<void> {
    if (this.current === 'open') return Promise.resolve();
    if (this.current !== 'connecting' && this.current !== 'reconnecting') {
      return Promise.reject(RelayError.client('NOT_CONNECTED', `the client is ${this.current}; call connect() first`, false));
    }
    const timeoutMs = this.options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error: RelayError) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(RelayError.client('TIMEOUT', `still ${this.current} after ${timeoutMs} ms`, false));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private settle(id: RequestId): Pending | undefined {
    const pending = this.pending.get(id);
    if (pending === undefined) return undefined;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    return pending;
  }

  private failPending(error: RelayError): void {
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(error);
    for (const ping of this.pings.values()) ping.reject(error);
    this.pings.clear();
    this.published.clear();
  }

  /** Remembers a publish's room for its ERROR, bounded: the oldest are forgotten. */
  private track(id: RequestId, room: string): void {
    this.published.set(id, room);
    if (this.published.size > 1024) {
      const oldest = this.published.keys().next().value;
      if (oldest !== undefined) this.published.delete(oldest);
    }
  }

  private newId(): number {
    return this.nextId++;
  }

  private setState(state: ConnectionState): void {
    const previous = this.current;
    if (previous === state) return;
    this.current = state;
    this.emit('state', { state, previous });
  }
}

function endError(link: Link, end: { error?: Error | undefined; reason?: string | undefined }): RelayError {
  if (end.reason !== undefined && /^[A-Z_]+$/.test(end.reason)) {
    // A WebSocket close whose reason is a fatal code, without its ERROR frame.
    return new RelayError({ code: end.reason, message: 'the server closed the connection', fatal: true, fromServer: true });
  }
  if (!link.open && end.error !== undefined) {
    return RelayError.client('CONNECT_FAILED', `cannot connect: ${end.error.message}`, true, end.error);
  }
  const why = end.error?.message ?? end.reason ?? 'the server closed the connection';
  return RelayError.client('DISCONNECTED', why, true, end.error);
}

function asRelayError(error: unknown): RelayError {
  if (error instanceof RelayError) return error;
  return RelayError.client('PROTOCOL_ERROR', String(error), true, error);
}
