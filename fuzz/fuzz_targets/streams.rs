//! Recovery through the hub's public API (herald-core `Hub` with recovery on): programs of
//! logins (fresh, resuming from where the client is, or from a made-up place), lost connections,
//! logouts, sends, takeovers, time passing and held streams expiring, for a few users of one app
//! with a small window (4 messages, 10 s).
//!
//! A model keeps, per user, every message the user's stream took (position, number, when its call
//! was accepted), and checks after every step:
//! - within one connection a stream's positions go up by one, in the stream's epoch;
//! - a login's answer names the stream's head; a resume is `recovered: true` exactly when the
//!   stream lives on (connected, or held within the window), the epoch is its, the position is not
//!   beyond it, and every message after it is still kept (by count and by age); then exactly
//!   those messages follow the answer, at their positions; otherwise nothing does;
//! - a chain of connections that each resumed from where the last one was, and was recovered,
//!   has received every message its user's stream took since the chain began, once and in order;
//! - a send is `Queued` for a connected user, `Held` for one whose stream is held within the
//!   window, `NotOnline` otherwise; `stats().held_streams` agrees with the model.
#![no_main]

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use herald_core::apps::{AppSpec, Registry};
use herald_core::hub::{Hub, Offer, Outbox, Outcome, SessionId};
use herald_core::stream::Window;
use herald_core::time::Timestamp;
use herald_fuzz::Cursor;
use herald_proto::client::{Delivery, Event, ReceivedMessage, StreamPos, StreamState};
use herald_proto::ids::{AppId, UserId};
use herald_proto::openapi::{SendRequest, Target};
use herald_proto::token::AccessToken;
use libfuzzer_sys::fuzz_target;

const APP: &str = "65a1b2c3d4e5f60718293a4b";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const USERS: [&str; 3] = ["u0", "u1", "u2"];
const T0: u64 = 1_700_000_000;
const WINDOW: Window = Window {
    messages: 4,
    max_age_us: 10_000_000,
};

/// What one connection was given, in order.
#[derive(Debug, Clone)]
enum Got {
    Event(Event),
    /// (position, message number)
    Message(StreamPos, u64),
}

#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<Got>>,
}

impl Outbox for Recorder {
    fn message(&self, d: &Delivery, pos: Option<StreamPos>, _: Timestamp) -> Offer {
        let mut buf = BytesMut::new();
        d.put_prefix(1, pos, &mut buf);
        buf.extend_from_slice(d.body());
        let m = ReceivedMessage::decode(buf.freeze()).expect("the hub encoded a bad message");
        let pos = m.pos.expect("recovery is on: every message has a position");
        let n = u64::from_le_bytes(m.payload[..8].try_into().expect("an 8-byte payload"));
        self.got.lock().unwrap().push(Got::Message(pos, n));
        Offer::Queued(1)
    }
    fn event(&self, e: &Event) -> Offer {
        self.got.lock().unwrap().push(Got::Event(e.clone()));
        Offer::Queued(0)
    }
}

impl Recorder {
    fn take(&self) -> Vec<Got> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

/// One user's stream as the hub should keep it.
#[derive(Default)]
struct Stream {
    /// Known while the stream lives (a login answered with it).
    epoch: Option<u64>,
    /// (position, message number, accepted) of every message the stream took in this epoch.
    log: Vec<(u64, u64, Timestamp)>,
    /// The client holding the login.
    conn: Option<usize>,
    /// Since when the stream has been held (no connection), until the hub forgets it.
    held_since: Option<Timestamp>,
}

impl Stream {
    fn head(&self) -> u64 {
        self.log.last().map_or(0, |e| e.0)
    }

    /// Whether the stream goes on at `now`: connected, or held within the window.
    fn lives(&self, now: Timestamp) -> bool {
        self.conn.is_some()
            || self
                .held_since
                .is_some_and(|since| now.micros_since(since) <= WINDOW.max_age_us)
    }

    /// What a resume from `from` must replay, or `None` when it cannot be filled.
    fn after(&self, from: StreamPos, now: Timestamp) -> Option<Vec<(u64, u64)>> {
        if Some(from.epoch) != self.epoch || from.position > self.head() {
            return None;
        }
        let kept = &self.log[self.log.len().saturating_sub(WINDOW.messages)..];
        let missed: Vec<_> = self.log.iter().filter(|e| e.0 > from.position).collect();
        let all_kept = missed.iter().all(|m| {
            kept.iter().any(|k| k.0 == m.0) && now.micros_since(m.2) <= WINDOW.max_age_us
        });
        all_kept.then(|| missed.iter().map(|m| (m.0, m.1)).collect())
    }
}

/// One client connection.
struct Client {
    session: SessionId,
    rec: Arc<Recorder>,
    user: usize,
    /// The last position this connection has (from its answer or its messages).
    last: StreamPos,
}

/// Connections that each resumed from where the previous one was, and were recovered.
struct Chain {
    /// The stream's position when the chain began: it must have received everything after it.
    base: u64,
    epoch: u64,
    /// The message numbers its connections received, in order.
    seen: Vec<u64>,
    /// Its current connection.
    conn: usize,
}

struct World {
    hub: Hub,
    now: Timestamp,
    next_message: u64,
    streams: Vec<Stream>,
    clients: Vec<Client>,
    chains: Vec<Option<Chain>>,
}

fn token(uid: &str) -> String {
    AccessToken::new(APP, "", uid, 1, T0 as u32).serialize(KEY)
}

impl World {
    fn new() -> World {
        let mut spec = AppSpec::new(AppId::new(APP).unwrap(), KEY);
        spec.presence_events = false;
        spec.qps_limit = 1_000_000;
        let registry = Registry::new(vec![spec]).unwrap();
        World {
            hub: Hub::new(&registry).with_recovery(WINDOW, 1 << 40),
            now: Timestamp::from_secs(T0),
            next_message: 1,
            streams: USERS.iter().map(|_| Stream::default()).collect(),
            clients: Vec::new(),
            chains: USERS.iter().map(|_| None).collect(),
        }
    }

    /// A message reached client `c`: next in its connection, in its stream.
    fn received(&mut self, c: usize, pos: StreamPos, n: u64) {
        let user = self.clients[c].user;
        let last = self.clients[c].last;
        assert_eq!(pos.epoch, last.epoch, "a message of another epoch");
        assert_eq!(pos.position, last.position + 1, "a gap or a repeat");
        let stream = &self.streams[user];
        assert!(
            stream.log.iter().any(|e| e.0 == pos.position && e.1 == n),
            "message {n} at {pos:?} is not what the stream took there"
        );
        self.clients[c].last = pos;
        if let Some(chain) = &mut self.chains[user] {
            if chain.conn == c {
                chain.seen.push(n);
            }
        }
    }

    /// Reads what client `c` was given since: messages, and the events `allowed` says are fine.
    fn absorb(&mut self, c: usize, allowed: impl Fn(&Event) -> bool) {
        for g in self.clients[c].rec.take() {
            match g {
                Got::Message(pos, n) => self.received(c, pos, n),
                Got::Event(e) => assert!(allowed(&e), "unexpected {e:?}"),
            }
        }
    }

    fn login(&mut self, user: usize, resume: Option<StreamPos>) {
        let now = self.now;
        let stream = &self.streams[user];
        let lives = stream.lives(now);
        let expected = match resume {
            Some(r) if lives => stream.after(r, now),
            _ => None,
        };
        // The client this resume continues, if it continues a chain.
        let chained = resume.is_some()
            && self.chains[user]
                .as_ref()
                .is_some_and(|ch| Some(self.clients[ch.conn].last) == resume);

        let rec = Arc::new(Recorder::default());
        let session = self.hub.connect(APP, rec.clone()).unwrap();
        let uid = USERS[user];
        let checked = self
            .hub
            .prepare_login(APP, session, uid, &token(uid), resume, now);
        let code = self
            .hub
            .commit_login(APP, session, uid, checked, Default::default(), now);
        assert_eq!(code, 0);
        let c = self.clients.len();

        let stream = &mut self.streams[user];
        if let Some(old) = stream.conn.replace(c) {
            // A takeover: the old connection is told DUPLICATE_LOGIN and gets nothing more.
            self.absorb(old, |e| matches!(e, Event::Logout { reason: 1 }));
        }
        let stream = &mut self.streams[user];
        stream.held_since = None;
        if !lives {
            stream.log.clear();
            stream.epoch = None;
        }
        let mut got = rec.take().into_iter();
        let state: StreamState = match got.next() {
            Some(Got::Event(Event::LoginResult {
                error_code: 0,
                stream: Some(s),
                ..
            })) => s,
            other => panic!("not a login answer with a stream: {other:?}"),
        };
        match stream.epoch {
            None => stream.epoch = Some(state.epoch),
            Some(e) => assert_eq!(state.epoch, e, "a stream that lives on changed its epoch"),
        }
        assert_eq!(state.position, stream.head(), "the answer's head");
        // A new stream has nothing to miss: a resume from its own epoch at 0 is whole (a
        // made-up resume can name the epoch a new stream is about to get).
        let fresh = StreamPos {
            epoch: state.epoch,
            position: 0,
        };
        let expected = match expected {
            None if !lives && resume == Some(fresh) => Some(Vec::new()),
            e => e,
        };
        let recovered = match (resume, &expected) {
            (None, _) => None,
            (Some(_), None) => Some(false),
            (Some(_), Some(_)) => Some(true),
        };
        let replayed = expected.as_ref().map_or(0, Vec::len) as u64;
        assert_eq!((state.recovered, state.replayed), (recovered, replayed));
        let from = match (resume, recovered) {
            (Some(r), Some(true)) => r.position,
            _ => state.position,
        };
        self.clients.push(Client {
            session,
            rec,
            user,
            last: StreamPos {
                epoch: state.epoch,
                position: from,
            },
        });
        if chained && recovered == Some(true) {
            if let Some(chain) = &mut self.chains[user] {
                chain.conn = c;
            }
        } else {
            // It has what came before `from`: a recovered resume replays the rest to it.
            self.chains[user] = Some(Chain {
                base: from,
                epoch: state.epoch,
                seen: Vec::new(),
                conn: c,
            });
        }
        let rest: Vec<Got> = got.collect();
        let mut replay = Vec::new();
        for g in rest {
            match g {
                Got::Message(pos, n) => {
                    replay.push((pos.position, n));
                    self.received(c, pos, n);
                }
                Got::Event(e) => panic!("unexpected {e:?} after the answer"),
            }
        }
        assert_eq!(replay, expected.unwrap_or_default(), "the replay");
    }

    /// The connection of client `c` is lost: its login's stream is held.
    fn lose(&mut self, c: usize) {
        let user = self.clients[c].user;
        self.absorb(c, |e| matches!(e, Event::Logout { .. }));
        self.hub.disconnect(APP, self.clients[c].session, self.now);
        let stream = &mut self.streams[user];
        if stream.conn == Some(c) {
            stream.conn = None;
            stream.held_since = Some(self.now);
        }
    }

    /// Client `c` logs out: the stream ends.
    fn logout(&mut self, c: usize) {
        let user = self.clients[c].user;
        self.absorb(c, |e| matches!(e, Event::Logout { reason: 1 }));
        self.hub.logout(APP, self.clients[c].session, self.now);
        self.absorb(c, |e| matches!(e, Event::Logout { .. }));
        self.hub.disconnect(APP, self.clients[c].session, self.now);
        let stream = &mut self.streams[user];
        if stream.conn == Some(c) {
            *stream = Stream::default();
        }
    }

    fn send(&mut self, user: usize) {
        let n = self.next_message;
        self.next_message += 1;
        let req = SendRequest {
            app_id: AppId::new(APP).unwrap(),
            from: UserId::new("srv").unwrap(),
            target: Target::User(UserId::new(USERS[user]).unwrap()),
            binary: true,
            payload: Bytes::copy_from_slice(&n.to_le_bytes()),
        };
        let mut outcomes = Vec::new();
        self.hub
            .send(&req, self.now, |_, o, _| outcomes.push(o))
            .unwrap();
        let stream = &mut self.streams[user];
        let expected = match (stream.conn, stream.lives(self.now)) {
            (Some(_), _) => Outcome::Queued,
            (None, true) => Outcome::Held,
            (None, false) => Outcome::NotOnline,
        };
        assert_eq!(outcomes, [expected], "message {n} to {}", USERS[user]);
        if expected != Outcome::NotOnline {
            let position = stream.head() + 1;
            stream.log.push((position, n, self.now));
        }
        if let Some(c) = stream.conn {
            self.absorb(c, |_| false);
        }
    }

    fn expire(&mut self) {
        self.hub.expire_streams(self.now);
        let now = self.now;
        for s in &mut self.streams {
            if s.conn.is_none() && s.held_since.is_some() && !s.lives(now) {
                *s = Stream::default();
            }
        }
    }

    /// What must hold after every step.
    fn check(&self) {
        let held = self
            .streams
            .iter()
            .filter(|s| s.conn.is_none() && s.held_since.is_some())
            .count() as u64;
        assert_eq!(self.hub.stats().held_streams, held, "held streams");
        for (user, chain) in self.chains.iter().enumerate() {
            let (Some(chain), stream) = (chain, &self.streams[user]) else {
                continue;
            };
            if stream.epoch != Some(chain.epoch) {
                continue;
            }
            let due: Vec<u64> = stream
                .log
                .iter()
                .filter(|e| e.0 > chain.base)
                .map(|e| e.1)
                .collect();
            assert!(
                due.starts_with(&chain.seen),
                "{}: received {:?}, the stream took {due:?}",
                USERS[user],
                chain.seen
            );
            if stream.conn == Some(chain.conn) {
                assert_eq!(chain.seen, due, "{}: missed messages", USERS[user]);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let mut w = World::new();
    let mut steps = 0;
    while !c.is_empty() && steps < 400 {
        steps += 1;
        let op = c.u8();
        let user = usize::from(c.u8()) % USERS.len();
        match op % 8 {
            0 => w.login(user, None),
            // Resume from where the user's last connection is, as an SDK does.
            1 => {
                let last = w.chains[user].as_ref().map(|ch| w.clients[ch.conn].last);
                w.login(user, last);
            }
            // Resume from a made-up place: near the stream, or another epoch.
            2 => {
                let epoch = w.streams[user].epoch.unwrap_or(1);
                let pos = StreamPos {
                    epoch: if c.u8() % 4 == 0 { epoch + 1 } else { epoch },
                    position: u64::from(c.u8() % 16),
                };
                w.login(user, Some(pos));
            }
            3 => {
                if let Some(c) = w.streams[user].conn {
                    w.lose(c);
                }
            }
            4 => {
                if let Some(c) = w.streams[user].conn {
                    w.logout(c);
                }
            }
            5 | 6 => w.send(user),
            _ => {
                w.now = w.now.add_micros(u64::from(c.u8()) * 250_000);
                if c.u8() % 2 == 0 {
                    w.expire();
                }
            }
        }
        w.check();
    }
});
