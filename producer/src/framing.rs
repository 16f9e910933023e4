//! Transaction framing: turns the binlog reader's [`SourceEvent`]s into the changelog's records,
//! each with its place in its source transaction (index, and whether it is the last).
//!
//! Guarantees:
//! - A record is released only once what follows it is known (the next event of its transaction
//!   or the commit), so its `last` flag is always right, and memory holds one record whatever
//!   the transaction's size.
//! - Every record carries its transaction's GTID, the position before the transaction (from
//!   which it can be read again) and the position after it.
//! - Resuming inside a transaction whose first `skip` events the topic already holds
//!   ([`Framing::new`] with `within`), those events are not released again; the next one keeps
//!   its index. If the binlog no longer matches the topic (another transaction comes first, or
//!   the transaction now has fewer captured events), framing fails with
//!   [`ProducerError::Resume`] rather than write a duplicate or leave a transaction without its
//!   last record.
//!
//! Pure: no I/O. The pipeline sends what [`Framing::on_event`] releases, in order.

use continuum_schemas::{
    ChangeEvent, Gtid, GtidPosition, SchemaChange, SourceInfo, StreamRecord, TxPlace,
};

use crate::binlog::SourceEvent;
use crate::error::ProducerError;

/// What an event meant, for the pipeline's clock and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The reader is at the source's end of binlog.
    CaughtUp,
    /// A transaction began, or a row or schema change of it was read.
    Progress,
    /// A transaction committed; the position is now `position`. `completed` is true when this
    /// released the transaction's last record (false for a transaction with nothing captured).
    Commit {
        position: GtidPosition,
        completed: bool,
    },
}

/// The open transaction.
struct Tx {
    gtid: Gtid,
    resume: GtidPosition,
    /// `resume` with `gtid` applied: the position after the transaction.
    after: GtidPosition,
    commit_ts_ms: i64,
    server_id: u32,
    next_index: u64,
    /// Events of this transaction already in the topic (resume inside a transaction).
    skip: u64,
    /// The last record built but not yet released (its `last` flag depends on what follows).
    pending: Option<StreamRecord>,
}

impl Tx {
    fn source(&self, binlog: continuum_schemas::BinlogPosition) -> SourceInfo {
        SourceInfo {
            server_id: self.server_id,
            gtid: Some(self.gtid),
            gtid_position: self.after.clone(),
            resume_position: self.resume.clone(),
            binlog,
            commit_ts_ms: self.commit_ts_ms,
            snapshot_id: None,
        }
    }

    /// Holds `rec` as the transaction's newest record and releases the one before it (now known
    /// not to be the last), unless the topic already holds it.
    fn push(&mut self, rec: StreamRecord, out: &mut Vec<StreamRecord>) {
        let index = self.next_index;
        self.next_index += 1;
        if let Some(prev) = self.pending.take() {
            out.push(place(prev, index - 1, false));
        }
        if index >= self.skip {
            self.pending = Some(rec);
        }
    }
}

/// The framing state of one streaming session.
pub struct Framing {
    tx: Option<Tx>,
    /// Resume inside this transaction, whose first `n` events the topic holds.
    within: Option<(Gtid, u64)>,
}

impl Framing {
    /// `within`: the topic's last record is inside transaction `G`, of which it holds `n` events.
    pub fn new(within: Option<(Gtid, u64)>) -> Self {
        Framing { tx: None, within }
    }

    /// A transaction is open (a heartbeat now would carry the position before it).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// A resume inside a transaction is still to come (no heartbeat may precede it).
    pub fn resume_pending(&self) -> bool {
        self.within.is_some()
    }

    /// Takes one event; appends the records it releases to `out`, in order.
    pub fn on_event(
        &mut self,
        ev: SourceEvent,
        out: &mut Vec<StreamRecord>,
    ) -> Result<Seen, ProducerError> {
        match ev {
            SourceEvent::CaughtUp => Ok(Seen::CaughtUp),
            SourceEvent::Begin {
                gtid,
                resume,
                commit_ts_ms,
                server_id,
            } => {
                let skip = match self.within.take() {
                    Some((g, n)) if g == gtid => n,
                    Some((g, _)) => {
                        return Err(ProducerError::Resume(format!(
                            "the topic's last record is inside transaction {g}, but the binlog continues with {gtid} after {resume}; the source's binlog no longer matches the topic. Restart with --resnapshot"
                        )))
                    }
                    None => 0,
                };
                self.tx = Some(Tx {
                    gtid,
                    after: resume.with(gtid),
                    resume,
                    commit_ts_ms,
                    server_id,
                    next_index: 0,
                    skip,
                    pending: None,
                });
                Ok(Seen::Progress)
            }
            SourceEvent::Row {
                op,
                table,
                before,
                after,
                binlog,
            } => {
                let t = open(&mut self.tx, "row")?;
                let rec = StreamRecord::Change(ChangeEvent {
                    op,
                    table,
                    before,
                    after,
                    source: t.source(binlog),
                    tx: None,
                });
                t.push(rec, out);
                Ok(Seen::Progress)
            }
            SourceEvent::Ddl {
                database,
                ddl,
                binlog,
            } => {
                let t = open(&mut self.tx, "DDL")?;
                tracing::info!(gtid = %t.gtid, %database, ddl = %continuum_common::redact::redact(&ddl).chars().take(200).collect::<String>(), "schema change");
                let rec = StreamRecord::SchemaChange(SchemaChange {
                    database,
                    ddl,
                    source: t.source(binlog),
                    tx: TxPlace {
                        index: 0,
                        last: false,
                    },
                });
                t.push(rec, out);
                Ok(Seen::Progress)
            }
            SourceEvent::Commit { gtid, position } => {
                let mut completed = false;
                if let Some(mut t) = self.tx.take() {
                    if t.gtid != gtid {
                        return Err(ProducerError::Binlog(format!(
                            "commit of {gtid} while {} is open",
                            t.gtid
                        )));
                    }
                    if let Some(rec) = t.pending.take() {
                        out.push(place(rec, t.next_index - 1, true));
                        completed = true;
                    } else if t.skip > 0 {
                        return Err(ProducerError::Resume(format!(
                            "transaction {gtid} has {} captured events now, but the topic holds {} of them without its last; did producer.include/exclude change? Restart with --resnapshot",
                            t.next_index, t.skip
                        )));
                    }
                }
                if let Some((g, n)) = &self.within {
                    if *g == gtid {
                        return Err(ProducerError::Resume(format!(
                            "the topic holds {n} events of transaction {g}, but it has no captured events in the binlog now; did producer.include/exclude change? Restart with --resnapshot"
                        )));
                    }
                }
                Ok(Seen::Commit {
                    position,
                    completed,
                })
            }
        }
    }
}

/// The open transaction, for an event of kind `what` that belongs inside one.
fn open<'a>(tx: &'a mut Option<Tx>, what: &str) -> Result<&'a mut Tx, ProducerError> {
    tx.as_mut()
        .ok_or_else(|| ProducerError::Binlog(format!("{what} outside a transaction")))
}

/// `rec` with its place in its transaction.
fn place(rec: StreamRecord, index: u64, last: bool) -> StreamRecord {
    match rec {
        StreamRecord::Change(mut c) => {
            c.tx = Some(TxPlace { index, last });
            StreamRecord::Change(c)
        }
        StreamRecord::SchemaChange(mut s) => {
            s.tx = TxPlace { index, last };
            StreamRecord::SchemaChange(s)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_schemas::{BinlogPosition, Op, TableSchema, Value};
    use std::sync::Arc;

    fn gtid(seq: u64) -> Gtid {
        Gtid::new(1, 1, seq)
    }

    fn begin(seq: u64) -> SourceEvent {
        SourceEvent::Begin {
            gtid: gtid(seq),
            resume: format!("1-1-{}", seq - 1).parse().unwrap(),
            commit_ts_ms: 1_000,
            server_id: 1,
        }
    }

    fn commit(seq: u64) -> SourceEvent {
        SourceEvent::Commit {
            gtid: gtid(seq),
            position: format!("1-1-{seq}").parse().unwrap(),
        }
    }

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema::parse("d", "t", &["id int"], &["id"]).unwrap())
    }

    fn row(id: i64) -> SourceEvent {
        SourceEvent::Row {
            op: Op::Insert,
            table: table(),
            before: None,
            after: Some(vec![Value::Int(id)]),
            binlog: BinlogPosition::new("b.000001", 4 + id as u64),
        }
    }

    /// (index, last, id) of each released row record.
    fn places(out: &[StreamRecord]) -> Vec<(u64, bool, i64)> {
        out.iter()
            .map(|r| match r {
                StreamRecord::Change(c) => {
                    let place = c.tx.expect("a place");
                    let id = match &c.after.as_ref().expect("after")[0] {
                        Value::Int(i) => *i,
                        v => panic!("{v:?}"),
                    };
                    (place.index, place.last, id)
                }
                StreamRecord::SchemaChange(s) => (s.tx.index, s.tx.last, -1),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn feed(f: &mut Framing, events: Vec<SourceEvent>) -> Result<Vec<StreamRecord>, ProducerError> {
        let mut out = Vec::new();
        for ev in events {
            f.on_event(ev, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn a_record_is_released_once_the_next_is_known_and_only_the_final_one_is_last() {
        let mut f = Framing::new(None);
        let mut out = Vec::new();
        f.on_event(begin(5), &mut out).unwrap();
        f.on_event(row(1), &mut out).unwrap();
        assert!(out.is_empty(), "the first row waits for what follows it");
        assert!(f.in_transaction());
        f.on_event(row(2), &mut out).unwrap();
        f.on_event(row(3), &mut out).unwrap();
        assert_eq!(places(&out), vec![(0, false, 1), (1, false, 2)]);
        let seen = f.on_event(commit(5), &mut out).unwrap();
        assert_eq!(
            seen,
            Seen::Commit {
                position: "1-1-5".parse().unwrap(),
                completed: true
            }
        );
        assert_eq!(
            places(&out),
            vec![(0, false, 1), (1, false, 2), (2, true, 3)]
        );
        assert!(!f.in_transaction());
    }

    #[test]
    fn every_record_carries_its_gtid_and_the_positions_before_and_after_it() {
        let mut f = Framing::new(None);
        let out = feed(&mut f, vec![begin(8), row(1), commit(8)]).unwrap();
        let StreamRecord::Change(c) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(c.source.gtid, Some(gtid(8)));
        assert_eq!(c.source.resume_position.to_string(), "1-1-7");
        assert_eq!(c.source.gtid_position.to_string(), "1-1-8");
    }

    #[test]
    fn a_transaction_with_nothing_captured_releases_nothing() {
        let mut f = Framing::new(None);
        let mut out = Vec::new();
        let seen = f.on_event(commit(3), &mut out).unwrap();
        assert_eq!(
            seen,
            Seen::Commit {
                position: "1-1-3".parse().unwrap(),
                completed: false
            }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_schema_change_takes_its_place_among_the_rows() {
        let mut f = Framing::new(None);
        let ddl = SourceEvent::Ddl {
            database: "d".into(),
            ddl: "ALTER TABLE t ADD c INT".into(),
            binlog: BinlogPosition::new("b.000001", 100),
        };
        let out = feed(&mut f, vec![begin(2), row(1), ddl, commit(2)]).unwrap();
        assert_eq!(places(&out), vec![(0, false, 1), (1, true, -1)]);
    }

    #[test]
    fn resuming_inside_a_transaction_skips_what_the_topic_holds_and_keeps_the_indexes() {
        let mut f = Framing::new(Some((gtid(9), 2)));
        assert!(f.resume_pending());
        let out = feed(
            &mut f,
            vec![begin(9), row(1), row(2), row(3), row(4), commit(9)],
        )
        .unwrap();
        assert_eq!(places(&out), vec![(2, false, 3), (3, true, 4)]);
        assert!(!f.resume_pending());
    }

    #[test]
    fn resuming_after_the_last_event_of_the_topic_releases_only_the_rest() {
        // The topic holds events 0 and 1 of a transaction of 3, the last one missing.
        let mut f = Framing::new(Some((gtid(9), 2)));
        let out = feed(&mut f, vec![begin(9), row(1), row(2), row(3), commit(9)]).unwrap();
        assert_eq!(places(&out), vec![(2, true, 3)]);
    }

    #[test]
    fn a_binlog_that_no_longer_matches_the_topic_stops_the_resume() {
        let mut f = Framing::new(Some((gtid(9), 2)));
        let e = feed(&mut f, vec![begin(10)]).unwrap_err();
        assert!(
            matches!(&e, ProducerError::Resume(m) if m.contains("1-1-9") && m.contains("1-1-10")),
            "{e}"
        );

        // The transaction now has no more captured events than the topic holds: no last.
        let mut f = Framing::new(Some((gtid(9), 2)));
        let e = feed(&mut f, vec![begin(9), row(1), row(2), commit(9)]).unwrap_err();
        assert!(
            matches!(&e, ProducerError::Resume(m) if m.contains("holds 2")),
            "{e}"
        );

        // Nothing of it is captured any more.
        let mut f = Framing::new(Some((gtid(9), 2)));
        let e = feed(&mut f, vec![commit(9)]).unwrap_err();
        assert!(
            matches!(&e, ProducerError::Resume(m) if m.contains("no captured events")),
            "{e}"
        );
    }

    #[test]
    fn rows_outside_a_transaction_and_a_foreign_commit_are_errors() {
        let mut f = Framing::new(None);
        assert!(matches!(
            feed(&mut f, vec![row(1)]),
            Err(ProducerError::Binlog(_))
        ));
        let mut f = Framing::new(None);
        let e = feed(&mut f, vec![begin(4), row(1), commit(5)]).unwrap_err();
        assert!(
            matches!(&e, ProducerError::Binlog(m) if m.contains("commit of 1-1-5 while 1-1-4 is open")),
            "{e}"
        );
    }
}
