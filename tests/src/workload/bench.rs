//! The benchmark's load (`workload bench ...`): plain OLTP row changes of about 300 bytes over
//! ten tables, for `make bench` (see `docs/bench.md`). Unlike the default workload it aims at
//! volume and a steady, countable rate, not at type coverage:
//!
//! - database `--database` (default `continuum_bench`) with tables `t0` ... `t<N-1>` (same
//!   definition: BIGINT primary key, a secondary index, DECIMAL, DATETIME(6), two VARCHARs;
//!   about 300 bytes a row), and `heartbeat` with `heartbeat_fill` (written by the bench, never
//!   by this generator);
//! - mostly small transactions (1 to `--small-max` single-row statements over random tables:
//!   about 50% INSERT, 35% UPDATE, 15% DELETE), and every `--large-every`-th transaction a large
//!   one of `--large-rows` row changes (multi-row INSERT, `UPDATE ... IN`, `DELETE ... IN`, in
//!   chunks of 500);
//! - every statement changes exactly the rows it names (updates always change a value), so the
//!   binlog holds exactly `--rows` row events when the run stops on `--rows`; the last
//!   transaction is cut to fit. Each statement's affected-row count is checked;
//! - `--rate` is in row changes per second over all workers (0: as fast as possible);
//! - each worker owns the ids `id % workers == worker` of every table, so workers never touch
//!   the same row; the ids present are loaded at start, so a run continues on what an earlier
//!   run left.
//!
//! Prints a JSON summary on stdout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Row changes per multi-row statement in a large transaction.
const CHUNK: usize = 500;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "workload bench",
    about = "The benchmark's load: ~300-byte row changes over ten tables, mostly small transactions, a few large ones"
)]
pub struct BenchArgs {
    /// Stop after exactly this many row changes (binlog row events).
    #[arg(long)]
    pub rows: Option<u64>,
    /// Stop after this long (humantime: 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Row changes per second over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Number of tables t0 .. t<N-1>.
    #[arg(long, default_value_t = 10)]
    pub tables: usize,
    /// The database.
    #[arg(long, default_value = "continuum_bench")]
    pub database: String,
    /// Drop and re-create the database (empty tables), then exit.
    #[arg(long)]
    pub reset: bool,
    /// Seed of the generator (worker w uses seed + w).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most row changes of a small transaction.
    #[arg(long, default_value_t = 10)]
    pub small_max: usize,
    /// Every Nth transaction is large; 0 = never.
    #[arg(long, default_value_t = 2000)]
    pub large_every: u64,
    /// Row changes of a large transaction.
    #[arg(long, default_value_t = 2000)]
    pub large_rows: usize,
    #[command(flatten)]
    pub login: super::Login,
}

/// What a run did (the JSON on stdout).
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchSummary {
    pub database: String,
    pub workers: usize,
    pub rate: f64,
    pub transactions: u64,
    pub large_transactions: u64,
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub retries: u64,
    pub elapsed_s: f64,
    pub rows_per_s: f64,
    /// Rows in the tables at the end, as the workers know them.
    pub rows_now: u64,
}

/// The definition of every load table (`t0` ...).
pub fn table_body() -> &'static str {
    "(id BIGINT NOT NULL PRIMARY KEY, account_id INT NOT NULL, status TINYINT NOT NULL, \
     amount DECIMAL(12,2) NOT NULL, created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL, \
     name VARCHAR(64) NOT NULL, payload VARCHAR(255) NOT NULL, KEY ix_account (account_id)) \
     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
}

/// The heartbeat table the bench writes to measure end-to-end lag: one row per probe
/// transaction, with the transaction's size in rows.
pub fn heartbeat_body() -> &'static str {
    "(id BIGINT NOT NULL PRIMARY KEY, sent_us BIGINT NOT NULL, txn_rows INT NOT NULL DEFAULT 1) \
     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
}

/// The rows that make a probe transaction larger than its heartbeat row.
pub fn heartbeat_fill_body() -> &'static str {
    "(hb_id BIGINT NOT NULL, n INT NOT NULL, pad VARCHAR(255) NOT NULL, PRIMARY KEY (hb_id, n)) \
     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
}

fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl BenchArgs {
    fn opts(&self) -> Opts {
        self.login.opts()
    }

    fn validate(&self) -> Result<()> {
        if !super::plain_name(&self.database, usize::MAX) {
            bail!(
                "--database {:?}: use letters, digits and underscores",
                self.database
            );
        }
        super::check_workers(self.workers)?;
        if self.tables == 0 || self.tables > 100 {
            bail!("--tables {}: use 1 to 100", self.tables);
        }
        if self.small_max == 0 || self.large_rows == 0 {
            bail!("--small-max and --large-rows must be at least 1");
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!(
                "--rate {}: row changes per second, 0 for as fast as possible",
                self.rate
            );
        }
        if !self.reset && self.rows.is_none() && self.duration.is_none() {
            bail!("give --rows, --duration or --reset");
        }
        Ok(())
    }
}

async fn connect(opts: &Opts) -> Result<Conn> {
    let mut c = Conn::new(opts.clone())
        .await
        .context("connecting to MariaDB")?;
    c.query_drop("SET NAMES utf8mb4, SESSION time_zone = '+00:00', SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
        .await
        .context("setting the session")?;
    Ok(c)
}

/// Drops and re-creates the database with empty tables.
pub async fn reset(conn: &mut Conn, database: &str, tables: usize) -> Result<()> {
    let db = q(database);
    conn.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
        .await?;
    conn.query_drop(format!("CREATE DATABASE {db} CHARACTER SET utf8mb4"))
        .await?;
    for t in 0..tables {
        conn.query_drop(format!("CREATE TABLE {db}.`t{t}` {}", table_body()))
            .await?;
    }
    conn.query_drop(format!(
        "CREATE TABLE {db}.`heartbeat` {}",
        heartbeat_body()
    ))
    .await?;
    conn.query_drop(format!(
        "CREATE TABLE {db}.`heartbeat_fill` {}",
        heartbeat_fill_body()
    ))
    .await?;
    Ok(())
}

/// Shared between workers: the row budget, the transaction counter, the stop flag.
struct Budget {
    remaining: Option<AtomicU64>,
    txn_counter: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl Budget {
    /// Claims up to `want` row changes; 0 when the budget is spent.
    fn claim(&self, want: u64) -> u64 {
        match &self.remaining {
            None => want,
            Some(r) => {
                let mut cur = r.load(Ordering::Relaxed);
                loop {
                    let take = cur.min(want);
                    if take == 0 {
                        return 0;
                    }
                    match r.compare_exchange(cur, cur - take, Ordering::Relaxed, Ordering::Relaxed)
                    {
                        Ok(_) => return take,
                        Err(now) => cur = now,
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Stats {
    transactions: u64,
    large_transactions: u64,
    rows: u64,
    inserted: u64,
    updated: u64,
    deleted: u64,
    retries: u64,
    rows_now: u64,
}

struct Worker {
    idx: usize,
    workers: usize,
    db: String,
    rng: StdRng,
    conn: Conn,
    /// Live ids this worker owns, per table.
    live: Vec<Vec<i64>>,
    /// Next id multiplier per table: ids are k * workers + idx.
    next_k: Vec<i64>,
    stats: Stats,
}

/// One statement and the row changes it must report.
struct Stmt {
    sql: String,
    rows: u64,
    kind: u8, // 0 insert, 1 update, 2 delete
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ";

impl Worker {
    async fn start(idx: usize, args: &BenchArgs, opts: &Opts) -> Result<Worker> {
        let mut conn = connect(opts).await?;
        let db = q(&args.database);
        let mut live = Vec::with_capacity(args.tables);
        let mut next_k = Vec::with_capacity(args.tables);
        for t in 0..args.tables {
            let ids: Vec<i64> = conn
                .query(format!(
                    "SELECT id FROM {db}.`t{t}` WHERE id % {} = {idx}",
                    args.workers
                ))
                .await
                .with_context(|| {
                    format!(
                        "loading the ids of {}.t{t} (run `workload bench --reset` first)",
                        args.database
                    )
                })?;
            let max = ids.iter().copied().max().unwrap_or(0);
            next_k.push(max / args.workers as i64 + 1);
            live.push(ids);
        }
        Ok(Worker {
            idx,
            workers: args.workers,
            db,
            rng: StdRng::seed_from_u64(
                args.seed
                    .wrapping_add(idx as u64)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            conn,
            live,
            next_k,
            stats: Stats::default(),
        })
    }

    fn text(&mut self, min: usize, max: usize) -> String {
        let n = self.rng.random_range(min..=max);
        (0..n)
            .map(|_| ALNUM[self.rng.random_range(0..ALNUM.len())] as char)
            .collect()
    }

    fn new_id(&mut self, t: usize) -> i64 {
        let k = self.next_k[t];
        self.next_k[t] += 1;
        k * self.workers as i64 + self.idx as i64
    }

    fn row_values(&mut self, id: i64, now: &str) -> String {
        let account = self.rng.random_range(1..=100_000);
        let status = self.rng.random_range(0..4);
        let amount = self.rng.random_range(0..10_000_000);
        let name = self.text(24, 40);
        let payload = self.text(200, 240);
        format!(
            "({id},{account},{status},{}.{:02},'{now}','{now}','{name}','{payload}')",
            amount / 100,
            amount % 100
        )
    }

    fn insert_sql(&self, t: usize, values: &[String]) -> String {
        format!(
            "INSERT INTO {}.`t{t}` (id,account_id,status,amount,created_at,updated_at,name,payload) VALUES {}",
            self.db,
            values.join(",")
        )
    }

    /// A random live id of table t, removed from the live set.
    fn take_live(&mut self, t: usize) -> Option<i64> {
        let l = &mut self.live[t];
        if l.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..l.len());
        Some(l.swap_remove(i))
    }

    /// Up to `want` (and at most a chunk of) live ids of table `t`, taken out of the set.
    fn take_chunk(&mut self, t: usize, want: usize) -> Vec<i64> {
        let mut ids = Vec::new();
        while ids.len() < want.min(CHUNK) {
            match self.take_live(t) {
                Some(id) => ids.push(id),
                None => break,
            }
        }
        ids
    }

    fn pick_live(&mut self, t: usize) -> Option<i64> {
        let l = &self.live[t];
        if l.is_empty() {
            return None;
        }
        Some(l[self.rng.random_range(0..l.len())])
    }

    /// A small transaction of `n` single-row statements.
    fn plan_small(&mut self, n: u64, now: &str) -> Vec<Stmt> {
        let tables = self.live.len();
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = self.rng.random_range(0..tables);
            let r: f64 = self.rng.random();
            let op = if r < 0.50 {
                0
            } else if r < 0.85 {
                1
            } else {
                2
            };
            match op {
                1 if !self.live[t].is_empty() => {
                    let id = self.pick_live(t).unwrap();
                    let status = self.rng.random_range(0..4);
                    let payload = self.text(200, 240);
                    out.push(Stmt {
                        sql: format!(
                            "UPDATE {}.`t{t}` SET amount = amount + 0.01, status = {status}, updated_at = '{now}', payload = '{payload}' WHERE id = {id}",
                            self.db
                        ),
                        rows: 1,
                        kind: 1,
                    });
                }
                2 if !self.live[t].is_empty() => {
                    let id = self.take_live(t).unwrap();
                    out.push(Stmt {
                        sql: format!("DELETE FROM {}.`t{t}` WHERE id = {id}", self.db),
                        rows: 1,
                        kind: 2,
                    });
                }
                _ => {
                    let id = self.new_id(t);
                    let v = self.row_values(id, now);
                    self.live[t].push(id);
                    out.push(Stmt {
                        sql: self.insert_sql(t, &[v]),
                        rows: 1,
                        kind: 0,
                    });
                }
            }
        }
        out
    }

    /// Statements deleting (`kind` 2) or updating (`kind` 1) `want` distinct existing rows, in
    /// chunks, each on a random table: `sql(table, ids)`. Updated ids go back into the live
    /// set. Returns how many rows it found no more of.
    fn plan_existing(
        &mut self,
        want: usize,
        kind: u8,
        out: &mut Vec<Stmt>,
        sql: impl Fn(usize, &str) -> String,
    ) -> usize {
        let mut left = want;
        while left > 0 {
            let t = self.rng.random_range(0..self.live.len());
            // Distinct ids: take them out (an update puts them back after).
            let ids = self.take_chunk(t, left);
            if ids.is_empty() {
                return left;
            }
            left -= ids.len();
            let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            out.push(Stmt {
                sql: sql(t, &list.join(",")),
                rows: ids.len() as u64,
                kind,
            });
            if kind == 1 {
                self.live[t].extend(ids);
            }
        }
        0
    }

    /// A large transaction of `n` row changes: 60% inserts, 30% updates, 10% deletes, in
    /// multi-row statements of up to CHUNK rows, each on a random table.
    fn plan_large(&mut self, n: u64, now: &str) -> Vec<Stmt> {
        let tables = self.live.len();
        let n = n as usize;
        let upd = n * 3 / 10;
        let del = n / 10;
        let mut ins = n - upd - del;
        let mut out = Vec::new();
        let db = self.db.clone();
        // Rows not found to delete or update are made up with inserts.
        ins += self.plan_existing(del, 2, &mut out, |t, ids| {
            format!("DELETE FROM {db}.`t{t}` WHERE id IN ({ids})")
        });
        ins += self.plan_existing(upd, 1, &mut out, |t, ids| {
            format!("UPDATE {db}.`t{t}` SET amount = amount + 0.01, updated_at = '{now}' WHERE id IN ({ids})")
        });
        while ins > 0 {
            let t = self.rng.random_range(0..tables);
            let m = ins.min(CHUNK);
            let mut vals = Vec::with_capacity(m);
            for _ in 0..m {
                let id = self.new_id(t);
                vals.push(self.row_values(id, now));
                self.live[t].push(id);
            }
            out.push(Stmt {
                sql: self.insert_sql(t, &vals),
                rows: m as u64,
                kind: 0,
            });
            ins -= m;
        }
        out
    }

    /// Runs the statements as one transaction, retrying deadlocks and lock wait timeouts.
    async fn execute(&mut self, stmts: &[Stmt]) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_execute(stmts).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let retry = matches!(&e, mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205);
                    let _ = self.conn.query_drop("ROLLBACK").await;
                    if retry && attempt < 50 {
                        self.stats.retries += 1;
                        tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                        continue;
                    }
                    return Err(
                        anyhow!(e).context(format!("worker {}: transaction failed", self.idx))
                    );
                }
            }
        }
    }

    async fn try_execute(&mut self, stmts: &[Stmt]) -> std::result::Result<(), mysql_async::Error> {
        self.conn.query_drop("START TRANSACTION").await?;
        for s in stmts {
            self.conn.query_drop(&s.sql).await?;
            let got = self.conn.affected_rows();
            if got != s.rows {
                return Err(mysql_async::Error::Other(
                    format!(
                        "statement changed {got} rows, expected {}: {:.200}",
                        s.rows, s.sql
                    )
                    .into(),
                ));
            }
        }
        self.conn.query_drop("COMMIT").await
    }

    async fn run(
        mut self,
        args: Arc<BenchArgs>,
        budget: Arc<Budget>,
        deadline: Option<Instant>,
    ) -> Result<Stats> {
        let rate = args.rate / args.workers as f64;
        let mut sched_start = Instant::now();
        let mut sched_rows: u64 = 0;
        loop {
            if budget.stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
            {
                break;
            }
            if rate > 0.0 {
                let due = sched_start + Duration::from_secs_f64(sched_rows as f64 / rate);
                let now = Instant::now();
                if due > now {
                    let wait = deadline.map_or(due - now, |d| {
                        (due - now).min(d.saturating_duration_since(now))
                    });
                    tokio::time::sleep(wait).await;
                    if deadline.is_some_and(|d| Instant::now() >= d)
                        || budget.stop.load(Ordering::Relaxed)
                    {
                        break;
                    }
                } else if now - due > Duration::from_secs(2) {
                    // Far behind (a large transaction): do not burst to catch up.
                    sched_start = now;
                    sched_rows = 0;
                }
            }
            let k = budget.txn_counter.fetch_add(1, Ordering::Relaxed);
            let large = args.large_every > 0 && k % args.large_every == args.large_every - 1;
            let want = if large {
                args.large_rows as u64
            } else {
                self.rng.random_range(1..=args.small_max as u64)
            };
            let n = budget.claim(want);
            if n == 0 {
                break;
            }
            let now = chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string();
            let stmts = if large {
                self.plan_large(n, &now)
            } else {
                self.plan_small(n, &now)
            };
            self.execute(&stmts).await?;
            let st = &mut self.stats;
            st.transactions += 1;
            st.large_transactions += u64::from(large);
            for s in &stmts {
                st.rows += s.rows;
                match s.kind {
                    0 => st.inserted += s.rows,
                    1 => st.updated += s.rows,
                    _ => st.deleted += s.rows,
                }
            }
            sched_rows += n;
        }
        self.stats.rows_now = self.live.iter().map(|l| l.len() as u64).sum();
        let _ = self.conn.disconnect().await;
        Ok(self.stats)
    }
}

/// Runs the bench load until `--rows`, `--duration` or `stop`.
pub async fn run(args: BenchArgs, stop: Arc<AtomicBool>) -> Result<BenchSummary> {
    args.validate()?;
    let opts = args.opts();
    if args.reset {
        let mut c = connect(&opts).await?;
        reset(&mut c, &args.database, args.tables).await?;
        let _ = c.disconnect().await;
        return Ok(BenchSummary {
            database: args.database.clone(),
            workers: args.workers,
            ..Default::default()
        });
    }
    let mut workers = Vec::new();
    for w in 0..args.workers {
        workers.push(
            Worker::start(w, &args, &opts)
                .await
                .with_context(|| format!("starting worker {w}"))?,
        );
    }
    let budget = Arc::new(Budget {
        remaining: args.rows.map(AtomicU64::new),
        txn_counter: AtomicU64::new(0),
        stop,
    });
    let args = Arc::new(args);
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let runs = workers
        .into_iter()
        .map(|w| w.run(args.clone(), budget.clone(), deadline));
    let all = super::run_workers(&budget.stop, runs).await?;
    let mut s = BenchSummary {
        database: args.database.clone(),
        workers: args.workers,
        rate: args.rate,
        ..Default::default()
    };
    for st in all {
        add_counters!(s, st;
            transactions, large_transactions, rows, inserted, updated, deleted, retries, rows_now);
    }
    s.elapsed_s = started.elapsed().as_secs_f64();
    if s.elapsed_s > 0.0 {
        s.rows_per_s = s.rows as f64 / s.elapsed_s;
    }
    Ok(s)
}

/// `workload bench ARGS...`: `argv` without the leading `bench`.
pub async fn main(argv: Vec<String>) -> std::process::ExitCode {
    let args =
        match BenchArgs::try_parse_from(std::iter::once("workload bench".to_owned()).chain(argv)) {
            Ok(a) => a,
            Err(e) => {
                let _ = e.print();
                return std::process::ExitCode::from(2);
            }
        };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    match run(args, stop).await {
        Ok(s) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&s).expect("summary as JSON")
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("workload bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_exact() {
        let b = Budget {
            remaining: Some(AtomicU64::new(25)),
            txn_counter: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
        };
        assert_eq!(b.claim(10), 10);
        assert_eq!(b.claim(10), 10);
        assert_eq!(b.claim(10), 5);
        assert_eq!(b.claim(10), 0);
    }

    #[test]
    fn flags_parse() {
        let a = BenchArgs::try_parse_from([
            "workload bench",
            "--rows",
            "100",
            "--rate",
            "50",
            "--workers",
            "2",
        ])
        .unwrap();
        assert_eq!(a.rows, Some(100));
        a.validate().unwrap();
        let a = BenchArgs::try_parse_from(["workload bench"]).unwrap();
        assert!(a.validate().is_err());
    }
}
