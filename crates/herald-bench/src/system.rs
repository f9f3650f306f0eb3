//! The systems a run compares: Herald, its peers (NATS, Mosquitto, Socket.IO), and the limits (the
//! raw frame writer; the bare axum handler for the HTTP path), and how each is started.
//!
//! Every system gets the same shape of work: users who each receive on their own address (a
//! Herald login, a NATS subject `u.<uid>`, an MQTT topic `u/<uid>`, a Socket.IO room named after
//! the user, a raw writer slot), rooms (a Herald room, a subject `r.<room>`, a topic `r/<room>`, a
//! Socket.IO room), and an API side that sends one payload to a list of users or to a room (see
//! [`crate::api`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use tokio::process::Command;

use crate::scenario::Scenario;
use crate::server::{free_port, Ready, Running};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// Herald (`herald serve`).
    Herald,
    /// `nats-server` with its WebSocket listener.
    Nats,
    /// `mosquitto` with its WebSocket listener.
    Mosquitto,
    /// The Socket.IO server of `bench/peers/socketio` (Node.js).
    Socketio,
    /// `herald-bench raw-writer`: pre-encoded frames, no routing (the limit).
    RawWriter,
    /// `herald-bench bare-axum`: the HTTP path's limit (unicast only).
    BareAxum,
}

impl System {
    /// The peers and limits, in the order a run takes them after Herald.
    pub const PEERS: [System; 5] = [
        System::Nats,
        System::Mosquitto,
        System::Socketio,
        System::RawWriter,
        System::BareAxum,
    ];

    /// The name tables and charts use.
    pub fn label(self) -> &'static str {
        match self {
            System::Herald => "Herald",
            System::Nats => "NATS",
            System::Mosquitto => "Mosquitto",
            System::Socketio => "Socket.IO",
            System::RawWriter => "raw writer (limit)",
            System::BareAxum => "bare axum (HTTP limit)",
        }
    }

    /// Whether the system takes part in `scenario`. The bare axum handler delivers nothing: it is
    /// the limit of the unicast API path only.
    pub fn runs(self, scenario: Scenario) -> bool {
        match self {
            System::BareAxum => scenario == Scenario::Unicast,
            _ => true,
        }
    }

    /// True for the two limits (not peers a user would pick).
    pub fn is_limit(self) -> bool {
        matches!(self, System::RawWriter | System::BareAxum)
    }
}

/// Where the programs of the systems are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `herald`.
    pub herald: PathBuf,
    /// `nats-server`.
    pub nats: PathBuf,
    /// `mosquitto`.
    pub mosquitto: PathBuf,
    /// `node`.
    pub node: PathBuf,
    /// The folder of the Socket.IO server (`server.js`, with its `node_modules`).
    pub socketio_dir: PathBuf,
    /// This program (for `raw-writer` and `bare-axum`).
    pub me: PathBuf,
}

/// The NATS configuration: the client port for the API side, and the WebSocket listener without
/// TLS (loopback only).
fn nats_config(port: u16, ws_port: u16) -> String {
    format!(
        "# Written by herald-bench.\nlisten: \"127.0.0.1:{port}\"\nwebsocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  no_tls: true\n}}\n"
    )
}

/// The Mosquitto configuration: anonymous clients, an MQTT listener for the API side and a
/// WebSocket listener, no persistence, and only errors and warnings logged (a log line per
/// connection would be measured otherwise). `user root` keeps it from switching to the
/// `mosquitto` user when started as root (it ignores the line otherwise).
fn mosquitto_config(port: u16, ws_port: u16) -> String {
    format!(
        "# Written by herald-bench.\nuser root\nper_listener_settings false\nallow_anonymous true\npersistence false\n\
         log_dest stderr\nlog_type error\nlog_type warning\nconnection_messages false\nset_tcp_nodelay true\n\
         listener {port} 127.0.0.1\n\
         listener {ws_port} 127.0.0.1\nprotocol websockets\n"
    )
}

/// Starts a fresh `system` for one scenario. `herald_config` is Herald's configuration; the
/// peers' configurations and every log go to `dir`, named after `tag`.
pub async fn start(
    system: System,
    programs: &Programs,
    herald_config: &Path,
    dir: &Path,
    tag: &str,
) -> anyhow::Result<Running> {
    let log = dir.join(format!("{tag}.log"));
    match system {
        System::Herald => Running::herald(&programs.herald, herald_config, log).await,
        System::Nats | System::Mosquitto => {
            let (api, ws) = (free_port()?, free_port()?);
            let (text, program) = if system == System::Nats {
                (nats_config(api.port(), ws.port()), &programs.nats)
            } else {
                (mosquitto_config(api.port(), ws.port()), &programs.mosquitto)
            };
            let config = dir.join(format!("{tag}.conf"));
            std::fs::write(&config, text)
                .with_context(|| format!("cannot write {}", config.display()))?;
            let mut cmd = Command::new(program);
            cmd.arg("-c").arg(&config);
            Running::start(cmd, log, Ready::Listens(ws, api)).await
        }
        System::Socketio => {
            let mut cmd = Command::new(&programs.node);
            cmd.current_dir(&programs.socketio_dir)
                .arg("server.js")
                .arg("0")
                .arg("127.0.0.1");
            Running::start(cmd, log, Ready::Announces("socketio listening on ")).await
        }
        System::RawWriter | System::BareAxum => {
            let (sub, prefix) = if system == System::RawWriter {
                ("raw-writer", "raw-writer listening on ")
            } else {
                ("bare-axum", "bare-axum listening on ")
            };
            let mut cmd = Command::new(&programs.me);
            cmd.arg(sub).arg("--listen").arg("127.0.0.1:0");
            Running::start(cmd, log, Ready::Announces(prefix)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_name_both_listeners() {
        let n = nats_config(4222, 8080);
        assert!(n.contains("listen: \"127.0.0.1:4222\""));
        assert!(n.contains("listen: \"127.0.0.1:8080\"") && n.contains("no_tls: true"));
        let m = mosquitto_config(1883, 9001);
        assert!(m.contains("listener 1883 127.0.0.1\n"));
        assert!(m.ends_with("listener 9001 127.0.0.1\nprotocol websockets\n"));
    }

    #[test]
    fn only_the_http_limit_skips_scenarios() {
        for s in Scenario::ALL {
            assert!(System::Nats.runs(s) && System::RawWriter.runs(s));
            assert_eq!(System::BareAxum.runs(s), s == Scenario::Unicast);
        }
    }
}
