//! The consistent snapshot, taken when the topic holds no position (or on `--resnapshot`).
//!
//! One `START TRANSACTION WITH CONSISTENT SNAPSHOT` (no global lock); its binlog position comes
//! from `binlog_snapshot_file`/`binlog_snapshot_position` and becomes GTID position `P` through
//! `BINLOG_GTID_POS` (or, when that gives NULL because an event before it exceeds the source's
//! `max_allowed_packet`, by reading the binlog file as a replica). The producer writes a START
//! marker, every captured table's rows in primary-key order as snapshot reads, then an END
//! marker, and streaming continues from exactly `P`: no gap, no overlap. A crash mid-snapshot
//! leaves a START without END; the next run starts a new snapshot with a new id.
//!
//! Table definitions come from `information_schema` and `SHOW CREATE TABLE`, which do not
//! honour the consistent view: after reading them, [`begin`] reads the binlog from `P` to its
//! end, and DDL on a captured table there starts the transaction over. A later DDL that breaks
//! a table's read fails it with `DefinitionChanged`, a transient error: a new snapshot starts.
//!
//! Rows are read in keyset chunks bounded by rows and by bytes ([`ChunkBudget`]), so a table of
//! wide BLOBs is never held in memory whole.
//!
//! MariaDB prints ENUM and SET members through its system character set (utf8mb3), in
//! `SHOW CREATE TABLE` and `information_schema` alike, so a member holding a 4-byte character
//! (an emoji) reads as `?`. Such a definition is never passed on as read: the exact members are
//! read back from a temporary table of the column's type ([`exact_members`]), and the table's
//! shape and its `CREATE TABLE` carry those.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Params};

use crate::metrics as m;
use continuum_common::db::{self, quote_ident};
use continuum_schemas::{
    BinlogPosition, ChangeEvent, GtidPosition, Op, SchemaChange, SnapshotMarker, SnapshotPhase,
    SourceInfo, StreamRecord, TableSchema, TxPlace,
};

use crate::error::{DbContext, ProducerError};
use crate::shape::{self, InfoColumn};
use crate::sink::Sink;
use continuum_common::filter::TableFilter;
use continuum_common::lock::NamedLock;

pub struct SnapshotSettings<'a> {
    pub opts: Opts,
    pub target: &'a str,
    pub filter: &'a TableFilter,
    pub chunk_rows: usize,
    /// Most bytes of rows per chunk (`producer.snapshot_chunk_bytes`).
    pub chunk_bytes: usize,
    /// The source's server id (in the markers).
    pub server_id: u32,
    /// The replica server id the producer registers with (`producer.server_id`).
    pub replica_server_id: u32,
    /// `producer.tables_without_primary_key`.
    pub no_pk: continuum_common::config::NoPrimaryKey,
}

pub(crate) struct Planned {
    pub(crate) shape: Arc<TableSchema>,
    pub(crate) select: String,
    pub(crate) estimate: u64,
    /// `CREATE TABLE IF NOT EXISTS ...`, as of the snapshot.
    pub(crate) create: String,
}

/// How a mark's snapshot id begins, so that a mark cut short by a crash is written again rather
/// than taken for an abandoned consistent snapshot (`resume::Start::Remark`).
pub const MARK_ID_PREFIX: &str = "mark-";

fn new_snapshot_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{:x}{:04x}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id() & 0xffff
    )
}

pub(crate) async fn plan_table(
    conn: &mut Conn,
    opts: &Opts,
    no_pk: continuum_common::config::NoPrimaryKey,
    target: &str,
    db: &str,
    table: &str,
    estimate: u64,
) -> Result<Planned, ProducerError> {
    type ColRow = (
        String,
        String,
        String,
        String,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<String>,
        Option<u64>,
    );
    let cols: Vec<ColRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, \
             DATETIME_PRECISION, CHARACTER_SET_NAME, CHARACTER_OCTET_LENGTH \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .db(target)?;
    let mut raw_types = Vec::with_capacity(cols.len());
    let mut info: Vec<InfoColumn> = cols
        .into_iter()
        .map(
            |(name, data_type, column_type, nullable, p, s, dp, cs, ol)| {
                raw_types.push(column_type.clone());
                InfoColumn {
                    name,
                    data_type: data_type.to_lowercase(),
                    column_type: column_type.to_lowercase(),
                    nullable: nullable == "YES",
                    numeric_precision: p,
                    numeric_scale: s,
                    datetime_precision: dp,
                    charset: cs,
                    octet_length: ol,
                }
            },
        )
        .collect();
    // Member lists MariaDB could not print (see the module note), with their exact text.
    let mut exact_types = Vec::new();
    for (c, raw) in info.iter_mut().zip(&raw_types) {
        let kind = match c.data_type.as_str() {
            "enum" => MemberKind::Enum,
            "set" => MemberKind::Set,
            _ => continue,
        };
        if !raw.contains('?') {
            continue;
        }
        let count = shape::value_list(&c.column_type).map_or(0, |v| v.len());
        let members = exact_members(opts, target, db, table, &c.name, kind, count).await?;
        let exact = members_type(kind, &members);
        c.column_type = exact.to_lowercase();
        exact_types.push((
            format!("{} {raw}", quote_ident(&c.name)),
            format!("{} {exact}", quote_ident(&c.name)),
        ));
    }
    let pk: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .db(target)?;
    let shape = shape::from_information_schema(db, table, &info, &pk)?;
    if shape.primary_key.is_empty() && no_pk != continuum_common::config::NoPrimaryKey::Replicate {
        return Err(ProducerError::NoPrimaryKey {
            tables: shape.qualified_name(),
        });
    }
    let exprs: Vec<String> = info
        .iter()
        .map(|c| {
            let q = quote_ident(&c.name);
            match c.data_type.as_str() {
                // The binlog carries these as BINARY(n); read the same bytes.
                "inet4" => format!("CAST({q} AS BINARY(4))"),
                "inet6" | "uuid" => format!("CAST({q} AS BINARY(16))"),
                _ => q,
            }
        })
        .collect();
    let select = format!(
        "SELECT {} FROM {}.{}",
        exprs.join(", "),
        quote_ident(db),
        quote_ident(table)
    );
    let row: Option<(String, String)> = conn
        .query_first(format!(
            "SHOW CREATE TABLE {}.{}",
            quote_ident(db),
            quote_ident(table)
        ))
        .await
        .db(target)?;
    let mut create = row.map(|(_, c)| c).unwrap_or_default();
    for (lossy, exact) in &exact_types {
        if !create.contains(lossy.as_str()) {
            return Err(ProducerError::Snapshot(format!(
                "SHOW CREATE TABLE {db}.{table} does not hold the column definition {lossy} that information_schema gives, so its ENUM or SET members (some outside utf8mb3) cannot be put right; exclude the table, or rename those members"
            )));
        }
        create = create.replacen(lossy.as_str(), exact, 1);
    }
    let create = match create.strip_prefix("CREATE TABLE ") {
        Some(rest) => format!("CREATE TABLE IF NOT EXISTS {rest}"),
        None => {
            return Err(ProducerError::Snapshot(format!(
                "SHOW CREATE TABLE {db}.{table} returned no CREATE TABLE statement"
            )))
        }
    };
    Ok(Planned {
        shape: Arc::new(shape),
        select,
        estimate,
        create,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberKind {
    Enum,
    Set,
}

/// The exact members of an ENUM or SET column with `count` members, in order: a temporary table
/// with the column's own type (`CREATE TEMPORARY TABLE ... SELECT col ... LIMIT 0`) is filled
/// with every member by number (ENUM index `1..=count`, SET bit `1 << i`) and read back as bytes.
/// Temporary tables are private to the session and, with row-based binary logging, never
/// logged, so the source's binlog and GTID sequence do not move. It runs on a connection of its
/// own: the snapshot's transaction is read-only. Needs the `CREATE TEMPORARY TABLES` privilege on
/// the table's database.
async fn exact_members(
    opts: &Opts,
    target: &str,
    db: &str,
    table: &str,
    column: &str,
    kind: MemberKind,
    count: usize,
) -> Result<Vec<String>, ProducerError> {
    if count == 0 || (kind == MemberKind::Set && count > 64) {
        return Err(ProducerError::Snapshot(format!(
            "{db}.{table}.{column}: cannot read the member list of the column's type ({count} members)"
        )));
    }
    let tmp = format!("{}.`continuum_members_tmp`", quote_ident(db));
    let col = quote_ident(column);
    let numbers: Vec<String> = (0..count)
        .map(|i| match kind {
            MemberKind::Enum => format!("({})", i + 1),
            MemberKind::Set => format!("({})", 1u64 << i),
        })
        .collect();
    let statements = [
        format!("DROP TEMPORARY TABLE IF EXISTS {tmp}"),
        format!(
            "CREATE TEMPORARY TABLE {tmp} (n INT AUTO_INCREMENT PRIMARY KEY) SELECT {col} FROM {}.{} LIMIT 0",
            quote_ident(db),
            quote_ident(table)
        ),
        format!("INSERT INTO {tmp} ({col}) VALUES {}", numbers.join(", ")),
    ];
    let privilege = |e: mysql_async::Error| {
        match &e {
        mysql_async::Error::Server(se) if se.code == 1044 || se.code == 1142 => {
            ProducerError::Snapshot(format!(
                "{db}.{table}.{column} has ENUM or SET members with characters outside utf8mb3, which MariaDB prints as '?'; reading them exactly needs a temporary table: GRANT CREATE TEMPORARY TABLES ON `{db}`.* to the producer's user ({e})"
            ))
        }
        _ => ProducerError::Db {
            target: target.to_owned(),
            source: e,
        },
    }
    };
    let mut conn = Conn::new(opts.clone()).await.db(target)?;
    for sql in &statements {
        conn.query_drop(sql).await.map_err(privilege)?;
    }
    let rows: Vec<Vec<u8>> = conn
        .query(format!(
            "SELECT CAST({col} AS BINARY) FROM {tmp} ORDER BY n"
        ))
        .await
        .db(target)?;
    conn.disconnect().await.db(target)?;
    let members: Vec<String> = rows
        .into_iter()
        .map(|b| {
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
        .collect();
    if members.len() != count {
        return Err(ProducerError::Snapshot(format!(
            "{db}.{table}.{column}: read {} members of the column's type, expected {count}",
            members.len()
        )));
    }
    Ok(members)
}

/// `enum('a','b''c')` or `set(...)`, quoted as `SHOW CREATE TABLE` quotes members.
fn members_type(kind: MemberKind, members: &[String]) -> String {
    let quoted: Vec<String> = members
        .iter()
        .map(|m| format!("'{}'", m.replace('\\', "\\\\").replace('\'', "''")))
        .collect();
    let name = match kind {
        MemberKind::Enum => "enum",
        MemberKind::Set => "set",
    };
    format!("{name}({})", quoted.join(","))
}

/// On a read-only source (a replica) nothing local-origin exists yet: its data came from
/// elsewhere, and copying it into this changelog would send it back to where it came from. The
/// producer marks its starting point with an empty snapshot (START and END over no tables, at
/// the current GTID position) and captures local-origin writes from there on, which after a
/// promotion are the site's new writes.
///
/// `--start-position` uses the same marker at a given position.
pub async fn mark_start(
    s: SnapshotSettings<'_>,
    sink: &mut Sink,
    at: Option<GtidPosition>,
) -> Result<GtidPosition, ProducerError> {
    let position = match at {
        Some(p) => {
            tracing::info!(position = %p, "--start-position: no snapshot; capturing from the given position");
            p
        }
        None => {
            let mut conn = Conn::new(s.opts.clone()).await.db(s.target)?;
            let pos: Option<String> = conn
                .query_first("SELECT @@gtid_binlog_pos")
                .await
                .db(s.target)?;
            let p: GtidPosition = pos
                .unwrap_or_default()
                .parse()
                .map_err(|e| ProducerError::Snapshot(format!("@@gtid_binlog_pos: {e}")))?;
            tracing::info!(position = %p, "the source is read_only (a replica): no table snapshot; capturing local-origin writes from here");
            p
        }
    };
    mark_definitions(s, sink, &position, &[]).await?;
    Ok(position)
}

/// Sends a table's definition as a consistent snapshot carries it: its database's first (once
/// per database, `created` keeps which), then `create` (`CREATE TABLE IF NOT EXISTS ...`).
async fn send_definition(
    sink: &mut Sink,
    source: &SourceInfo,
    created: &mut std::collections::BTreeSet<String>,
    db: &str,
    create: String,
) -> Result<(), ProducerError> {
    let ddl = |ddl: String| {
        StreamRecord::SchemaChange(SchemaChange {
            database: db.to_owned(),
            ddl,
            source: source.clone(),
            tx: TxPlace {
                index: 0,
                last: true,
            },
        })
    };
    if created.insert(db.to_owned()) {
        sink.send(&ddl(format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote_ident(db)
        )))
        .await?;
    }
    sink.send(&ddl(create)).await?;
    Ok(())
}

/// An empty snapshot (START and END over no tables) at `position`, holding the definitions
/// (`CREATE ... IF NOT EXISTS`, as of now) of `tables`: [`mark_start`]'s mark (no tables), and
/// `--recapture`'s (every captured table). So the replica has every
/// captured table before the stream from `position` writes to it, however long the incremental
/// snapshot that follows takes to reach a table created while the binlog was lost.
pub async fn mark_definitions(
    s: SnapshotSettings<'_>,
    sink: &mut Sink,
    position: &GtidPosition,
    tables: &[String],
) -> Result<(), ProducerError> {
    let id = format!("{MARK_ID_PREFIX}{}", new_snapshot_id());
    let marker = |phase| {
        StreamRecord::Snapshot(SnapshotMarker {
            snapshot_id: id.clone(),
            phase,
            server_id: s.server_id,
            position: position.clone(),
            tables: Vec::new(),
            ts_ms: continuum_common::observe::now_ms(),
        })
    };
    let source = SourceInfo {
        server_id: s.server_id,
        gtid: None,
        gtid_position: position.clone(),
        resume_position: position.clone(),
        binlog: BinlogPosition::new(String::new(), 0),
        commit_ts_ms: continuum_common::observe::now_ms(),
        snapshot_id: Some(id.clone()),
    };
    sink.send(&marker(SnapshotPhase::Start)).await?;
    let mut created_dbs = std::collections::BTreeSet::new();
    // Only definitions need the source (mark_start's mark has none).
    let mut conn = match tables.is_empty() {
        true => None,
        false => Some(Conn::new(s.opts.clone()).await.db(s.target)?),
    };
    for t in tables {
        let (db, table) = t
            .split_once('.')
            .ok_or_else(|| ProducerError::Snapshot(format!("'{t}' is not db.table")))?;
        let conn = conn.as_mut().expect("connected when there are tables");
        let planned = plan_table(conn, &s.opts, s.no_pk, s.target, db, table, 0).await?;
        send_definition(sink, &source, &mut created_dbs, db, planned.create).await?;
    }
    sink.send(&marker(SnapshotPhase::End)).await?;
    Ok(())
}

/// A snapshot transaction whose table definitions are those of its consistent view.
struct Begun {
    conn: Conn,
    file: String,
    pos: u64,
    position: GtidPosition,
    plans: Vec<Planned>,
}

/// How many times a snapshot starts over because a captured table's definition changed
/// between its consistent view and the reading of the definitions.
const DEFINITION_ATTEMPTS: usize = 10;

/// Opens the snapshot transaction and reads the captured tables' definitions.
/// `information_schema` and `SHOW CREATE TABLE` show the current definitions, not those of the
/// consistent view, so after reading them the binlog between the view's position and its end is
/// read: any DDL on a captured table there means a definition read may be newer than the view,
/// and the transaction is started over. (DDL later than that cannot change what the snapshot
/// read: a table's rows are read by the columns planned here, and a change that breaks that
/// read fails it with [`ProducerError::DefinitionChanged`], which starts a new snapshot.)
async fn begin(s: &SnapshotSettings<'_>) -> Result<Begun, ProducerError> {
    let target = s.target;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let begun = begin_once(s).await?;
        let changed = crate::binlog::ddl_after(
            &s.opts,
            target,
            s.replica_server_id,
            &begun.position,
            s.filter,
        )
        .await?;
        if changed.is_empty() {
            return Ok(begun);
        }
        drop(begun.conn);
        if attempt >= DEFINITION_ATTEMPTS {
            return Err(ProducerError::Snapshot(format!(
                "the definitions of captured tables changed during each of {attempt} snapshot attempts (the last after {}: {}); hold off DDL on the captured tables until the snapshot has begun, then restart the producer",
                begun.position,
                changed.join("; ")
            )));
        }
        tracing::warn!(position = %begun.position, ddl = %changed.join("; "), attempt, "a captured table's definition changed after the snapshot's consistent view began; starting the snapshot over");
    }
}

/// The binlog coordinates the open `WITH CONSISTENT SNAPSHOT` transaction on `conn` is
/// consistent with (`binlog_snapshot_file`/`binlog_snapshot_position`): the end of the last
/// transaction its view holds.
pub(crate) async fn snapshot_coordinates(
    conn: &mut Conn,
    target: &str,
) -> Result<BinlogPosition, ProducerError> {
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .db(target)?;
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let file = get("binlog_snapshot_file").unwrap_or_default();
    let pos: u64 = get("binlog_snapshot_position")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    if file.is_empty() {
        return Err(ProducerError::Snapshot(
            "binlog_snapshot_file is empty: is the binary log enabled?".into(),
        ));
    }
    Ok(BinlogPosition::new(file, pos))
}

async fn begin_once(s: &SnapshotSettings<'_>) -> Result<Begun, ProducerError> {
    let target = s.target;
    let mut conn = Conn::new(db::replica_opts(&s.opts)).await.db(target)?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .db(target)?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .db(target)?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .db(target)?;
    let BinlogPosition { file, pos } = snapshot_coordinates(&mut conn, target).await?;
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
        .await
        .db(target)?;
    let position: GtidPosition = match gtid.flatten() {
        Some(text) => text.parse().map_err(|e| {
            ProducerError::Snapshot(format!("BINLOG_GTID_POS({file}, {pos}) = '{text}': {e}"))
        })?,
        // NULL, never an empty position (that would stream the binlog from its beginning): the
        // server read an event over its max_allowed_packet on the way. Read the file as a
        // replica does, with the replica's packet limit.
        None => {
            tracing::info!(%file, pos, "BINLOG_GTID_POS gave NULL (an event larger than the source's max_allowed_packet precedes the position); reading the binlog file for the snapshot's GTID position");
            crate::binlog::gtid_position_at(&s.opts, target, s.replica_server_id, &file, pos)
                .await?
        }
    };

    let tables: Vec<(String, String, Option<String>, Option<u64>)> = conn
        .query("SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY 1, 2")
        .await
        .db(target)?;
    let captured: Vec<_> = tables
        .into_iter()
        .filter(|(d, t, _, _)| s.filter.captures(d, t))
        .collect();
    let not_innodb: Vec<String> = captured
        .iter()
        .filter(|(_, _, e, _)| {
            !e.as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case("InnoDB"))
        })
        .map(|(d, t, e, _)| format!("{d}.{t} ({})", e.clone().unwrap_or_default()))
        .collect();
    if !not_innodb.is_empty() {
        return Err(ProducerError::Snapshot(format!(
            "captured tables are not InnoDB, so no consistent snapshot of them exists: {}. Convert them (ALTER TABLE ... ENGINE=InnoDB) or exclude them",
            not_innodb.join(", ")
        )));
    }
    let mut plans = Vec::with_capacity(captured.len());
    for (d, t, _, rows) in &captured {
        plans.push(plan_table(&mut conn, &s.opts, s.no_pk, target, d, t, rows.unwrap_or(0)).await?);
    }
    Ok(Begun {
        conn,
        file,
        pos,
        position,
        plans,
    })
}

/// Takes the snapshot and returns the GTID position streaming continues from.
pub async fn run(
    s: SnapshotSettings<'_>,
    sink: &mut Sink,
    lock: &NamedLock,
) -> Result<GtidPosition, ProducerError> {
    let target = s.target;
    let Begun {
        mut conn,
        file,
        pos,
        position,
        plans,
    } = begin(&s).await?;
    let id = new_snapshot_id();
    let total_estimate: u64 = plans.iter().map(|p| p.estimate).sum::<u64>().max(1);
    tracing::info!(snapshot = %id, %position, binlog_file = %file, binlog_pos = pos, tables = plans.len(), estimated_rows = total_estimate, "snapshot started");
    let names: Vec<String> = plans.iter().map(|p| p.shape.qualified_name()).collect();
    sink.send(&StreamRecord::Snapshot(SnapshotMarker {
        snapshot_id: id.clone(),
        phase: SnapshotPhase::Start,
        server_id: s.server_id,
        position: position.clone(),
        tables: names,
        ts_ms: continuum_common::observe::now_ms(),
    }))
    .await?;

    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut done_rows: u64 = 0;
    let now_ms = continuum_common::observe::now_ms();
    let source = SourceInfo {
        server_id: s.server_id,
        gtid: None,
        gtid_position: position.clone(),
        resume_position: position.clone(),
        binlog: BinlogPosition::new(file.clone(), pos),
        commit_ts_ms: now_ms,
        snapshot_id: Some(id.clone()),
    };
    let mut created_dbs = std::collections::BTreeSet::new();
    for plan in &plans {
        let t = &plan.shape;
        // The table's definition travels with its rows, so an empty replica needs no setup.
        send_definition(sink, &source, &mut created_dbs, &t.db, plan.create.clone()).await?;
        let pk_cols: Vec<String> = t
            .primary_key
            .iter()
            .map(|&i| quote_ident(&t.columns[i].name))
            .collect();
        let order = pk_cols.join(", ");
        // Keyset chunks by primary key; a table without one is read in its clustered order
        // (InnoDB's hidden row id), chunk after chunk by OFFSET, which the snapshot's
        // transaction keeps stable.
        let keyless = pk_cols.is_empty();
        let (first, next) = if keyless {
            (
                format!("{} LIMIT ?", plan.select),
                format!("{} LIMIT ? OFFSET ?", plan.select),
            )
        } else {
            (
                format!("{} ORDER BY {order} LIMIT ?", plan.select),
                format!(
                    "{} WHERE ({order}) > ({}) ORDER BY {order} LIMIT ?",
                    plan.select,
                    vec!["?"; pk_cols.len()].join(", "),
                ),
            )
        };
        let mut after: Option<Vec<mysql_async::Value>> = None;
        let mut table_rows: u64 = 0;
        let mut budget = ChunkBudget::new(s.chunk_rows, s.chunk_bytes);
        loop {
            lock.check().map_err(ProducerError::from)?;
            sink.check()?;
            let limit = budget.limit();
            let (stmt, params) = match &after {
                None => (first.as_str(), vec![mysql_async::Value::from(limit as u64)]),
                Some(_) if keyless => (
                    next.as_str(),
                    vec![
                        mysql_async::Value::from(limit as u64),
                        mysql_async::Value::from(table_rows),
                    ],
                ),
                Some(k) => {
                    let mut p = k.clone();
                    p.push(mysql_async::Value::from(limit as u64));
                    (next.as_str(), p)
                }
            };
            let read_error = |e| definition_changed(e, &t.qualified_name(), target);
            // Read rows until the chunk's row or byte budget is spent; the rest of the result
            // (if the bytes ran out first) is read again by the next chunk.
            let mut rows: Vec<mysql_async::Row> = Vec::new();
            let mut bytes = 0usize;
            let mut result = conn
                .exec_iter(stmt, Params::Positional(params))
                .await
                .map_err(read_error)?;
            while let Some(row) = result.next().await.map_err(read_error)? {
                bytes += row_bytes(&row);
                rows.push(row);
                if budget.spent(bytes) {
                    break;
                }
            }
            let cut = rows.len() < limit && budget.spent(bytes);
            result.drop_result().await.map_err(read_error)?;
            let n = rows.len();
            for row in rows {
                let vals = row.unwrap();
                after = Some(t.primary_key.iter().map(|&i| vals[i].clone()).collect());
                let converted = vals
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| shape::convert_owned(t, i, v, false).map_err(ProducerError::from))
                    .collect::<Result<Vec<_>, _>>()?;
                sink.send(&StreamRecord::Change(ChangeEvent {
                    op: Op::Read,
                    table: t.clone(),
                    before: None,
                    after: Some(converted),
                    source: source.clone(),
                    tx: None,
                }))
                .await?;
            }
            budget.next(n, bytes);
            table_rows += n as u64;
            done_rows += n as u64;
            counter!(m::SNAPSHOT_ROWS_TOTAL.name, "table" => t.qualified_name())
                .increment(n as u64);
            let pct = (done_rows as f64 / total_estimate as f64 * 100.0).min(99.9);
            gauge!(m::SNAPSHOT_PROGRESS_PERCENT.name).set(pct);
            if last_report.elapsed() >= Duration::from_secs(5) {
                let rate = done_rows as f64 / started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(snapshot = %id, table = %t.qualified_name(), table_rows, rows = done_rows, rows_per_sec = rate as u64, percent = format!("{pct:.1}"), "snapshot progress");
                last_report = Instant::now();
            }
            if n < limit && !cut {
                break;
            }
        }
        tracing::info!(snapshot = %id, table = %t.qualified_name(), rows = table_rows, "snapshot of table done");
    }
    conn.query_drop("COMMIT").await.db(target)?;
    sink.send(&StreamRecord::Snapshot(SnapshotMarker {
        snapshot_id: id.clone(),
        phase: SnapshotPhase::End,
        server_id: s.server_id,
        position: position.clone(),
        tables: Vec::new(),
        ts_ms: continuum_common::observe::now_ms(),
    }))
    .await?;
    gauge!(m::SNAPSHOT_PROGRESS_PERCENT.name).set(100.0);
    let rate = done_rows as f64 / started.elapsed().as_secs_f64().max(0.001);
    tracing::info!(snapshot = %id, rows = done_rows, rows_per_sec = rate as u64, seconds = started.elapsed().as_secs_f64(), %position, "snapshot finished");
    Ok(position)
}

/// How many rows the next snapshot chunk asks for. A chunk ends at `rows` rows or once its rows
/// hold `bytes` bytes (at least one row). The first chunk asks for one row and each next one for
/// at most twice as many as the last returned, and for no more than the byte budget holds at
/// the rows' average size so far: a table of wide BLOBs is read a few rows at a time, and
/// rows past the budget are seldom read only to be read again.
#[derive(Debug, Clone)]
pub struct ChunkBudget {
    rows: usize,
    bytes: usize,
    limit: usize,
    read_rows: u64,
    read_bytes: u64,
}

impl ChunkBudget {
    pub fn new(rows: usize, bytes: usize) -> Self {
        ChunkBudget {
            rows: rows.max(1),
            bytes: bytes.max(1),
            limit: 1,
            read_rows: 0,
            read_bytes: 0,
        }
    }

    /// The `LIMIT` of the next chunk.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether a chunk whose rows hold `bytes` bytes is full.
    pub fn spent(&self, bytes: usize) -> bool {
        bytes >= self.bytes
    }

    /// After a chunk of `rows` rows holding `bytes` bytes.
    pub fn next(&mut self, rows: usize, bytes: usize) {
        self.read_rows += rows as u64;
        self.read_bytes += bytes as u64;
        let average = (self.read_bytes / self.read_rows.max(1)).max(1);
        let fits = (self.bytes as u64 / average).max(1) as usize;
        self.limit = (rows.max(1) * 2).min(fits).min(self.rows).max(1);
    }
}

/// The bytes a row holds, near enough to bound memory: strings and BLOBs by their length.
pub(crate) fn row_bytes(row: &mysql_async::Row) -> usize {
    (0..row.len())
        .map(|i| match row.as_ref(i) {
            Some(mysql_async::Value::Bytes(b)) => b.len() + 8,
            _ => 8,
        })
        .sum()
}

/// A snapshot read that failed because the table's definition changed after the snapshot
/// planned it (a column it reads is gone, the table is gone, or it was rebuilt): transient, a
/// new snapshot reads the new definition.
pub(crate) fn definition_changed(
    e: mysql_async::Error,
    table: &str,
    target: &str,
) -> ProducerError {
    match &e {
        // ER_BAD_FIELD_ERROR, ER_NO_SUCH_TABLE, ER_TABLE_DEF_CHANGED
        mysql_async::Error::Server(se) if matches!(se.code, 1054 | 1146 | 1412) => {
            ProducerError::DefinitionChanged {
                table: table.to_owned(),
                detail: e.to_string(),
            }
        }
        _ => ProducerError::Db {
            target: target.to_owned(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_grow_from_one_row_up_to_the_row_and_byte_budgets() {
        // Narrow rows: doubling up to the row budget.
        let mut b = ChunkBudget::new(10_000, 32 << 20);
        let mut limits = vec![b.limit()];
        for _ in 0..15 {
            let n = b.limit();
            b.next(n, n * 100);
            limits.push(b.limit());
        }
        assert_eq!(&limits[..4], &[1, 2, 4, 8]);
        assert_eq!(*limits.last().unwrap(), 10_000);
        // 4 MiB rows and an 8 MiB budget: two rows per chunk at most.
        let mut b = ChunkBudget::new(10_000, 8 << 20);
        assert_eq!(b.limit(), 1);
        b.next(1, 4 << 20);
        assert_eq!(b.limit(), 2);
        b.next(2, 8 << 20);
        assert_eq!(b.limit(), 2);
        assert!(b.spent(8 << 20) && !b.spent((8 << 20) - 1));
        // A row wider than the whole budget: one row per chunk, never zero.
        let mut b = ChunkBudget::new(10_000, 1 << 20);
        b.next(1, 5 << 20);
        assert_eq!(b.limit(), 1);
    }

    #[test]
    fn member_lists_are_quoted_as_show_create_table_prints_them() {
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            members_type(MemberKind::Enum, &m(&["a", "\u{1F600}", "it's", "b\\c"])),
            "enum('a','\u{1F600}','it''s','b\\\\c')"
        );
        assert_eq!(members_type(MemberKind::Set, &m(&["x"])), "set('x')");
        // What the shape parser reads back is what went in.
        let t = members_type(MemberKind::Enum, &m(&["a", "it's", "\u{1F600}"]));
        assert_eq!(
            shape::value_list(&t).unwrap(),
            m(&["a", "it's", "\u{1F600}"])
        );
    }
}
