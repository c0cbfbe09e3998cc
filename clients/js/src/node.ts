/**
 * `@relay/client/node`: everything in `@relay/client`, plus the TCP
 * transport (`node:net`), for Node only.
 */

export * from './index.js';
export { tcp } from './tcp.js';
export type { TcpOptions } from './tcp.js';
