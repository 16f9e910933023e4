//! Where to start: decided from the last record of the topic and nothing else (no offsets store).
//!
//! - empty topic, an unfinished snapshot, or `--resnapshot`: take a new snapshot (on a
//!   read-only source an empty one, unless it finishes an abandoned snapshot of tables: see
//!   [`takes_table_snapshot`]);
//! - `txn:G:i:last:R`, `at:P` or `chunk:..:P`: stream from `R+G` (resp. `P`);
//! - the START or a definition of a mark (an empty snapshot holding definitions, id
//!   `mark-...`) at `P`: write the mark again, then stream from `P`;
//! - `txn:G:i:more:R`: stream from `R` and skip the first `i+1` events of `G`, which the topic
//!   holds already.
//!
//! Before reading the last record, the reader waits until the topic's end offset is stable, so
//! that a record still in flight from a producer that just died is counted.

use std::time::Duration;

use rdkafka::ClientConfig;

use continuum_common::kafka::{self, FetchedRecord};
use continuum_schemas::{Decoder, Gtid, GtidPosition, RecordAt, StreamPosition, StreamRecord};

use crate::error::ProducerError;
use crate::sink::{HEADER_KIND, HEADER_POS};
use crate::snapshot::MARK_ID_PREFIX;

/// The topic's last record and its position.
#[derive(Debug, Clone)]
pub struct LastRecord {
    pub offset: i64,
    pub position: StreamPosition,
    pub record: FetchedRecord,
}

/// Whether the snapshot that starts now reads the tables. A writable source always does. A
/// read-only source (a replica: its rows came from elsewhere) writes an empty START/END instead,
/// unless the topic ends inside an abandoned snapshot that covers tables: the replica emptied
/// those at its START and holds part of them, and only a complete snapshot loads them again.
pub fn takes_table_snapshot(read_only: bool, finishes_abandoned_table_snapshot: bool) -> bool {
    !read_only || finishes_abandoned_table_snapshot
}

/// Whether `last` belongs to an unfinished snapshot that covers tables: one of its rows, or its
/// START marker listing tables (decoded through the registry). An empty START (a read-only
/// source's marker) covers none.
pub async fn in_abandoned_table_snapshot(
    last: &LastRecord,
    topic: &str,
    decoder: &mut Decoder,
) -> Result<bool, ProducerError> {
    if !matches!(last.position, StreamPosition::Snapshot { .. }) {
        return Ok(false);
    }
    if last.record.header_str(HEADER_KIND) == Some("row") {
        return Ok(true);
    }
    let at = RecordAt {
        topic: topic.to_owned(),
        partition: 0,
        offset: last.offset,
    };
    let value = last.record.value.as_deref().unwrap_or_default();
    match decoder
        .decode(&at, last.record.key.as_deref(), value)
        .await?
    {
        StreamRecord::Snapshot(m) => Ok(!m.tables.is_empty()),
        _ => Ok(true),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Snapshot {
        reason: String,
    },
    At(GtidPosition),
    /// The topic ends inside a mark (an empty START/END holding definitions, `snapshot::
    /// mark_definitions`): write a mark with every captured table's definition at its position,
    /// and stream from there.
    Remark(GtidPosition),
    /// Re-read transaction `gtid` from `resume`, skipping its first `skip` events.
    Within {
        resume: GtidPosition,
        gtid: Gtid,
        skip: u64,
    },
}

/// Decides from the position of the topic's last record.
pub fn from_last(last: Option<StreamPosition>) -> Start {
    match last {
        None => Start::Snapshot {
            reason: "the topic is empty".into(),
        },
        // A mark cut short: no snapshot to abandon, only its definitions to write again.
        Some(StreamPosition::Snapshot { id, position }) if id.starts_with(MARK_ID_PREFIX) => {
            Start::Remark(position)
        }
        Some(StreamPosition::Snapshot { id, .. }) => Start::Snapshot {
            reason: format!("snapshot {id} did not finish; it is abandoned and a new one starts"),
        },
        // A chunk's row: the stream stood at the chunk's position. An unfinished chunk is read
        // again (from the snapshot's progress, `incremental`), so it needs nothing here.
        Some(StreamPosition::At(p)) | Some(StreamPosition::Chunk { position: p, .. }) => {
            Start::At(p)
        }
        Some(StreamPosition::Txn {
            gtid,
            last: true,
            resume,
            ..
        }) => Start::At(resume.with(gtid)),
        Some(StreamPosition::Txn {
            gtid,
            index,
            last: false,
            resume,
        }) => Start::Within {
            resume,
            gtid,
            skip: index + 1,
        },
    }
}

/// Reads the topic's last record and its position, once the end offset is stable.
pub async fn read_last_position(
    cfg: &ClientConfig,
    topic: &str,
) -> Result<Option<LastRecord>, ProducerError> {
    let cfg = cfg.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let rec = kafka::read_last_stable(&cfg, &topic, Duration::from_secs(10))
            .map_err(|source| ProducerError::Kafka { what: format!("reading the last record of {topic}"), source })?;
        let Some(rec) = rec else { return Ok(None) };
        let text = rec.header_str(HEADER_POS).ok_or_else(|| {
            ProducerError::Resume(format!(
                "the last record of {topic} (offset {}) has no {HEADER_POS} header: the topic holds records not written by continuum-producer; point the producer at its own topic",
                rec.offset
            ))
        })?;
        let pos: StreamPosition = text
            .parse()
            .map_err(|e| ProducerError::Resume(format!("the last record of {topic} (offset {}): {e}", rec.offset)))?;
        Ok(Some(LastRecord { offset: rec.offset, position: pos, record: rec }))
    })
    .await
    .expect("resume task")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<StreamPosition> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_read_only_source_snapshots_tables_only_to_finish_an_abandoned_table_snapshot() {
        assert!(takes_table_snapshot(false, false));
        assert!(takes_table_snapshot(false, true));
        assert!(
            !takes_table_snapshot(true, false),
            "a replica's rows came from elsewhere"
        );
        assert!(
            takes_table_snapshot(true, true),
            "the replica holds part of those tables"
        );
    }

    #[test]
    fn decisions() {
        assert!(matches!(from_last(None), Start::Snapshot { .. }));
        assert!(matches!(
            from_last(p("snapshot:abc:1-1-5")),
            Start::Snapshot { .. }
        ));
        assert_eq!(
            from_last(p("snapshot:mark-17-ab:1-1-5")),
            Start::Remark("1-1-5".parse().unwrap())
        );
        assert_eq!(
            from_last(p("chunk:r1-5:7:more:1-1-5,2-2-1")),
            Start::At("1-1-5,2-2-1".parse().unwrap())
        );
        assert_eq!(
            from_last(p("at:1-1-5,2-2-1")),
            Start::At("1-1-5,2-2-1".parse().unwrap())
        );
        assert_eq!(
            from_last(p("txn:1-1-6:4:last:1-1-5,2-2-1")),
            Start::At("1-1-6,2-2-1".parse().unwrap())
        );
        assert_eq!(
            from_last(p("txn:1-1-6:4:more:1-1-5")),
            Start::Within {
                resume: "1-1-5".parse().unwrap(),
                gtid: Gtid::new(1, 1, 6),
                skip: 5
            }
        );
    }
}
