//! The command line: a thin layer over the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::SeedableRng;

use countersign::config::{Config, LogFormat};
use countersign::engine::SystemClock;

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "Remote centralized authorization for bank teller transactions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        /// The configuration file (see `pki init`, which writes one).
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs a scripted walk through the lifecycle against a real server in a temporary directory.
    Demo {
        /// Keep the demo's directory (certificates, ledger, images) here instead of deleting it.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Creates a development CA, a server certificate, demo principals' certificates, the
    /// principal directory and a server configuration in DIR.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
    /// Issues one more client certificate from the CA in DIR and prints its fingerprint for
    /// the principal directory.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: String,
    },
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            init_logging(config.log_format, "info");
            let rng = Box::new(rand_chacha::ChaCha20Rng::from_os_rng());
            let server = countersign::server::start(&config, Arc::new(SystemClock), rng).await?;
            println!("countersign listening on {}", server.addr);
            wait_for_signal().await?;
            tracing::info!("shutting down");
            server.shutdown().await?;
            Ok(())
        }
        Command::Demo { keep } => {
            init_logging(LogFormat::Text, "warn");
            countersign::demo::run(keep).await
        }
        Command::Pki { command } => match command {
            PkiCommand::Init { out } => {
                let written = countersign::pki::init(&out)?;
                let config = out.join("countersign.toml");
                std::fs::write(&config, countersign::config::SAMPLE)
                    .with_context(|| format!("write {}", config.display()))?;
                for p in written.iter().chain([&config]) {
                    println!("wrote {}", p.display());
                }
                println!(
                    "start the server with: countersign serve --config {}",
                    config.display()
                );
                Ok(())
            }
            PkiCommand::Issue { dir, id } => {
                let fp = countersign::pki::issue_client(&dir, &id)?;
                println!("cert_sha256 = \"{fp}\"");
                Ok(())
            }
        },
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("wait for ctrl-c")?,
        _ = term.recv() => {}
    }
    Ok(())
}
