//! `verify`: compares the source site's MariaDB with this site's replica, table by table, in
//! primary-key chunks, in the manner of pt-table-checksum.
//!
//! How it finds a consistent point: every chunk's source checksum is taken inside a consistent
//! snapshot whose GTID position is known exactly (`binlog_snapshot_file/position` turned into a
//! GTID position), then the replica's checksum is taken once apply's checkpoint has reached that
//! position. A chunk that still differs (the source kept changing it) is compared again from a
//! fresh snapshot, up to `--retries` times; only a difference that persists is reported, down to
//! the primary keys that differ.
//!
//! It stays cheap on a live primary: chunks of `--chunk-rows` rows by primary key, a pause of
//! `--throttle` between chunks, and one short query per chunk on each side.
//!
//! Exit status: 0 when identical, 1 on any difference, 2 when the comparison could not be done.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value as MyValue};
use serde::Serialize;

use continuum_common::db::quote_ident;
use continuum_common::request::KeyRange;
use continuum_common::{db, ConfigError, SiteConfig};
use continuum_schemas::GtidPosition;

use crate::settings::chosen_or_other_site;

/// Databases never compared.
const SYSTEM: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "continuum",
];

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{side} MariaDB {target}: {what}: {source}")]
    Db {
        side: &'static str,
        target: String,
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("the replica did not reach the source position {position} within {timeout:?} (its checkpoint is at {checkpoint}); is apply running? (continuum-consumer status)")]
    NotCaughtUp {
        position: String,
        checkpoint: String,
        timeout: Duration,
    },
    #[error("{0}")]
    Other(String),
    #[error("repair: {0}")]
    Repair(String),
    #[error("repair: {0}")]
    Request(#[from] continuum_common::request::RequestError),
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Whose database is the source (default: consumer.apply.source_site, else the other site).
    #[arg(long, value_name = "SITE")]
    pub source: Option<String>,
    /// Compare only these databases (comma-separated). Default: every non-system database on
    /// either side.
    #[arg(long, value_delimiter = ',', value_name = "DB,...")]
    pub databases: Vec<String>,
    /// Rows per chunk.
    #[arg(long, default_value_t = 1000)]
    pub chunk_rows: u64,
    /// Pause between chunks, to stay light on a live primary.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
    pub throttle: Duration,
    /// How long to wait for the replica to reach a source position.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub wait: Duration,
    /// Fresh comparisons of a chunk that differs before it is reported.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Most differing primary keys listed per chunk.
    #[arg(long, default_value_t = 20)]
    pub max_keys: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Repair what differs: queue an incremental snapshot of each differing table on the source
    /// site, for its producer (`continuum.snapshot_request`, as `continuum-producer snapshot`
    /// does); wait until it is done and applied here, then compare again. The pipeline keeps
    /// running. Needs INSERT on `continuum.snapshot_request` at the source.
    #[arg(long)]
    pub repair: bool,
    /// How long `--repair` waits for the snapshot to be done.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub repair_timeout: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub source_site: String,
    pub replica_site: String,
    pub tables: Vec<TableReport>,
    /// `db.table` present on the source only.
    pub source_only: Vec<String>,
    /// `db.table` present on the replica only.
    pub replica_only: Vec<String>,
    pub identical: bool,
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    pub chunks: u64,
    pub equal_chunks: u64,
    pub source_rows: u64,
    pub replica_rows: u64,
    pub differences: Vec<ChunkDiff>,
}

#[derive(Debug, Default, Serialize)]
pub struct ChunkDiff {
    /// Primary-key range of the chunk: after `from` (exclusive), up to `to` (inclusive).
    pub from: Option<String>,
    pub to: Option<String>,
    /// The same range as MariaDB returned its bounds (what `--repair` asks a snapshot of).
    #[serde(skip)]
    pub range: KeyRange,
    /// Rows whose contents differ.
    pub changed: Vec<String>,
    /// Rows on the source, missing from the replica.
    pub missing: Vec<String>,
    /// Rows on the replica, not on the source.
    pub extra: Vec<String>,
}

struct Side {
    name: &'static str,
    target: String,
    conn: Conn,
}

impl Side {
    fn err(&self, what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> VerifyError + '_ {
        let what = what.into();
        move |source| VerifyError::Db {
            side: self.name,
            target: self.target.clone(),
            what,
            source,
        }
    }
}

async fn connect(
    name: &'static str,
    cfg: &continuum_common::config::DatabaseConfig,
) -> Result<Side, VerifyError> {
    let target = db::describe(cfg);
    let opts = db::opts(
        cfg,
        &["SET SESSION time_zone = '+00:00'", "SET NAMES utf8mb4"],
    )?;
    let conn = Conn::new(opts).await.map_err(|source| VerifyError::Db {
        side: name,
        target: target.clone(),
        what: "connecting".into(),
        source,
    })?;
    Ok(Side { name, target, conn })
}

/// Base tables per non-system database.
async fn tables(
    side: &mut Side,
    only: &[String],
) -> Result<BTreeSet<(String, String)>, VerifyError> {
    let rows: Vec<(String, String)> = side
        .conn
        .query("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'")
        .await
        .map_err(|source| VerifyError::Db { side: side.name, target: side.target.clone(), what: "listing tables".into(), source })?;
    Ok(rows
        .into_iter()
        .filter(|(d, _)| !SYSTEM.iter().any(|s| s.eq_ignore_ascii_case(d)))
        .filter(|(d, _)| only.is_empty() || only.iter().any(|o| o == d))
        .collect())
}

/// Column names (ordinal order), primary-key columns (key order), and which columns hold
/// generated values (compared like the others: they are derived from the same data).
async fn shape(
    side: &mut Side,
    db_name: &str,
    table: &str,
) -> Result<(Vec<String>, Vec<String>), VerifyError> {
    let target = side.target.clone();
    let name = side.name;
    let e = |what: &str| {
        let what = what.to_owned();
        let target = target.clone();
        move |source| VerifyError::Db {
            side: name,
            target,
            what,
            source,
        }
    };
    let cols: Vec<String> = side
        .conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db_name, table),
        )
        .await
        .map_err(e("reading columns"))?;
    let pk: Vec<String> = side
        .conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (db_name, table),
        )
        .await
        .map_err(e("reading the primary key"))?;
    Ok((cols, pk))
}

/// SQL text of a row's checksum: CRC32 over every column's value, plus a NULL flag per column
/// (CONCAT_WS skips NULLs, so the flags tell NULL from an empty value).
fn row_crc(cols: &[String]) -> String {
    let vals: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
    let nulls: Vec<String> = cols
        .iter()
        .map(|c| format!("ISNULL({})", quote_ident(c)))
        .collect();
    format!(
        "CRC32(CONCAT_WS('#', {}, CONCAT({})))",
        vals.join(", "),
        nulls.join(", ")
    )
}

fn pk_list(pk: &[String]) -> String {
    pk.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn key_text(vals: &[MyValue]) -> String {
    vals.iter()
        .map(|v| match v {
            MyValue::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => s.to_owned(),
                Err(_) => format!(
                    "0x{}",
                    b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                ),
            },
            MyValue::NULL => "NULL".into(),
            other => other.as_sql(true),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The range condition of a chunk: `pk > from AND pk <= to` (either side open).
fn range(
    pk: &[String],
    from: &Option<Vec<MyValue>>,
    to: &Option<Vec<MyValue>>,
) -> (String, Vec<MyValue>) {
    let cols = pk_list(pk);
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let Some(f) = from {
        conds.push(format!("({cols}) > ({})", placeholders(pk.len())));
        params.extend(f.iter().cloned());
    }
    if let Some(t) = to {
        conds.push(format!("({cols}) <= ({})", placeholders(pk.len())));
        params.extend(t.iter().cloned());
    }
    let w = if conds.is_empty() {
        "1".to_string()
    } else {
        conds.join(" AND ")
    };
    (w, params)
}

/// The GTID position of a fresh consistent snapshot opened on `side`.
async fn open_snapshot(side: &mut Side) -> Result<GtidPosition, VerifyError> {
    let target = side.target.clone();
    let name = side.name;
    let e = move |what: &'static str| {
        let target = target.clone();
        move |source| VerifyError::Db {
            side: name,
            target,
            what: what.into(),
            source,
        }
    };
    let _ = side.conn.query_drop("ROLLBACK").await;
    side.conn
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(e("opening a snapshot"))?;
    let status: Vec<(String, String)> = side
        .conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(e("reading the snapshot position"))?;
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (file, pos) = (get("binlog_snapshot_file"), get("binlog_snapshot_position"));
    let gtid: Option<Option<String>> = side
        .conn
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (&file, pos.parse::<u64>().unwrap_or(0)),
        )
        .await
        .map_err(e("turning the snapshot position into a GTID position"))?;
    gtid.flatten()
        .unwrap_or_default()
        .parse()
        .map_err(|e: continuum_schemas::ParsePositionError| VerifyError::Other(e.to_string()))
}

/// Waits until the replica's checkpoint for `topic` covers `position` in the source's domains.
async fn wait_replica(
    replica: &mut Side,
    topic: &str,
    position: &GtidPosition,
    timeout: Duration,
) -> Result<(), VerifyError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let got: Result<Option<String>, _> = replica
            .conn
            .exec_first("SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = ? AND `partition` = 0", (topic,))
            .await;
        if let Ok(Some(p)) = got {
            last = p.clone();
            if let Ok(cp) = p.parse::<GtidPosition>() {
                if cp.covers(position) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(VerifyError::NotCaughtUp {
                position: position.to_string(),
                checkpoint: last,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn chunk_sum(
    side: &mut Side,
    q: &str,
    params: Vec<MyValue>,
) -> Result<(u64, u64), VerifyError> {
    let r: Option<(u64, Option<u64>)> = side
        .conn
        .exec_first(q, params)
        .await
        .map_err(side.err("checksumming a chunk"))?;
    let (n, x) = r.unwrap_or((0, None));
    Ok((n, x.unwrap_or(0)))
}

async fn row_sums(
    side: &mut Side,
    q: &str,
    params: Vec<MyValue>,
    npk: usize,
) -> Result<BTreeMap<String, u64>, VerifyError> {
    let rows: Vec<Row> = side
        .conn
        .exec(q, params)
        .await
        .map_err(side.err("reading row checksums"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let vals = r.unwrap();
            let crc = match &vals[npk] {
                MyValue::UInt(u) => *u,
                MyValue::Int(i) => *i as u64,
                MyValue::Bytes(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                _ => 0,
            };
            (key_text(&vals[..npk]), crc)
        })
        .collect())
}

/// The source site (`--source`, else `consumer.apply.source_site`, else the other site), its
/// changelog topic, and connections to its database and to this replica.
async fn sides(
    cfg: &SiteConfig,
    args: &VerifyArgs,
) -> Result<(String, String, Side, Side), VerifyError> {
    let source_site = chosen_or_other_site(
        cfg,
        args.source
            .as_ref()
            .or(cfg.consumer.apply.source_site.as_ref()),
        "verify --source",
    )?;
    let topic = cfg.topic_of(&source_site)?;
    let src = connect("source", cfg.database_of(&source_site)?).await?;
    let rep = connect("replica", &cfg.database).await?;
    Ok((source_site, topic, src, rep))
}

/// Runs the comparison.
pub async fn verify(cfg: &SiteConfig, args: &VerifyArgs) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let (source_site, topic, mut src, mut rep) = sides(cfg, args).await?;
    let mut report = Report {
        source_site: source_site.clone(),
        replica_site: cfg.site.clone(),
        ..Default::default()
    };
    let st = tables(&mut src, &args.databases).await?;
    let rt = tables(&mut rep, &args.databases).await?;
    report.source_only = st
        .difference(&rt)
        .map(|(d, t)| format!("{d}.{t}"))
        .collect();
    report.replica_only = rt
        .difference(&st)
        .map(|(d, t)| format!("{d}.{t}"))
        .collect();

    for (d, t) in st.intersection(&rt) {
        let qualified = format!("{}.{}", quote_ident(d), quote_ident(t));
        let (cols, pk) = shape(&mut src, d, t).await?;
        let (rcols, _) = shape(&mut rep, d, t).await?;
        let mut tr = TableReport {
            table: format!("{d}.{t}"),
            ..Default::default()
        };
        if cols != rcols {
            tr.differences.push(ChunkDiff {
                changed: vec![format!(
                    "columns differ: source ({}) vs replica ({})",
                    cols.join(", "),
                    rcols.join(", ")
                )],
                ..Default::default()
            });
            report.tables.push(tr);
            continue;
        }
        // Tables without a primary key are chunked as one.
        let pk = if pk.is_empty() { cols.clone() } else { pk };
        let crc = row_crc(&cols);
        let mut from: Option<Vec<MyValue>> = None;
        loop {
            // The chunk's upper bound: the chunk_rows-th key after `from`, on the source.
            let (w, p) = range(&pk, &from, &None);
            let bound_q = format!(
                "SELECT {} FROM {qualified} WHERE {w} ORDER BY {} LIMIT 1 OFFSET {}",
                pk_list(&pk),
                pk_list(&pk),
                args.chunk_rows.saturating_sub(1)
            );
            let bound: Option<Row> = src
                .conn
                .exec_first(bound_q.as_str(), p)
                .await
                .map_err(src.err("finding a chunk bound"))?;
            let to = bound.map(|r| r.unwrap());
            let (w, p) = range(&pk, &from, &to);
            let sum_q = format!("SELECT COUNT(*), BIT_XOR({crc}) FROM {qualified} WHERE {w}");
            let mut attempt = 0;
            let (equal, s_n, r_n) = loop {
                let position = open_snapshot(&mut src).await?;
                let s = chunk_sum(&mut src, &sum_q, p.clone()).await?;
                let _ = src.conn.query_drop("COMMIT").await;
                wait_replica(&mut rep, &topic, &position, args.wait).await?;
                let r = chunk_sum(&mut rep, &sum_q, p.clone()).await?;
                if s == r || attempt >= args.retries {
                    break (s == r, s.0, r.0);
                }
                attempt += 1;
            };
            tr.chunks += 1;
            tr.source_rows += s_n;
            tr.replica_rows += r_n;
            if equal {
                tr.equal_chunks += 1;
            } else {
                let rows_q = format!(
                    "SELECT {}, {crc} FROM {qualified} WHERE {w} ORDER BY {}",
                    pk_list(&pk),
                    pk_list(&pk)
                );
                let a = row_sums(&mut src, &rows_q, p.clone(), pk.len()).await?;
                let b = row_sums(&mut rep, &rows_q, p.clone(), pk.len()).await?;
                let parts = |k: &Option<Vec<MyValue>>| {
                    k.as_ref().map(|v| v.iter().map(db::key_part).collect())
                };
                let mut diff = ChunkDiff {
                    from: from.as_ref().map(|v| key_text(v)),
                    to: to.as_ref().map(|v| key_text(v)),
                    range: KeyRange {
                        from: parts(&from),
                        to: parts(&to),
                    },
                    ..Default::default()
                };
                for (k, v) in &a {
                    match b.get(k) {
                        None => diff.missing.push(k.clone()),
                        Some(x) if x != v => diff.changed.push(k.clone()),
                        _ => {}
                    }
                }
                diff.extra = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
                for l in [&mut diff.changed, &mut diff.missing, &mut diff.extra] {
                    if l.len() > args.max_keys {
                        let more = l.len() - args.max_keys;
                        l.truncate(args.max_keys);
                        l.push(format!("... and {more} more"));
                    }
                }
                tr.differences.push(diff);
            }
            if !args.throttle.is_zero() {
                tokio::time::sleep(args.throttle).await;
            }
            match to {
                Some(t) => from = Some(t),
                None => break,
            }
        }
        report.tables.push(tr);
    }
    report.identical = report.source_only.is_empty()
        && report.replica_only.is_empty()
        && report.tables.iter().all(|t| t.differences.is_empty());
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The human form of a report.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "verify: {} (source) against {} (replica)\n",
        r.source_site, r.replica_site
    );
    for t in &r.tables {
        let verdict = if t.differences.is_empty() {
            "identical"
        } else {
            "DIFFERENT"
        };
        out.push_str(&format!(
            "  {:<40} {verdict:<9}  rows {}/{}  chunks {}/{} equal\n",
            t.table, t.source_rows, t.replica_rows, t.equal_chunks, t.chunks
        ));
        for d in &t.differences {
            let range = match (&d.from, &d.to) {
                (None, None) => "whole table".to_string(),
                (f, t) => format!(
                    "keys ({}, {}]",
                    f.as_deref().unwrap_or("start"),
                    t.as_deref().unwrap_or("end")
                ),
            };
            out.push_str(&format!("    chunk {range}\n"));
            for (label, keys) in [
                ("changed", &d.changed),
                ("missing on replica", &d.missing),
                ("only on replica", &d.extra),
            ] {
                if !keys.is_empty() {
                    out.push_str(&format!("      {label}: {}\n", keys.join("; ")));
                }
            }
        }
    }
    for t in &r.source_only {
        out.push_str(&format!("  {t:<40} only on the source\n"));
    }
    for t in &r.replica_only {
        out.push_str(&format!("  {t:<40} only on the replica\n"));
    }
    out.push_str(&format!(
        "verdict: {} ({} tables, {:.1}s)\n",
        if r.identical {
            "IDENTICAL"
        } else {
            "DIFFERENT"
        },
        r.tables.len(),
        r.seconds
    ));
    out
}

/// What `--repair` can snapshot of a report: the differing tables, and why each other difference
/// cannot be repaired that way.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct RepairPlan {
    /// `db.table` of each key range to snapshot (a table once per range).
    pub tables: Vec<String>,
    /// The key range of each entry of `tables`: the chunks that differ, adjacent ones joined;
    /// a table missing on the replica whole.
    pub ranges: Vec<KeyRange>,
    pub cannot: Vec<String>,
}

impl RepairPlan {
    /// The tables, each with its number of key ranges when it is not snapshotted whole.
    pub fn describe(&self) -> String {
        let mut out: Vec<(String, usize, bool)> = Vec::new();
        for (t, r) in self.tables.iter().zip(&self.ranges) {
            match out.last_mut() {
                Some((last, n, whole)) if last == t => {
                    *n += 1;
                    *whole &= r.whole();
                }
                _ => out.push((t.clone(), 1, r.whole())),
            }
        }
        out.into_iter()
            .map(|(t, n, whole)| match (whole, n) {
                (true, _) => t,
                (false, 1) => format!("{t} (1 key range)"),
                (false, n) => format!("{t} ({n} key ranges)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The most key ranges `--repair` asks for in one table; a table that differs in more places is
/// snapshotted whole.
pub const MAX_RANGES_PER_TABLE: usize = 16;

/// `ranges` in key order with adjacent ones (one's end the next one's start) joined.
fn joined(ranges: impl Iterator<Item = KeyRange>) -> Vec<KeyRange> {
    let mut out: Vec<KeyRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.to.is_some() && last.to == r.from => last.to = r.to,
            _ => out.push(r),
        }
    }
    out
}

/// The repair of report `r`'s differences (pure).
pub fn repair_plan(r: &Report) -> RepairPlan {
    let mut plan = RepairPlan::default();
    for t in r.tables.iter().filter(|t| !t.differences.is_empty()) {
        let columns = t
            .differences
            .iter()
            .find_map(|d| d.changed.iter().find(|c| c.starts_with("columns differ")));
        match columns {
            Some(c) => plan.cannot.push(format!(
                "{}: {c}; a snapshot carries rows, not definitions: make the replica's definition the source's first",
                t.table
            )),
            None => {
                let mut ranges = joined(t.differences.iter().map(|d| d.range.clone()));
                // Every range travels in the request row and in the header of every record the
                // snapshot writes: past a few, the whole table is cheaper to carry.
                if ranges.len() > MAX_RANGES_PER_TABLE {
                    ranges = vec![KeyRange::default()];
                }
                for range in ranges {
                    plan.tables.push(t.table.clone());
                    plan.ranges.push(range);
                }
            }
        }
    }
    // Missing here: the snapshot's first chunk of it carries its definition.
    for t in &r.source_only {
        plan.tables.push(t.clone());
        plan.ranges.push(KeyRange::default());
    }
    for t in &r.replica_only {
        plan.cannot.push(format!(
            "{t}: only on the replica; drop it there if the source no longer has it"
        ));
    }
    plan
}

/// What `verify --repair` did.
#[derive(Debug, Serialize)]
pub struct Repaired {
    pub before: Report,
    pub plan: RepairPlan,
    /// The snapshot request queued on the source, and the rows its snapshot wrote.
    pub request: Option<u64>,
    pub rows: u64,
    /// The comparison after the repair.
    pub after: Option<Report>,
}

/// Queues the snapshot of `plan`'s key ranges on the source site, waits until it is done and
/// applied here; returns the request's id and the rows written.
async fn repair(
    cfg: &SiteConfig,
    args: &VerifyArgs,
    plan: &RepairPlan,
) -> Result<(u64, u64), VerifyError> {
    use continuum_common::request::{self, Ended};
    let (source_site, topic, mut src, mut rep) = sides(cfg, args).await?;
    // A table the incremental snapshot refuses (no primary key, not captured by the producer,
    // whose rules are taken to be this configuration's, as `orphans` does) is named, not tried.
    let filter = continuum_common::filter::TableFilter::new(&cfg.producer)?;
    let mut refused = Vec::new();
    let mut take = RepairPlan::default();
    let mut checked: BTreeMap<&str, bool> = BTreeMap::new();
    for (t, range) in plan.tables.iter().zip(&plan.ranges) {
        let ok = match checked.get(t.as_str()) {
            Some(ok) => *ok,
            None => {
                let why = request::check_tables(
                    &mut src.conn,
                    &src.target,
                    Some(&filter),
                    std::slice::from_ref(t),
                )
                .await?;
                refused.extend(why.iter().cloned());
                *checked.entry(t).or_insert(why.is_empty())
            }
        };
        if ok {
            take.tables.push(t.clone());
            take.ranges.push(range.clone());
        }
    }
    if take.tables.is_empty() {
        return Err(VerifyError::Repair(format!(
            "no differing table can be snapshotted: {}",
            refused.join("; ")
        )));
    }
    if !refused.is_empty() {
        eprintln!("repair: not repaired by a snapshot: {}", refused.join("; "));
    }
    let id = request::submit(
        &mut src.conn,
        &src.target,
        &topic,
        Some(&filter),
        &take.tables,
        &take.ranges,
    )
    .await?;
    eprintln!(
        "repair: snapshot request {id} queued on {source_site} for {} (for the producer of {topic}); waiting up to {}",
        take.describe(),
        humantime::format_duration(args.repair_timeout)
    );
    let rows = match request::wait(&mut src.conn, &src.target, id, args.repair_timeout).await? {
        Some(Ended::Done { rows }) => rows,
        Some(Ended::Failed { rows, error }) => {
            return Err(VerifyError::Repair(format!(
                "snapshot request {id} failed after {rows} rows: {error}"
            )))
        }
        None => {
            return Err(VerifyError::Repair(format!(
                "snapshot request {id} is not done after {}; is the producer of {topic} running? (`SELECT * FROM continuum.snapshot_request WHERE id = {id}` on the source shows its progress)",
                humantime::format_duration(args.repair_timeout)
            )))
        }
    };
    // The producer marks the request done with a write of its own after the snapshot's last
    // chunk, so a source position read now is after that chunk in the topic: once apply's
    // checkpoint covers it, every chunk is applied here.
    let position: Option<String> = src
        .conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .map_err(|source| VerifyError::Db {
            side: "source",
            target: src.target.clone(),
            what: "reading the binlog position".into(),
            source,
        })?;
    let position: GtidPosition = position
        .unwrap_or_default()
        .parse()
        .map_err(|e: continuum_schemas::ParsePositionError| VerifyError::Other(e.to_string()))?;
    eprintln!("repair: snapshot request {id} done, {rows} rows; waiting for this replica to apply it (source at {position})");
    wait_replica(&mut rep, &topic, &position, args.wait).await?;
    Ok((id, rows))
}

/// The human form of a repair, after the first comparison's (printed before the repair).
pub fn render_repaired(r: &Repaired) -> String {
    let mut out = String::new();
    if !r.plan.cannot.is_empty() {
        out.push_str("repair: cannot repair by a snapshot:\n");
        for c in &r.plan.cannot {
            out.push_str(&format!("  {c}\n"));
        }
    }
    if let Some(id) = r.request {
        out.push_str(&format!(
            "repair: snapshot request {id} of {} done ({} rows) and applied here; comparing again\n",
            r.plan.describe(),
            r.rows
        ));
    }
    if let Some(after) = &r.after {
        out.push_str(&render(after));
    }
    out
}

/// `continuum-consumer verify`: prints the report; the caller maps `identical` to the exit code.
/// With `--repair`, repairs what differs and compares again: identical is then the second
/// comparison's verdict.
pub async fn main(cfg: SiteConfig, args: VerifyArgs) -> Result<bool, VerifyError> {
    let report = verify(&cfg, &args).await?;
    if !args.repair || report.identical {
        crate::report::print(&report, args.json, render);
        return Ok(report.identical);
    }
    // The first comparison is shown before the repair starts, so a repair that fails still
    // leaves the operator what differs (with --json, the whole report comes at the end).
    if !args.json {
        print!("{}", render(&report));
    }
    let plan = repair_plan(&report);
    let mut done = Repaired {
        before: report,
        plan,
        request: None,
        rows: 0,
        after: None,
    };
    if !done.plan.tables.is_empty() {
        let (id, rows) = repair(&cfg, &args, &done.plan).await?;
        done.request = Some(id);
        done.rows = rows;
        done.after = Some(verify(&cfg, &args).await?);
    }
    let identical = done.after.as_ref().is_some_and(|a| a.identical);
    crate::report::print(&done, args.json, render_repaired);
    Ok(identical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_schemas::KeyPart;

    fn table(name: &str, differences: Vec<ChunkDiff>) -> TableReport {
        TableReport {
            table: name.into(),
            differences,
            ..Default::default()
        }
    }

    #[test]
    fn repair_snapshots_the_tables_that_differ_or_are_missing_and_names_what_it_cannot_repair() {
        let r = Report {
            tables: vec![
                table("d.same", vec![]),
                table(
                    "d.rows",
                    vec![ChunkDiff {
                        missing: vec!["id=3".into()],
                        extra: vec!["id=9".into()],
                        ..Default::default()
                    }],
                ),
                table(
                    "d.cols",
                    vec![ChunkDiff {
                        changed: vec!["columns differ: source (a, b) vs replica (a)".into()],
                        ..Default::default()
                    }],
                ),
            ],
            source_only: vec!["d.new".into()],
            replica_only: vec!["d.old".into()],
            ..Default::default()
        };
        let plan = repair_plan(&r);
        assert_eq!(plan.tables, ["d.rows", "d.new"]);
        assert!(plan.ranges.iter().all(KeyRange::whole), "{:?}", plan.ranges);
        assert_eq!(plan.cannot.len(), 2, "{:?}", plan.cannot);
        assert!(
            plan.cannot[0].starts_with("d.cols: columns differ"),
            "{:?}",
            plan.cannot
        );
        assert!(plan.cannot[1].starts_with("d.old: only on the replica"));
        assert_eq!(repair_plan(&Report::default()), RepairPlan::default());
    }

    #[test]
    fn repair_asks_for_the_key_ranges_that_differ_with_adjacent_ones_joined() {
        let key = |k: i64| Some(vec![KeyPart::Int(k)]);
        let chunk = |from: Option<Vec<KeyPart>>, to: Option<Vec<KeyPart>>| ChunkDiff {
            changed: vec!["id=1".into()],
            range: KeyRange { from, to },
            ..Default::default()
        };
        let r = Report {
            tables: vec![table(
                "d.t",
                vec![
                    chunk(None, key(100)),
                    chunk(key(100), key(200)),
                    chunk(key(500), key(600)),
                    chunk(key(900), None),
                ],
            )],
            source_only: vec!["d.new".into()],
            ..Default::default()
        };
        let plan = repair_plan(&r);
        assert_eq!(plan.tables, ["d.t", "d.t", "d.t", "d.new"]);
        assert_eq!(
            plan.ranges,
            [
                KeyRange {
                    from: None,
                    to: key(200)
                },
                KeyRange {
                    from: key(500),
                    to: key(600)
                },
                KeyRange {
                    from: key(900),
                    to: None
                },
                KeyRange::default(),
            ]
        );
        assert_eq!(plan.describe(), "d.t (3 key ranges), d.new");

        // Damage in more places than ranges are carried for: the whole table.
        let scattered = (0..=MAX_RANGES_PER_TABLE as i64)
            .map(|i| chunk(key(i * 10), key(i * 10 + 5)))
            .collect();
        let plan = repair_plan(&Report {
            tables: vec![table("d.t", scattered)],
            ..Default::default()
        });
        assert_eq!(plan.tables, ["d.t"]);
        assert_eq!(plan.ranges, [KeyRange::default()]);
    }
}
