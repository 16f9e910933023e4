//! `continuum-consumer [--config FILE] <verb>`: the consumer's command line.
//!
//! Configuration is the site file (`--config`, or `CONTINUUM_CONFIG`), then the environment
//! (see `continuum_common::config::ENV_OVERRIDES`), then these flags. Each verb is one variant of
//! [`Verb`] and one library module with its `Args` and a `main` function; add a verb by adding
//! both. Fatal errors print what is wrong and what to do, and exit non-zero.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use continuum_common::config::LogArgs;
use continuum_common::SiteConfig;
use continuum_consumer::{
    apply, mirror, orphans, promote, replay, run as run_verb, status, verify,
};

#[derive(Parser, Debug)]
#[command(
    name = "continuum-consumer",
    version,
    about = "Continuum consumer: apply a changelog to the local MariaDB, and the operator's verbs"
)]
struct Cli {
    /// The site's configuration file.
    #[arg(long, env = "CONTINUUM_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Whose changelog to apply (overrides consumer.apply.source_site).
    #[arg(long, global = true, value_name = "SITE")]
    source_site: Option<String>,
    /// Which site's cluster to read the changelog from (overrides consumer.apply.read_from).
    #[arg(long, global = true, value_name = "SITE")]
    read_from: Option<String>,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Apply the source site's changelog to this site's MariaDB, transaction by transaction.
    Apply(apply::ApplyArgs),
    /// Move apply's checkpoint back, to re-apply from an offset, a time, or the beginning.
    Replay(replay::ReplayArgs),
    /// Show where apply is: checkpoint, lag, GTID positions, state.
    Status(status::StatusArgs),
    /// Copy a site's changelog from its cluster into another site's cluster, with its schemas.
    Mirror(mirror::MirrorArgs),
    /// The site's consumer: mirror the other site's changelog here and apply it locally.
    Run(run_verb::RunArgs),
    /// List a site's transactions that the other site never applied (after a failover).
    Orphans(orphans::OrphansArgs),
    /// Make this site the primary: drain, stop applying, make writable, report orphans.
    Promote(promote::PromoteArgs),
    /// Compare the source site's database with this replica, chunk by chunk (exit 1 on any
    /// difference).
    Verify(verify::VerifyArgs),
}

fn load_config(cli: &Cli) -> anyhow::Result<SiteConfig> {
    let path = cli
        .config
        .clone()
        .context("no configuration: pass --config FILE or set CONTINUUM_CONFIG (see config/*.toml for examples)")?;
    let mut cfg = SiteConfig::load(&path)?;
    if let Some(s) = &cli.source_site {
        cfg.consumer.apply.source_site = Some(s.clone());
    }
    if let Some(s) = &cli.read_from {
        cfg.consumer.apply.read_from = Some(s.clone());
    }
    cli.log.apply_to(&mut cfg.log);
    cfg.validate()?;
    Ok(cfg)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&cli)?;
    continuum_common::observe::init_logging(&cfg.log);
    // Units and help lines of the metrics, for the verbs that serve `/metrics` (given to the
    // recorder when `serve` installs it).
    continuum_consumer::metrics::describe();
    match cli.verb {
        Verb::Apply(a) => apply::main(cfg, a).await?,
        Verb::Replay(a) => replay::main(cfg, a).await?,
        Verb::Status(a) => status::main(cfg, a).await?,
        Verb::Mirror(a) => mirror::main(cfg, a).await?,
        Verb::Run(a) => run_verb::main(cfg, a).await?,
        Verb::Promote(a) => promote::main(cfg, a).await?,
        Verb::Orphans(a) => {
            if !orphans::main(cfg, a).await? {
                return Ok(ExitCode::from(1));
            }
        }
        Verb::Verify(a) => {
            if !verify::main(cfg, a).await? {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    continuum_common::memory::hold_less();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("continuum-consumer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("continuum-consumer: error: {e}");
            ExitCode::from(continuum_common::observe::EXIT_ERROR)
        }
    }
}
