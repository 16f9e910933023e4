//! `continuum-bench` (`make bench`): Continuum against native MariaDB replication, on one
//! machine, in one run, with the same durability settings on every target. See docs/bench.md.
//!
//! 1. A backlog of `BENCH_ROWS` row changes is written to SF (`workload bench`) while every
//!    reader is stopped; the GTID positions before and after are recorded ([`backlog`]).
//! 2. Each contestant drains that same backlog ([`contestants`]): native replication with one
//!    SQL thread, native parallel replication (4 threads, optimistic), Continuum end to end
//!    (producer, SF broker, mirror, EU broker, apply), the producer alone, apply alone (from the
//!    producer's topic), and `LOAD DATA` of the final rows as the physical limit of apply.
//!    Every contestant's result is checked against SF's tables (row count and `CHECKSUM TABLE`).
//! 3. Steady state ([`steady`]): the generator at 25/50/75% of the end-to-end maximum, with
//!    heartbeats written on SF and watched for on EU, for lag percentiles.
//! 4. Snapshot: the bench tables (as the steady state left them) copied into EU's emptied tables by Continuum's
//!    incremental snapshot (`continuum-producer snapshot`, applied by apply), then by
//!    `mariadb-dump | mariadb` ([`contestants`]).
//! 5. JSON, Markdown and PNG in `BENCH_OUT` (default bench/results) ([`report`]).
//!
//! Settings come from the environment or flags ([`config`]). It runs against the stack
//! described by `$STACK_DIR/env` (source it first) and starts only its own processes (the
//! native replica's mariadbd, the producer, the consumer, the generator), each stopped by its
//! PID. This file only wires the phases together, and puts the servers' durability settings
//! back whatever happens.

mod backlog;
mod config;
mod contestants;
mod db;
mod plot;
mod procs;
mod replica;
mod report;
mod steady;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};

use config::{Args, Cfg, Phase};
use db::Durability;
use report::{say, Report};

fn main() -> ExitCode {
    // Parsed before the runtime starts: parsing drops empty variables from the environment.
    let cfg = match Args::parse_env() {
        Ok(a) => match Cfg::new(a) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("continuum-bench: {e:#}");
                return ExitCode::from(2);
            }
        },
        Err(e) => return ExitCode::from(Args::report_error(&e)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(&cfg)) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("continuum-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: &Cfg) -> Result<Vec<PathBuf>> {
    for b in ["continuum-producer", "continuum-consumer", "workload"] {
        if !cfg.bin(b).is_file() {
            bail!("{} is missing: build with `cargo build --release --bins` (make bench does), or set BENCH_BIN_DIR", cfg.bin(b).display());
        }
    }
    contestants::check_stack(cfg)?;
    std::fs::create_dir_all(cfg.logs())?;
    std::fs::create_dir_all(&cfg.out_dir)?;
    let want = if cfg.args.relaxed {
        Durability::relaxed()
    } else {
        Durability::strict()
    };
    let mut sf = cfg.sf.conn().await?;
    let mut eu = cfg.eu.conn().await?;
    let orig_sf = db::durability(&mut sf).await?;
    let orig_eu = db::durability(&mut eu).await?;
    db::set_durability(&mut sf, &want).await?;
    db::set_durability(&mut eu, &want).await?;
    say(format!(
        "durability on every target: sync_binlog={}, innodb_flush_log_at_trx_commit={}{}",
        want.sync_binlog,
        want.innodb_flush_log_at_trx_commit,
        if cfg.args.relaxed {
            " (BENCH_RELAXED)"
        } else {
            ""
        }
    ));
    let result = bench(cfg, &want).await;
    // Put the stack's own settings back, whatever happened.
    if let Ok(mut c) = cfg.sf.conn().await {
        let _ = db::set_durability(&mut c, &orig_sf).await;
    }
    if let Ok(mut c) = cfg.eu.conn().await {
        let _ = db::set_durability(&mut c, &orig_eu).await;
    }
    result
}

async fn bench(cfg: &Cfg, want: &Durability) -> Result<Vec<PathBuf>> {
    let run_id = format!(
        "{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()
    );
    let mut rep = Report::new(cfg, want, &run_id);
    let bl = backlog::make(cfg, &mut rep).await?;

    if !cfg.skips(Phase::Load) {
        rep.contestants
            .push(contestants::load_data(cfg, &bl).await?);
    }
    if !cfg.skips(Phase::Native) {
        let (st, par) = contestants::native(cfg, want, &bl).await?;
        rep.contestants.push(st);
        rep.contestants.push(par);
    }
    let prod_topic = format!("bench.{run_id}.producer");
    let e2e_topic = format!("bench.{run_id}.e2e");
    let snap_topic = format!("bench.{run_id}.snapshot");
    let mut topics_sf = Vec::new();
    let mut topics_eu = Vec::new();
    let result = async {
        if !cfg.skips(Phase::Producer) || !cfg.skips(Phase::Apply) {
            topics_sf.push(prod_topic.clone());
            let p = contestants::producer_alone(cfg, &bl, &prod_topic).await?;
            if !cfg.skips(Phase::Producer) {
                rep.contestants.push(p);
            }
            if !cfg.skips(Phase::Apply) {
                rep.contestants
                    .push(contestants::apply_alone(cfg, &bl, &prod_topic).await?);
            }
        }
        if !cfg.skips(Phase::E2e) {
            topics_sf.push(e2e_topic.clone());
            topics_eu.push(e2e_topic.clone());
            let (c, mut pipeline) = contestants::end_to_end(cfg, &bl, &e2e_topic).await?;
            let max = c.drain.rows_per_s;
            rep.contestants.push(c);
            let r = if cfg.skips(Phase::Steady) {
                Ok(Vec::new())
            } else {
                steady::steady(cfg, &bl, &e2e_topic, max, &mut pipeline).await
            };
            for p in pipeline.iter_mut() {
                p.stop(Duration::from_secs(60)).await;
            }
            rep.steady = r?;
        }
        if !cfg.skips(Phase::Snapshot) {
            // The steady state wrote to the tables since the backlog: copy them as they are now.
            let now = contestants::tables_now(cfg, &bl).await?;
            topics_sf.push(snap_topic.clone());
            rep.snapshots
                .push(contestants::snapshot_incremental(cfg, &now, &snap_topic).await?);
            rep.snapshots.push(contestants::dump_load(cfg, &now).await?);
        }
        anyhow::Ok(())
    }
    .await;
    if !cfg.args.keep {
        contestants::cleanup(cfg, &topics_sf, &topics_eu).await;
    }
    result?;
    rep.finish();
    rep.write(cfg, plot::draw)
}
