//! The MariaDB side of apply: apply's session settings, one MariaDB transaction per batch,
//! statements sent in chunks as they accumulate, and the checkpoint upsert plus `COMMIT` sent
//! together at a source-transaction boundary.
//!
//! A commit is left running ([`Writer::commit_async`]) while the caller builds the next batch.
//! With `consumer.apply.connections` = N above 1, the writer holds N connections ("lanes") and
//! starts each batch on the next one, round robin, so that MariaDB executes the statements of
//! the next batch while the ones before it commit. Each row goes to one of two buffers
//! ([`Writer::route`]): rows that touch none of the rows of the batches in flight (by their
//! [`WriteSet`]s) are sent as they accumulate; the others are held back, with every later
//! change of the same row, and run after the commits before have succeeded. A batch's held-back
//! rows, checkpoint and `COMMIT` run only after the commit before it succeeded (the lane's task
//! waits for it), so commits happen one after another, in source order, and the checkpoint of
//! the last commit names a position below which everything is applied.
//! [`Writer::take_confirmed`] counts the commits that have succeeded, oldest first; an error
//! comes back from the next call that waits for the lane.
//!
//! Guarantees:
//! - a batch's rows and its checkpoint commit in one MariaDB transaction, or not at all;
//! - batches commit in the order they were built; one whose predecessor failed rolls back;
//! - statements are flushed before the buffer exceeds the chunk size, so a source transaction
//!   of a million rows streams through bounded memory (the open MariaDB transaction holds it,
//!   not this process): at most one chunk in flight per lane, and one being built;
//! - nothing is committed except by [`Writer::commit_async`], which the caller only calls at a
//!   source-transaction boundary;
//! - with one connection, nothing of the next batch reaches MariaDB before the commit before
//!   it succeeded.

use std::collections::VecDeque;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use tokio::sync::oneshot;

use crate::apply::writeset::{Holds, RowKeys, WriteSet};
use crate::error::{ApplyError, Result};
use crate::settings::{NO_ANNOTATIONS, SESSION_SETTINGS};
use crate::sql::StatementBuffer;

/// SQL text sent per round trip while a batch grows.
pub const FLUSH_BYTES: usize = 2 << 20;

/// Rows a batch's write set names before the batch counts as touching everything (its
/// memory stays bounded whatever the size of a source transaction).
const MAX_WRITE_SET: usize = 200_000;

type Task = tokio::task::JoinHandle<(Conn, std::result::Result<(), mysql_async::Error>)>;

/// One connection and what runs on it.
struct Lane {
    /// The connection, when nothing is in flight on it.
    conn: Option<Conn>,
    /// Statements sent and still running.
    inflight: Option<Task>,
    /// What is in flight ends with `COMMIT`.
    committing: bool,
    /// The write set of the batch committing here.
    ws: WriteSet,
}

pub struct Writer {
    lanes: Vec<Lane>,
    /// The lane of the batch being built.
    cur: usize,
    /// Lanes with a commit in flight, oldest first.
    order: VecDeque<usize>,
    /// Commits that succeeded and the caller has not been told of.
    confirmed: usize,
    /// Whether a batch may run beside commits in flight (see [`Writer::set_parallel`]).
    parallel: bool,
    /// Tells whether the newest commit sent succeeded: the next commit waits for it.
    last_done: Option<oneshot::Receiver<bool>>,
    target: String,
    /// The current batch's statements that may run beside the commits in flight.
    pub buf: StatementBuffer,
    /// The current batch's statements that must wait for the commits in flight.
    held: StatementBuffer,
    /// Which rows are in `held`.
    holds: Holds,
    /// What the batch being built changes.
    ws: WriteSet,
    /// `START TRANSACTION` has been sent for the current batch.
    in_txn: bool,
    /// Statements of the current batch were sent (something to roll back).
    sent: bool,
    flush_bytes: usize,
    max_allowed_packet: usize,
    /// The current batch has sent statements while a commit before it was in flight.
    overlapped: bool,
    /// What happened so far: batches run side by side, waits for a conflicting commit.
    pub stats: ParallelStats,
    held_rows_total: metrics::Counter,
}

/// Counts of the parallel work of one writer, for the session's log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParallelStats {
    /// Batches whose statements ran while a batch before them was committing.
    pub overlapped: u64,
    /// Rows held back until the commit of a batch before them that touches the same row.
    pub held_rows: u64,
}

/// Connects with apply's session settings and checks that they took.
pub async fn connect(opts: &Opts, target: &str) -> Result<Conn> {
    let err = |what: &str, source| ApplyError::db(target, what)(source);
    let mut conn = Conn::new(opts.clone())
        .await
        .map_err(|e| err("connecting", e))?;
    for s in SESSION_SETTINGS {
        conn.query_drop(*s)
            .await
            .map_err(|e| err(&format!("session setting `{s}`"), e))?;
    }
    leave_out_annotations(&mut conn, target).await?;
    let skip: Option<i64> = conn
        .query_first("SELECT @@skip_replication")
        .await
        .map_err(|e| err("reading @@skip_replication", e))?;
    if skip != Some(1) {
        return Err(ApplyError::Checkpoint {
            topic: "-".into(),
            target: target.to_owned(),
            reason: "skip_replication=1 did not take on the apply session; applied changes would be captured again (loop). Check the server version (MariaDB 10.11 or later)".into(),
        });
    }
    Ok(conn)
}

/// Sets [`NO_ANNOTATIONS`] on the session. Without the privilege it needs, apply goes on with
/// the annotations, and says once per process which grant would leave them out.
async fn leave_out_annotations(conn: &mut Conn, target: &str) -> Result<()> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match conn.query_drop(NO_ANNOTATIONS).await {
        Ok(()) => Ok(()),
        Err(mysql_async::Error::Server(e)) if e.code == ER_SPECIFIC_ACCESS_DENIED => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    database = %target,
                    "apply cannot set binlog_annotate_row_events=0 (its user lacks BINLOG ADMIN): the replica's binlog keeps the text of every apply statement, about as large as the row events themselves; GRANT BINLOG ADMIN ON *.* to the apply user to leave it out"
                );
            }
            Ok(())
        }
        Err(e) => Err(ApplyError::db(
            target,
            &format!("session setting `{NO_ANNOTATIONS}`"),
        )(e)),
    }
}

/// MariaDB's "Access denied; you need (at least one of) the ... privilege(s)".
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;

impl Writer {
    /// Opens `connections` connections to the target (at least one). With more than one, each
    /// waits at most `lock_wait` for a row lock (`innodb_lock_wait_timeout`).
    pub async fn connect(
        opts: &Opts,
        target: &str,
        connections: usize,
        lock_wait: Duration,
    ) -> Result<Writer> {
        let mut lanes = Vec::new();
        for _ in 0..connections.max(1) {
            let mut conn = connect(opts, target).await?;
            if connections > 1 {
                if lanes.is_empty() {
                    check_binlog_format(&mut conn, target).await?;
                }
                for sql in [
                    format!(
                        "SET SESSION innodb_lock_wait_timeout={}",
                        lock_wait.as_secs().max(1)
                    ),
                    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
                ] {
                    conn.query_drop(&sql)
                        .await
                        .map_err(ApplyError::db(target, &format!("session setting `{sql}`")))?;
                }
            }
            lanes.push(Lane {
                conn: Some(conn),
                inflight: None,
                committing: false,
                ws: WriteSet::default(),
            });
        }
        let conn = lanes[0].conn.as_mut().expect("a new lane is idle");
        let map: Option<i64> = conn
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(ApplyError::db(target, "reading @@max_allowed_packet"))?;
        let max_allowed_packet = map.unwrap_or(16 << 20).max(1 << 20) as usize;
        // Statements stay well below the packet limit; a single huge row may still need more,
        // which MariaDB reports as error 1153 naming max_allowed_packet.
        let max_stmt = (max_allowed_packet / 4).clamp(256 << 10, 8 << 20);
        Ok(Writer {
            lanes,
            cur: 0,
            order: VecDeque::new(),
            confirmed: 0,
            parallel: true,
            last_done: None,
            target: target.to_owned(),
            buf: StatementBuffer::new(max_stmt),
            held: StatementBuffer::new(max_stmt),
            holds: Holds::default(),
            ws: WriteSet::default(),
            in_txn: false,
            sent: false,
            flush_bytes: FLUSH_BYTES.min(max_stmt),
            max_allowed_packet,
            overlapped: false,
            stats: ParallelStats::default(),
            held_rows_total: crate::metrics::held_rows(),
        })
    }

    /// The connection of the batch being built, once what is in flight on it has finished
    /// (its error, if any).
    pub async fn conn(&mut self) -> Result<&mut Conn> {
        self.settle_lane(self.cur).await?;
        Ok(self.lanes[self.cur]
            .conn
            .as_mut()
            .expect("the connection is back"))
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn max_allowed_packet(&self) -> usize {
        self.max_allowed_packet
    }

    /// Whether the current batch has sent or buffered anything.
    pub fn dirty(&self) -> bool {
        self.sent || !self.buf.is_empty() || !self.held.is_empty()
    }

    /// The buffer for one row change of the current batch (`cascading`: it runs a foreign-key
    /// action that changes rows of other tables): the held-back one if the row, or anything
    /// when `cascading`, may be touched by a batch whose commit is in flight, or if an earlier
    /// change of the row was held back; else the one sent as it fills.
    pub fn route(&mut self, row: &RowKeys, cascading: bool) -> &mut StatementBuffer {
        if self.lanes.len() == 1 {
            // Nothing runs beside anything: no write set to keep.
            return &mut self.buf;
        }
        if cascading || self.ws.len() >= MAX_WRITE_SET {
            // No write set names the rows a foreign-key action changes; and a batch of one
            // huge transaction keeps memory bounded by conflicting with everything.
            self.ws.everything();
        } else {
            self.ws.insert(row);
        }
        let (any_in_flight, meets_in_flight) = {
            let mut others = self.others_in_flight();
            let any = others.clone().next().is_some();
            (
                any,
                others.any(|l| !self.parallel || self.lanes[l].ws.meets(row)),
            )
        };
        if !self
            .holds
            .hold(row, cascading, any_in_flight, meets_in_flight)
        {
            return &mut self.buf;
        }
        self.stats.held_rows += 1;
        self.held_rows_total.increment(1);
        &mut self.held
    }

    /// Whether batches may run beside the commits before them (with more than one connection).
    /// Off, every batch waits for the commits in flight before it sends anything.
    pub fn set_parallel(&mut self, on: bool) {
        self.parallel = on;
    }

    /// Whether batches can run beside the commits before them right now.
    pub fn parallel(&self) -> bool {
        self.parallel && self.lanes.len() > 1
    }

    fn db_err(&self, what: &str, source: mysql_async::Error) -> ApplyError {
        ApplyError::db(&self.target, what)(source)
    }

    /// Waits for what is in flight on lane `i`, and first for every commit older than it.
    /// Cancel-safe: dropped before they finish, it leaves them in flight.
    async fn settle_lane(&mut self, i: usize) -> Result<()> {
        if self.lanes[i].committing {
            while let Some(&front) = self.order.front() {
                self.settle_one(front).await?;
                if front == i {
                    break;
                }
            }
        }
        self.settle_one(i).await
    }

    async fn settle_one(&mut self, i: usize) -> Result<()> {
        let lane = &mut self.lanes[i];
        let Some(h) = lane.inflight.as_mut() else {
            return Ok(());
        };
        let (conn, r) = h.await.expect("the statement task does not panic");
        lane.inflight = None;
        lane.conn = Some(conn);
        let committing = std::mem::take(&mut lane.committing);
        if committing {
            lane.ws.clear();
            self.order.retain(|&l| l != i);
        }
        match r {
            Ok(()) => {
                if committing {
                    self.confirmed += 1;
                }
                Ok(())
            }
            // The task rolled the transaction back.
            Err(e) if committing => Err(self.db_err("committing a batch with its checkpoint", e)),
            Err(e) => Err(self.db_err("applying rows", e)),
        }
    }

    /// Counts the current batch as run beside a commit, the first time it sends statements
    /// while one is in flight.
    fn note_overlap(&mut self) {
        if !self.overlapped && self.others_in_flight().next().is_some() {
            self.overlapped = true;
            self.stats.overlapped += 1;
            crate::metrics::parallel_batch();
        }
    }

    /// The lanes other than the current one with a commit in flight, oldest first.
    fn others_in_flight(&self) -> impl Iterator<Item = usize> + Clone + '_ {
        self.order.iter().copied().filter(|&l| l != self.cur)
    }

    /// Waits for every commit in flight on lanes other than the current one.
    async fn wait_others(&mut self) -> Result<()> {
        loop {
            let Some(front) = self.others_in_flight().next() else {
                return Ok(());
            };
            self.settle_lane(front).await?;
        }
    }

    /// Whether a commit is in flight.
    pub fn committing(&self) -> bool {
        !self.order.is_empty()
    }

    /// Waits for every commit in flight (cancel-safe).
    pub async fn wait_commit(&mut self) -> Result<()> {
        while let Some(&front) = self.order.front() {
            self.settle_lane(front).await?;
        }
        Ok(())
    }

    /// How many commits left running have succeeded since the last call, oldest first.
    pub fn take_confirmed(&mut self) -> usize {
        std::mem::take(&mut self.confirmed)
    }

    /// The current lane's connection, idle, inside the batch's transaction.
    async fn ready(&mut self) -> Result<Conn> {
        self.settle_lane(self.cur).await?;
        self.note_overlap();
        let mut conn = self.lanes[self.cur]
            .conn
            .take()
            .expect("the connection is back");
        if !self.in_txn {
            if let Err(e) = conn.query_drop("START TRANSACTION").await {
                self.lanes[self.cur].conn = Some(conn);
                return Err(self.db_err("starting a transaction", e));
            }
            self.in_txn = true;
        }
        Ok(conn)
    }

    /// Starts `text` on the current lane (inside the batch's transaction) without waiting.
    async fn send(&mut self, text: String) -> Result<()> {
        let mut conn = self.ready().await?;
        self.sent = true;
        self.lanes[self.cur].inflight = Some(tokio::spawn(async move {
            let r = conn.query_drop(text).await;
            (conn, r)
        }));
        Ok(())
    }

    /// Runs `text` and waits for it.
    async fn send_now(&mut self, text: String, what: &str) -> Result<()> {
        self.send(text).await?;
        match self.settle_lane(self.cur).await {
            Err(ApplyError::Db { source, .. }) => Err(self.db_err(what, source)),
            other => other,
        }
    }

    /// Sends the buffered statements if they reached the chunk size (not waiting for them);
    /// held-back ones once the commits in flight have succeeded.
    pub async fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= self.flush_bytes {
            let text = self.buf.take();
            self.send(text).await?;
        }
        if self.held.len() >= self.flush_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Waits for the commits in flight, then takes everything buffered: the statements sent as
    /// they fill first, then the held-back ones. That order is always right: a row routed to
    /// `buf` after a held one never touches it (its later changes are held too, and a cascading
    /// row after a held one is held), while a held row may depend on a row before it in `buf`.
    async fn take_all(&mut self) -> Result<String> {
        self.wait_others().await?;
        self.holds.clear();
        Ok(join_statements(self.buf.take(), &self.held.take()))
    }

    /// Sends everything buffered inside the batch's transaction (not waiting for it), after
    /// the commits in flight.
    pub async fn flush(&mut self) -> Result<()> {
        let text = self.take_all().await?;
        if text.is_empty() {
            return Ok(());
        }
        self.send(text).await
    }

    /// Sends everything buffered and waits for it (to tie an error to it).
    pub async fn flush_now(&mut self) -> Result<()> {
        let text = self.take_all().await?;
        if text.is_empty() {
            return self.settle_lane(self.cur).await;
        }
        self.send_now(text, "applying rows").await
    }

    /// Sends the buffered statements, then the held-back ones, `checkpoint_sql` and `COMMIT`,
    /// and returns without waiting. The held-back statements, the checkpoint and `COMMIT` run
    /// once the commit before has succeeded; if it failed, this batch rolls back. The next
    /// batch goes to the next lane.
    pub async fn commit_async(&mut self, checkpoint_sql: &str) -> Result<()> {
        let mut conn = self.ready().await?;
        let stmts = self.buf.take();
        let tail = join_statements(self.held.take(), &format!("{checkpoint_sql};\nCOMMIT"));
        // With no commit in flight, every commit before has succeeded (a failure is returned
        // by the wait that meets it, and the batch is abandoned).
        let before = self.last_done.take().filter(|_| !self.order.is_empty());
        let (done, done_rx) = oneshot::channel();
        self.last_done = Some(done_rx);
        let lane = &mut self.lanes[self.cur];
        lane.committing = true;
        lane.ws = std::mem::take(&mut self.ws);
        lane.inflight = Some(tokio::spawn(async move {
            let r = commit_after(&mut conn, stmts, before, tail).await;
            if r.is_err() {
                // Part of the text may have run: the transaction stays open until rolled back.
                let _ = conn.query_drop("ROLLBACK").await;
            }
            let _ = done.send(r.is_ok());
            (conn, r)
        }));
        self.order.push_back(self.cur);
        self.cur = (self.cur + 1) % self.lanes.len();
        self.in_txn = false;
        self.sent = false;
        self.overlapped = false;
        self.holds.clear();
        Ok(())
    }

    /// Executes a single statement inside the batch's transaction and waits for it, after every
    /// commit in flight.
    pub async fn execute(&mut self, sql: String, what: &str) -> Result<()> {
        self.ws.everything();
        self.flush().await?;
        self.send_now(sql, what).await
    }

    /// Executes one statement with parameters inside the batch's transaction, after what is
    /// buffered and after every commit in flight, and waits for it; the number of rows it
    /// changed.
    pub async fn execute_params(
        &mut self,
        sql: &str,
        params: Vec<mysql_async::Value>,
        what: &str,
    ) -> Result<u64> {
        self.ws.everything();
        self.flush().await?;
        let mut conn = self.ready().await?;
        self.sent = true;
        let r = conn
            .exec_drop(sql, params)
            .await
            .map(|_| conn.affected_rows());
        self.lanes[self.cur].conn = Some(conn);
        r.map_err(|e| self.db_err(what, e))
    }

    /// Abandons the current batch, then waits for every commit in flight (a commit after one
    /// that failed rolls back by itself). The current batch rolls back first, so that a commit
    /// waiting for one of its locks goes on at once.
    pub async fn rollback(&mut self) {
        self.buf.clear();
        self.held.clear();
        self.holds.clear();
        self.ws.clear();
        self.last_done = None;
        if self.in_txn {
            // What is in flight on the current lane is this batch's own statements.
            let _ = self.settle_one(self.cur).await;
            if let Some(c) = self.lanes[self.cur].conn.as_mut() {
                let _ = c.query_drop("ROLLBACK").await;
            }
        }
        self.settle_all().await;
        self.in_txn = false;
        self.sent = false;
        self.overlapped = false;
    }

    /// Waits for everything in flight, whatever its outcome.
    async fn settle_all(&mut self) {
        while let Some(&front) = self.order.front() {
            let _ = self.settle_one(front).await;
        }
        for i in 0..self.lanes.len() {
            let _ = self.settle_one(i).await;
        }
    }

    pub async fn close(mut self) {
        self.settle_all().await;
        for lane in self.lanes {
            if let Some(c) = lane.conn {
                let _ = c.disconnect().await;
            }
        }
    }
}

/// Batches side by side run in READ COMMITTED, which takes no gap locks for deletes and updates
/// (fewer locks that disjoint batches could meet on). InnoDB refuses such writes when the
/// server logs statements (`binlog_format=STATEMENT`): say so before any batch.
async fn check_binlog_format(conn: &mut Conn, target: &str) -> Result<()> {
    let (log_bin, format): (i64, String) = conn
        .query_first("SELECT @@log_bin, @@binlog_format")
        .await
        .map_err(ApplyError::db(
            target,
            "reading @@log_bin and @@binlog_format",
        ))?
        .unwrap_or((0, String::new()));
    if log_bin == 1 && format.eq_ignore_ascii_case("STATEMENT") {
        return Err(ApplyError::Config(continuum_common::ConfigError::Invalid {
            setting: "consumer.apply.connections".into(),
            reason: format!(
                "is above 1, and the replica {target} logs binlog_format=STATEMENT, under which InnoDB refuses apply's READ COMMITTED writes; set binlog_format=ROW on the replica (its producer needs it after a promotion anyway), or consumer.apply.connections = 1"
            ),
        }));
    }
    Ok(())
}

/// `first`, then `then`, as one text of statements.
fn join_statements(mut first: String, then: &str) -> String {
    if !then.is_empty() {
        if !first.is_empty() {
            first.push_str(";\n");
        }
        first.push_str(then);
    }
    first
}

/// Runs a batch's last statements, then, once the commit before it (if any) has succeeded, its
/// checkpoint and `COMMIT`.
async fn commit_after(
    conn: &mut Conn,
    stmts: String,
    before: Option<oneshot::Receiver<bool>>,
    tail: String,
) -> std::result::Result<(), mysql_async::Error> {
    let Some(before) = before else {
        return conn.query_drop(join_statements(stmts, &tail)).await;
    };
    if !stmts.is_empty() {
        conn.query_drop(stmts).await?;
    }
    // A sender dropped unsent is a task that never finished: not a success either.
    if before.await != Ok(true) {
        return Err(mysql_async::Error::Io(
            std::io::Error::other("the commit of the batch before this one failed").into(),
        ));
    }
    conn.query_drop(tail).await
}
