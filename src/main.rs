//! The command line: a thin layer over the library.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::SeedableRng;

use countersign::config::{Config, LogFormat};
use countersign::engine::SystemClock;

/// jemalloc rather than glibc's allocator. Measured with `countersign bench` on the 2-core box:
/// glibc's malloc and free were about a fifth of the server's CPU (W0 about 1,700 lifecycles/s
/// at about 700 µs of server CPU each; with jemalloc about 3,300/s at about 320 µs), and with
/// 100,000 requests queued glibc's heap held about 55 MiB more, fragmented by image buffers.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        /// At start, check that every image the ledger names is in the image store (a start
        /// after restoring images/, say), not only those of undecided requests and of the last
        /// 1,000 records. Reads the whole ledger.
        #[arg(long)]
        check_all_images: bool,
    },
    /// Runs simulated tellers and supervisors against a real server in a temporary directory,
    /// over gRPC with mutual TLS, and prints a summary. Exits non-zero if a request is left
    /// unfinished.
    Demo {
        /// How many requests the tellers submit.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Keep everything (certificates, ledger, images) in this directory instead of a
        /// temporary one; a second run on it continues the same ledger.
        #[arg(long, conflicts_with = "target")]
        data: Option<PathBuf>,
        /// Run against a running server or cluster instead of starting one: its nodes'
        /// addresses, comma-separated (needs --pki). Every client follows the leader.
        #[arg(long, value_delimiter = ',', requires = "pki")]
        target: Vec<std::net::SocketAddr>,
        /// With --target: the PKI directory `pki init` wrote for the cluster (the demo
        /// principals' certificates).
        #[arg(long, requires = "target")]
        pki: Option<PathBuf>,
        /// Keep a server running for the browser console instead: simulated tellers submit
        /// at a steady pace and a person works the queue (docs/console.md). Its data and
        /// certificates (with a PKCS#12 file per principal) go to --data, by default
        /// ./countersign-console; Ctrl-C stops.
        #[arg(long, conflicts_with = "target")]
        console: bool,
        /// With --console: the address to serve on.
        #[arg(long, default_value = "127.0.0.1:7443", requires = "console")]
        listen: std::net::SocketAddr,
        /// With --console: milliseconds between one teller's submissions and the next's.
        #[arg(long, default_value_t = 5000, requires = "console")]
        every_ms: u64,
    },
    /// Load generator: starts the server in a temporary directory (or drives `--target`), runs
    /// simulated tellers and supervisors who approve at once over gRPC with mutual TLS, and
    /// prints throughput, latency percentiles, the server's CPU, peak memory and disk use.
    Bench(countersign::tools::bench::Options),
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Offline ledger tools: they need no running server.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Takes an online, consistent backup while the server runs: the ledger up to the latest
    /// signed checkpoint, the images it names, the checkpoints and cosignatures, the policy
    /// and the principal directory (the signing key with --with-keys), and a manifest naming
    /// the checkpoint, written last. It is an embedded data directory whatever the backend.
    Backup {
        /// The configuration the server runs with.
        #[arg(long)]
        config: PathBuf,
        /// A new (or empty) directory for the backup.
        #[arg(long)]
        to: PathBuf,
        /// Copy the ledger signing key too (keep such a backup as secret as the key).
        #[arg(long)]
        with_keys: bool,
    },
    /// Checks a backup whole (manifest, records, checkpoints, cosignatures, images, files) and
    /// only then copies it into a new data directory; `ledger copy` moves it on to
    /// PostgreSQL. The first server to start on it rebuilds the audit projection.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The new data directory.
        #[arg(long)]
        data: PathBuf,
        /// The checkpoint verifier key the backup must be signed with (or a file holding it).
        #[arg(long)]
        pubkey: Option<String>,
    },
    /// A branch's side of a fallback to a supervisor on site (docs/fallback.md).
    Fallback {
        #[command(subcommand)]
        command: FallbackCommand,
    },
    /// A witness (c2sp.org/tlog-witness), run by a party other than the centre: it cosigns
    /// each checkpoint that consistently extends the last one it cosigned, and nothing else.
    Witness {
        #[command(subcommand)]
        command: WitnessCommand,
    },
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Runs the witness server.
    Serve {
        /// The witness's configuration file (`pki init` writes witness.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Makes a witness key pair: NAME.key (private) and the public key, printed and written
    /// to the .pub file, which the centre and auditors configure.
    Keygen {
        /// The witness's name, e.g. audit.bank.example/witness.
        #[arg(long)]
        name: String,
        /// Where to write witness.key and witness.pub.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints a witness's latest cosigned checkpoint of a log (its monitoring interface), for
    /// `ledger verify --checkpoint`.
    Fetch {
        /// The witness's URL, e.g. http://127.0.0.1:7380.
        #[arg(long)]
        url: String,
        /// The log's origin (the centre's ledger.origin).
        #[arg(long)]
        origin: String,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Re-reads a data directory or a database: every record (framing and checksum, or stored
    /// leaf hash and term), the whole Merkle tree, every stored checkpoint (signature, root,
    /// consistency), every request's history, every image's hash. Prints the first problem
    /// and exits non-zero if there is one.
    Verify {
        /// The embedded backend's data directory (holding ledger/ and images/).
        #[arg(
            long,
            conflicts_with = "database",
            required_unless_present = "database"
        )]
        data: Option<PathBuf>,
        /// The postgres backend's database, as a libpq URL; read in one read-only snapshot,
        /// so a running cluster may be verified.
        #[arg(long)]
        database: Option<String>,
        /// PEM certificates of the CAs to trust for TLS to the database.
        #[arg(long, requires = "database")]
        tls_ca: Option<PathBuf>,
        /// The checkpoint verifier key, or a file holding it; without it signatures are not
        /// checked (roots still are). With it, records with no checkpoint at all, or more
        /// than --unsigned-max beyond the last one, are a problem.
        #[arg(long)]
        pubkey: Option<String>,
        /// The most records that may be beyond the last checkpoint: the server's
        /// ledger.unsigned_records_max.
        #[arg(long, default_value_t = countersign::verify::UNSIGNED_RECORDS_MAX)]
        unsigned_max: u64,
        /// A witness's public key, or a file holding it (repeat for several): its
        /// cosignatures are checked, and checkpoints count as witnessed by it.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// How many of the --witness keys must have cosigned a checkpoint (default: all).
        #[arg(long)]
        witnesses_required: Option<usize>,
        /// The most records that may be beyond the last witnessed checkpoint.
        #[arg(long, default_value_t = countersign::verify::UNSIGNED_RECORDS_MAX)]
        uncosigned_max: u64,
        /// A cosigned checkpoint kept outside the server (from GetCheckpoint's cosigned_note,
        /// a bundle, or `witness fetch`), repeatable: the ledger must still hold its tree.
        #[arg(long = "checkpoint")]
        kept: Vec<PathBuf>,
        /// The log's origin (ledger.origin) as the auditor pinned it: every checkpoint must
        /// name it. Without it, each checkpoint's own first line is taken.
        #[arg(long)]
        origin: Option<String>,
    },
    /// Checks a proof bundle exported by AuditService.ExportProof, with only the public key.
    VerifyProof {
        #[arg(long)]
        bundle: PathBuf,
        /// The checkpoint verifier key, or a file holding it.
        #[arg(long)]
        pubkey: String,
        /// A directory of the request's images (named by hash) to check too.
        #[arg(long)]
        images: Option<PathBuf>,
        /// A witness's public key, or a file holding it (repeat for several).
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// How many of the --witness keys must have cosigned the checkpoint (default: all).
        #[arg(long)]
        witnesses_required: Option<usize>,
    },
    /// Copies a whole store (every ledger record, signed checkpoint, witness cosignature and image) into an empty
    /// store of another backend, checking it record by record and root by root: how a
    /// single-node pilot moves to a PostgreSQL cluster, and back. Each store is named by the
    /// configuration file its nodes run with; every node of both must be stopped. The first
    /// node to start on the copy rebuilds the audit projection from the ledger.
    Copy {
        /// The configuration of the store to copy from.
        #[arg(long)]
        from: PathBuf,
        /// The configuration of the empty store to copy into.
        #[arg(long)]
        to: PathBuf,
    },
    /// Prints the key auditors verify checkpoints with.
    Pubkey {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum FallbackCommand {
    /// Signs a fallback as the on-site supervisor: prints the signature (base64) that
    /// TellerService.RegisterFallback's on_site.signature carries.
    Sign {
        /// The on-site supervisor's private key (PEM), that of their certificate.
        #[arg(long)]
        key: PathBuf,
        /// The fallback, as JSON (docs/fallback.md): teller, serial, transaction, customer,
        /// image files, supervisor, decided_at_ms, reason.
        #[arg(long, conflicts_with = "bytes")]
        request: Option<PathBuf>,
        /// Or the canonical bytes themselves, as a branch terminal made them.
        #[arg(long, required_unless_present = "request")]
        bytes: Option<PathBuf>,
        /// Print the canonical bytes (to stderr) before the signature.
        #[arg(long)]
        show_bytes: bool,
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
    /// Prints a certificate's SHA-256 (of its DER) as the principal directory's cert_sha256
    /// takes it.
    Fingerprint {
        /// The certificate, PEM.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Issues a client certificate from the CA in DIR and prints the principal directory
    /// entry to add to principals.toml (then SIGHUP the server, or AdminService.ReloadDirectory).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// The principal's id, e.g. teller-07.
        #[arg(long)]
        id: String,
        /// teller, supervisor, auditor, admin or reviewer.
        #[arg(long, default_value = "teller")]
        role: String,
        /// The branch the principal works at.
        #[arg(long, default_value = "CENTRE")]
        branch: String,
        /// Supervisors: authority level 1 to 9.
        #[arg(long)]
        level: Option<u8>,
        /// Display name; the id when not given.
        #[arg(long)]
        name: Option<String>,
    },
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    // An error ends the program with its chain of causes on one line, never with a backtrace
    // (which RUST_BACKTRACE=1 would print for every refused start): what went wrong and what
    // to do is in the message.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", countersign::tools::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            check_all_images,
        } => {
            // Return freed memory to the system from a background thread, as it decays, rather
            // than only when the server next allocates.
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                eprintln!("jemalloc background thread not started: {e}");
            }
            let mut config = Config::load(&config)?;
            config.engine.check_all_images = check_all_images;
            init_logging(config.log_format, "info");
            let rng = Box::new(rand_chacha::ChaCha20Rng::from_os_rng());
            let server = countersign::server::start(&config, Arc::new(SystemClock), rng).await?;
            println!("countersign listening on {}", server.addr);
            let reloader = server.reloader();
            tokio::spawn(async move {
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    return;
                };
                while hup.recv().await.is_some() {
                    // A policy or directory with any mistake is refused whole; the old one
                    // stays (and the refusal is logged).
                    let _ = reloader.reload_policy().await;
                    let _ = reloader.reload_directory().await;
                }
            });
            wait_for_signal().await?;
            tracing::info!("shutting down");
            server.shutdown().await?;
            Ok(())
        }
        Command::Demo {
            requests,
            data,
            target,
            pki,
            console,
            listen,
            every_ms,
        } => {
            init_logging(LogFormat::Text, "warn");
            if console {
                let data = data.unwrap_or_else(|| PathBuf::from("countersign-console"));
                return countersign::tools::console_demo::run(
                    data,
                    listen,
                    std::time::Duration::from_millis(every_ms.max(100)),
                )
                .await;
            }
            let target = match pki {
                Some(pki) if !target.is_empty() => {
                    countersign::tools::demo::Target::Cluster { addrs: target, pki }
                }
                _ => countersign::tools::demo::Target::Own(data),
            };
            countersign::tools::demo::run(requests, target).await
        }
        Command::Bench(options) => {
            init_logging(LogFormat::Text, "warn");
            countersign::tools::bench::run(options).await
        }
        Command::Ledger { command } => ledger(command).await,
        Command::Witness { command } => witness(command).await,
        Command::Fallback {
            command:
                FallbackCommand::Sign {
                    key,
                    request,
                    bytes,
                    show_bytes,
                },
        } => {
            use base64::Engine as _;
            let message = match (request, bytes) {
                (Some(r), _) => countersign::tools::fallback::signed_bytes_of(&r)?,
                (None, Some(b)) => {
                    std::fs::read(&b).with_context(|| format!("read {}", b.display()))?
                }
                (None, None) => anyhow::bail!("give --request or --bytes"),
            };
            if show_bytes {
                eprint!("{}", String::from_utf8_lossy(&message));
            }
            let key =
                std::fs::read_to_string(&key).with_context(|| format!("read {}", key.display()))?;
            let sig = countersign::tools::fallback::sign(&key, &message)?;
            println!("{}", base64::engine::general_purpose::STANDARD.encode(sig));
            Ok(())
        }
        Command::Backup {
            config,
            to,
            with_keys,
        } => {
            init_logging(LogFormat::Text, "warn");
            let config = Config::load(&config)?;
            #[allow(clippy::disallowed_methods)] // the time a backup took, for the operator
            let started = std::time::Instant::now();
            let m = tokio::task::spawn_blocking(move || {
                countersign::tools::backup::backup(&config, &to, with_keys)
            })
            .await??;
            println!(
                "checkpoint:   {} at tree size {} (root {})",
                m.checkpoint_seq, m.tree_size, m.root
            );
            println!(
                "records:      {} (records after the checkpoint are not in it)",
                m.tree_size
            );
            println!("images:       {}", m.images);
            println!("cosignatures: {}", m.cosignatures);
            println!(
                "files:        {}",
                m.files.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            println!("took:         {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Restore { from, data, pubkey } => {
            init_logging(LogFormat::Text, "warn");
            let pubkey = pubkey.as_deref().map(verifier_arg).transpose()?;
            #[allow(clippy::disallowed_methods)] // the time a restore took, for the operator
            let started = std::time::Instant::now();
            let m = tokio::task::spawn_blocking(move || {
                countersign::tools::backup::restore(&from, &data, pubkey.as_ref())
            })
            .await??;
            println!(
                "verified:     {} records up to checkpoint {} (root {})",
                m.tree_size, m.checkpoint_seq, m.root
            );
            println!(
                "restored:     {} images, {} cosignatures",
                m.images, m.cosignatures
            );
            println!(
                "then:         put config/policy.toml and config/principals.toml in place, point \
                 data_dir at the restored directory, start the server"
            );
            println!("took:         {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Pki { command } => match command {
            PkiCommand::Init { out } => {
                let written = countersign::tools::pki::init_for_people(&out)?;
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
                println!(
                    "the console: import a principal's <id>.p12 (password \"{}\") into a browser \
                     and open https://localhost:7443/ (docs/console.md)",
                    countersign::tools::pki::BROWSER_FILE_PASSWORD
                );
                Ok(())
            }
            PkiCommand::Fingerprint { cert } => {
                let pem = std::fs::read_to_string(&cert)
                    .with_context(|| format!("--cert: read {}", cert.display()))?;
                let fp = countersign::tools::pki::fingerprint_pem(&pem).with_context(|| {
                    format!("--cert: {} is not a PEM certificate", cert.display())
                })?;
                println!("cert_sha256 = \"{fp}\"");
                Ok(())
            }
            PkiCommand::Issue {
                dir,
                id,
                role,
                branch,
                level,
                name,
            } => {
                // Checked before anything is issued: the entry printed must load.
                match (role.as_str(), level) {
                    ("supervisor", Some(1..=9)) => {}
                    ("supervisor", _) => anyhow::bail!("--role supervisor needs --level 1 to 9"),
                    ("teller" | "auditor" | "admin" | "reviewer", None) => {}
                    ("teller" | "auditor" | "admin" | "reviewer", Some(_)) => {
                        anyhow::bail!("--level is for supervisors only")
                    }
                    (other, _) => anyhow::bail!(
                        "--role {other}: must be teller, supervisor, auditor, admin or reviewer"
                    ),
                }
                let fp = countersign::tools::pki::issue_client(&dir, &id)?;
                println!(
                    "# {} and {} written; add this to principals.toml:",
                    dir.join(format!("{id}.pem")).display(),
                    dir.join(format!("{id}.key")).display()
                );
                println!("[[principals]]");
                println!("id = {id:?}");
                println!("name = {:?}", name.as_deref().unwrap_or(&id));
                println!("role = {role:?}");
                println!("branch = {branch:?}");
                if let Some(level) = level {
                    println!("level = {level}");
                    println!(
                        "# A supervisor decides nothing until ceilings are set (minor units per \
                         currency), e.g.:\n# ceilings = {{ CNY = 1000000000 }}"
                    );
                }
                println!("cert_sha256 = \"{fp}\"");
                println!(
                    "# then reload the directory: SIGHUP the server, or AdminService.ReloadDirectory"
                );
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

/// `ledger copy`: the stores of two configurations, copied on a thread that may block.
async fn copy_store(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    init_logging(LogFormat::Text, "warn");
    let (from, to) = (Config::load(from)?.storage, Config::load(to)?.storage);
    let copied =
        tokio::task::spawn_blocking(move || countersign::tools::copy::copy(&from, &to)).await??;
    use base64::Engine as _;
    println!(
        "records:     {} (each read back and compared)",
        copied.records
    );
    println!(
        "checkpoints: {} (each root the same on both sides)",
        copied.checkpoints
    );
    println!(
        "cosignatures: {} (witnesses', beside their checkpoints)",
        copied.cosignatures
    );
    println!(
        "images:      {} (each checked against its hash)",
        copied.images
    );
    println!(
        "root:        {}",
        base64::engine::general_purpose::STANDARD.encode(copied.root)
    );
    println!("result:      OK");
    Ok(())
}

/// `countersign witness ...`.
async fn witness(command: WitnessCommand) -> anyhow::Result<()> {
    use countersign::witness;
    match command {
        WitnessCommand::Serve { config } => {
            init_logging(LogFormat::Text, "info");
            let c = witness::config::load(&config)?;
            let clock = Arc::new(|| {
                use countersign::engine::Clock as _;
                (SystemClock.now().0 / 1000).max(0) as u64
            });
            let state = c.state_dir.clone();
            let w = tokio::task::spawn_blocking(move || {
                witness::Witness::open(c.cosigner, c.logs, &c.state_dir, clock)
            })
            .await??;
            let key = w.key().to_text();
            let listener = tokio::net::TcpListener::bind(c.listen)
                .await
                .with_context(|| format!("listen: bind {}", c.listen))?;
            let running = witness::serve(Arc::new(w), listener)?;
            println!("countersign witness listening on http://{}", running.addr);
            println!("key {key}");
            tracing::info!(state = %state.display(), "witness started");
            wait_for_signal().await?;
            running.stop().await;
            Ok(())
        }
        WitnessCommand::Keygen { name, out } => {
            let (private, public) =
                countersign::ledger::cosignature::generate(&name, &mut rand::rng())
                    .context("--name: not a valid key name (no spaces or '+')")?;
            std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
            let key = out.join("witness.key");
            if key.exists() {
                anyhow::bail!(
                    "{} exists: refusing to replace a witness key",
                    key.display()
                );
            }
            countersign::tools::pki::write_private(&key, &format!("{private}\n"))?;
            std::fs::write(out.join("witness.pub"), format!("{public}\n"))
                .with_context(|| format!("write {}", out.join("witness.pub").display()))?;
            println!(
                "wrote {} and {}",
                key.display(),
                out.join("witness.pub").display()
            );
            println!("{public}");
            Ok(())
        }
        WitnessCommand::Fetch { url, origin } => {
            let endpoint = witness::client::Endpoint::parse(&url)
                .map_err(|e| anyhow::anyhow!("--url: {e}"))?;
            match witness::client::latest(&endpoint, &origin, std::time::Duration::from_secs(10))
                .await?
            {
                Some(note) => {
                    print!("{note}");
                    Ok(())
                }
                None => anyhow::bail!("the witness has cosigned no checkpoint of {origin}"),
            }
        }
    }
}

/// A witness key given on the command line, or the path of a file holding one.
fn witness_arg(arg: &str) -> anyhow::Result<countersign::ledger::cosignature::WitnessKey> {
    let path = std::path::Path::new(arg);
    let text = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    } else {
        arg.to_owned()
    };
    countersign::ledger::cosignature::parse_witness_key(text.trim())
        .context("--witness: not a witness key (name+id+base64, type 0x04)")
}

/// A verifier key given on the command line, or the path of a file holding one.
fn verifier_arg(arg: &str) -> anyhow::Result<countersign::ledger::checkpoint::Verifier> {
    let path = std::path::Path::new(arg);
    let text = if path.exists() {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    } else {
        arg.to_owned()
    };
    countersign::ledger::checkpoint::parse_verifier(text.trim()).context("parse the verifier key")
}

async fn ledger(command: LedgerCommand) -> anyhow::Result<()> {
    use base64::Engine as _;
    match command {
        LedgerCommand::Verify {
            data,
            database,
            tls_ca,
            pubkey,
            unsigned_max,
            witnesses,
            witnesses_required,
            uncosigned_max,
            kept,
            origin,
        } => {
            let verifier = pubkey.as_deref().map(verifier_arg).transpose()?;
            let witnesses = witnesses
                .iter()
                .map(|w| witness_arg(w))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let required = witnesses_required.unwrap_or(witnesses.len());
            if required > witnesses.len() {
                anyhow::bail!(
                    "--witnesses-required {required}: only {} --witness keys given",
                    witnesses.len()
                );
            }
            let kept = kept
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let trust = countersign::verify::Trust {
                pubkey: verifier.clone(),
                witnesses,
                witnesses_required: required,
                kept,
                origin,
            };
            let r = match (data, database) {
                (Some(data), _) => countersign::verify::verify_data_dir_with(&data, &trust),
                (None, Some(url)) => {
                    let ca = tls_ca
                        .map(|p| {
                            std::fs::read_to_string(&p)
                                .with_context(|| format!("read {}", p.display()))
                        })
                        .transpose()?;
                    countersign::verify::verify_database_with(&url, ca.as_deref(), &trust)
                }
                (None, None) => anyhow::bail!("give --data or --database"),
            };
            println!("records:     {}", r.records);
            println!(
                "root:        {}",
                base64::engine::general_purpose::STANDARD.encode(r.root)
            );
            println!(
                "checkpoints: {} ({})",
                r.checkpoints,
                if verifier.is_some() {
                    "signatures checked"
                } else {
                    "signatures not checked: no --pubkey"
                }
            );
            println!(
                "signed:      {} of {} records covered by the last checkpoint, {} beyond it",
                r.signed,
                r.records,
                r.records.saturating_sub(r.signed)
            );
            if !trust.witnesses.is_empty() {
                println!(
                    "witnessed:   {} of {} records covered by a checkpoint cosigned by {} of {} \
                     witnesses, {} beyond it ({} cosignatures checked)",
                    r.cosigned,
                    r.records,
                    trust.witnesses_required,
                    trust.witnesses.len(),
                    r.records.saturating_sub(r.cosigned),
                    r.cosignatures
                );
            }
            if !trust.kept.is_empty() {
                println!(
                    "kept:        {} checkpoint(s) found in the ledger",
                    trust.kept.len()
                );
            }
            println!("requests:    {}", r.requests);
            println!("images:      {}", r.images);
            if let Some(t) = &r.torn_tail {
                println!(
                    "torn tail:   {t} (left by a crash, not tampering; the server cuts it at start)"
                );
            }
            let problem = r.problem.clone().or_else(|| {
                verifier
                    .is_some()
                    .then(|| countersign::verify::unsigned_problem(&r, unsigned_max))
                    .flatten()
                    .or_else(|| countersign::verify::uncosigned_problem(&r, &trust, uncosigned_max))
            });
            match problem {
                None => {
                    println!("result:      OK");
                    Ok(())
                }
                Some(p) => {
                    println!("result:      PROBLEM: {p}");
                    std::process::exit(1);
                }
            }
        }
        LedgerCommand::VerifyProof {
            bundle,
            pubkey,
            images,
            witnesses,
            witnesses_required,
        } => {
            let verifier = verifier_arg(&pubkey)?;
            let witnesses = witnesses
                .iter()
                .map(|w| witness_arg(w))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let required = witnesses_required.unwrap_or(witnesses.len());
            if required > witnesses.len() {
                anyhow::bail!(
                    "--witnesses-required {required}: only {} --witness keys given",
                    witnesses.len()
                );
            }
            let json =
                std::fs::read(&bundle).with_context(|| format!("read {}", bundle.display()))?;
            match countersign::verify::verify_bundle_with(
                &json,
                &verifier,
                &witnesses,
                required,
                images.as_deref(),
            ) {
                Ok(r) => {
                    println!("request:     {}", r.request_id);
                    if r.final_state {
                        println!("state:       {:?} (final)", r.state);
                    } else {
                        println!(
                            "state:       {:?}: NOT FINAL. The history ends at the checkpoint; \
                             the request may have gone on since, so this bundle is not its outcome",
                            r.state
                        );
                    }
                    println!(
                        "records:     {} (each proven in the signed tree)",
                        r.records
                    );
                    println!(
                        "checkpoint:  {} at tree size {}, signature OK",
                        r.origin, r.tree_size
                    );
                    if !witnesses.is_empty() {
                        println!(
                            "witnesses:   cosigned by {} of {} ({} required){}",
                            r.witnessed_by.len(),
                            witnesses.len(),
                            required,
                            if r.witnessed_by.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", r.witnessed_by.join(", "))
                            }
                        );
                    }
                    println!("images:      {} checked", r.images_checked);
                    println!("result:      OK");
                    Ok(())
                }
                Err(p) => {
                    println!("result:      PROBLEM: {p}");
                    std::process::exit(1);
                }
            }
        }
        LedgerCommand::Copy { from, to } => copy_store(&from, &to).await,
        LedgerCommand::Pubkey { config } => {
            let config = Config::load(&config)?;
            let signer = countersign::ledger::checkpoint::parse_signer(
                &config.engine.checkpoints.signer_key,
            )?;
            println!("{}", signer.verifier().to_text());
            Ok(())
        }
    }
}
