//! The API side of each system: how one call ("send this payload to these users", "to this room")
//! is written, and how its answer is read.
//!
//! | system | a call | its answer |
//! | --- | --- | --- |
//! | Herald, bare axum | a signed `POST /?Action=…` (`BatchSendRoomUnicast`, `SendBroadcast`, `SendUnicast`) | the HTTP response |
//! | NATS | one `PUB u.<uid>` per recipient (or one `PUB r.<room>`), then `PING` | the `PONG` |
//! | Mosquitto | one QoS 0 `PUBLISH u/<uid>` per recipient (or one to `r/<room>`), then `PINGREQ` | the `PINGRESP` |
//! | Socket.IO | `POST /send` `{"to":["u1",…],"message":…}` (a room: `"to":["r0"]`) | the HTTP response |
//! | raw writer | `POST /send` `{"to":[1,…],"message":…}` (client numbers; a room is its members) | the HTTP response |
//!
//! NATS and MQTT brokers process a connection's input in order, so the answer to the ping means
//! the broker has handled every publish of the call: like an HTTP answer, it says the call was
//! accepted, and it paces the pipeline the same way. The publishers use the brokers' plain TCP
//! ports, as a business server would.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::http::{signed_request, Answer, AnswerReader};
use crate::load::{ApiCall, To, Workload, FROM};
use crate::peers::stream::invalid;
use crate::peers::{mqtt, nats};
use crate::server::App;
use crate::system::System;

/// Whether a call accepted by `system` is delivered to clients (the bare axum handler delivers
/// nothing).
pub fn delivers(system: System) -> bool {
    system != System::BareAxum
}

/// The Herald action of a call, and its JSON body. Every string the benchmark puts in a body is
/// an id or a stamped payload, neither of which needs JSON escaping.
pub fn herald_body(
    call: &ApiCall,
    load: &dyn Workload,
    message: &str,
    apps: &[App],
) -> (&'static str, Vec<u8>) {
    debug_assert!(message.bytes().all(|b| b.is_ascii_alphanumeric()));
    let users = call.recipients.as_slice();
    let mut b = Vec::with_capacity(message.len() + users.len() * 12 + 160);
    b.extend_from_slice(b"{\"AppId\":\"");
    b.extend_from_slice(apps[call.app].app_id.as_bytes());
    let room = match &call.to {
        To::RoomUsers(room) | To::Room(room) => Some(room),
        To::User => None,
    };
    if let Some(room) = room {
        b.extend_from_slice(b"\",\"RoomId\":\"");
        b.extend_from_slice(room.as_bytes());
    }
    b.extend_from_slice(b"\",\"From\":\"");
    b.extend_from_slice(FROM.as_bytes());
    b.extend_from_slice(b"\",\"Binary\":false,\"Message\":\"");
    b.extend_from_slice(message.as_bytes());
    b.push(b'"');
    let action = match &call.to {
        To::RoomUsers(_) => {
            b.extend_from_slice(b",\"To\":[");
            for (n, &i) in users.iter().enumerate() {
                if n > 0 {
                    b.push(b',');
                }
                b.push(b'"');
                b.extend_from_slice(load.uid(i).as_bytes());
                b.push(b'"');
            }
            b.push(b']');
            "BatchSendRoomUnicast"
        }
        To::Room(_) => "SendBroadcast",
        To::User => {
            b.extend_from_slice(b",\"To\":\"");
            b.extend_from_slice(load.uid(users[0]).as_bytes());
            b.push(b'"');
            "SendUnicast"
        }
    };
    b.push(b'}');
    (action, b)
}

/// `POST /send` with `body`.
fn post_send(host: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /send HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// The whole request of `call` carrying `message`, for `system`'s API at `host`.
pub fn encode(
    system: System,
    call: &ApiCall,
    load: &dyn Workload,
    message: &str,
    host: &str,
    apps: &[App],
) -> Vec<u8> {
    let users = call.recipients.as_slice();
    let payload = message.as_bytes();
    match system {
        System::Herald
        | System::HeraldNoRecovery
        | System::Cluster1
        | System::Cluster3
        | System::Cluster1NoRecovery
        | System::Cluster3NoRecovery
        | System::BareAxum => {
            let (action, body) = herald_body(call, load, message, apps);
            signed_request(host, &apps[call.app].key, action, &body)
        }
        System::Nats => {
            let mut out = Vec::with_capacity((payload.len() + 24) * users.len() + 8);
            match &call.to {
                To::Room(room) => nats::publish(&mut out, &nats::room_subject(room), payload),
                To::RoomUsers(_) | To::User => {
                    let mut subject = String::new();
                    for &i in users {
                        subject.clear();
                        subject.push_str("u.");
                        subject.push_str(load.uid(i));
                        nats::publish(&mut out, &subject, payload);
                    }
                }
            }
            out.extend_from_slice(nats::PING);
            out
        }
        System::Mosquitto => {
            let mut out = Vec::with_capacity((payload.len() + 16) * users.len() + 4);
            match &call.to {
                To::Room(room) => mqtt::publish(&mut out, &mqtt::room_topic(room), payload),
                To::RoomUsers(_) | To::User => {
                    let mut topic = String::new();
                    for &i in users {
                        topic.clear();
                        topic.push_str("u/");
                        topic.push_str(load.uid(i));
                        mqtt::publish(&mut out, &topic, payload);
                    }
                }
            }
            out.extend_from_slice(mqtt::PINGREQ);
            out
        }
        System::Socketio => {
            let mut body = Vec::with_capacity(payload.len() + users.len() * 12 + 32);
            body.extend_from_slice(b"{\"to\":[");
            match &call.to {
                To::Room(room) => {
                    body.push(b'"');
                    body.extend_from_slice(room.as_bytes());
                    body.push(b'"');
                }
                To::RoomUsers(_) | To::User => {
                    for (n, &i) in users.iter().enumerate() {
                        if n > 0 {
                            body.push(b',');
                        }
                        body.push(b'"');
                        body.extend_from_slice(load.uid(i).as_bytes());
                        body.push(b'"');
                    }
                }
            }
            body.extend_from_slice(b"],\"message\":\"");
            body.extend_from_slice(payload);
            body.extend_from_slice(b"\"}");
            post_send(host, &body)
        }
        System::RawWriter => {
            let mut body = Vec::with_capacity(payload.len() + users.len() * 6 + 32);
            body.extend_from_slice(b"{\"to\":[");
            for (n, &i) in users.iter().enumerate() {
                if n > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(i.to_string().as_bytes());
            }
            body.extend_from_slice(b"],\"message\":\"");
            body.extend_from_slice(payload);
            body.extend_from_slice(b"\"}");
            post_send(host, &body)
        }
    }
}

/// Reads answers from one API connection, in order; bytes of later answers stay buffered.
#[derive(Debug)]
pub enum Answers {
    /// HTTP responses.
    Http(AnswerReader),
    /// NATS: a `PONG` is a call's answer; a `-ERR` fails it.
    Nats(Vec<u8>),
    /// MQTT: a `PINGRESP` is a call's answer.
    Mqtt(Vec<u8>),
}

impl Answers {
    fn new(system: System) -> Answers {
        match system {
            System::Nats => Answers::Nats(Vec::new()),
            System::Mosquitto => Answers::Mqtt(Vec::new()),
            _ => Answers::Http(AnswerReader::default()),
        }
    }

    /// Reads the next answer: status 200 for a broker's ping answer, 500 with the text for a
    /// NATS `-ERR`.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<Answer> {
        let (buf, nats) = match self {
            Answers::Http(a) => return a.read(r).await,
            Answers::Nats(buf) => (buf, true),
            Answers::Mqtt(buf) => (buf, false),
        };
        loop {
            let mut at = 0;
            let mut answer = None;
            while answer.is_none() {
                let parsed = if nats {
                    nats::parse(&buf[at..])?.map(|(op, n)| {
                        let a = match op {
                            nats::ServerOp::Pong => Some(ok()),
                            nats::ServerOp::Err(e) => Some(Answer {
                                status: 500,
                                body: e.to_vec(),
                            }),
                            _ => None,
                        };
                        (a, n)
                    })
                } else {
                    mqtt::parse(&buf[at..])?.map(|(p, n)| ((p.kind == mqtt::PINGRESP).then(ok), n))
                };
                let Some((a, n)) = parsed else { break };
                at += n;
                answer = a;
            }
            buf.drain(..at);
            if let Some(a) = answer {
                return Ok(a);
            }
            read_more(r, buf).await?;
        }
    }
}

fn ok() -> Answer {
    Answer {
        status: 200,
        body: Vec::new(),
    }
}

/// Appends one read's bytes to `buf`; end of stream is an error.
async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = r.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// One keep-alive connection to a system's API side.
#[derive(Debug)]
pub struct ApiConn {
    stream: TcpStream,
    answers: Answers,
}

impl ApiConn {
    /// Connects (and for the brokers, says `CONNECT`; MQTT waits for the `CONNACK`).
    pub async fn connect(system: System, addr: SocketAddr) -> io::Result<ApiConn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut answers = Answers::new(system);
        match &mut answers {
            Answers::Nats(_) => stream.write_all(nats::CONNECT).await?,
            Answers::Mqtt(buf) => {
                let mut out = Vec::new();
                let id = format!("herald-bench-api-{}", rand::random::<u32>());
                mqtt::connect(&mut out, &id, 0);
                stream.write_all(&out).await?;
                loop {
                    if let Some((p, n)) = mqtt::parse(buf)? {
                        if p.kind != mqtt::CONNACK || p.connack_code()? != 0 {
                            return Err(invalid("the MQTT broker refused the connection"));
                        }
                        buf.drain(..n);
                        break;
                    }
                    read_more(&mut stream, buf).await?;
                }
            }
            Answers::Http(_) => {}
        }
        Ok(ApiConn { stream, answers })
    }

    /// Sends one whole request (from [`encode`]) and reads its answer.
    pub async fn call(&mut self, request: &[u8]) -> io::Result<Answer> {
        self.stream.write_all(request).await?;
        self.answers.read(&mut self.stream).await
    }

    /// The two directions, for pipelining: requests are written on one side while their answers
    /// are read, in order, on the other.
    pub fn into_split(self) -> (OwnedReadHalf, Answers, OwnedWriteHalf) {
        let (rd, wr) = self.stream.into_split();
        (rd, self.answers, wr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Broadcast, Fanout, Recipients, Unicast};
    use crate::payload::stamped;
    use crate::server::bench_apps;
    use rand::rngs::SmallRng;
    use rand::SeedableRng as _;
    use std::sync::Arc;

    fn body_of(request: &[u8]) -> &[u8] {
        let at = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        &request[at + 4..]
    }

    #[test]
    fn herald_bodies_are_the_vendor_json() {
        let apps = bench_apps(2);
        let mut rng = SmallRng::seed_from_u64(1);
        let msg = stamped(40, 7, 0);
        let f = Fanout {
            app: 0,
            room: "r0".into(),
            members: (0..1000).map(|i| format!("u{i}")).collect(),
            per_call: 600,
            payload: 40,
            always: 0,
        };
        let c = f.call(&mut rng);
        let (action, body) = herald_body(&c, &f, &msg, &apps);
        assert_eq!(action, "BatchSendRoomUnicast");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let to = v["To"].as_array().unwrap();
        assert_eq!(to.len(), 600);
        let mut ids: Vec<&str> = to.iter().map(|t| t.as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 600, "recipients are distinct");
        let first = c.recipients.as_slice()[0] as usize;
        assert_eq!(to[0], format!("u{first}").as_str());
        assert_eq!(v["Message"], msg.as_str());
        assert_eq!(v["RoomId"], "r0");
        assert_eq!(v["From"], FROM);
        assert_eq!(v["Binary"], false);
        assert_eq!(v["AppId"], apps[0].app_id.as_str());

        let b = Broadcast {
            app: 0,
            rooms: vec![("r1".into(), Arc::from(vec![3u32, 4]))],
            payload: 40,
        };
        let c = b.call(&mut rng);
        let (action, body) = herald_body(&c, &b, &msg, &apps);
        assert_eq!(action, "SendBroadcast");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["RoomId"], "r1");
        assert!(v.get("To").is_none());
        assert_eq!(c.recipients.as_slice(), &[3, 4]);

        let u = Unicast {
            users: vec![(1, "u0".into())],
            payload: 40,
        };
        let c = u.call(&mut rng);
        assert_eq!(c.app, 1);
        let (action, body) = herald_body(&c, &u, &msg, &apps);
        assert_eq!(action, "SendUnicast");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["AppId"], apps[1].app_id.as_str());
        assert_eq!(v["To"], "u0");
    }

    #[test]
    fn peers_get_the_same_call() {
        let apps = bench_apps(1);
        let u = Unicast {
            users: (0..3).map(|i| (0, format!("u{i}"))).collect(),
            payload: 20,
        };
        let msg = stamped(20, 1, 0);
        let call = ApiCall {
            app: 0,
            to: To::RoomUsers("r0".into()),
            recipients: Recipients::Listed(vec![0, 2]),
        };
        let nats_req = encode(System::Nats, &call, &u, &msg, "h", &apps);
        assert_eq!(
            nats_req,
            format!("PUB u.u0 20\r\n{msg}\r\nPUB u.u2 20\r\n{msg}\r\nPING\r\n").into_bytes()
        );
        let mqtt_req = encode(System::Mosquitto, &call, &u, &msg, "h", &apps);
        let (p, n) = mqtt::parse(&mqtt_req).unwrap().unwrap();
        assert_eq!(p.publish().unwrap(), (&b"u/u0"[..], msg.as_bytes()));
        assert!(mqtt_req.ends_with(mqtt::PINGREQ) && n < mqtt_req.len());
        let sio = encode(System::Socketio, &call, &u, &msg, "h", &apps);
        let v: serde_json::Value = serde_json::from_slice(body_of(&sio)).unwrap();
        assert_eq!(v["to"], serde_json::json!(["u0", "u2"]));
        assert_eq!(v["message"], msg.as_str());
        let raw = encode(System::RawWriter, &call, &u, &msg, "h", &apps);
        let v: serde_json::Value = serde_json::from_slice(body_of(&raw)).unwrap();
        assert_eq!(v["to"], serde_json::json!([0, 2]));

        let room = ApiCall {
            app: 0,
            to: To::Room("r9".into()),
            recipients: Recipients::Listed(vec![0, 1, 2]),
        };
        let nats_req = encode(System::Nats, &room, &u, &msg, "h", &apps);
        assert!(nats_req.starts_with(b"PUB r.r9 20\r\n"));
        let sio = encode(System::Socketio, &room, &u, &msg, "h", &apps);
        let v: serde_json::Value = serde_json::from_slice(body_of(&sio)).unwrap();
        assert_eq!(v["to"], serde_json::json!(["r9"]));
        let raw = encode(System::RawWriter, &room, &u, &msg, "h", &apps);
        let v: serde_json::Value = serde_json::from_slice(body_of(&raw)).unwrap();
        assert_eq!(v["to"], serde_json::json!([0, 1, 2]));
    }

    #[tokio::test]
    async fn broker_answers_are_read_in_order() {
        let mut a = Answers::new(System::Nats);
        let mut r: &[u8] = b"INFO {}\r\nPING\r\nPONG\r\n-ERR 'x'\r\nPONG\r\n";
        assert_eq!(a.read(&mut r).await.unwrap().status, 200);
        assert_eq!(a.read(&mut r).await.unwrap().status, 500);
        assert_eq!(a.read(&mut r).await.unwrap().status, 200);
        assert!(a.read(&mut r).await.is_err());
        let mut a = Answers::new(System::Mosquitto);
        let mut r: &[u8] = &[0xd0, 0, 0x90, 3, 0, 1, 0, 0xd0, 0];
        assert_eq!(a.read(&mut r).await.unwrap().status, 200);
        assert_eq!(a.read(&mut r).await.unwrap().status, 200);
        assert!(a.read(&mut r).await.is_err());
    }
}
