//! The opt-in delivery report of an OpenAPI message: what happened to each recipient.
//!
//! Asked for with the request header `X-Herald-Delivery-Report: true`; rendered inside `Result`
//! as `DeliveryReport` (see `docs/delivery.md`). Without the header nothing here runs and the
//! answer stays the vendor's, byte for byte.

use herald_core::hub::{Outcome, Receipt};
use http::HeaderMap;
use serde::Serialize;

/// The request header that asks for a report.
pub const HEADER: &str = "x-herald-delivery-report";

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

/// Each recipient's outcome, grouped by outcome. Every list is present (possibly empty), so a
/// client can index them without checking.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    /// Written to the recipient's connection (handed to its socket) by the time of the answer.
    pub written: Vec<String>,
    /// In the recipient's connection's queue, not yet written.
    pub queued: Vec<String>,
    /// `SendUnicast`: not logged in anywhere.
    pub not_online: Vec<String>,
    /// Room actions: not in the room anywhere.
    pub not_in_room: Vec<String>,
    /// The recipient's queue was full: the message was dropped and the connection is being cut
    /// off (close 4001).
    pub slow_consumer: Vec<String>,
    /// Held by another node that did not report in time (`[cluster] command_timeout_ms`).
    pub unknown: Vec<String>,
    /// Nodes that held recipients and did not report in time. For a broadcast their members
    /// cannot be named, so this is how a report says it is incomplete.
    pub nodes_not_reporting: u32,
}

impl Report {
    /// Records one recipient. A queued message whose connection has already written it is
    /// reported written.
    pub fn record(&mut self, uid: &str, outcome: Outcome, receipt: Option<Receipt<'_>>) {
        let outcome = match (outcome, receipt) {
            (Outcome::Queued, Some(r)) if r.written() => Outcome::Written,
            (o, _) => o,
        };
        self.add(uid.to_owned(), outcome);
    }

    /// Adds one recipient's outcome as it is.
    pub fn add(&mut self, uid: String, outcome: Outcome) {
        match outcome {
            Outcome::Written => self.written.push(uid),
            Outcome::Queued => self.queued.push(uid),
            Outcome::NotOnline => self.not_online.push(uid),
            Outcome::NotInRoom => self.not_in_room.push(uid),
            Outcome::SlowConsumer => self.slow_consumer.push(uid),
            // Forwarded recipients are reported by the node that holds them.
            Outcome::Forwarded => {}
        }
    }

    /// Every recipient named so far.
    pub fn named(&self) -> impl Iterator<Item = &String> {
        self.written
            .iter()
            .chain(&self.queued)
            .chain(&self.not_online)
            .chain(&self.not_in_room)
            .chain(&self.slow_consumer)
            .chain(&self.unknown)
    }

    /// Sorts each list, so a report reads the same whatever order the nodes answered in.
    pub fn sort(&mut self) {
        for list in [
            &mut self.written,
            &mut self.queued,
            &mut self.not_online,
            &mut self.not_in_room,
            &mut self.slow_consumer,
            &mut self.unknown,
        ] {
            list.sort_unstable();
        }
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

    #[test]
    fn outcomes_land_in_their_lists_and_render_pascal_case() {
        let mut r = Report::default();
        r.add("b".into(), Outcome::Queued);
        r.add("a".into(), Outcome::Queued);
        r.add("c".into(), Outcome::NotOnline);
        r.add("d".into(), Outcome::SlowConsumer);
        r.add("e".into(), Outcome::Forwarded);
        r.sort();
        assert_eq!(r.named().count(), 4);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "Written": [], "Queued": ["a", "b"], "NotOnline": ["c"], "NotInRoom": [],
                "SlowConsumer": ["d"], "Unknown": [], "NodesNotReporting": 0
            })
        );
    }
}
