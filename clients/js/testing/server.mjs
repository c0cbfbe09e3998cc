// Starts the real relay-server (target/debug, built by `cargo build -p server`)
// for the tests, and waits on what it prints: never on fixed sleeps.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const TARGET = process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target');
export const SERVER_BIN = path.join(TARGET, 'debug', 'relay-server');
export const CLI_BIN = path.join(TARGET, 'debug', 'relay');

/**
 * How long a test waits for anything before it fails: an upper bound only
 * (every wait ends on its event), generous for a 2-core machine under load.
 */
export const WAIT_MS = 30_000;

/**
 * Runs relay-server with `args` (the plain port on 127.0.0.1:0 unless
 * `--addr` is given) and resolves once it has printed every `listening`
 * line it will print: `{ addr, ws, http, stop(), child }`. `addr`, `ws` and
 * `http` are `{ host, port }`.
 */
export async function startServer(args = []) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`${SERVER_BIN} is missing; run \`cargo build -p server\` first`);
  }
  const full = args.includes('--addr') ? args : ['--addr', '127.0.0.1:0', ...args];
  const wantWs = full.includes('--ws-addr');
  const wantHttp = full.includes('--http-addr');
  const child = spawn(SERVER_BIN, full, { stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr = [];
  child.stderr.on('data', (chunk) => {
    stderr.push(chunk);
    if (stderr.length > 200) stderr.shift();
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const found = {};
  const lines = createInterface({ input: child.stdout });
  const ready = new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      let m;
      if ((m = /^listening on (\S+)$/.exec(line))) found.addr = parseAddr(m[1]);
      else if ((m = /^ws listening on (\S+)$/.exec(line))) found.ws = parseAddr(m[1]);
      else if ((m = /^http listening on (\S+)$/.exec(line))) found.http = parseAddr(m[1]);
      if (found.addr && (!wantWs || found.ws) && (!wantHttp || found.http)) resolve();
    });
    exited.then(({ code, signal }) =>
      reject(new Error(`relay-server exited (${code ?? signal}) before listening:\n${Buffer.concat(stderr)}`)),
    );
  });
  await withTimeout(ready, WAIT_MS, 'relay-server to print its listening lines');
  return {
    ...found,
    child,
    exited,
    stderr: () => Buffer.concat(stderr).toString(),
    /** SIGKILL: the server stops at once, as in a crash; resolves on exit. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    /** SIGINT twice: the drain's immediate stop; resolves on exit. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

function parseAddr(text) {
  const i = text.lastIndexOf(':');
  return { host: text.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(text.slice(i + 1)) };
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** Resolves with the next `event` from `emitter` (a RelayClient) that passes `test`. */
export function next(emitter, event, test = () => true, ms = WAIT_MS) {
  let off;
  const seen = new Promise((resolve) => {
    off = emitter.on(event, (value) => {
      if (test(value)) resolve(value);
    });
  });
  return withTimeout(seen, ms, `event "${event}"`).finally(() => off());
}
