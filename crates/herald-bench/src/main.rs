//! `herald-bench`: run the benchmark scenarios against Herald and write the results.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use herald_bench::procfs;
use herald_bench::progress::{say, Progress};
use herald_bench::report::Report;
use herald_bench::scenario::{self, Ctx, Profile, Scenario};
use herald_bench::server::{self, Herald, Target};

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
    Run(RunArgs),
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
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenarios to run, in this order; all of them when none is given.
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Small sizes and two-second steps (about a minute and a half for everything).
    #[arg(long)]
    quick: bool,
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
    /// Seconds per load step (default: 2 with --quick, 10 without).
    #[arg(long, value_name = "SECS")]
    step_secs: Option<f64>,
    /// Most load steps per stepped run.
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// Exit with status 1 if any message the server accepted was not received exactly once, or
    /// any client or call failed. Never fails on a timing.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::WriteConfig { out, listen, apps } => {
            let text = server::config_toml(&server::bench_apps(apps), &listen);
            std::fs::write(&out, text)
                .with_context(|| format!("cannot write {}", out.display()))
                .map(|()| ExitCode::SUCCESS)
        }
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
            (apps, Some(Target { addr, pid }))
        }
        (None, None) => {
            bail!("give --herald-bin PATH (start Herald) or --server ADDR --config FILE")
        }
    };

    let progress = Progress::start();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut ctx = Ctx {
        target: external.clone().unwrap_or(Target {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: 0,
        }),
        apps: Arc::from(apps),
        profile: profile.clone(),
        progress: progress.clone(),
        epoch: Instant::now(),
        problems: Vec::new(),
    };
    let mut outcomes = Vec::new();
    for &s in &scenarios {
        let name = format!("{s:?}").to_lowercase();
        let herald = match &args.herald_bin {
            Some(bin) => {
                let config = args.out_dir.join("herald-bench.toml");
                let log = args.out_dir.join(format!("herald-{name}.log"));
                let h = Herald::start(bin, &config, log).await?;
                ctx.target = h.target.clone();
                Some(h)
            }
            None => None,
        };
        say(format!(
            "== {name} (server pid {} at {})",
            ctx.target.pid, ctx.target.addr
        ));
        progress.watch_server(Some(ctx.target.pid));
        outcomes.push(scenario::run(&mut ctx, s).await);
        progress.watch_fleet(None);
        progress.watch_server(None);
        if let Some(h) = herald {
            h.stop().await;
        }
    }
    progress.finish();

    let report = Report {
        machine: procfs::machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix,
        fresh_server_per_scenario: args.herald_bin.is_some(),
        profile,
        scenarios: outcomes,
        problems: ctx.problems.clone(),
        timeline: progress.samples(),
    };
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
