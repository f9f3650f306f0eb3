// herald.js: the browser SDK for Herald, a self-hosted real-time messaging server.
//
// One ES module, no dependencies, no build step. Its shape follows the vendor's Web SDK
// (`VERTC.createEngine(appId)`, `engine.login(token, userId)`, `engine.on('onUserMessageReceivedOutsideRoom', …)`),
// and it speaks Herald's client protocol (docs/protocol.md): JSON calls and events in text frames,
// received messages in binary frames, sent messages in binary send frames.
//
// Map of this file:
//   - createEngine / destroyEngine / events / HeraldError: the public surface.
//   - Engine: the calls, the event emitter, and the state the SDK restores after a reconnect
//     (the login, the server parameters, every joined room, with their latest tokens).
//   - encodeSend / decodeMessage: the two binary frame layouts.
//
// Liveness: browsers answer the server's pings by themselves but do not let a page send its own
// or see them, so a connection that died silently (a sleeping laptop, a network that drops
// packets) would look open for minutes. The engine probes instead: after `heartbeatMs` without a
// frame from the server it makes a cheap call (getPeerOnlineStatus of PROBE_ID, whose answer is
// not reported), and a connection that stays silent for a third of `heartbeatMs` more is treated
// as lost.
//
// Acknowledgements: unless created with `autoAck: false`, the engine acknowledges each received
// message once every handler of its callback has returned, with one cumulative `ack` call per
// task (a burst of messages handled in a row costs one ack). A business server that waits for
// acks (X-Herald-Ack-Timeout-Ms) learns from them which recipients processed its message. With
// `autoAck: false`, `engine.ack(msgid)` acknowledges by hand.
//
// What it deliberately does not do: generate tokens (your server does that), or replay messages
// missed while disconnected.

/** Callback names, as the vendor's `VERTC.events` has them: `events.onLoginResult === 'onLoginResult'`. */
export const events = Object.freeze(
  Object.fromEntries(
    [
      'onLoginResult',
      'onLogout',
      'onRoomStateChanged',
      'onLeaveRoom',
      'onUserJoined',
      'onUserLeave',
      'onTokenWillExpire',
      'onUserMessageReceivedOutsideRoom',
      'onUserBinaryMessageReceivedOutsideRoom',
      'onUserMessageReceived',
      'onUserBinaryMessageReceived',
      'onRoomMessageReceived',
      'onRoomBinaryMessageReceived',
      'onUserMessageSendResultOutsideRoom',
      'onUserMessageSendResult',
      'onRoomMessageSendResult',
      'onServerMessageSendResult',
      'onGetPeerOnlineStatus',
      'onServerParamsSetResult',
      'onError',
      'onConnectionStateChanged',
      'onRecovery',
    ].map((n) => [n, n]),
  ),
);

/** The vendor's `USER_ONLINE_STATUS`. */
export const USER_ONLINE_STATUS = Object.freeze({ OFFLINE: 0, ONLINE: 1, UNREACHABLE: 2 });

/**
 * Why a call's promise was rejected. `code` is a string in the vendor's Web style
 * (`ALREADY_LOGIN`, `LOGIN_FAILED`, …); `errorCode` is the protocol's number when the server gave one.
 */
export class HeraldError extends Error {
  constructor(code, message, errorCode) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    if (errorCode !== undefined) this.errorCode = errorCode;
  }
}

// Protocol numbers (docs/protocol.md).
const LOGIN_INVALID_TOKEN = -1000;
const ROOM_UPDATE_TOKEN_INVALID = -1010;
const LOGOUT_DUPLICATE = 1;
const SEND_BROKEN = 2;
const SEND_NOT_JOIN = 100;
const SEND_NO_CONNECTION = 102;
const SEND_EXCEED_MAX_LENGTH = 103;
const SEND_EMPTY_USER = 104;
const SERVER_PARAMS_SET = 200;
const MAX_MESSAGE_BYTES = 64 * 1024;

const FRAME_MESSAGE = 1;
const FRAME_SEND = 2;
const FLAG_BINARY = 1;
const FLAG_ROOM = 2;
const FLAG_BROADCAST = 4;
const FLAG_STREAM = 8;
const KNOWN_FLAGS = FLAG_BINARY | FLAG_ROOM | FLAG_BROADCAST | FLAG_STREAM;

const OP_USER_OUTSIDE_ROOM = 1;
const OP_USER_IN_ROOM = 2;
const OP_ROOM = 3;
const OP_SERVER = 4;

// Reconnect delays: 250 ms doubling to 10 s, each drawn from [half, full] of its step, so that
// the clients of a restarted server do not all come back in the same instant.
const BACKOFF_FIRST_MS = 250;
const BACKOFF_CAP_MS = 10_000;

const HEARTBEAT_MS = 30_000;
// A valid user id that no app is expected to use: the liveness probe asks about it.
const PROBE_ID = '_herald.sdk.probe_';

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/**
 * Creates an engine for the app `appId`, like the vendor's `VERTC.createEngine(appId)`.
 * `options.server` is Herald's base address (default: the page's origin); the engine connects
 * to `ws(s)://<host>/ws?appId=…` when its first call needs the connection. `options.autoAck`
 * (default true) acknowledges each received message once its handlers have returned; with
 * false, call `engine.ack(msgid)` yourself.
 */
export function createEngine(appId, options = {}) {
  return new Engine(appId, options);
}

/** Closes the engine's connection for good, like the vendor's `VERTC.destroyEngine(engine)`. */
export function destroyEngine(engine) {
  engine.destroy();
}

class Engine {
  #appId;
  #url;
  #handlers = new Map();

  #ws = null;
  // 'idle' (nothing asked for a connection yet), 'connecting' (the first connection),
  // 'connected', 'reconnecting', 'disconnected' (destroyed, or the first connection failed: the
  // next call tries again). onConnectionStateChanged reports every change but the initial 'idle'.
  #state = 'idle';
  #everConnected = false;
  #destroyed = false;
  #attempt = 0;
  #retryTimer = null;
  #heartbeatMs;
  #heartbeatTimer = null;
  #lastFrameAt = 0;
  #probing = false;
  // Answers still awaited from the calls sent to restore state on a new connection; the state
  // becomes 'connected' when none is left.
  #restoring = null;

  // What the engine restores on every new connection.
  #login = null; // {token, userId, status: 'pending'|'in'|'refused', sentAt, waiters[]}
  #serverParams = null; // {signature, url, waiters[]}
  #rooms = new Map(); // roomId → {token, userId, joined, rejoin, sentAt, waiters[]}

  // Calls waiting for their answer.
  #logouts = [];
  #leaves = new Map(); // roomId → waiters[]
  #peerQueries = []; // {peerUserId, sent, resolve, reject}

  // One msgid sequence for every send, from 1, as the vendor's SDK numbers them.
  #nextMsgid = 1;
  #inFlight = new Map(); // msgid → {event, roomId}: sends whose result has not arrived

  // Acknowledgements of the current connection (msgids start again at 1 on each connection).
  #autoAck;
  #handled = 0; // the highest msgid whose handlers have returned
  #ackScheduled = false;

  constructor(appId, { server, heartbeatMs = HEARTBEAT_MS, autoAck = true } = {}) {
    if (typeof appId !== 'string' || appId === '') throw new TypeError('appId must be a non-empty string');
    if (!(heartbeatMs > 0)) throw new TypeError('heartbeatMs must be a positive number of milliseconds');
    if (typeof autoAck !== 'boolean') throw new TypeError('autoAck must be true or false');
    this.#appId = appId;
    this.#heartbeatMs = heartbeatMs;
    this.#autoAck = autoAck;
    this.#url = gatewayUrl(server ?? globalThis.location?.origin, appId);
  }

  /** The app id the engine was created for. */
  get appId() {
    return this.#appId;
  }

  /** 'idle', 'connecting', 'connected', 'reconnecting' or 'disconnected' (see onConnectionStateChanged). */
  get connectionState() {
    return this.#state;
  }

  // ---- events ---------------------------------------------------------------------------

  /** Subscribes `handler` to the callback `name` (see `events`). */
  on(name, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    let set = this.#handlers.get(name);
    if (!set) this.#handlers.set(name, (set = new Set()));
    set.add(handler);
  }

  /** Unsubscribes `handler`, or every handler of `name` when `handler` is omitted. */
  off(name, handler) {
    if (handler === undefined) this.#handlers.delete(name);
    else this.#handlers.get(name)?.delete(handler);
  }

  #emit(name, payload) {
    for (const handler of [...(this.#handlers.get(name) ?? [])]) {
      // A throwing handler must not stop the other handlers or the SDK's own bookkeeping.
      try {
        handler(payload);
      } catch (e) {
        if (typeof globalThis.reportError === 'function') globalThis.reportError(e);
        else console.error(e);
      }
    }
  }

  // ---- out of room ----------------------------------------------------------------------

  /**
   * Logs in as `userId` to receive out-of-room messages. Resolves when the server accepted the
   * login, rejects with a HeraldError (`LOGIN_FAILED` with the LoginErrorCode in `errorCode`, or
   * `ALREADY_LOGIN`) otherwise. `onLoginResult` reports the same.
   */
  async login(token, userId) {
    this.#checkAlive();
    // A login refused for its token may be tried again, here or with updateLoginToken.
    if (this.#login && this.#login.status !== 'refused') {
      throw new HeraldError('ALREADY_LOGIN', `already logged in (or logging in) as ${this.#login.userId}`);
    }
    return new Promise((resolve, reject) => {
      this.#login = { token, userId, status: 'pending', sentAt: 0, waiters: [{ resolve, reject }] };
      this.#sendLogin();
    });
  }

  /** Logs out; resolves when the server confirmed (`onLogout` with reason 0). Server parameters end with the login. */
  async logout() {
    this.#checkAlive();
    const login = this.#login;
    this.#login = null;
    this.#serverParams = null;
    if (login) settle(login.waiters, new HeraldError('CANCELLED', 'logout() was called before the login was answered'));
    if (!this.#isOpen()) return;
    return new Promise((resolve) => {
      this.#logouts.push(resolve);
      this.#sendCall({ call: 'logout' });
    });
  }

  /**
   * Gives the engine a new login token. If the last login was refused for its token (-1000), logs
   * in again with it (the returned promise is that login's); otherwise keeps it for the next
   * automatic login after a reconnect.
   */
  async updateLoginToken(token) {
    this.#checkAlive();
    const login = this.#login;
    if (!login) return;
    login.token = token;
    if (login.status !== 'refused') return;
    return new Promise((resolve, reject) => {
      login.status = 'pending';
      login.waiters.push({ resolve, reject });
      this.#sendLogin();
    });
  }

  /** Resolves with the vendor's USER_ONLINE_STATUS of `userId`: 1 logged in, 0 not. */
  async getPeerOnlineStatus(userId) {
    this.#checkAlive();
    return new Promise((resolve, reject) => {
      const q = { peerUserId: userId, sent: false, resolve, reject };
      this.#peerQueries.push(q);
      this.#connect();
      if (this.#isOpen()) q.sent = this.#sendCall({ call: 'getPeerOnlineStatus', peerUserId: userId });
    });
  }

  /**
   * Sets where sendServerMessage posts to. Resolves on `onServerParamsSetResult(200)`, rejects
   * with `SERVER_PARAMS_NOT_SET` (and the code) otherwise. Restored after every reconnect.
   */
  async setServerParams(signature, url) {
    this.#checkAlive();
    if (this.#serverParams) settle(this.#serverParams.waiters, new HeraldError('CANCELLED', 'replaced by a newer setServerParams'));
    return new Promise((resolve, reject) => {
      this.#serverParams = { signature, url, waiters: [{ resolve, reject }] };
      this.#connect();
      if (this.#isOpen()) this.#sendCall({ call: 'setServerParams', signature, url });
    });
  }

  /** Sends a text message to a logged-in user; resolves with its msgid. Result: `onUserMessageSendResultOutsideRoom`. */
  async sendUserMessageOutsideRoom(userId, message) {
    return this.#send(OP_USER_OUTSIDE_ROOM, userId, '', message, false);
  }

  /** The binary form of sendUserMessageOutsideRoom; `message` is an ArrayBuffer or a typed array. */
  async sendUserBinaryMessageOutsideRoom(userId, message) {
    return this.#send(OP_USER_OUTSIDE_ROOM, userId, '', message, true);
  }

  /** Sends a text message to the business server set with setServerParams; result: `onServerMessageSendResult`. */
  async sendServerMessage(message) {
    return this.#send(OP_SERVER, '', '', message, false);
  }

  /** The binary form of sendServerMessage. */
  async sendServerBinaryMessage(message) {
    return this.#send(OP_SERVER, '', '', message, true);
  }

  // ---- rooms ----------------------------------------------------------------------------

  /**
   * Joins `roomId` as `userInfo.userId` (the vendor's Web order: token, roomId, userInfo,
   * roomConfig; `roomConfig` is accepted and ignored). Resolves when joined; rejects with
   * `JOIN_ROOM_FAILED` (the room state in `errorCode`) or `ROOM_ALREADY_EXIST`. The room is
   * rejoined after every reconnect until leaveRoom.
   */
  // eslint-disable-next-line no-unused-vars
  async joinRoom(token, roomId, userInfo, roomConfig) {
    this.#checkAlive();
    const userId = typeof userInfo === 'string' ? userInfo : userInfo?.userId;
    if (this.#rooms.has(roomId)) {
      throw new HeraldError('ROOM_ALREADY_EXIST', `room ${roomId} is already joined (or being joined)`, -1013);
    }
    return new Promise((resolve, reject) => {
      const room = { token, userId, joined: false, rejoin: false, sentAt: 0, waiters: [{ resolve, reject }] };
      this.#rooms.set(roomId, room);
      this.#connect();
      if (this.#isOpen()) this.#sendJoin(roomId, room);
    });
  }

  /** Leaves `roomId`; resolves on `onLeaveRoom`. */
  async leaveRoom(roomId) {
    this.#checkAlive();
    const room = this.#rooms.get(roomId);
    this.#rooms.delete(roomId);
    if (room) settle(room.waiters, new HeraldError('CANCELLED', 'leaveRoom() was called before the join was answered'));
    if (!this.#isOpen()) return;
    return new Promise((resolve) => {
      const waiting = this.#leaves.get(roomId) ?? [];
      waiting.push(resolve);
      this.#leaves.set(roomId, waiting);
      this.#sendCall({ call: 'leaveRoom', roomId });
    });
  }

  /**
   * Renews a joined room's token (after `onTokenWillExpire`). Silent on success; an invalid
   * token is reported by `onRoomStateChanged` with state -1010. The new token is also the one
   * used to rejoin after a reconnect.
   */
  async updateToken(roomId, token) {
    this.#checkAlive();
    const room = this.#rooms.get(roomId);
    if (room) room.token = token;
    if (this.#isOpen()) this.#sendCall({ call: 'updateToken', roomId, token });
  }

  /** Sends a text message to `userId` in a joined room; result: `onUserMessageSendResult`. */
  async sendUserMessage(roomId, userId, message) {
    return this.#send(OP_USER_IN_ROOM, userId, roomId, message, false);
  }

  /** The binary form of sendUserMessage. */
  async sendUserBinaryMessage(roomId, userId, message) {
    return this.#send(OP_USER_IN_ROOM, userId, roomId, message, true);
  }

  /** Sends a text message to every other member of a joined room; result: `onRoomMessageSendResult` (200 = success). */
  async sendRoomMessage(roomId, message) {
    return this.#send(OP_ROOM, '', roomId, message, false);
  }

  /** The binary form of sendRoomMessage. */
  async sendRoomBinaryMessage(roomId, message) {
    return this.#send(OP_ROOM, '', roomId, message, true);
  }

  /** Closes the connection for good; every later call rejects with `ENGINE_DESTROYED`. */
  destroy() {
    if (this.#destroyed) return;
    this.#destroyed = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#heartbeatTimer);
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      detach(ws);
      ws.close(1000);
    }
    this.#failEverything(new HeraldError('ENGINE_DESTROYED', 'the engine was destroyed'));
    this.#setState('disconnected', 'destroyed');
  }

  // ---- sending ----------------------------------------------------------------------------

  // Numbers a message, writes it as a send frame, and resolves with its msgid. Every msgid gets
  // exactly one result event: from the server, or from the SDK when the message could not be
  // sent (102 no connection, 103 too long, 104/100 ids that cannot be encoded) or its connection
  // was lost before the result came (2 broken).
  async #send(op, to, roomId, message, binary) {
    this.#checkAlive();
    let payload;
    if (!binary) payload = utf8.encode(String(message));
    else if (message instanceof ArrayBuffer) payload = new Uint8Array(message);
    else if (ArrayBuffer.isView(message)) payload = new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    else throw new TypeError('a binary message must be an ArrayBuffer or a typed array');
    const msgid = this.#nextMsgid++;
    const event = RESULT_EVENT[op];
    const toBytes = utf8.encode(to);
    const roomBytes = utf8.encode(roomId);
    let local = 0;
    if (payload.byteLength > MAX_MESSAGE_BYTES) local = SEND_EXCEED_MAX_LENGTH;
    else if (toBytes.length > 255) local = SEND_EMPTY_USER;
    else if (roomBytes.length > 255) local = SEND_NOT_JOIN;
    else if (!this.#isOpen()) local = SEND_NO_CONNECTION;
    if (local) {
      // Answered later, like a server result: after the caller has had its msgid.
      setTimeout(() => this.#emit(event, resultPayload(op, msgid, roomId, local)), 0);
      return msgid;
    }
    this.#inFlight.set(msgid, { op, roomId });
    this.#ws.send(encodeSend(op, binary, msgid, toBytes, roomBytes, payload));
    return msgid;
  }

  /**
   * Acknowledges every message up to and including `msgid` on the current connection: the app
   * has processed them. Needed only with `autoAck: false`. Acks are cumulative and never move
   * back; msgids start again at 1 after a reconnect, and an ack sent while disconnected is
   * dropped (the messages it would cover belonged to the lost connection).
   */
  ack(msgid) {
    this.#checkAlive();
    if (!Number.isSafeInteger(msgid) || msgid < 0) throw new TypeError('msgid must be a non-negative integer');
    this.#sendCall({ call: 'ack', msgid });
  }

  // Notes that the handlers of message `msgid` returned, and acknowledges once this task is done.
  #handledMessage(msgid) {
    if (msgid > this.#handled) this.#handled = msgid;
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    setTimeout(() => {
      this.#ackScheduled = false;
      // `#handled` starts again at 0 on a new connection: nothing of a lost one is acknowledged
      // on the next (and while disconnected, #sendCall sends nothing).
      if (this.#handled > 0) this.#sendCall({ call: 'ack', msgid: this.#handled });
    }, 0);
  }

  #sendCall(call) {
    if (!this.#isOpen()) return false;
    this.#ws.send(JSON.stringify(call));
    return true;
  }

  #sendLogin() {
    this.#connect();
    const login = this.#login;
    if (this.#isOpen() && login) {
      login.sentAt = performance.now();
      const call = { call: 'login', token: login.token, uid: login.userId };
      // After a reconnect: resume the login's stream where the last message left it.
      if (login.pos) call.resume = login.pos;
      this.#sendCall(call);
    }
  }

  #sendJoin(roomId, room) {
    room.sentAt = performance.now();
    const call = { call: 'joinRoom', roomId, uid: room.userId, token: room.token };
    if (room.pos) call.resume = room.pos;
    this.#sendCall(call);
  }

  // ---- connection ---------------------------------------------------------------------------

  #isOpen() {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  #checkAlive() {
    if (this.#destroyed) throw new HeraldError('ENGINE_DESTROYED', 'the engine was destroyed');
  }

  // Opens the connection if there is none and no reconnect is already scheduled.
  #connect() {
    if (this.#ws || this.#destroyed || this.#retryTimer !== null) return;
    if (!this.#everConnected) this.#setState('connecting', 'first call');
    let ws;
    try {
      ws = new WebSocket(this.#url);
    } catch (e) {
      // Only a malformed URL throws here; nothing will ever connect.
      this.#failEverything(new HeraldError('CONNECTION_FAILED', `cannot open ${this.#url}: ${e.message}`));
      this.#setState('disconnected', e.message);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    ws.onopen = () => this.#opened();
    ws.onmessage = (e) => this.#frame(e.data);
    ws.onclose = (e) => this.#closed(ws, e.code, e.reason);
    ws.onerror = () => {}; // always followed by close, which says more
  }

  // A new connection: send everything the engine holds, then report 'connected' once answered.
  #opened() {
    this.#everConnected = true;
    this.#handled = 0;
    this.#lastFrameAt = performance.now();
    this.#probing = false;
    this.#heartbeatTimer = setInterval(() => this.#heartbeat(), this.#heartbeatMs / 3);
    const waiting = new Set();
    const login = this.#login;
    if (login) {
      if (login.status === 'in') login.status = 'pending';
      if (login.status === 'pending') {
        this.#sendLogin();
        waiting.add('login');
      }
    }
    if (this.#serverParams) {
      const { signature, url } = this.#serverParams;
      this.#sendCall({ call: 'setServerParams', signature, url });
      waiting.add('serverParams');
    }
    for (const [roomId, room] of this.#rooms) {
      room.rejoin = room.joined;
      room.joined = false;
      this.#sendJoin(roomId, room);
      waiting.add(`room:${roomId}`);
    }
    for (const q of this.#peerQueries) {
      if (!q.sent) q.sent = this.#sendCall({ call: 'getPeerOnlineStatus', peerUserId: q.peerUserId });
    }
    this.#restoring = waiting;
    this.#restored(null);
  }

  // Marks one restoring answer as arrived; reports 'connected' once all have.
  #restored(key) {
    if (!this.#restoring) return;
    if (key !== null) this.#restoring.delete(key);
    if (this.#restoring.size === 0) {
      this.#restoring = null;
      // The backoff starts again only once a connection has proved useful, so a server that
      // accepts and then drops every connection is not hammered.
      this.#attempt = 0;
      this.#setState('connected', this.#state === 'reconnecting' ? 'reconnected: logged in and rooms rejoined' : 'connected');
    }
  }

  #closed(ws, code, reason) {
    if (ws !== this.#ws) return;
    detach(ws);
    this.#ws = null;
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    this.#restoring = null;
    const why = code === null ? reason : `closed with code ${code}${reason ? ` (${reason})` : ''}`;
    // Sends on the lost connection will never get their result.
    for (const [msgid, { op, roomId }] of this.#inFlight) {
      this.#emit(RESULT_EVENT[op], resultPayload(op, msgid, roomId, SEND_BROKEN));
    }
    this.#inFlight.clear();
    // Leaving and logging out are done once the connection is gone.
    for (const resolve of this.#logouts.splice(0)) resolve();
    for (const [, waiting] of this.#leaves) waiting.forEach((resolve) => resolve());
    this.#leaves.clear();
    for (const q of this.#peerQueries) q.sent = false;

    if (!this.#everConnected) {
      // The first connection could not be made: the calls that asked for it fail, and the next
      // call tries again.
      this.#failEverything(new HeraldError('CONNECTION_FAILED', `cannot connect to ${this.#url} (${why})`));
      this.#setState('disconnected', why);
      return;
    }
    this.#setState('reconnecting', why);
    this.#scheduleReconnect();
  }

  // Runs three times per heartbeatMs while a connection is open; see "Liveness" at the top.
  #heartbeat() {
    const ws = this.#ws;
    const silent = performance.now() - this.#lastFrameAt;
    if (this.#probing && silent >= this.#heartbeatMs * 4 / 3 - 1) {
      // Do not wait for a close handshake the dead connection cannot complete.
      ws.close(4000, 'no answer');
      this.#closed(ws, null, `no answer from the server for ${Math.round(silent)} ms`);
    } else if (!this.#probing && silent >= this.#heartbeatMs - 1) {
      this.#probing = this.#sendCall({ call: 'getPeerOnlineStatus', peerUserId: PROBE_ID });
    }
  }

  #scheduleReconnect() {
    const step = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** this.#attempt);
    const delay = step / 2 + Math.random() * (step / 2);
    this.#attempt += 1;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#connect();
    }, delay);
  }

  #setState(state, reason) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit('onConnectionStateChanged', { state, reason });
  }

  #failEverything(error) {
    if (this.#login && this.#login.status !== 'in') {
      settle(this.#login.waiters, error);
      this.#login = null;
    }
    if (this.#serverParams) {
      settle(this.#serverParams.waiters, error);
      this.#serverParams = null;
    }
    for (const [roomId, room] of this.#rooms) {
      if (room.waiters.length) {
        settle(room.waiters, error);
        this.#rooms.delete(roomId);
      }
    }
    for (const q of this.#peerQueries.splice(0)) q.reject(error);
    for (const resolve of this.#logouts.splice(0)) resolve();
    for (const [, waiting] of this.#leaves) waiting.forEach((resolve) => resolve());
    this.#leaves.clear();
  }

  // ---- receiving ----------------------------------------------------------------------------

  #frame(data) {
    this.#lastFrameAt = performance.now();
    this.#probing = false;
    if (typeof data === 'string') {
      let e;
      try {
        e = JSON.parse(data);
      } catch {
        return;
      }
      this.#event(e);
      return;
    }
    const m = decodeMessage(data);
    if (!m) {
      // Unknown frame type or flags: msgids after it could not be trusted. Close as a protocol
      // error; the close starts a reconnect.
      this.#emit('onError', { errorCode: 1002, message: 'invalid message frame from the server' });
      this.#ws?.close(4000, 'protocol error');
      return;
    }
    if (m.pos) {
      // Where this stream is now: a reconnect resumes from here.
      const owner = m.payload.roomId === undefined ? this.#login : this.#rooms.get(m.payload.roomId);
      if (owner) owner.pos = m.pos;
    }
    this.#emit(m.event, m.payload);
    if (this.#autoAck) this.#handledMessage(m.payload.msgid);
  }

  // A login or join answered with its stream (recovery on): note where it starts, and tell the
  // app how a resume went (onRecovery comes before the replayed messages).
  #streamOpened(owner, roomId, userId, stream) {
    if (!stream) return;
    // After a recovered resume the replayed messages move the position on themselves.
    if (stream.recovered !== true) owner.pos = { epoch: stream.epoch, position: stream.position };
    if (stream.recovered !== undefined) {
      this.#emit('onRecovery', { roomId, userId, recovered: stream.recovered, replayed: stream.replayed });
    }
  }

  // Turns a control event of the wire into the vendor's callback, and keeps the SDK's state in step.
  #event(e) {
    switch (e.event) {
      case 'onLoginResult': {
        const login = this.#login;
        let elapsed = 0;
        let opened = null;
        if (login && login.status === 'pending' && login.userId === e.uid) {
          elapsed = Math.round(performance.now() - login.sentAt);
          if (e.errorCode === 0) {
            login.status = 'in';
            settle(login.waiters, null);
            opened = login;
          } else {
            const err = new HeraldError('LOGIN_FAILED', `login as ${e.uid} refused (${e.errorCode})`, e.errorCode);
            settle(login.waiters, err);
            // A refused token can be replaced with updateLoginToken; any other refusal ends it.
            if (e.errorCode === LOGIN_INVALID_TOKEN) login.status = 'refused';
            else this.#login = null;
          }
          this.#restored('login');
        }
        this.#emit('onLoginResult', { userId: e.uid, errorCode: e.errorCode, elapsed });
        if (opened) this.#streamOpened(opened, '', e.uid, e.stream);
        return;
      }
      case 'onLogout':
        if (e.reason === LOGOUT_DUPLICATE) {
          // Another connection logged in as this user: do not log in again after a reconnect,
          // or two clients would take the login from each other forever.
          if (this.#login) settle(this.#login.waiters, new HeraldError('RTM_DUPLICATE_LOGIN', 'logged in elsewhere'));
          this.#login = null;
          this.#serverParams = null;
        } else {
          for (const resolve of this.#logouts.splice(0)) resolve();
        }
        this.#emit('onLogout', { reason: e.reason });
        return;
      case 'onRoomStateChanged': {
        const room = this.#rooms.get(e.roomId);
        let elapsed = 0;
        let opened = null;
        let joinType = 0;
        if (room && e.state !== ROOM_UPDATE_TOKEN_INVALID) {
          const answering = !room.joined && room.userId === e.uid;
          if (answering) {
            elapsed = Math.round(performance.now() - room.sentAt);
            joinType = room.rejoin ? 1 : 0;
          }
          if (e.state === 0 && answering) {
            room.joined = true;
            settle(room.waiters, null);
            opened = room;
          } else if (e.state !== 0) {
            // Every other non-zero state ends the membership (refused, replaced, expired, kicked).
            this.#rooms.delete(e.roomId);
            settle(room.waiters, new HeraldError('JOIN_ROOM_FAILED', `room ${e.roomId}: state ${e.state}`, e.state));
          }
          if (answering) this.#restored(`room:${e.roomId}`);
        }
        this.#emit('onRoomStateChanged', {
          roomId: e.roomId,
          userId: e.uid,
          state: e.state,
          extraInfo: JSON.stringify({ elapsed, join_type: joinType }),
        });
        if (opened) this.#streamOpened(opened, e.roomId, e.uid, e.stream);
        return;
      }
      case 'onLeaveRoom': {
        const waiting = this.#leaves.get(e.roomId);
        if (waiting) {
          waiting.shift()?.();
          if (waiting.length === 0) this.#leaves.delete(e.roomId);
        }
        this.#emit('onLeaveRoom', { roomId: e.roomId });
        return;
      }
      case 'onUserJoined':
        this.#emit('onUserJoined', { roomId: e.roomId, userId: e.uid, userInfo: { userId: e.uid } });
        return;
      case 'onUserLeave':
        this.#emit('onUserLeave', { roomId: e.roomId, userId: e.uid, userInfo: { userId: e.uid }, reason: e.reason });
        return;
      case 'onTokenWillExpire':
        this.#emit('onTokenWillExpire', { roomId: e.roomId });
        return;
      case 'onUserMessageSendResultOutsideRoom':
      case 'onUserMessageSendResult':
      case 'onRoomMessageSendResult': {
        if (!this.#inFlight.delete(e.msgid)) return; // already reported as broken
        const payload = e.roomId === undefined ? { msgid: e.msgid, error: e.error } : { roomId: e.roomId, msgid: e.msgid, error: e.error };
        this.#emit(e.event, payload);
        return;
      }
      case 'onServerMessageSendResult':
        if (!this.#inFlight.delete(e.msgid)) return;
        this.#emit('onServerMessageSendResult', { msgid: e.msgid, error: e.error, message: fromBase64(e.message ?? '') });
        return;
      case 'onGetPeerOnlineStatus': {
        const i = this.#peerQueries.findIndex((q) => q.sent && q.peerUserId === e.peerUserId);
        if (i >= 0) this.#peerQueries.splice(i, 1)[0].resolve(e.status);
        else if (e.peerUserId === PROBE_ID) return; // the answer to a liveness probe
        this.#emit('onGetPeerOnlineStatus', { peerUserId: e.peerUserId, status: e.status });
        return;
      }
      case 'onServerParamsSetResult': {
        const params = this.#serverParams;
        if (params) {
          if (e.error === SERVER_PARAMS_SET) settle(params.waiters, null);
          else {
            settle(params.waiters, new HeraldError('SERVER_PARAMS_NOT_SET', `setServerParams refused (${e.error})`, e.error));
            this.#serverParams = null;
          }
          this.#restored('serverParams');
        }
        this.#emit('onServerParamsSetResult', { error: e.error });
        return;
      }
      case 'onError':
        this.#emit('onError', { errorCode: e.errorCode, message: e.message });
        return;
      default:
      // Newer servers may add events; an SDK that does not know one skips it.
    }
  }
}

// The result event of each send op.
const RESULT_EVENT = {
  [OP_USER_OUTSIDE_ROOM]: 'onUserMessageSendResultOutsideRoom',
  [OP_USER_IN_ROOM]: 'onUserMessageSendResult',
  [OP_ROOM]: 'onRoomMessageSendResult',
  [OP_SERVER]: 'onServerMessageSendResult',
};

function resultPayload(op, msgid, roomId, error) {
  if (op === OP_USER_IN_ROOM || op === OP_ROOM) return { roomId, msgid, error };
  if (op === OP_SERVER) return { msgid, error, message: new ArrayBuffer(0) };
  return { msgid, error };
}

function settle(waiters, error) {
  for (const w of waiters.splice(0)) {
    if (error) w.reject(error);
    else w.resolve();
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}

function gatewayUrl(server, appId) {
  if (!server) throw new TypeError('no server: pass createEngine(appId, { server: "http://host:port" })');
  const url = new URL(server);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  else if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new TypeError(`server must be http(s) or ws(s): ${server}`);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/ws`;
  url.search = new URLSearchParams({ appId }).toString();
  url.hash = '';
  return url.toString();
}

// docs/protocol.md "Sends": type, flags, op, msgid (u64 LE), recipient, room, payload.
function encodeSend(op, binary, msgid, to, room, payload) {
  const buf = new Uint8Array(13 + to.length + room.length + payload.byteLength);
  const view = new DataView(buf.buffer);
  buf[0] = FRAME_SEND;
  buf[1] = binary ? FLAG_BINARY : 0;
  buf[2] = op;
  view.setBigUint64(3, BigInt(msgid), true);
  buf[11] = to.length;
  buf.set(to, 12);
  buf[12 + to.length] = room.length;
  buf.set(room, 13 + to.length);
  buf.set(payload, 13 + to.length + room.length);
  return buf;
}

// docs/protocol.md "Messages": type, flags, msgid (u64 LE), sender, room, payload. Returns the
// callback and its payload, or null for a frame this SDK must reject.
function decodeMessage(data) {
  const bytes = new Uint8Array(data);
  if (bytes.length < 12 || bytes[0] !== FRAME_MESSAGE || bytes[1] & ~KNOWN_FLAGS) return null;
  const flags = bytes[1];
  const binary = (flags & FLAG_BINARY) !== 0;
  const inRoom = (flags & FLAG_ROOM) !== 0;
  const broadcast = (flags & FLAG_BROADCAST) !== 0;
  if (broadcast && !inRoom) return null;
  const view = new DataView(data);
  const msgid = Number(view.getBigUint64(2, true));
  // With FLAG_STREAM, the message's place in its stream (epoch, position; u64 LE each) follows.
  let at = 10;
  let pos = null;
  if (flags & FLAG_STREAM) {
    if (bytes.length < 28) return null;
    pos = { epoch: Number(view.getBigUint64(10, true)), position: Number(view.getBigUint64(18, true)) };
    at = 26;
  }
  const n = bytes[at];
  if (bytes.length < at + 2 + n) return null;
  const userId = fromUtf8.decode(bytes.subarray(at + 1, at + 1 + n));
  const m = bytes[at + 1 + n];
  const start = at + 2 + n + m;
  if (bytes.length < start || (m > 0 && !inRoom)) return null;
  const roomId = fromUtf8.decode(bytes.subarray(at + 2 + n, start));
  const message = binary ? data.slice(start) : fromUtf8.decode(bytes.subarray(start));
  let event;
  if (!inRoom) event = binary ? 'onUserBinaryMessageReceivedOutsideRoom' : 'onUserMessageReceivedOutsideRoom';
  else if (broadcast) event = binary ? 'onRoomBinaryMessageReceived' : 'onRoomMessageReceived';
  else event = binary ? 'onUserBinaryMessageReceived' : 'onUserMessageReceived';
  const payload = inRoom ? { roomId, userId, message, msgid } : { userId, message, msgid };
  return { event, payload, pos };
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out.buffer;
}

/** The vendor-style namespace: `VERTC.createEngine(appId)`, `VERTC.events`, `VERTC.destroyEngine(engine)`. */
const VERTC = Object.freeze({ createEngine, destroyEngine, events, USER_ONLINE_STATUS, HeraldError });
export default VERTC;
