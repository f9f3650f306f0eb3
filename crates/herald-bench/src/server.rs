//! The server under test: the apps the benchmark uses, the configuration it writes for Herald, and
//! the processes it starts (a fresh one per scenario and system, so each run's memory and CPU
//! figures start from a clean process).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::http::AccessKey;

/// One app as the benchmark needs it: its AppKey to make client tokens, a key pair to sign calls.
#[derive(Debug, Clone)]
pub struct App {
    /// The 24-character AppId.
    pub app_id: String,
    /// Signs client tokens.
    pub app_key: String,
    /// Signs OpenAPI calls.
    pub key: AccessKey,
}

/// The benchmark's apps: app 0 carries the room scenarios (idle, fan-out, broadcast, churn) and has
/// the highest rate limit the server allows, so the room scenarios measure delivery, not the
/// limiter; the others carry the unicast scenario at the default limit of 500 calls/s each.
pub fn bench_apps(count: usize) -> Vec<App> {
    (0..count.max(1))
        .map(|i| App {
            // "benchapp" + 16 digits: the 24 characters the token format needs.
            app_id: format!("benchapp{i:016}"),
            app_key: format!("bench-app-key-{i}"),
            key: AccessKey {
                ak: format!("AKLTbench{i}"),
                sk: format!("bench-secret-{i}"),
            },
        })
        .collect()
}

/// The rate limit of app 0 (Herald's maximum `qps_limit`).
pub const ROOM_APP_QPS: u32 = 100_000;

/// The configuration for `apps`, listening on `listen`. Presence events are off in every app:
/// with them, each join into a room of 10,000 costs 10,000 events, and set-up would be measured
/// instead of delivery (`docs/protocol.md` recommends the same for very large rooms).
pub fn config_toml(apps: &[App], listen: &str) -> String {
    let mut out = format!(
        "# Written by herald-bench.\nlisten = \"{listen}\"\n\n[gateway]\nheartbeat_interval_ms = 20000\n"
    );
    for (i, app) in apps.iter().enumerate() {
        out.push_str(&format!(
            "\n[[apps]]\napp_id = \"{}\"\napp_key = \"{}\"\naccess_keys = [{{ ak = \"{}\", sk = \"{}\" }}]\npresence_events = false\n",
            app.app_id, app.app_key, app.key.ak, app.key.sk
        ));
        if i == 0 {
            out.push_str(&format!("qps_limit = {ROOM_APP_QPS}\n"));
        }
    }
    out
}

/// Reads the apps from a Herald configuration file (for a server the benchmark did not start).
/// Only the fields the benchmark needs are read; the first access key of each app is used.
pub fn read_apps(path: &Path) -> anyhow::Result<Vec<App>> {
    #[derive(Deserialize)]
    struct File {
        apps: Vec<FileApp>,
    }
    #[derive(Deserialize)]
    struct FileApp {
        app_id: String,
        app_key: String,
        access_keys: Vec<FileKey>,
    }
    #[derive(Deserialize)]
    struct FileKey {
        ak: String,
        sk: String,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: File =
        toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    file.apps
        .into_iter()
        .map(|a| {
            let k = a
                .access_keys
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("app {} has no access key", a.app_id))?;
            Ok(App {
                app_id: a.app_id,
                app_key: a.app_key,
                key: AccessKey { ak: k.ak, sk: k.sk },
            })
        })
        .collect()
}

/// Where the server under test is. A cluster is several nodes (each both a WebSocket and an API
/// address) and the processes that make it up (the nodes and Redis).
#[derive(Debug, Clone)]
pub struct Target {
    /// Where its WebSocket clients connect (the first node's address for a cluster).
    pub addr: SocketAddr,
    /// Where its API side takes calls (Herald's OpenAPI, a NATS or MQTT port, an HTTP endpoint);
    /// the same as `addr` for Herald.
    pub api: SocketAddr,
    /// Its pid, for `/proc` (the first node's for a cluster).
    pub pid: u32,
    /// Every node's address, `addr` first; client `i` connects to node `i % len` and API
    /// connection `w` calls node `w % len`. One entry for a single server.
    pub nodes: Vec<SocketAddr>,
    /// Every process whose CPU time and memory count as the server's: the nodes and Redis.
    pub pids: Vec<u32>,
    /// The cluster's Redis, for its command counts.
    pub redis: Option<SocketAddr>,
}

impl Target {
    /// A server of one process.
    pub fn single(addr: SocketAddr, api: SocketAddr, pid: u32) -> Target {
        Target {
            addr,
            api,
            pid,
            nodes: vec![addr],
            pids: vec![pid],
            redis: None,
        }
    }

    /// The `Host` header value of the WebSocket side.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The WebSocket address client `index` connects to (clients are spread over the nodes).
    pub fn node(&self, index: usize) -> SocketAddr {
        if self.nodes.is_empty() {
            self.addr
        } else {
            self.nodes[index % self.nodes.len()]
        }
    }

    /// The API address of API connection `worker`: the API address of a single server, the
    /// nodes in turn for a cluster.
    pub fn api_for(&self, worker: usize) -> SocketAddr {
        if self.nodes.len() > 1 {
            self.nodes[worker % self.nodes.len()]
        } else {
            self.api
        }
    }
}

/// A server process started by the benchmark (Herald or a peer). Killed when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Where it listens, and its pid.
    pub target: Target,
    /// Its log (stderr, and stdout unless it announces its address there).
    pub log: PathBuf,
    /// The other processes of a cluster (the other nodes, then Redis), stopped after this one
    /// in this order.
    pub companions: Vec<Running>,
}

/// How a started server shows it is ready.
#[derive(Debug, Clone, Copy)]
pub enum Ready<'a> {
    /// It prints `<prefix>http://ADDR` on stdout; ADDR is both its WebSocket and API address.
    Announces(&'a str),
    /// It accepts TCP connections on these addresses: (WebSocket, API).
    Listens(SocketAddr, SocketAddr),
}

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Running {
    /// Starts `herald serve --config config` and waits until it prints its address.
    pub async fn herald(bin: &Path, config: &Path, log: PathBuf) -> anyhow::Result<Running> {
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(config);
        Running::start(cmd, log, Ready::Announces("herald listening on ")).await
    }

    /// Starts `cmd` with its output in `log` and waits until it is ready.
    pub async fn start(
        mut cmd: Command,
        log: PathBuf,
        ready: Ready<'_>,
    ) -> anyhow::Result<Running> {
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let stdout = match ready {
            Ready::Announces(_) => Stdio::piped(),
            Ready::Listens(..) => Stdio::from(log_file.try_clone()?),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{program} exited at once"))?;
        let waited = match ready {
            Ready::Announces(prefix) => {
                let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
                tokio::time::timeout(START_TIMEOUT, announced(stdout, prefix))
                    .await
                    .map(|r| r.map(|addr| (addr, addr)))
            }
            Ready::Listens(ws, api) => {
                tokio::time::timeout(START_TIMEOUT, async {
                    for addr in [ws, api] {
                        while tokio::net::TcpStream::connect(addr).await.is_err() {
                            if let Ok(Some(status)) = child.try_wait() {
                                bail!("{program} exited ({status}) before listening");
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    Ok((ws, api))
                })
                .await
            }
        };
        let (addr, api) = waited
            .map_err(|_| anyhow!("{program} did not start listening within 30 s"))?
            .with_context(|| {
                format!(
                    "{program} failed to start; its log, {}:\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })?;
        Ok(Running {
            child,
            target: Target::single(addr, api, pid),
            log,
            companions: Vec::new(),
        })
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s), then its companions in order.
    pub async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.target.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        for c in std::mem::take(&mut self.companions) {
            Box::pin(c.stop()).await;
        }
    }
}

/// Reads stdout until a line `<prefix>http://ADDR …`, then keeps draining it in the background
/// so the server never blocks on a full pipe.
async fn announced(stdout: ChildStdout, prefix: &str) -> anyhow::Result<SocketAddr> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("http://"))
        {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            let addr = addr
                .parse::<SocketAddr>()
                .with_context(|| format!("unexpected address in {line:?}"))?;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(addr);
        }
    }
    bail!("the server exited before listening")
}

/// A port on 127.0.0.1 that was free a moment ago (for servers configured by file).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_reads_back() {
        let apps = bench_apps(3);
        assert!(apps.iter().all(|a| a.app_id.len() == 24));
        let text = config_toml(&apps, "127.0.0.1:0");
        let dir = std::env::temp_dir().join(format!("herald-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let back = read_apps(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].app_id, apps[2].app_id);
        assert_eq!(back[2].key.sk, apps[2].key.sk);
        assert_eq!(text.matches("qps_limit").count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
