/**
 * The WebSocket transport: one binary message per frame, both ways
 * (SPEC.md 13). Works with a browser's WebSocket, Node
 * 22's global one, or any constructor with the same API (the `ws` package
 * on Node 20).
 */
/**
 * Connects to `url` (`ws://host:port/` or `wss://...`). Throws a
 * `TypeError` at once when there is no WebSocket class to use.
 */
export function webSocket(url, options = {}) {
    const Ctor = options.WebSocket ?? globalThis.WebSocket;
    if (Ctor === undefined) {
        throw new TypeError('no WebSocket class: this runtime has no global WebSocket; pass one, e.g. webSocket(url, { WebSocket }) with WebSocket from the "ws" package');
    }
    const href = String(url);
    return (handler) => new WebSocketTransport(new Ctor(href), handler);
}
class WebSocketTransport {
    messageFramed = true;
    ended = false;
    socket;
    constructor(socket, handler) {
        this.socket = socket;
        socket.binaryType = 'arraybuffer';
        socket.onopen = () => handler.open();
        socket.onmessage = (event) => {
            const data = event.data;
            if (data instanceof ArrayBuffer) {
                handler.data(new Uint8Array(data));
            }
            else if (ArrayBuffer.isView(data)) {
                handler.data(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
            }
            else {
                // A text message is no frame; an empty "frame" makes the client say so.
                handler.data(new Uint8Array(0));
            }
        };
        socket.onerror = () => {
            // A close event always follows; it carries what there is to say.
        };
        socket.onclose = (event) => {
            if (this.ended)
                return;
            this.ended = true;
            handler.closed(event.code === 1000 || event.code === 1001 || event.reason !== ''
                ? { reason: event.reason || undefined }
                : { error: new Error(`WebSocket closed with code ${event.code}`) });
        };
    }
    get bufferedAmount() {
        return this.socket.bufferedAmount;
    }
    send(frame) {
        this.socket.send(frame);
    }
    close() {
        this.socket.close(1000);
    }
}
