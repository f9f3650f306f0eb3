//! `herald serve`: run the server until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use herald_server::config::{dev, Config};
use herald_server::{Server, StartError};

use crate::CliError;

/// Arguments of `herald serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file. Without it, Herald serves 127.0.0.1:8080 with one development app
    /// whose keys are printed at start-up.
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let (config, dev_app) = match &args.config {
        Some(path) => (Config::from_file(path).map_err(CliError::usage)?, false),
        None => {
            let mut config = Config::embedded_default();
            // A fresh admin token each start: the console URL printed below carries it.
            config.admin_token = Some(format!("{:032x}", rand::random::<u128>()));
            (config, true)
        }
    };
    let admin_token = config.admin_token.clone();
    let server = Server::start(config).await.map_err(|e| match e {
        StartError::Config(_) => CliError::usage(e),
        StartError::Bind { .. } => CliError::runtime(e),
    })?;
    // Printed once bound, with the real address (a configured port 0 shows the chosen one).
    let base = format!("{}://{}", server.scheme(), server.local_addr());
    println!("herald listening on {base} (OpenAPI at /, client gateway at /ws)");
    if dev_app {
        print_dev_app();
    }
    if let Some(token) = admin_token {
        println!("console: {base}/#token={token}");
        println!("demo:    {base}/demo#token={token}");
    }
    tracing::info!(addr = %server.local_addr(), "herald listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// What a developer needs to talk to the embedded default, on stdout.
fn print_dev_app() {
    println!("development app, for local development only (run with --config FILE in production):");
    println!("  AppId   {}", dev::APP_ID);
    println!("  AppKey  {}", dev::APP_KEY);
    println!("  AK      {}", dev::AK);
    println!("  SK      {}", dev::SK);
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
        {
            tracing::warn!("{e:#}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
