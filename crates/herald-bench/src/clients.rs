//! What one client of each system does: connect and subscribe ([`set_up`]), read its messages
//! ([`Decoder`]), and one churn cycle ([`cycle`]).
//!
//! A [`ClientSpec`] says what a client receives in Herald's words: its login (for `SendUnicast`)
//! and its rooms. A peer's client always subscribes to its user's own address (one subject,
//! topic or Socket.IO room per user, as fan-out and unicast address users), plus the address of
//! each of its rooms. The raw writer's client only connects, with its number.

use std::io;

use anyhow::{anyhow, bail, Context as _};

use crate::fleet::{self, ClientSpec};
use crate::payload::{parse_message, stamp_of};
use crate::peers::stream::{invalid, Reassembly};
use crate::peers::{mqtt, nats, socketio};
use crate::server::{App, Target};
use crate::system::System;
use crate::ws::WsClient;

/// Initial read buffer per client; it grows to the largest frame received.
const READ_BUFFER: usize = 4096;

/// MQTT keep-alive asked for: the longest there is, so that the broker never expects a
/// `PINGREQ` from a client that only listens (18 hours).
const MQTT_KEEP_ALIVE_SECS: u16 = u16::MAX;

/// What the data frames of one read brought.
#[derive(Debug, Default)]
pub struct Received {
    /// Messages.
    pub messages: u64,
    /// Their latencies, µs.
    pub latencies_us: Vec<u64>,
    /// Herald messages whose msgid was not the previous one plus one.
    pub msgid_gaps: u64,
    /// Messages that were malformed or carried no stamp.
    pub bad: u64,
    /// Herald events (text frames) after set-up.
    pub events: u64,
    /// Messages whose stamp was older than the last one of the same sender.
    pub out_of_order: u64,
    /// Messages whose stamp was the last one of the same sender again.
    pub duplicates: u64,
    /// The last stamp seen of each sender (senders past [`SENDERS`] are not checked).
    last_by_sender: [u64; SENDERS],
    /// A protocol-level answer the client owes (a NATS `PONG`, an Engine.IO pong).
    pub reply: Option<Reply>,
}

/// Senders whose order each client checks: every API connection of a drive.
pub const SENDERS: usize = 16;

/// A protocol-level answer to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// In a text frame.
    Text(&'static str),
    /// In a binary frame.
    Binary(&'static [u8]),
}

impl Received {
    fn message(&mut self, payload: &[u8], now_ns: u64) {
        self.messages += 1;
        let Some(stamp) = stamp_of(payload) else {
            self.bad += 1;
            return;
        };
        self.latencies_us
            .push(now_ns.saturating_sub(stamp.sent_ns) / 1000);
        if let Some(last) = self.last_by_sender.get_mut(usize::from(stamp.sender)) {
            if stamp.sent_ns == *last {
                self.duplicates += 1;
            } else if stamp.sent_ns < *last {
                self.out_of_order += 1;
            } else {
                *last = stamp.sent_ns;
            }
        }
    }
}

/// Reads one system's messages out of WebSocket data frames.
#[derive(Debug)]
pub enum Decoder {
    /// Herald's message frames (binary) and events (text), with the last msgid seen.
    Herald {
        /// The msgid of the last message.
        last_msgid: u64,
    },
    /// NATS `MSG`s in a byte stream.
    Nats(Reassembly),
    /// MQTT `PUBLISH` packets in a byte stream.
    Mqtt(Reassembly),
    /// Engine.IO packets carrying Socket.IO `msg` events.
    SocketIo,
    /// Binary frames whose payload is the message.
    Raw,
}

impl Decoder {
    /// The decoder for a client of `system` that has just been set up.
    pub fn new(system: System) -> Decoder {
        match system {
            System::Herald
            | System::HeraldNoRecovery
            | System::Cluster1
            | System::Cluster3
            | System::Cluster1NoRecovery
            | System::Cluster3NoRecovery => Decoder::Herald { last_msgid: 0 },
            System::Nats => Decoder::Nats(Reassembly::default()),
            System::Mosquitto => Decoder::Mqtt(Reassembly::default()),
            System::Socketio => Decoder::SocketIo,
            System::RawWriter | System::BareAxum => Decoder::Raw,
        }
    }

    /// Handles one data frame (`text` or binary) read at `now_ns`. An error means the server
    /// broke the protocol or ended the session; the client stops.
    pub fn data(
        &mut self,
        text: bool,
        payload: &[u8],
        now_ns: u64,
        r: &mut Received,
    ) -> io::Result<()> {
        match self {
            Decoder::Herald { last_msgid } => {
                if text {
                    r.events += 1;
                    return Ok(());
                }
                match parse_message(payload) {
                    Some(m) => {
                        if m.msgid != *last_msgid + 1 {
                            r.msgid_gaps += 1;
                        }
                        *last_msgid = m.msgid;
                        r.message(m.payload, now_ns);
                    }
                    None => r.bad += 1,
                }
                Ok(())
            }
            Decoder::Nats(stream) => stream.feed(payload, |b| {
                let Some((op, n)) = nats::parse(b)? else {
                    return Ok(None);
                };
                match op {
                    nats::ServerOp::Msg { payload, .. } => r.message(payload, now_ns),
                    nats::ServerOp::Ping => r.reply = Some(Reply::Binary(nats::PONG)),
                    nats::ServerOp::Err(e) => {
                        return Err(invalid(format!("NATS -ERR {}", String::from_utf8_lossy(e))))
                    }
                    nats::ServerOp::Info | nats::ServerOp::Pong | nats::ServerOp::Ok => {}
                }
                Ok(Some(n))
            }),
            Decoder::Mqtt(stream) => stream.feed(payload, |b| {
                let Some((p, n)) = mqtt::parse(b)? else {
                    return Ok(None);
                };
                if p.kind == mqtt::PUBLISH {
                    let (_, payload) = p.publish()?;
                    r.message(payload, now_ns);
                }
                Ok(Some(n))
            }),
            Decoder::SocketIo => {
                if !text {
                    r.bad += 1;
                    return Ok(());
                }
                match socketio::parse(payload) {
                    socketio::ServerPacket::Message(m) => r.message(m, now_ns),
                    socketio::ServerPacket::Ping => r.reply = Some(Reply::Text(socketio::PONG)),
                    socketio::ServerPacket::Close | socketio::ServerPacket::Disconnected => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the Socket.IO server ended the session",
                        ))
                    }
                    _ => {}
                }
                Ok(())
            }
            Decoder::Raw => {
                if text {
                    r.bad += 1;
                } else {
                    r.message(payload, now_ns);
                }
                Ok(())
            }
        }
    }
}

/// Connects a client of `system` and subscribes it as `spec` says; `index` is its number (the raw
/// writer's slot; `None` for a client nobody sends to). Returns once the server has confirmed
/// every subscription, so that a message sent afterwards must arrive.
pub async fn set_up(
    system: System,
    target: &Target,
    app: &App,
    spec: &ClientSpec,
    index: Option<usize>,
) -> anyhow::Result<(WsClient, Decoder)> {
    let host = target.host();
    let ws = match system {
        System::Herald
        | System::HeraldNoRecovery
        | System::Cluster1
        | System::Cluster3
        | System::Cluster1NoRecovery
        | System::Cluster3NoRecovery => {
            let mut ws = fleet::connect(target, index.unwrap_or(0), app).await?;
            if spec.login {
                fleet::login(&mut ws, app, &spec.uid).await?;
            }
            for room in &spec.rooms {
                fleet::join(&mut ws, app, room, &spec.uid).await?;
            }
            ws
        }
        System::Nats => {
            let mut ws = WsClient::connect(target.addr, &host, "/", READ_BUFFER)
                .await
                .context("connect")?;
            let mut out = nats::CONNECT.to_vec();
            nats::sub(&mut out, &nats::user_subject(&spec.uid), 1);
            for (i, room) in spec.rooms.iter().enumerate() {
                nats::sub(&mut out, &nats::room_subject(room), 2 + i as u32);
            }
            out.extend_from_slice(nats::PING);
            ws.send_binary(&out).await?;
            nats_until_pong(&mut ws).await.context("subscribe")?;
            ws
        }
        System::Mosquitto => {
            let mut ws =
                WsClient::connect_with_protocol(target.addr, &host, "/", Some("mqtt"), READ_BUFFER)
                    .await
                    .context("connect")?;
            let mut out = Vec::new();
            mqtt::connect(&mut out, &spec.uid, MQTT_KEEP_ALIVE_SECS);
            let mut topics = vec![mqtt::user_topic(&spec.uid)];
            topics.extend(spec.rooms.iter().map(|r| mqtt::room_topic(r)));
            mqtt::subscribe(&mut out, 1, &topics);
            ws.send_binary(&out).await?;
            let acks = mqtt_until(&mut ws, &[mqtt::CONNACK, mqtt::SUBACK])
                .await
                .context("connect and subscribe")?;
            let (connack, suback) = (&acks[0], &acks[1]);
            if connack.get(1) != Some(&0) {
                bail!("CONNACK refused the connection: {connack:?}");
            }
            if suback.len() < 2 + topics.len() || suback[2..].iter().any(|&c| c >= 0x80) {
                bail!("SUBACK refused a subscription: {suback:?}");
            }
            ws
        }
        System::Socketio => {
            let mut ws = WsClient::connect(target.addr, &host, socketio::PATH, READ_BUFFER)
                .await
                .context("connect")?;
            socketio_until(&mut ws, |p| matches!(p, socketio::ServerPacket::Open))
                .await
                .context("Engine.IO handshake")?;
            ws.send_text(&socketio::connect(Some(&spec.uid))).await?;
            socketio_until(&mut ws, |p| matches!(p, socketio::ServerPacket::Connected))
                .await
                .context("Socket.IO connect")?;
            for (i, room) in spec.rooms.iter().enumerate() {
                socketio_ack(&mut ws, i as u64, "join", room).await?;
            }
            ws
        }
        System::RawWriter | System::BareAxum => {
            let path = index.map_or_else(|| "/".to_owned(), |i| format!("/?c={i}"));
            WsClient::connect(target.addr, &host, &path, READ_BUFFER)
                .await
                .context("connect")?
        }
    };
    Ok((ws, Decoder::new(system)))
}

/// One churn cycle: connect, log in (subscribe to the user's address), join `room`, leave it,
/// close. The raw writer has nothing to subscribe to: its cycle is connect and close.
pub async fn cycle(
    system: System,
    target: &Target,
    app: &App,
    uid: &str,
    room: &str,
) -> anyhow::Result<()> {
    let spec = ClientSpec {
        app: 0,
        uid: uid.to_owned(),
        login: true,
        rooms: vec![room.to_owned()],
        stall: false,
    };
    let (mut ws, _) = set_up(system, target, app, &spec, None).await?;
    match system {
        System::Herald
        | System::HeraldNoRecovery
        | System::Cluster1
        | System::Cluster3
        | System::Cluster1NoRecovery
        | System::Cluster3NoRecovery => fleet::leave(&mut ws, room).await?,
        System::Nats => {
            let mut out = Vec::new();
            nats::unsub(&mut out, 2);
            out.extend_from_slice(nats::PING);
            ws.send_binary(&out).await?;
            nats_until_pong(&mut ws).await.context("unsubscribe")?;
        }
        System::Mosquitto => {
            let mut out = Vec::new();
            mqtt::unsubscribe(&mut out, 2, &[mqtt::room_topic(room)]);
            ws.send_binary(&out).await?;
            mqtt_until(&mut ws, &[mqtt::UNSUBACK])
                .await
                .context("unsubscribe")?;
            ws.send_binary(mqtt::DISCONNECT).await?;
        }
        System::Socketio => socketio_ack(&mut ws, 1000, "leave", room).await?,
        System::RawWriter | System::BareAxum => {}
    }
    ws.send_close(1000).await?;
    Ok(())
}

/// Reads until the NATS server's `PONG` (everything sent before it has been processed).
async fn nats_until_pong(ws: &mut WsClient) -> anyhow::Result<()> {
    let mut stream = Reassembly::default();
    loop {
        let (_, data) = ws.next_data().await?;
        let mut outcome: Option<anyhow::Result<()>> = None;
        stream.feed(&data, |b| {
            let Some((op, n)) = nats::parse(b)? else {
                return Ok(None);
            };
            match op {
                nats::ServerOp::Pong => outcome = Some(Ok(())),
                nats::ServerOp::Err(e) => {
                    outcome = Some(Err(anyhow!("-ERR {}", String::from_utf8_lossy(e))))
                }
                nats::ServerOp::Msg { .. } => {
                    outcome = Some(Err(anyhow!("a message before set-up finished")))
                }
                _ => {}
            }
            Ok(Some(n))
        })?;
        if let Some(o) = outcome {
            return o;
        }
    }
}

/// Reads MQTT packets until one of each of `kinds` has arrived (the broker answers in order),
/// and returns their bodies in that order.
async fn mqtt_until(ws: &mut WsClient, kinds: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut stream = Reassembly::default();
    let mut found: Vec<Vec<u8>> = Vec::new();
    loop {
        let (_, data) = ws.next_data().await?;
        stream.feed(&data, |b| {
            let Some((p, n)) = mqtt::parse(b)? else {
                return Ok(None);
            };
            if kinds.get(found.len()) == Some(&p.kind) {
                found.push(p.body.to_vec());
            }
            Ok(Some(n))
        })?;
        if found.len() == kinds.len() {
            return Ok(found);
        }
    }
}

/// Reads Engine.IO packets until one `wanted` accepts, answering pings.
async fn socketio_until(
    ws: &mut WsClient,
    wanted: impl Fn(&socketio::ServerPacket<'_>) -> bool,
) -> anyhow::Result<()> {
    loop {
        let (text, data) = ws.next_data().await?;
        if !text {
            bail!("a binary frame from the Socket.IO server");
        }
        let p = socketio::parse(&data);
        if wanted(&p) {
            return Ok(());
        }
        match p {
            socketio::ServerPacket::Ping => ws.send_text(socketio::PONG).await?,
            socketio::ServerPacket::ConnectError(e) => {
                bail!("refused: {}", String::from_utf8_lossy(e))
            }
            socketio::ServerPacket::Close | socketio::ServerPacket::Disconnected => {
                bail!("closed by the server")
            }
            _ => {}
        }
    }
}

/// Emits `name` with `arg` and waits for its acknowledgement.
async fn socketio_ack(ws: &mut WsClient, id: u64, name: &str, arg: &str) -> anyhow::Result<()> {
    ws.send_text(&socketio::event_with_ack(id, name, arg))
        .await?;
    socketio_until(ws, |p| *p == socketio::ServerPacket::Ack(id))
        .await
        .with_context(|| format!("{name} {arg}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::stamped;

    #[test]
    fn every_decoder_finds_the_stamp() {
        let payload = stamped(40, 1_000_000, 0);
        let now = 3_000_000;
        // NATS: a MSG split over two frames, and a server PING.
        let mut d = Decoder::new(System::Nats);
        let mut r = Received::default();
        let mut stream = Vec::new();
        stream.extend_from_slice(format!("MSG u.u1 1 {}\r\n", payload.len()).as_bytes());
        stream.extend_from_slice(payload.as_bytes());
        stream.extend_from_slice(b"\r\nPING\r\n");
        let (a, b) = stream.split_at(10);
        d.data(false, a, now, &mut r).unwrap();
        d.data(false, b, now, &mut r).unwrap();
        assert_eq!((r.messages, &r.latencies_us[..]), (1, &[2000][..]));
        assert_eq!(r.reply, Some(Reply::Binary(nats::PONG)));
        // MQTT.
        let mut d = Decoder::new(System::Mosquitto);
        let mut r = Received::default();
        let mut p = Vec::new();
        mqtt::publish(&mut p, "u/u1", payload.as_bytes());
        d.data(false, &p, now, &mut r).unwrap();
        assert_eq!(r.latencies_us, [2000]);
        // Socket.IO.
        let mut d = Decoder::new(System::Socketio);
        let mut r = Received::default();
        d.data(
            true,
            format!("42[\"msg\",\"{payload}\"]").as_bytes(),
            now,
            &mut r,
        )
        .unwrap();
        d.data(true, b"2", now, &mut r).unwrap();
        assert_eq!(r.latencies_us, [2000]);
        assert_eq!(r.reply, Some(Reply::Text("3")));
        assert!(d.data(true, b"41", now, &mut r).is_err());
        // The raw writer.
        let mut d = Decoder::new(System::RawWriter);
        let mut r = Received::default();
        d.data(false, payload.as_bytes(), now, &mut r).unwrap();
        d.data(false, b"no stamp", now, &mut r).unwrap();
        assert_eq!((r.messages, r.bad), (2, 1));
    }

    #[test]
    fn a_sender_going_backwards_or_repeating_is_caught() {
        let mut r = Received::default();
        let mut got = |ns: u64, sender: u8| {
            r.message(stamped(30, ns, sender).as_bytes(), ns + 1);
            (r.out_of_order, r.duplicates)
        };
        assert_eq!(got(10, 0), (0, 0));
        assert_eq!(got(5, 1), (0, 0), "senders are ordered apart");
        assert_eq!(got(20, 0), (0, 0));
        assert_eq!(got(20, 0), (0, 1), "the same stamp again is a duplicate");
        assert_eq!(got(15, 0), (1, 1), "an older stamp is out of order");
        assert_eq!(
            got(200, 200),
            (1, 1),
            "senders past SENDERS are not checked"
        );
        assert_eq!(got(100, 200), (1, 1));
    }
}
