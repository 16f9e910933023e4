//! The workload generator: a realistic, checkable write load on a MariaDB primary, for the
//! demo, the pipeline and chaos suites and the benchmark. The `workload` binary is a thin
//! front end to [`run_until`]; suites call the library directly.
//!
//! In each of `--databases` databases (`<prefix>_0`, `<prefix>_1`, ...) it creates, if missing:
//!
//! - `all_types`: an integer primary key and one nullable column of every MariaDB type
//!   Continuum carries (the mapping table of `continuum_schemas`), written with random and
//!   edge values ([`values`]);
//! - `customers` -> `orders` -> `order_lines`, a foreign-key chain (lines `ON DELETE CASCADE`),
//!   written parent first;
//! - `users`, with a UNIQUE `email` that transactions swap between two users (through a
//!   temporary value) and a primary key that transactions change;
//! - `accounts`, 100 accounts of 1000.00 each, between which transfers move money: the sum over
//!   all databases never changes ([`invariant_sum`], [`expected_total`]);
//! - `ddl_*` tables, reserved for the DDL the stream carries (`--ddl`): ADD, DROP and MODIFY
//!   COLUMN, CREATE, DROP and RENAME TABLE;
//! - `workload_meta`, which records that the accounts were seeded.
//!
//! The transaction mix is drawn from `--seed`: small transactions (1–20 rows over 1–3
//! tables, now and then across databases, inserts, updates and deletes on every table),
//! bank transfers, e-mail swaps, primary-key updates, accounts opened and closed, a large
//! transaction (`--large-rows` rows in statements of 1000 rows) every `--large-every`, and a
//! DDL statement every `--ddl-every`. With one worker and `--transactions`, the same seed on
//! fresh databases produces the same rows, byte for byte.
//!
//! Each committed transaction is one JSON line in `--log` ([`LogEntry`]): its GTID
//! (`@@last_gtid`), the rows it changed per table, the commit time. Rows deleted by
//! `ON DELETE CASCADE` are listed apart (`cascaded`): InnoDB deletes them below the binlog, so
//! they are not in it.
//!
//! Deadlocks and lock wait timeouts are retried with the same statements; a lost connection
//! is re-established (within `--reconnect-timeout`) and the generator reloads what it knows
//! from the database, so a transaction whose commit was cut off counts as whatever the server
//! decided. Every transaction is explicit: none is ever left half-applied.

/// Adds each named counter of `$from` to the same-named one of `$to` (summing the workers'
/// counts into a run's).
macro_rules! add_counters {
    ($to:expr, $from:expr; $($field:ident),+ $(,)?) => {
        $($to.$field += $from.$field;)+
    };
}

pub mod bench;
pub mod model;
pub mod values;
mod worker;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, Parser};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use serde::{Deserialize, Serialize};

use model::{ACCOUNTS_PER_DB, OPENING_BALANCE_CENTS};
use values::{all_types_columns, ident};

/// Settings of one run: the `workload` binary's flags.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "workload",
    about = "Write a realistic, checkable workload to a MariaDB primary (the SF site by default)",
    long_about = "Write a realistic, checkable workload to a MariaDB primary (the SF site of the local \
                  stack by default: . .stack/env first). Stops after --transactions, after --duration, \
                  or on Ctrl-C / SIGTERM (after the current transaction), then prints a summary."
)]
pub struct Config {
    /// Transactions per second over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long to run (humantime: 30s, 5m, 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How many transactions to run (DDL statements count as transactions).
    #[arg(long)]
    pub transactions: Option<u64>,
    /// Seed of every choice the generator makes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of databases, named `<prefix>_0` ... `<prefix>_<N-1>`.
    #[arg(long, default_value_t = 3)]
    pub databases: usize,
    /// Prefix of the database names (letters, digits, `_`).
    #[arg(long, default_value = "wl")]
    pub prefix: String,
    /// Every Nth transaction is large; 0 = never.
    #[arg(long, default_value_t = 200)]
    pub large_every: u64,
    /// Rows of a large transaction (1 to 1,000,000; written 1000 rows per statement).
    #[arg(long, default_value_t = 10_000)]
    pub large_rows: usize,
    /// DDL in the stream, on the `ddl_*` tables: on or off.
    #[arg(long, default_value = "on", value_parser = parse_on_off, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub ddl: bool,
    /// One DDL statement every N transactions (when --ddl is on).
    #[arg(long, default_value_t = 100)]
    pub ddl_every: u64,
    /// Let some order deletes rely on ON DELETE CASCADE to remove the lines (on), or always
    /// delete the lines explicitly first (off). Cascaded deletes are not in the binlog.
    #[arg(long, default_value = "on", value_parser = parse_on_off, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "on")]
    pub cascade: bool,
    /// Concurrent connections. Each owns a disjoint part of every table; bank transfers cross
    /// between them. Only one worker is deterministic.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[command(flatten)]
    pub login: Login,
    /// Connection URL (mysql://user:password@host:port), instead of --host/--port/--user/--password.
    #[arg(long, env = "WORKLOAD_DSN", hide_env_values = true)]
    pub dsn: Option<String>,
    /// Append one JSON line per committed transaction to this file.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Create the databases and tables (idempotently), then exit.
    #[arg(long)]
    pub setup_only: bool,
    /// The session's innodb_lock_wait_timeout, in seconds.
    #[arg(long, default_value_t = 10)]
    pub lock_wait_timeout: u32,
    /// Attempts per transaction on deadlocks and lock wait timeouts before giving up.
    #[arg(long, default_value_t = 100)]
    pub max_retries: u32,
    /// How long to keep trying to reconnect after losing the connection.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    pub reconnect_timeout: Duration,
    /// Once a database holds more rows than this, large transactions delete.
    #[arg(long, default_value_t = 200_000)]
    pub table_cap: usize,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

impl Default for Config {
    /// The binary's defaults (reading `SF_DB_*` from the environment).
    fn default() -> Config {
        Config::parse_from(["workload"])
    }
}

impl Config {
    /// The names of the databases the workload writes.
    pub fn database_names(&self) -> Vec<String> {
        database_names(&self.prefix, self.databases)
    }

    /// Where it connects, for messages (no password).
    pub fn target(&self) -> String {
        match &self.dsn {
            Some(d) => match Opts::from_url(d) {
                Ok(o) => format!("{}:{}", o.ip_or_hostname(), o.tcp_port()),
                Err(_) => "the --dsn URL".to_owned(),
            },
            None => format!("{}:{}", self.login.host, self.login.port),
        }
    }

    /// The sum of all balances, in cents, that [`invariant_sum`] must find.
    pub fn expected_total(&self) -> i128 {
        expected_total(self.databases)
    }

    pub fn validate(&self) -> Result<()> {
        if !plain_name(&self.prefix, 48) {
            bail!(
                "--prefix {:?}: use 1 to 48 letters, digits or underscores",
                self.prefix
            );
        }
        if self.databases == 0 || self.databases > 100 {
            bail!("--databases {}: use 1 to 100", self.databases);
        }
        check_workers(self.workers)?;
        if self.large_rows == 0 || self.large_rows > 1_000_000 {
            bail!("--large-rows {}: use 1 to 1000000", self.large_rows);
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!(
                "--rate {}: use a number of transactions per second, 0 for as fast as possible",
                self.rate
            );
        }
        if self.lock_wait_timeout == 0 {
            bail!("--lock-wait-timeout must be at least 1 second");
        }
        Ok(())
    }

    /// Connection options.
    pub fn opts(&self) -> Result<Opts> {
        if let Some(d) = &self.dsn {
            return Opts::from_url(d).map_err(|e| anyhow!("--dsn: {e}"));
        }
        Ok(self.login.opts())
    }
}

/// The MariaDB login of both generators (the default workload and `workload bench`): an admin
/// of SF, from `.stack/env`'s `SF_DB_*`, or flags.
#[derive(Clone, Debug, clap::Args)]
pub struct Login {
    /// MariaDB host.
    #[arg(long, env = "SF_DB_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// MariaDB port.
    #[arg(long, env = "SF_DB_PORT", default_value_t = 3307)]
    pub port: u16,
    /// MariaDB user (one that may create databases and tables).
    #[arg(long, env = "SF_DB_ADMIN_USER", default_value = "root")]
    pub user: String,
    /// MariaDB password.
    #[arg(
        long,
        env = "SF_DB_ADMIN_PASSWORD",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub password: String,
}

impl Login {
    /// Connection options, with the stack's TLS.
    pub fn opts(&self) -> Opts {
        crate::tcp_login(&self.host, self.port, &self.user, &self.password).into()
    }
}

/// Whether `s` is 1 to `max` ASCII letters, digits or underscores: a name the generators
/// put in SQL unquoted-safe (a database name or its prefix).
fn plain_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `--workers`: 1 to 64 connections.
fn check_workers(n: usize) -> Result<()> {
    if n == 0 || n > 64 {
        bail!("--workers {n}: use 1 to 64");
    }
    Ok(())
}

/// Runs each worker's future on its own task, to the end. The first to fail sets `stop`, so
/// the others wind down; its error (or a panic) is returned once all have ended, else every
/// worker's result in order.
async fn run_workers<T: Send + 'static>(
    stop: &Arc<AtomicBool>,
    runs: impl IntoIterator<Item = impl std::future::Future<Output = Result<T>> + Send + 'static>,
) -> Result<Vec<T>> {
    let handles: Vec<_> = runs
        .into_iter()
        .map(|run| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let r = run.await;
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                r
            })
        })
        .collect();
    let mut first_err = None;
    let mut all = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(st)) => all.push(st),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow!("a worker panicked: {e}"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(all),
    }
}

/// `<prefix>_0` ... `<prefix>_<n-1>`.
pub fn database_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}_{i}")).collect()
}

/// The sum of all balances over `databases` databases, in cents: 100 accounts of 1000.00
/// each per database.
pub fn expected_total(databases: usize) -> i128 {
    databases as i128 * ACCOUNTS_PER_DB as i128 * OPENING_BALANCE_CENTS
}

/// Cents as a decimal amount: `123456` -> `1234.56`.
pub fn format_cents(c: i128) -> String {
    format!(
        "{}{}.{:02}",
        if c < 0 { "-" } else { "" },
        c.abs() / 100,
        c.abs() % 100
    )
}

/// The sum of `accounts.balance` over the workload's databases, in cents, read in one
/// statement (one consistent snapshot). Errors if a database or table is missing.
pub async fn invariant_sum(conn: &mut Conn, prefix: &str, databases: usize) -> Result<i128> {
    let parts: Vec<String> = database_names(prefix, databases)
        .iter()
        .map(|db| {
            format!(
                "SELECT COALESCE(SUM(balance), 0) AS s FROM {}.accounts",
                ident(db)
            )
        })
        .collect();
    let sql = format!(
        "SELECT CAST(SUM(s) * 100 AS DECIMAL(65,0)) FROM ({}) AS t",
        parts.join(" UNION ALL ")
    );
    let v: Option<String> = conn
        .query_first(&sql)
        .await
        .with_context(|| format!("summing the balances of {prefix}_*.accounts"))?;
    let v = v.ok_or_else(|| anyhow!("summing the balances: no row"))?;
    v.parse::<i128>()
        .with_context(|| format!("summing the balances: {v:?} is not a number"))
}

/// Per base table of `db`: (rows, `CHECKSUM TABLE` value). Not one snapshot across tables:
/// compare a source and a replica once both are quiet (or caught up to the same position).
pub async fn checksum_tables(conn: &mut Conn, db: &str) -> Result<BTreeMap<String, (u64, u64)>> {
    let tables: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .with_context(|| format!("listing the tables of {db}"))?;
    let mut out = BTreeMap::new();
    for t in tables {
        let q = format!("{}.{}", ident(db), ident(&t));
        let rows: u64 = conn
            .query_first(format!("SELECT COUNT(*) FROM {q}"))
            .await
            .with_context(|| format!("counting {db}.{t}"))?
            .unwrap_or(0);
        let sum: Option<(String, Option<u64>)> = conn
            .query_first(format!("CHECKSUM TABLE {q}"))
            .await
            .with_context(|| format!("CHECKSUM TABLE {db}.{t}"))?;
        // No checksum: the table was dropped in between.
        if let Some((_, Some(c))) = sum {
            out.insert(t, (rows, c));
        }
    }
    Ok(out)
}

/// One line of `--log`: one committed transaction (or DDL statement).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    /// Order in which this run's workers logged their commits (from 0). With one worker,
    /// commit order; with several, sort by the GTID's sequence number for commit order.
    pub n: u64,
    pub worker: usize,
    /// `small`, `large`, `transfer`, `swap`, `pk_update`, `account` or `ddl`.
    pub kind: String,
    /// `@@last_gtid` after the commit: `domain-server-seq`.
    pub gtid: String,
    /// Rows changed per `db.table` (the row events the binlog holds for it).
    pub tables: BTreeMap<String, u64>,
    /// Sum of `tables`.
    pub rows: u64,
    /// Rows deleted by `ON DELETE CASCADE`, per `db.table`: changed, but not in the binlog.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cascaded: BTreeMap<String, u64>,
    /// The statement, for DDL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddl: Option<String>,
    /// 1, or more when deadlocks or lock wait timeouts were retried.
    pub attempts: u32,
    /// When COMMIT returned (RFC 3339, UTC, microseconds).
    pub committed_at: String,
    /// The same, in microseconds since the epoch.
    pub commit_us: i64,
}

impl LogEntry {
    /// The GTID as (domain, server id, sequence number).
    pub fn gtid_parts(&self) -> Option<(u32, u32, u64)> {
        let mut it = self.gtid.split('-');
        let d = it.next()?.parse().ok()?;
        let s = it.next()?.parse().ok()?;
        let n = it.next()?.parse().ok()?;
        it.next().is_none().then_some((d, s, n))
    }
}

/// Reads a `--log` file.
pub fn read_log(path: &std::path::Path) -> Result<Vec<LogEntry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// Row changes of one table over the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TableStats {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Deleted by `ON DELETE CASCADE` (not in the binlog).
    pub cascaded: u64,
    /// Rows the table holds at the end, as the generator knows them.
    pub rows: Option<u64>,
}

/// What the workers count as they commit: per worker, then summed over the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Committed transactions, DDL statements included.
    pub transactions: u64,
    pub ddl: u64,
    /// Transactions that changed nothing (so have no GTID and are not logged).
    pub empty: u64,
    /// Row changes (binlog row events), cascaded deletes excluded.
    pub rows: u64,
    pub cascaded: u64,
    pub retries: u64,
    pub reconnects: u64,
    /// Cross-worker transfers rolled back because the other account was closed.
    pub skipped: u64,
    /// Committed transactions per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Per `db.table` (`rows` is filled in at the end, not counted).
    pub tables: BTreeMap<String, TableStats>,
}

impl Counts {
    /// Adds another worker's counts.
    fn add(&mut self, o: Counts) {
        add_counters!(self, o;
            transactions, ddl, empty, rows, cascaded, retries, reconnects, skipped);
        for (k, v) in o.kinds {
            *self.kinds.entry(k).or_default() += v;
        }
        for (t, s) in o.tables {
            let e = self.tables.entry(t).or_default();
            add_counters!(e, s; inserted, updated, deleted, cascaded);
        }
    }
}

/// What a run did (its JSON has the counts' fields at the top level).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// The run's seed and worker count, as given.
    pub seed: u64,
    pub workers: usize,
    /// The databases written, by name.
    pub databases: Vec<String>,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub throughput: Throughput,
    #[serde(flatten)]
    pub gtids: GtidRange,
    #[serde(flatten)]
    pub bank: BankCheck,
}

/// How fast a run went (its fields are at the top level of the summary's JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Seconds from the workers' start (tables loaded) to the last one's end.
    pub elapsed_s: f64,
    /// Committed transactions and row changes per second over `elapsed_s`.
    pub tps: f64,
    pub rows_per_s: f64,
}

impl Throughput {
    /// `counts` over `elapsed_s` seconds (no rates for a run that took no time).
    fn over(elapsed_s: f64, counts: &Counts) -> Throughput {
        let per_s = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        Throughput {
            elapsed_s,
            tps: per_s(counts.transactions),
            rows_per_s: per_s(counts.rows),
        }
    }
}

/// The lowest and highest GTID a run committed (by sequence number), if any (at the top level
/// of the summary's JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GtidRange {
    pub first_gtid: Option<String>,
    pub last_gtid: Option<String>,
}

/// The bank invariant at the end of a run (at the top level of the summary's JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BankCheck {
    /// Sum of all balances at the end, and what it must be.
    pub balance_total: String,
    pub balance_expected: String,
    /// Whether every database's balances add up to what they must (money moves, never appears).
    pub invariant_ok: bool,
}

impl BankCheck {
    /// The check of a sum of balances, `total` cents, against what it must be, `expected`.
    fn of(total: i128, expected: i128) -> BankCheck {
        BankCheck {
            balance_total: format_cents(total),
            balance_expected: format_cents(expected),
            invariant_ok: total == expected,
        }
    }
}

impl Summary {
    /// The human-readable report.
    pub fn human(&self) -> String {
        let (c, t) = (&self.counts, &self.throughput);
        let mut s = String::new();
        s.push_str(&format!(
            "workload: {} transactions ({} DDL) in {:.1} s = {:.1}/s; {} row changes = {:.0} rows/s",
            c.transactions, c.ddl, t.elapsed_s, t.tps, c.rows, t.rows_per_s
        ));
        if c.cascaded > 0 {
            s.push_str(&format!(
                " (+{} cascaded deletes, not in the binlog)",
                c.cascaded
            ));
        }
        s.push('\n');
        s.push_str(&format!(
            "  seed {}, {} worker(s), databases {}; retries {}, reconnects {}, skipped {}, empty {}\n",
            self.seed,
            self.workers,
            self.databases.join(" "),
            c.retries,
            c.reconnects,
            c.skipped,
            c.empty
        ));
        if let (Some(a), Some(b)) = (&self.gtids.first_gtid, &self.gtids.last_gtid) {
            s.push_str(&format!("  GTIDs {a} .. {b}\n"));
        }
        let kinds: Vec<String> = c.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s.push_str(&format!("  kinds: {}\n", kinds.join(", ")));
        let w = c.tables.keys().map(String::len).max().unwrap_or(5).max(5);
        s.push_str(&format!(
            "  {:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "table", "inserted", "updated", "deleted", "cascaded", "rows"
        ));
        for (t, st) in &c.tables {
            s.push_str(&format!(
                "  {t:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                st.inserted,
                st.updated,
                st.deleted,
                st.cascaded,
                st.rows.map_or("-".to_owned(), |r| r.to_string())
            ));
        }
        s.push_str(&format!(
            "  bank total {} (expected {}): {}\n",
            self.bank.balance_total,
            self.bank.balance_expected,
            if self.bank.invariant_ok {
                "ok"
            } else {
                "VIOLATED"
            }
        ));
        s
    }
}

/// State the workers share: the log and the stop flag.
pub(crate) struct Shared {
    log: Mutex<Option<BufWriter<File>>>,
    seq: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl Shared {
    fn log(&self, mut e: LogEntry) -> Result<()> {
        let mut g = self.log.lock().unwrap();
        e.n = self.seq.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = g.as_mut() {
            let line = serde_json::to_string(&e)?;
            w.write_all(line.as_bytes())
                .and_then(|_| w.write_all(b"\n"))
                .and_then(|_| w.flush())
                .context("writing the --log file")?;
        }
        Ok(())
    }
}

/// The session settings of every workload connection: an explicit, strict `sql_mode` that
/// still allows zero dates (so the edge values go in as written), UTC, utf8mb4.
pub const SQL_MODE: &str = "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";

pub(crate) async fn connect(opts: &Opts, cfg: &Config) -> Result<Conn> {
    let mut c = Conn::new(opts.clone())
        .await
        .with_context(|| format!("connecting to MariaDB at {}", cfg.target()))?;
    c.query_drop("SET NAMES utf8mb4").await?;
    c.query_drop(format!(
        "SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00', foreign_key_checks = 1, innodb_lock_wait_timeout = {}",
        cfg.lock_wait_timeout
    ))
    .await
    .context("setting the session")?;
    Ok(c)
}

fn table_ddl() -> Vec<(&'static str, String)> {
    let cols: Vec<String> = all_types_columns()
        .iter()
        .map(|(n, ty, _)| format!("{} {ty} NULL", ident(n)))
        .collect();
    let opts = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
    vec![
        ("workload_meta", format!("(name VARCHAR(64) NOT NULL PRIMARY KEY, value VARCHAR(255) NOT NULL) {opts}")),
        ("all_types", format!("(id BIGINT NOT NULL PRIMARY KEY, {}) {opts}", cols.join(", "))),
        (
            "customers",
            format!("(id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(190) NOT NULL, country CHAR(2) NOT NULL, created_at DATETIME(6) NOT NULL, KEY ix_customers_email (email)) {opts}"),
        ),
        (
            "orders",
            format!(
                "(id BIGINT NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, status ENUM('new','paid','shipped','cancelled') NOT NULL, total DECIMAL(14,2) NOT NULL, created_at DATETIME(6) NOT NULL, \
                 KEY ix_orders_customer (customer_id), CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)) {opts}"
            ),
        ),
        (
            "order_lines",
            format!(
                "(id BIGINT NOT NULL PRIMARY KEY, order_id BIGINT NOT NULL, sku VARCHAR(32) NOT NULL, qty INT NOT NULL, price DECIMAL(12,2) NOT NULL, \
                 KEY ix_lines_order (order_id), CONSTRAINT fk_lines_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE) {opts}"
            ),
        ),
        (
            "users",
            format!("(id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(190) NOT NULL, name VARCHAR(100) NOT NULL, updated_at DATETIME(6) NOT NULL, UNIQUE KEY uk_users_email (email)) {opts}"),
        ),
        ("accounts", format!("(id BIGINT NOT NULL PRIMARY KEY, balance DECIMAL(18,2) NOT NULL) {opts}")),
    ]
}

/// The database named `?`, if it exists.
const DATABASE_NAMED: &str =
    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?";

/// The tables of the database `?`.
const TABLES_OF: &str = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?";

/// Creates what is missing: the databases, their tables, the seeded accounts, and (with
/// `--ddl`) a first `ddl_*` table. Touches nothing that exists, so running it again writes
/// nothing to the binlog.
pub async fn setup(conn: &mut Conn, cfg: &Config) -> Result<()> {
    for db in cfg.database_names() {
        let ctx = || format!("setting up database {db}");
        let exists: Option<String> = conn
            .exec_first(DATABASE_NAMED, (&db,))
            .await
            .with_context(ctx)?;
        if exists.is_none() {
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                ident(&db)
            ))
            .await
            .with_context(ctx)?;
        }
        let have: Vec<String> = conn.exec(TABLES_OF, (&db,)).await.with_context(ctx)?;
        for (t, body) in table_ddl() {
            if !have.iter().any(|h| h == t) {
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {}.{} {body}",
                    ident(&db),
                    ident(t)
                ))
                .await
                .with_context(|| format!("creating {db}.{t}"))?;
            }
        }
        if cfg.ddl && !have.iter().any(|h| h.starts_with("ddl_")) {
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {}.ddl_0 (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(32) NULL, n INT NULL) DEFAULT CHARSET=utf8mb4",
                ident(&db)
            ))
            .await
            .with_context(|| format!("creating {db}.ddl_0"))?;
        }
        // Seed the accounts once, in the same transaction as the marker that says so.
        conn.query_drop("START TRANSACTION")
            .await
            .with_context(ctx)?;
        conn.query_drop(format!(
            "INSERT IGNORE INTO {}.workload_meta (name, value) VALUES ('accounts_seeded', '{ACCOUNTS_PER_DB} x {}')",
            ident(&db),
            format_cents(OPENING_BALANCE_CENTS)
        ))
        .await
        .with_context(ctx)?;
        if conn.affected_rows() == 1 {
            let vals: Vec<String> = (1..=ACCOUNTS_PER_DB)
                .map(|i| format!("({i}, {})", format_cents(OPENING_BALANCE_CENTS)))
                .collect();
            conn.query_drop(format!(
                "INSERT INTO {}.accounts (id, balance) VALUES {}",
                ident(&db),
                vals.join(",")
            ))
            .await
            .with_context(|| {
                format!("seeding {db}.accounts (does it hold rows the workload did not write?)")
            })?;
        }
        conn.query_drop("COMMIT").await.with_context(ctx)?;
    }
    Ok(())
}

/// [`run_until`] without an external stop.
pub async fn run(cfg: &Config) -> Result<Summary> {
    run_until(cfg, Arc::new(AtomicBool::new(false))).await
}

/// Sets up, then runs the workload until `--transactions`, `--duration` or `stop` (checked
/// between transactions), and returns the summary. Without `--transactions` and `--duration`
/// it runs until `stop`.
pub async fn run_until(cfg: &Config, stop: Arc<AtomicBool>) -> Result<Summary> {
    cfg.validate()?;
    let opts = cfg.opts()?;
    let mut admin = connect(&opts, cfg).await?;
    setup(&mut admin, cfg).await?;
    let mut summary = Summary {
        seed: cfg.seed,
        workers: cfg.workers,
        databases: cfg.database_names(),
        ..Summary::default()
    };
    if cfg.setup_only {
        let total = invariant_sum(&mut admin, &cfg.prefix, cfg.databases).await?;
        summary.bank = BankCheck::of(total, cfg.expected_total());
        let _ = admin.disconnect().await;
        return Ok(summary);
    }
    let log = match &cfg.log {
        Some(p) => Some(BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening --log {}", p.display()))?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        log: Mutex::new(log),
        seq: AtomicU64::new(0),
        stop: stop.clone(),
    });
    let cfg_arc = Arc::new(cfg.clone());

    // Every worker loads its part of the tables before the clock starts.
    let mut workers = Vec::new();
    for w in 0..cfg.workers {
        workers.push(
            worker::Worker::start(w, cfg_arc.clone(), opts.clone(), shared.clone())
                .await
                .with_context(|| format!("starting worker {w}"))?,
        );
    }
    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let n = cfg.workers as u64;
    let runs = workers.into_iter().map(|w| {
        let quota = cfg
            .transactions
            .map(|t| t / n + u64::from((w.idx as u64) < t % n));
        let rate = cfg.rate / n as f64;
        w.run(quota, deadline, rate)
    });
    let all = run_workers(&stop, runs).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut first: Option<(u64, String)> = None;
    let mut last: Option<(u64, String)> = None;
    for st in all {
        summary.counts.add(st.counts);
        for (t, r) in st.rows_now {
            let e = summary.counts.tables.entry(t).or_default();
            e.rows = Some(e.rows.unwrap_or(0) + r);
        }
        if let Some(f) = st.first_gtid {
            if first.as_ref().is_none_or(|x| f.0 < x.0) {
                first = Some(f);
            }
        }
        if let Some(l) = st.last_gtid {
            if last.as_ref().is_none_or(|x| l.0 > x.0) {
                last = Some(l);
            }
        }
    }
    summary.gtids = GtidRange {
        first_gtid: first.map(|x| x.1),
        last_gtid: last.map(|x| x.1),
    };
    summary.throughput = Throughput::over(elapsed, &summary.counts);
    // The admin session may have idled out during a long run.
    let total = match invariant_sum(&mut admin, &cfg.prefix, cfg.databases).await {
        Ok(t) => t,
        Err(_) => {
            let mut c = connect(&opts, cfg).await?;
            invariant_sum(&mut c, &cfg.prefix, cfg.databases).await?
        }
    };
    summary.bank = BankCheck::of(total, cfg.expected_total());
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let c = Config::try_parse_from([
            "workload",
            "--rate",
            "50",
            "--duration",
            "30s",
            "--seed",
            "7",
            "--databases",
            "2",
            "--prefix",
            "t1",
            "--large-every",
            "10",
            "--large-rows",
            "100000",
            "--ddl",
            "off",
            "--log",
            "/tmp/x.jsonl",
            "--json",
            "--host",
            "h",
            "--port",
            "1",
            "--user",
            "u",
            "--password",
            "p",
        ])
        .unwrap();
        assert_eq!(c.duration, Some(Duration::from_secs(30)));
        assert!(!c.ddl);
        assert!(c.cascade);
        assert_eq!(c.database_names(), vec!["t1_0", "t1_1"]);
        c.validate().unwrap();
        let c = Config::try_parse_from(["workload", "--ddl", "--transactions", "5"]).unwrap();
        assert!(c.ddl);
        assert_eq!(c.transactions, Some(5));
        assert!(Config::try_parse_from(["workload", "--ddl", "maybe"]).is_err());
        let bad = Config {
            prefix: "a-b".into(),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn money() {
        assert_eq!(format_cents(123456), "1234.56");
        assert_eq!(format_cents(-5), "-0.05");
        assert_eq!(expected_total(3), 3 * 100 * 100_000);
    }

    /// The summary's JSON (`--json`; the bench and the docs read it): the field names and their
    /// order, as written and read back.
    #[test]
    fn summary_json_round_trips_with_its_field_names() {
        let text = concat!(
            r#"{"seed":7,"workers":2,"databases":["w_0"],"#,
            r#""transactions":10,"ddl":1,"empty":0,"rows":40,"cascaded":2,"retries":1,"#,
            r#""reconnects":0,"skipped":0,"kinds":{"small":9},"tables":{"w_0.accounts":"#,
            r#"{"inserted":1,"updated":2,"deleted":0,"cascaded":0,"rows":100}},"#,
            r#""elapsed_s":2.5,"tps":4.0,"rows_per_s":16.0,"first_gtid":"1-1-5","#,
            r#""last_gtid":"1-1-14","balance_total":"100000.00","#,
            r#""balance_expected":"100000.00","invariant_ok":true}"#
        );
        let s: Summary = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), text);
    }

    #[test]
    fn log_entry_round_trips() {
        let e = LogEntry {
            n: 3,
            worker: 0,
            kind: "ddl".into(),
            gtid: "1-1-42".into(),
            tables: BTreeMap::new(),
            rows: 0,
            cascaded: BTreeMap::new(),
            ddl: Some("DROP TABLE x".into()),
            attempts: 1,
            committed_at: "2025-01-01T00:00:00.000000Z".into(),
            commit_us: 1,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains("cascaded"));
        let back: LogEntry = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.gtid_parts(), Some((1, 1, 42)));
    }
}
