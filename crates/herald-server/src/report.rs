//! The opt-in delivery report of an OpenAPI message: what happened to each recipient.
//!
//! Asked for with the request header `X-Herald-Delivery-Report: true`, or by waiting for acks
//! with `X-Herald-Ack-Timeout-Ms: N`; rendered inside `Result` as `DeliveryReport` (see
//! `docs/delivery.md`). Without either header nothing here runs and the answer stays the
//! vendor's, byte for byte.

use std::time::Duration;

use herald_core::hub::{Outcome, Receipt};
use herald_core::relay::MAX_ACK_WAIT_MS;
use herald_proto::openapi::DeliveryReport;
use http::HeaderMap;
use tokio::time::Instant;

use crate::acks::{self, AckSignal, Awaited};

/// The request header that asks for a report.
pub const HEADER: &str = "x-herald-delivery-report";

/// The request header that asks the call to wait for acks, in milliseconds (1..=5000).
pub const ACK_TIMEOUT_HEADER: &str = "x-herald-ack-timeout-ms";

/// Whether `headers` ask for a delivery report: `true` or `1` yes, `false` or `0` (or no header)
/// no. Anything else, or the header twice, is refused (`Err` names the rule).
pub fn requested(headers: &HeaderMap) -> Result<bool, &'static str> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(false);
    };
    if values.next().is_some() {
        return Err("X-Herald-Delivery-Report is given more than once.");
    }
    match v.to_str().map(str::trim) {
        Ok(s) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(true),
        Ok(s) if s.eq_ignore_ascii_case("false") || s == "0" => Ok(false),
        _ => Err("X-Herald-Delivery-Report must be true or false."),
    }
}

/// How long `headers` ask the call to wait for acks: `None` without the header. Only an integer
/// from 1 to 5000 (milliseconds), given once, is accepted (`Err` names the rule).
pub fn ack_timeout(headers: &HeaderMap) -> Result<Option<Duration>, &'static str> {
    let mut values = headers.get_all(ACK_TIMEOUT_HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("X-Herald-Ack-Timeout-Ms is given more than once.");
    }
    let ms = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u32>().ok());
    match ms {
        Some(ms @ 1..=MAX_ACK_WAIT_MS) => Ok(Some(Duration::from_millis(ms.into()))),
        _ => Err("X-Herald-Ack-Timeout-Ms must be an integer from 1 to 5000."),
    }
}

/// A report being made: the lists ([`DeliveryReport`], the wire shape in `herald-proto`) filled
/// from the hub's outcomes, and for a call that waits for acks, the recipients it waits for.
#[derive(Default)]
pub struct Report {
    /// The lists, as they are rendered.
    pub lists: DeliveryReport,
    /// Set when the call waits for acks.
    acks: Option<AckWait>,
}

/// A call's wait for acks: how long, and for whom (the recipients queued on this node).
pub struct AckWait {
    timeout: Duration,
    awaited: Vec<Awaited>,
}

impl AckWait {
    /// Waits until every recipient has acked, at most the call's ack timeout from now.
    pub async fn wait(&self, signal: &AckSignal) {
        acks::wait(signal, &self.awaited, Instant::now() + self.timeout).await;
    }

    /// Lists each recipient as it is now: acked, written or queued.
    pub fn list(self, lists: &mut DeliveryReport) {
        for a in self.awaited {
            let o = a.outcome();
            add(lists, a.uid, o);
        }
    }
}

impl Report {
    /// A report, waiting up to `ack_timeout` for acks if given (then it has an `Acked` list).
    pub fn new(ack_timeout: Option<Duration>) -> Self {
        Report {
            lists: DeliveryReport {
                acked: ack_timeout.map(|_| Vec::new()),
                ..DeliveryReport::default()
            },
            acks: ack_timeout.map(|timeout| AckWait {
                timeout,
                awaited: Vec::new(),
            }),
        }
    }

    /// How long the call waits for acks, if it does.
    pub fn ack_timeout(&self) -> Option<Duration> {
        self.acks.as_ref().map(|a| a.timeout)
    }

    /// Takes out the wait for the acks of the recipients recorded so far, to run beside other
    /// waits (a cluster call's wait for other nodes' reports).
    pub fn take_ack_wait(&mut self) -> Option<AckWait> {
        self.acks.take()
    }

    /// Waits for the acks of the recipients recorded here (at most the call's ack timeout) and
    /// lists them as they are then: acked, written or queued. At once without acks asked for.
    pub async fn settle(&mut self, signal: &AckSignal) {
        if let Some(w) = self.take_ack_wait() {
            w.wait(signal).await;
            w.list(&mut self.lists);
        }
    }
}

/// Records one recipient. A queued message whose connection has already written it is reported
/// written; when the call waits for acks, a queued one is kept to be listed once it has waited.
pub fn record(report: &mut Report, uid: &str, outcome: Outcome, receipt: Option<Receipt<'_>>) {
    if let (Some(w), Outcome::Queued, Some(r)) = (&mut report.acks, outcome, receipt) {
        w.awaited.push(Awaited::new(uid.to_owned(), r));
        return;
    }
    add(&mut report.lists, uid.to_owned(), outcome.now(receipt));
}

/// Adds one recipient's outcome as it is.
pub fn add(report: &mut DeliveryReport, uid: String, outcome: Outcome) {
    match outcome {
        Outcome::Written => report.written.push(uid),
        Outcome::Queued => report.queued.push(uid),
        Outcome::NotOnline => report.not_online.push(uid),
        Outcome::NotInRoom => report.not_in_room.push(uid),
        Outcome::SlowConsumer => report.slow_consumer.push(uid),
        Outcome::Held => report.held.push(uid),
        // Only a call that waits for acks has the list (and only it can have this outcome).
        Outcome::Acked => report.acked.get_or_insert_with(Vec::new).push(uid),
        // Forwarded recipients are reported by the node that holds them.
        Outcome::Forwarded => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_header_is_read_strictly() {
        assert_eq!(requested(&headers(&[])), Ok(false));
        assert_eq!(requested(&headers(&["true"])), Ok(true));
        assert_eq!(requested(&headers(&["TRUE"])), Ok(true));
        assert_eq!(requested(&headers(&["1"])), Ok(true));
        assert_eq!(requested(&headers(&["false"])), Ok(false));
        assert_eq!(requested(&headers(&["0"])), Ok(false));
        assert!(requested(&headers(&["yes"])).is_err());
        assert!(requested(&headers(&[""])).is_err());
        assert!(requested(&headers(&["true", "true"])).is_err());
    }

    fn ack_headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACK_TIMEOUT_HEADER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_ack_timeout_is_an_integer_from_1_to_5000() {
        let ms = |v: &[&str]| ack_timeout(&ack_headers(v));
        assert_eq!(ms(&[]), Ok(None));
        assert_eq!(ms(&["1"]), Ok(Some(Duration::from_millis(1))));
        assert_eq!(ms(&["5000"]), Ok(Some(Duration::from_secs(5))));
        assert_eq!(ms(&[" 250 "]), Ok(Some(Duration::from_millis(250))));
        for bad in [
            "0",
            "5001",
            "-1",
            "+5",
            "1.5",
            "1e3",
            "",
            "abc",
            "99999999999",
        ] {
            assert!(ms(&[bad]).is_err(), "{bad}");
        }
        assert!(ms(&["100", "100"]).is_err());
    }

    #[test]
    fn an_acked_list_only_when_acks_are_waited_for() {
        let plain = serde_json::to_value(&Report::new(None).lists).unwrap();
        assert!(plain.get("Acked").is_none());
        let waiting = Report::new(Some(Duration::from_millis(5)));
        assert_eq!(waiting.ack_timeout(), Some(Duration::from_millis(5)));
        let waiting = serde_json::to_value(&waiting.lists).unwrap();
        assert_eq!(waiting["Acked"], serde_json::json!([]));
    }

    #[test]
    fn outcomes_land_in_their_lists_and_render_pascal_case() {
        let mut r = DeliveryReport::default();
        add(&mut r, "b".into(), Outcome::Queued);
        add(&mut r, "a".into(), Outcome::Queued);
        add(&mut r, "c".into(), Outcome::NotOnline);
        add(&mut r, "d".into(), Outcome::SlowConsumer);
        add(&mut r, "e".into(), Outcome::Forwarded);
        add(&mut r, "f".into(), Outcome::Held);
        r.sort();
        assert_eq!(r.named().count(), 5);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "Written": [], "Queued": ["a", "b"], "NotOnline": ["c"], "NotInRoom": [],
                "SlowConsumer": ["d"], "Held": ["f"], "Unknown": [], "NodesNotReporting": 0
            })
        );
    }
}
