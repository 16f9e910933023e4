//! The binlog reader: connects to the source as a MariaDB replica by GTID
//! (`@mariadb_slave_capability=4`, `@slave_connect_state`), parses MariaDB's own GTID and
//! GTID_LIST events from their raw bytes, decodes row events through each TABLE_MAP's FULL
//! metadata, and turns the stream into [`SourceEvent`]s cut at transaction boundaries. Where a
//! transaction opens and closes is decided by `continuum_common::binlog::Framer`, which
//! `orphans` uses too.
//!
//! Guarantees: every transaction after the start position is reported in binlog order, each
//! ending in exactly one `Commit` (also transactions that produce nothing: `skip_replication`
//! ones, which Continuum itself applied, and those on uncaptured tables), so the caller always
//! knows the exact GTID position. A statement-based DML event, an XA transaction or a
//! compressed event stops the reader with an error instead of being skipped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts};

use continuum_schemas::{BinlogPosition, Gtid, GtidPosition, Op, Row, TableSchema};

use continuum_common::binlog::{
    gtid_dump, parse_gtid_event, parse_gtid_list, FrameInput, Framer, Step, MARIADB_GTID,
    MARIADB_GTID_LIST, SKIP_REPLICATION_FLAG,
};
use continuum_common::redact::redact;
use mysql_common::io::ParseBuf;

use crate::rows::RowLayout;

use crate::boundary::Boundary;
use crate::error::{DbContext, ProducerError};
use crate::shape::{self, Charsets};
use continuum_common::config::NoPrimaryKey;
use continuum_common::db;
use continuum_common::filter::TableFilter;

/// MariaDB event types the crate does not decode.
const ANNOTATE_ROWS: u8 = 160;
const BINLOG_CHECKPOINT: u8 = 161;
const START_ENCRYPTION: u8 = 164;
const QUERY_COMPRESSED: u8 = 165;
const ROWS_COMPRESSED_FIRST: u8 = 166;
const ROWS_COMPRESSED_LAST: u8 = 171;
const HEARTBEAT: u8 = 27;
const TABLE_MAP: u8 = 19;
const ROTATE: u8 = 4;
const FORMAT_DESCRIPTION: u8 = 15;

/// What the reader reports, in binlog order.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// A transaction starts. `resume` is the GTID position just before it.
    Begin {
        gtid: Gtid,
        resume: GtidPosition,
        commit_ts_ms: i64,
        server_id: u32,
    },
    Row {
        op: Op,
        table: Arc<TableSchema>,
        before: Option<Row>,
        after: Option<Row>,
        binlog: BinlogPosition,
    },
    Ddl {
        database: String,
        ddl: String,
        binlog: BinlogPosition,
    },
    /// The transaction `gtid` is complete; the position is now `position`. Also sent for
    /// transactions that produced no Begin (nothing captured in them).
    Commit { gtid: Gtid, position: GtidPosition },
    /// The server had nothing newer to send: the source is at the reader's position now.
    CaughtUp,
}

/// What the reader keeps of the transaction the framer has open.
struct OpenTx {
    gtid: Gtid,
    /// Written by a `skip_replication` session: nothing in it is captured.
    flagged: bool,
    began: bool,
    commit_ts_ms: i64,
    server_id: u32,
    resume: GtidPosition,
}

/// Settings the reader needs.
pub struct ReaderSettings {
    pub target: String,
    pub server_id: u32,
    pub heartbeat_period: Duration,
    pub filter: TableFilter,
    pub no_pk: NoPrimaryKey,
    pub charsets: Charsets,
    pub crc32: bool,
}

/// A table id's last TABLE_MAP: its bytes, and the captured table's shape and row layout
/// (None when the table is not captured).
struct Mapped {
    raw: Vec<u8>,
    table: Option<(Arc<TableSchema>, Arc<RowLayout>)>,
}

pub struct BinlogReader {
    stream: BinlogStream,
    s: ReaderSettings,
    file: String,
    seen_fde: bool,
    position: GtidPosition,
    framer: Framer,
    tx: Option<OpenTx>,
    /// table_id -> what its last TABLE_MAP said.
    tables: HashMap<u64, Mapped>,
    /// Interned shapes, so an unchanged table keeps one `Arc` (and one registry lookup).
    shapes: HashMap<TableSchema, Arc<TableSchema>>,
    /// Statements that were classified as not replicated, logged once each kind.
    pub last_event_ts_ms: i64,
    /// Where the reader stands between transactions, in binlog coordinates.
    boundary: Boundary,
}

impl BinlogReader {
    /// Connects and requests the binlog after `position`.
    pub async fn connect(
        opts: Opts,
        position: &GtidPosition,
        s: ReaderSettings,
    ) -> Result<Self, ProducerError> {
        let target = s.target.clone();
        let conn = Conn::new(db::replica_opts(&opts)).await.db(&target)?;
        let period_ns = s.heartbeat_period.as_nanos().max(1_000_000) as u64;
        let settings = [
            "SET @slave_gtid_strict_mode=1".to_owned(),
            format!("SET @master_heartbeat_period={period_ns}"),
        ];
        let stream = gtid_dump(conn, s.server_id, position, false, &settings)
            .await
            .map_err(|e| map_stream_error(e, &target, position))?;
        tracing::info!(position = %position, "streaming the binlog");
        Ok(BinlogReader {
            stream,
            s,
            file: String::new(),
            seen_fde: false,
            position: position.clone(),
            framer: Framer::new(),
            tx: None,
            tables: HashMap::new(),
            shapes: HashMap::new(),
            last_event_ts_ms: 0,
            boundary: Boundary::default(),
        })
    }

    /// The position after the last complete transaction.
    pub fn position(&self) -> &GtidPosition {
        &self.position
    }

    /// Where the reader stands between transactions, if it does: outside any transaction, or
    /// at the start of one of which nothing was reported yet (its GTID event, or events of
    /// tables not captured). Inside a transaction that has been reported, `None`.
    pub fn boundary(&self) -> Option<&Boundary> {
        match &self.tx {
            Some(t) if t.began => None,
            _ => Some(&self.boundary),
        }
    }

    /// Reads the next binlog event and appends what it means to `out`.
    pub async fn next(&mut self, out: &mut Vec<SourceEvent>) -> Result<(), ProducerError> {
        let ev = match self.stream.next().await {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return Err(map_stream_error(e, &self.s.target, &self.position)),
            None => {
                return Err(ProducerError::Db {
                    target: self.s.target.clone(),
                    source: mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed),
                })
            }
        };
        self.handle(&ev, out)
    }

    /// Whether `data` is byte for byte the TABLE_MAP last seen for its table id (the first six
    /// bytes; a misread id only costs a full decode, since all the bytes must match).
    fn same_table_map(&self, data: &[u8]) -> bool {
        let Some(id) = data.get(..6) else {
            return false;
        };
        let id = id
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        self.tables.get(&id).is_some_and(|m| m.raw == data)
    }

    fn binlog_pos(&self, ev: &Event) -> BinlogPosition {
        BinlogPosition::new(self.file.clone(), ev.header().log_pos() as u64)
    }

    fn handle(&mut self, ev: &Event, out: &mut Vec<SourceEvent>) -> Result<(), ProducerError> {
        let h = ev.header();
        let ty = h.event_type_raw();
        if h.timestamp() != 0 {
            self.last_event_ts_ms = h.timestamp() as i64 * 1000;
        }
        // An event outside any transaction: the binlog is read to its end with no transaction
        // in between. A transaction's first (GTID) event: to its start.
        if h.log_pos() != 0 {
            let end = h.log_pos() as u64;
            if ty == MARIADB_GTID {
                let start = end.saturating_sub(u64::from(h.event_size()));
                self.boundary.read_to(&self.file, start);
            } else if self.tx.is_none() && ty != ROTATE {
                self.boundary.read_to(&self.file, end);
            }
        }
        match ty {
            MARIADB_GTID => {
                let (gtid, flags) =
                    parse_gtid_event(ev.data(), h.server_id()).map_err(ProducerError::Binlog)?;
                self.framer
                    .feed(FrameInput::Gtid {
                        gtid,
                        flags,
                        event_flags: h.flags_raw(),
                    })
                    .map_err(|e| ProducerError::Binlog(e.to_string()))?;
                self.tx = Some(OpenTx {
                    gtid,
                    flagged: h.flags_raw() & SKIP_REPLICATION_FLAG != 0,
                    began: false,
                    commit_ts_ms: h.timestamp() as i64 * 1000,
                    server_id: h.server_id(),
                    resume: self.position.clone(),
                });
                return Ok(());
            }
            MARIADB_GTID_LIST => {
                let list = parse_gtid_list(ev.data()).map_err(ProducerError::Binlog)?;
                tracing::debug!(file = %self.file, gtid_list = %list, position = %self.position, "binlog GTID list");
                return Ok(());
            }
            BINLOG_CHECKPOINT | ANNOTATE_ROWS | START_ENCRYPTION => return Ok(()),
            // A transaction maps each table it touches again, nearly always with the same
            // bytes: then the shape and layout decoded before still hold.
            TABLE_MAP if self.same_table_map(ev.data()) => return Ok(()),
            HEARTBEAT => {
                if self.tx.is_none() {
                    out.push(SourceEvent::CaughtUp);
                }
                return Ok(());
            }
            QUERY_COMPRESSED | ROWS_COMPRESSED_FIRST..=ROWS_COMPRESSED_LAST => {
                return Err(ProducerError::Preflight {
                    setting: "log_bin_compress".into(),
                    expected: "OFF".into(),
                    actual: "ON (a compressed binlog event arrived)".into(),
                    fix: "SET GLOBAL log_bin_compress=OFF on the source; compressed events are not decoded".into(),
                });
            }
            FORMAT_DESCRIPTION => {
                self.seen_fde = true;
                return Ok(());
            }
            ROTATE => {
                if let Ok(Some(EventData::RotateEvent(r))) = ev.read_data() {
                    let mut name = r.name_raw().to_vec();
                    // mysql_async#189: the first (fake) ROTATE arrives before the format
                    // description, so its CRC32 trailer is read as part of the name.
                    if !self.seen_fde && self.s.crc32 && name.len() > 4 {
                        name.truncate(name.len() - 4);
                    }
                    self.file = String::from_utf8_lossy(&name).into_owned();
                    self.boundary.read_to(&self.file, r.position());
                }
                return Ok(());
            }
            _ => {}
        }
        let data = ev
            .read_data()
            .map_err(|e| ProducerError::Binlog(format!("undecodable event of type {ty}: {e}")))?;
        match data {
            Some(EventData::TableMapEvent(tme)) => {
                let id = tme.table_id();
                let db = tme.database_name();
                let table = tme.table_name();
                let raw = ev.data().to_vec();
                if !self.s.filter.captures(&db, &table) {
                    self.tables.insert(id, Mapped { raw, table: None });
                    return Ok(());
                }
                let shape = shape::from_table_map(&tme, &self.s.charsets)?;
                if shape.primary_key.is_empty() {
                    match self.s.no_pk {
                        NoPrimaryKey::Replicate => {}
                        NoPrimaryKey::Refuse => {
                            return Err(ProducerError::NoPrimaryKey {
                                tables: shape.qualified_name(),
                            })
                        }
                        NoPrimaryKey::Exclude => {
                            tracing::warn!(table = %shape.qualified_name(), "table has no primary key; its rows are not captured (tables_without_primary_key = exclude)");
                            self.s.filter.exclude_table(shape.qualified_name());
                            self.tables.insert(id, Mapped { raw, table: None });
                            return Ok(());
                        }
                    }
                }
                let shape = match self.shapes.get(&shape) {
                    Some(s) => s.clone(),
                    None => {
                        let a = Arc::new(shape.clone());
                        self.shapes.insert(shape, a.clone());
                        a
                    }
                };
                let layout =
                    RowLayout::from_table_map(&tme).map_err(|reason| shape::UnsupportedColumn {
                        table: shape.qualified_name(),
                        column: "*".into(),
                        ty: "?".into(),
                        reason,
                    })?;
                self.tables.insert(
                    id,
                    Mapped {
                        raw,
                        table: Some((shape, Arc::new(layout))),
                    },
                );
            }
            Some(EventData::RowsEvent(rows)) => self.rows(ev, &rows, out)?,
            Some(EventData::XidEvent(_)) => {
                if let Step::Closed(_) = self
                    .framer
                    .feed(FrameInput::Xid)
                    .map_err(|e| ProducerError::Binlog(e.to_string()))?
                {
                    self.commit(ev, out);
                }
            }
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query();
                let closes = match self
                    .framer
                    .feed(FrameInput::Query(&sql))
                    .map_err(|e| ProducerError::Binlog(e.to_string()))?
                {
                    Step::Statement { closed } => closed.is_some(),
                    Step::Closed(_) => {
                        self.commit(ev, out);
                        return Ok(());
                    }
                    Step::Xa => {
                        return Err(ProducerError::Binlog(format!(
                            "XA transaction in the binlog at {}: XA transactions are not supported; the statement was: {}",
                            self.binlog_pos(ev),
                            redact(&sql)
                        )));
                    }
                    Step::Opened | Step::Within | Step::Outside => return Ok(()),
                };
                let upper: String = sql
                    .trim_start()
                    .chars()
                    .take(24)
                    .collect::<String>()
                    .to_ascii_uppercase();
                let dml = ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD "]
                    .iter()
                    .any(|k| upper.starts_with(k));
                let flagged = self.tx.as_ref().is_some_and(|t| t.flagged)
                    || h.flags_raw() & SKIP_REPLICATION_FLAG != 0;
                if dml && !flagged {
                    return Err(ProducerError::Preflight {
                        setting: "binlog_format".into(),
                        expected: "ROW for every session".into(),
                        actual: format!("a statement-based event at {}: {}", self.binlog_pos(ev), redact(&sql).chars().take(200).collect::<String>()),
                        fix: "some session wrote with binlog_format=STATEMENT or MIXED; forbid it (it needs the SUPER/BINLOG ADMIN privilege) and re-snapshot with --resnapshot, since that change was not captured".into(),
                    });
                }
                let database = q.schema().into_owned();
                let captured = !flagged
                    && match self.s.filter.captures_ddl(&sql, &database) {
                        Ok(captured) => captured,
                        Err(why) => {
                            // Only the statement's first words: the rest may hold a password
                            // (CREATE USER ... IDENTIFIED BY '...' is in the binlog as typed).
                            tracing::debug!(statement = %sql.split_whitespace().take(2).collect::<Vec<_>>().join(" "), why, "statement not replicated");
                            false
                        }
                    };
                if captured {
                    self.begin(out);
                    out.push(SourceEvent::Ddl {
                        database,
                        ddl: sql.into_owned(),
                        binlog: self.binlog_pos(ev),
                    });
                }
                if closes {
                    self.commit(ev, out);
                }
            }
            Some(EventData::StopEvent)
            | Some(EventData::IntvarEvent(_))
            | Some(EventData::RandEvent(_))
            | Some(EventData::UserVarEvent(_))
            | None => {}
            Some(other) => {
                tracing::debug!(
                    event_type = ty,
                    "ignoring binlog event {:?}",
                    std::mem::discriminant(&other)
                );
            }
        }
        Ok(())
    }

    fn begin(&mut self, out: &mut Vec<SourceEvent>) {
        if let Some(t) = &mut self.tx {
            if !t.began {
                t.began = true;
                out.push(SourceEvent::Begin {
                    gtid: t.gtid,
                    resume: t.resume.clone(),
                    commit_ts_ms: t.commit_ts_ms,
                    server_id: t.server_id,
                });
            }
        }
    }

    /// The open transaction ends with event `ev`.
    fn commit(&mut self, ev: &Event, out: &mut Vec<SourceEvent>) {
        self.boundary
            .committed(&self.file, u64::from(ev.header().log_pos()));
        if let Some(t) = self.tx.take() {
            self.position.advance(t.gtid);
            out.push(SourceEvent::Commit {
                gtid: t.gtid,
                position: self.position.clone(),
            });
        }
    }

    fn rows(
        &mut self,
        ev: &Event,
        rows: &RowsEventData<'_>,
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), ProducerError> {
        if self.tx.as_ref().is_none_or(|t| t.flagged) {
            return Ok(());
        }
        let table_id = rows.table_id();
        let Some(mapped) = self.tables.get(&table_id) else {
            return Err(ProducerError::Binlog(format!(
                "rows event for table id {table_id} without a TABLE_MAP"
            )));
        };
        let Some((shape, layout)) = mapped.table.clone() else {
            return Ok(());
        };
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => Op::Update,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
            RowsEventData::PartialUpdateRowsEvent(_) => {
                return Err(ProducerError::Binlog(
                    "partial JSON update rows event (MySQL only)".into(),
                ))
            }
        };
        let binlog = self.binlog_pos(ev);
        let before_cols: Option<Vec<bool>> = rows
            .columns_before_image()
            .map(|b| b.iter().map(|x| *x).collect());
        let after_cols: Option<Vec<bool>> = rows
            .columns_after_image()
            .map(|b| b.iter().map(|x| *x).collect());
        let at = |e: ProducerError| match e {
            ProducerError::Binlog(m) => ProducerError::Binlog(format!("{m} at {binlog}")),
            other => other,
        };
        let mut buf = ParseBuf(rows.rows_data());
        let mut decoded = Vec::new();
        while !buf.is_empty() {
            let mut image = |cols: &Option<Vec<bool>>| -> Result<Option<Row>, ProducerError> {
                cols.as_ref()
                    .map(|c| layout.read_image(&shape, c, &mut buf).map_err(at))
                    .transpose()
            };
            let before = image(&before_cols)?;
            let after = image(&after_cols)?;
            decoded.push((before, after));
        }
        self.begin(out);
        for (before, after) in decoded {
            out.push(SourceEvent::Row {
                op,
                table: shape.clone(),
                before,
                after,
                binlog: binlog.clone(),
            });
        }
        Ok(())
    }
}

/// The GTID position at binlog coordinates `file`:`pos` (a transaction boundary), read over a
/// replication connection as a replica would: the file's GTID_LIST event (the position before
/// the file), then each GTID event that ends at or before `pos`. This is what
/// `BINLOG_GTID_POS(file, pos)` computes, without its limit: the server reads the file with the
/// session's `max_allowed_packet` and gives NULL when an event before `pos` is larger.
/// `server_id` is the replica server id to register with.
pub async fn gtid_position_at(
    opts: &Opts,
    target: &str,
    server_id: u32,
    file: &str,
    pos: u64,
) -> Result<GtidPosition, ProducerError> {
    let mut conn = Conn::new(db::replica_opts(opts)).await.db(target)?;
    conn.query_drop("SET @mariadb_slave_capability=4")
        .await
        .db(target)?;
    let request = BinlogStreamRequest::new(server_id)
        .with_filename(file.as_bytes())
        .with_pos(4u64)
        .with_non_blocking();
    let start = GtidPosition::new();
    let mut stream = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| map_stream_error(e, target, &start))?;
    let mut position: Option<GtidPosition> = None;
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| map_stream_error(e, target, &start))?;
        let h = ev.header();
        let end = h.log_pos() as u64;
        if end == 0 {
            continue; // the fake ROTATE that starts every stream
        }
        if end > pos {
            break;
        }
        match h.event_type_raw() {
            MARIADB_GTID_LIST if position.is_none() => {
                position = Some(parse_gtid_list(ev.data()).map_err(ProducerError::Binlog)?);
            }
            MARIADB_GTID => {
                let (gtid, _) =
                    parse_gtid_event(ev.data(), h.server_id()).map_err(ProducerError::Binlog)?;
                position
                    .as_mut()
                    .ok_or_else(|| {
                        ProducerError::Binlog(format!(
                            "{file} has a GTID event at {end} before its GTID_LIST event"
                        ))
                    })?
                    .advance(gtid);
            }
            _ => {}
        }
    }
    position.ok_or_else(|| {
        ProducerError::Snapshot(format!(
            "no GTID_LIST event in the binlog file {file} of {target} before position {pos}: cannot tell the snapshot's GTID position"
        ))
    })
}

/// The statements in the binlog after `position`, up to its current end, that change the
/// definition of a captured table or database (by `filter`), as `GTID: statement` with
/// credentials redacted. Every session's count, `skip_replication` ones too: a definition
/// changed all the same. `server_id` is the replica server id to register with.
pub async fn ddl_after(
    opts: &Opts,
    target: &str,
    server_id: u32,
    position: &GtidPosition,
    filter: &TableFilter,
) -> Result<Vec<String>, ProducerError> {
    let conn = Conn::new(db::replica_opts(opts)).await.db(target)?;
    let mut stream = gtid_dump(conn, server_id, position, true, &[])
        .await
        .map_err(|e| map_stream_error(e, target, position))?;
    let mut framer = Framer::new();
    let mut changed = Vec::new();
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| map_stream_error(e, target, position))?;
        let h = ev.header();
        let step = match h.event_type_raw() {
            MARIADB_GTID => {
                let (gtid, flags) =
                    parse_gtid_event(ev.data(), h.server_id()).map_err(ProducerError::Binlog)?;
                framer.feed(FrameInput::Gtid {
                    gtid,
                    flags,
                    event_flags: h.flags_raw(),
                })
            }
            _ => match ev.read_data() {
                Ok(Some(EventData::QueryEvent(q))) => {
                    let gtid = framer.open().map(|f| f.gtid);
                    let sql = q.query();
                    let step = framer.feed(FrameInput::Query(&sql));
                    if let (Ok(Step::Statement { .. }), Some(gtid)) = (&step, gtid) {
                        if filter.captures_ddl(&sql, &q.schema()) == Ok(true) {
                            changed.push(format!(
                                "{gtid}: {}",
                                redact(&sql).chars().take(200).collect::<String>()
                            ));
                        }
                    }
                    step
                }
                Ok(Some(EventData::XidEvent(_))) => framer.feed(FrameInput::Xid),
                _ => framer.feed(FrameInput::Other),
            },
        };
        step.map_err(|e| ProducerError::Binlog(e.to_string()))?;
    }
    Ok(changed)
}

fn map_stream_error(e: mysql_async::Error, target: &str, position: &GtidPosition) -> ProducerError {
    if db::is_packet_too_large(&e) {
        return ProducerError::PacketTooLarge {
            target: target.to_owned(),
            position: position.to_string(),
            limit: db::BINLOG_MAX_PACKET,
            detail: e.to_string(),
        };
    }
    if let mysql_async::Error::Server(s) = &e {
        if s.code == 1236 {
            return ProducerError::PositionRefused {
                target: target.to_owned(),
                position: position.to_string(),
                refusal: continuum_common::binlog::refusal_of(&s.message),
                message: s.message.clone(),
            };
        }
    }
    ProducerError::Db {
        target: target.to_owned(),
        source: e,
    }
}
