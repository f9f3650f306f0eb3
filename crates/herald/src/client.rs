//! `herald client`: a connection driven by lines of JSON, for scripts and for trying things out.
//!
//! Each stdin line is one call, with the vendor's names, exactly as the protocol's text frames
//! carry them (`{"call":"login","token":"…","uid":"u1"}`). Each event is printed as one line
//! (`Event::to_json_line`) and flushed at once, so a pipe sees it without delay. A line that is not
//! a call prints `{"event":"onCliError","message":…}` and the session goes on.
//!
//! It ends when the server closes the connection, or when stdin closes: then it closes the
//! connection, prints the remaining events up to `onConnectionClosed`, and exits 0.

use std::io::{BufRead as _, Write as _};

use anyhow::anyhow;
use herald_client::{connect, ConnectError, Engine, Event};
use herald_proto::client::Call;
use herald_server::config::dev;
use tokio::sync::mpsc;

use crate::CliError;

/// Arguments of `herald client`.
#[derive(Debug, clap::Args)]
#[command(after_help = r#"Calls, one JSON object per line on stdin:
  {"call":"login","token":"001...","uid":"u1"}
  {"call":"joinRoom","roomId":"r1","uid":"u1","token":"001..."}
  {"call":"leaveRoom","roomId":"r1"}
  {"call":"logout"}
Events, one JSON object per line on stdout, named after the vendor's callbacks:
  {"event":"onLoginResult","uid":"u1","errorCode":0,"elapsed":3}
  {"event":"onUserMessageReceivedOutsideRoom","msgid":1,"uid":"server_bot","message":"hello"}
  binary messages carry base64 in "message" and "binary":true
A line that is not a call prints {"event":"onCliError","message":"..."}. When stdin closes, the
connection is closed and the command exits after {"event":"onConnectionClosed",...}.
The defaults of --server and --app-id are those of `herald serve` with no --config."#)]
pub struct Args {
    /// The server, as http://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The AppId.
    #[arg(long, default_value = dev::APP_ID)]
    app_id: String,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let (engine, mut events) = connect(&args.server, &args.app_id)
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
                Some(Ok(line)) => {
                    if let Err(message) = call(&engine, &line).await {
                        print_line(&serde_json::json!({"event": "onCliError", "message": message}).to_string())?;
                    }
                }
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

/// Makes the call a line describes; `Err` says why the line was not sent.
async fn call(engine: &Engine, line: &str) -> Result<(), String> {
    let call: Call = serde_json::from_str(line).map_err(|e| format!("not a call: {e}"))?;
    let sent = match &call {
        Call::Login { token, uid } => engine.login(token, uid).await,
        Call::Logout => engine.logout().await,
        Call::JoinRoom {
            room_id,
            uid,
            token,
        } => engine.join_room(room_id, uid, token).await,
        Call::LeaveRoom { room_id } => engine.leave_room(room_id).await,
    };
    sent.map_err(|e| crate::report(&e.into()))
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
