//! The systems a run compares: Herald, its peers (NATS, Mosquitto, Socket.IO), and the limits (the
//! raw frame writer; the bare axum handler for the HTTP path), and how each is started.
//!
//! Every system gets the same shape of work: users who each receive on their own address (a
//! Herald login, a NATS subject `u.<uid>`, an MQTT topic `u/<uid>`, a Socket.IO room named after
//! the user, a raw writer slot), rooms (a Herald room, a subject `r.<room>`, a topic `r/<room>`, a
//! Socket.IO room), and an API side that sends one payload to a list of users or to a room (see
//! [`crate::api`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
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
    /// Herald started as `herald` is, but with recovery off (`[recovery] window_messages = 0`):
    /// no message streams, so what recovery costs is the difference.
    #[value(name = "herald-norecovery")]
    #[serde(rename = "herald-norecovery")]
    HeraldNoRecovery,
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
    /// Herald in cluster mode, one node on a `redis-server` (what Redis costs a node).
    Cluster1,
    /// Herald in cluster mode, three nodes on one `redis-server`, on this machine: clients and
    /// API calls spread over the nodes, so most recipients of a call are on other nodes.
    Cluster3,
    /// `cluster1` with recovery off: no stream in Redis, so what recovery costs a cluster is the
    /// difference.
    #[value(name = "cluster1-norecovery")]
    #[serde(rename = "cluster1-norecovery")]
    Cluster1NoRecovery,
    /// `cluster3` with recovery off.
    #[value(name = "cluster3-norecovery")]
    #[serde(rename = "cluster3-norecovery")]
    Cluster3NoRecovery,
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

    /// Herald in cluster mode, one node and three (`--peers cluster1,cluster3`).
    pub const CLUSTERS: [System; 2] = [System::Cluster1, System::Cluster3];

    /// True for Herald, in any mode or configuration (its clients and API speak Herald's
    /// protocol).
    pub fn is_herald(self) -> bool {
        self.herald_nodes() > 0
    }

    /// True for Herald in cluster mode.
    pub fn is_cluster(self) -> bool {
        matches!(
            self,
            System::Cluster1
                | System::Cluster3
                | System::Cluster1NoRecovery
                | System::Cluster3NoRecovery
        )
    }

    /// True for Herald with recovery off (`[recovery] window_messages = 0`).
    pub fn recovery_off(self) -> bool {
        matches!(
            self,
            System::HeraldNoRecovery | System::Cluster1NoRecovery | System::Cluster3NoRecovery
        )
    }

    /// The same Herald with recovery on (the default), for a system with it off.
    pub fn with_recovery(self) -> System {
        match self {
            System::HeraldNoRecovery => System::Herald,
            System::Cluster1NoRecovery => System::Cluster1,
            System::Cluster3NoRecovery => System::Cluster3,
            s => s,
        }
    }

    /// Herald nodes it runs (0 for the other systems).
    pub fn herald_nodes(self) -> usize {
        match self {
            System::Herald
            | System::HeraldNoRecovery
            | System::Cluster1
            | System::Cluster1NoRecovery => 1,
            System::Cluster3 | System::Cluster3NoRecovery => 3,
            _ => 0,
        }
    }

    /// The name tables and charts use.
    pub fn label(self) -> &'static str {
        match self {
            System::Herald => "Herald",
            System::HeraldNoRecovery => "Herald, recovery off",
            System::Nats => "NATS",
            System::Mosquitto => "Mosquitto",
            System::Socketio => "Socket.IO",
            System::RawWriter => "raw writer (limit)",
            System::BareAxum => "bare axum (HTTP limit)",
            System::Cluster1 => "Herald on Redis, 1 node",
            System::Cluster3 => "Herald on Redis, 3 nodes",
            System::Cluster1NoRecovery => "Herald on Redis, 1 node, recovery off",
            System::Cluster3NoRecovery => "Herald on Redis, 3 nodes, recovery off",
        }
    }

    /// Whether the system takes part in `scenario`. The bare axum handler delivers nothing: it is
    /// the limit of the unicast API path only. A cluster runs the room scenarios whose calls
    /// reach many nodes (fan-out, broadcast). Herald with recovery off runs what Herald runs but
    /// the soak.
    pub fn runs(self, scenario: Scenario) -> bool {
        if scenario == Scenario::Soak {
            // It checks Herald's guarantees (nothing lost, order, slow consumers cut off), which
            // recovery does not change.
            return self.is_herald() && !self.recovery_off();
        }
        match self {
            System::BareAxum => scenario == Scenario::Unicast,
            s if s.is_cluster() => matches!(scenario, Scenario::Fanout | Scenario::Broadcast),
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
    /// `redis-server`, for the clusters.
    pub redis: PathBuf,
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
        System::HeraldNoRecovery => {
            let base = std::fs::read_to_string(herald_config)
                .with_context(|| format!("cannot read {}", herald_config.display()))?;
            let config = dir.join(format!("{tag}.toml"));
            std::fs::write(&config, recovery_off_config(&base))
                .with_context(|| format!("cannot write {}", config.display()))?;
            Running::herald(&programs.herald, &config, log).await
        }
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
        s => {
            let nodes = s.herald_nodes();
            start_cluster(nodes, s.recovery_off(), programs, herald_config, dir, tag).await
        }
    }
}

/// Starts a `redis-server` on a free port (no persistence) and `nodes` Herald nodes on it, each
/// with `herald_config` (with recovery off if `recovery_off`) and a `[cluster]` section. The
/// first node is the returned process; the other nodes and Redis are its companions.
async fn start_cluster(
    nodes: usize,
    recovery_off: bool,
    programs: &Programs,
    herald_config: &Path,
    dir: &Path,
    tag: &str,
) -> anyhow::Result<Running> {
    let redis_addr = free_port()?;
    let mut cmd = Command::new(&programs.redis);
    cmd.args(["--bind", "127.0.0.1", "--port"])
        .arg(redis_addr.port().to_string())
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
    let redis = Running::start(
        cmd,
        dir.join(format!("{tag}-redis.log")),
        Ready::Listens(redis_addr, redis_addr),
    )
    .await?;
    let mut base = std::fs::read_to_string(herald_config)
        .with_context(|| format!("cannot read {}", herald_config.display()))?;
    if recovery_off {
        base = recovery_off_config(&base);
    }
    let mut started = Vec::new();
    for n in 0..nodes.max(1) {
        let config = dir.join(format!("{tag}-node{n}.toml"));
        std::fs::write(&config, cluster_config(&base, redis_addr, n))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let log = dir.join(format!("{tag}-node{n}.log"));
        started.push(Running::herald(&programs.herald, &config, log).await?);
    }
    for node in &started {
        wait_ready(node.target.addr)
            .await
            .with_context(|| format!("node log: {}", node.log.display()))?;
    }
    let mut first = started.remove(0);
    first.target.nodes = std::iter::once(first.target.addr)
        .chain(started.iter().map(|r| r.target.addr))
        .collect();
    first.target.pids = std::iter::once(first.target.pid)
        .chain(started.iter().map(|r| r.target.pid))
        .chain([redis.target.pid])
        .collect();
    first.target.redis = Some(redis_addr);
    first.companions = started;
    first.companions.push(redis);
    Ok(first)
}

/// Waits until the Herald at `addr` answers `GET /readyz` with 200: a cluster node that has just
/// started routes calls only once it is in sync with Redis.
async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    loop {
        let status = match crate::http::HttpConn::connect(addr).await {
            Ok(mut conn) => conn.call(request.as_bytes()).await.map(|a| a.status).ok(),
            Err(_) => None,
        };
        if status == Some(200) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("Herald at {addr} was not ready within 30 s (last /readyz: {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Herald's benchmark configuration with recovery off: no stream per login and membership, and
/// message frames without a stream position.
fn recovery_off_config(base: &str) -> String {
    format!("{base}\n[recovery]\nwindow_messages = 0\n")
}

/// Herald's benchmark configuration as node `n` of a cluster on the Redis at `redis`.
fn cluster_config(base: &str, redis: SocketAddr, n: usize) -> String {
    format!("{base}\n[cluster]\nredis = \"redis://{redis}\"\nnode_id = \"bench-node-{n}\"\n")
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
    fn the_limits_and_clusters_run_only_their_scenarios() {
        assert!(!System::Nats.runs(Scenario::Soak) && System::Herald.runs(Scenario::Soak));
        for s in Scenario::ALL {
            assert!(System::Nats.runs(s) && System::RawWriter.runs(s));
            assert_eq!(System::BareAxum.runs(s), s == Scenario::Unicast);
            assert_eq!(
                System::Cluster3.runs(s),
                matches!(s, Scenario::Fanout | Scenario::Broadcast)
            );
        }
    }

    #[test]
    fn a_cluster_node_config_is_the_base_with_its_cluster_section() {
        let base = crate::server::config_toml(&crate::server::bench_apps(2), "127.0.0.1:0");
        let text = cluster_config(&base, "127.0.0.1:6399".parse().unwrap(), 2);
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            value["cluster"]["redis"].as_str(),
            Some("redis://127.0.0.1:6399")
        );
        assert_eq!(value["cluster"]["node_id"].as_str(), Some("bench-node-2"));
        assert_eq!(value["apps"].as_array().map(Vec::len), Some(2));
        assert!(System::Cluster3.is_herald() && !System::Nats.is_herald());
    }

    #[test]
    fn recovery_off_is_the_base_with_no_stream_and_a_valid_herald_config() {
        use herald_server::config::Config;
        let base = crate::server::config_toml(&crate::server::bench_apps(2), "127.0.0.1:0");
        let on = Config::from_toml(&base).unwrap();
        assert_eq!(
            on.recovery.window_messages, 1000,
            "Herald runs with the default"
        );
        let text = recovery_off_config(&base);
        assert!(text.starts_with(&base));
        let off = Config::from_toml(&text).unwrap();
        assert_eq!(off.recovery.window_messages, 0);
        assert_eq!(off.recovery.window_ms, on.recovery.window_ms);
        assert_eq!(off.apps.len(), 2);
        assert_eq!(
            off.gateway.heartbeat_interval(),
            on.gateway.heartbeat_interval()
        );
        // A cluster node's configuration is valid too.
        let node = cluster_config(&base, "127.0.0.1:6399".parse().unwrap(), 0);
        assert!(Config::from_toml(&node).unwrap().cluster.is_some());
    }

    #[test]
    fn recovery_off_runs_what_herald_runs_but_the_soak_and_is_named_on_the_command_line() {
        use clap::ValueEnum as _;
        let s = System::HeraldNoRecovery;
        for scenario in Scenario::ALL {
            assert_eq!(s.runs(scenario), scenario != Scenario::Soak);
            if scenario != Scenario::Soak {
                assert!(System::Herald.runs(scenario));
            }
        }
        assert!(s.is_herald() && !s.is_cluster() && !s.is_limit());
        assert_eq!(s.herald_nodes(), 1);
        assert_eq!(System::from_str("herald-norecovery", false), Ok(s));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"herald-norecovery\"");
        assert!(!System::PEERS.contains(&s) && !System::CLUSTERS.contains(&s));
        // Side by side with Herald: right after it in a run's order.
        let mut v = [System::Nats, s, System::Cluster1, System::Herald];
        v.sort();
        assert_eq!(&v[..2], &[System::Herald, s]);
    }
}
