//! `herald`: the server (`herald serve`) and the tools a user reaches for next to it (`token`,
//! `client`, `send`). Each subcommand lives in its own module and calls a library; this file parses
//! the command line, sets up logging and turns failures into exit codes.

mod client;
mod send;
mod serve;
mod token;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Herald: a self-hosted real-time messaging server, wire-compatible with the vendor's messaging
/// OpenAPI.
#[derive(Debug, Parser)]
#[command(name = "herald", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: human-readable text, or one JSON object per line for log pipelines.
    /// The level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the OpenAPI at /, the client gateway at /ws, /metrics and /healthz.
    Serve(serve::Args),
    /// Print a 001 AccessToken for `login` (no --room) or `joinRoom`.
    Token(token::Args),
    /// Connect as an app: calls in on stdin, events out on stdout, one JSON object per line.
    Client(client::Args),
    /// Call a messaging action of the OpenAPI and print the response envelope.
    Send(send::Args),
}

/// A failed command, sorted by who has to act.
#[derive(Debug)]
pub enum CliError {
    /// The command line or the configuration is wrong: exit code 2.
    Usage(anyhow::Error),
    /// Something failed while running: exit code 1.
    Runtime(anyhow::Error),
}

impl CliError {
    /// A usage or configuration error with this message.
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        CliError::Usage(e.into())
    }

    /// A runtime failure with this message.
    pub fn runtime(e: impl Into<anyhow::Error>) -> Self {
        CliError::Runtime(e.into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }

    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Token(args) => token::run(args).map(|()| ExitCode::SUCCESS),
        Command::Client(args) => client::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Send(args) => send::run(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(CliError::Usage(e)) => {
            eprintln!("herald: {}", report(&e));
            ExitCode::from(2)
        }
        Err(CliError::Runtime(e)) => {
            eprintln!("herald: {}", report(&e));
            ExitCode::from(1)
        }
    }
}

/// The certificates `client` and `send` trust: the public authorities, and those of `--ca-cert`.
pub fn tls(ca_cert: Option<&std::path::Path>) -> Result<herald_client::Tls, CliError> {
    use anyhow::Context as _;
    let Some(path) = ca_cert else {
        return Ok(herald_client::Tls::default());
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read --ca-cert {}", path.display()))
        .map_err(CliError::Usage)?;
    herald_client::Tls::with_root_pem(&pem)
        .with_context(|| format!("--ca-cert {}", path.display()))
        .map_err(CliError::Usage)
}

/// The error and its causes on one line. A cause whose text the message already contains is
/// skipped: some error types print their source in their own message as well as return it.
pub fn report(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}
