/**
 * One error type for everything that goes wrong: the server's ERROR frames
 * (SPEC.md 3.12 and 4) and the client's own failures (a lost connection, a
 * timeout), told apart by `fromServer`.
 */
/**
 * An ERROR from the server, or a failure of the client.
 *
 * `fatal` is true when the connection is over: the server closes it after a
 * fatal ERROR, and client-side codes that end a connection are fatal too.
 * The client reconnects after most fatal errors by itself (see the README).
 */
export class RelayError extends Error {
    /** A code of SPEC.md section 4, or a {@link ClientErrorCode}. */
    code;
    fatal;
    /** True for an ERROR frame the server sent. */
    fromServer;
    /** The room the error is about, when the server named one. */
    room;
    /** The `id` of the request that caused it. */
    requestId;
    /** How long to wait before retrying (RATE_LIMITED) or reconnecting (SHUTTING_DOWN). */
    retryAfterMs;
    /** The message without the code: the server's sentence, for showing to a person. */
    detail;
    constructor(init) {
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
    withRoom(room) {
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
    static client(code, message, fatal, cause) {
        return new RelayError({ code, message, fatal, fromServer: false, cause });
    }
}
