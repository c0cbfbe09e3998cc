/**
 * The seam between the client and a connection: a byte stream (TCP) or a
 * sequence of messages that each carry one frame (WebSocket). A transport
 * moves bytes and reports its end; it knows nothing of frames.
 */
export {};
