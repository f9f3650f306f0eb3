//! The opt-in delivery report of an OpenAPI message: what happened to each recipient.
//!
//! Asked for with the request header `X-Herald-Delivery-Report: true`; rendered inside `Result`
//! as `DeliveryReport` (see `docs/delivery.md`). Without the header nothing here runs and the
//! answer stays the vendor's, byte for byte.

use herald_core::hub::{Outcome, Receipt};
use herald_proto::openapi::DeliveryReport;
use http::HeaderMap;

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

/// A report being made: [`DeliveryReport`] (the wire shape, in `herald-proto`) filled from the
/// hub's outcomes.
pub type Report = DeliveryReport;

/// Records one recipient. A queued message whose connection has already written it is reported
/// written.
pub fn record(report: &mut Report, uid: &str, outcome: Outcome, receipt: Option<Receipt<'_>>) {
    add(report, uid.to_owned(), outcome.now(receipt));
}

/// Adds one recipient's outcome as it is.
pub fn add(report: &mut Report, uid: String, outcome: Outcome) {
    match outcome {
        Outcome::Written => report.written.push(uid),
        Outcome::Queued => report.queued.push(uid),
        Outcome::NotOnline => report.not_online.push(uid),
        Outcome::NotInRoom => report.not_in_room.push(uid),
        Outcome::SlowConsumer => report.slow_consumer.push(uid),
        Outcome::Held => report.held.push(uid),
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

    #[test]
    fn outcomes_land_in_their_lists_and_render_pascal_case() {
        let mut r = Report::default();
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
