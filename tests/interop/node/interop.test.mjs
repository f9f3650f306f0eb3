// Interop: the vendor's official Node SDK (npm `@volcengine/openapi`) drives a real Herald.
//
// The SDK has no messaging actions built in, so, as a business server would, the test creates the
// four actions with `createJSONAPI` on the SDK's `RtcService` under both API versions, points it at
// Herald and checks that what it sends reaches the right `herald client` processes through the
// right callbacks. The twin of ../test_python_sdk.py.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { rtcOpenapi } = require("@volcengine/openapi");

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HERALD = process.env.HERALD_BIN || path.resolve(HERE, "../../../target/debug/herald");
const APP_ID = "65a1b2c3d4e5f60718293a4b";
const APP_KEY = "0123456789abcdef0123456789abcdef";
const AK = "AKLTinteropnode0001";
const SK = "node/secret+key==";
const REGION = "cn-north-1";
const ACTIONS = ["SendUnicast", "SendRoomUnicast", "BatchSendRoomUnicast", "SendBroadcast"];
const VERSIONS = ["2020-12-01", "2023-07-20"];
const WAIT_MS = 10_000;

// The SDK's axios (0.21) honours http_proxy/HTTP_PROXY from the environment; Herald is local.
for (const k of ["no_proxy", "NO_PROXY"]) {
  process.env[k] = [process.env[k], "127.0.0.1", "localhost"].filter(Boolean).join(",");
}

// Every process and temp dir this file makes, so that they go with it whatever happens.
const children = new Set();
const tempDirs = new Set();
function track(proc) {
  children.add(proc);
  proc.on("exit", () => children.delete(proc));
  return proc;
}
process.on("exit", () => {
  for (const p of children) p.kill("SIGKILL");
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => process.exit(130)); // runs the "exit" handler above
}

function exited(proc, ms) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(true);
  return new Promise((res) => {
    const t = setTimeout(() => res(false), ms);
    proc.once("exit", () => {
      clearTimeout(t);
      res(true);
    });
  });
}

async function stop(proc, signal = "SIGTERM") {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill(signal);
  if (!(await exited(proc, WAIT_MS))) {
    proc.kill("SIGKILL");
    await exited(proc, WAIT_MS);
  }
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startServer() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "herald-node-"));
  tempDirs.add(dir);
  const cfg = path.join(dir, "herald.toml");
  writeFileSync(
    cfg,
    `
listen = "127.0.0.1:${port}"
region = "${REGION}"
[[apps]]
app_id = "${APP_ID}"
app_key = "${APP_KEY}"
qps_limit = 500
access_keys = [{ ak = "${AK}", sk = "${SK}" }]
`,
  );
  const proc = track(spawn(HERALD, ["serve", "--config", cfg], { stdio: ["ignore", "ignore", "inherit"] }));
  const spawnError = new Promise((_, rej) => proc.once("error", rej));
  spawnError.catch(() => {});
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      const r = await Promise.race([fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) }), spawnError]);
      if (r.status === 200) break;
    } catch (e) {
      if (e?.code === "ENOENT") throw new Error(`no herald binary at ${HERALD}`);
    }
    if (Date.now() > deadline || proc.exitCode !== null) {
      proc.kill("SIGKILL");
      throw new Error("herald serve did not come up");
    }
    await sleep(50);
  }
  return { proc, host: `127.0.0.1:${port}` };
}

function token(uid, room = "") {
  const args = ["token", "--app-id", APP_ID, "--app-key", APP_KEY, "--uid", uid];
  if (room) args.push("--room", room);
  return execFileSync(HERALD, args, { encoding: "utf8" }).trim();
}

/** A `herald client` process: calls in on stdin, one JSON event per line out. */
class Client {
  constructor(host, name) {
    this.name = name;
    this.proc = track(
      spawn(HERALD, ["client", "--server", `http://${host}`, "--app-id", APP_ID], {
        stdio: ["pipe", "pipe", "inherit"],
      }),
    );
    this.proc.stdin.on("error", () => {}); // a dead client shows up as a missing event instead
    this.events = [];
    this.waiters = [];
    createInterface({ input: this.proc.stdout }).on("line", (line) => {
      const ev = JSON.parse(line);
      const w = this.waiters.shift();
      if (w) w(ev);
      else this.events.push(ev);
    });
  }

  call(call) {
    this.proc.stdin.write(JSON.stringify(call) + "\n");
  }

  nextEvent() {
    if (this.events.length) return Promise.resolve(this.events.shift());
    return new Promise((res, rej) => {
      const waiter = (ev) => {
        clearTimeout(t);
        res(ev);
      };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        rej(new assert.AssertionError({ message: `${this.name}: no event arrived within ${WAIT_MS} ms` }));
      }, WAIT_MS);
      this.waiters.push(waiter);
    });
  }

  async close() {
    this.proc.stdin.end();
    if (!(await exited(this.proc, WAIT_MS))) await stop(this.proc, "SIGKILL");
  }
}

/** The SDK's RtcService pointed at Herald, with the four actions in both versions. */
function sdk(host, secretKey = SK) {
  const svc = new rtcOpenapi.RtcService({
    host,
    protocol: "http:",
    region: REGION,
    accessKeyId: AK,
    secretKey,
  });
  const api = {};
  for (const action of ACTIONS) {
    for (const version of VERSIONS) {
      api[`${action}@${version}`] = svc.createJSONAPI(action, { Version: version });
    }
  }
  return (action, version, body) => api[`${action}@${version}`](body);
}

/** The client's next event is `event`, with at least these fields. */
async function expect(client, event, fields = {}) {
  const got = await client.nextEvent();
  assert.equal(got.event, event, `${client.name}: ${JSON.stringify(got)}`);
  for (const [k, v] of Object.entries(fields)) {
    assert.deepEqual(got[k], v, `${client.name}: ${k} of ${JSON.stringify(got)}`);
  }
  return got;
}

async function login(client, uid) {
  client.call({ call: "login", token: token(uid), uid });
  await expect(client, "onLoginResult", { uid, errorCode: 0 });
}

async function join(client, room, uid) {
  client.call({ call: "joinRoom", roomId: room, uid, token: token(uid, room) });
  await expect(client, "onRoomStateChanged", { roomId: room, uid, state: 0 });
}

let fenceSeq = 0;
function fenceBody(uid) {
  const marker = `fence-${process.pid}-${++fenceSeq}-${process.hrtime.bigint()}`;
  return { marker, body: { AppId: APP_ID, From: "server_bot", To: uid, Binary: false, Message: marker } };
}

/** Sends `client` a unique marker and asserts it is the next thing it gets: proves nothing else (a
 * stray message meant for someone else) arrived before it. */
async function fence(call, client, uid, version) {
  const { marker, body } = fenceBody(uid);
  const resp = await call("SendUnicast", version, body);
  assert.deepEqual(resp.Result, { Message: "Success" }, JSON.stringify(resp));
  await expect(client, "onUserMessageReceivedOutsideRoom", { uid: "server_bot", message: marker });
}

/** Like `fence`, but lets presence events (`onUserJoined`, which servers with presence on send
 * after joins) come first; used once, right after the clients have joined. */
async function settle(call, client, uid, others) {
  const { marker, body } = fenceBody(uid);
  await call("SendUnicast", VERSIONS[1], body);
  for (;;) {
    const got = await client.nextEvent();
    if (got.event === "onUserMessageReceivedOutsideRoom" && got.message === marker) return;
    assert.equal(got.event, "onUserJoined", `${client.name}: ${JSON.stringify(got)}`);
    assert.ok(others.includes(got.uid), `${client.name}: ${JSON.stringify(got)}`);
  }
}

describe("vendor Node SDK (@volcengine/openapi) against Herald", { timeout: 120_000 }, () => {
  let server;
  let alice;
  let bob;
  let call;

  before(async () => {
    server = await startServer();
    call = sdk(server.host);
    alice = new Client(server.host, "alice");
    bob = new Client(server.host, "bob");
    await login(alice, "alice");
    await login(bob, "bob");
    await join(alice, "room1", "alice");
    await join(bob, "room1", "bob");
    await settle(call, alice, "alice", ["bob"]);
    await settle(call, bob, "bob", ["alice"]);
  });

  after(async () => {
    await Promise.all([alice?.close(), bob?.close()]);
    if (server) {
      await stop(server.proc);
    }
    await Promise.all([...children].map((p) => stop(p, "SIGKILL")));
  });

  for (const version of VERSIONS) {
    for (const binary of [false, true]) {
      test(`every action reaches the right users (${version}, ${binary ? "binary" : "text"})`, async () => {
        const message = binary
          ? Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString("base64")
          : "héllo from the node sdk ✓";
        const suffix = binary ? "Binary" : "";

        const check = (resp, action) => {
          // The SDK resolves with the parsed body whatever the HTTP status.
          assert.equal(typeof resp, "object", String(resp));
          assert.deepEqual(resp.Result, { Message: "Success" }, JSON.stringify(resp));
          const meta = resp.ResponseMetadata;
          assert.deepEqual([meta.Action, meta.Version, meta.Service, meta.Region], [action, version, "rtc", REGION]);
          assert.ok(meta.RequestId, JSON.stringify(resp));
          assert.equal(meta.Error, undefined, JSON.stringify(resp));
        };

        const received = async (client, event, fields = {}) => {
          const got = await expect(client, event, { uid: "server_bot", message, ...fields });
          assert.equal(got.binary ?? false, binary, JSON.stringify(got));
          assert.ok(got.msgid > 0, JSON.stringify(got));
          return got;
        };

        // SendUnicast: alice only.
        let body = { AppId: APP_ID, From: "server_bot", To: "alice", Binary: binary, Message: message };
        check(await call("SendUnicast", version, body), "SendUnicast");
        const first = await received(alice, `onUser${suffix}MessageReceivedOutsideRoom`);
        await fence(call, bob, "bob", version);

        // SendRoomUnicast: bob only, in room1.
        body = { AppId: APP_ID, RoomId: "room1", From: "server_bot", To: "bob", Binary: binary, Message: message };
        check(await call("SendRoomUnicast", version, body), "SendRoomUnicast");
        await received(bob, `onUser${suffix}MessageReceived`, { roomId: "room1" });
        await fence(call, alice, "alice", version);

        // BatchSendRoomUnicast: both, plus a user who is not in the room.
        body = {
          AppId: APP_ID,
          RoomId: "room1",
          From: "server_bot",
          To: ["alice", "bob", "carol"],
          Binary: binary,
          Message: message,
        };
        check(await call("BatchSendRoomUnicast", version, body), "BatchSendRoomUnicast");
        const second = await received(alice, `onUser${suffix}MessageReceived`, { roomId: "room1" });
        await received(bob, `onUser${suffix}MessageReceived`, { roomId: "room1" });
        // msgid increases per receiving connection: alice got a fence in between.
        assert.equal(second.msgid, first.msgid + 2);

        // SendBroadcast: everyone in room1.
        body = { AppId: APP_ID, RoomId: "room1", From: "server_bot", Binary: binary, Message: message };
        check(await call("SendBroadcast", version, body), "SendBroadcast");
        await received(alice, `onRoom${suffix}MessageReceived`, { roomId: "room1" });
        await received(bob, `onRoom${suffix}MessageReceived`, { roomId: "room1" });

        // And nothing else is queued for either of them.
        await fence(call, alice, "alice", version);
        await fence(call, bob, "bob", version);
      });
    }
  }

  test("errors come back as the vendor envelope", async () => {
    const body = { AppId: APP_ID, From: "server_bot", To: "alice", Binary: false, Message: "x" };
    for (const version of VERSIONS) {
      // The SDK does not throw on a non-2xx answer: it resolves with the parsed body.
      const env = await sdk(server.host, "not-the-secret")("SendUnicast", version, body);
      assert.equal(typeof env, "object", String(env));
      const meta = env.ResponseMetadata;
      assert.equal(meta.Error?.Code, "SignatureDoesNotMatch", JSON.stringify(env));
      assert.equal(meta.Error?.CodeN, 100010, JSON.stringify(env));
      assert.deepEqual([meta.Action, meta.Version], ["SendUnicast", version], JSON.stringify(env));
      assert.ok(meta.RequestId, JSON.stringify(env));
      assert.equal("Result" in env, false, JSON.stringify(env));

      const illegal = await call("SendUnicast", version, { ...body, From: "alice" }); // a logged-in user's id
      assert.equal(illegal.ResponseMetadata.Error?.Code, "InvalidParameter.IllegalFrom", JSON.stringify(illegal));
      assert.equal("Result" in illegal, false, JSON.stringify(illegal));
    }
    // Neither reached alice.
    await fence(call, alice, "alice", VERSIONS[1]);
  });
});
