//! The bounded outbound queue of one client connection: the edge's implementation of the core's
//! [`Outbox`] port.
//!
//! The hub offers frames under its app lock, so offering must be quick and never block: a short
//! std-style mutex around a `VecDeque`, and a `Notify` to wake the connection's writer. The queue
//! is bounded in bytes; the offer that would overflow it clears the queue, marks the connection as
//! a slow consumer and wakes the writer to close it with code 4001. A slow reader therefore costs
//! others nothing: nobody ever waits for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use herald_core::hub::{Offer, Outbox};
use herald_core::time::Timestamp;
use herald_proto::client::{close_code, Delivery, Event, StreamPos};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// One queued frame.
pub enum Item {
    /// A message, with the msgid assigned when it was queued.
    Message {
        /// The shared encoded message.
        delivery: Delivery,
        /// This connection's msgid for it.
        msgid: u64,
        /// Its place in the recipient's stream (recovery on).
        pos: Option<StreamPos>,
        /// When its API call was accepted.
        accepted: Timestamp,
    },
    /// A JSON event (text frame payload).
    Text(Bytes),
    /// A pong answering the client's ping.
    Pong(Bytes),
    /// A ping (heartbeat).
    Ping,
}

impl Item {
    fn cost(&self) -> usize {
        // Frame header and bookkeeping are counted too, so a flood of empty messages is bounded.
        32 + match self {
            Item::Message { delivery, pos, .. } => delivery.frame_len(*pos),
            Item::Text(b) | Item::Pong(b) => b.len(),
            Item::Ping => 0,
        }
    }
}

/// How the connection is to end, once the queue is drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason.
    pub reason: &'static str,
    /// Whether the queued frames are dropped rather than written first.
    pub discard: bool,
}

struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    closing: Option<Closing>,
    /// Messages dropped from the queue after they were accepted.
    discarded: u32,
}

impl Queue {
    /// Drops everything queued, counting the messages among it.
    fn discard(&mut self) {
        self.discarded += count_messages(&self.items);
        self.items.clear();
        self.bytes = 0;
    }
}

fn count_messages(items: &VecDeque<Item>) -> u32 {
    items
        .iter()
        .filter(|i| matches!(i, Item::Message { .. }))
        .count() as u32
}

/// The outbound queue. See the module docs.
pub struct ConnOutbox {
    queue: Mutex<Queue>,
    limit: usize,
    wake: Notify,
    /// The highest msgid the writer has written to the socket.
    written: AtomicU64,
    /// The highest msgid given to a message so far: assigned under the queue lock, read without
    /// it to bound acks.
    given: AtomicU64,
    /// The highest msgid the client has acknowledged (`ack`), never above `given`.
    acked: AtomicU64,
}

impl ConnOutbox {
    /// A queue holding at most `limit_bytes`.
    pub fn new(limit_bytes: usize) -> Self {
        ConnOutbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                closing: None,
                discarded: 0,
            }),
            limit: limit_bytes,
            wake: Notify::new(),
            written: AtomicU64::new(0),
            given: AtomicU64::new(0),
            acked: AtomicU64::new(0),
        }
    }

    /// Queues `item`, or cuts the connection off if it would overflow the queue. A message gets
    /// its msgid here, under the queue lock, so msgids increase in the order frames are written.
    fn push(&self, mut item: Item) -> Offer {
        let mut q = self.queue.lock();
        if q.closing.is_some() {
            return Offer::Closed;
        }
        let cost = item.cost();
        if q.bytes + cost > self.limit {
            q.discard();
            q.closing = Some(Closing {
                code: close_code::SLOW_CONSUMER,
                reason: "slow consumer",
                discard: true,
            });
            drop(q);
            self.wake.notify_one();
            return Offer::Overflow;
        }
        let mut id = 0;
        if let Item::Message { msgid, .. } = &mut item {
            // Under the queue lock: msgids follow queue order.
            id = self.given.load(Ordering::Relaxed) + 1;
            *msgid = id;
            self.given.store(id, Ordering::Release);
        }
        q.bytes += cost;
        q.items.push_back(item);
        drop(q);
        self.wake.notify_one();
        Offer::Queued(id)
    }

    /// Queues a pong.
    pub fn pong(&self, payload: Bytes) {
        self.push(Item::Pong(payload));
    }

    /// Queues a heartbeat ping.
    pub fn ping(&self) {
        self.push(Item::Ping);
    }

    /// Asks the writer to close the connection: after what is queued, or at once if `discard`.
    /// The first reason given wins.
    pub fn close(&self, closing: Closing) {
        let mut q = self.queue.lock();
        if q.closing.is_none() {
            if closing.discard {
                q.discard();
            }
            q.closing = Some(closing);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// How the connection is to end, if that has been decided.
    pub fn closing(&self) -> Option<Closing> {
        self.queue.lock().closing.clone()
    }

    /// Moves everything queued into `into` and returns how the connection must end, if it must.
    /// Keeps the queue's allocation small when a burst has passed.
    pub fn drain(&self, into: &mut Vec<Item>) -> Option<Closing> {
        let mut q = self.queue.lock();
        into.extend(q.items.drain(..));
        q.bytes = 0;
        if q.items.capacity() > 64 {
            q.items.shrink_to(16);
        }
        q.closing.clone()
    }

    /// Messages that were queued but will never be written: those dropped when the queue was
    /// cut off or discarded, and those still queued. Read once the writer has finished.
    pub fn undelivered_messages(&self) -> u32 {
        let q = self.queue.lock();
        q.discarded + count_messages(&q.items)
    }

    /// The writer wrote every message up to `msgid` to the socket.
    pub fn wrote(&self, msgid: u64) {
        self.written.fetch_max(msgid, Ordering::Release);
    }

    /// The client acknowledged every message up to `msgid` (an `ack` call). A msgid beyond the
    /// last one given to a message counts as that one (a client cannot acknowledge what it was
    /// never sent), and the acked msgid never moves back. Returns whether it advanced, so the
    /// caller wakes the calls waiting for acks only then. Takes no lock.
    pub fn ack(&self, msgid: u64) -> bool {
        let n = msgid.min(self.given.load(Ordering::Acquire));
        // SeqCst: pairs with the waiters' count in `acks::AckSignal` (see there).
        self.acked.fetch_max(n, Ordering::SeqCst) < n
    }

    /// Waits until something is queued or closing is requested.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }
}

impl Outbox for ConnOutbox {
    fn message(&self, delivery: &Delivery, pos: Option<StreamPos>, accepted: Timestamp) -> Offer {
        self.push(Item::Message {
            delivery: delivery.clone(),
            msgid: 0,
            pos,
            accepted,
        })
    }

    fn event(&self, event: &Event) -> Offer {
        self.push(Item::Text(Bytes::from(event.to_json())))
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }
}
