// End to end in headless Chromium: the browser SDK (sdk/js/herald.js), the demo page and the
// console, all as `herald serve` serves them, against the real binary.
//
// Two demo pages log in as two users and join one room; OpenAPI messages (signed by
// `herald send`, as a business server would send them) reach the right page only; room
// broadcasts reach both; a dropped connection and a killed server are both recovered from by the
// SDK on its own; the console lists the users and rooms and its test message reaches a page.
// Screenshots go to ci-artifacts/browser/.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const HERALD = process.env.HERALD_BIN || path.join(ROOT, 'target/debug/herald');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHOTS = path.join(ROOT, 'ci-artifacts/browser');
const APP_ID = 'herald-browser-app-00001';
const APP_KEY = 'browser0123456789abcdef012345678';
const AK = 'AKLTbrowsertest';
const SK = 'browser-test-secret';
const ADMIN = 'browser-test-admin-token-0123456789';
const ROOM = 'lobby';
const WAIT_MS = 15_000;
// No test takes this long unless something hangs; the test then fails with its name.
const TEST_MS = 60_000;

const run = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Everything this file starts goes when it ends, whatever happens.
const children = new Set();
const tempDirs = new Set();
process.on('exit', () => {
  for (const p of children) p.kill('SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));

function tempDir(prefix) {
  const d = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

// ---- the server ----------------------------------------------------------------------------

/** One `herald serve --config` process on a fixed port, which the tests can kill and start again. */
class Herald {
  constructor(port, upstreamPort) {
    this.port = port;
    this.base = `http://127.0.0.1:${port}`;
    this.config = path.join(tempDir('herald-browser-'), 'herald.toml');
    writeFileSync(
      this.config,
      `listen = "127.0.0.1:${port}"
admin_token = "${ADMIN}"

[[apps]]
app_id = "${APP_ID}"
app_key = "${APP_KEY}"
access_keys = [{ ak = "${AK}", sk = "${SK}" }]
server_message_urls = ["http://127.0.0.1:${upstreamPort}/"]
`,
    );
    this.proc = null;
    this.stderr = '';
  }

  async start() {
    const proc = spawn(HERALD, ['serve', '--config', this.config], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(proc);
    proc.on('exit', () => children.delete(proc));
    proc.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    const failed = new Promise((_, rej) => proc.once('error', rej));
    failed.catch(() => {});
    this.proc = proc;
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      try {
        const r = await Promise.race([fetch(`${this.base}/healthz`, { signal: AbortSignal.timeout(1000) }), failed]);
        if (r.status === 200) return;
      } catch (e) {
        if (e?.code === 'ENOENT') throw new Error(`no herald binary at ${HERALD}`);
      }
      if (Date.now() > deadline || proc.exitCode !== null) {
        proc.kill('SIGKILL');
        throw new Error(`herald serve did not come up:\n${this.stderr}`);
      }
      await sleep(50);
    }
  }

  /** Kills the process without letting it close its connections (the clients see them drop). */
  async kill() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  }

  /** A signed OpenAPI call through `herald send`; returns the parsed response envelope. */
  async send(action, { to = [], room, message, binary = false, ackTimeoutMs }) {
    const args = ['send', action, '--server', this.base, '--ak', AK, '--sk', SK, '--app-id', APP_ID, '--message', message];
    for (const u of [].concat(to)) args.push('--to', u);
    if (room) args.push('--room', room);
    if (binary) args.push('--binary');
    if (ackTimeoutMs) args.push('--ack-timeout-ms', String(ackTimeoutMs));
    const { stdout } = await run(HERALD, args, { timeout: WAIT_MS });
    const envelope = JSON.parse(stdout);
    assert.equal(envelope.ResponseMetadata?.Error, undefined, `${action} failed: ${stdout}`);
    return envelope;
  }

  async admin(pathname, body) {
    const res = await fetch(`${this.base}${pathname}`, {
      method: body ? 'POST' : 'GET',
      headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${pathname}: HTTP ${res.status}`);
    return res.json();
  }
}

// A business server for sendServerMessage: answers every POST with what it received, reversed.
function startUpstream() {
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const { message, signature } = JSON.parse(body);
      res.end(`${signature}:${[...message].reverse().join('')}`);
    });
  });
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res(server)));
}

// ---- the browser ---------------------------------------------------------------------------

// Records every WebSocket a page opens, so a test can drop one as a network failure would,
// without the SDK knowing (it did not close it itself), and the text frames sent on each. While
// `window.__offline` is true, new sockets go to a closed port, as with no network.
const RECORD_SOCKETS = () => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__offline = false;
  window.WebSocket = class extends Native {
    constructor(url, ...rest) {
      super(window.__offline ? 'ws://127.0.0.1:1/' : url, ...rest);
      this.sentText = [];
      window.__sockets.push(this);
    }
    send(data) {
      if (typeof data === 'string') this.sentText.push(data);
      super.send(data);
    }
  };
};

async function launch() {
  const userDataDir = tempDir('herald-chromium-');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1100, height: 760 },
  });
  await context.addInitScript(RECORD_SOCKETS);
  return context;
}

/**
 * Collects a page's uncaught exceptions: a test fails if the page threw. (Console errors are not
 * counted: Chromium logs every refused connection while the server is down, as it should.)
 */
function watchErrors(page, name) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
  return errors;
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Opens the demo page, logs in as `uid` and joins the room through its form. */
async function openDemo(context, base, uid) {
  const page = await context.newPage();
  const errors = watchErrors(page, uid);
  await page.goto(`${base}/demo#token=${ADMIN}`);
  await page.getByTestId('uid').fill(uid);
  await page.getByTestId('room').fill(ROOM);
  await page.getByTestId('login').click();
  await page.getByTestId('log').getByText(`logged in as ${uid}`).waitFor({ timeout: WAIT_MS });
  await waitState(page, 'connected');
  return { page, uid, errors };
}

async function waitState(page, state) {
  await page.waitForFunction((s) => document.querySelector('[data-testid=state]')?.textContent === s, state, { timeout: WAIT_MS });
}

/** The texts of the messages a demo page shows as received. */
function received(page) {
  return page.$$eval('[data-testid=received] .text', (nodes) => nodes.map((n) => n.textContent));
}

async function waitReceived(page, text) {
  try {
    await page.locator('[data-testid=received] .text', { hasText: text }).first().waitFor({ timeout: WAIT_MS });
  } catch (e) {
    e.message += `\n${await pageState(page)}`;
    throw e;
  }
}

/** What a demo page knows about its connection, for a failure message. */
function pageState(page) {
  return page
    .evaluate(() => JSON.stringify({
      state: window.demo?.engine.connectionState,
      sockets: window.__sockets.map((s) => s.readyState),
      notes: [...document.querySelectorAll('.sys')].map((n) => n.textContent),
      received: [...document.querySelectorAll('[data-testid=received] .text')].map((n) => n.textContent),
    }))
    .catch((e) => `(cannot describe the page: ${e.message})`);
}

// Counts "reconnected" notes, so a test can wait for the next one.
function reconnects(page) {
  return page.$$eval('.sys', (nodes) => nodes.filter((n) => n.textContent === 'reconnected').length);
}

async function waitReconnects(page, n) {
  await page.waitForFunction((n) => [...document.querySelectorAll('.sys')].filter((e) => e.textContent === 'reconnected').length >= n, n, { timeout: WAIT_MS });
  await waitState(page, 'connected');
}

// ---- the tests -----------------------------------------------------------------------------

describe('herald in the browser', () => {
  let herald;
  let upstream;
  let context;
  let alice;
  let bob;

  before(async () => {
    upstream = await startUpstream();
    herald = new Herald(await freePort(), upstream.address().port);
    await herald.start();
    context = await launch();
    alice = await openDemo(context, herald.base, 'alice');
    bob = await openDemo(context, herald.base, 'bob');
  });

  after(async () => {
    await context?.close();
    await herald?.kill();
    upstream?.close();
  });

  test('the server serves the SDK, its types and both pages', { timeout: TEST_MS }, async () => {
    for (const [p, type] of [
      ['/sdk/herald.js', 'text/javascript'],
      ['/sdk/herald.d.ts', 'text/plain'],
      ['/', 'text/html'],
      ['/demo', 'text/html'],
    ]) {
      const res = await fetch(`${herald.base}${p}`);
      assert.equal(res.status, 200, p);
      assert.match(res.headers.get('content-type'), new RegExp(type), p);
    }
  });

  test('both pages see each other online and in the room', { timeout: TEST_MS }, async () => {
    for (const { page } of [alice, bob]) {
      await page.locator('[data-testid=online] li', { hasText: 'alice' }).waitFor({ timeout: WAIT_MS });
      await page.locator('[data-testid=online] li', { hasText: 'bob' }).waitFor({ timeout: WAIT_MS });
    }
    await alice.page.locator('[data-testid=members] li', { hasText: 'bob' }).waitFor({ timeout: WAIT_MS });
    await bob.page.locator('[data-testid=members] li', { hasText: 'alice' }).waitFor({ timeout: WAIT_MS });
  });

  test('an OpenAPI SendUnicast reaches the right page and not the other', { timeout: TEST_MS }, async () => {
    await herald.send('SendUnicast', { to: 'alice', message: 'for-alice-1' });
    await herald.send('SendUnicast', { to: 'bob', message: 'for-bob-1' });
    await waitReceived(alice.page, 'for-alice-1');
    await waitReceived(bob.page, 'for-bob-1');
    assert.ok(!(await received(alice.page)).includes('for-bob-1'));
    assert.ok(!(await received(bob.page)).includes('for-alice-1'));
    const meta = await alice.page.locator('[data-testid=received]', { hasText: 'for-alice-1' }).locator('.meta').textContent();
    assert.match(meta, /server_bot · to you/);
  });

  test('an OpenAPI SendBroadcast reaches both pages', { timeout: TEST_MS }, async () => {
    await herald.send('SendBroadcast', { room: ROOM, message: 'to-the-lobby-1' });
    await waitReceived(alice.page, 'to-the-lobby-1');
    await waitReceived(bob.page, 'to-the-lobby-1');
    await shot(alice.page, 'demo-alice');
    await shot(bob.page, 'demo-bob');
  });

  test('a binary SendUnicast arrives as an ArrayBuffer with the vendor fields', { timeout: TEST_MS }, async () => {
    // The handler is in place before the message is sent.
    await alice.page.evaluate(() => {
      window.demo.engine.on('onUserBinaryMessageReceivedOutsideRoom', function h(e) {
        window.demo.engine.off('onUserBinaryMessageReceivedOutsideRoom', h);
        window.binary = { isBuffer: e.message instanceof ArrayBuffer, bytes: [...new Uint8Array(e.message)], userId: e.userId, msgid: e.msgid };
      });
    });
    await herald.send('SendUnicast', { to: 'alice', message: Buffer.from([0, 1, 2, 250, 255]).toString('base64'), binary: true });
    const e = await (await alice.page.waitForFunction(() => window.binary, null, { timeout: WAIT_MS })).jsonValue();
    assert.deepEqual(e.bytes, [0, 1, 2, 250, 255]);
    assert.equal(e.isBuffer, true);
    assert.equal(e.userId, 'server_bot');
    assert.ok(e.msgid > 0);
  });

  test('the pages message each other: to a user and to the room', { timeout: TEST_MS }, async () => {
    await alice.page.getByTestId('to').selectOption('user:bob');
    await alice.page.getByTestId('text').fill('hello bob, from alice');
    await alice.page.getByTestId('send').click();
    await waitReceived(bob.page, 'hello bob, from alice');

    await bob.page.getByTestId('to').selectOption(`room:${ROOM}`);
    await bob.page.getByTestId('text').fill('hello room, from bob');
    await bob.page.getByTestId('send').click();
    await waitReceived(alice.page, 'hello room, from bob');
    // The sender's own room message is shown as sent, not received, and was delivered.
    assert.ok(!(await received(bob.page)).includes('hello room, from bob'));
    const sent = bob.page.locator('[data-testid=sent]', { hasText: 'hello room, from bob' });
    assert.equal(await sent.evaluate((n) => n.classList.contains('failed')), false);
  });

  test('a dropped connection is reconnected: logged in, room rejoined, messages flow', { timeout: TEST_MS }, async () => {
    const before = await reconnects(alice.page);
    await alice.page.evaluate(() => {
      window.seen = [];
      window.demo.engine.on('onConnectionStateChanged', (e) => window.seen.push(e.state));
      window.demo.engine.on('onRoomStateChanged', (e) => {
        if (e.state === 0) window.rejoined = JSON.parse(e.extraInfo);
      });
    });
    // As a network failure would: the socket closes without the SDK asking for it.
    await alice.page.evaluate(() => window.__sockets.at(-1).close(4000, 'test: network lost'));
    await waitReconnects(alice.page, before + 1);
    const { seen, extraInfo } = await alice.page.evaluate(() => ({ seen: window.seen, extraInfo: window.rejoined }));
    assert.deepEqual(seen.slice(0, 2), ['reconnecting', 'connected']);
    assert.equal(extraInfo.join_type, 1, 'a rejoin after a reconnect says join_type 1');

    await herald.send('SendUnicast', { to: 'alice', message: 'after-drop-unicast' });
    await herald.send('SendBroadcast', { room: ROOM, message: 'after-drop-broadcast' });
    await waitReceived(alice.page, 'after-drop-unicast');
    await waitReceived(alice.page, 'after-drop-broadcast');
    await waitReceived(bob.page, 'after-drop-broadcast');
  });

  test('what was sent while the connection was down arrives after the reconnect, once, in order', { timeout: TEST_MS }, async () => {
    const before = await reconnects(alice.page);
    await alice.page.evaluate(() => {
      window.recoveries = [];
      window.demo.engine.on('onRecovery', (e) => window.recoveries.push(e));
      window.__offline = true;
      window.__sockets.at(-1).close(4000, 'test: network lost');
    });
    await waitState(alice.page, 'reconnecting');
    for (const n of [1, 2, 3]) await herald.send('SendUnicast', { to: 'alice', message: `while-away-${n}` });
    await herald.send('SendBroadcast', { room: ROOM, message: 'while-away-room' });
    await waitReceived(bob.page, 'while-away-room');
    await alice.page.evaluate(() => {
      window.__offline = false;
    });
    await waitReconnects(alice.page, before + 1);
    await waitReceived(alice.page, 'while-away-3');
    await waitReceived(alice.page, 'while-away-room');
    await herald.send('SendUnicast', { to: 'alice', message: 'after-recovery' });
    await waitReceived(alice.page, 'after-recovery');
    const got = (await received(alice.page)).filter((t) => t.startsWith('while-away-') || t === 'after-recovery');
    const direct = got.filter((t) => t !== 'while-away-room');
    assert.deepEqual(direct, ['while-away-1', 'while-away-2', 'while-away-3', 'after-recovery']);
    assert.equal(got.filter((t) => t === 'while-away-room').length, 1);
    const recoveries = await alice.page.evaluate(() => window.recoveries);
    recoveries.sort((a, b) => a.roomId.localeCompare(b.roomId));
    assert.deepEqual(recoveries, [
      { roomId: '', userId: 'alice', recovered: true, replayed: 3 },
      { roomId: ROOM, userId: 'alice', recovered: true, replayed: 1 },
    ]);
  });

  test('a killed server is reconnected to once it is back, and messages flow again', { timeout: TEST_MS }, async () => {
    const [a0, b0] = [await reconnects(alice.page), await reconnects(bob.page)];
    await herald.kill();
    await waitState(alice.page, 'reconnecting');
    await waitState(bob.page, 'reconnecting');
    await shot(alice.page, 'demo-alice-reconnecting');
    await herald.start();
    await waitReconnects(alice.page, a0 + 1);
    await waitReconnects(bob.page, b0 + 1);

    // The new server knows the users and the room again only because the SDK restored them.
    const overview = await herald.admin('/admin/api/overview');
    const app = overview.apps.find((a) => a.appId === APP_ID);
    assert.deepEqual([...app.logins].sort(), ['alice', 'bob']);
    assert.deepEqual(app.rooms.map((r) => [r.roomId, [...r.members].sort()]), [[ROOM, ['alice', 'bob']]]);

    await herald.send('SendUnicast', { to: 'bob', message: 'after-restart-unicast' });
    await herald.send('SendBroadcast', { room: ROOM, message: 'after-restart-broadcast' });
    await waitReceived(bob.page, 'after-restart-unicast');
    await waitReceived(alice.page, 'after-restart-broadcast');
    await waitReceived(bob.page, 'after-restart-broadcast');
    assert.ok(!(await received(alice.page)).includes('after-restart-unicast'));

    await alice.page.getByTestId('to').selectOption('user:bob');
    await alice.page.getByTestId('text').fill('still there, bob?');
    await alice.page.getByTestId('send').click();
    await waitReceived(bob.page, 'still there, bob?');
    await shot(bob.page, 'demo-bob-after-restart');
  });

  test('a connection that goes silent is found out by the probe and reopened', { timeout: TEST_MS }, async () => {
    const page = await context.newPage();
    const errors = watchErrors(page, 'silent');
    await page.goto(`${herald.base}/demo`);
    const { token } = await herald.admin('/admin/api/token', { appId: APP_ID, uid: 'dave' });
    await page.evaluate(async ({ appId, token }) => {
      const { createEngine } = await import('/sdk/herald.js');
      const engine = createEngine(appId, { heartbeatMs: 600 });
      window.states = [];
      window.got = [];
      engine.on('onConnectionStateChanged', (e) => window.states.push(e));
      engine.on('onUserMessageReceivedOutsideRoom', (e) => window.got.push(e.message));
      await engine.login(token, 'dave');
    }, { appId: APP_ID, token });
    // An idle but live connection is probed and stays up: two probes answered on one socket.
    await page.waitForFunction(() => window.__sockets.at(-1).sentText.filter((t) => t.includes('probe')).length >= 2, null, { timeout: WAIT_MS });
    assert.equal(await page.evaluate(() => window.__sockets.length), 1);
    assert.deepEqual(await page.evaluate(() => window.states.map((e) => e.state)), ['connecting', 'connected']);

    // A frozen server keeps its TCP connections open but answers nothing.
    herald.proc.kill('SIGSTOP');
    try {
      await page.waitForFunction(() => window.states.some((e) => e.state === 'reconnecting'), null, { timeout: WAIT_MS });
    } finally {
      herald.proc.kill('SIGCONT');
    }
    const reason = await page.evaluate(() => window.states.find((e) => e.state === 'reconnecting').reason);
    assert.match(reason, /no answer from the server/);
    await page.waitForFunction(() => window.states.at(-1).state === 'connected', null, { timeout: WAIT_MS });
    await herald.send('SendUnicast', { to: 'dave', message: 'dave-after-silence' });
    await page.waitForFunction(() => window.got.includes('dave-after-silence'), null, { timeout: WAIT_MS });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test('the console shows the users and rooms, and its test messages arrive', { timeout: TEST_MS }, async () => {
    const page = await context.newPage();
    const errors = watchErrors(page, 'console');
    await page.goto(`${herald.base}/#token=${ADMIN}`);
    const logins = page.getByTestId('logins');
    await logins.getByText('alice').waitFor({ timeout: WAIT_MS });
    await logins.getByText('bob').waitFor({ timeout: WAIT_MS });
    const room = page.getByTestId('rooms').locator('tr', { hasText: ROOM });
    await room.getByText('alice').waitFor({ timeout: WAIT_MS });
    await room.getByText('bob').waitFor({ timeout: WAIT_MS });
    await page.waitForFunction(() => document.querySelector('[data-testid=connections]').textContent === '2', null, { timeout: WAIT_MS });

    await page.getByTestId('send-kind').selectOption('to');
    await page.getByTestId('send-target').fill('alice');
    await page.getByTestId('send-message').fill('from-the-console-to-alice');
    await page.getByTestId('send-button').click();
    await page.getByTestId('send-result').getByText('Success: queued to 1 connection').waitFor({ timeout: WAIT_MS });
    await waitReceived(alice.page, 'from-the-console-to-alice');
    const meta = await alice.page.locator('[data-testid=received]', { hasText: 'from-the-console-to-alice' }).locator('.meta').textContent();
    assert.match(meta, /^console · to you/);

    await page.getByTestId('send-kind').selectOption('roomId');
    await page.getByTestId('send-target').fill(ROOM);
    await page.getByTestId('send-message').fill('from-the-console-to-the-room');
    await page.getByTestId('send-button').click();
    await page.getByTestId('send-result').getByText('Success: queued to 2 connections').waitFor({ timeout: WAIT_MS });
    await waitReceived(alice.page, 'from-the-console-to-the-room');
    await waitReceived(bob.page, 'from-the-console-to-the-room');
    assert.ok(!(await received(bob.page)).includes('from-the-console-to-alice'));

    // The rates come from counter deltas between two polls: once two polls have been made, every
    // rate is a number, and the sends above are in the delivered total.
    await page.waitForFunction(
      () => !document.getElementById('r-delivered').textContent.includes('–') && !document.getElementById('t-delivered').textContent.startsWith('0 '),
      null,
      { timeout: WAIT_MS },
    );
    await shot(page, 'console');
    await shot(alice.page, 'demo-alice-console-message');
    assert.deepEqual(errors, []);
    await page.close();
  });

  test('the console refuses a wrong admin token', { timeout: TEST_MS }, async () => {
    const page = await context.newPage();
    await page.goto(`${herald.base}/#token=not-the-token`);
    await page.getByTestId('signin-error').getByText('not accepted').waitFor({ timeout: WAIT_MS });
    await page.getByTestId('token').fill(ADMIN);
    await page.getByTestId('signin').click();
    await page.getByTestId('logins').getByText('alice').waitFor({ timeout: WAIT_MS });
    await page.close();
  });

  test('SDK: login results, updateLoginToken, msgids, send results, server messages', { timeout: TEST_MS }, async () => {
    const page = await context.newPage();
    const errors = watchErrors(page, 'sdk');
    await page.goto(`${herald.base}/demo`);
    const token = async (uid, roomId) => (await herald.admin('/admin/api/token', { appId: APP_ID, uid, roomId })).token;
    const input = {
      appId: APP_ID,
      good: await token('carol'),
      room: await token('carol', 'sdk-room'),
      upstream: `http://127.0.0.1:${upstream.address().port}/`,
    };
    const out = await page.evaluate(async ({ appId, good, room, upstream }) => {
      const { createEngine, events, HeraldError } = await import('/sdk/herald.js');
      const engine = createEngine(appId);
      const seen = [];
      for (const name of Object.keys(events)) engine.on(name, (e) => seen.push([name, e]));
      // The first event `name` that matches `pred`, whether it came already or comes later.
      const next = (name, pred = () => true) => {
        const past = seen.find(([n, e]) => n === name && pred(e));
        if (past) return Promise.resolve(past[1]);
        return new Promise((resolve) => engine.on(name, function h(e) {
          if (pred(e)) {
            engine.off(name, h);
            resolve(e);
          }
        }));
      };
      const result = {};
      // A refused token: the promise rejects with the LoginErrorCode, and updateLoginToken logs in.
      try {
        await engine.login(`${good.slice(0, -4)}AAAA`, 'carol');
      } catch (e) {
        result.refused = { isHeraldError: e instanceof HeraldError, code: e.code, errorCode: e.errorCode };
      }
      await engine.updateLoginToken(good);
      result.loggedIn = seen.filter(([n]) => n === 'onLoginResult').map(([, e]) => e.errorCode);
      try {
        await engine.login(good, 'carol');
      } catch (e) {
        result.again = e.code;
      }
      result.online = [await engine.getPeerOnlineStatus('alice'), await engine.getPeerOnlineStatus('nobody')];
      // One msgid sequence for every send; every msgid gets one result.
      const m1 = await engine.sendUserMessageOutsideRoom('alice', 'from-carol-sdk');
      const m2 = await engine.sendUserMessageOutsideRoom('nobody-here', 'lost');
      const m3 = await engine.sendRoomMessage('not-joined', 'x');
      const m4 = await engine.sendUserBinaryMessageOutsideRoom('alice', new Uint8Array(64 * 1024 + 1));
      const outside = (m) => next('onUserMessageSendResultOutsideRoom', (e) => e.msgid === m);
      const [r1, r2, r3, r4] = [outside(m1), outside(m2), next('onRoomMessageSendResult', (e) => e.msgid === m3), outside(m4)];
      result.msgids = [m1, m2, m3, m4];
      result.results = [await r1, await r2, await r3, await r4];
      // Rooms: join (vendor Web order), a duplicate join is refused locally, leave.
      await engine.joinRoom(room, 'sdk-room', { userId: 'carol' });
      try {
        await engine.joinRoom(room, 'sdk-room', { userId: 'carol' });
      } catch (e) {
        result.duplicateJoin = e.code;
      }
      await engine.leaveRoom('sdk-room');
      // sendServerMessage: the business server's answer comes back as an ArrayBuffer.
      await engine.setServerParams('sig-carol', upstream);
      const m5 = await engine.sendServerMessage('olleh');
      const e5 = await next('onServerMessageSendResult', (e) => e.msgid === m5);
      result.server = { msgid: e5.msgid, error: e5.error, body: new TextDecoder().decode(e5.message) };
      await engine.logout();
      engine.destroy();
      try {
        await engine.login(good, 'carol');
      } catch (e) {
        result.destroyed = e.code;
      }
      result.names = [...new Set(seen.map(([n]) => n))].sort();
      return result;
    }, input);
    assert.deepEqual(out.refused, { isHeraldError: true, code: 'LOGIN_FAILED', errorCode: -1000 });
    assert.deepEqual(out.loggedIn, [-1000, 0]);
    assert.equal(out.again, 'ALREADY_LOGIN');
    assert.deepEqual(out.online, [1, 0]);
    assert.deepEqual(out.msgids, [1, 2, 3, 4]);
    assert.deepEqual(out.results, [
      { msgid: 1, error: 0 },
      { msgid: 2, error: 3 }, // NO_RECEIVER
      { roomId: 'not-joined', msgid: 3, error: 100 }, // NOT_JOIN
      { msgid: 4, error: 103 }, // EXCEED_MAX_LENGTH, answered by the SDK
    ]);
    assert.equal(out.duplicateJoin, 'ROOM_ALREADY_EXIST');
    assert.deepEqual(out.server, { msgid: 5, error: 0, body: 'sig-carol:hello' });
    assert.equal(out.destroyed, 'ENGINE_DESTROYED');
    assert.ok(out.names.includes('onConnectionStateChanged'));
    await waitReceived(alice.page, 'from-carol-sdk');
    assert.deepEqual(errors, []);
    await page.close();
  });

  test('SDK: messages are acknowledged once their handlers return, or by hand with autoAck: false', { timeout: TEST_MS }, async () => {
    const page = await context.newPage();
    const errors = watchErrors(page, 'acks');
    await page.goto(`${herald.base}/demo`);
    const token = async (uid) => (await herald.admin('/admin/api/token', { appId: APP_ID, uid })).token;
    const out = await page.evaluate(async ({ appId, dora, erik }) => {
      const { createEngine } = await import('/sdk/herald.js');
      const auto = createEngine(appId);
      const manual = createEngine(appId, { autoAck: false });
      const state = { handled: [], manualAcks: false, badAck: null, badOption: null };
      auto.on('onUserMessageReceivedOutsideRoom', (e) => state.handled.push(['dora', e.msgid]));
      manual.on('onUserMessageReceivedOutsideRoom', (e) => {
        state.handled.push(['erik', e.msgid]);
        // Processed a little later, then acknowledged by hand.
        if (state.manualAcks) setTimeout(() => manual.ack(e.msgid), 10);
      });
      await auto.login(dora, 'dora');
      await manual.login(erik, 'erik');
      try {
        manual.ack(-1);
      } catch (e) {
        state.badAck = e.name;
      }
      try {
        createEngine(appId, { autoAck: 'yes' });
      } catch (e) {
        state.badOption = e.name;
      }
      window.__acks = { state };
      return { badAck: state.badAck, badOption: state.badOption };
    }, { appId: APP_ID, dora: await token('dora'), erik: await token('erik') });
    assert.deepEqual(out, { badAck: 'TypeError', badOption: 'TypeError' });
    const report = async (to, ackTimeoutMs) =>
      (await herald.send('SendUnicast', { to, message: `ack-${to}`, ackTimeoutMs })).Result.DeliveryReport;

    // autoAck (the default): acknowledged once the handler returned.
    assert.deepEqual((await report('dora', 5000)).Acked, ['dora']);
    // autoAck: false and no ack call: written or queued, never acked.
    const silent = await report('erik', 300);
    assert.deepEqual(silent.Acked, []);
    assert.deepEqual([...silent.Written, ...silent.Queued], ['erik']);
    // By hand.
    await page.evaluate(() => {
      window.__acks.state.manualAcks = true;
    });
    assert.deepEqual((await report('erik', 5000)).Acked, ['erik']);
    const handled = await page.evaluate(() => window.__acks.state.handled);
    assert.deepEqual(handled, [['dora', 1], ['erik', 1], ['erik', 2]]);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test('no page threw', { timeout: TEST_MS }, () => {
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  });
});
