//! The apply state machine: which records go into which MariaDB transaction, and what the
//! checkpoint says after each commit. It is pure: it takes each decoded record ([`Incoming`]),
//! a signal, a batch deadline or a failure, and answers with the [`Action`]s to carry out, in
//! order. The executor (`executor.rs`) does the MariaDB I/O and reports each commit back
//! ([`Session::committed`]).
//!
//! A record is handled in two steps: [`Session::on_record`] gives the work it needs (its row,
//! its schema change, the tables a snapshot empties, and the commits that must come before);
//! once that work is done, [`Session::record_done`] moves the checkpoint past the record and
//! gives the commits that follow. So a record whose work fails never moves the checkpoint: the
//! error path ([`Session::on_record_error`]) commits only what came before it.
//!
//! The rules it keeps (the correctness argument of apply):
//! - **Transactions whole.** A source transaction's events arrive as indexes `0, 1, ..` with
//!   `last` on the final one. A commit is only ever asked for when no transaction is open, so
//!   no MariaDB commit holds part of one. An event that does not follow the open transaction
//!   (another GTID, or an index gap) is a fatal record error.
//! - **The checkpoint names a boundary.** `pending` is the checkpoint of the last consistent
//!   point passed (a transaction's last event, a heartbeat, a snapshot row or marker); a commit
//!   writes it with the rows before it. So the checkpoint's `next_offset` always starts
//!   something, and a crash at any instant resumes exactly.
//! - **Idempotent.** A transaction whose GTID the checkpoint's position holds is skipped, unless
//!   a replay suspended the skip (`replay_until`) and its position is not passed yet. A
//!   transaction first met at an index above 0 must be one the position holds (its first
//!   events were applied before); otherwise its start is missing and apply stops.
//! - **Schema changes between commits.** A schema change runs between two commits: the batch
//!   before it commits, it runs, and the checkpoint past it commits at once. `CREATE TABLE ...
//!   SELECT` is one source transaction (the statement, then the new table's rows): the statement
//!   runs, the rows follow in a MariaDB transaction, and the checkpoint commits with the last of
//!   them. A crash in between runs the statement again, which counts as applied once the table is
//!   there (`ddl.rs`), and the rows are applied again whole.
//! - **Snapshots.** START empties the listed tables in the same commit that records "loading";
//!   rows load while the snapshot is open; END sets the GTID position to the snapshot's. A START
//!   that arrives inside an open transaction means the producer abandoned that transaction: its
//!   events are discarded.
//! - **Chunks of incremental snapshots** come between transactions: rows as they were at the
//!   chunk's position, where the stream stands, applied as `REPLACE`s, then the chunk's end,
//!   which deletes the replica's rows of the chunk's key range that are not among them. The
//!   end is the consistent point: the checkpoint stays before the chunk until then, so a new
//!   session applies the chunk from its first row and knows all its keys. A chunk older than
//!   the replica (the checkpoint is past its position) is skipped whole. A chunk cut short by
//!   the producer's crash has no end: its rows are right as of its position, nothing is deleted
//!   for it, and the producer reads the chunk again further on.
//! - **Redo, never guess.** A failure inside a batch rolls it back and asks for a new session
//!   from the committed checkpoint with [`Directives`]: stop before the failing transaction, go
//!   row by row to name the failing record, or discard an abandoned transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use continuum_common::config::DdlPolicy;
use continuum_schemas::{
    ChangeEvent, ChunkEnd, Gtid, GtidPosition, Op, SchemaChange, SnapshotMarker, SnapshotPhase,
    StreamPosition, StreamRecord, TableSchema, Value,
};

use crate::checkpoint::{merge_max, Checkpoint, LoadingSnapshot};
use crate::error::{ApplyError, RecordContext};
use crate::metrics::OpCounts;
use crate::reader::{gtid_text, Incoming};

/// When a batch commits: whichever limit is reached first, at a consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub rows: usize,
    pub transactions: usize,
    pub bytes: usize,
    pub wait: Duration,
}

/// Why an apply run ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `--until-caught-up`: everything the topic held at start is applied.
    CaughtUp { offset: i64 },
    /// `replay --until-time` reached: the record at `offset` is newer.
    UntilTime { offset: i64, until_ms: i64 },
    /// A shutdown signal.
    Signal { offset: i64 },
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    Done(Outcome),
    /// The directive's `stop_before` was reached.
    StoppedBefore,
    /// Rolled back; run again with these directives (and then fail with the error, if any).
    Redo(Directives, Option<ApplyError>),
}

/// In-memory instructions for the next session, after a rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// Commit everything before this offset, then end the session.
    pub stop_before: Option<i64>,
    /// Mark `until_reached` when stopping at `stop_before`.
    pub until_at_stop: Option<i64>,
    /// Offsets to ignore: transactions the producer abandoned.
    pub discard: Vec<(i64, i64)>,
    /// Statement per row and commit per source transaction through this offset, to find the
    /// record behind a failed multi-row statement; with the original error.
    pub diagnose: Option<(i64, String)>,
}

/// Rows, transactions and bytes of the batch being built, for the commit's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub ops: OpCounts,
    pub txns: u64,
    pub skipped: u64,
    pub bytes: usize,
}

/// One commit: the batch's statements with this checkpoint row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub checkpoint: Checkpoint,
    pub stats: BatchStats,
}

/// What the executor does, in order.
#[derive(Debug)]
pub enum Action {
    /// Buffer the statements of the current record's row change. `allow_missing`: columns the
    /// replica no longer has are left out (re-applying history); `diagnose`: one statement per
    /// row, sent at once, so a refusal names this record.
    Row { allow_missing: bool, diagnose: bool },
    /// Commit what is buffered with the checkpoint; the executor commits only if there is
    /// anything (statements, or a checkpoint that moved) and reports it with
    /// [`Session::committed`].
    Commit(Box<Commit>),
    /// Roll back what is buffered or sent of the MariaDB transaction.
    Rollback,
    /// Run the current record's schema change under `ddl` (apply: run it; skip: log it).
    SchemaChange {
        at: Box<RecordContext>,
        ddl: DdlPolicy,
    },
    /// The current record ends a chunk of an incremental snapshot ([`ChunkEnd`]): delete the
    /// replica's rows of its key range whose primary key is not among `keep` (the chunk's
    /// rows, of `table`), after what is buffered.
    CleanRange {
        keep: Vec<Vec<Value>>,
        table: Option<Arc<TableSchema>>,
    },
    /// Empty these tables (`db`, `table`) for snapshot `id`; a missing table is fine.
    EmptyTables {
        id: String,
        tables: Vec<(String, String)>,
    },
    /// The session ends here.
    End(SessionEnd),
    /// Stop with this error (after the actions before it).
    Fail(ApplyError),
}

/// Where a record stands in its source transaction: the fields of a `StreamPosition::Txn`.
#[derive(Debug, Clone, Copy)]
struct InTxn<'a> {
    gtid: Gtid,
    index: u64,
    last: bool,
    resume: &'a GtidPosition,
}

impl<'a> InTxn<'a> {
    fn of(pos: &'a StreamPosition) -> Option<Self> {
        match pos {
            StreamPosition::Txn {
                gtid,
                index,
                last,
                resume,
            } => Some(InTxn {
                gtid: *gtid,
                index: *index,
                last: *last,
                resume,
            }),
            _ => None,
        }
    }

    /// What is left to do once the event is handled: `counted` if its row was sent.
    fn after(&self, commit_ts_ms: i64, counted: bool) -> After {
        After::TxnEvent {
            gtid: self.gtid,
            last: self.last,
            resume: self.resume.clone(),
            commit_ts_ms,
            counted,
        }
    }
}

#[derive(Debug, Clone)]
struct OpenTxn {
    gtid: Gtid,
    next_index: u64,
    first_offset: i64,
    skip: bool,
    /// Rows of it sent or buffered.
    rows: usize,
    /// It began with a schema change that ran (`CREATE TABLE ... SELECT`): it commits as soon as
    /// it ends, so the new table's rows follow the table closely.
    ran_ddl: bool,
}

/// A chunk of an incremental snapshot being applied: what its end needs to clean its key range.
#[derive(Debug, Clone)]
struct OpenChunk {
    id: String,
    next_index: u64,
    first_offset: i64,
    /// Its first rows came before this session (a replay from inside it): its key range is not
    /// cleaned, as the keys of those rows are not known here.
    partial: bool,
    /// The primary keys of its rows, and their table.
    keys: Vec<Vec<Value>>,
    table: Option<Arc<TableSchema>>,
}

/// One session's state: from a committed checkpoint to the session's end.
#[derive(Debug)]
pub struct Session {
    topic: String,
    limits: Limits,
    ddl: DdlPolicy,
    d: Directives,
    /// What the checkpoint row says now.
    committed: Checkpoint,
    /// What the next commit writes: the last consistent point reached.
    pending: Checkpoint,
    open: Option<OpenTxn>,
    /// The chunk of an incremental snapshot whose rows are coming.
    chunk: Option<OpenChunk>,
    stats: BatchStats,
    started: Option<Instant>,
    /// `--until-caught-up`: the offset to reach.
    end: Option<i64>,
    /// Offset of the last record handled.
    last_offset: i64,
    /// Abandoned transactions found (offset ranges), kept by the caller across sessions.
    found_discards: Vec<(i64, i64)>,
    /// What [`Session::record_done`] does once the current record's work is done.
    after: After,
}

/// The state change a record makes once its work is done.
#[derive(Debug, Clone, Default)]
enum After {
    #[default]
    Nothing,
    /// An event of a source transaction (`counted`: its row was sent).
    TxnEvent {
        gtid: Gtid,
        last: bool,
        resume: GtidPosition,
        commit_ts_ms: i64,
        counted: bool,
    },
    /// A schema change that ran (or was skipped) alone.
    SchemaChange {
        gtid: Gtid,
        resume: GtidPosition,
        commit_ts_ms: i64,
    },
    /// A record that only moves the offset on: a snapshot row (then a consistent point) or a
    /// snapshot's table definition (then a commit).
    Passed {
        commit: bool,
    },
    Heartbeat {
        position: GtidPosition,
        ts_ms: i64,
    },
    SnapshotStart {
        id: String,
    },
    SnapshotEnd {
        position: GtidPosition,
        ts_ms: i64,
    },
}

type Actions = Vec<Action>;

impl Session {
    pub fn new(
        checkpoint: Checkpoint,
        directives: Directives,
        limits: Limits,
        ddl: DdlPolicy,
        end: Option<i64>,
    ) -> Session {
        Session {
            topic: checkpoint.topic.clone(),
            limits,
            ddl,
            d: directives,
            committed: checkpoint.clone(),
            pending: checkpoint,
            open: None,
            chunk: None,
            stats: BatchStats::default(),
            started: None,
            end,
            last_offset: -1,
            found_discards: Vec::new(),
            after: After::Nothing,
        }
    }

    /// The offset of the last record read (-1 before the first).
    pub fn last_read(&self) -> i64 {
        self.last_offset
    }

    /// The checkpoint as committed.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.committed
    }

    /// Abandoned transactions this session found.
    pub fn found_discards(&self) -> &[(i64, i64)] {
        &self.found_discards
    }

    fn progress(&self) -> bool {
        self.pending != self.committed
    }

    fn diagnosing(&self, offset: i64) -> bool {
        self.d
            .diagnose
            .as_ref()
            .is_some_and(|(until, _)| offset <= *until)
    }

    /// Whether this session diagnoses a failed batch (then each commit is waited for, so an
    /// error names its record).
    pub fn diagnosing_any(&self) -> bool {
        self.d.diagnose.is_some()
    }

    /// The executor committed `c`.
    pub fn committed(&mut self, c: &Commit) {
        self.committed = c.checkpoint.clone();
    }

    /// A commit of the pending checkpoint; the batch starts afresh.
    fn commit(&mut self) -> Action {
        let stats = std::mem::take(&mut self.stats);
        self.started = None;
        Action::Commit(Box::new(Commit {
            checkpoint: self.pending.clone(),
            stats,
        }))
    }

    fn touch_batch(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
        }
    }

    /// When the batch must commit even without another record, if no transaction is open and
    /// there is anything to commit (`dirty`: statements are buffered): at once when no record
    /// is `queued` behind it (waiting would only add lag, as nothing is there to group with it),
    /// else `batch_wait` after the batch started, so a steady trickle of records cannot hold a
    /// batch open for longer than that.
    pub fn deadline(&self, dirty: bool, queued: bool) -> Option<Instant> {
        let waiting = self.open.is_none() && (self.progress() || dirty);
        self.started
            .map(|t| if queued { t + self.limits.wait } else { t })
            .filter(|_| waiting)
    }

    /// The batch deadline passed.
    pub fn on_deadline(&mut self) -> Actions {
        vec![self.commit()]
    }

    /// Before waiting for the next record: with `--until-caught-up`, the end is reached at a
    /// boundary.
    pub fn before_next(&mut self) -> Option<Actions> {
        let end = self.end?;
        if self.open.is_some() || self.pending.next_offset < end {
            return None;
        }
        let offset = self.pending.next_offset;
        Some(vec![
            self.commit(),
            Action::End(SessionEnd::Done(Outcome::CaughtUp { offset })),
        ])
    }

    /// A shutdown signal: commit at a boundary, or roll back an open transaction.
    pub fn on_signal(&mut self) -> Actions {
        if self.open.is_none() {
            let offset = self.pending.next_offset;
            vec![
                self.commit(),
                Action::End(SessionEnd::Done(Outcome::Signal { offset })),
            ]
        } else {
            let offset = self.committed.next_offset;
            vec![
                Action::Rollback,
                Action::End(SessionEnd::Done(Outcome::Signal { offset })),
            ]
        }
    }

    /// A MariaDB error while sending or committing a batch. A statement that held many rows
    /// (or the commit) failed: redo the batch with one row per statement and one source
    /// transaction per commit, to name the record MariaDB refuses. Already diagnosing: the
    /// error stands.
    pub fn on_batch_error(&self, e: ApplyError) -> Result<Actions, ApplyError> {
        if e.is_transient() || !matches!(e, ApplyError::Db { .. }) || self.d.diagnose.is_some() {
            return Err(e);
        }
        let upto = self.last_offset.max(self.committed.next_offset);
        tracing::warn!(error = %e, from = self.committed.next_offset, to = upto,
            "a batch failed; applying it again row by row to find the record");
        Ok(vec![
            Action::Rollback,
            Action::End(SessionEnd::Redo(
                Directives {
                    diagnose: Some((upto, e.to_string())),
                    ..self.d.clone()
                },
                None,
            )),
        ])
    }

    /// A fatal error at a record: commit the complete transactions before it (so the
    /// checkpoint names the failing one), then fail. If part of the open transaction was sent,
    /// roll back and redo up to the transaction's start first.
    pub fn on_record_error(&mut self, e: ApplyError) -> Actions {
        // The record's work failed: its state change never happens.
        self.after = After::Nothing;
        if e.is_transient() {
            return vec![Action::Fail(e)];
        }
        match self.open_with_rows() {
            Some(first) => redo_before(first, self.d.clone(), Some(e)),
            None => {
                self.open = None;
                vec![self.commit(), Action::Fail(e)]
            }
        }
    }

    /// The first record of the open transaction, if it has sent rows already (they must be
    /// rolled back, and redone, before anything stops in the middle of it).
    fn open_with_rows(&self) -> Option<i64> {
        Some(self.open.as_ref().filter(|o| o.rows > 0)?.first_offset)
    }

    fn ctx(&self, inc: &Incoming, table: &str, key: String) -> RecordContext {
        RecordContext {
            topic: self.topic.clone(),
            offset: inc.offset,
            gtid: gtid_text(Some(&inc.pos)),
            table: table.to_owned(),
            key,
        }
    }

    fn skip_gtid(&self, gtid: &Gtid) -> bool {
        let replaying = self
            .pending
            .replay_until
            .as_ref()
            .is_some_and(|r| r.contains(gtid));
        !replaying && self.pending.gtid_position.contains(gtid)
    }

    /// What to do with the next record. An `Err` is a fatal record error: pass it to
    /// [`Session::on_record_error`].
    pub fn on_record(&mut self, inc: &Incoming, now: Instant) -> Result<Actions, ApplyError> {
        self.last_offset = inc.offset;
        self.after = After::Nothing;
        // Directives of a redo.
        if let Some(stop) = self.d.stop_before {
            if inc.offset >= stop {
                self.open = None;
                if let Some(until_ms) = self.d.until_at_stop {
                    self.pending.until_reached = true;
                    let offset = self.pending.next_offset;
                    return Ok(vec![
                        self.commit(),
                        Action::End(SessionEnd::Done(Outcome::UntilTime { offset, until_ms })),
                    ]);
                }
                return Ok(vec![self.commit(), Action::End(SessionEnd::StoppedBefore)]);
            }
        }
        if self
            .d
            .discard
            .iter()
            .any(|(a, b)| (*a..*b).contains(&inc.offset))
        {
            tracing::debug!(
                offset = inc.offset,
                "discarding a record of an abandoned transaction"
            );
            return Ok(vec![]);
        }
        if let Some(until) = self.d.diagnose.as_ref().map(|(u, _)| *u) {
            if inc.offset > until && self.open.is_none() {
                // The diagnosis passed the failing region without reproducing the error.
                let (_, original) = self.d.diagnose.take().unwrap();
                return Err(ApplyError::Record {
                    at: Box::new(RecordContext {
                        topic: self.topic.clone(),
                        offset: until,
                        ..Default::default()
                    }),
                    reason: format!("a batch ending here failed ({original}), and applying its rows one by one did not reproduce it"),
                    fix: "check the replica's MariaDB error log and the table definitions, then restart apply".into(),
                });
            }
        }
        // Point-in-time stop.
        if let (Some(until_ms), Some(ts)) = (self.pending.until_ts_ms, inc.timestamp_ms) {
            if ts > until_ms {
                let d = Directives {
                    until_at_stop: Some(until_ms),
                    ..self.d.clone()
                };
                return Ok(match self.open_with_rows() {
                    Some(first) => redo_before(first, d, None),
                    None => {
                        self.open = None;
                        self.pending.until_reached = true;
                        tracing::info!(
                            offset = inc.offset,
                            until_ms,
                            "reached replay --until-time"
                        );
                        let offset = self.pending.next_offset;
                        vec![
                            self.commit(),
                            Action::End(SessionEnd::Done(Outcome::UntilTime { offset, until_ms })),
                        ]
                    }
                });
            }
        }
        if let Some(c) = &self.chunk {
            let continues = matches!(&inc.pos, StreamPosition::Chunk { id, index, .. } if *id == c.id && *index == c.next_index);
            if !continues {
                tracing::info!(snapshot = %c.id, from = c.first_offset, to = inc.offset, "a chunk of an incremental snapshot was cut short (its producer restarted): its rows stay, right as of its position, and the producer reads the chunk again");
                self.chunk = None;
            }
        }
        match (&inc.pos, InTxn::of(&inc.pos), &inc.record) {
            (_, Some(t), StreamRecord::Change(ev)) => self.txn_row(inc, t, ev, now),
            (StreamPosition::Chunk { id, .. }, _, StreamRecord::ChunkEnd(end)) => {
                self.chunk_end(inc, id, end)
            }
            (StreamPosition::Chunk { id, .. }, _, StreamRecord::SchemaChange(sc)) => {
                self.chunk_definition(inc, id, sc)
            }
            (StreamPosition::Snapshot { id, .. }, _, StreamRecord::Change(ev)) => {
                self.snapshot_row(inc, id, ev, now)
            }
            (StreamPosition::Chunk { id, .. }, _, StreamRecord::Change(ev)) => {
                self.chunk_row(inc, id, ev, now)
            }
            (_, Some(t), StreamRecord::SchemaChange(sc)) => self.schema_change(inc, t, sc, now),
            (StreamPosition::Snapshot { id, .. }, _, StreamRecord::SchemaChange(sc)) => {
                self.snapshot_definition(inc, id, sc, now)
            }
            (_, _, StreamRecord::Heartbeat(h)) => {
                if self.open.is_none() {
                    self.after = After::Heartbeat {
                        position: h.position.clone(),
                        ts_ms: h.ts_ms,
                    };
                }
                Ok(vec![])
            }
            (_, _, StreamRecord::Snapshot(mk)) => match mk.phase {
                SnapshotPhase::Start => self.snapshot_start(inc, mk, now),
                SnapshotPhase::End => self.snapshot_end(inc, mk),
            },
            (p, _, r) => Err(ApplyError::Record {
                at: Box::new(self.ctx(inc, "", String::new())),
                reason: format!(
                    "a {} record with position '{p}' does not fit the changelog's rules",
                    r.kind()
                ),
                fix: "the topic holds a record the producer does not write; find what wrote it"
                    .into(),
            }),
        }
    }

    /// After a consistent point: commit if the batch is full (or always while diagnosing).
    fn consistent_point(&mut self, offset: i64, now: Instant) -> Actions {
        let l = &self.limits;
        let full = self.stats.ops.total() as usize >= l.rows
            || self.stats.txns as usize >= l.transactions
            || self.stats.bytes >= l.bytes
            || self
                .started
                .is_some_and(|t| now.duration_since(t) >= l.wait)
            || self.diagnosing(offset);
        if full {
            vec![self.commit()]
        } else {
            vec![]
        }
    }

    /// The statements of one row change, counted into the batch.
    fn row(&mut self, inc: &Incoming, ev: &ChangeEvent, now: Instant) -> Action {
        match ev.op {
            Op::Insert => self.stats.ops.insert += 1,
            Op::Update => self.stats.ops.update += 1,
            Op::Delete => self.stats.ops.delete += 1,
            Op::Read => self.stats.ops.read += 1,
        }
        self.stats.bytes += inc.size;
        self.touch_batch(now);
        // Re-applying history (replay, or a snapshot row written before a later schema change):
        // columns a later schema change dropped may be left out; the suffix converges.
        let allow_missing = match &inc.pos {
            StreamPosition::Txn { gtid, .. } => self
                .pending
                .replay_until
                .as_ref()
                .is_some_and(|r| r.contains(gtid)),
            _ => false,
        };
        Action::Row {
            allow_missing,
            diagnose: self.diagnosing(inc.offset),
        }
    }

    /// A row change of a source transaction.
    fn txn_row(
        &mut self,
        inc: &Incoming,
        t: InTxn,
        ev: &ChangeEvent,
        now: Instant,
    ) -> Result<Actions, ApplyError> {
        self.open_txn(inc, t.gtid, t.index)?;
        let skip = self.open.as_ref().is_some_and(|o| o.skip);
        self.after = t.after(ev.source.commit_ts_ms, !skip);
        Ok(if skip {
            vec![]
        } else {
            vec![self.row(inc, ev, now)]
        })
    }

    /// Once the current record's work is done: the checkpoint moves past it, and the commits
    /// that follow (a full batch, a snapshot marker, a schema change).
    pub fn record_done(&mut self, inc: &Incoming, now: Instant) -> Actions {
        match std::mem::take(&mut self.after) {
            After::Nothing => vec![],
            After::TxnEvent {
                gtid,
                last,
                resume,
                commit_ts_ms,
                counted,
            } => {
                if counted {
                    if let Some(o) = self.open.as_mut() {
                        o.rows += 1;
                    }
                }
                if !last {
                    return vec![];
                }
                let ran_ddl = self.open.as_ref().is_some_and(|o| o.ran_ddl);
                self.close_txn(inc, gtid, &resume, commit_ts_ms, !counted, now);
                if ran_ddl {
                    vec![self.commit()]
                } else {
                    self.consistent_point(inc.offset, now)
                }
            }
            After::SchemaChange {
                gtid,
                resume,
                commit_ts_ms,
            } => {
                self.close_txn(inc, gtid, &resume, commit_ts_ms, false, now);
                vec![self.commit()]
            }
            After::Passed { commit } => {
                self.pending.next_offset = inc.offset + 1;
                self.pending.record_ts_ms = inc.timestamp_ms;
                self.touch_batch(now);
                if commit {
                    vec![self.commit()]
                } else {
                    self.consistent_point(inc.offset, now)
                }
            }
            After::Heartbeat { position, ts_ms } => self.heartbeat(inc, &position, ts_ms, now),
            After::SnapshotStart { id } => {
                self.pending.snapshot = Some(LoadingSnapshot { id });
                self.pending.next_offset = inc.offset + 1;
                self.pending.record_ts_ms = inc.timestamp_ms;
                self.touch_batch(now);
                vec![self.commit()]
            }
            After::SnapshotEnd { position, ts_ms } => {
                self.pending.snapshot = None;
                self.pending.replay_until = self
                    .pending
                    .replay_until
                    .take()
                    .filter(|r| !position.covers(r));
                self.pending.gtid_position = position;
                self.pending.next_offset = inc.offset + 1;
                self.pending.record_ts_ms = inc.timestamp_ms;
                if ts_ms > 0 {
                    self.pending.source_ts_ms = Some(ts_ms);
                }
                self.touch_batch(now);
                vec![self.commit()]
            }
        }
    }

    /// Checks that a transaction's event is the next one expected, opening the transaction at
    /// its first event.
    fn open_txn(&mut self, inc: &Incoming, gtid: Gtid, index: u64) -> Result<(), ApplyError> {
        match &mut self.open {
            Some(o) if o.gtid == gtid && o.next_index == index => {
                o.next_index += 1;
                Ok(())
            }
            Some(o) => {
                let (og, oi, of) = (o.gtid, o.next_index, o.first_offset);
                Err(ApplyError::Record {
                    at: Box::new(self.ctx(inc, "", String::new())),
                    reason: format!(
                        "it is event {index} of transaction {gtid}, but transaction {og} (from offset {of}) is still open and expects event {oi}: the topic holds an incomplete transaction that no snapshot replaces"
                    ),
                    fix: "the producer's resume went wrong; restart the producer with --resnapshot to write a fresh snapshot, then start apply again".into(),
                })
            }
            None => {
                let contained = self.pending.gtid_position.contains(&gtid);
                if index != 0 && !contained {
                    return Err(ApplyError::Record {
                        at: Box::new(self.ctx(inc, "", String::new())),
                        reason: format!("it is event {index} of transaction {gtid}, whose earlier events this apply never saw"),
                        fix: "move the checkpoint to the transaction's first event (`continuum-consumer replay --to-offset`)".into(),
                    });
                }
                let skip = index != 0 || self.skip_gtid(&gtid);
                self.open = Some(OpenTxn {
                    gtid,
                    next_index: index + 1,
                    first_offset: inc.offset,
                    skip,
                    rows: 0,
                    ran_ddl: false,
                });
                Ok(())
            }
        }
    }

    fn close_txn(
        &mut self,
        inc: &Incoming,
        gtid: Gtid,
        resume: &GtidPosition,
        commit_ts_ms: i64,
        skip: bool,
        now: Instant,
    ) {
        self.open = None;
        let after = resume.with(gtid);
        let p = &mut self.pending;
        if skip {
            p.gtid_position = merge_max(&p.gtid_position, &after);
            self.stats.skipped += 1;
        } else {
            p.gtid_position = if p.replay_until.is_some() {
                after
            } else {
                merge_max(&p.gtid_position, &after)
            };
            p.last_gtid = Some(gtid);
            self.stats.txns += 1;
        }
        if commit_ts_ms > 0 {
            p.source_ts_ms = Some(commit_ts_ms);
        }
        p.next_offset = inc.offset + 1;
        p.record_ts_ms = inc.timestamp_ms;
        if let Some(r) = &p.replay_until {
            if p.gtid_position.covers(r) {
                tracing::info!(replay_until = %r, offset = inc.offset, "replay passed its end position: GTID skip resumes");
                p.replay_until = None;
            }
        }
        self.touch_batch(now);
    }

    /// A record of snapshot `id` fits only while that snapshot loads here, and outside any open
    /// transaction.
    fn check_loading(
        &self,
        inc: &Incoming,
        id: &str,
        what: &str,
        at: RecordContext,
    ) -> Result<(), ApplyError> {
        if self.open.is_some() {
            return Err(self.open_txn_interrupted(inc, &format!("{what} of snapshot {id}")));
        }
        match &self.pending.snapshot {
            Some(l) if l.id == id => Ok(()),
            other => Err(ApplyError::Record {
                at: Box::new(at),
                reason: format!(
                    "it is {what} of snapshot {id}, but this replica is {} (its START marker was not applied here)",
                    match other {
                        Some(l) => format!("loading snapshot {}", l.id),
                        None => "not loading a snapshot".into(),
                    }
                ),
                fix: format!("replay from the snapshot's START: `continuum-consumer replay --to-offset {}` finds it", inc.offset),
            }),
        }
    }

    fn open_txn_interrupted(&self, inc: &Incoming, what: &str) -> ApplyError {
        let o = self.open.as_ref().expect("an open transaction");
        ApplyError::Record {
            at: Box::new(self.ctx(inc, "", String::new())),
            reason: format!(
                "{what} arrived while transaction {} (from offset {}) is open and expects event {}",
                o.gtid, o.first_offset, o.next_index
            ),
            fix:
                "the topic holds an incomplete transaction; restart the producer with --resnapshot"
                    .into(),
        }
    }

    fn snapshot_row(
        &mut self,
        inc: &Incoming,
        id: &str,
        ev: &ChangeEvent,
        now: Instant,
    ) -> Result<Actions, ApplyError> {
        self.check_loading(
            inc,
            id,
            "a row",
            self.ctx(inc, &ev.table.qualified_name(), ev.key_text()),
        )?;
        self.after = After::Passed { commit: false };
        Ok(vec![self.row(inc, ev, now)])
    }

    /// Refuses a record of a chunk of incremental snapshot `id` where chunks cannot be: inside
    /// an open transaction, or while a consistent snapshot loads.
    fn check_chunk_place(
        &self,
        inc: &Incoming,
        id: &str,
        table: &str,
        key: String,
    ) -> Result<(), ApplyError> {
        if self.open.is_some() {
            return Err(
                self.open_txn_interrupted(inc, &format!("a record of a chunk of snapshot {id}"))
            );
        }
        if let Some(l) = &self.pending.snapshot {
            return Err(ApplyError::Record {
                at: Box::new(self.ctx(inc, table, key)),
                reason: format!(
                    "it is a record of a chunk of incremental snapshot {id}, but snapshot {} is loading here and has not ended",
                    l.id
                ),
                fix: format!("the producer writes chunks only while it streams; find what wrote this record, or replay from the snapshot's START (`continuum-consumer replay --to-offset {}` finds it)", inc.offset),
            });
        }
        Ok(())
    }

    /// The chunk that record `index` of snapshot `id` belongs to, opened at its first record
    /// (or, marked partial, at a later one when the session began inside it), and moved past
    /// the record. The caller checked the record follows the open chunk, if any (`on_record`).
    fn chunk_record(&mut self, inc: &Incoming, id: &str, index: u64) -> &mut OpenChunk {
        let c = self.chunk.get_or_insert_with(|| OpenChunk {
            id: id.to_owned(),
            next_index: index,
            first_offset: inc.offset,
            partial: index > 0,
            keys: Vec::new(),
            table: None,
        });
        c.next_index += 1;
        c
    }

    /// Whether a chunk at `position` is older than the replica: the checkpoint is past it (a
    /// replay's records, or the topic of another cluster). Then neither its rows nor its end
    /// are applied.
    fn chunk_is_older(&self, inc: &Incoming, position: &GtidPosition) -> bool {
        let replaying = self
            .pending
            .replay_until
            .as_ref()
            .is_some_and(|r| r.covers(position));
        !replaying && inc.pos.contained_in(&self.pending.gtid_position)
    }

    /// A row of a chunk of incremental snapshot `id`: the row as it was at the chunk's position,
    /// which is where the stream stands. It is applied (a `REPLACE`) unless the chunk is older
    /// than the replica. The checkpoint stays before the chunk until its end, so a session that
    /// begins again begins at the chunk's first row and knows all its keys.
    fn chunk_row(
        &mut self,
        inc: &Incoming,
        id: &str,
        ev: &ChangeEvent,
        now: Instant,
    ) -> Result<Actions, ApplyError> {
        self.check_chunk_place(inc, id, &ev.table.qualified_name(), ev.key_text())?;
        let StreamPosition::Chunk { index, .. } = inc.pos else {
            unreachable!("a chunk row has a chunk position")
        };
        let c = self.chunk_record(inc, id, index);
        c.keys.push(ev.key().into_iter().cloned().collect());
        c.table = Some(ev.table.clone());
        self.after = After::Nothing;
        if self.chunk_is_older(inc, &ev.source.gtid_position) {
            self.stats.skipped += 1;
            return Ok(vec![]);
        }
        Ok(vec![self.row(inc, ev, now)])
    }

    /// The end of a chunk of incremental snapshot `id`: the replica's rows of the chunk's key
    /// range that are not among its rows are deleted (the source has no such rows at the
    /// chunk's position), and the chunk is a consistent point at its position.
    fn chunk_end(
        &mut self,
        inc: &Incoming,
        id: &str,
        end: &ChunkEnd,
    ) -> Result<Actions, ApplyError> {
        self.check_chunk_place(inc, id, &end.table, String::new())?;
        let chunk = self.chunk.take();
        self.after = After::Heartbeat {
            position: end.position.clone(),
            ts_ms: end.ts_ms,
        };
        if self.chunk_is_older(inc, &end.position) {
            self.stats.skipped += 1;
            return Ok(vec![]);
        }
        let (keep, table) = match chunk {
            Some(c) if !c.partial => (c.keys, c.table),
            None if end.rows == 0 => (Vec::new(), None),
            _ => {
                tracing::warn!(snapshot = %id, table = %end.table, offset = inc.offset, "the rows of this chunk began before this session (a replay from inside it), so its key range is not cleaned of rows the source does not have; `continuum-consumer verify` finds any");
                return Ok(vec![]);
            }
        };
        Ok(vec![Action::CleanRange { keep, table }])
    }

    fn snapshot_start(
        &mut self,
        inc: &Incoming,
        mk: &SnapshotMarker,
        now: Instant,
    ) -> Result<Actions, ApplyError> {
        if let Some(o) = &self.open {
            // The producer died inside a transaction and began a new snapshot: the snapshot
            // replaces it. Drop what of it this batch holds.
            let (first, gtid, rows) = (o.first_offset, o.gtid, o.rows);
            tracing::warn!(%gtid, from = first, to = inc.offset, "a snapshot starts while a transaction is incomplete: the producer abandoned it; its events are discarded");
            self.found_discards.push((first, inc.offset));
            if rows > 0 {
                let mut d = self.d.clone();
                d.discard.push((first, inc.offset));
                return Ok(vec![
                    Action::Rollback,
                    Action::End(SessionEnd::Redo(d, None)),
                ]);
            }
            self.open = None;
        }
        let mut tables = Vec::with_capacity(mk.tables.len());
        for t in &mk.tables {
            let Some((db, table)) = t.split_once('.') else {
                return Err(ApplyError::Record {
                    at: Box::new(self.ctx(inc, t, String::new())),
                    reason: format!(
                        "snapshot {} lists table '{t}', which is not db.table",
                        mk.snapshot_id
                    ),
                    fix: "the snapshot marker is malformed; restart the producer with --resnapshot"
                        .into(),
                });
            };
            tables.push((db.to_owned(), table.to_owned()));
        }
        tracing::info!(snapshot = %mk.snapshot_id, position = %mk.position, tables = mk.tables.len(), offset = inc.offset, "snapshot starts: tables emptied, loading");
        self.after = After::SnapshotStart {
            id: mk.snapshot_id.clone(),
        };
        let _ = now;
        Ok(vec![
            self.commit(),
            Action::EmptyTables {
                id: mk.snapshot_id.clone(),
                tables,
            },
        ])
    }

    fn snapshot_end(&mut self, inc: &Incoming, mk: &SnapshotMarker) -> Result<Actions, ApplyError> {
        if self.open.is_some() {
            return Err(self.open_txn_interrupted(inc, "a snapshot END"));
        }
        let loading = self
            .pending
            .snapshot
            .as_ref()
            .is_some_and(|l| l.id == mk.snapshot_id);
        if loading {
            tracing::info!(snapshot = %mk.snapshot_id, position = %mk.position, "snapshot loaded");
            self.after = After::SnapshotEnd {
                position: mk.position.clone(),
                ts_ms: mk.ts_ms,
            };
        } else {
            tracing::warn!(snapshot = %mk.snapshot_id, offset = inc.offset, "END of a snapshot this replica did not load; treated as a heartbeat");
            self.after = After::Heartbeat {
                position: mk.position.clone(),
                ts_ms: mk.ts_ms,
            };
        }
        Ok(vec![])
    }

    fn heartbeat(
        &mut self,
        inc: &Incoming,
        position: &GtidPosition,
        ts_ms: i64,
        now: Instant,
    ) -> Actions {
        if self.open.is_some() {
            return vec![];
        }
        let p = &mut self.pending;
        if p.snapshot.is_none() {
            p.gtid_position = if p.replay_until.is_some() {
                position.clone()
            } else {
                merge_max(&p.gtid_position, position)
            };
            if let Some(r) = &p.replay_until {
                if p.gtid_position.covers(r) {
                    p.replay_until = None;
                }
            }
        }
        if ts_ms > 0 {
            p.source_ts_ms = Some(ts_ms);
        }
        p.next_offset = inc.offset + 1;
        p.record_ts_ms = inc.timestamp_ms;
        self.touch_batch(now);
        self.consistent_point(inc.offset, now)
    }

    /// A schema change from the binlog (DDL), the first event of its transaction.
    fn schema_change(
        &mut self,
        inc: &Incoming,
        t: InTxn,
        sc: &SchemaChange,
        now: Instant,
    ) -> Result<Actions, ApplyError> {
        let InTxn {
            gtid, index, last, ..
        } = t;
        if self.open.is_some() {
            return Err(self.open_txn_interrupted(inc, "a schema change"));
        }
        // A schema change starts its transaction. It is alone in it, or, for `CREATE TABLE ...
        // SELECT`, the new table's rows follow in the same transaction.
        if index != 0 {
            return Err(ApplyError::Record {
                at: Box::new(self.ctx(inc, &sc.database, String::new())),
                reason: format!("a schema change must be the first event of its transaction, this one is event {index}"),
                fix: "find what wrote this record".into(),
            });
        }
        let skip = self.skip_gtid(&gtid);
        if !skip && self.ddl == DdlPolicy::Stop {
            return Err(ApplyError::DdlStop {
                at: Box::new(self.ctx(inc, &sc.database, String::new())),
                ddl: sc.ddl.clone(),
            });
        }
        let _ = now;
        if skip || !last {
            // Already applied (passed like a skipped transaction), or the first event of a
            // transaction whose rows follow.
            self.open = Some(OpenTxn {
                gtid,
                next_index: 1,
                first_offset: inc.offset,
                skip,
                rows: 0,
                ran_ddl: !skip,
            });
            self.after = t.after(sc.source.commit_ts_ms, false);
        } else {
            self.after = After::SchemaChange {
                gtid,
                resume: t.resume.clone(),
                commit_ts_ms: sc.source.commit_ts_ms,
            };
        }
        if skip {
            return Ok(vec![]);
        }
        let at = Box::new(self.ctx(inc, &sc.database, String::new()));
        Ok(vec![
            self.commit(),
            Action::SchemaChange { at, ddl: self.ddl },
        ])
    }

    /// A table definition carried by a snapshot (`CREATE DATABASE/TABLE IF NOT EXISTS`, between
    /// the START marker and the table's rows). It can only create what is missing, never alter
    /// what exists, so it runs under `ddl = apply` and `ddl = stop` alike (stop guards schema
    /// *changes* from the binlog); under `ddl = skip` it is skipped and the table must exist.
    fn snapshot_definition(
        &mut self,
        inc: &Incoming,
        id: &str,
        sc: &SchemaChange,
        now: Instant,
    ) -> Result<Actions, ApplyError> {
        self.check_loading(
            inc,
            id,
            "a table definition",
            self.ctx(inc, &sc.database, String::new()),
        )?;
        self.after = After::Passed { commit: true };
        let _ = now;
        self.run_definition(inc, sc)
    }

    /// A snapshot's table definition (`CREATE ... IF NOT EXISTS`, nothing else): the batch
    /// before it commits, then it runs on its own connection, under `consumer.apply.ddl`
    /// (`stop` runs it: it changes nothing that exists).
    fn run_definition(&mut self, inc: &Incoming, sc: &SchemaChange) -> Result<Actions, ApplyError> {
        let upper = sc.ddl.trim_start().to_ascii_uppercase();
        if !(upper.starts_with("CREATE TABLE IF NOT EXISTS")
            || upper.starts_with("CREATE DATABASE IF NOT EXISTS"))
        {
            return Err(ApplyError::Record {
                at: Box::new(self.ctx(inc, &sc.database, String::new())),
                reason: format!(
                    "a snapshot may only carry CREATE ... IF NOT EXISTS, this one carries: {}",
                    sc.ddl
                ),
                fix: "find what wrote this record".into(),
            });
        }
        let before = self.commit();
        let ddl = match self.ddl {
            DdlPolicy::Skip => DdlPolicy::Skip,
            DdlPolicy::Apply | DdlPolicy::Stop => DdlPolicy::Apply,
        };
        let at = Box::new(self.ctx(inc, &sc.database, String::new()));
        Ok(vec![before, Action::SchemaChange { at, ddl }])
    }

    /// A table's definition at the start of its first chunk of incremental snapshot `id`: it
    /// runs (the table may be missing here) unless the chunk is older than the replica; the
    /// checkpoint stays before the chunk, as for its rows.
    fn chunk_definition(
        &mut self,
        inc: &Incoming,
        id: &str,
        sc: &SchemaChange,
    ) -> Result<Actions, ApplyError> {
        self.check_chunk_place(inc, id, &sc.database, String::new())?;
        let StreamPosition::Chunk { index, .. } = inc.pos else {
            unreachable!("a chunk definition has a chunk position")
        };
        self.chunk_record(inc, id, index);
        self.after = After::Nothing;
        if self.chunk_is_older(inc, &sc.source.gtid_position) {
            self.stats.skipped += 1;
            return Ok(vec![]);
        }
        self.run_definition(inc, sc)
    }
}

/// Roll back, and redo with `d` up to the record `first` (for the error `e`, if any).
fn redo_before(first: i64, d: Directives, e: Option<ApplyError>) -> Actions {
    let d = Directives {
        stop_before: Some(first),
        ..d
    };
    vec![Action::Rollback, Action::End(SessionEnd::Redo(d, e))]
}

#[cfg(test)]
mod tests;
