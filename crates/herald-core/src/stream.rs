//! Streams: the per-user sequence of messages that makes recovery after a reconnect possible.
//!
//! Every login and every room membership has a stream. Each message the hub queues for it takes
//! the next position, and the stream keeps the last messages (the window: at most
//! [`Window::messages`] of them, none older than [`Window::max_age_us`]) so that a client that
//! reconnects and names the last position it has can be given exactly what it missed. A stream
//! outlives its connection by the window's age (it is *held*), so messages sent while the user is
//! between connections are kept for it too. An epoch names one life of a stream: a stream that was
//! forgotten and made again starts a new epoch, and positions of another epoch cannot be resumed.
//!
//! The window holds the shared body (a reference count, not a copy): 40 bytes per kept message
//! and recipient. A stream that has taken no message costs 16 bytes.

use std::collections::VecDeque;

use bytes::Bytes;
use herald_proto::client::{Delivery, StreamPos};

use crate::time::Timestamp;

/// How much of each stream is kept for recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// At most this many messages per stream; 0 turns recovery off (no positions are sent).
    pub messages: usize,
    /// Messages older than this (microseconds since their call was accepted) are forgotten, and
    /// a stream without a connection for this long is forgotten.
    pub max_age_us: u64,
}

impl Window {
    /// Recovery off: no streams, no positions, frames as before.
    pub const OFF: Window = Window {
        messages: 0,
        max_age_us: 0,
    };

    /// Whether streams are kept at all.
    pub fn enabled(&self) -> bool {
        self.messages > 0
    }
}

/// One kept message: the shared body, and the flags byte and the time its call was accepted in
/// one word (the time in microseconds takes 56 bits, enough until the year 4253), so that an
/// entry is 40 bytes rather than 48: one is kept per recipient and message.
struct Entry {
    body: Bytes,
    packed: u64,
}

impl Entry {
    fn new(delivery: &Delivery, accepted: Timestamp) -> Self {
        let micros = accepted.micros() & ((1 << 56) - 1);
        Entry {
            body: delivery.body().clone(),
            packed: (u64::from(delivery.flags()) << 56) | micros,
        }
    }
    fn accepted(&self) -> Timestamp {
        Timestamp::from_micros(self.packed & ((1 << 56) - 1))
    }
    fn delivery(&self) -> Delivery {
        Delivery::from_parts((self.packed >> 56) as u8, self.body.clone())
    }
}

/// One login's or membership's stream. See the module docs. Sixteen bytes until its first
/// message: one lives in every login and membership, and most of those are idle.
pub(crate) struct Stream {
    epoch: u64,
    log: Option<Box<Log>>,
}

/// What a stream has taken.
#[derive(Default)]
struct Log {
    /// The position of the last message (0: none yet).
    last: u64,
    /// The kept messages, in order: positions `last - kept.len() + 1 ..= last`.
    kept: VecDeque<Entry>,
}

/// What a resume found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// Everything after the client's position is kept: these, in order, with when their calls
    /// were accepted.
    Replay(Vec<(StreamPos, Delivery, Timestamp)>),
    /// Some of it is not (another epoch, a position the stream never had, or older than the
    /// window): the client must resync.
    Gap,
}

impl Stream {
    /// A new stream, in epoch `epoch`.
    pub(crate) fn new(epoch: u64) -> Self {
        Stream { epoch, log: None }
    }

    /// Where the stream is: its epoch and last position.
    pub(crate) fn head(&self) -> StreamPos {
        StreamPos {
            epoch: self.epoch,
            position: self.log.as_ref().map_or(0, |l| l.last),
        }
    }

    /// Takes the next position for `delivery` and keeps it, forgetting what falls out of the
    /// window. `accepted` is when its call was accepted.
    pub(crate) fn append(
        &mut self,
        delivery: &Delivery,
        accepted: Timestamp,
        w: &Window,
    ) -> StreamPos {
        let log = self.log.get_or_insert_with(Default::default);
        log.last += 1;
        log.kept.push_back(Entry::new(delivery, accepted));
        if log.kept.len() > w.messages {
            log.kept.pop_front();
        }
        log.trim(accepted, w);
        StreamPos {
            epoch: self.epoch,
            position: log.last,
        }
    }

    /// The messages after `from`, if every one of them is still kept.
    pub(crate) fn resume(&mut self, from: StreamPos, now: Timestamp, w: &Window) -> Resumed {
        if from.epoch != self.epoch {
            return Resumed::Gap;
        }
        match &mut self.log {
            None if from.position == 0 => Resumed::Replay(Vec::new()),
            None => Resumed::Gap,
            Some(log) => log.resume(self.epoch, from.position, now, w),
        }
    }
}

impl Log {
    /// Forgets messages older than the window at `now`.
    fn trim(&mut self, now: Timestamp, w: &Window) {
        while self
            .kept
            .front()
            .is_some_and(|e| now.micros_since(e.accepted()) > w.max_age_us)
        {
            self.kept.pop_front();
        }
        // A burst leaves a large buffer behind; give it back once the stream is short again.
        if self.kept.capacity() > 64 && self.kept.len() < self.kept.capacity() / 4 {
            self.kept.shrink_to(self.kept.len() * 2);
        }
    }

    /// The messages after position `from` of epoch `epoch`, if every one of them is still kept.
    fn resume(&mut self, epoch: u64, from: u64, now: Timestamp, w: &Window) -> Resumed {
        self.trim(now, w);
        if from > self.last {
            return Resumed::Gap;
        }
        let missed = self.last - from;
        if missed > self.kept.len() as u64 {
            return Resumed::Gap;
        }
        let skip = self.kept.len() - missed as usize;
        let replay = self
            .kept
            .iter()
            .skip(skip)
            .zip(from + 1..)
            .map(|(e, position)| {
                let pos = StreamPos { epoch, position };
                (pos, e.delivery(), e.accepted())
            })
            .collect();
        Resumed::Replay(replay)
    }
}

/// A stream whose connection has gone, kept for the window's age in case the user comes back.
pub(crate) struct Held {
    pub(crate) stream: Stream,
    /// When the last connection left.
    pub(crate) since: Timestamp,
}

impl Held {
    /// Whether the user has been away longer than the window at `now`.
    pub(crate) fn expired(&self, now: Timestamp, w: &Window) -> bool {
        now.micros_since(self.since) > w.max_age_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::client::MessageKind;

    fn msg(n: u8) -> Delivery {
        Delivery::encode(MessageKind::OutsideRoom, "bot", None, true, &[n])
    }

    fn payloads(r: Resumed) -> Option<Vec<(u64, u8)>> {
        match r {
            Resumed::Gap => None,
            Resumed::Replay(v) => Some(
                v.into_iter()
                    .map(|(p, d, _)| (p.position, *d.body().last().unwrap()))
                    .collect(),
            ),
        }
    }

    const W: Window = Window {
        messages: 3,
        max_age_us: 10_000_000,
    };

    #[test]
    fn positions_count_from_one_and_resume_replays_what_follows() {
        let mut s = Stream::new(7);
        let t = Timestamp::from_secs(100);
        for n in 1..=3 {
            let p = s.append(&msg(n), t, &W);
            assert_eq!((p.epoch, p.position), (7, u64::from(n)));
        }
        let at = |position| StreamPos { epoch: 7, position };
        assert_eq!(payloads(s.resume(at(1), t, &W)), Some(vec![(2, 2), (3, 3)]));
        assert_eq!(payloads(s.resume(at(3), t, &W)), Some(vec![]));
        assert_eq!(
            payloads(s.resume(at(0), t, &W)),
            Some(vec![(1, 1), (2, 2), (3, 3)])
        );
        // A position the stream never reached, or another epoch: a gap, never a guess.
        assert_eq!(payloads(s.resume(at(4), t, &W)), None);
        let other = StreamPos {
            epoch: 8,
            position: 1,
        };
        assert_eq!(payloads(s.resume(other, t, &W)), None);
    }

    #[test]
    fn the_window_bounds_count_and_age() {
        let mut s = Stream::new(1);
        let t = Timestamp::from_secs(100);
        for n in 1..=5 {
            s.append(&msg(n), t, &W);
        }
        let at = |position| StreamPos { epoch: 1, position };
        // Only 3 kept: 3, 4, 5. Resuming after 2 works, after 1 does not.
        assert_eq!(
            payloads(s.resume(at(2), t, &W)),
            Some(vec![(3, 3), (4, 4), (5, 5)])
        );
        assert_eq!(payloads(s.resume(at(1), t, &W)), None);
        // 10 s later the messages are still there; a moment after, they are gone.
        let later = t.add_micros(W.max_age_us);
        assert_eq!(payloads(s.resume(at(4), later, &W)), Some(vec![(5, 5)]));
        assert_eq!(payloads(s.resume(at(4), later.add_micros(1), &W)), None);
        // Nothing missed is never a gap, even with the window empty.
        assert_eq!(
            payloads(s.resume(at(5), later.add_micros(1), &W)),
            Some(vec![])
        );
    }

    #[test]
    fn a_kept_message_is_forty_bytes_and_comes_back_whole() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        let d = Delivery::encode(MessageKind::RoomBroadcast, "bot", Some("r"), true, b"x");
        let at = Timestamp::from_secs(1_700_000_000).add_micros(123_456);
        let e = Entry::new(&d, at);
        assert_eq!((e.delivery(), e.accepted()), (d, at));
    }

    #[test]
    fn a_held_stream_expires_after_the_window() {
        let h = Held {
            stream: Stream::new(1),
            since: Timestamp::from_secs(10),
        };
        assert!(!h.expired(Timestamp::from_secs(20), &W));
        assert!(h.expired(Timestamp::from_secs(20).add_micros(1), &W));
    }
}
