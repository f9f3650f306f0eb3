//! Webhooks: presence events (`UserJoinRoom`, `UserLeaveRoom`, `UserLogin`, `UserLogout`) POSTed to
//! each app's business server in the vendor's envelope, signed as the vendor signs (spec §7).
//!
//! The hub reports presence through [`Hooks`] while it holds an app lock, so [`Webhooks`] does
//! nothing there but clone a few shared ids into a bounded queue: it never blocks and never
//! awaits. A full queue drops the event and counts it. One delivery task per app takes events off
//! its queue in order and delivers them one at a time, each with at most 3 attempts, each attempt
//! bounded by a timeout (5 s) and followed by a short backoff when it fails. A slow or dead
//! receiver therefore delays only its own app's webhooks, never a message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::hub::{Departure, Hooks};
use herald_core::time::Timestamp;
use herald_proto::ids::{AppId, RoomId, UserId};
use herald_proto::sign::UtcTime;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use rand::distributions::Alphanumeric;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::upstream::{http_client, HttpClient};

/// The envelope's `Version`.
pub const VERSION: &str = "2020-12-01";

/// The most of a receiver's answer that is read (and then ignored) so its connection can be reused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One app's webhook settings: `[apps.webhook]` in the config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed. `http://` only for now.
    pub url: String,
    /// The secret mixed into each event's `Signature`.
    pub secret: String,
    /// The events sent: any of `UserJoinRoom`, `UserLeaveRoom`, `UserLogin`, `UserLogout`.
    /// Default: all four.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Events waiting for delivery at most; more are dropped and counted. Default 10 000.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn all_events() -> Vec<String> {
    EventType::ALL
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect()
}

fn default_queue() -> usize {
    10_000
}

impl WebhookConfig {
    /// Checks the settings; the error is a sentence naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url {:?} is not a URL: {e}", self.url))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "url {:?}: https is not supported yet (TLS comes with the hardening work); use http://",
                    self.url
                ))
            }
            _ => return Err(format!("url {:?} must start with http://", self.url)),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("url {:?} has no host", self.url));
        }
        if self.secret.is_empty() {
            return Err("secret must not be empty".to_owned());
        }
        if self.events.is_empty() {
            return Err(format!(
                "events must name at least one of {}",
                EventType::names()
            ));
        }
        if let Some(unknown) = self.events.iter().find(|e| EventType::parse(e).is_none()) {
            return Err(format!(
                "events: unknown event {unknown:?}; expected any of {}",
                EventType::names()
            ));
        }
        if self.queue == 0 {
            return Err("queue must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// How deliveries are attempted. Fixed in production ([`RetryPolicy::default`]); tests shorten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long one attempt may take: connecting, sending, and the receiver's answer.
    pub timeout: Duration,
    /// The pauses after the first and the second failed attempt; there is no fourth attempt.
    pub backoff: [Duration; 2],
}

impl Default for RetryPolicy {
    /// The vendor's contract (an answer within 5 s, at most 3 deliveries), with pauses of 1 s and 2 s.
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(5),
            backoff: [Duration::from_secs(1), Duration::from_secs(2)],
        }
    }
}

/// Webhook counters since start, all apps together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Events the receiver accepted (HTTP 200).
    pub delivered: u64,
    /// Events given up after the last attempt failed.
    pub failed: u64,
    /// Events dropped because their app's queue was full.
    pub dropped: u64,
    /// Attempts after a failed one.
    pub retried: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
}

/// The event types Herald sends (`User…` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    JoinRoom,
    LeaveRoom,
    Login,
    Logout,
}

impl EventType {
    const ALL: [EventType; 4] = [
        EventType::JoinRoom,
        EventType::LeaveRoom,
        EventType::Login,
        EventType::Logout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EventType::JoinRoom => "UserJoinRoom",
            EventType::LeaveRoom => "UserLeaveRoom",
            EventType::Login => "UserLogin",
            EventType::Logout => "UserLogout",
        }
    }

    fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == s)
    }

    fn names() -> String {
        EventType::ALL.map(EventType::as_str).join(", ")
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`EventType`]s.
#[derive(Debug, Clone, Copy)]
struct EventSet(u8);

impl EventSet {
    fn from_names(names: &[String]) -> EventSet {
        EventSet(
            names
                .iter()
                .filter_map(|n| EventType::parse(n))
                .fold(0, |set, e| set | e.bit()),
        )
    }

    fn contains(self, e: EventType) -> bool {
        self.0 & e.bit() != 0
    }
}

/// A presence fact as the hub reported it; formatted by the delivery task, off the app lock.
enum Presence {
    Joined {
        room: RoomId,
        uid: UserId,
    },
    Left {
        room: RoomId,
        uid: UserId,
        why: Departure,
        joined_at: Timestamp,
    },
    Login {
        uid: UserId,
    },
    Logout {
        uid: UserId,
        why: Departure,
        since: Timestamp,
    },
}

struct Pending {
    presence: Presence,
    at: Timestamp,
}

impl Pending {
    fn event_type(&self) -> EventType {
        match self.presence {
            Presence::Joined { .. } => EventType::JoinRoom,
            Presence::Left { .. } => EventType::LeaveRoom,
            Presence::Login { .. } => EventType::Login,
            Presence::Logout { .. } => EventType::Logout,
        }
    }

    /// The `EventData` string (DECISIONS.md): ids, `Timestamp` in ms and, for the ends, `Reason`
    /// and `Duration` in whole seconds.
    fn event_data(&self) -> String {
        let at = self.at;
        let data = match &self.presence {
            Presence::Joined { room, uid } => EventData {
                room_id: Some(room.as_str()),
                ..EventData::new(uid, at)
            },
            Presence::Left {
                room,
                uid,
                why,
                joined_at,
            } => EventData {
                room_id: Some(room.as_str()),
                reason: Some(match why {
                    Departure::Left => "leaveRoom",
                    Departure::ConnectionLost => "connectionLost",
                    Departure::Kicked => "kickedByServer",
                    Departure::TokenExpired => "tokenExpired",
                }),
                duration: Some(at.micros_since(*joined_at) / 1_000_000),
                ..EventData::new(uid, at)
            },
            Presence::Login { uid } => EventData::new(uid, at),
            Presence::Logout { uid, why, since } => EventData {
                reason: Some(match why {
                    Departure::Left => "logout",
                    Departure::ConnectionLost => "connectionLost",
                    Departure::Kicked => "kickedByServer",
                    Departure::TokenExpired => "tokenExpired",
                }),
                duration: Some(at.micros_since(*since) / 1_000_000),
                ..EventData::new(uid, at)
            },
        };
        serde_json::to_string(&data).unwrap_or_default()
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct EventData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    user_id: &'a str,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
}

impl<'a> EventData<'a> {
    fn new(uid: &'a UserId, at: Timestamp) -> Self {
        EventData {
            room_id: None,
            user_id: uid.as_str(),
            timestamp: at.micros() / 1000,
            reason: None,
            duration: None,
        }
    }
}

/// The vendor's callback envelope (spec §7).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<'a> {
    event_type: &'a str,
    event_data: &'a str,
    event_time: &'a str,
    event_id: &'a str,
    app_id: &'a str,
    version: &'a str,
    signature: &'a str,
    nonce: &'a str,
}

/// An event's `Signature` (spec §7): the eight strings sorted by value (byte order), concatenated
/// with no separator, SHA-256, lowercase hex. A plain hash with the secret inside, not an HMAC.
#[allow(clippy::too_many_arguments)]
pub fn signature(
    event_type: &str,
    event_data: &str,
    event_time: &str,
    event_id: &str,
    app_id: &str,
    version: &str,
    nonce: &str,
    secret: &str,
) -> String {
    let mut parts = [
        event_type, event_data, event_time, event_id, app_id, version, nonce, secret,
    ];
    parts.sort_unstable();
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// `t` as ISO-8601 UTC to the second, the vendor's `EventTime` form: `2024-01-01T00:00:00Z`.
pub fn iso8601(t: Timestamp) -> String {
    let t = UtcTime::from_unix(t.secs() as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Four random alphanumerics, the envelope's `Nonce`.
fn nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(4)
        .map(char::from)
        .collect()
}

/// Unique `EventId`s: a random per-process prefix and a counter.
struct EventIds {
    prefix: u64,
    next: AtomicU64,
}

impl EventIds {
    fn next(&self) -> String {
        format!("{:016x}-{}", self.prefix, self.next.fetch_add(1, Relaxed))
    }
}

/// One app's queue, as the hooks see it.
struct AppQueue {
    events: EventSet,
    queue: mpsc::Sender<Pending>,
}

/// Webhook delivery for every app that has a webhook. See the module docs.
pub struct Webhooks {
    apps: HashMap<AppId, AppQueue>,
    counters: Arc<Counters>,
}

impl Webhooks {
    /// Starts delivery for `apps` (those that have a webhook), one task each, with the production
    /// [`RetryPolicy`]. Must be called within a tokio runtime.
    pub fn start(apps: Vec<(AppId, WebhookConfig)>) -> Arc<Webhooks> {
        Webhooks::start_with(apps, RetryPolicy::default())
    }

    /// As [`Webhooks::start`], attempting deliveries as `policy` says.
    pub fn start_with(apps: Vec<(AppId, WebhookConfig)>, policy: RetryPolicy) -> Arc<Webhooks> {
        let counters = Arc::new(Counters::default());
        let ids = Arc::new(EventIds {
            prefix: rand::random(),
            next: AtomicU64::new(1),
        });
        let client = http_client();
        let apps = apps
            .into_iter()
            .map(|(app, config)| {
                let (queue, pending) = mpsc::channel(config.queue.max(1));
                let task = Poster {
                    app: app.clone(),
                    url: config.url,
                    secret: config.secret,
                    client: client.clone(),
                    policy,
                    counters: counters.clone(),
                    ids: ids.clone(),
                };
                tokio::spawn(task.run(pending));
                let events = EventSet::from_names(&config.events);
                (app, AppQueue { events, queue })
            })
            .collect();
        Arc::new(Webhooks { apps, counters })
    }

    /// The counters so far.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.counters;
        WebhookStats {
            delivered: c.delivered.load(Relaxed),
            failed: c.failed.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            retried: c.retried.load(Relaxed),
        }
    }

    /// Queues `presence` for `app` if the app wants it. Called under the hub's app lock: never
    /// blocks, never waits.
    fn offer(&self, app: &AppId, at: Timestamp, presence: impl FnOnce() -> Presence) {
        let Some(target) = self.apps.get(app) else {
            return;
        };
        let pending = Pending {
            presence: presence(),
            at,
        };
        if !target.events.contains(pending.event_type()) {
            return;
        }
        // Closed only if the delivery task is gone (runtime shutting down): a drop all the same.
        if target.queue.try_send(pending).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl Hooks for Webhooks {
    fn user_joined(&self, app: &AppId, room: &RoomId, uid: &UserId, at: Timestamp) {
        self.offer(app, at, || Presence::Joined {
            room: room.clone(),
            uid: uid.clone(),
        });
    }

    fn user_left(
        &self,
        app: &AppId,
        room: &RoomId,
        uid: &UserId,
        why: Departure,
        joined_at: Timestamp,
        at: Timestamp,
    ) {
        self.offer(app, at, || Presence::Left {
            room: room.clone(),
            uid: uid.clone(),
            why,
            joined_at,
        });
    }

    fn user_login(&self, app: &AppId, uid: &UserId, at: Timestamp) {
        self.offer(app, at, || Presence::Login { uid: uid.clone() });
    }

    fn user_logout(
        &self,
        app: &AppId,
        uid: &UserId,
        why: Departure,
        since: Timestamp,
        at: Timestamp,
    ) {
        self.offer(app, at, || Presence::Logout {
            uid: uid.clone(),
            why,
            since,
        });
    }
}

/// One app's webhook task: posts its queued events in order. (Not a `Delivery`, which is a
/// message encoded for its recipients.)
struct Poster {
    app: AppId,
    url: String,
    secret: String,
    client: HttpClient,
    policy: RetryPolicy,
    counters: Arc<Counters>,
    ids: Arc<EventIds>,
}

impl Poster {
    /// Delivers queued events in order, one at a time, until the [`Webhooks`] is dropped and the
    /// queue drained.
    async fn run(self, mut pending: mpsc::Receiver<Pending>) {
        while let Some(event) = pending.recv().await {
            let event_type = event.event_type().as_str();
            let event_id = self.ids.next();
            let body = self.envelope(&event, event_type, &event_id);
            if self.deliver(body, event_type, &event_id).await {
                self.counters.delivered.fetch_add(1, Relaxed);
            } else {
                self.counters.failed.fetch_add(1, Relaxed);
            }
        }
    }

    /// The signed JSON body of `event`. Retries send the same body: same `EventId`, same `Nonce`.
    fn envelope(&self, event: &Pending, event_type: &str, event_id: &str) -> Bytes {
        let event_data = event.event_data();
        let event_time = iso8601(event.at);
        let app_id = self.app.as_str();
        let nonce = nonce();
        let signature = signature(
            event_type,
            &event_data,
            &event_time,
            event_id,
            app_id,
            VERSION,
            &nonce,
            &self.secret,
        );
        let envelope = Envelope {
            event_type,
            event_data: &event_data,
            event_time: &event_time,
            event_id,
            app_id,
            version: VERSION,
            signature: &signature,
            nonce: &nonce,
        };
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// Attempts `body` up to three times; true when the receiver accepted it.
    async fn deliver(&self, body: Bytes, event_type: &str, event_id: &str) -> bool {
        let mut pauses = self.policy.backoff.iter();
        loop {
            let error = match self.attempt(body.clone()).await {
                Ok(()) => return true,
                Err(e) => e,
            };
            let Some(pause) = pauses.next() else {
                tracing::warn!(app = %self.app, event_type, event_id, error, "webhook failed after 3 attempts");
                return false;
            };
            tracing::debug!(app = %self.app, event_type, event_id, error, "webhook attempt failed; retrying");
            self.counters.retried.fetch_add(1, Relaxed);
            tokio::time::sleep(*pause).await;
        }
    }

    /// One POST: Ok when the receiver answers 200 within the timeout.
    async fn attempt(&self, body: Bytes) -> Result<(), String> {
        let request = Request::post(self.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "herald")
            .body(Full::new(body))
            .map_err(|e| format!("bad request: {e}"))?;
        let deadline = tokio::time::Instant::now() + self.policy.timeout;
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|e| format!("unreachable: {e}"))?;
        let status = response.status();
        // Read (and ignore) a short answer so the connection goes back to the pool; the status
        // alone decides.
        let _ = tokio::time::timeout_at(
            deadline,
            Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect(),
        )
        .await;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_worked_example() {
        let s = signature(
            "UserJoinRoom",
            r#"{"RoomId":"room1","UserId":"user_1"}"#,
            "2024-01-01T00:00:00Z",
            "evt-0001",
            "661e0000543cf",
            "2020-12-01",
            "ab12",
            "callback-secret",
        );
        assert_eq!(
            s,
            "5ef30fcf448f90fb3e2f35f4219548004a3b50f34374c5e0f339432d0651aa25"
        );
    }

    #[test]
    fn iso8601_formats_utc_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (15_638_400, "1970-07-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_800, "2000-03-01T00:00:00Z"),
            (1_704_067_199, "2023-12-31T23:59:59Z"),
            (1_704_067_200, "2024-01-01T00:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (4_107_456_000, "2100-02-28T00:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (1_718_454_645, "2024-06-15T12:30:45Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(iso8601(Timestamp::from_secs(secs)), want, "{secs}");
        }
        // Sub-second parts are truncated, not rounded.
        assert_eq!(
            iso8601(Timestamp::from_micros(1_704_067_199_999_999)),
            "2023-12-31T23:59:59Z"
        );
    }

    #[test]
    fn event_data_per_decisions() {
        let uid = UserId::new("u1").unwrap();
        let room = RoomId::new("r1").unwrap();
        let at = Timestamp::from_micros(1_704_067_290_123_456);
        let data = |presence| Pending { presence, at }.event_data();
        assert_eq!(
            data(Presence::Joined {
                room: room.clone(),
                uid: uid.clone()
            }),
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067290123}"#
        );
        assert_eq!(
            data(Presence::Left {
                room: room.clone(),
                uid: uid.clone(),
                why: Departure::Kicked,
                joined_at: Timestamp::from_secs(1_704_067_200),
            }),
            r#"{"RoomId":"r1","UserId":"u1","Timestamp":1704067290123,"Reason":"kickedByServer","Duration":90}"#
        );
        assert_eq!(
            data(Presence::Login { uid: uid.clone() }),
            r#"{"UserId":"u1","Timestamp":1704067290123}"#
        );
        assert_eq!(
            data(Presence::Logout {
                uid,
                why: Departure::Left,
                since: Timestamp::from_secs(1_704_067_290),
            }),
            r#"{"UserId":"u1","Timestamp":1704067290123,"Reason":"logout","Duration":0}"#
        );
    }

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.to_owned(),
            secret: "s".to_owned(),
            events: all_events(),
            queue: default_queue(),
        }
    }

    #[test]
    fn validate_refuses_what_cannot_work() {
        assert_eq!(config("http://hooks.example.com/rtc").validate(), Ok(()));
        let https = config("https://hooks.example.com/").validate().unwrap_err();
        assert!(
            https.contains("TLS comes with the hardening work"),
            "{https}"
        );
        assert!(config("ftp://x/").validate().is_err());
        assert!(config("/relative").validate().is_err());
        assert!(config("not a url").validate().is_err());

        let c = WebhookConfig {
            secret: String::new(),
            ..config("http://h/")
        };
        assert!(c.validate().unwrap_err().contains("secret"));
        let c = WebhookConfig {
            events: vec!["UserJoinRoom".into(), "RecordStarted".into()],
            ..config("http://h/")
        };
        assert!(c.validate().unwrap_err().contains("\"RecordStarted\""));
        let c = WebhookConfig {
            events: vec![],
            ..config("http://h/")
        };
        assert!(c.validate().is_err());
        let c = WebhookConfig {
            queue: 0,
            ..config("http://h/")
        };
        assert!(c.validate().unwrap_err().contains("queue"));
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: WebhookConfig = toml::from_str("url = \"http://h/\"\nsecret = \"s\"").unwrap();
        assert_eq!(c.events, all_events());
        assert_eq!(c.queue, 10_000);
        let e = toml::from_str::<WebhookConfig>("url = \"http://h/\"\nsecret = \"s\"\nretries = 5")
            .unwrap_err();
        assert!(e.to_string().contains("retries"), "{e}");
    }

    #[test]
    fn nonces_are_four_alphanumerics() {
        let n = nonce();
        assert_eq!(n.len(), 4);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
