//! `herald client`: a connection driven by lines of JSON, for scripts and for trying things out.
//!
//! Each stdin line is one call, with the vendor's names, exactly as the protocol's text frames
//! carry them (`{"call":"login","token":"…","uid":"u1"}`). The vendor's send methods, which the
//! protocol carries as binary frames, take the same shape (`{"call":"sendRoomMessage","roomId":
//! "r1","message":"hi"}`, binary forms with base64 in `message`); right after one is sent the CLI
//! prints `{"event":"onCliSent","call":…,"msgid":N}` so a script can match the result event to it.
//! Each event is printed as one line (`Event::to_json_line`) and flushed at once, so a pipe sees it
//! without delay. A line that is not a call prints `{"event":"onCliError","message":…}` and the
//! session goes on.
//!
//! It ends when the server closes the connection, or when stdin closes: then it closes the
//! connection, prints the remaining events up to `onConnectionClosed`, and exits 0.

use std::io::{BufRead as _, Write as _};

use anyhow::anyhow;
use base64::Engine as _;
use herald_client::{connect_with, CallError, ConnectError, ConnectOptions, Engine, Event};
use herald_proto::client::Call;
use herald_server::config::dev;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::CliError;

/// Arguments of `herald client`.
#[derive(Debug, clap::Args)]
#[command(after_help = r#"Calls, one JSON object per line on stdin:
  {"call":"login","token":"001...","uid":"u1"}
  {"call":"joinRoom","roomId":"r1","uid":"u1","token":"001..."}
  {"call":"leaveRoom","roomId":"r1"}
  {"call":"logout"}
  {"call":"getPeerOnlineStatus","peerUserId":"u2"}
  {"call":"setServerParams","signature":"s","url":"http://biz.example/rtc"}
  {"call":"ack","msgid":3}   (with --no-auto-ack; otherwise each printed message is acked)
  {"call":"sendUserMessageOutsideRoom","uid":"u2","message":"hi"}
  {"call":"sendUserMessage","roomId":"r1","uid":"u2","message":"hi"}
  {"call":"sendRoomMessage","roomId":"r1","message":"hi"}
  {"call":"sendServerMessage","message":"hi"}
  and sendUserBinaryMessageOutsideRoom, sendUserBinaryMessage, sendRoomBinaryMessage,
  sendServerBinaryMessage, the same with standard base64 in "message"
Right after a send goes out, its msgid is printed, to match it with its result event:
  {"event":"onCliSent","call":"sendRoomMessage","msgid":1}
  msgids count from 1, one sequence for every kind of send, as the vendor's SDK does
Events, one JSON object per line on stdout, named after the vendor's callbacks:
  {"event":"onLoginResult","uid":"u1","errorCode":0,"elapsed":3}
  {"event":"onUserMessageReceivedOutsideRoom","msgid":1,"uid":"server_bot","message":"hello"}
  {"event":"onRoomMessageSendResult","roomId":"r1","msgid":1,"error":200}
  binary messages carry base64 in "message" and "binary":true; so does the business server's
  answer in onServerMessageSendResult when it is not UTF-8 text
A line that is not a call prints {"event":"onCliError","message":"..."}. When stdin closes, the
connection is closed and the command exits after {"event":"onConnectionClosed",...}.
The defaults of --server and --app-id are those of `herald serve` with no --config."#)]
pub struct Args {
    /// The server, as http://HOST:PORT, or https://HOST:PORT for a server with [tls].
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A PEM file of certificates to trust besides the public authorities, for an https server
    /// with a self-signed or private certificate.
    #[arg(long, value_name = "PATH")]
    ca_cert: Option<std::path::PathBuf>,
    /// The AppId.
    #[arg(long, default_value = dev::APP_ID)]
    app_id: String,
    /// Do not acknowledge received messages by themselves; send {"call":"ack","msgid":N} lines.
    #[arg(long)]
    no_auto_ack: bool,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let tls = crate::tls(args.ca_cert.as_deref())?;
    let options = ConnectOptions::default()
        .tls(tls)
        .auto_ack(!args.no_auto_ack);
    let (engine, mut events) = connect_with(&args.server, &args.app_id, &options)
        .await
        .map_err(|e| match e {
            ConnectError::InvalidServer(_) => CliError::usage(e),
            e => CliError::runtime(e),
        })?;
    let mut lines = stdin_lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.recv(), if stdin_open => match line {
                Some(Ok(line)) => match call(&engine, &line).await {
                    Ok(None) => {}
                    Ok(Some((call, msgid))) => {
                        print_line(&serde_json::json!({"event": "onCliSent", "call": call, "msgid": msgid}).to_string())?;
                    }
                    Err(message) => {
                        print_line(&serde_json::json!({"event": "onCliError", "message": message}).to_string())?;
                    }
                },
                Some(Err(message)) => {
                    print_line(&serde_json::json!({"event": "onCliError", "message": message}).to_string())?;
                }
                None => {
                    stdin_open = false;
                    // The events that arrive meanwhile wait in the stream and are printed below.
                    engine.close().await;
                }
            },
            event = events.recv() => match event {
                Some(event) => {
                    print_line(&event.to_json_line())?;
                    if matches!(event, Event::ConnectionClosed { .. }) {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            },
        }
    }
}

/// Makes the call a line describes. For a send, returns its name and msgid; `Err` says why the
/// line was not sent.
async fn call(engine: &Engine, line: &str) -> Result<Option<(&'static str, u64)>, String> {
    let not_a_call = |e: serde_json::Error| format!("not a call: {e}");
    let value: serde_json::Value = serde_json::from_str(line).map_err(not_a_call)?;
    // The vendor's send methods are exactly the calls named `send…`. They travel as binary
    // frames, so the protocol's `Call` does not know them.
    let is_send = value
        .get("call")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|name| name.starts_with("send"));
    let name = value.get("call").and_then(serde_json::Value::as_str);
    let sent = if name == Some("updateLoginToken") {
        // An SDK-side call (it logs in again only after a refused token): not on the wire.
        let token = value
            .get("token")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| "not a call: updateLoginToken needs a token".to_owned())?;
        engine.update_login_token(token).await.map(|()| None)
    } else if is_send {
        let send = SendLine::deserialize(value).map_err(not_a_call)?;
        send.run(engine)
            .await
            .map(|msgid| Some((send.name(), msgid)))
    } else {
        let call = Call::deserialize(value).map_err(not_a_call)?;
        run_call(engine, &call).await.map(|()| None)
    };
    sent.map_err(|e| crate::report(&e.into()))
}

async fn run_call(engine: &Engine, call: &Call) -> Result<(), CallError> {
    match call {
        // A resume given on the line goes out as written.
        Call::Login {
            resume: Some(_), ..
        }
        | Call::JoinRoom {
            resume: Some(_), ..
        } => engine.send(call).await,
        Call::Login {
            token,
            uid,
            resume: None,
        } => engine.login(token, uid).await,
        Call::Logout => engine.logout().await,
        Call::JoinRoom {
            room_id,
            uid,
            token,
            resume: None,
        } => engine.join_room(room_id, uid, token).await,
        Call::LeaveRoom { room_id } => engine.leave_room(room_id).await,
        Call::GetPeerOnlineStatus { peer_user_id } => {
            engine.get_peer_online_status(peer_user_id).await
        }
        Call::SetServerParams { signature, url } => engine.set_server_params(signature, url).await,
        Call::UpdateToken { room_id, token } => engine.update_token(room_id, token).await,
        Call::Ack { msgid } => engine.ack(*msgid).await,
    }
}

/// A send line: the vendor's send method and its arguments. `message` is text, or standard
/// base64 for the binary forms.
// The variants are the vendor's method names, `send` included: the `"call"` tag comes from them.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Deserialize)]
#[serde(
    tag = "call",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum SendLine {
    SendUserMessageOutsideRoom {
        uid: String,
        message: String,
    },
    SendUserBinaryMessageOutsideRoom {
        uid: String,
        message: Base64,
    },
    SendUserMessage {
        room_id: String,
        uid: String,
        message: String,
    },
    SendUserBinaryMessage {
        room_id: String,
        uid: String,
        message: Base64,
    },
    SendRoomMessage {
        room_id: String,
        message: String,
    },
    SendRoomBinaryMessage {
        room_id: String,
        message: Base64,
    },
    SendServerMessage {
        message: String,
    },
    SendServerBinaryMessage {
        message: Base64,
    },
}

impl SendLine {
    /// The method's name, as the line gave it.
    fn name(&self) -> &'static str {
        match self {
            SendLine::SendUserMessageOutsideRoom { .. } => "sendUserMessageOutsideRoom",
            SendLine::SendUserBinaryMessageOutsideRoom { .. } => "sendUserBinaryMessageOutsideRoom",
            SendLine::SendUserMessage { .. } => "sendUserMessage",
            SendLine::SendUserBinaryMessage { .. } => "sendUserBinaryMessage",
            SendLine::SendRoomMessage { .. } => "sendRoomMessage",
            SendLine::SendRoomBinaryMessage { .. } => "sendRoomBinaryMessage",
            SendLine::SendServerMessage { .. } => "sendServerMessage",
            SendLine::SendServerBinaryMessage { .. } => "sendServerBinaryMessage",
        }
    }

    /// Sends it; returns its msgid.
    async fn run(&self, engine: &Engine) -> Result<u64, CallError> {
        match self {
            SendLine::SendUserMessageOutsideRoom { uid, message } => {
                engine.send_user_message_outside_room(uid, message).await
            }
            SendLine::SendUserBinaryMessageOutsideRoom { uid, message } => {
                engine
                    .send_user_binary_message_outside_room(uid, &message.0)
                    .await
            }
            SendLine::SendUserMessage {
                room_id,
                uid,
                message,
            } => engine.send_user_message(room_id, uid, message).await,
            SendLine::SendUserBinaryMessage {
                room_id,
                uid,
                message,
            } => {
                engine
                    .send_user_binary_message(room_id, uid, &message.0)
                    .await
            }
            SendLine::SendRoomMessage { room_id, message } => {
                engine.send_room_message(room_id, message).await
            }
            SendLine::SendRoomBinaryMessage { room_id, message } => {
                engine.send_room_binary_message(room_id, &message.0).await
            }
            SendLine::SendServerMessage { message } => engine.send_server_message(message).await,
            SendLine::SendServerBinaryMessage { message } => {
                engine.send_server_binary_message(&message.0).await
            }
        }
    }
}

/// Bytes given as standard base64 in a JSON string.
#[derive(Debug)]
struct Base64(Vec<u8>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map(Base64)
            .map_err(|e| serde::de::Error::custom(format!("message is not base64: {e}")))
    }
}

/// Writes one line to stdout and flushes it.
fn print_line(line: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::runtime(anyhow!("cannot write to stdout: {e}")))
}

/// The non-blank lines of stdin, read on a thread of their own.
///
/// A plain thread rather than `tokio::io::stdin`: tokio reads stdin on a blocking-pool thread that
/// the runtime waits for at exit, so a session the server ended would hang until the next line.
/// A line that is not UTF-8 arrives as `Err` with a message.
fn stdin_lines() -> mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(format!("cannot read stdin: {e}")));
                    return;
                }
            }
            let line = match std::str::from_utf8(&buf) {
                Ok(s) if s.trim().is_empty() => continue,
                Ok(s) => Ok(s.trim().to_owned()),
                Err(_) => Err("the line is not UTF-8".to_owned()),
            };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}
