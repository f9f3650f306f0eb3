// Types of herald.js, the browser SDK for Herald. The protocol behind it is docs/protocol.md.

/** Options of {@link createEngine}. */
export interface EngineOptions {
  /** Herald's base address, `http(s)://host:port[/prefix]`. Default: the page's `location.origin`. */
  server?: string;
  /**
   * Liveness, in milliseconds (default 30000). Browsers do not let a page see or send WebSocket pings,
   * so after this long without a frame from the server the engine makes a small call; if the server
   * stays silent for a third of this longer, the connection is treated as lost and reopened.
   */
  heartbeatMs?: number;
  /**
   * Acknowledge each received message once every handler of its callback has returned (default
   * true): one cumulative `ack` per task. A business server that waits for acks
   * (`X-Herald-Ack-Timeout-Ms`) learns from them who processed its message. With false, call
   * {@link Engine.ack} after processing.
   */
  autoAck?: boolean;
}

/** The connection as {@link Engine.connectionState} and `onConnectionStateChanged` report it. */
export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** `userInfo` of {@link Engine.joinRoom}, as the vendor's Web SDK has it. */
export interface UserInfo {
  userId: string;
  extraInfo?: string;
}

/** A LoginErrorCode: 0 success, -1000 invalid token, -1001 login failed (already logged in), -1002 invalid user id, -1003 server error. */
export type LoginErrorCode = 0 | -1000 | -1001 | -1002 | -1003 | number;

/**
 * A room state: 0 joined; -1000 invalid token, -1001 join failed (invalid uid), -1004 joined elsewhere
 * with the same uid, -1006 kicked out, -1007 invalid room id, -1009 token expired, -1010 updateToken
 * with an invalid token (membership unchanged), -1013 already joined.
 */
export type RoomState = number;

/**
 * A UserMessageSendResult: 0 success, 2 broken (connection lost before the result), 3 no receiver,
 * 5 exceeds QPS, 17 business server unreachable, 18 business server answered non-200, 100 not joined,
 * 102 no connection, 103 longer than 64 KiB, 104 empty or invalid user, 105 not logged in,
 * 106 server params not set.
 */
export type UserMessageSendResult = number;

/** A RoomMessageSendResult: **200** success, 2 broken, 5 exceeds QPS, 100 not joined, 102 no connection, 103 too long. */
export type RoomMessageSendResult = number;

export interface LoginResultEvent {
  userId: string;
  errorCode: LoginErrorCode;
  /** Milliseconds from the login call to its answer (0 if no login of this engine was waiting). */
  elapsed: number;
}
export interface LogoutEvent {
  /** 0 after logout(); 1 when another connection logged in with the same user id (the engine will not log in again by itself). */
  reason: 0 | 1 | number;
}
export interface RoomStateChangedEvent {
  roomId: string;
  userId: string;
  state: RoomState;
  /** JSON made by the SDK as the vendor's is: `{"elapsed":ms,"join_type":0}`; join_type 1 for a rejoin after a reconnect. */
  extraInfo: string;
}
export interface LeaveRoomEvent {
  roomId: string;
}
export interface UserJoinedEvent {
  roomId: string;
  userId: string;
  userInfo: { userId: string };
}
export interface UserLeaveEvent {
  roomId: string;
  userId: string;
  userInfo: { userId: string };
  /** 0 left with leaveRoom, 1 connection lost or token expired, 3 removed by the business server. */
  reason: number;
}
export interface TokenWillExpireEvent {
  roomId: string;
}

/** A text message to this user outside rooms (OpenAPI `SendUnicast`, or another user's sendUserMessageOutsideRoom). */
export interface UserMessageOutsideRoomEvent {
  /** The sender: the OpenAPI's `From`, or the sending user's id. */
  userId: string;
  message: string;
  /** This connection's number for the message: 1, 2, 3, … (starts again at 1 on a new connection). */
  msgid: number;
}
export interface UserBinaryMessageOutsideRoomEvent {
  userId: string;
  message: ArrayBuffer;
  msgid: number;
}
/** A text message in a room: to this user (`onUserMessageReceived`) or to the whole room (`onRoomMessageReceived`). */
export interface RoomScopedMessageEvent {
  roomId: string;
  userId: string;
  message: string;
  msgid: number;
}
export interface RoomScopedBinaryMessageEvent {
  roomId: string;
  userId: string;
  message: ArrayBuffer;
  msgid: number;
}

export interface UserMessageSendResultOutsideRoomEvent {
  msgid: number;
  error: UserMessageSendResult;
}
export interface UserMessageSendResultEvent {
  roomId: string;
  msgid: number;
  error: UserMessageSendResult;
}
export interface RoomMessageSendResultEvent {
  roomId: string;
  msgid: number;
  error: RoomMessageSendResult;
}
export interface ServerMessageSendResultEvent {
  msgid: number;
  error: UserMessageSendResult;
  /** The business server's response body (empty unless it answered 200). */
  message: ArrayBuffer;
}
export interface GetPeerOnlineStatusEvent {
  peerUserId: string;
  /** 1 online (logged in), 0 offline. */
  status: number;
}
export interface ServerParamsSetResultEvent {
  /** 200 set; 105 not logged in; 106 empty signature or URL not allowed. */
  error: number;
}
export interface ErrorEvent {
  /** 4003 a call the server could not read, 4004 a bad send frame, 1002 a frame from the server this SDK rejects. */
  errorCode: number;
  message: string;
}
export interface ConnectionStateChangedEvent {
  state: Exclude<ConnectionState, 'idle'>;
  /** Why, for a person: the close code of a lost connection, and so on. */
  reason: string;
}
/**
 * Herald's: how a login or join that resumed its stream after a reconnect went. The SDK resumes
 * by itself; this comes right after that login's `onLoginResult` (or join's `onRoomStateChanged`)
 * and before the `replayed` messages it missed, which arrive as the usual message callbacks.
 */
export interface RecoveryEvent {
  /** The room of a membership's stream; '' for the login's. */
  roomId: string;
  userId: string;
  /**
   * true: every message missed while away is replayed, in order, with no duplicates. false: some
   * could not be (the server no longer had them: away longer than its window, or the server
   * restarted): fetch the app's state afresh.
   */
  recovered: boolean;
  /** How many messages are replayed. */
  replayed: number;
}

/** Every callback, by the vendor's name, with its payload. */
export interface EngineEvents {
  onLoginResult: LoginResultEvent;
  onLogout: LogoutEvent;
  onRoomStateChanged: RoomStateChangedEvent;
  onLeaveRoom: LeaveRoomEvent;
  onUserJoined: UserJoinedEvent;
  onUserLeave: UserLeaveEvent;
  onTokenWillExpire: TokenWillExpireEvent;
  onUserMessageReceivedOutsideRoom: UserMessageOutsideRoomEvent;
  onUserBinaryMessageReceivedOutsideRoom: UserBinaryMessageOutsideRoomEvent;
  onUserMessageReceived: RoomScopedMessageEvent;
  onUserBinaryMessageReceived: RoomScopedBinaryMessageEvent;
  onRoomMessageReceived: RoomScopedMessageEvent;
  onRoomBinaryMessageReceived: RoomScopedBinaryMessageEvent;
  onUserMessageSendResultOutsideRoom: UserMessageSendResultOutsideRoomEvent;
  onUserMessageSendResult: UserMessageSendResultEvent;
  onRoomMessageSendResult: RoomMessageSendResultEvent;
  onServerMessageSendResult: ServerMessageSendResultEvent;
  onGetPeerOnlineStatus: GetPeerOnlineStatusEvent;
  onServerParamsSetResult: ServerParamsSetResultEvent;
  onError: ErrorEvent;
  onConnectionStateChanged: ConnectionStateChangedEvent;
  onRecovery: RecoveryEvent;
}

export type EventName = keyof EngineEvents;

/** A binary message: an ArrayBuffer or any view of one (Uint8Array, DataView, …). */
export type BinaryMessage = ArrayBuffer | ArrayBufferView;

/** Why a call's promise was rejected. */
export class HeraldError extends Error {
  name: 'HeraldError';
  /**
   * `ALREADY_LOGIN`, `LOGIN_FAILED`, `RTM_DUPLICATE_LOGIN`, `ROOM_ALREADY_EXIST`, `JOIN_ROOM_FAILED`,
   * `SERVER_PARAMS_NOT_SET`, `CONNECTION_FAILED` (the first connection could not be made),
   * `CANCELLED` (a later call superseded this one), `ENGINE_DESTROYED`.
   */
  code: string;
  /** The protocol's code, when the server gave one (a LoginErrorCode, a room state, …). */
  errorCode?: number;
}

/**
 * One engine per app: a connection that logs in, joins rooms and sends and receives messages.
 *
 * The connection opens with the first call that needs it (login, joinRoom, getPeerOnlineStatus,
 * setServerParams). If it cannot, those calls reject with `CONNECTION_FAILED` and the next call
 * tries again. Once it has opened, a lost connection is reopened by itself (backoff 250 ms doubling
 * to 10 s, with jitter), the login, server parameters and rooms are restored with the latest tokens,
 * and `onConnectionStateChanged` reports `reconnecting` and then `connected`. The login and each
 * room resume their streams where the last message received left them: what was sent meanwhile
 * arrives first (see `onRecovery`).
 */
export interface Engine {
  readonly appId: string;
  readonly connectionState: ConnectionState;

  on<K extends EventName>(name: K, handler: (event: EngineEvents[K]) => void): void;
  off<K extends EventName>(name: K, handler?: (event: EngineEvents[K]) => void): void;

  /** Logs in to receive out-of-room messages; resolves once accepted, rejects with `LOGIN_FAILED` or `ALREADY_LOGIN`. */
  login(token: string, userId: string): Promise<void>;
  /** Logs out (and drops the server parameters); resolves on `onLogout` with reason 0. */
  logout(): Promise<void>;
  /** After a login refused for its token (-1000), logs in again with this one; otherwise keeps it for the next automatic login. */
  updateLoginToken(token: string): Promise<void>;
  /** Resolves with 1 (online) or 0 (offline). */
  getPeerOnlineStatus(userId: string): Promise<number>;
  /** Where sendServerMessage posts; resolves on 200, rejects with `SERVER_PARAMS_NOT_SET`. */
  setServerParams(signature: string, url: string): Promise<void>;

  /** Each send resolves with the message's msgid (one sequence for all sends, from 1); its result event carries the same msgid. */
  sendUserMessageOutsideRoom(userId: string, message: string): Promise<number>;
  sendUserBinaryMessageOutsideRoom(userId: string, message: BinaryMessage): Promise<number>;
  sendServerMessage(message: string): Promise<number>;
  sendServerBinaryMessage(message: BinaryMessage): Promise<number>;

  /** Joins a room (vendor Web order); resolves once joined, rejects with `JOIN_ROOM_FAILED` or `ROOM_ALREADY_EXIST`. `roomConfig` is ignored. */
  joinRoom(token: string, roomId: string, userInfo: UserInfo | string, roomConfig?: unknown): Promise<void>;
  /** Leaves a room; resolves on `onLeaveRoom`. */
  leaveRoom(roomId: string): Promise<void>;
  /** Renews a joined room's token; an invalid one is reported by `onRoomStateChanged` state -1010. */
  updateToken(roomId: string, token: string): Promise<void>;
  sendUserMessage(roomId: string, userId: string, message: string): Promise<number>;
  sendUserBinaryMessage(roomId: string, userId: string, message: BinaryMessage): Promise<number>;
  sendRoomMessage(roomId: string, message: string): Promise<number>;
  sendRoomBinaryMessage(roomId: string, message: BinaryMessage): Promise<number>;

  /** Closes the connection for good; later calls reject with `ENGINE_DESTROYED`. */
  /**
   * Acknowledges every message up to and including `msgid` on the current connection (cumulative;
   * never moves back). Needed only with `autoAck: false`. msgids start again at 1 after a
   * reconnect; while disconnected nothing is sent. Throws a TypeError unless `msgid` is a
   * non-negative integer.
   */
  ack(msgid: number): void;
  destroy(): void;
}

/** Creates an engine for `appId`, like the vendor's `VERTC.createEngine(appId)`. */
export function createEngine(appId: string, options?: EngineOptions): Engine;
/** Like the vendor's `VERTC.destroyEngine(engine)`. */
export function destroyEngine(engine: Engine): void;
/** Callback names: `events.onLoginResult === 'onLoginResult'`. */
export const events: { readonly [K in EventName]: K };
export const USER_ONLINE_STATUS: { readonly OFFLINE: 0; readonly ONLINE: 1; readonly UNREACHABLE: 2 };

declare const VERTC: {
  createEngine: typeof createEngine;
  destroyEngine: typeof destroyEngine;
  events: typeof events;
  USER_ONLINE_STATUS: typeof USER_ONLINE_STATUS;
  HeraldError: typeof HeraldError;
};
export default VERTC;
