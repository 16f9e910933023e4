//! `continuum-bench` (`make bench`): Continuum against native MariaDB replication, on one
//! machine, in one run, with the same durability settings on every target. See docs/bench.md.
//!
//! 1. A backlog of `BENCH_ROWS` row changes is written to SF (`workload bench`) while every
//!    reader is stopped; the GTID positions before and after are recorded.
//! 2. Each contestant drains that same backlog: native replication with one SQL thread, native
//!    parallel replication (4 threads, optimistic), Continuum end to end (producer, SF broker,
//!    mirror, EU broker, apply), the producer alone, apply alone (from the producer's topic),
//!    and `LOAD DATA` of the final rows as the physical limit of apply. Every contestant's
//!    result is checked against SF's tables (row count and `CHECKSUM TABLE`).
//! 3. Steady state: the generator at 25/50/75% of the end-to-end maximum, with heartbeats
//!    written on SF and watched for on EU, for lag percentiles.
//! 4. JSON, Markdown and PNG in `BENCH_OUT` (default bench/results).
//!
//! It runs against the stack described by `$STACK_DIR/env` (source it first) and starts only
//! its own processes (the native replica's mariadbd, the producer, the consumer, the
//! generator), each stopped by its PID.

mod db;
mod plot;
mod procs;
mod replica;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use continuum_schemas::{GtidPosition, StreamPosition};
use mysql_async::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use db::{Db, Durability};
use procs::{CpuUse, CpuWindow, Spawned};
use report::{Contestant, Report, SteadyRun};

/// Everything the bench needs to know, from the environment.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub root: PathBuf,
    pub stack_dir: PathBuf,
    pub work: PathBuf,
    pub bin_dir: PathBuf,
    pub out_dir: PathBuf,
    pub profile: String,
    pub rows: u64,
    pub relaxed: bool,
    pub workers: usize,
    pub steady_secs: u64,
    pub replica_port: u16,
    pub seed: u64,
    pub skip: BTreeSet<String>,
    pub keep: bool,
    pub database: String,
    pub sf: Db,
    pub eu: Db,
    pub sf_user: String,
    pub sf_password: String,
    pub eu_user: String,
    pub eu_password: String,
    pub sf_brokers: String,
    pub eu_brokers: String,
    pub sf_registry: String,
    pub eu_registry: String,
    pub phase_timeout: Duration,
}

const HINT: &str = "run it through `make bench`, or `. $STACK_DIR/env` first (make up writes it)";

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| anyhow!("{name} is not set: {HINT}"))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .replace('_', "")
            .parse()
            .map_err(|_| anyhow!("{name}={v:?} is not a number")),
    }
}

impl Cfg {
    fn from_env() -> Result<Cfg> {
        let root = PathBuf::from(env_or(
            "BENCH_ROOT",
            &std::env::current_dir()?.to_string_lossy(),
        ));
        let stack_dir = PathBuf::from(env("STACK_DIR")?);
        let profile = env_or("BENCH_PROFILE", "release");
        let default_bin =
            root.join("target")
                .join(if profile == "dev" { "debug" } else { &profile });
        let rows: u64 = env_num("BENCH_ROWS", 1_000_000)?;
        if rows < 1000 {
            bail!("BENCH_ROWS={rows}: use at least 1000");
        }
        let relaxed = matches!(
            env_or("BENCH_RELAXED", "0").as_str(),
            "1" | "yes" | "true" | "on"
        );
        let skip = env_or("BENCH_SKIP", "")
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect::<BTreeSet<_>>();
        for s in &skip {
            if !["native", "load", "producer", "apply", "e2e", "steady"].contains(&s.as_str()) {
                bail!(
                    "BENCH_SKIP: unknown phase {s:?} (native, load, producer, apply, e2e, steady)"
                );
            }
        }
        let admin = |site: &str| -> Result<Db> {
            Ok(Db {
                name: format!("{site} MariaDB"),
                host: env(&format!("{}_DB_HOST", site.to_uppercase()))?,
                port: env(&format!("{}_DB_PORT", site.to_uppercase()))?.parse()?,
                user: env(&format!("{}_DB_ADMIN_USER", site.to_uppercase()))?,
                password: env_or(&format!("{}_DB_ADMIN_PASSWORD", site.to_uppercase()), ""),
            })
        };
        Ok(Cfg {
            work: stack_dir.join("bench"),
            bin_dir: PathBuf::from(env_or("BENCH_BIN_DIR", &default_bin.to_string_lossy())),
            out_dir: PathBuf::from(env_or(
                "BENCH_OUT",
                &root.join("bench/results").to_string_lossy(),
            )),
            root,
            stack_dir,
            profile,
            rows,
            relaxed,
            workers: env_num("BENCH_WORKERS", 4)?,
            steady_secs: env_num("BENCH_STEADY_SECS", if rows >= 200_000 { 60 } else { 15 })?,
            replica_port: env_num("BENCH_REPLICA_PORT", 3309)?,
            seed: env_num("BENCH_SEED", 1)?,
            skip,
            keep: env_or("BENCH_KEEP", "0") == "1",
            database: env_or("BENCH_DATABASE", "continuum_bench"),
            sf: admin("sf")?,
            eu: admin("eu")?,
            sf_user: env("SF_DB_USER")?,
            sf_password: env("SF_DB_PASSWORD")?,
            eu_user: env("EU_DB_USER")?,
            eu_password: env("EU_DB_PASSWORD")?,
            sf_brokers: env("SF_BROKERS")?,
            eu_brokers: env("EU_BROKERS")?,
            sf_registry: env("SF_REGISTRY")?,
            eu_registry: env("EU_REGISTRY")?,
            phase_timeout: Duration::from_secs(env_num("BENCH_PHASE_TIMEOUT", 300 + rows / 200)?),
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn logs(&self) -> PathBuf {
        self.work.join("logs")
    }

    /// A Continuum site config for the bench: the stack's addresses, the given topic for SF's
    /// changelog, only the bench database captured, metrics on an ephemeral port.
    fn site_toml(&self, site: &str, topic: &str) -> String {
        let (db, user) = if site == "sf" {
            (&self.sf, &self.sf_user)
        } else {
            (&self.eu, &self.eu_user)
        };
        format!(
            r#"# Written by continuum-bench for one run; see docs/bench.md.
site = "{site}"

[database]
host = "{host}"
port = {port}
user = "{user}"
{tls}

[sites.sf]
brokers = "{sfb}"
topic = "{topic}"
registry = {{ url = "{sfr}" }}

[sites.eu]
brokers = "{eub}"
topic = "{topic}.eu-unused"
registry = {{ url = "{eur}" }}

[producer]
server_id = 4091
include = ["{dbname}.*"]
metrics_listen = "127.0.0.1:0"

[consumer]
metrics_listen = "127.0.0.1:0"
"#,
            host = db.host,
            port = db.port,
            tls = db::stack_tls_toml(),
            sfb = self.sf_brokers,
            eub = self.eu_brokers,
            sfr = self.sf_registry,
            eur = self.eu_registry,
            dbname = self.database,
        )
    }

    fn write_config(&self, site: &str, topic: &str) -> Result<PathBuf> {
        let p = self.work.join(format!("{topic}.{site}.toml"));
        std::fs::write(&p, self.site_toml(site, topic))?;
        Ok(p)
    }

    /// The environment of a Continuum process: none of the caller's CONTINUUM_* settings (the
    /// bench's config file is the whole truth), the site's password.
    fn continuum_env(&self, site: &str) -> Vec<(String, String)> {
        let pw = if site == "sf" {
            &self.sf_password
        } else {
            &self.eu_password
        };
        vec![
            ("CONTINUUM_DB_PASSWORD".into(), pw.clone()),
            ("CONTINUUM_LOG_FORMAT".into(), "text".into()),
        ]
    }

    fn generator_env(&self) -> Vec<(String, String)> {
        vec![
            ("SF_DB_HOST".into(), self.sf.host.clone()),
            ("SF_DB_PORT".into(), self.sf.port.to_string()),
            ("SF_DB_ADMIN_USER".into(), self.sf.user.clone()),
            ("SF_DB_ADMIN_PASSWORD".into(), self.sf.password.clone()),
        ]
    }

    fn stack_procs(&self, parts: &[&str]) -> Vec<(String, i32)> {
        parts
            .iter()
            .filter_map(|p| procs::stack_pid(&self.stack_dir, p).map(|pid| (p.to_string(), pid)))
            .collect()
    }
}

/// Spawns a Continuum binary with a clean environment (no inherited CONTINUUM_* variables).
fn spawn_continuum(
    cfg: &Cfg,
    name: &str,
    bin: &str,
    args: &[String],
    site: &str,
) -> Result<Spawned> {
    Spawned::start(
        name,
        &cfg.bin(bin),
        args,
        &cfg.continuum_env(site),
        &cfg.logs().join(format!("{name}.log")),
        &cfg.root,
    )
}

/// Runs `workload bench ARGS` to completion and returns its JSON summary.
async fn generator(cfg: &Cfg, args: &[String]) -> Result<serde_json::Value> {
    let mut cmd = tokio::process::Command::new(cfg.bin("workload"));
    cmd.arg("bench")
        .args(args)
        .args(["--database", &cfg.database]);
    for (k, v) in cfg.generator_env() {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {} bench", cfg.bin("workload").display()))?;
    if !out.status.success() {
        bail!(
            "workload bench {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "workload bench output: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The domains the backlog advanced, with their positions after it: what "drained" means.
fn target_of(before: &GtidPosition, after: &GtidPosition) -> GtidPosition {
    let mut t = GtidPosition::new();
    for g in after.iter() {
        if !before.contains(g) {
            t = t.with(*g);
        }
    }
    t
}

fn covers(observed: &str, target: &GtidPosition) -> bool {
    observed
        .trim()
        .parse::<GtidPosition>()
        .map(|p| p.covers(target))
        .unwrap_or(false)
}

/// Polls `done` every `every` until it returns true, failing after `timeout` or when `alive`
/// says a process died.
async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let t0 = Instant::now();
    loop {
        if check().await? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            bail!("{what}: not done after {timeout:?} (BENCH_PHASE_TIMEOUT raises the limit)");
        }
        tokio::time::sleep(every).await;
    }
}

fn kafka_reader(brokers: &str) -> Result<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("continuum-bench-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set("log_level", "3");
    Ok(c.create()?)
}

/// Where the last record of `topic` says the topic has reached, if it ends a consistent point.
fn topic_position(consumer: &BaseConsumer, topic: &str) -> Option<GtidPosition> {
    let r = continuum_common::kafka::read_last(consumer, topic, Duration::from_secs(5)).ok()??;
    let pos: StreamPosition = r.header_str(continuum_schemas::HEADER_POS)?.parse().ok()?;
    pos.after()
}

/// Checks a process is still running; fails with its log if not.
fn ensure_running(p: &mut Spawned) -> Result<()> {
    if let Some(e) = p.try_exit() {
        bail!(
            "{} exited (status {}) before the phase ended; last lines of {}:\n{}",
            p.name,
            e.code,
            p.log.display(),
            p.log_tail(25)
        );
    }
    Ok(())
}

async fn checkpoint_position(eu: &Db, topic: &str) -> Result<Option<String>> {
    let mut c = eu.conn().await?;
    let r: Result<Option<String>, _> = c
        .exec_first("SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = ? AND `partition` = 0", (topic,))
        .await;
    let _ = c.disconnect().await;
    Ok(r.unwrap_or(None))
}

/// Compares a target's bench tables with the source's checksums.
async fn verify(
    target: &Db,
    database: &str,
    tables: &[String],
    source: &BTreeMap<String, (u64, u64)>,
) -> Result<(bool, String)> {
    let mut c = target.conn().await?;
    let got = db::checksums(&mut c, database, tables).await?;
    let _ = c.disconnect().await;
    let bad: Vec<String> = source
        .iter()
        .filter(|(t, v)| got.get(*t) != Some(v))
        .map(|(t, v)| format!("{t}: source {} rows/{}, target {:?}", v.0, v.1, got.get(t)))
        .collect();
    Ok((bad.is_empty(), bad.join("; ")))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Backlog {
    before: GtidPosition,
    target: GtidPosition,
    rows: u64,
    defs: Vec<(String, String)>,
    tables: Vec<String>,
    source_sums: BTreeMap<String, (u64, u64)>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cfg = match Cfg::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("continuum-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg).await {
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

fn say(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {}] {}",
        chrono::Utc::now().format("%H:%M:%S"),
        msg.as_ref()
    );
}

async fn run(cfg: &Cfg) -> Result<Vec<PathBuf>> {
    for b in ["continuum-producer", "continuum-consumer", "workload"] {
        if !cfg.bin(b).is_file() {
            bail!("{} is missing: build with `cargo build --release --bins` (make bench does), or set BENCH_BIN_DIR", cfg.bin(b).display());
        }
    }
    for part in [
        "sf-db",
        "eu-db",
        "sf-broker",
        "eu-broker",
        "sf-registry",
        "eu-registry",
    ] {
        if procs::stack_pid(&cfg.stack_dir, part).is_none() {
            bail!(
                "{part} of the stack in {} is not running: make up",
                cfg.stack_dir.display()
            );
        }
    }
    std::fs::create_dir_all(cfg.logs())?;
    std::fs::create_dir_all(&cfg.out_dir)?;
    let want = if cfg.relaxed {
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
        if cfg.relaxed { " (BENCH_RELAXED)" } else { "" }
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
    let bl = make_backlog(cfg, &mut rep).await?;

    if !cfg.skip.contains("load") {
        let c = load_data(cfg, &bl).await?;
        rep.contestants.push(c);
    }
    if !cfg.skip.contains("native") {
        let (st, par) = native(cfg, want, &bl).await?;
        rep.contestants.push(st);
        rep.contestants.push(par);
    }
    let prod_topic = format!("bench.{run_id}.producer");
    let e2e_topic = format!("bench.{run_id}.e2e");
    let mut topics_sf = Vec::new();
    let mut topics_eu = Vec::new();
    let result = async {
        if !cfg.skip.contains("producer") || !cfg.skip.contains("apply") {
            topics_sf.push(prod_topic.clone());
            let p = producer_alone(cfg, &bl, &prod_topic).await?;
            if !cfg.skip.contains("producer") {
                rep.contestants.push(p);
            }
            if !cfg.skip.contains("apply") {
                rep.contestants
                    .push(apply_alone(cfg, &bl, &prod_topic).await?);
            }
        }
        if !cfg.skip.contains("e2e") {
            topics_sf.push(e2e_topic.clone());
            topics_eu.push(e2e_topic.clone());
            let (c, mut pipeline) = end_to_end(cfg, &bl, &e2e_topic).await?;
            let max = c.rows_per_s;
            rep.contestants.push(c);
            if !cfg.skip.contains("steady") {
                let r = steady(cfg, &bl, &e2e_topic, max, &mut pipeline).await;
                for p in pipeline.iter_mut() {
                    p.stop(Duration::from_secs(60)).await;
                }
                rep.steady = r?;
            } else {
                for p in pipeline.iter_mut() {
                    p.stop(Duration::from_secs(60)).await;
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if !cfg.keep {
        cleanup(cfg, &topics_sf, &topics_eu).await;
    }
    result?;
    rep.finish();
    rep.write(cfg)
}

async fn make_backlog(cfg: &Cfg, rep: &mut Report) -> Result<Backlog> {
    let mut sf = cfg.sf.conn().await?;
    let mut eu = cfg.eu.conn().await?;
    say(format!(
        "creating {} on SF (10 tables), and the same empty tables on EU",
        cfg.database
    ));
    generator(cfg, &["--reset".into()]).await?;
    let defs = db::table_definitions(&mut sf, &cfg.database).await?;
    let tables = db::load_tables(&defs);
    db::recreate(&mut eu, &cfg.database, &defs).await?;
    let before = db::gtid_binlog_pos(&mut sf).await?;
    say(format!(
        "backlog: {} row changes on SF, every reader stopped; GTID position before: {before}",
        cfg.rows
    ));
    let t0 = Instant::now();
    let summary = generator(
        cfg,
        &[
            "--rows".into(),
            cfg.rows.to_string(),
            "--workers".into(),
            cfg.workers.to_string(),
            "--seed".into(),
            cfg.seed.to_string(),
        ],
    )
    .await?;
    let gen_s = t0.elapsed().as_secs_f64();
    let after = db::gtid_binlog_pos(&mut sf).await?;
    let target = target_of(&before, &after);
    let rows = summary["rows"].as_u64().unwrap_or(0);
    if rows != cfg.rows {
        bail!("the generator wrote {rows} row changes, not {}", cfg.rows);
    }
    let txns = summary["transactions"].as_u64().unwrap_or(0);
    let seq_span: u64 = target
        .iter()
        .map(|g| {
            g.seq
                - before
                    .iter()
                    .find(|b| b.domain == g.domain)
                    .map_or(0, |b| b.seq)
        })
        .sum();
    if seq_span != txns {
        say(format!("warning: SF's binlog advanced by {seq_span} transactions, the generator committed {txns}: something else writes to SF"));
        rep.notes.push(format!("SF's binlog advanced by {seq_span} transactions during the backlog, the generator committed {txns}: another client wrote to SF."));
    }
    say(format!(
        "backlog written in {gen_s:.1} s ({:.0} rows/s on SF); after: {after}",
        rows as f64 / gen_s
    ));
    let source_sums = db::checksums(&mut sf, &cfg.database, &tables).await?;
    rep.backlog = serde_json::json!({
        "rows": rows,
        "transactions": txns,
        "large_transactions": summary["large_transactions"],
        "inserted": summary["inserted"],
        "updated": summary["updated"],
        "deleted": summary["deleted"],
        "final_rows": source_sums.values().map(|v| v.0).sum::<u64>(),
        "tables": tables.len(),
        "generator_workers": cfg.workers,
        "generated_s": gen_s,
        "generated_rows_per_s": rows as f64 / gen_s,
        "gtid_before": before.to_string(),
        "gtid_after": after.to_string(),
    });
    Ok(Backlog {
        before,
        target,
        rows,
        defs,
        tables,
        source_sums,
    })
}

/// Fills a contestant's derived fields.
fn contestant(
    key: &str,
    name: &str,
    rows: u64,
    seconds: f64,
    cpu: CpuUse,
    rss: BTreeMap<String, f64>,
    verified: (bool, String),
) -> Contestant {
    let per_1k = cpu
        .cpu_s
        .iter()
        .map(|(k, v)| (k.clone(), v / (rows as f64 / 1000.0)))
        .collect();
    let total: f64 = cpu.cpu_s.values().sum();
    let broker: f64 = cpu
        .cpu_s
        .iter()
        .filter(|(k, _)| k.ends_with("-broker"))
        .map(|(_, v)| v)
        .sum();
    Contestant {
        key: key.into(),
        name: name.into(),
        rows,
        seconds,
        rows_per_s: rows as f64 / seconds,
        ratio_native_st: None,
        ratio_native_par: None,
        cpu_per_1k_rows: per_1k,
        peak_rss_mib: rss,
        broker_cpu_share: (broker > 0.0 && total > 0.0).then(|| broker / total),
        broker_machine_share: (broker > 0.0 && cpu.machine_capacity_s > 0.0)
            .then(|| broker / cpu.machine_capacity_s),
        cpu,
        verified: verified.0,
        verify_detail: verified.1,
    }
}

async fn load_data(cfg: &Cfg, bl: &Backlog) -> Result<Contestant> {
    say("LOAD DATA: dumping SF's final rows, then loading them into EU's empty tables");
    let dir = cfg.work.join("load");
    std::fs::create_dir_all(&dir)?;
    let mut sf = cfg.sf.conn().await?;
    let mut files = Vec::new();
    let cols = "id,account_id,status,amount,created_at,updated_at,name,payload";
    for t in &bl.tables {
        let path = dir.join(format!("{t}.tsv"));
        let rows: Vec<String> = sf
            .query(format!(
                "SELECT CONCAT_WS('\\t', id, account_id, status, amount, DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'), name, payload) FROM `{}`.`{t}` ORDER BY id",
                cfg.database
            ))
            .await?;
        let mut text = rows.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(&path, text)?;
        files.push((t.clone(), path));
    }
    let mut eu = cfg.eu.conn().await?;
    db::recreate(&mut eu, &cfg.database, &bl.defs).await?;
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let opts = mysql_async::OptsBuilder::from_opts(cfg.eu.opts())
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new(paths)));
    let mut c = mysql_async::Conn::new(opts).await?;
    // The same session as apply's (skip_replication, no FK checks), binlogged like apply.
    for s in [
        "SET SESSION skip_replication=1",
        "SET SESSION foreign_key_checks=0",
        "SET SESSION time_zone='+00:00'",
        "SET NAMES utf8mb4",
    ] {
        c.query_drop(s).await?;
    }
    let eu_pid = procs::stack_pid(&cfg.stack_dir, "eu-db").unwrap_or(0);
    let win = CpuWindow::start(&[("eu-db".into(), eu_pid)]);
    let t0 = Instant::now();
    let mut loaded = 0u64;
    for (t, path) in &files {
        c.query_drop(format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE `{}`.`{t}` FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' ({cols})",
            path.display(),
            cfg.database
        ))
        .await
        .with_context(|| format!("LOAD DATA into {t}"))?;
        loaded += c.affected_rows();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = win.finish(&BTreeMap::new());
    let _ = c.disconnect().await;
    let v = verify(&cfg.eu, &cfg.database, &bl.tables, &bl.source_sums).await?;
    say(format!(
        "LOAD DATA: {loaded} rows in {secs:.2} s ({:.0} rows/s); matches SF: {}",
        loaded as f64 / secs,
        v.0
    ));
    Ok(contestant(
        "load_data",
        "LOAD DATA of the final rows (EU)",
        loaded,
        secs,
        cpu,
        BTreeMap::new(),
        v,
    ))
}

async fn native(cfg: &Cfg, want: &Durability, bl: &Backlog) -> Result<(Contestant, Contestant)> {
    say(format!(
        "native replica: starting a third mariadbd on port {}",
        cfg.replica_port
    ));
    let rep = replica::Replica::start(
        &cfg.work.join("replica"),
        cfg.replica_port,
        want,
        &cfg.logs(),
    )
    .await?;
    let r = async {
        let st = native_run(cfg, bl, &rep, 0).await?;
        let par = native_run(cfg, bl, &rep, 4).await?;
        anyhow::Ok((st, par))
    }
    .await;
    if let Ok(mut c) = rep.db.conn().await {
        let _ = c.query_drop("STOP SLAVE").await;
        let _ = c.query_drop("RESET SLAVE ALL").await;
    }
    rep.stop().await;
    r
}

async fn native_run(
    cfg: &Cfg,
    bl: &Backlog,
    rep: &replica::Replica,
    threads: u32,
) -> Result<Contestant> {
    let mut c = rep.db.conn().await?;
    let _ = c.query_drop("STOP SLAVE").await;
    let _ = c.query_drop("RESET SLAVE ALL").await;
    db::recreate(&mut c, &cfg.database, &bl.defs).await?;
    c.query_drop("RESET MASTER").await?;
    c.query_drop(format!("SET GLOBAL gtid_slave_pos = '{}'", bl.before))
        .await?;
    c.query_drop(format!("SET GLOBAL slave_parallel_threads = {threads}"))
        .await?;
    c.query_drop("SET GLOBAL slave_parallel_mode = 'optimistic'")
        .await?;
    // TLS as Continuum's own connections use it (the stack's continuum users require it), so
    // both contestants pay for the same link.
    let tls = match std::env::var("STACK_TLS_CA").ok().filter(|v| !v.is_empty()) {
        Some(ca) => format!(
            ", MASTER_SSL = 1, MASTER_SSL_CA = {}, MASTER_SSL_VERIFY_SERVER_CERT = 1",
            db::literal(&ca)
        ),
        None => String::new(),
    };
    // CHANGE MASTER cannot be prepared: literals.
    c.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_USER = {}, MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos{tls}",
        db::literal(&cfg.sf.host),
        cfg.sf.port,
        db::literal(&cfg.sf_user),
        db::literal(&cfg.sf_password)
    ))
    .await?;
    let label = if threads == 0 {
        "one SQL thread".to_owned()
    } else {
        format!("{threads} threads, optimistic")
    };
    say(format!(
        "native replication ({label}): draining from {}",
        bl.before
    ));
    let mut procs_ = cfg.stack_procs(&["sf-db"]);
    procs_.push(("replica-db".into(), rep.proc.pid));
    let win = CpuWindow::start(&procs_);
    let t0 = Instant::now();
    c.query_drop("START SLAVE").await?;
    let mut last_status = Instant::now();
    loop {
        let pos = db::var(&mut c, "gtid_slave_pos").await?;
        if covers(&pos, &bl.target) {
            break;
        }
        if last_status.elapsed() > Duration::from_secs(1) {
            last_status = Instant::now();
            let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await?;
            if let Some(row) = row {
                for k in ["Last_SQL_Error", "Last_IO_Error"] {
                    let e: Option<String> = row.get(k).unwrap_or(None);
                    if let Some(e) = e.filter(|e| !e.is_empty()) {
                        bail!("native replica: {k}: {e}");
                    }
                }
            }
        }
        if t0.elapsed() >= cfg.phase_timeout {
            bail!(
                "native replica: not caught up after {:?} (BENCH_PHASE_TIMEOUT raises the limit)",
                cfg.phase_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = win.finish(&BTreeMap::new());
    c.query_drop("STOP SLAVE").await?;
    let v = verify(&rep.db, &cfg.database, &bl.tables, &bl.source_sums).await?;
    say(format!(
        "native replication ({label}): {} rows in {secs:.2} s ({:.0} rows/s); matches SF: {}",
        bl.rows,
        bl.rows as f64 / secs,
        v.0
    ));
    let (key, name) = if threads == 0 {
        ("native_st", "native replication, 1 SQL thread".to_owned())
    } else {
        (
            "native_par",
            format!("native replication, {threads} threads optimistic"),
        )
    };
    Ok(contestant(
        key,
        &name,
        bl.rows,
        secs,
        cpu,
        BTreeMap::new(),
        v,
    ))
}

async fn producer_alone(cfg: &Cfg, bl: &Backlog, topic: &str) -> Result<Contestant> {
    say(format!(
        "producer alone: --start-position {} into the empty topic {topic} (SF cluster)",
        bl.before
    ));
    let conf = cfg.write_config("sf", topic)?;
    let mut procs_ = cfg.stack_procs(&["sf-db", "sf-broker", "sf-registry"]);
    procs_.sort();
    let mut win = CpuWindow::start(&procs_);
    let mut p = spawn_continuum(
        cfg,
        &format!("{topic}.producer"),
        "continuum-producer",
        &[
            "--config".into(),
            conf.to_string_lossy().into(),
            "--start-position".into(),
            bl.before.to_string(),
        ],
        "sf",
    )?;
    win.add_new("producer", p.pid);
    let consumer = kafka_reader(&cfg.sf_brokers)?;
    let target = bl.target.clone();
    let r = wait_until(
        "producer alone",
        cfg.phase_timeout,
        Duration::from_millis(250),
        || {
            let ok = ensure_running(&mut p);
            let pos = topic_position(&consumer, topic);
            let target = target.clone();
            async move {
                ok?;
                Ok(pos.is_some_and(|p| p.covers(&target)))
            }
        },
    )
    .await;
    let secs = p.started.elapsed().as_secs_f64();
    let cpu = win.finish(&BTreeMap::new());
    let hwm = p.hwm_kib().unwrap_or(0);
    p.stop(Duration::from_secs(60)).await;
    r?;
    let mut rss = BTreeMap::new();
    rss.insert("producer".to_owned(), mib(hwm));
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    say(format!("producer alone: {} rows ({high} records) in {secs:.2} s ({:.0} rows/s), peak RSS {:.1} MiB", bl.rows, bl.rows as f64 / secs, mib(hwm)));
    let mut c = contestant(
        "producer",
        "Continuum producer alone (binlog to SF topic)",
        bl.rows,
        secs,
        cpu,
        rss,
        (true, String::new()),
    );
    c.verify_detail = format!(
        "topic holds {high} records and ends at the backlog's last GTID (not a table check)"
    );
    Ok(c)
}

async fn apply_alone(cfg: &Cfg, bl: &Backlog, topic: &str) -> Result<Contestant> {
    say(format!("apply alone: --until-caught-up from the pre-filled topic {topic} (SF cluster) into EU's empty tables"));
    let mut eu = cfg.eu.conn().await?;
    db::recreate(&mut eu, &cfg.database, &bl.defs).await?;
    let conf = cfg.write_config("eu", topic)?;
    let procs_ = cfg.stack_procs(&["eu-db", "sf-broker", "sf-registry"]);
    let mut win = CpuWindow::start(&procs_);
    let mut p = spawn_continuum(
        cfg,
        &format!("{topic}.apply"),
        "continuum-consumer",
        &[
            "--config".into(),
            conf.to_string_lossy().into(),
            "--read-from".into(),
            "sf".into(),
            "apply".into(),
            "--until-caught-up".into(),
            "--no-metrics".into(),
        ],
        "eu",
    )?;
    win.add_new("consumer apply", p.pid);
    let exit = p.wait(cfg.phase_timeout).await?;
    let secs = p.started.elapsed().as_secs_f64();
    if exit.code != 0 {
        bail!(
            "apply --until-caught-up exited with {}; last lines of {}:\n{}",
            exit.code,
            p.log.display(),
            p.log_tail(25)
        );
    }
    let mut exact = BTreeMap::new();
    exact.insert("consumer apply".to_owned(), exit.cpu_s);
    let cpu = win.finish(&exact);
    let pos = checkpoint_position(&cfg.eu, topic)
        .await?
        .unwrap_or_default();
    if !covers(&pos, &bl.target) {
        bail!(
            "apply --until-caught-up ended at {pos:?}, short of the backlog's end {}",
            bl.target
        );
    }
    let v = verify(&cfg.eu, &cfg.database, &bl.tables, &bl.source_sums).await?;
    let mut rss = BTreeMap::new();
    rss.insert("consumer apply".to_owned(), mib(exit.maxrss_kib));
    say(format!(
        "apply alone: {} rows in {secs:.2} s ({:.0} rows/s), peak RSS {:.1} MiB; matches SF: {}",
        bl.rows,
        bl.rows as f64 / secs,
        mib(exit.maxrss_kib),
        v.0
    ));
    Ok(contestant(
        "apply",
        "Continuum apply alone (topic to EU MariaDB)",
        bl.rows,
        secs,
        cpu,
        rss,
        v,
    ))
}

/// Producer and `consumer run` from the before-position into fresh topics; returns when EU's
/// checkpoint reaches the backlog's end, leaving both running (for the steady state).
async fn end_to_end(cfg: &Cfg, bl: &Backlog, topic: &str) -> Result<(Contestant, Vec<Spawned>)> {
    say(format!(
        "end to end: producer -> SF broker -> mirror -> EU broker -> apply, topic {topic}"
    ));
    let mut eu = cfg.eu.conn().await?;
    db::recreate(&mut eu, &cfg.database, &bl.defs).await?;
    let _ = eu.disconnect().await;
    let sf_conf = cfg.write_config("sf", topic)?;
    let eu_conf = cfg.write_config("eu", topic)?;
    let procs_ = cfg.stack_procs(&[
        "sf-db",
        "eu-db",
        "sf-broker",
        "eu-broker",
        "sf-registry",
        "eu-registry",
    ]);
    let mut win = CpuWindow::start(&procs_);
    let prod = spawn_continuum(
        cfg,
        &format!("{topic}.producer"),
        "continuum-producer",
        &[
            "--config".into(),
            sf_conf.to_string_lossy().into(),
            "--start-position".into(),
            bl.before.to_string(),
        ],
        "sf",
    )?;
    let cons = spawn_continuum(
        cfg,
        &format!("{topic}.consumer-run"),
        "continuum-consumer",
        &[
            "--config".into(),
            eu_conf.to_string_lossy().into(),
            "run".into(),
            "--no-metrics".into(),
        ],
        "eu",
    )?;
    let t0 = prod.started;
    win.add_new("producer", prod.pid);
    win.add_new("consumer run", cons.pid);
    let mut ps = vec![prod, cons];
    let target = bl.target.clone();
    let r = wait_until(
        "end to end",
        cfg.phase_timeout,
        Duration::from_millis(100),
        || {
            let ok = ps.iter_mut().try_for_each(ensure_running);
            let eu = cfg.eu.clone();
            let target = target.clone();
            async move {
                ok?;
                Ok(checkpoint_position(&eu, topic)
                    .await?
                    .is_some_and(|p| covers(&p, &target)))
            }
        },
    )
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = win.finish(&BTreeMap::new());
    let mut rss = BTreeMap::new();
    rss.insert("producer".to_owned(), mib(ps[0].hwm_kib().unwrap_or(0)));
    rss.insert("consumer run".to_owned(), mib(ps[1].hwm_kib().unwrap_or(0)));
    if let Err(e) = r {
        for p in ps.iter_mut() {
            p.stop(Duration::from_secs(30)).await;
        }
        return Err(e);
    }
    let v = verify(&cfg.eu, &cfg.database, &bl.tables, &bl.source_sums).await?;
    say(format!(
        "end to end: {} rows in {secs:.2} s ({:.0} rows/s); peak RSS producer {:.1} MiB, consumer {:.1} MiB; matches SF: {}",
        bl.rows,
        bl.rows as f64 / secs,
        rss["producer"],
        rss["consumer run"],
        v.0
    ));
    Ok((
        contestant(
            "e2e",
            "Continuum end to end (producer, mirror, apply)",
            bl.rows,
            secs,
            cpu,
            rss,
            v,
        ),
        ps,
    ))
}

/// Lag samples: (seconds since the run's start when sent, lag in ms).
type Series = Vec<(f64, f64)>;

async fn steady(
    cfg: &Cfg,
    bl: &Backlog,
    topic: &str,
    max_rows_per_s: f64,
    pipeline: &mut [Spawned],
) -> Result<Vec<SteadyRun>> {
    let mut out = Vec::new();
    let next_id = Arc::new(AtomicU64::new(1));
    for pct in [25u32, 50, 75] {
        let rate = max_rows_per_s * pct as f64 / 100.0;
        say(format!("steady state at {pct}% of the end-to-end maximum: {rate:.0} row changes/s for {} s, heartbeats every 100 ms", cfg.steady_secs));
        let procs_ = cfg.stack_procs(&[
            "sf-db",
            "eu-db",
            "sf-broker",
            "eu-broker",
            "sf-registry",
            "eu-registry",
        ]);
        let mut win = CpuWindow::start(&procs_);
        win.add_new("producer", pipeline[0].pid);
        win.add_new("consumer run", pipeline[1].pid);
        let base: BTreeMap<String, f64> = [("producer", 0usize), ("consumer run", 1)]
            .iter()
            .map(|(n, i)| (n.to_string(), pipeline[*i].cpu_now().unwrap_or(0.0)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<(i64, i64, i64)>>> = Arc::new(Mutex::new(Vec::new()));
        let first_id = next_id.load(Ordering::Relaxed);
        let t_start_us = now_us();
        // Heartbeat writer on SF.
        let writer = {
            let (sf, stop, next_id, dbn) = (
                cfg.sf.clone(),
                stop.clone(),
                next_id.clone(),
                cfg.database.clone(),
            );
            tokio::spawn(async move {
                let mut c = sf.conn().await?;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    c.query_drop(format!(
                        "INSERT INTO `{dbn}`.heartbeat (id, sent_us) VALUES ({id}, {})",
                        now_us()
                    ))
                    .await?;
                }
                anyhow::Ok(next_id.load(Ordering::Relaxed) - 1)
            })
        };
        // Watcher on EU.
        let watcher = {
            let (eu, samples, dbn) = (cfg.eu.clone(), samples.clone(), cfg.database.clone());
            let stop_after = Arc::new(AtomicU64::new(u64::MAX));
            let sa = stop_after.clone();
            let h = tokio::spawn(async move {
                let mut c = eu.conn().await?;
                let mut last = first_id as i64 - 1;
                let give_up = Instant::now() + Duration::from_secs(3600);
                loop {
                    let rows: Vec<(i64, i64)> = c.query(format!("SELECT id, sent_us FROM `{dbn}`.heartbeat WHERE id > {last} ORDER BY id")).await?;
                    let seen = now_us();
                    {
                        let mut s = samples.lock().unwrap();
                        for (id, sent) in rows {
                            s.push((id, sent, seen));
                            last = last.max(id);
                        }
                    }
                    if last as u64 >= sa.load(Ordering::Relaxed) || Instant::now() > give_up {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                anyhow::Ok(())
            });
            (h, stop_after)
        };
        let gen = generator(
            cfg,
            &[
                "--rate".into(),
                format!("{rate:.1}"),
                "--duration".into(),
                format!("{}s", cfg.steady_secs),
                "--workers".into(),
                cfg.workers.to_string(),
                "--seed".into(),
                (cfg.seed + pct as u64).to_string(),
            ],
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        let last_id = writer.await??;
        let gen = gen?;
        watcher.1.store(last_id, Ordering::Relaxed);
        // Let the pipeline deliver the last heartbeat (it also drains what the generator wrote).
        let drain_t0 = Instant::now();
        let drained = tokio::time::timeout(cfg.phase_timeout, watcher.0).await;
        let drain_s = drain_t0.elapsed().as_secs_f64();
        for p in pipeline.iter_mut() {
            ensure_running(p)?;
        }
        match drained {
            Ok(r) => r??,
            Err(_) => bail!(
                "steady state at {pct}%: the last heartbeat did not reach EU within {:?}",
                cfg.phase_timeout
            ),
        }
        let cpu = win.finish(&BTreeMap::new());
        let mut cpu = cpu;
        for (n, b) in &base {
            if let Some(v) = cpu.cpu_s.get_mut(n) {
                *v = (*v - b).max(0.0);
            }
        }
        let s = samples.lock().unwrap().clone();
        let gen_rows = gen["rows"].as_u64().unwrap_or(0);
        let gen_s = gen["elapsed_s"].as_f64().unwrap_or(cfg.steady_secs as f64);
        let mut lags: Vec<f64> = s
            .iter()
            .map(|(_, sent, seen)| (seen - sent) as f64 / 1000.0)
            .collect();
        let series: Series = s
            .iter()
            .map(|(_, sent, seen)| {
                (
                    (sent - t_start_us) as f64 / 1e6,
                    (seen - sent) as f64 / 1000.0,
                )
            })
            .collect();
        lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pctl = |p: f64| -> f64 {
            if lags.is_empty() {
                return f64::NAN;
            }
            let i = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len()) - 1;
            lags[i]
        };
        let run = SteadyRun {
            load_pct: pct,
            target_rows_per_s: rate,
            achieved_rows_per_s: gen_rows as f64 / gen_s,
            seconds: gen_s,
            rows: gen_rows,
            heartbeats: lags.len() as u64,
            p50_ms: pctl(0.50),
            p99_ms: pctl(0.99),
            max_ms: lags.last().copied().unwrap_or(f64::NAN),
            drain_after_s: drain_s,
            cpu_per_1k_rows: cpu
                .cpu_s
                .iter()
                .map(|(k, v)| (k.clone(), v / (gen_rows.max(1) as f64 / 1000.0)))
                .collect(),
            cpu,
            series,
        };
        say(format!(
            "steady {pct}%: {:.0} rows/s achieved, {} heartbeats, lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            run.achieved_rows_per_s, run.heartbeats, run.p50_ms, run.p99_ms, run.max_ms
        ));
        out.push(run);
    }
    // After the steady runs: EU still holds exactly SF's rows.
    let pos = {
        let mut sf = cfg.sf.conn().await?;
        db::gtid_binlog_pos(&mut sf).await?
    };
    let target = target_of(&bl.before, &pos);
    wait_until(
        "end to end after the steady state",
        cfg.phase_timeout,
        Duration::from_millis(200),
        || {
            let eu = cfg.eu.clone();
            let target = target.clone();
            async move {
                Ok(checkpoint_position(&eu, topic)
                    .await?
                    .is_some_and(|p| covers(&p, &target)))
            }
        },
    )
    .await?;
    let mut sf = cfg.sf.conn().await?;
    let mut tables = bl.tables.clone();
    tables.push("heartbeat".into());
    let sums = db::checksums(&mut sf, &cfg.database, &tables).await?;
    let v = verify(&cfg.eu, &cfg.database, &tables, &sums).await?;
    if !v.0 {
        bail!("after the steady state EU differs from SF: {}", v.1);
    }
    say("after the steady state EU holds exactly SF's rows");
    Ok(out)
}

/// Deletes the run's checkpoint rows at EU and its topics on both clusters (`BENCH_KEEP=1`
/// keeps everything, for a look afterwards): a 1M-row run leaves several topics of hundreds of
/// MB each.
async fn cleanup(cfg: &Cfg, topics_sf: &[String], topics_eu: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    for (brokers, topics) in [(&cfg.sf_brokers, topics_sf), (&cfg.eu_brokers, topics_eu)] {
        if topics.is_empty() {
            continue;
        }
        let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
            .set("bootstrap.servers", brokers.as_str())
            .create();
        if let Ok(a) = admin {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            match a
                .delete_topics(
                    &names,
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(120))),
                )
                .await
            {
                Ok(rs) => {
                    for r in rs {
                        if let Err((t, e)) = r {
                            say(format!(
                                "note: could not delete topic {t} on {brokers}: {e}"
                            ));
                        }
                    }
                }
                Err(e) => say(format!(
                    "note: could not delete the bench topics on {brokers}: {e}"
                )),
            }
        }
    }
    if let Ok(mut c) = cfg.eu.conn().await {
        let _ = c.query_drop("SET SESSION sql_log_bin = 0").await;
        for t in topics_sf {
            let _ = c
                .exec_drop(
                    "DELETE FROM continuum.checkpoint WHERE source_topic = ?",
                    (t,),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_what_advanced() {
        let b: GtidPosition = "1-1-10,2-2-5".parse().unwrap();
        let a: GtidPosition = "1-1-20,2-2-5".parse().unwrap();
        assert_eq!(target_of(&b, &a).to_string(), "1-1-20");
        assert!(covers("1-1-20,2-2-1", &target_of(&b, &a)));
        assert!(!covers("1-1-19", &target_of(&b, &a)));
        assert!(!covers("", &target_of(&b, &a)));
    }

    #[test]
    fn config_names_only_the_bench_database() {
        let cfg = Cfg {
            root: "/r".into(),
            stack_dir: "/s".into(),
            work: "/s/bench".into(),
            bin_dir: "/b".into(),
            out_dir: "/o".into(),
            profile: "release".into(),
            rows: 1000,
            relaxed: false,
            workers: 1,
            steady_secs: 1,
            replica_port: 3309,
            seed: 1,
            skip: BTreeSet::new(),
            keep: false,
            database: "continuum_bench".into(),
            sf: Db {
                name: "sf".into(),
                host: "127.0.0.1".into(),
                port: 1,
                user: "root".into(),
                password: String::new(),
            },
            eu: Db {
                name: "eu".into(),
                host: "127.0.0.1".into(),
                port: 2,
                user: "root".into(),
                password: String::new(),
            },
            sf_user: "continuum".into(),
            sf_password: "x".into(),
            eu_user: "continuum".into(),
            eu_password: "x".into(),
            sf_brokers: "127.0.0.1:3".into(),
            eu_brokers: "127.0.0.1:4".into(),
            sf_registry: "http://127.0.0.1:5".into(),
            eu_registry: "http://127.0.0.1:6".into(),
            phase_timeout: Duration::from_secs(1),
        };
        let t = cfg.site_toml("eu", "bench.1.e2e");
        let parsed = continuum_common::SiteConfig::from_toml(&t).unwrap();
        assert_eq!(parsed.site, "eu");
        assert_eq!(parsed.database.port, 2);
        assert_eq!(
            parsed.producer.include,
            vec!["continuum_bench.*".to_owned()]
        );
        assert!(
            !t.contains("password"),
            "passwords travel by environment only"
        );
    }
}
