//! The records that flow between the stages: row changes, schema changes, heartbeats and
//! snapshot markers. These are plain domain types; no Avro or Kafka type appears in them.
//!
//! Every record carries a [`StreamPosition`] that says exactly where it sits in the source's
//! history, so that a reader of the last record of a topic can resume right after it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::position::{BinlogPosition, Gtid, GtidPosition, ParsePositionError};
use crate::types::{Row, TableSchema};

/// The Kafka header with a record's kind: `row`, `ddl`, `heartbeat`, `snapshot` or `chunk`
/// ([`StreamRecord::kind`]).
pub const HEADER_KIND: &str = "continuum.kind";
/// The Kafka header with a record's [`StreamPosition`], in its text form. The payload carries
/// the same position, and a reader must find the two equal.
pub const HEADER_POS: &str = "continuum.pos";
/// The Kafka header a mirror adds to each record it copies: the record's offset in the source
/// cluster, in decimal. A mirror resumes after the offset its target topic's last record names.
pub const HEADER_MIRROR_OFFSET: &str = "continuum.mirror.offset";

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A row read by a snapshot.
    Read,
}

impl Op {
    /// Debezium's one-letter code: `c`, `u`, `d`, `r`.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }

    pub fn from_code(s: &str) -> Option<Op> {
        Some(match s {
            "c" => Op::Insert,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            _ => return None,
        })
    }
}

/// Where a change came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// `server_id` of the server that wrote the binlog event.
    pub server_id: u32,
    /// The source transaction's GTID; `None` for snapshot reads.
    pub gtid: Option<Gtid>,
    /// Full GTID position after the transaction (for snapshot reads: the snapshot's position).
    pub gtid_position: GtidPosition,
    /// GTID position just before the transaction, from which it can be re-read.
    pub resume_position: GtidPosition,
    pub binlog: BinlogPosition,
    /// Commit time of the source transaction, milliseconds since the epoch.
    pub commit_ts_ms: i64,
    /// Set on snapshot reads: the snapshot's id.
    pub snapshot_id: Option<String>,
}

/// The record's place within its source transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxPlace {
    /// 0-based index among the transaction's records.
    pub index: u64,
    /// Whether this is the transaction's last record.
    pub last: bool,
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    /// The table's shape at this event (from the binlog's TABLE_MAP, or the snapshot).
    pub table: Arc<TableSchema>,
    pub before: Option<Row>,
    pub after: Option<Row>,
    pub source: SourceInfo,
    /// `None` for the reads of a consistent snapshot, which belong to no source transaction. A
    /// chunk of an incremental snapshot (no GTID, a `snapshot_id`) has its rows' places in the
    /// chunk here: the chunk is read and written whole, like a transaction.
    pub tx: Option<TxPlace>,
}

impl ChangeEvent {
    /// The primary-key values of the row (after-image, or before-image for deletes).
    pub fn key(&self) -> Vec<&crate::types::Value> {
        let row = self.after.as_ref().or(self.before.as_ref());
        match row {
            Some(r) => self.table.primary_key.iter().map(|&i| &r[i]).collect(),
            None => Vec::new(),
        }
    }

    /// The primary key as `col=value, ...` ([`Value::describe`]), for messages.
    pub fn key_text(&self) -> String {
        let row = self.after.as_ref().or(self.before.as_ref());
        match row {
            Some(r) => self
                .table
                .primary_key
                .iter()
                .map(|&i| format!("{}={}", self.table.columns[i].name, r[i].describe()))
                .collect::<Vec<_>>()
                .join(", "),
            None => String::new(),
        }
    }
}

/// A DDL statement, in stream order. Inside a snapshot (`source.snapshot_id` set, no GTID) it is
/// a table's definition, `CREATE ... IF NOT EXISTS`, written before the table's rows: in a
/// consistent snapshot with `tx` `0, last`; at the start of a table's first chunk of an
/// incremental snapshot, as the chunk's first records (`last` never: the chunk's end is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// Default database of the session that ran the DDL (may be empty).
    pub database: String,
    pub ddl: String,
    pub source: SourceInfo,
    pub tx: TxPlace,
}

/// The source was at `position`, with nothing newer committed, at `ts_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub server_id: u32,
    pub position: GtidPosition,
    pub ts_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotPhase {
    Start,
    End,
}

/// Start or end of a consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMarker {
    pub snapshot_id: String,
    pub phase: SnapshotPhase,
    pub server_id: u32,
    /// The GTID position the snapshot is consistent with.
    pub position: GtidPosition,
    /// `db.table` of every table the snapshot covers.
    pub tables: Vec<String>,
    pub ts_ms: i64,
}

/// A key column's value exactly as the source returned it (MariaDB's own representation), so a
/// key range read on the source can be bound as parameters on either site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    Null,
    Int(i64),
    Uint(u64),
    Float(f32),
    Double(f64),
    /// Hexadecimal.
    Bytes(String),
    /// Year, month, day, hour, minute, second, microsecond.
    Date([u32; 7]),
    /// Negative, days, hours, minutes, seconds, microseconds.
    Time(bool, [u32; 5]),
}

/// The end of a chunk of an incremental snapshot, written right after the chunk's rows (with
/// the same snapshot id and position; its index is their count). The rows are every row of
/// `table` whose primary key lies after `from` (exclusive) up to `to` (inclusive), as of
/// `position`: a key of that range that is not among them is not in the source's table then.
/// `None` is open: from the table's first key, or to its last.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkEnd {
    pub snapshot_id: String,
    pub server_id: u32,
    /// `db.table`.
    pub table: String,
    /// The GTID position the chunk's rows are as of; the stream stands there.
    pub position: GtidPosition,
    /// Records of the chunk before this one: its rows, after the table's definitions on the
    /// table's first chunk (this record's index in the chunk).
    pub rows: u64,
    /// The table's primary-key columns, in key order: what `from` and `to` are values of.
    pub key: Vec<String>,
    pub from: Option<Vec<KeyPart>>,
    pub to: Option<Vec<KeyPart>>,
    pub ts_ms: i64,
}

/// Anything that travels in a changelog topic.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamRecord {
    Change(ChangeEvent),
    SchemaChange(SchemaChange),
    Heartbeat(Heartbeat),
    Snapshot(SnapshotMarker),
    ChunkEnd(ChunkEnd),
}

impl StreamRecord {
    /// The record's exact place in the source's history.
    pub fn position(&self) -> StreamPosition {
        match self {
            StreamRecord::Change(c) => match (c.source.gtid, c.tx) {
                (Some(gtid), Some(tx)) => StreamPosition::Txn {
                    gtid,
                    index: tx.index,
                    last: tx.last,
                    resume: c.source.resume_position.clone(),
                },
                (None, Some(tx)) => StreamPosition::Chunk {
                    id: c.source.snapshot_id.clone().unwrap_or_default(),
                    index: tx.index,
                    last: tx.last,
                    position: c.source.gtid_position.clone(),
                },
                _ => StreamPosition::Snapshot {
                    id: c.source.snapshot_id.clone().unwrap_or_default(),
                    position: c.source.gtid_position.clone(),
                },
            },
            StreamRecord::SchemaChange(s) => match (s.source.gtid, &s.source.snapshot_id) {
                (Some(gtid), _) => StreamPosition::Txn {
                    gtid,
                    index: s.tx.index,
                    last: s.tx.last,
                    resume: s.source.resume_position.clone(),
                },
                // A table definition at the start of a chunk of an incremental snapshot (never
                // the chunk's last record: its end is).
                (None, Some(id)) if !s.tx.last => StreamPosition::Chunk {
                    id: id.clone(),
                    index: s.tx.index,
                    last: false,
                    position: s.source.gtid_position.clone(),
                },
                // A table definition carried by a consistent snapshot.
                (None, id) => StreamPosition::Snapshot {
                    id: id.clone().unwrap_or_default(),
                    position: s.source.gtid_position.clone(),
                },
            },
            StreamRecord::Heartbeat(h) => StreamPosition::At(h.position.clone()),
            StreamRecord::Snapshot(m) => match m.phase {
                SnapshotPhase::Start => StreamPosition::Snapshot {
                    id: m.snapshot_id.clone(),
                    position: m.position.clone(),
                },
                SnapshotPhase::End => StreamPosition::At(m.position.clone()),
            },
            StreamRecord::ChunkEnd(c) => StreamPosition::Chunk {
                id: c.snapshot_id.clone(),
                index: c.rows,
                last: true,
                position: c.position.clone(),
            },
        }
    }

    /// The record's kind as its [`HEADER_KIND`] header carries it.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRecord::Change(_) => "row",
            StreamRecord::SchemaChange(_) => "ddl",
            StreamRecord::Heartbeat(_) => "heartbeat",
            StreamRecord::Snapshot(_) => "snapshot",
            StreamRecord::ChunkEnd(_) => "chunk",
        }
    }
}

/// Where a record sits in the source's history; carried in the `continuum.pos` header of every
/// record, so a reader can find its place without decoding the Avro payload.
///
/// Text forms (round-trip exactly):
/// - `txn:<gtid>:<index>:<last|more>:<resume position>` — an event of a source transaction;
/// - `at:<position>` — everything up to `position` is in the topic before this record
///   (heartbeats, snapshot ends);
/// - `snapshot:<id>:<position>` — part of a snapshot consistent with `position` that has not
///   ended yet (its start marker and its rows);
/// - `chunk:<id>:<index>:<last|more>:<position>` — a record of a chunk of incremental snapshot
///   `id`: the chunk's rows as they were at `position`, then its [`ChunkEnd`] (the `last` one),
///   written where the stream reached `position` (everything up to it is in the topic before
///   this record, nothing after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPosition {
    Txn {
        gtid: Gtid,
        index: u64,
        last: bool,
        resume: GtidPosition,
    },
    At(GtidPosition),
    Snapshot {
        id: String,
        position: GtidPosition,
    },
    Chunk {
        id: String,
        index: u64,
        last: bool,
        position: GtidPosition,
    },
}

impl StreamPosition {
    /// The position to resume from after this record, if the record ends a consistent point:
    /// a transaction's last event, a heartbeat, a snapshot's end, or a chunk's row (the stream
    /// is at the chunk's position on each of them).
    pub fn after(&self) -> Option<GtidPosition> {
        match self {
            StreamPosition::Txn {
                gtid,
                last: true,
                resume,
                ..
            } => Some(resume.with(*gtid)),
            StreamPosition::At(p) | StreamPosition::Chunk { position: p, .. } => Some(p.clone()),
            _ => None,
        }
    }

    /// Whether everything this record stands for is already contained in `applied`: its
    /// transaction's GTID is at or below `applied` in its domain, or its position is covered.
    /// Snapshot parts are never contained (a snapshot has no GTID of its own). A chunk's row is
    /// contained only once `applied` is past its position: at exactly its position the row may
    /// not be applied yet, and applying it again there is harmless (it is the row as it is at
    /// that position); past it, it would put back an older row.
    pub fn contained_in(&self, applied: &GtidPosition) -> bool {
        match self {
            StreamPosition::Txn { gtid, .. } => applied.contains(gtid),
            StreamPosition::At(p) => applied.covers(p),
            StreamPosition::Snapshot { .. } => false,
            StreamPosition::Chunk { position, .. } => {
                applied.covers(position) && applied != position
            }
        }
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamPosition::Txn {
                gtid,
                index,
                last,
                resume,
            } => write!(
                f,
                "txn:{gtid}:{index}:{}:{resume}",
                if *last { "last" } else { "more" }
            ),
            StreamPosition::At(p) => write!(f, "at:{p}"),
            StreamPosition::Snapshot { id, position } => write!(f, "snapshot:{id}:{position}"),
            StreamPosition::Chunk {
                id,
                index,
                last,
                position,
            } => write!(
                f,
                "chunk:{id}:{index}:{}:{position}",
                if *last { "last" } else { "more" }
            ),
        }
    }
}

impl FromStr for StreamPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            ParsePositionError {
            what: "stream position",
            input: s.to_owned(),
            expected: "txn:<gtid>:<index>:<last|more>:<position>, at:<position>, snapshot:<id>:<position> or chunk:<id>:<index>:<last|more>:<position>",
        }
        };
        let (kind, rest) = s.split_once(':').ok_or_else(err)?;
        match kind {
            "txn" => {
                let mut it = rest.splitn(4, ':');
                let (Some(g), Some(i), Some(l), Some(r)) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return Err(err());
                };
                Ok(StreamPosition::Txn {
                    gtid: g.parse().map_err(|_| err())?,
                    index: i.parse().map_err(|_| err())?,
                    last: match l {
                        "last" => true,
                        "more" => false,
                        _ => return Err(err()),
                    },
                    resume: r.parse().map_err(|_| err())?,
                })
            }
            "at" => Ok(StreamPosition::At(rest.parse().map_err(|_| err())?)),
            "snapshot" => {
                let (id, p) = rest.split_once(':').ok_or_else(err)?;
                if id.is_empty() {
                    return Err(err());
                }
                Ok(StreamPosition::Snapshot {
                    id: id.to_owned(),
                    position: p.parse().map_err(|_| err())?,
                })
            }
            "chunk" => {
                let mut it = rest.splitn(4, ':');
                let (Some(id), Some(i), Some(l), Some(p)) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return Err(err());
                };
                if id.is_empty() {
                    return Err(err());
                }
                Ok(StreamPosition::Chunk {
                    id: id.to_owned(),
                    index: i.parse().map_err(|_| err())?,
                    last: match l {
                        "last" => true,
                        "more" => false,
                        _ => return Err(err()),
                    },
                    position: p.parse().map_err(|_| err())?,
                })
            }
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Column, ColumnType, IntWidth, TextKind, Value};

    #[test]
    fn key_text_names_each_key_column_in_key_order() {
        let col = |name: &str, ty| Column {
            name: name.into(),
            ty,
            nullable: false,
        };
        let table = Arc::new(TableSchema {
            db: "d".into(),
            table: "t".into(),
            columns: vec![
                col(
                    "v",
                    ColumnType::Blob {
                        kind: crate::types::BlobKind::Blob,
                    },
                ),
                col(
                    "id",
                    ColumnType::Integer {
                        width: IntWidth::Int,
                        unsigned: false,
                    },
                ),
                col(
                    "k",
                    ColumnType::Text {
                        kind: TextKind::VarChar,
                    },
                ),
            ],
            primary_key: vec![2, 1],
        });
        let ev = |before, after| ChangeEvent {
            op: Op::Delete,
            table: table.clone(),
            before,
            after,
            source: SourceInfo {
                server_id: 1,
                gtid: None,
                gtid_position: GtidPosition::new(),
                resume_position: GtidPosition::new(),
                binlog: BinlogPosition::default(),
                commit_ts_ms: 0,
                snapshot_id: None,
            },
            tx: None,
        };
        let row = vec![
            Value::Bytes(vec![0xab; 40]),
            Value::Int(7),
            Value::Text("x".into()),
        ];
        assert_eq!(ev(Some(row), None).key_text(), "k='x', id=7");
        assert_eq!(ev(None, None).key_text(), "");
        assert_eq!(
            Value::Bytes(vec![0xab; 40]).describe(),
            format!("X'{}'…", "AB".repeat(32))
        );
        assert_eq!(Value::Null.describe(), "NULL");
    }

    #[test]
    fn stream_position_round_trips() {
        for s in [
            "txn:1-1-5:0:last:1-1-4,2-2-7",
            "txn:1-1-5:41:more:",
            "at:1-1-5,2-2-7",
            "at:",
            "snapshot:20261126T1200-3f:1-1-9",
            "chunk:r7-1733-2f:0:more:1-1-9,2-2-1",
            "chunk:r7-1733-2f:1023:last:",
        ] {
            let p: StreamPosition = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        for bad in [
            "",
            "txn:1-1-5:0:maybe:",
            "txn:1-1-5:x:last:",
            "snapshot::1-1-1",
            "chunk::0:last:1-1-1",
            "chunk:a:0:1-1-1",
            "chunk:a:x:last:1-1-1",
            "foo:1",
        ] {
            assert!(bad.parse::<StreamPosition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn after_is_defined_only_at_consistent_points() {
        let p: StreamPosition = "txn:1-1-5:3:last:1-1-4,2-2-7".parse().unwrap();
        assert_eq!(p.after().unwrap().to_string(), "1-1-5,2-2-7");
        let q: StreamPosition = "txn:1-1-5:3:more:1-1-4".parse().unwrap();
        assert_eq!(q.after(), None);
        let s: StreamPosition = "snapshot:a:1-1-4".parse().unwrap();
        assert_eq!(s.after(), None);
        // The stream stands at a chunk's position on each of its rows.
        for c in ["chunk:a:3:more:1-1-4", "chunk:a:4:last:1-1-4"] {
            let c: StreamPosition = c.parse().unwrap();
            assert_eq!(c.after().unwrap().to_string(), "1-1-4");
        }
    }

    #[test]
    fn containment_follows_gtid_domains() {
        let applied: GtidPosition = "1-1-5,2-2-7".parse().unwrap();
        let t = |s: &str| s.parse::<StreamPosition>().unwrap().contained_in(&applied);
        assert!(t("txn:1-1-5:0:more:1-1-4"));
        assert!(!t("txn:1-1-6:0:more:1-1-5"));
        assert!(t("at:1-1-5"));
        assert!(!t("at:1-1-5,3-3-1"));
        assert!(!t("snapshot:x:1-1-1"));
        // A chunk's row at exactly the applied position may still be due; past it, it is old.
        assert!(!t("chunk:x:0:last:1-1-5,2-2-7"));
        assert!(t("chunk:x:0:last:1-1-4,2-2-7"));
        assert!(t("chunk:x:0:more:1-1-5"));
        assert!(!t("chunk:x:0:last:1-1-6,2-2-7"));
        assert!(!t("chunk:x:0:last:1-1-5,2-2-7,3-3-1"));
    }

    #[test]
    fn op_codes_round_trip() {
        for op in [Op::Insert, Op::Update, Op::Delete, Op::Read] {
            assert_eq!(Op::from_code(op.code()), Some(op));
        }
        assert_eq!(Op::from_code("x"), None);
    }
}
