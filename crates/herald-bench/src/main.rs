//! `herald-bench`: run the benchmark scenarios against Herald and its peers and write the results;
//! also the two limits the peers are measured against (`raw-writer`, `bare-axum`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use herald_bench::charts;
use herald_bench::peers::{bare_axum, raw};
use herald_bench::procfs;
use herald_bench::progress::{say, Progress};
use herald_bench::report::{Report, Run};
use herald_bench::scenario::{self, Ctx, Profile, Scenario};
use herald_bench::server::{self, Target};
use herald_bench::system::{self, Programs, System};

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Load generator and measurements for Herald"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios and write results.json and results.md to --out-dir.
    Run(Box<RunArgs>),
    /// Write a Herald configuration with the benchmark's apps, for a server you start yourself.
    WriteConfig {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The listen address to put in it.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Apps: app 0 for the room scenarios, the rest for unicast.
        #[arg(long, default_value_t = 201)]
        apps: usize,
    },
    /// The limit for delivery: accept WebSocket clients (`GET /?c=<n>`) and write pre-encoded
    /// frames to the clients listed by `POST /send {"to":[n,…],"message":…}`, with no routing.
    RawWriter {
        /// Where to listen (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// The limit for the HTTP path: a bare axum handler that parses `SendUnicast` and answers
    /// success, with no signing, validation or delivery.
    BareAxum {
        /// Where to listen (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenarios to run, in this order; all of them when none is given.
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Small sizes and one-second steps (about 20 s per system for everything).
    #[arg(long)]
    quick: bool,
    /// Also run these peers and limits, each on every scenario it can do, side by side with
    /// Herald (comma-separated). `herald-norecovery` (and `cluster1-norecovery`,
    /// `cluster3-norecovery`) is Herald (in cluster mode) with recovery off, to measure what
    /// recovery costs.
    #[arg(long, value_enum, value_delimiter = ',', requires = "herald_bin")]
    peers: Vec<System>,
    /// Run every peer and limit and Herald in cluster mode
    /// (`--peers nats,mosquitto,socketio,raw-writer,bare-axum,cluster1,cluster3`; not the
    /// `-norecovery` systems).
    #[arg(long, conflicts_with = "peers", requires = "herald_bin")]
    all_peers: bool,
    /// The `nats-server` program.
    #[arg(long, value_name = "PATH", default_value = "nats-server")]
    nats_bin: PathBuf,
    /// The `mosquitto` program.
    #[arg(long, value_name = "PATH", default_value = "mosquitto")]
    mosquitto_bin: PathBuf,
    /// The `redis-server` program, for Herald in cluster mode (`cluster1`, `cluster3`).
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_bin: PathBuf,
    /// The `node` program, for the Socket.IO server.
    #[arg(long, value_name = "PATH", default_value = "node")]
    node_bin: PathBuf,
    /// The Socket.IO server's folder (`server.js` and its installed `node_modules`).
    #[arg(long, value_name = "DIR", default_value = "bench/peers/socketio")]
    socketio_dir: PathBuf,
    /// Draw PNG charts into this folder and link them from results.md.
    #[arg(long, value_name = "DIR")]
    charts: Option<PathBuf>,
    /// How results.md links the charts: this prefix and the file name (default: the --charts
    /// folder as given).
    #[arg(long, value_name = "PREFIX", requires = "charts")]
    charts_link: Option<String>,
    /// The TrueType font of the charts' text.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
    /// Start this `herald` binary (a fresh `herald serve --config` per scenario, on a free port).
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    herald_bin: Option<PathBuf>,
    /// Use a server already running at this address (made with `write-config`, or any
    /// configuration whose apps --config lists).
    #[arg(long, value_name = "ADDR", requires = "config")]
    server: Option<SocketAddr>,
    /// The running server's configuration, to read its apps and keys from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The running server's pid (found from its listening port when omitted).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Where results, the generated configuration and server logs go.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    out_dir: PathBuf,
    /// Seconds per load step (default: 1 with --quick, 5 without).
    #[arg(long, value_name = "SECS")]
    step_secs: Option<f64>,
    /// Most load steps per stepped run.
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// soak: how long, in seconds (default: 4 with --quick, 600 without).
    #[arg(long, value_name = "SECS")]
    soak_secs: Option<f64>,
    /// soak: fan-out calls/s, 600 recipients each (default: 20 with --quick, 100 without).
    /// Choose 80% of the highest rate the fan-out scenario sustained.
    #[arg(long, value_name = "CALLS")]
    soak_rate: Option<f64>,
    /// Exit with status 1 if any message the server accepted was not received exactly once, or
    /// any client or call failed. Never fails on a timing.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args).await,
        Command::WriteConfig { out, listen, apps } => {
            let text = server::config_toml(&server::bench_apps(apps), &listen);
            std::fs::write(&out, text)
                .with_context(|| format!("cannot write {}", out.display()))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::RawWriter { listen } => raw::serve(listen).await.map(|()| ExitCode::SUCCESS),
        Command::BareAxum { listen } => bare_axum::serve(listen).await.map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut profile = if args.quick {
        Profile::quick()
    } else {
        Profile::full()
    };
    if let Some(s) = args.step_secs {
        profile.step_secs = s;
    }
    if let Some(n) = args.max_steps {
        profile.max_steps = n;
    }
    if let Some(s) = args.soak_secs {
        profile.soak_secs = s;
    }
    if let Some(r) = args.soak_rate {
        profile.soak_rate = r;
    }
    let mut scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    scenarios.dedup();

    // Each client is an open file here (and one in the server, which inherits the limit).
    let limit = procfs::raise_open_files_limit().context("cannot raise the open-files limit")?;
    let needed = scenarios
        .iter()
        .map(|s| s.connections(&profile))
        .max()
        .unwrap_or(0)
        + 256;
    if needed as u64 > limit {
        bail!(
            "the scenarios need about {needed} open files but the limit is {limit}; \
             spreading clients over several processes is not implemented yet"
        );
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;

    let (apps, external) = match (&args.herald_bin, args.server) {
        (Some(_), _) => {
            let apps = server::bench_apps(1 + profile.unicast_apps);
            let path = args.out_dir.join("herald-bench.toml");
            std::fs::write(&path, server::config_toml(&apps, "127.0.0.1:0"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            (apps, None)
        }
        (None, Some(addr)) => {
            let config = args.config.clone().unwrap_or_default();
            let apps = server::read_apps(&config)?;
            if apps.is_empty() {
                bail!("{} lists no apps", config.display());
            }
            let pid = match args.server_pid {
                Some(p) => p,
                None => procfs::listener_pid(addr.port()).with_context(|| {
                    format!(
                        "no process found listening on port {}; pass --server-pid",
                        addr.port()
                    )
                })?,
            };
            (apps, Some(Target::single(addr, addr, pid)))
        }
        (None, None) => {
            bail!("give --herald-bin PATH (start Herald) or --server ADDR --config FILE")
        }
    };

    let mut systems = vec![System::Herald];
    if args.all_peers {
        systems.extend(System::PEERS);
        systems.extend(System::CLUSTERS);
    } else {
        systems.extend(args.peers.iter().copied().filter(|s| *s != System::Herald));
    }
    systems.sort();
    systems.dedup();
    let programs = Programs {
        herald: args.herald_bin.clone().unwrap_or_default(),
        nats: args.nats_bin.clone(),
        mosquitto: args.mosquitto_bin.clone(),
        node: args.node_bin.clone(),
        socketio_dir: args.socketio_dir.clone(),
        me: std::env::current_exe().context("cannot find this program")?,
        redis: args.redis_bin.clone(),
    };
    if let Some(dir) = &args.charts {
        // Fail before the run, not after it.
        charts::load_font(&args.font)?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let progress = Progress::start();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut ctx = Ctx {
        system: System::Herald,
        target: external.clone().unwrap_or_else(|| {
            let none = SocketAddr::from(([127, 0, 0, 1], 0));
            Target::single(none, none, 0)
        }),
        apps: Arc::from(apps),
        profile: profile.clone(),
        progress: progress.clone(),
        epoch: Instant::now(),
        problems: Vec::new(),
        peer_losses: Vec::new(),
    };
    let herald_config = args.out_dir.join("herald-bench.toml");
    let mut runs = Vec::new();
    // Scenario by scenario, every system in turn: the systems of one scenario run minutes apart,
    // under the same conditions on a shared machine.
    for &s in &scenarios {
        for &system in systems.iter().filter(|sys| sys.runs(s)) {
            let name = format!("{s:?}").to_lowercase();
            let tag = format!("{}-{name}", system_tag(system));
            let started = if external.is_some() {
                None
            } else {
                let running =
                    system::start(system, &programs, &herald_config, &args.out_dir, &tag).await;
                match running {
                    Ok(r) => {
                        ctx.target = r.target.clone();
                        Some(r)
                    }
                    Err(e) if !system.is_herald() => {
                        say(format!(
                            "== {name} on {}: cannot start: {e:#}",
                            system.label()
                        ));
                        ctx.problems
                            .push(format!("{name} on {}: cannot start: {e:#}", system.label()));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            ctx.system = system;
            say(format!(
                "== {name} on {} (server pid {} at {})",
                system.label(),
                ctx.target.pid,
                ctx.target.addr
            ));
            progress.watch_server(Some(ctx.target.pid));
            let (problems_before, losses_before) = (ctx.problems.len(), ctx.peer_losses.len());
            let outcome = scenario::run(&mut ctx, s).await;
            // Problems name the scenario; say which system had them.
            for p in ctx.problems[problems_before..]
                .iter_mut()
                .chain(&mut ctx.peer_losses[losses_before..])
            {
                *p = format!("{}: {p}", system.label());
            }
            runs.push(Run { system, outcome });
            progress.watch_fleet(None);
            progress.watch_server(None);
            if let Some(r) = started {
                r.stop().await;
            }
        }
    }
    progress.finish();

    let mut report = Report {
        machine: procfs::machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix,
        fresh_server_per_scenario: external.is_none(),
        profile,
        systems,
        runs,
        problems: ctx.problems.clone(),
        peer_losses: ctx.peer_losses.clone(),
        charts: Vec::new(),
        timeline: progress.samples(),
    };
    if let Some(dir) = &args.charts {
        let link = args
            .charts_link
            .clone()
            .unwrap_or_else(|| dir.display().to_string());
        for (what, file) in charts::draw(&report, dir)? {
            report.charts.push((
                what,
                format!("{}/{}", link.trim_end_matches('/'), file.display()),
            ));
        }
        say(format!("charts: {}", dir.display()));
    }
    let json = args.out_dir.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = report.markdown();
    let md_path = args.out_dir.join("results.md");
    std::fs::write(&md_path, &md).with_context(|| format!("cannot write {}", md_path.display()))?;
    println!("{md}");
    say(format!(
        "results: {} and {}",
        json.display(),
        md_path.display()
    ));
    if !report.clean() {
        say("problems:");
        for p in &report.problems {
            say(format!("  - {p}"));
        }
        if args.check {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The name of a system in file names.
fn system_tag(system: System) -> &'static str {
    match system {
        System::Herald => "herald",
        System::HeraldNoRecovery => "herald-norecovery",
        System::Nats => "nats",
        System::Mosquitto => "mosquitto",
        System::Socketio => "socketio",
        System::RawWriter => "raw-writer",
        System::BareAxum => "bare-axum",
        System::Cluster1 => "cluster1",
        System::Cluster3 => "cluster3",
        System::Cluster1NoRecovery => "cluster1-norecovery",
        System::Cluster3NoRecovery => "cluster3-norecovery",
    }
}
