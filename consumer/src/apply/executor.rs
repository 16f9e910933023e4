//! Carries out what the apply [`Session`] decides, against MariaDB: row statements into the
//! [`Writer`]'s buffer (matched to the replica's tables by [`Targets`]), commits with the
//! checkpoint row, rollbacks, schema changes on a connection of their own, and the emptying of
//! tables for a snapshot. It owns no decision of its own beyond how to send a row: which
//! records make a transaction, when to commit and what the checkpoint says are the session's.
//!
//! A batch's commit is left running while the next batch is decoded and built (outside
//! diagnosis, which must tie an error to its record): MariaDB and apply work at the same time.
//! The session hears of a commit ([`Session::committed`]) once MariaDB has confirmed it; before
//! a schema change, a table is emptied, or the session ends, the commit in flight is waited for.
//!
//! Guarantees: a commit always carries the session's checkpoint row with the rows before it,
//! and is checked against the apply lock first; a row MariaDB refuses while diagnosing is named
//! by its record; a foreign-key action that cannot run against rows newer than the record
//! (re-applying history) is applied without the action, as the suffix re-applies what it would
//! have changed.

use std::collections::VecDeque;
use std::time::Instant;

use continuum_common::config::DdlPolicy;
use continuum_common::db;
use continuum_common::supervise::Shutdown;
use continuum_schemas::{ChangeEvent, ChunkEnd, KeyPart, Op, StreamRecord, TableSchema, Value};
use mysql_async::Opts;

use super::ddl;
use super::session::{Action, Commit, Session, SessionEnd};
use super::writeset::RowKeys;
use crate::error::{ApplyError, RecordContext, Result};
use crate::lock::ApplyLock;
use crate::metrics::{self as m, SourceClock};
use crate::reader::{Incoming, Reader};
use crate::settings::ApplySettings;
use crate::sql::RowStatements;
use crate::target::Targets;
use crate::writer::Writer;

/// Commits made by apply's sessions so far, and the checkpoint's next offset as last committed
/// or read (progress for the supervisor; the offset a stop reports).
#[derive(Debug, Default, Clone, Copy)]
pub struct Committed {
    pub count: u64,
    pub next_offset: Option<i64>,
    /// Batches run one at a time (not beside the commits before them) until a commit passes
    /// this offset: set when batches running side by side met a lock wait or deadlock.
    pub serial_until: Option<i64>,
}

impl Committed {
    /// Whether batches may run side by side from `next_offset` on; forgets the one-at-a-time
    /// stretch once `next_offset` is past it.
    pub fn parallel_from(&mut self, next_offset: i64) -> bool {
        if self.serial_until.is_some_and(|u| next_offset > u) {
            self.serial_until = None;
        }
        self.serial_until.is_none()
    }
}

/// What one session's executor works with.
pub struct Executor<'a> {
    pub settings: &'a ApplySettings,
    pub opts: &'a Opts,
    pub lock: &'a ApplyLock,
    pub clock: &'a SourceClock,
    /// Commits made (across sessions), so the caller can reset its backoff after progress.
    pub committed: &'a mut Committed,
    pub targets: Targets,
    /// The commits sent and not yet confirmed by MariaDB, oldest first.
    pub in_flight: VecDeque<Box<Commit>>,
}

enum Flow {
    Continue,
    End(SessionEnd),
}

impl Executor<'_> {
    /// Runs the session until it ends: reads records, asks the session what to do, does it.
    /// An error ends the run; [`Executor::after_error`] then asks the session how to go on.
    pub async fn run(
        &mut self,
        s: &mut Session,
        w: &mut Writer,
        reader: &mut Reader,
        term: &mut Shutdown,
    ) -> Result<SessionEnd> {
        loop {
            if let Some(actions) = s.before_next() {
                if let Flow::End(e) = self.execute(s, w, None, actions).await? {
                    return Ok(e);
                }
            }
            self.confirm(s, w);
            let deadline = s.deadline(w.dirty(), reader.has_ready());
            let committing = w.committing();
            let next = tokio::select! {
                biased;
                _ = term.wait_for(|stop| *stop) => {
                    let actions = s.on_signal();
                    match self.execute(s, w, None, actions).await? {
                        Flow::End(e) => return Ok(e),
                        Flow::Continue => continue,
                    }
                }
                r = w.wait_commit(), if committing => {
                    r?;
                    continue;
                }
                _ = sleep_until(deadline) => {
                    let actions = s.on_deadline();
                    self.execute(s, w, None, actions).await?;
                    continue;
                }
                n = reader.recv() => n,
            };
            let inc = match next {
                None => {
                    return Err(ApplyError::Topic {
                        topic: self.settings.topic.clone(),
                        cluster: self.settings.read_from.clone(),
                        reason: "the reader stopped without an error".into(),
                    })
                }
                Some(Err(e)) => {
                    let actions = s.on_record_error(e);
                    match self.execute(s, w, None, actions).await? {
                        Flow::End(e) => return Ok(e),
                        Flow::Continue => unreachable!("a record error ends the session"),
                    }
                }
                Some(Ok(inc)) => inc,
            };
            let actions = match s.on_record(&inc, Instant::now()) {
                Ok(a) => a,
                Err(e) => s.on_record_error(e),
            };
            let flow = match self.execute(s, w, Some(&inc), actions).await {
                // The record's work is done: the checkpoint moves past it.
                Ok(Flow::Continue) => {
                    let actions = s.record_done(&inc, Instant::now());
                    self.execute(s, w, Some(&inc), actions).await?
                }
                Ok(end) => end,
                Err(e @ ApplyError::Db { .. }) => return Err(e),
                Err(e) if e.is_transient() => return Err(e),
                // A record the executor could not apply (its row, its schema change).
                Err(e) => {
                    let actions = s.on_record_error(e);
                    self.execute(s, w, None, actions).await?
                }
            };
            if let Flow::End(e) = flow {
                return Ok(e);
            }
        }
    }

    /// After `run` failed with `e`: the session either ends with a redo (a batch that failed
    /// is retried, or diagnosed row by row), or gives the error back.
    pub async fn after_error(
        &mut self,
        s: &mut Session,
        w: &mut Writer,
        e: ApplyError,
    ) -> Result<SessionEnd> {
        if w.parallel() && matches!(e.server_code(), Some(1205 | 1213)) {
            // Batches side by side can still meet on a lock their write sets do not show (a
            // gap lock, a collation's equal values): redo these one at a time.
            let upto = s.last_read();
            tracing::warn!(error = %e, until = upto, "batches running side by side met a lock wait; applying them again one at a time");
            self.committed.serial_until = Some(upto);
        }
        let actions = s.on_batch_error(e)?;
        match self.execute(s, w, None, actions).await? {
            Flow::End(end) => Ok(end),
            Flow::Continue => unreachable!("a batch error ends the session"),
        }
    }

    /// Carries out `actions` in order, for the record `inc` (if they are about one).
    async fn execute(
        &mut self,
        s: &mut Session,
        w: &mut Writer,
        inc: Option<&Incoming>,
        actions: Vec<Action>,
    ) -> Result<Flow> {
        for a in actions {
            match a {
                Action::Row {
                    allow_missing,
                    diagnose,
                } => {
                    let inc = inc.expect("a row action comes with its record");
                    let StreamRecord::Change(ev) = &inc.record else {
                        unreachable!("a row action is for a row change")
                    };
                    self.row(w, inc, ev, allow_missing, diagnose).await?;
                }
                Action::Commit(c) => self.commit(s, w, c).await?,
                Action::Rollback => {
                    w.rollback().await;
                    self.confirm(s, w);
                    // What was not confirmed failed or was rolled back.
                    self.in_flight.clear();
                }
                Action::SchemaChange { at, ddl: policy } => {
                    // It runs on a connection of its own: after the batch before it.
                    self.settle(s, w).await?;
                    let inc = inc.expect("a schema change action comes with its record");
                    let StreamRecord::SchemaChange(sc) = &inc.record else {
                        unreachable!("a schema change action is for a schema change")
                    };
                    match policy {
                        DdlPolicy::Skip => {
                            tracing::warn!(offset = inc.offset, ddl = %sc.ddl, "schema change skipped (consumer.apply.ddl = skip)");
                            m::ddl("skipped");
                        }
                        DdlPolicy::Apply | DdlPolicy::Stop => {
                            ddl::run(self.opts, &self.settings.target(), at, sc).await?
                        }
                    }
                    self.targets.invalidate();
                }
                Action::CleanRange { keep, table } => {
                    let inc = inc.expect("a clean-range action comes with its record");
                    let StreamRecord::ChunkEnd(end) = &inc.record else {
                        unreachable!("a clean-range action is for a chunk's end")
                    };
                    self.clean_range(w, inc, end, &keep, table.as_deref())
                        .await?;
                }
                Action::EmptyTables { id, tables } => {
                    self.settle(s, w).await?;
                    for (db, table) in &tables {
                        let q = crate::sql::qualified(db, table);
                        match w
                            .execute(
                                format!("DELETE FROM {q}"),
                                "emptying a table for a snapshot",
                            )
                            .await
                        {
                            Ok(()) => {}
                            // Missing here: the snapshot carries the table's definition (CREATE
                            // TABLE IF NOT EXISTS) ahead of its rows, so it is created empty
                            // before they arrive.
                            Err(e) if matches!(e.server_code(), Some(1146) | Some(1049)) => {
                                tracing::info!(snapshot = %id, table = %format!("{db}.{table}"), "table does not exist on the replica yet; the snapshot's definition creates it");
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Action::End(mut e) => {
                    self.settle(s, w).await?;
                    // Stopped inside a transaction: at the checkpoint, as now confirmed.
                    if let SessionEnd::Done(super::Outcome::Signal { offset }) = &mut e {
                        *offset = (*offset).max(s.checkpoint().next_offset);
                    }
                    return Ok(Flow::End(e));
                }
                Action::Fail(e) => {
                    // The commit before a failing record names it in the checkpoint.
                    if let Err(ce) = self.settle(s, w).await {
                        tracing::warn!(error = %ce, "the commit before the failing record failed too");
                    }
                    return Err(e);
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Deletes the replica's rows of the key range of chunk `end` that are not among its rows
    /// (`keep`, of `table`): the source has no such rows at the chunk's position.
    async fn clean_range(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        end: &ChunkEnd,
        keep: &[Vec<Value>],
        table: Option<&TableSchema>,
    ) -> Result<()> {
        let refuse = |reason: String| ApplyError::Record {
            at: Box::new(RecordContext {
                topic: self.settings.topic.clone(),
                offset: inc.offset,
                table: end.table.clone(),
                ..Default::default()
            }),
            reason,
            fix: "the chunk's end does not match its rows; find what wrote the topic".into(),
        };
        let Some((db, name)) = end.table.split_once('.') else {
            return Err(refuse(format!("its table '{}' is not db.table", end.table)));
        };
        let types = match table {
            Some(t) => {
                let names: Vec<&str> = t
                    .primary_key
                    .iter()
                    .map(|&i| t.columns[i].name.as_str())
                    .collect();
                if names != end.key {
                    return Err(refuse(format!(
                        "its key columns are {:?}, but its rows' primary key is {names:?}",
                        end.key
                    )));
                }
                t.primary_key
                    .iter()
                    .map(|&i| t.columns[i].ty.clone())
                    .collect()
            }
            None => Vec::new(),
        };
        let bound = |k: &Option<Vec<KeyPart>>, what: &str| -> Result<Vec<mysql_async::Value>> {
            let parts = k.as_deref().unwrap_or_default();
            if k.is_some() && parts.len() != end.key.len() {
                return Err(refuse(format!(
                    "its {what} bound has {} values for {} key columns",
                    parts.len(),
                    end.key.len()
                )));
            }
            parts
                .iter()
                .map(|p| db::key_value(p).map_err(|e| refuse(format!("its {what} bound: {e}"))))
                .collect()
        };
        let mut params = bound(&end.from, "lower")?;
        params.extend(bound(&end.to, "upper")?);
        let sql = crate::sql::range_delete(
            db,
            name,
            &end.key,
            end.from.is_some(),
            end.to.is_some(),
            keep,
            &types,
        )
        .map_err(|e| refuse(format!("a key of its rows cannot be written: {e}")))?;
        let deleted = w
            .execute_params(
                &sql,
                params,
                &format!(
                    "deleting the rows of {} in a chunk's key range that the source does not have",
                    end.table
                ),
            )
            .await?;
        if deleted > 0 {
            tracing::warn!(snapshot = %end.snapshot_id, table = %end.table, rows = deleted, offset = inc.offset, "deleted rows of the replica that the source does not have (in a chunk's key range of an incremental snapshot)");
        }
        Ok(())
    }

    /// Commits the batch and the checkpoint (nothing if neither moved). The commit is left
    /// running, except while diagnosing.
    async fn commit(&mut self, s: &mut Session, w: &mut Writer, c: Box<Commit>) -> Result<()> {
        let last = self
            .in_flight
            .back()
            .map_or(s.checkpoint(), |f| &f.checkpoint);
        if c.checkpoint == *last && !w.dirty() {
            return Ok(());
        }
        // Waits for the commit before (its error is this batch's too: both are redone).
        let conn = w.conn().await?;
        self.lock.check(conn).await?;
        self.confirm(s, w);
        let mut ck = c.checkpoint.clone();
        ck.error = None;
        w.commit_async(&ck.upsert_sql()).await?;
        self.in_flight.push_back(c);
        if s.diagnosing_any() {
            self.settle(s, w).await?;
        }
        Ok(())
    }

    /// Waits for the commit in flight, and tells the session.
    async fn settle(&mut self, s: &mut Session, w: &mut Writer) -> Result<()> {
        w.wait_commit().await?;
        self.confirm(s, w);
        Ok(())
    }

    /// Counts the commits MariaDB has confirmed since the last call, oldest first, and tells
    /// the session of each.
    fn confirm(&mut self, s: &mut Session, w: &mut Writer) {
        for _ in 0..w.take_confirmed() {
            let Some(c) = self.in_flight.pop_front() else {
                break;
            };
            let ck = &c.checkpoint;
            self.committed.count += 1;
            self.committed.next_offset = Some(ck.next_offset);
            m::stalled(false);
            m::batch_committed(&c.stats.ops, c.stats.txns, c.stats.skipped, ck.next_offset);
            if let Some(ts) = ck.source_ts_ms {
                self.clock.set(ts);
            }
            tracing::debug!(
                offset = ck.next_offset, rows = c.stats.ops.total(), txns = c.stats.txns,
                gtid_position = %ck.gtid_position, "committed"
            );
            if self.committed.serial_until.is_some() && self.committed.parallel_from(ck.next_offset)
            {
                w.set_parallel(true);
                tracing::info!(
                    offset = ck.next_offset,
                    "past the batches that met a lock wait; batches run side by side again"
                );
            }
            s.committed(&c);
        }
    }

    fn ctx(&self, inc: &Incoming, ev: &ChangeEvent) -> RecordContext {
        RecordContext {
            topic: self.settings.topic.clone(),
            offset: inc.offset,
            gtid: crate::reader::gtid_text(Some(&inc.pos)),
            table: ev.table.qualified_name(),
            key: ev.key_text(),
        }
    }

    /// Buffers the statements of one row change (sending them when the buffer is full, or at
    /// once while diagnosing).
    async fn row(
        &mut self,
        w: &mut Writer,
        inc: &Incoming,
        ev: &ChangeEvent,
        allow_missing: bool,
        diagnose: bool,
    ) -> Result<()> {
        let planned = match self.targets.cached(&ev.table) {
            Some(p) => Ok(p),
            None => {
                self.targets
                    .plan(w.conn().await?, &self.settings.target(), &ev.table)
                    .await?
            }
        };
        let record_error = |reason: String, fix: &str| ApplyError::Record {
            at: Box::new(self.ctx(inc, ev)),
            reason,
            fix: fix.into(),
        };
        let planned = planned.map_err(|reason| {
            record_error(reason, "fix the replica's schema, then restart apply")
        })?;
        if !planned.missing.is_empty() {
            if !allow_missing {
                return Err(record_error(
                    crate::target::missing_columns_reason(
                        &ev.table.db,
                        &ev.table.table,
                        &planned.missing,
                    ),
                    "fix the replica's schema, then restart apply",
                ));
            }
            tracing::debug!(table = %ev.table.qualified_name(), missing = ?planned.missing, offset = inc.offset,
                "replay: leaving out columns the replica no longer has");
        }
        let plan = planned.stmts;
        let bad_image = |what: &str| {
            record_error(
                format!("a {} change without its {what} image", ev.op.code()),
                "the source must log full row images (binlog_row_image=FULL)",
            )
        };
        if matches!(ev.op, Op::Insert | Op::Read | Op::Update) && ev.after.is_none() {
            return Err(bad_image("after"));
        }
        if ev.op == Op::Delete && ev.before.is_none() {
            return Err(bad_image("before"));
        }
        let literal_err = |e: crate::sql::LiteralError| {
            record_error(
                e.to_string(),
                "the value cannot be stored by MariaDB; check the source row",
            )
        };
        let keys = RowKeys::of(&plan, ev.before.as_deref(), ev.after.as_deref());
        let cascading = cascades(&plan, ev);
        let buf = w.route(&keys, cascading);
        buffer_row(buf, &plan, ev, cascading).map_err(literal_err)?;
        let flushed = if diagnose {
            w.buf.seal();
            w.flush_now().await
        } else {
            w.maybe_flush().await
        };
        let flushed = match flushed {
            // A foreign-key action refused by the replica's newer rows (a replay): apply the row
            // without the action, as the rows it would change are re-applied by the suffix.
            Err(e)
                if cascading && diagnose && matches!(e.server_code(), Some(1451 | 1452 | 1062)) =>
            {
                tracing::warn!(offset = inc.offset, table = %ev.table.qualified_name(), key = %ev.key_text(), error = %e,
                    "a foreign-key action could not run against the replica's rows (re-applying over newer state?); applying the row without it");
                w.execute(
                    "SET SESSION foreign_key_checks=0".into(),
                    "turning foreign-key checks off",
                )
                .await?;
                buffer_row(&mut w.buf, &plan, ev, false).map_err(literal_err)?;
                w.buf.seal();
                w.flush_now().await
            }
            other => other,
        };
        match flushed {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => Err(e),
            Err(ApplyError::Db { source, .. }) if diagnose => Err(record_error(
                format!("MariaDB refused it: {source}"),
                "make the replica's table accept the source's row (its definition must match the source's), then restart apply",
            )),
            Err(e) => Err(e),
        }
    }
}

/// Whether row change `ev` runs a cascading foreign-key action on the replica (its statement
/// with checks on): a delete of a row that such a key references, or an update of referenced
/// columns.
fn cascades(plan: &RowStatements, ev: &ChangeEvent) -> bool {
    match (ev.op, ev.before.as_deref(), ev.after.as_deref()) {
        (Op::Delete, ..) => plan.cascade_delete,
        (Op::Update, Some(before), Some(after)) => {
            !plan.keyless && plan.needs_cascading_update(before, after)
        }
        _ => false,
    }
}

/// Buffers the statements of one row change. `cascading` ([`cascades`], or `false` to leave
/// the action out) runs its foreign-key action with checks on.
fn buffer_row(
    buf: &mut crate::sql::StatementBuffer,
    plan: &RowStatements,
    ev: &ChangeEvent,
    cascading: bool,
) -> std::result::Result<(), crate::sql::LiteralError> {
    match ev.op {
        Op::Insert | Op::Read => buf.replace(plan, ev.after.as_deref().unwrap_or_default()),
        Op::Update => {
            let after = ev.after.as_deref().unwrap_or_default();
            // Without a primary key, the one row that matches the before-image changes.
            if plan.keyless {
                let before = ev.before.as_deref().unwrap_or_default();
                return buf.update_one(plan, before, after);
            }
            match ev.before.as_deref() {
                // Referenced columns change: UPDATE with checks on runs the ON UPDATE action;
                // the REPLACE after it makes the row right if the UPDATE found nothing.
                Some(before) if cascading => {
                    buf.update_checked(plan, before, after)?;
                    buf.replace(plan, after)
                }
                // The key changes: the old key goes (no delete action: the source updated the
                // row, it did not delete it), then the after-image.
                Some(before) if key_changed(plan, before, after) => {
                    buf.delete_unchecked(plan, before)?;
                    buf.replace(plan, after)
                }
                _ => buf.replace(plan, after),
            }
        }
        Op::Delete => {
            let before = ev.before.as_deref().unwrap_or_default();
            if cascading {
                buf.delete(plan, before)
            } else {
                buf.delete_unchecked(plan, before)
            }
        }
    }
}

fn key_changed(
    plan: &RowStatements,
    before: &[continuum_schemas::Value],
    after: &[continuum_schemas::Value],
) -> bool {
    plan.key.iter().any(|(i, ..)| before[*i] != after[*i])
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
