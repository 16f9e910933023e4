//! Incremental snapshots: given tables read in primary-key chunks while the binlog streams, with
//! no long transaction, no lock and no write to the source; resumable at the next chunk.
//!
//! ## The algorithm
//! Each chunk is read by a short `START TRANSACTION WITH CONSISTENT SNAPSHOT` holding one keyset
//! query (`WHERE (pk) > (last key) ORDER BY pk LIMIT n`). MariaDB gives the binlog coordinates
//! that view is consistent with (`binlog_snapshot_file`/`binlog_snapshot_position`): the end of
//! the last transaction it sees, call it `P`. The chunk waits in memory until the binlog reader
//! stands exactly at `P` ([`crate::boundary`]: every transaction that ends at or before `P`
//! handled, none after), and is written into the topic there, row by row as snapshot reads
//! (`chunk:<id>:<index>:more:<position>`), then its [`ChunkEnd`] with the chunk's key range
//! (`chunk:<id>:<records>:last:<position>`), then streaming goes on. A table's first chunk
//! starts with its definition (`CREATE DATABASE/TABLE IF NOT EXISTS`, as the consistent
//! snapshot carries), so a replica that lacks the table gets it. If the reader is
//! already past `P` when it looks (it can receive a transaction from the binlog before the
//! engine makes it visible), the chunk is dropped and read again.
//!
//! ## Why the topic then equals the source
//! Fold the topic in order into a table: a transaction's changes as they come, a chunk's rows as
//! `REPLACE`s (what apply does). Claim: after the chunk at `P`, every key of the chunk's range
//! holds its value at `P`, and the transactions that follow keep it right. The transactions
//! before the chunk in the topic are exactly those that end at or before `P` (the reader stood at
//! `P`), and the chunk's rows are the rows of its key range as of `P`, the same consistent view.
//! So after the chunk, a key the chunk holds has its value at `P`; the transactions after `P`
//! come after the chunk in the topic and change it from there, as they changed it at the source.
//! A key that no longer exists at `P` is not in the chunk: the stream's delete of it came before
//! (it happened before `P`). A row that something other than the topic put on the replica is
//! deleted at the chunk's end: the key range it names (after the previous chunk's last key, up
//! to this chunk's last key, open at the table's ends) held exactly the chunk's rows at `P`, in
//! the same view, so every other key of the range is one the source did not have. By induction
//! over chunks, whose ranges cover each table with no gap, once the last chunk is written every
//! row of every table is right.
//!
//! This differs from DBLog's watermarks (the wording), which read `@@gtid_binlog_pos`
//! before and after a plain `SELECT` and drop from the chunk the keys the binlog changed in
//! between: MariaDB advances `gtid_binlog_pos` when a transaction is written to the binlog,
//! before the engine commits it, so a transaction inside the low watermark can still be
//! invisible to the `SELECT`, and its change would be overwritten by the chunk's older row. The
//! consistent snapshot's coordinates are taken under the lock that orders engine commits, so
//! they name exactly what the view holds, and no key needs dropping.
//!
//! ## Progress, and resuming
//! While a snapshot runs, every record the producer writes carries a `continuum.snapshot` header
//! with its [`Progress`]: the snapshot's id, the tables still to read (the current one first),
//! for a repair their key ranges, the last key written of the current table, and the rows
//! written so far. A key range `(from, to]` is read the same way, from `from`, with `(pk) <= (to)`
//! in each chunk's query, and its last chunk's end cleans up to `to`: the argument above holds
//! within the range. The progress on a
//! chunk's end includes that chunk; on its rows, it does not. A restarted producer
//! reads the topic's last record, resumes streaming after it, and the snapshot at the next
//! chunk: a chunk cut short by the crash is read again (its rows in the topic are right as of
//! their position, so this costs only the repeat).
//!
//! Schema changes: the chunk's rows are encoded with the table's definition as planned from
//! `information_schema` before the chunk is read. Any schema change the reader meets while a
//! chunk waits drops the chunk and the plan; both are read again after it.
//!
//! Memory: one chunk, bounded by `snapshot_chunk_rows` and `snapshot_chunk_bytes`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Params, Value as MyValue};
use serde::{Deserialize, Serialize};

use continuum_common::config::NoPrimaryKey;
use continuum_common::db::{self, quote_ident};
use continuum_schemas::{
    BinlogPosition, ChangeEvent, ChunkEnd, GtidPosition, KeyPart, Op, Row, SchemaChange,
    SourceInfo, StreamRecord, TableSchema, TxPlace,
};

use crate::boundary::{Boundary, Place};
use crate::error::{DbContext, ProducerError};
use crate::metrics as m;
use crate::request::KeyRange;
use crate::shape;
use crate::snapshot::{self, ChunkBudget, Planned};

/// The Kafka header with the [`Progress`] of the incremental snapshot running when the record
/// was written, as JSON.
pub const HEADER_SNAPSHOT: &str = "continuum.snapshot";

/// How far an incremental snapshot has come; carried by every record written while it runs
/// ([`HEADER_SNAPSHOT`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The snapshot's id (the `snapshot_id` of its rows).
    pub id: String,
    /// The `continuum.snapshot_request` row it serves.
    pub request: u64,
    /// `db.table` of each table still to read; the first is being read. A table appears once
    /// per key range when `ranges` is not empty.
    pub tables: Vec<String>,
    /// The key range of each entry of `tables` (`verify --repair` asks for the ranges that
    /// differ); empty: whole tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<KeyRange>,
    /// The last key written of the first table; `None`: none yet.
    pub after: Option<Vec<KeyPart>>,
    /// Rows written so far.
    pub rows: u64,
}

impl Progress {
    /// A new snapshot of `tables` (in `ranges`, one per table; empty: whole) for request
    /// `request`.
    pub fn new(request: u64, tables: Vec<String>, ranges: Vec<KeyRange>) -> Progress {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Progress {
            id: format!("r{request}-{:x}", now.as_millis()),
            request,
            tables,
            ranges,
            after: None,
            rows: 0,
        }
    }

    pub fn header(&self) -> String {
        serde_json::to_string(self).expect("progress serializes")
    }

    /// Reads the header of record `what`.
    pub fn parse(text: &str, what: &str) -> Result<Progress, ProducerError> {
        serde_json::from_str(text).map_err(|e| {
            ProducerError::Resume(format!(
                "{what} has a {HEADER_SNAPSHOT} header that does not parse ({e}): '{text}'"
            ))
        })
    }

    /// Whether every table is read.
    pub fn done(&self) -> bool {
        self.tables.is_empty()
    }

    /// The key range of the table being read; `None`: all of it.
    fn range(&self) -> Option<&KeyRange> {
        self.ranges.first()
    }

    /// Where the next chunk starts: after the last key written, or else after the range's start.
    fn lower(&self) -> Option<&Vec<KeyPart>> {
        self.after
            .as_ref()
            .or_else(|| self.range().and_then(|r| r.from.as_ref()))
    }

    /// After a chunk of `rows` rows of the current table ending at key `last`, the last one of
    /// the table if `end_of_table`.
    fn advance(&mut self, rows: usize, last: Option<Vec<KeyPart>>, end_of_table: bool) {
        self.rows += rows as u64;
        if end_of_table {
            self.tables.remove(0);
            if !self.ranges.is_empty() {
                self.ranges.remove(0);
            }
            self.after = None;
        } else if last.is_some() {
            self.after = last;
        }
    }
}

/// A chunk read and waiting for the stream to reach its coordinates.
struct Chunk {
    /// The end of the last transaction its view holds.
    at: BinlogPosition,
    table: Arc<TableSchema>,
    /// On a table's first chunk, its database's and its own definition (`CREATE ... IF NOT
    /// EXISTS`), so a replica that lacks the table gets it before its rows.
    definitions: Vec<String>,
    rows: Vec<Row>,
    last_key: Option<Vec<KeyPart>>,
    end_of_table: bool,
}

/// What a chunk written into the stream is made of.
pub struct Written {
    pub records: Vec<StreamRecord>,
    /// The progress its records other than the last carry, and the last.
    pub before: Progress,
    pub after: Progress,
}

#[derive(Clone)]
pub struct IncrementalSettings {
    pub opts: Opts,
    pub target: String,
    pub no_pk: NoPrimaryKey,
    pub chunk_rows: usize,
    pub chunk_bytes: usize,
    /// The source's server id (in the rows' source).
    pub server_id: u32,
}

/// The planned read of the current table.
struct Plan {
    table: String,
    planned: Planned,
    /// The primary-key columns, quoted and comma-separated.
    order: String,
}

impl Plan {
    /// The chunk query: keys after a lower bound and up to an upper bound (when given), in key
    /// order, `LIMIT ?`.
    fn query(&self, lower: bool, upper: bool) -> String {
        let n = self.planned.shape.primary_key.len();
        let keys = vec!["?"; n].join(", ");
        let order = &self.order;
        let mut conds = Vec::new();
        if lower {
            conds.push(format!("({order}) > ({keys})"));
        }
        if upper {
            conds.push(format!("({order}) <= ({keys})"));
        }
        let filter = match conds.is_empty() {
            true => String::new(),
            false => format!(" WHERE {}", conds.join(" AND ")),
        };
        format!("{}{filter} ORDER BY {order} LIMIT ?", self.planned.select)
    }
}

/// One incremental snapshot, driven by the streaming loop (`pipeline`).
pub struct Incremental {
    s: IncrementalSettings,
    progress: Progress,
    conn: Option<Conn>,
    plan: Option<Plan>,
    budget: ChunkBudget,
    pending: Option<Chunk>,
    /// Rows of the tables still to read, estimated; for the percentage and the ETA.
    estimate: u64,
    started: Instant,
    rows_at_start: u64,
    last_report: Instant,
}

impl Incremental {
    /// Resumes (or starts) the snapshot that `progress` describes.
    pub fn new(s: IncrementalSettings, progress: Progress, estimate: u64) -> Incremental {
        let budget = ChunkBudget::new(s.chunk_rows, s.chunk_bytes);
        Incremental {
            s,
            rows_at_start: progress.rows,
            progress,
            conn: None,
            plan: None,
            budget,
            pending: None,
            estimate,
            started: Instant::now(),
            last_report: Instant::now(),
        }
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A schema change passed in the stream: the waiting chunk and the plan may be older than
    /// it; both are read again.
    pub fn on_schema_change(&mut self) {
        if self.pending.take().is_some() {
            tracing::debug!(snapshot = %self.progress.id, "a schema change passed while a chunk waited; reading the chunk again");
        }
        self.plan = None;
    }

    /// Whether a chunk waits for the stream.
    pub fn waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Where the waiting chunk's coordinates lie from the reader's `boundary`.
    pub fn place(&self, boundary: &Boundary) -> Option<Place> {
        self.pending.as_ref().map(|c| boundary.locate(&c.at))
    }

    /// The reader passed the waiting chunk's coordinates: it is read again.
    pub fn drop_waiting(&mut self) {
        if let Some(c) = self.pending.take() {
            tracing::debug!(snapshot = %self.progress.id, at = %c.at, "the stream passed a chunk's position before it was written; reading it again");
        }
    }

    async fn conn(&mut self) -> Result<&mut Conn, ProducerError> {
        if self.conn.is_none() {
            let mut c = Conn::new(self.s.opts.clone()).await.db(&self.s.target)?;
            c.query_drop("SET SESSION time_zone = '+00:00'")
                .await
                .db(&self.s.target)?;
            c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await
                .db(&self.s.target)?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// Plans the current table: its definition, and the chunk queries.
    async fn plan(&mut self) -> Result<(), ProducerError> {
        let Some(name) = self.progress.tables.first().cloned() else {
            return Ok(());
        };
        if self.plan.as_ref().is_some_and(|p| p.table == name) {
            return Ok(());
        }
        let (db_name, table) = name.split_once('.').ok_or_else(|| {
            ProducerError::Snapshot(format!(
                "snapshot {}: '{name}' is not db.table",
                self.progress.id
            ))
        })?;
        let (opts, no_pk, target) = (self.s.opts.clone(), self.s.no_pk, self.s.target.clone());
        let conn = self.conn().await?;
        let planned = snapshot::plan_table(conn, &opts, no_pk, &target, db_name, table, 0).await?;
        let t = &planned.shape;
        if t.primary_key.is_empty() {
            return Err(ProducerError::Snapshot(format!(
                "{name} has no primary key, so it cannot be read in key ranges; an incremental snapshot needs one"
            )));
        }
        let order = t
            .primary_key
            .iter()
            .map(|&i| quote_ident(&t.columns[i].name))
            .collect::<Vec<_>>()
            .join(", ");
        self.plan = Some(Plan {
            table: name,
            planned,
            order,
        });
        Ok(())
    }

    /// Reads the next chunk of the current table in a consistent snapshot of its own; it waits
    /// for the stream to reach the snapshot's coordinates.
    pub async fn read_chunk(&mut self) -> Result<(), ProducerError> {
        if self.pending.is_some() || self.progress.done() {
            return Ok(());
        }
        self.plan().await?;
        let limit = self.budget.limit();
        let values = |k: Option<&Vec<KeyPart>>, what: &str| -> Result<_, ProducerError> {
            k.map(|k| {
                k.iter()
                    .map(db::key_value)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        ProducerError::Resume(format!(
                            "snapshot {}: {what} of {} does not read back: {e}",
                            self.progress.id, self.progress.tables[0]
                        ))
                    })
            })
            .transpose()
        };
        let lower = values(self.progress.lower(), "the last key")?;
        let upper = values(
            self.progress.range().and_then(|r| r.to.as_ref()),
            "the range's end",
        )?;
        let plan = self.plan.as_ref().expect("planned");
        let stmt = plan.query(lower.is_some(), upper.is_some());
        let mut params: Vec<MyValue> = lower.into_iter().chain(upper).flatten().collect();
        params.push(MyValue::from(limit as u64));
        let shape = plan.planned.shape.clone();
        let name = plan.table.clone();
        let definitions = if self.progress.after.is_none() {
            vec![
                format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(&shape.db)),
                plan.planned.create.clone(),
            ]
        } else {
            Vec::new()
        };
        let target = self.s.target.clone();
        let budget_bytes = self.s.chunk_bytes;
        let conn = self.conn().await?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .db(&target)?;
        let at = snapshot::snapshot_coordinates(conn, &target).await?;
        let read_error = |e| snapshot::definition_changed(e, &name, &target);
        let mut raw: Vec<mysql_async::Row> = Vec::new();
        let mut bytes = 0usize;
        {
            let mut result = conn
                .exec_iter(stmt.as_str(), Params::Positional(params))
                .await
                .map_err(read_error)?;
            while let Some(row) = result.next().await.map_err(read_error)? {
                bytes += snapshot::row_bytes(&row);
                raw.push(row);
                if bytes >= budget_bytes {
                    break;
                }
            }
            result.drop_result().await.map_err(read_error)?;
        }
        conn.query_drop("COMMIT").await.db(&target)?;
        let n = raw.len();
        let cut = n < limit && self.budget.spent(bytes);
        let end_of_table = n < limit && !cut;
        self.budget.next(n, bytes);
        let mut last_key = None;
        let mut rows = Vec::with_capacity(n);
        for row in raw {
            let vals = row.unwrap();
            last_key = Some(
                shape
                    .primary_key
                    .iter()
                    .map(|&i| db::key_part(&vals[i]))
                    .collect::<Vec<_>>(),
            );
            rows.push(
                vals.into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        shape::convert_owned(&shape, i, v, false).map_err(ProducerError::from)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        self.pending = Some(Chunk {
            at,
            table: shape,
            definitions,
            rows,
            last_key,
            end_of_table,
        });
        Ok(())
    }

    /// The waiting chunk's records, to write now that the stream stands at its coordinates,
    /// where the source's GTID position is `position`; the progress moves past it.
    pub fn write_chunk(&mut self, position: &GtidPosition, ts_ms: i64) -> Option<Written> {
        let chunk = self.pending.take()?;
        let before = self.progress.clone();
        let n = chunk.rows.len();
        let source = SourceInfo {
            server_id: self.s.server_id,
            gtid: None,
            gtid_position: position.clone(),
            resume_position: position.clone(),
            binlog: chunk.at.clone(),
            commit_ts_ms: ts_ms,
            snapshot_id: Some(self.progress.id.clone()),
        };
        let table = chunk.table.qualified_name();
        let defs = chunk.definitions.len();
        let end = ChunkEnd {
            snapshot_id: self.progress.id.clone(),
            server_id: self.s.server_id,
            table: table.clone(),
            position: position.clone(),
            rows: (defs + n) as u64,
            key: chunk
                .table
                .primary_key
                .iter()
                .map(|&i| chunk.table.columns[i].name.clone())
                .collect(),
            from: self.progress.lower().cloned(),
            to: if chunk.end_of_table {
                self.progress.range().and_then(|r| r.to.clone())
            } else {
                chunk
                    .last_key
                    .clone()
                    .or_else(|| self.progress.lower().cloned())
            },
            ts_ms,
        };
        let mut records: Vec<StreamRecord> = Vec::with_capacity(defs + n + 1);
        for (i, ddl) in chunk.definitions.into_iter().enumerate() {
            records.push(StreamRecord::SchemaChange(SchemaChange {
                database: chunk.table.db.clone(),
                ddl,
                source: source.clone(),
                tx: TxPlace {
                    index: i as u64,
                    last: false,
                },
            }));
        }
        records.extend(chunk.rows.into_iter().enumerate().map(|(i, row)| {
            StreamRecord::Change(ChangeEvent {
                op: Op::Read,
                table: chunk.table.clone(),
                before: None,
                after: Some(row),
                source: source.clone(),
                tx: Some(TxPlace {
                    index: (defs + i) as u64,
                    last: false,
                }),
            })
        }));
        records.push(StreamRecord::ChunkEnd(end));
        self.progress.advance(n, chunk.last_key, chunk.end_of_table);
        counter!(m::SNAPSHOT_ROWS_TOTAL.name, "table" => table.clone()).increment(n as u64);
        if chunk.end_of_table {
            self.plan = None;
            self.budget = ChunkBudget::new(self.s.chunk_rows, self.s.chunk_bytes);
            tracing::info!(snapshot = %self.progress.id, %table, rows = self.progress.rows, "incremental snapshot: table done");
        }
        self.report();
        Some(Written {
            records,
            before,
            after: self.progress.clone(),
        })
    }

    /// The progress metric, and a log line every 10 s with the rate and an ETA.
    fn report(&mut self) {
        let done = self.progress.rows;
        let pct = if self.progress.done() {
            100.0
        } else {
            (done as f64 / self.estimate.max(1) as f64 * 100.0).min(99.9)
        };
        gauge!(m::SNAPSHOT_PROGRESS_PERCENT.name).set(pct);
        if self.last_report.elapsed() < Duration::from_secs(10) && !self.progress.done() {
            return;
        }
        self.last_report = Instant::now();
        let rate =
            (done - self.rows_at_start) as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let left = self.estimate.saturating_sub(done);
        let eta = if rate > 0.0 && !self.progress.done() {
            humantime::format_duration(Duration::from_secs((left as f64 / rate).round() as u64))
                .to_string()
        } else {
            "-".into()
        };
        tracing::info!(snapshot = %self.progress.id, table = self.progress.tables.first().map(String::as_str).unwrap_or("-"), rows = done, estimated_rows = self.estimate, rows_per_sec = rate as u64, percent = format!("{pct:.1}"), eta = %eta, "incremental snapshot progress");
    }
}

/// The source's estimate of the rows of `tables` (`information_schema.TABLES.TABLE_ROWS`).
pub async fn estimate_rows(
    conn: &mut Conn,
    target: &str,
    tables: &[String],
) -> Result<u64, ProducerError> {
    let mut total = 0u64;
    // A table listed once per key range (a repair) counts once: an upper bound.
    let tables: std::collections::BTreeSet<&String> = tables.iter().collect();
    for t in tables {
        let Some((d, n)) = t.split_once('.') else {
            continue;
        };
        let rows: Option<Option<u64>> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (d, n),
            )
            .await
            .db(target)?;
        total += rows.flatten().unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_its_header_and_moves_table_by_table() {
        let mut p = Progress::new(7, vec!["d.a".into(), "d.b".into()], Vec::new());
        assert!(p.id.starts_with("r7-"), "{}", p.id);
        assert_eq!(Progress::parse(&p.header(), "x").unwrap(), p);
        p.advance(100, Some(vec![KeyPart::Int(100)]), false);
        assert_eq!(
            (p.rows, p.after.clone()),
            (100, Some(vec![KeyPart::Int(100)]))
        );
        // A chunk that reads nothing past the last key keeps it.
        p.advance(0, None, false);
        assert_eq!(p.after, Some(vec![KeyPart::Int(100)]));
        p.advance(5, Some(vec![KeyPart::Int(105)]), true);
        assert_eq!(
            (p.tables.clone(), p.after.clone(), p.rows),
            (vec!["d.b".to_owned()], None, 105)
        );
        assert!(!p.done());
        p.advance(0, None, true);
        assert!(p.done());
        assert!(Progress::parse("{\"id\":1}", "the last record").is_err());

        // A repair's key ranges: each chunk starts after the range's start until a key is
        // written, and the range goes with its table.
        let range = |from: i64, to: i64| KeyRange {
            from: Some(vec![KeyPart::Int(from)]),
            to: Some(vec![KeyPart::Int(to)]),
        };
        let mut r = Progress::new(
            8,
            vec!["d.a".into(), "d.a".into()],
            vec![range(10, 20), range(50, 60)],
        );
        assert_eq!(Progress::parse(&r.header(), "x").unwrap(), r);
        assert_eq!(r.lower(), Some(&vec![KeyPart::Int(10)]));
        r.advance(3, Some(vec![KeyPart::Int(14)]), false);
        assert_eq!(r.lower(), Some(&vec![KeyPart::Int(14)]));
        r.advance(2, Some(vec![KeyPart::Int(20)]), true);
        assert_eq!(r.range(), Some(&range(50, 60)));
        assert_eq!(r.lower(), Some(&vec![KeyPart::Int(50)]));
        // A whole-table snapshot's header has no ranges, as before they existed.
        assert!(!p.header().contains("ranges"));
        assert!(Progress::parse(&p.header().replace("\"rows\"", "\"rowz\""), "x").is_err());
    }
}
