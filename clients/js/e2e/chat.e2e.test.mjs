// The chat page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), served by the real relay-server: two pages and the relay
// CLI in one room, then a server restart the pages live through.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

import { CLI_BIN, ROOT, WAIT_MS, startServer, withTimeout } from '../testing/server.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'e2e');

let server;
let browser;

before(async () => {
  server = await startServer(['--http-addr', '127.0.0.1:0', '--ws-addr', '127.0.0.1:0', '--drain-timeout', '0']);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A page of its own (own storage), connected as `name`. */
async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  // Generous for a loaded machine. Should a page load never end (once seen
  // under heavy load with the HTTP listener before hyper, which left one of
  // a burst of keep-alive connections unserved), the failed test names the
  // requests that hang and prints the server's log.
  page.setDefaultNavigationTimeout(2 * WAIT_MS);
  const problems = [];
  page.on('pageerror', (error) => problems.push(error));
  const pending = new Set();
  page.on('request', (request) => pending.add(request.url()));
  page.on('requestfinished', (request) => pending.delete(request.url()));
  page.on('requestfailed', (request) => {
    pending.delete(request.url());
    // The WebSocket's own failures while the server is down are expected.
    if (!request.url().startsWith('ws')) problems.push(new Error(`${request.url()}: ${request.failure()?.errorText}`));
  });
  page.on('console', (message) => {
    // Chromium logs each refused WebSocket while the server is down; that is expected.
    if (message.type() === 'error' && !message.text().startsWith('WebSocket connection to')) {
      problems.push(new Error(message.text()));
    }
  });
  try {
    await page.goto(`http://${server.http.host}:${server.http.port}/`);
  } catch (error) {
    throw new Error(`the page did not load; requests without an answer: ${[...pending].join(', ')}`, { cause: error });
  }
  await page.getByTestId('name-input').fill(name);
  await page.getByTestId('connect-button').click();
  await page.locator('[data-testid=status][data-state=open]').waitFor();
  return { page, problems };
}

async function join(page, room) {
  await page.getByTestId('room-input').fill(room);
  await page.getByTestId('join-button').click();
  await page.locator(`[data-testid=room-item][data-room="${room}"]`).waitFor();
}

async function say(page, text) {
  await page.getByTestId('composer-input').fill(text);
  await page.getByTestId('send-button').click();
}

/** Waits until the open room shows a message with `text` from `user` ('you' for the page's own). */
async function sees(page, user, text) {
  const messages = page.locator('[data-testid=message]').filter({ hasText: text });
  await messages.filter({ has: page.locator('.who', { hasText: user }) }).first().waitFor();
}

/** The relay CLI, scripted on stdin; `printed(text)` waits for a line holding `text`. */
function cli(name) {
  const child = spawn(CLI_BIN, [server.addr.host, String(server.addr.port), '--name', name], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  const lines = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    for (const w of [...waiters]) if (line.includes(w.text)) w.resolve();
  });
  return {
    send: (line) => child.stdin.write(`${line}\n`),
    printed: (text) =>
      withTimeout(
        new Promise((resolve) => (lines.some((l) => l.includes(text)) ? resolve() : waiters.push({ text, resolve }))),
        WAIT_MS,
        `the CLI to print "${text}" (it printed ${JSON.stringify(lines)})`,
      ),
    async end() {
      child.stdin.end();
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await withTimeout(exited, WAIT_MS, 'the CLI to exit').catch(() => child.kill('SIGKILL'));
    },
  };
}

async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  const size = statSync(file).size;
  assert.ok(size > 1000, `${file} is ${size} bytes`);
  return file;
}

test('two pages and the relay CLI in one room see each other; the pages live through a server restart', async () => {
  try {
    await chatAndRestart();
  } catch (error) {
    // What the server logged says more than a timeout does.
    console.error(`relay-server's stderr (last 4000 bytes):\n${server.stderr().slice(-4000)}`);
    throw error;
  }
});

async function chatAndRestart() {
  const ann = await openPage('ann');
  const bob = await openPage('bob');
  await join(ann.page, 'e2e');
  await join(bob.page, 'e2e');
  // Ann was there before Bob: he knows her from the JOIN answer's member list, not from an event.
  await bob.page.locator('[data-testid=member]', { hasText: 'ann' }).waitFor();
  assert.equal(await bob.page.getByTestId('member-count').textContent(), '(2)');
  assert.equal(await bob.page.getByTestId('members-note').isHidden(), true);

  const term = cli('cli');
  try {
    term.send('/join e2e');
    // Ann saw both arrive: named in her member list, and counted.
    await ann.page.locator('[data-testid=member]', { hasText: 'bob' }).waitFor();
    await ann.page.locator('[data-testid=member]', { hasText: 'cli' }).waitFor();
    assert.equal(await ann.page.getByTestId('member-count').textContent(), '(3)');

    await say(ann.page, 'hello from ann');
    await sees(ann.page, 'you', 'hello from ann');
    await sees(bob.page, 'ann', 'hello from ann');
    await term.printed('hello from ann');

    term.send('/send hello from the terminal');
    await sees(ann.page, 'cli', 'hello from the terminal');
    await sees(bob.page, 'cli', 'hello from the terminal');

    await say(bob.page, 'hello from bob');
    await sees(ann.page, 'bob', 'hello from bob');
    await term.printed('hello from bob');
  } finally {
    await term.end();
  }
  await ann.page.locator('[data-testid=member]', { hasText: 'cli' }).waitFor({ state: 'detached' });
  const shot = await screenshot(ann.page, 'chat.png');
  console.log(`screenshot: ${shot}`);

  // The server stops (SHUTTING_DOWN to everyone) and comes back on the same ports.
  const { addr, ws, http } = server;
  await server.stop();
  for (const { page } of [ann, bob]) {
    await page.locator('[data-testid=status][data-state=reconnecting]').waitFor();
    await page.getByTestId('banner').filter({ hasText: 'Reconnecting' }).waitFor();
  }
  assert.equal(await ann.page.getByTestId('composer-input').isDisabled(), true);
  await screenshot(ann.page, 'reconnecting.png');
  server = await startServer([
    '--addr', `${addr.host}:${addr.port}`,
    '--ws-addr', `${ws.host}:${ws.port}`,
    '--http-addr', `${http.host}:${http.port}`,
    '--drain-timeout', '0',
  ]);
  for (const { page } of [ann, bob]) {
    await page.locator('[data-testid=status][data-state=open]').waitFor();
    await page.locator('[data-testid=notice]', { hasText: 'Rejoined e2e.' }).waitFor();
    // The re-join asked since the last message shown; the restarted server's new epoch is a gap notice.
    await page.locator('[data-testid=gap]', { hasText: 'started over' }).waitFor();
    assert.equal(await page.getByTestId('banner').isHidden(), true);
  }
  // A WHO refresh lists who is in the room now.
  await ann.page.getByTestId('who-button').click();
  await ann.page.locator('[data-testid=member]', { hasText: 'bob' }).waitFor();
  assert.equal(await ann.page.getByTestId('member-count').textContent(), '(2)');
  await say(bob.page, 'back again');
  await sees(ann.page, 'bob', 'back again');
  await screenshot(ann.page, 'reconnected.png');
  assert.deepEqual(ann.problems, []);
  assert.deepEqual(bob.problems, []);
}
