//! `continuum-producer`: captures every committed change on a MariaDB primary into the site's
//! changelog topic, exactly once, in commit order. See docs/architecture.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;

use continuum_common::config::{LogArgs, SiteConfig};
use continuum_common::db;
use continuum_common::filter::TableFilter;
use continuum_common::observe::{self, Health, Status};
use continuum_producer::{pipeline, request};

/// Captures a MariaDB primary's changes into its site's changelog topic.
///
/// Settings come from the site config file, then CONTINUUM_* environment variables, then these
/// flags. Secrets are never taken as flags: use *_file settings or environment variables.
#[derive(Debug, Parser)]
#[command(name = "continuum-producer", version)]
struct Cli {
    /// Site configuration file (TOML), e.g. config/sf.toml. Required.
    #[arg(long, short, env = "CONTINUUM_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    /// Discard the topic's position and take a fresh consistent snapshot.
    #[arg(long, conflicts_with = "start_position")]
    resnapshot: bool,
    /// The topic's position is lost (error 1236: a purged binlog): stream from the source's
    /// current position, and queue an incremental snapshot of every captured table, which
    /// repairs the replica in place while the pipeline runs (docs/snapshot.md).
    #[arg(long, conflicts_with_all = ["start_position", "resnapshot"])]
    recapture: bool,
    /// For an empty topic only: take no snapshot and capture from this GTID position
    /// (e.g. `1-1-1000`), for a replica already loaded up to there (by a dump, say).
    #[arg(long, value_name = "GTID_POSITION")]
    start_position: Option<continuum_schemas::GtidPosition>,
    /// Which site this is (overrides `site`).
    #[arg(long)]
    site: Option<String>,
    /// Source MariaDB host (overrides `database.host`).
    #[arg(long)]
    db_host: Option<String>,
    /// Source MariaDB port (overrides `database.port`).
    #[arg(long)]
    db_port: Option<u16>,
    /// Source MariaDB user (overrides `database.user`).
    #[arg(long)]
    db_user: Option<String>,
    /// Replica server_id to register with (overrides `producer.server_id`).
    #[arg(long)]
    server_id: Option<u32>,
    /// Where to serve /metrics and /health (overrides `producer.metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Queue an incremental snapshot of the given tables for the running producer, which reads
    /// them in chunks while it goes on streaming (docs/snapshot.md). Exit status with --wait: 0
    /// done, 1 failed, 2 not done within --timeout.
    Snapshot {
        /// A table to snapshot, as db.table; repeat for more.
        #[arg(long = "table", value_name = "DB.TABLE", required = true)]
        tables: Vec<String>,
        /// Wait until the producer has written every row of the snapshot.
        #[arg(long)]
        wait: bool,
        /// With --wait: how long to wait.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn load(cli: &Cli) -> anyhow::Result<SiteConfig> {
    let path = config_path(cli)?;
    let mut cfg = SiteConfig::from_file(path)?;
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(v) = &cli.site {
        cfg.site = v.clone();
    }
    if let Some(v) = &cli.db_host {
        cfg.database.host = v.clone();
    }
    if let Some(v) = cli.db_port {
        cfg.database.port = v;
    }
    if let Some(v) = &cli.db_user {
        cfg.database.user = v.clone();
    }
    if let Some(v) = cli.server_id {
        cfg.producer.server_id = v;
    }
    if let Some(v) = cli.metrics_listen {
        cfg.producer.metrics_listen = v;
    }
    cli.log.apply_to(&mut cfg.log);
    cfg.validate()?;
    Ok(cfg)
}

fn config_path(cli: &Cli) -> anyhow::Result<&PathBuf> {
    cli.config.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "--config (or CONTINUUM_CONFIG) names the site configuration file; it is required"
        )
    })
}

fn main() -> std::process::ExitCode {
    continuum_common::memory::hold_less();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("continuum-producer: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // The cause chain, without a backtrace: the message says what is wrong and what to do.
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!(
                "continuum-producer: error: {}",
                continuum_common::observe::error_chain(e)
            );
            std::process::ExitCode::from(continuum_common::observe::EXIT_ERROR)
        }
    }
}

async fn run() -> anyhow::Result<u8> {
    let cli = Cli::parse();
    let cfg = load(&cli).with_context(|| {
        format!(
            "loading {}",
            cli.config.as_deref().unwrap_or(Path::new("")).display()
        )
    })?;
    observe::init_logging(&cfg.log);
    if let Some(Command::Snapshot {
        tables,
        wait,
        timeout,
    }) = &cli.command
    {
        return request_snapshot(&cfg, tables, *wait, *timeout).await;
    }
    let health = Health::default();
    health.set("producer", Status::Starting, "starting");
    continuum_producer::metrics::describe();
    observe::serve(cfg.producer.metrics_listen, health.clone()).await?;

    let stop_rx = continuum_common::supervise::shutdown_on_signals(
        "stopping at the next transaction boundary",
    );

    tracing::info!(site = %cfg.site, version = env!("CARGO_PKG_VERSION"), "continuum-producer starting");
    let initial = match (cli.resnapshot, cli.recapture, cli.start_position) {
        (true, _, _) => pipeline::Initial::Resnapshot,
        (_, true, _) => pipeline::Initial::Recapture,
        (false, false, Some(p)) => pipeline::Initial::StartAt(p),
        (false, false, None) => pipeline::Initial::Resume,
    };
    let producer = pipeline::Producer::new(cfg, initial, health, stop_rx)?;
    producer.run().await.map_err(|e| {
        tracing::error!(error = %e, "continuum-producer stopped");
        anyhow::Error::new(e)
    })?;
    Ok(0)
}

/// `snapshot`: queues the request on the source; with `wait`, waits for the producer to end it.
async fn request_snapshot(
    cfg: &SiteConfig,
    tables: &[String],
    wait: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<u8> {
    let opts = db::opts(&cfg.database, &[])?;
    let target = db::describe(&cfg.database);
    let filter = TableFilter::new(&cfg.producer)?;
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let topic = cfg.topic_of(&cfg.site)?;
    let id = request::submit(&mut conn, &target, &topic, Some(&filter), tables, &[]).await?;
    println!(
        "snapshot request {id} queued: {} (for the producer of {topic})",
        tables.join(", ")
    );
    if !wait {
        return Ok(0);
    }
    Ok(
        match request::wait(&mut conn, &target, id, timeout).await? {
            Some(request::Ended::Done { rows }) => {
                println!("snapshot request {id} done: {rows} rows");
                0
            }
            Some(request::Ended::Failed { rows, error }) => {
                eprintln!(
                    "continuum-producer: snapshot request {id} failed after {rows} rows: {error}"
                );
                1
            }
            None => {
                eprintln!("continuum-producer: snapshot request {id} is not done after {}; it stays queued (is the producer running? `continuum.snapshot_request` on {target} shows its progress)", humantime::format_duration(timeout));
                2
            }
        },
    )
}
