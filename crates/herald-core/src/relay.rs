//! Messages between nodes of a cluster, and what a node does with one it receives.
//!
//! A cluster node receives these on its own channel (in Redis, `herald:n:<node>`). Some are built
//! by the sending node ([`encode_deliver`]), some by the cluster's scripts inside Redis (a
//! takeover notice, presence); so the format is plain: a header of newline-terminated fields,
//! then, for a delivery, the message body as it is written to sockets. Ids never contain a
//! newline (the id rule), so no field needs escaping.
//!
//! ```text
//! D\n<app>\n<flags>\n<accepted µs>\n<room>\n<except uid>\n<recipients>\n<body…>   deliver
//! R\n<node>\n<call id>\nD\n…                                                  deliver, and report
//! A\n<node>\n<call id>\n<ack ms>\nD\n…                                        deliver, wait for acks, report
//! O\n<call id>\n<node>\n<count>\n(<outcome letter><uid>\n)*                      outcomes reported
//! L\n<app>\n<uid>\n<version>\n                                                  login taken over
//! M\n<app>\n<room>\n<uid>\n<version>\n                                          membership taken over
//! J\n<app>\n<room>\n<uid>\n                                                     joined elsewhere
//! Q\n<app>\n<room>\n<uid>\n<reason>\n                                           left elsewhere
//! K\n<app>\n<room>\n<uid>\n                                                     KickUser
//! ```
//!
//! Recipients: `*` (every member of the room on the receiving node), `uid,uid,…`, or, with
//! recovery on, `uid:epoch:position,…`: each recipient's place in its stream, taken in Redis.
//!
//! Outcome letters: `Q` queued, `W` written, `A` acked, `N` not online, `R` not in room, `S` slow
//! consumer, `F` forwarded. `A` (instead of `R`) asks the receiving node to wait up to `<ack ms>`
//! (1..=[`MAX_ACK_WAIT_MS`]) for its recipients' acks before it reports; a node that does not
//! know `A` drops the message, and its recipients are reported unknown.

use bytes::Bytes;
use herald_proto::client::{Delivery, StreamPos};
use herald_proto::ids::UserId;

use crate::hub::Outcome;
use crate::time::Timestamp;

/// Who a forwarded delivery is for, on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressees {
    /// These users: logins (a message outside rooms) or members of the room.
    Users(Vec<String>),
    /// Every member of the room on the receiving node.
    Room,
    /// These users (logins, or members of the room), each at its position in its stream: the
    /// cluster's Redis keeps the streams when recovery is on.
    Streams(Vec<(UserId, StreamPos)>),
}

/// The longest a reported delivery may wait for acks, in milliseconds (the OpenAPI's bound on
/// `X-Herald-Ack-Timeout-Ms`).
pub const MAX_ACK_WAIT_MS: u32 = 5000;

/// The node and call a delivery report goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTo {
    /// The node whose API call asked for the report.
    pub node: String,
    /// That node's id for the call.
    pub call: u64,
    /// How long the receiving node waits for its recipients' acks before it reports, in
    /// milliseconds (1..=[`MAX_ACK_WAIT_MS`]); `None`: it reports at once.
    pub ack_wait_ms: Option<u32>,
}

/// One message from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMessage {
    /// Deliver a message to local recipients.
    Deliver {
        /// The app.
        app: String,
        /// The message, encoded as it is written to sockets.
        delivery: Delivery,
        /// When the API call (or client send) was accepted, for latency accounting.
        accepted: Timestamp,
        /// The room of a room message, empty otherwise.
        room: String,
        /// A uid that must not receive it (the sender of a client room broadcast), or empty.
        except: String,
        /// The recipients.
        to: Addressees,
        /// Where to report each recipient's outcome (a delivery report was asked for).
        report: Option<ReportTo>,
    },
    /// The outcomes a node's recipients of a reported delivery had.
    Outcomes {
        /// The call, as [`ReportTo::call`] named it.
        call: u64,
        /// The node that delivered.
        node: String,
        /// Each recipient held there, with its outcome.
        outcomes: Vec<(String, Outcome)>,
    },
    /// `uid` logged in on another node, as registration `version`: end an older local login.
    LoginTaken {
        /// The app.
        app: String,
        /// The user.
        uid: String,
        /// The newer registration.
        version: u64,
    },
    /// `uid` joined `room` on another node, as registration `version`: end an older membership.
    MembershipTaken {
        /// The app.
        app: String,
        /// The room.
        room: String,
        /// The user.
        uid: String,
        /// The newer registration.
        version: u64,
    },
    /// `uid` joined `room` on another node: tell local members.
    Joined {
        /// The app.
        app: String,
        /// The room.
        room: String,
        /// The user.
        uid: String,
    },
    /// `uid` left `room` on another node for `reason` (a `user_leave_reason`): tell local members.
    Left {
        /// The app.
        app: String,
        /// The room.
        room: String,
        /// The user.
        uid: String,
        /// The vendor's leave reason.
        reason: i32,
    },
    /// `KickUser` called on another node for a member held here.
    Kick {
        /// The app.
        app: String,
        /// The room.
        room: String,
        /// The user.
        uid: String,
    },
}

/// A node message that could not be decoded (a bug or a foreign publisher; it is dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed node message: {0}")]
pub struct Malformed(&'static str);

/// The header of a delivery for `to`, to which the body is appended: what the Lua scripts build
/// per node from the prefix (everything up to the recipients) and their recipient list.
pub fn deliver_prefix(
    app: &str,
    delivery: &Delivery,
    accepted: Timestamp,
    room: &str,
    except: &str,
    report: Option<&ReportTo>,
) -> Vec<u8> {
    let mut out = match report {
        Some(ReportTo {
            node,
            call,
            ack_wait_ms: None,
        }) => format!("R\n{node}\n{call}\n"),
        Some(ReportTo {
            node,
            call,
            ack_wait_ms: Some(ms),
        }) => format!("A\n{node}\n{call}\n{ms}\n"),
        None => String::new(),
    };
    out.push_str(&format!(
        "D\n{app}\n{}\n{}\n{room}\n{except}\n",
        delivery.flags(),
        accepted.micros()
    ));
    out.into_bytes()
}

/// `uid:epoch:position`, parsed once into the ids the hub looks recipients up by; `None` for a uid
/// that is not a valid id (no recipient could have it: skipped).
fn stamped(s: &str) -> Result<Option<(UserId, StreamPos)>, Malformed> {
    let mut parts = s.splitn(3, ':');
    let (Some(uid), Some(epoch), Some(position)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed("recipient without a stream position"));
    };
    let pos = StreamPos {
        epoch: epoch.parse().map_err(|_| Malformed("epoch"))?,
        position: position.parse().map_err(|_| Malformed("position"))?,
    };
    Ok(UserId::new(uid).ok().map(|uid| (uid, pos)))
}

/// The letter of an outcome in an `O` message.
fn outcome_letter(o: Outcome) -> char {
    match o {
        Outcome::Queued => 'Q',
        Outcome::Written => 'W',
        Outcome::NotOnline => 'N',
        Outcome::NotInRoom => 'R',
        Outcome::SlowConsumer => 'S',
        Outcome::Forwarded => 'F',
        Outcome::Held => 'H',
        Outcome::Acked => 'A',
    }
}

fn letter_outcome(c: u8) -> Result<Outcome, Malformed> {
    Ok(match c {
        b'Q' => Outcome::Queued,
        b'W' => Outcome::Written,
        b'N' => Outcome::NotOnline,
        b'R' => Outcome::NotInRoom,
        b'S' => Outcome::SlowConsumer,
        b'F' => Outcome::Forwarded,
        b'H' => Outcome::Held,
        b'A' => Outcome::Acked,
        _ => return Err(Malformed("unknown outcome")),
    })
}

/// A whole delivery message: prefix, recipients, body.
pub fn encode_deliver(
    app: &str,
    delivery: &Delivery,
    accepted: Timestamp,
    room: &str,
    except: &str,
    to: &Addressees,
    report: Option<&ReportTo>,
) -> Vec<u8> {
    let mut out = deliver_prefix(app, delivery, accepted, room, except, report);
    match to {
        Addressees::Room => out.push(b'*'),
        Addressees::Users(uids) => out.extend_from_slice(uids.join(",").as_bytes()),
        Addressees::Streams(list) => {
            let list: Vec<String> = list
                .iter()
                .map(|(uid, p)| format!("{uid}:{}:{}", p.epoch, p.position))
                .collect();
            out.extend_from_slice(list.join(",").as_bytes());
        }
    }
    out.push(b'\n');
    out.extend_from_slice(delivery.body());
    out
}

/// Encodes the messages other than deliveries (the scripts build these in Redis; this is the
/// same format, for tests and for the node's own use).
pub fn encode(msg: &NodeMessage) -> Vec<u8> {
    match msg {
        NodeMessage::Deliver {
            app,
            delivery,
            accepted,
            room,
            except,
            to,
            report,
        } => encode_deliver(app, delivery, *accepted, room, except, to, report.as_ref()),
        NodeMessage::Outcomes {
            call,
            node,
            outcomes,
        } => {
            let mut out = format!("O\n{call}\n{node}\n{}\n", outcomes.len());
            for (uid, o) in outcomes {
                out.push(outcome_letter(*o));
                out.push_str(uid);
                out.push('\n');
            }
            out.into_bytes()
        }
        NodeMessage::LoginTaken { app, uid, version } => {
            format!("L\n{app}\n{uid}\n{version}\n").into_bytes()
        }
        NodeMessage::MembershipTaken {
            app,
            room,
            uid,
            version,
        } => format!("M\n{app}\n{room}\n{uid}\n{version}\n").into_bytes(),
        NodeMessage::Joined { app, room, uid } => format!("J\n{app}\n{room}\n{uid}\n").into_bytes(),
        NodeMessage::Left {
            app,
            room,
            uid,
            reason,
        } => format!("Q\n{app}\n{room}\n{uid}\n{reason}\n").into_bytes(),
        NodeMessage::Kick { app, room, uid } => format!("K\n{app}\n{room}\n{uid}\n").into_bytes(),
    }
}

/// Splits off `n` newline-terminated fields; returns them and the rest.
fn fields(mut data: &[u8], n: usize) -> Result<(Vec<&str>, &[u8]), Malformed> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let end = data
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Malformed("missing field"))?;
        let field = std::str::from_utf8(&data[..end]).map_err(|_| Malformed("not UTF-8"))?;
        out.push(field);
        data = &data[end + 1..];
    }
    Ok((out, data))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, Malformed> {
    s.parse().map_err(|_| Malformed("not a number"))
}

/// Decodes a node message. The delivery body is a slice of `data` (no copy).
pub fn decode(data: &Bytes) -> Result<NodeMessage, Malformed> {
    let (kind, _) = fields(data, 1)?;
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match kind[0] {
        kind @ ("R" | "A") => {
            let waits = kind == "A";
            let (f, rest) = fields(data, if waits { 4 } else { 3 })?;
            let ack_wait_ms = match waits {
                false => None,
                true => match number(f[3])? {
                    ms @ 1..=MAX_ACK_WAIT_MS => Some(ms),
                    _ => return Err(Malformed("ack wait out of bounds")),
                },
            };
            let report = ReportTo {
                node: f[1].to_owned(),
                call: number(f[2])?,
                ack_wait_ms,
            };
            // Only a delivery without a report of its own may follow.
            let mut msg = decode(&data.slice(data.len() - rest.len()..))?;
            match &mut msg {
                NodeMessage::Deliver {
                    report: slot @ None,
                    ..
                } => *slot = Some(report),
                _ => return Err(Malformed("a report without a delivery")),
            }
            Ok(msg)
        }
        "O" => {
            let (f, mut rest) = fields(data, 4)?;
            let n: usize = number(f[3])?;
            // Each outcome takes at least two bytes: a count larger than that is a lie.
            if n > rest.len() / 2 {
                return Err(Malformed("outcome count"));
            }
            let mut outcomes = Vec::with_capacity(n);
            for _ in 0..n {
                let (line, next) = fields(rest, 1)?;
                let (&letter, uid) = line[0]
                    .as_bytes()
                    .split_first()
                    .ok_or(Malformed("empty outcome"))?;
                let uid = std::str::from_utf8(uid).map_err(|_| Malformed("not UTF-8"))?;
                outcomes.push((uid.to_owned(), letter_outcome(letter)?));
                rest = next;
            }
            Ok(NodeMessage::Outcomes {
                call: number(f[1])?,
                node: f[2].to_owned(),
                outcomes,
            })
        }
        "D" => {
            let (f, rest) = fields(data, 7)?;
            let flags: u8 = number(f[2])?;
            let accepted = Timestamp::from_micros(number(f[3])?);
            let to = match f[6] {
                "*" => Addressees::Room,
                "" => Addressees::Users(Vec::new()),
                list if list.contains(':') => {
                    let list = list.split(',').filter_map(|s| stamped(s).transpose());
                    Addressees::Streams(list.collect::<Result<_, _>>()?)
                }
                list => Addressees::Users(list.split(',').map(str::to_owned).collect()),
            };
            let body = data.slice(data.len() - rest.len()..);
            Ok(NodeMessage::Deliver {
                app: f[1].to_owned(),
                delivery: Delivery::from_parts(flags, body),
                accepted,
                room: f[4].to_owned(),
                except: f[5].to_owned(),
                to,
                report: None,
            })
        }
        "L" => {
            let (f, _) = fields(data, 4)?;
            let f = owned(&f);
            Ok(NodeMessage::LoginTaken {
                version: number(&f[3])?,
                app: f[1].clone(),
                uid: f[2].clone(),
            })
        }
        "M" => {
            let (f, _) = fields(data, 5)?;
            let f = owned(&f);
            Ok(NodeMessage::MembershipTaken {
                version: number(&f[4])?,
                app: f[1].clone(),
                room: f[2].clone(),
                uid: f[3].clone(),
            })
        }
        "J" => {
            let (f, _) = fields(data, 4)?;
            Ok(NodeMessage::Joined {
                app: f[1].to_owned(),
                room: f[2].to_owned(),
                uid: f[3].to_owned(),
            })
        }
        "Q" => {
            let (f, _) = fields(data, 5)?;
            Ok(NodeMessage::Left {
                reason: number(f[4])?,
                app: f[1].to_owned(),
                room: f[2].to_owned(),
                uid: f[3].to_owned(),
            })
        }
        "K" => {
            let (f, _) = fields(data, 4)?;
            Ok(NodeMessage::Kick {
                app: f[1].to_owned(),
                room: f[2].to_owned(),
                uid: f[3].to_owned(),
            })
        }
        _ => Err(Malformed("unknown kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::client::MessageKind;

    fn roundtrip(m: NodeMessage) {
        let bytes = Bytes::from(encode(&m));
        assert_eq!(decode(&bytes), Ok(m));
    }

    #[test]
    fn every_kind_round_trips() {
        let d = Delivery::encode(MessageKind::RoomUser, "srv", Some("r1"), true, b"\n\0bin\n");
        roundtrip(NodeMessage::Deliver {
            app: "a".repeat(24),
            delivery: d.clone(),
            accepted: Timestamp::from_micros(1_700_000_000_123_456),
            room: "r1".into(),
            except: String::new(),
            to: Addressees::Users(vec!["u1".into(), "u.2@x".into()]),
            report: None,
        });
        roundtrip(NodeMessage::Deliver {
            app: "a".into(),
            delivery: d.clone(),
            accepted: Timestamp::from_micros(5),
            room: String::new(),
            except: String::new(),
            to: Addressees::Users(vec!["u1".into()]),
            report: Some(ReportTo {
                node: "node-a".into(),
                call: 77,
                ack_wait_ms: None,
            }),
        });
        roundtrip(NodeMessage::Deliver {
            app: "a".into(),
            delivery: d.clone(),
            accepted: Timestamp::from_micros(5),
            room: "r1".into(),
            except: String::new(),
            to: Addressees::Users(vec!["u1".into(), "u2".into()]),
            report: Some(ReportTo {
                node: "node-a".into(),
                call: 78,
                ack_wait_ms: Some(MAX_ACK_WAIT_MS),
            }),
        });
        let at = |epoch, position| StreamPos { epoch, position };
        roundtrip(NodeMessage::Deliver {
            app: "a".into(),
            delivery: d.clone(),
            accepted: Timestamp::from_micros(5),
            room: "r1".into(),
            except: "me".into(),
            to: Addressees::Streams(vec![
                (UserId::new("u1").unwrap(), at(1_843_000_000_000_007, 1)),
                (UserId::new("u.2@x").unwrap(), at(9, 123_456_789)),
            ]),
            report: None,
        });
        roundtrip(NodeMessage::Outcomes {
            call: 77,
            node: "node-b".into(),
            outcomes: vec![
                ("u1".into(), Outcome::Queued),
                ("u2".into(), Outcome::Written),
                ("u3".into(), Outcome::NotOnline),
                ("u4".into(), Outcome::NotInRoom),
                ("u5".into(), Outcome::SlowConsumer),
                ("u6".into(), Outcome::Acked),
            ],
        });
        roundtrip(NodeMessage::Outcomes {
            call: 1,
            node: "n".into(),
            outcomes: Vec::new(),
        });
        roundtrip(NodeMessage::Deliver {
            app: "a".into(),
            delivery: d,
            accepted: Timestamp::from_micros(1),
            room: "r1".into(),
            except: "me".into(),
            to: Addressees::Room,
            report: None,
        });
        roundtrip(NodeMessage::LoginTaken {
            app: "a".into(),
            uid: "u".into(),
            version: 42,
        });
        roundtrip(NodeMessage::MembershipTaken {
            app: "a".into(),
            room: "r".into(),
            uid: "u".into(),
            version: 7,
        });
        roundtrip(NodeMessage::Joined {
            app: "a".into(),
            room: "r".into(),
            uid: "u".into(),
        });
        roundtrip(NodeMessage::Left {
            app: "a".into(),
            room: "r".into(),
            uid: "u".into(),
            reason: 1,
        });
        roundtrip(NodeMessage::Kick {
            app: "a".into(),
            room: "r".into(),
            uid: "u".into(),
        });
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bad in [
            &b""[..],
            b"D\n",
            b"D\napp\nx\n1\n\n\n*\n",
            b"L\na\nu\nnot-a-number\n",
            b"Z\n",
            b"R\nnode\n1\n",
            b"R\nnode\n1\nL\na\nu\n1\n",
            b"R\nnode\n1\nR\nnode\n1\nD\na\n0\n1\n\n\n*\n",
            b"O\n1\nn\n99999999\nQu\n",
            b"O\n1\nn\n1\nZu\n",
            b"O\n1\nn\n1\n\n",
            b"A\nnode\n1\n",
            b"A\nnode\n1\n0\nD\na\n0\n1\n\n\n*\n",
            b"A\nnode\n1\n5001\nD\na\n0\n1\n\n\n*\n",
            b"A\nnode\n1\n-5\nD\na\n0\n1\n\n\n*\n",
            b"A\nnode\n1\nx\nD\na\n0\n1\n\n\n*\n",
            b"A\nnode\n1\n100\nL\na\nu\n1\n",
            b"A\nnode\n1\n100\nR\nnode\n1\nD\na\n0\n1\n\n\n*\n",
            b"R\nnode\n1\nA\nnode\n1\n100\nD\na\n0\n1\n\n\n*\n",
            b"D\na\n0\n1\n\n\nu1:1:2,u2\nbody",
            b"D\na\n0\n1\n\n\nu1:x:2\nbody",
            b"D\na\n0\n1\n\n\nu1:1:-2\nbody",
            b"\xff\n",
        ] {
            assert!(decode(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
