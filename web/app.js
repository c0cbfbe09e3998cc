// The chat page: the Relay client library (lib/, compiled from clients/js)
// over the server's WebSocket listener, found through /config.json.
// Everything a peer sends is shown with textContent, never as HTML.

import { RelayClient, webSocket } from './lib/index.js';

/** Messages kept per room: older ones are dropped, so a busy room cannot grow the page without bound. */
const KEEP = 500;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  banner: $('banner'),
  login: $('login'),
  loginForm: $('login-form'),
  name: $('name'),
  connect: $('connect'),
  sidebar: $('sidebar'),
  joinForm: $('join-form'),
  join: $('join'),
  room: $('room'),
  rooms: $('rooms'),
  members: $('members'),
  memberCount: $('member-count'),
  membersNote: $('members-note'),
  who: $('who'),
  chat: $('chat'),
  roomTitle: $('room-title'),
  leave: $('leave'),
  messages: $('messages'),
  composer: $('composer'),
  text: $('text'),
  send: $('send'),
  error: $('error'),
};

/**
 * name → { count, members: Map<connectionId, user>, log: [{...}], unread }.
 * `count` and `members` are the server's: the JOIN answer's count and
 * member list (at most 100 named, the page's own connection left out), then
 * each membership event, or a WHO.
 */
const rooms = new Map();
let current = null;
let client = null;

const STATE_TEXT = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  open: 'Connected',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
};

/** Why the connection was lost, for the codes a person meets most. */
const LOST_TEXT = {
  SHUTTING_DOWN: 'The server is restarting.',
  CONNECT_FAILED: 'The server cannot be reached.',
  DISCONNECTED: 'The connection was lost.',
  TIMEOUT: 'The server stopped answering.',
  IDLE_TIMEOUT: 'The connection was idle too long.',
  SLOW_CONSUMER: 'This page fell behind the room.',
};

ui.name.value = localStorage.getItem('relay.name') ?? '';

ui.loginForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = ui.name.value.trim();
  if (name === '') return;
  localStorage.setItem('relay.name', name);
  ui.connect.disabled = true;
  try {
    await start(name);
  } catch (error) {
    showError(error);
    ui.connect.disabled = false;
  }
});

ui.joinForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = ui.room.value.trim();
  if (name === '' || client === null) return;
  try {
    const answer = await client.join(name);
    ui.room.value = '';
    setMembers(answer);
    notice(answer.room, `You joined ${answer.room}.`);
    select(answer.room);
  } catch (error) {
    showError(error);
  }
});

ui.leave.addEventListener('click', async () => {
  if (current === null || client === null) return;
  const name = current;
  try {
    await client.leave(name);
  } catch (error) {
    showError(error);
  }
  rooms.delete(name);
  select(rooms.keys().next().value ?? null);
});

ui.who.addEventListener('click', async () => {
  if (current === null || client === null) return;
  try {
    setMembers(await client.who(current));
    render();
  } catch (error) {
    showError(error);
  }
});

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (text.trim() === '' || current === null || client === null) return;
  try {
    client.publish(current, text);
    ui.text.value = '';
    hideError();
  } catch (error) {
    showError(error);
  }
});

async function start(name) {
  const url = await webSocketUrl();
  client = new RelayClient({ transport: webSocket(url), userId: name, echo: true, clientVersion: 'relay-web/0.1.0' });
  client.on('state', ({ state }) => {
    ui.status.dataset.state = state;
    ui.status.textContent = STATE_TEXT[state] ?? state;
    const open = state === 'open';
    ui.join.disabled = !open;
    ui.who.disabled = !open;
    updateComposer();
    if (open) ui.banner.hidden = true;
  });
  client.on('open', ({ hello, reconnected }) => {
    ui.status.textContent = `Connected as ${name} (${hello.connectionId})`;
    if (reconnected) {
      for (const room of rooms.keys()) notice(room, 'Reconnected.');
    }
  });
  client.on('reconnecting', ({ attempt, delayMs, error }) => {
    ui.banner.hidden = false;
    ui.banner.dataset.attempt = String(attempt);
    ui.banner.textContent = `${LOST_TEXT[error.code] ?? `Connection lost (${error.code}).`} Reconnecting in ${(delayMs / 1000).toFixed(1)} s… (attempt ${attempt})`;
  });
  client.on('rejoined', ({ rooms: back, failed }) => {
    // The re-join asked for what came after the last message shown: it follows, after a gap notice for any that are gone.
    for (const answer of back) {
      setMembers(answer);
      notice(answer.room, `Rejoined ${answer.room}.`);
    }
    for (const { room, error } of failed) {
      notice(room, `Could not rejoin: ${error.detail}`);
    }
    render();
  });
  client.on('close', ({ error }) => {
    ui.banner.hidden = error === undefined;
    if (error !== undefined) ui.banner.textContent = `Disconnected: ${error.detail} Reload the page to connect again.`;
  });
  // A delivery or event can trail a LEAVE answer (SPEC.md 5.3): a room left stays gone.
  const inRoom = (name) => rooms.has(name) || client.rooms.has(name);
  client.on('message', (message) => {
    if (!inRoom(message.room)) return;
    const text =
      message.kind === 'binary'
        ? `<${message.data.length} bytes of binary data>`
        : typeof message.content === 'string'
          ? message.content
          : JSON.stringify(message.content);
    const own = message.from === client.hello?.connectionId;
    push(message.room, { kind: own ? 'own' : 'other', who: own ? 'you' : message.user ?? message.from, from: message.from, user: message.user, text, time: message.timestamp });
  });
  client.on('gap', (gap) => {
    if (!inRoom(gap.room)) return;
    push(gap.room, { kind: 'notice', gap: true, text: gapText(gap) });
  });
  client.on('memberJoined', (event) => {
    if (!inRoom(event.room)) return;
    const room = roomFor(event.room);
    room.count += 1;
    room.members.set(event.connectionId, event.user ?? event.connectionId);
    notice(event.room, `${event.user ?? event.connectionId} joined.`);
  });
  client.on('memberLeft', (event) => {
    if (!inRoom(event.room)) return;
    const room = roomFor(event.room);
    room.count = Math.max(1, room.count - 1);
    room.members.delete(event.connectionId);
    notice(event.room, `${event.user ?? event.connectionId} left.`);
  });
  client.on('error', (error) => {
    if (!error.fatal) showError(error);
  });
  await client.connect();
  ui.login.hidden = true;
  ui.sidebar.hidden = false;
  ui.chat.hidden = false;
  ui.room.focus();
}

/** The WebSocket address from the server's /config.json, on the page's own host. */
async function webSocketUrl() {
  const response = await fetch('config.json', { cache: 'no-store' });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const config = await response.json();
  const ws = config.websocket;
  if (ws === null || ws === undefined) {
    throw new Error('this server has no WebSocket listener; start relay-server with --ws-addr');
  }
  const scheme = ws.tls ? 'wss' : 'ws';
  return `${scheme}://${location.hostname.includes(':') && !location.hostname.startsWith('[') ? `[${location.hostname}]` : location.hostname}:${ws.port}${ws.path ?? '/'}`;
}

/** What a gap notice (SPEC.md 3.13) means for the person reading the room. */
function gapText({ from, to, previousEpoch }) {
  const parts = [];
  if (previousEpoch !== undefined) {
    parts.push('The room started over (the server restarted): anything said after the last message shown is lost.');
  }
  if (from !== undefined && to !== undefined) {
    const n = to - from + 1;
    parts.push(`${n} message${n === 1 ? '' : 's'} missed: the server no longer keeps ${n === 1 ? 'it' : 'them'}.`);
  }
  return parts.join(' ');
}

/** The members of a JOIN or WHO answer, the page's own connection left out. */
function setMembers(answer) {
  const room = roomFor(answer.room);
  room.count = answer.members ?? room.count;
  if (answer.memberList === undefined) return;
  room.members.clear();
  for (const member of answer.memberList) {
    if (member.connectionId !== client?.hello?.connectionId) {
      room.members.set(member.connectionId, member.user ?? member.connectionId);
    }
  }
}

function roomFor(name) {
  let room = rooms.get(name);
  if (room === undefined) {
    room = { count: 1, members: new Map(), log: [], unread: 0 };
    rooms.set(name, room);
  }
  return room;
}

function push(name, entry) {
  const room = roomFor(name);
  room.log.push(entry);
  if (room.log.length > KEEP) room.log.splice(0, room.log.length - KEEP);
  if (name === current) {
    ui.messages.append(entryElement(entry));
    while (ui.messages.childElementCount > KEEP) ui.messages.firstElementChild.remove();
    ui.messages.scrollTop = ui.messages.scrollHeight;
  } else if (entry.kind !== 'notice') {
    room.unread += 1;
  }
  renderSidebar();
}

function notice(name, text) {
  push(name, { kind: 'notice', text });
}

function select(name) {
  current = name;
  if (name !== null) roomFor(name).unread = 0;
  render();
}

function render() {
  renderSidebar();
  ui.roomTitle.textContent = current ?? 'No room';
  ui.leave.disabled = current === null;
  ui.messages.replaceChildren(...(current === null ? [] : rooms.get(current).log.map(entryElement)));
  ui.messages.scrollTop = ui.messages.scrollHeight;
  updateComposer();
}

function renderSidebar() {
  ui.rooms.replaceChildren(
    ...[...rooms].map(([name, room]) => {
      const li = document.createElement('li');
      li.dataset.testid = 'room-item';
      li.dataset.room = name;
      const button = document.createElement('button');
      button.type = 'button';
      button.setAttribute('aria-current', String(name === current));
      const label = document.createElement('span');
      label.textContent = name;
      const badge = document.createElement('span');
      badge.className = room.unread > 0 ? 'badge unread' : 'badge';
      badge.textContent = room.unread > 0 ? `${room.unread} new` : `${room.count}`;
      badge.setAttribute('aria-label', room.unread > 0 ? `${room.unread} unread` : `${room.count} members`);
      button.append(label, badge);
      button.addEventListener('click', () => select(name));
      li.append(button);
      return li;
    }),
  );
  const room = current === null ? undefined : rooms.get(current);
  ui.memberCount.textContent = room === undefined ? '' : `(${room.count})`;
  const items = [];
  if (room !== undefined) {
    const you = document.createElement('li');
    you.className = 'you';
    you.textContent = `${client?.hello ? ui.name.value.trim() : ''} (you)`;
    items.push(you);
    for (const [connectionId, user] of room.members) {
      const li = document.createElement('li');
      li.dataset.testid = 'member';
      li.dataset.connectionId = connectionId;
      li.textContent = user;
      items.push(li);
    }
    // The server names at most 100 (SPEC.md 3.3); the rest are counted.
    const unnamed = room.count - room.members.size - 1;
    ui.membersNote.hidden = unnamed <= 0;
    ui.membersNote.textContent = `${unnamed} more not listed.`;
  }
  ui.members.replaceChildren(...items);
}

function entryElement(entry) {
  const li = document.createElement('li');
  li.className = entry.kind;
  li.dataset.testid = entry.gap ? 'gap' : entry.kind === 'notice' ? 'notice' : 'message';
  if (entry.gap) li.classList.add('gap');
  if (entry.kind === 'notice') {
    li.textContent = entry.text;
    return li;
  }
  li.dataset.from = entry.from;
  if (entry.user !== undefined) li.dataset.user = entry.user;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = entry.who;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = entry.text;
  li.append(who, text);
  if (entry.time !== undefined) {
    const time = document.createElement('time');
    const date = new Date(entry.time);
    time.dateTime = date.toISOString();
    time.textContent = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    li.append(time);
  }
  return li;
}

function updateComposer() {
  const usable = current !== null && client?.state === 'open';
  ui.text.disabled = !usable;
  ui.send.disabled = !usable;
  ui.text.placeholder = current === null ? 'Join a room to write' : usable ? `Message ${current}` : 'Waiting for the connection…';
}

function showError(error) {
  ui.error.hidden = false;
  ui.error.textContent = error?.detail ?? error?.message ?? String(error);
}

function hideError() {
  ui.error.hidden = true;
}
