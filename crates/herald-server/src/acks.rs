//! Acknowledged delivery: an OpenAPI call that waits, bounded, for its recipients' clients to
//! acknowledge the message (`X-Herald-Ack-Timeout-Ms`; see `docs/delivery.md`).
//!
//! A client's `ack` call advances its connection's acked msgid ([`ConnOutbox::ack`], one atomic,
//! no lock). A waiting call keeps, for each recipient it waits for, the connection and the msgid
//! the message got there (an [`Awaited`], taken from the hub's [`Receipt`]), and rechecks them
//! whenever an ack advances anywhere on the node.
//!
//! The wake-up is one [`AckSignal`] per server, not one per connection: idle connections pay
//! nothing for it, and an ack costs one atomic load while no call is waiting. While calls wait,
//! every advancing ack wakes them all; each rechecks only the recipients it still waits for.
//! Nothing here holds a hub or app lock, and no task is spawned per recipient.
//!
//! [`ConnOutbox::ack`]: crate::outbox::ConnOutbox::ack

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herald_core::hub::{Outbox, Outcome, Receipt};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Wakes the calls waiting for acks when a connection's acked msgid advances. One per server.
#[derive(Default)]
pub struct AckSignal {
    /// Calls waiting now: an ack notifies only when some call waits.
    waiting: AtomicUsize,
    notify: Notify,
}

impl AckSignal {
    /// A connection's acked msgid advanced: wakes the waiting calls, if any.
    ///
    /// The ack is stored (SeqCst) before `waiting` is read, and a waiter counts itself before it
    /// reads the acks (SeqCst): so either this sees the waiter and wakes it, or the waiter sees
    /// the ack. A waiter's `Notified` is made before it reads the acks, so a wake-up that comes
    /// between its check and its sleep is not lost.
    pub fn advanced(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

/// Counts a waiting call for as long as it lives.
struct Waiting<'a>(&'a AckSignal);

impl<'a> Waiting<'a> {
    fn new(signal: &'a AckSignal) -> Self {
        signal.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(signal)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A recipient whose ack a call waits for: where its copy of the message went.
pub struct Awaited {
    /// The recipient.
    pub uid: String,
    outbox: Arc<dyn Outbox>,
    msgid: u64,
}

impl Awaited {
    /// The recipient `uid`, whose copy `receipt` names.
    pub fn new(uid: String, receipt: Receipt<'_>) -> Self {
        Awaited {
            uid,
            outbox: receipt.outbox.clone(),
            msgid: receipt.msgid,
        }
    }

    fn receipt(&self) -> Receipt<'_> {
        Receipt {
            outbox: &self.outbox,
            msgid: self.msgid,
        }
    }

    /// Where the message is now: acked by the client, written to its connection, or queued.
    pub fn outcome(&self) -> Outcome {
        let r = self.receipt();
        if r.acked() {
            Outcome::Acked
        } else {
            Outcome::Queued.now(Some(r))
        }
    }
}

/// Waits until every one of `awaited` has acked its message, or until `deadline`.
pub async fn wait(signal: &AckSignal, awaited: &[Awaited], deadline: Instant) {
    let mut pending: Vec<&Awaited> = awaited.iter().collect();
    let _counted = Waiting::new(signal);
    loop {
        let notified = signal.notify.notified();
        pending.retain(|a| !a.receipt().acked());
        if pending.is_empty() {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::ConnOutbox;
    use herald_core::time::Timestamp;
    use herald_proto::client::{Delivery, MessageKind};
    use std::time::Duration;

    fn queued(outbox: &Arc<dyn Outbox>, uid: &str) -> Awaited {
        let d = Delivery::encode(MessageKind::OutsideRoom, "srv", None, false, b"hi");
        let herald_core::hub::Offer::Queued(msgid) =
            outbox.message(&d, None, Timestamp::from_micros(0))
        else {
            panic!("not queued");
        };
        Awaited::new(uid.into(), Receipt { outbox, msgid })
    }

    #[test]
    fn acks_are_clamped_to_what_was_given_and_never_move_back() {
        let conn = Arc::new(ConnOutbox::new(1 << 20));
        let outbox: Arc<dyn Outbox> = conn.clone();
        assert!(!conn.ack(5), "nothing given yet: an ack of the future is 0");
        assert_eq!(outbox.acked(), 0);
        let a = queued(&outbox, "a");
        let b = queued(&outbox, "b");
        assert!(conn.ack(u64::MAX));
        assert_eq!(outbox.acked(), 2, "clamped to the last msgid given");
        assert!(!conn.ack(1), "acks never move back");
        assert_eq!(outbox.acked(), 2);
        assert_eq!((a.outcome(), b.outcome()), (Outcome::Acked, Outcome::Acked));
        let c = queued(&outbox, "c");
        assert_eq!(c.outcome(), Outcome::Queued, "a later message is not acked");
        conn.wrote(3);
        assert_eq!(c.outcome(), Outcome::Written);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_on_the_last_ack_or_at_the_deadline() {
        let signal = AckSignal::default();
        let conn = Arc::new(ConnOutbox::new(1 << 20));
        let outbox: Arc<dyn Outbox> = conn.clone();
        let awaited = [queued(&outbox, "a"), queued(&outbox, "b")];
        let start = Instant::now();
        let acker = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            conn.ack(1);
            signal.advanced();
            tokio::time::sleep(Duration::from_millis(10)).await;
            conn.ack(2);
            signal.advanced();
        };
        tokio::join!(
            wait(&signal, &awaited, start + Duration::from_secs(5)),
            acker
        );
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(20),
            "woken by the ack"
        );
        assert_eq!(signal.waiting.load(Ordering::SeqCst), 0);

        let late = [queued(&outbox, "c")];
        let start = Instant::now();
        wait(&signal, &late, start + Duration::from_millis(300)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(late[0].outcome(), Outcome::Queued);
    }
}
