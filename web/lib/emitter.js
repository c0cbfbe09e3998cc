/**
 * A small typed event emitter that runs the same in browsers and Node
 * (no `node:events`, and no DOM `EventTarget` with its untyped `detail`).
 */
export class Emitter {
    listeners = new Map();
    /** Calls `listener` on each `event`; returns a function that stops it. */
    on(event, listener) {
        let set = this.listeners.get(event);
        if (!set) {
            set = new Set();
            this.listeners.set(event, set);
        }
        set.add(listener);
        return () => this.off(event, listener);
    }
    /** Calls `listener` on the next `event` only. */
    once(event, listener) {
        const off = this.on(event, (value) => {
            off();
            listener(value);
        });
        return off;
    }
    off(event, listener) {
        this.listeners.get(event)?.delete(listener);
    }
    /**
     * Calls the listeners in the order they were added. A listener that
     * throws does not stop the others or the client: its exception is
     * rethrown on its own, as an uncaught error, where the application sees it.
     */
    emit(event, value) {
        const set = this.listeners.get(event);
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                listener(value);
            }
            catch (error) {
                queueMicrotask(() => {
                    throw error;
                });
            }
        }
    }
}
