//! The MariaDB side of apply: one connection with apply's session settings, one MariaDB
//! transaction per batch, statements sent in chunks as they accumulate, and the checkpoint
//! upsert plus `COMMIT` sent together at a source-transaction boundary.
//!
//! A commit can be left running ([`Writer::commit_async`]) while the caller builds the next
//! batch: MariaDB executes one batch while apply decodes the next. Anything sent after it waits
//! for it first, so batches still commit one after another, in order; [`Writer::take_confirmed`]
//! says when it has committed, and its error comes back from the next call that waits.
//!
//! Guarantees:
//! - a batch's rows and its checkpoint commit in one MariaDB transaction, or not at all;
//! - at most one batch is in flight besides the one being built: nothing of the next batch
//!   reaches MariaDB before the commit before it succeeded;
//! - statements are flushed before the buffer exceeds the chunk size, so a source transaction
//!   of a million rows streams through bounded memory (the open MariaDB transaction holds it,
//!   not this process);
//! - nothing is committed except by [`Writer::commit_async`], which the caller only calls at a
//!   source-transaction boundary.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

use crate::error::{ApplyError, Result};
use crate::settings::SESSION_SETTINGS;
use crate::sql::StatementBuffer;

/// SQL text sent per round trip while a batch grows.
pub const FLUSH_BYTES: usize = 2 << 20;

pub struct Writer {
    /// The connection, when no statements are in flight on it.
    conn: Option<Conn>,
    /// Statements sent and still running: the next flush builds while they execute.
    inflight: Option<tokio::task::JoinHandle<(Conn, std::result::Result<(), mysql_async::Error>)>>,
    target: String,
    pub buf: StatementBuffer,
    /// `START TRANSACTION` has been sent for the current batch.
    in_txn: bool,
    /// Statements of the current batch were sent (something to roll back).
    sent: bool,
    flush_bytes: usize,
    max_allowed_packet: usize,
    /// What is in flight ends with `COMMIT`.
    committing: bool,
    /// A commit in flight has succeeded, and the caller has not been told yet.
    confirmed: bool,
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

impl Writer {
    pub async fn connect(opts: &Opts, target: &str) -> Result<Writer> {
        let mut conn = connect(opts, target).await?;
        let map: Option<i64> = conn
            .query_first("SELECT @@max_allowed_packet")
            .await
            .map_err(ApplyError::db(target, "reading @@max_allowed_packet"))?;
        let max_allowed_packet = map.unwrap_or(16 << 20).max(1 << 20) as usize;
        // Statements stay well below the packet limit; a single huge row may still need more,
        // which MariaDB reports as error 1153 naming max_allowed_packet.
        let max_stmt = (max_allowed_packet / 4).clamp(256 << 10, 8 << 20);
        Ok(Writer {
            conn: Some(conn),
            inflight: None,
            target: target.to_owned(),
            buf: StatementBuffer::new(max_stmt),
            in_txn: false,
            sent: false,
            flush_bytes: FLUSH_BYTES.min(max_stmt),
            max_allowed_packet,
            committing: false,
            confirmed: false,
        })
    }

    /// The connection, once the statements in flight have finished (their error, if any).
    pub async fn conn(&mut self) -> Result<&mut Conn> {
        self.settle().await?;
        Ok(self.conn.as_mut().expect("the connection is back"))
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn max_allowed_packet(&self) -> usize {
        self.max_allowed_packet
    }

    /// Whether the current batch has sent or buffered anything.
    pub fn dirty(&self) -> bool {
        self.sent || !self.buf.is_empty()
    }

    fn db_err(&self, what: &str, source: mysql_async::Error) -> ApplyError {
        ApplyError::db(&self.target, what)(source)
    }

    /// Waits for the statements in flight. Cancel-safe: dropped before they finish, it leaves
    /// them in flight.
    async fn settle(&mut self) -> Result<()> {
        let Some(h) = self.inflight.as_mut() else {
            return Ok(());
        };
        let (conn, r) = h.await.expect("the statement task does not panic");
        self.inflight = None;
        self.conn = Some(conn);
        let committing = std::mem::take(&mut self.committing);
        match r {
            Ok(()) => {
                self.confirmed |= committing;
                Ok(())
            }
            Err(e) if committing => {
                // Part of the text may have run: the transaction stays open until rolled back.
                if let Some(c) = self.conn.as_mut() {
                    let _ = c.query_drop("ROLLBACK").await;
                }
                Err(self.db_err("committing a batch with its checkpoint", e))
            }
            Err(e) => Err(self.db_err("applying rows", e)),
        }
    }

    /// Whether a commit is in flight.
    pub fn committing(&self) -> bool {
        self.committing
    }

    /// Waits for the commit in flight, if any (cancel-safe).
    pub async fn wait_commit(&mut self) -> Result<()> {
        if self.committing {
            self.settle().await?;
        }
        Ok(())
    }

    /// Whether a commit left running has succeeded since the last call (then once only).
    pub fn take_confirmed(&mut self) -> bool {
        std::mem::take(&mut self.confirmed)
    }

    /// Starts `text` on the connection (inside the batch's transaction) without waiting for it.
    async fn send(&mut self, text: String) -> Result<()> {
        self.settle().await?;
        let mut conn = self.conn.take().expect("the connection is back");
        if !self.in_txn {
            if let Err(e) = conn.query_drop("START TRANSACTION").await {
                self.conn = Some(conn);
                return Err(self.db_err("starting a transaction", e));
            }
            self.in_txn = true;
        }
        self.sent = true;
        self.inflight = Some(tokio::spawn(async move {
            let r = conn.query_drop(text).await;
            (conn, r)
        }));
        Ok(())
    }

    /// Runs `text` and waits for it.
    async fn send_now(&mut self, text: String, what: &str) -> Result<()> {
        self.send(text).await?;
        match self.settle().await {
            Err(ApplyError::Db { source, .. }) => Err(self.db_err(what, source)),
            other => other,
        }
    }

    /// Sends the buffered statements if they reached the chunk size (not waiting for them).
    pub async fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= self.flush_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the buffered statements inside the batch's transaction (not waiting for them).
    pub async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = self.buf.take();
        self.send(text).await
    }

    /// Sends the buffered statements and waits for them (to tie an error to them).
    pub async fn flush_now(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return self.settle().await;
        }
        let text = self.buf.take();
        self.send_now(text, "applying rows").await
    }

    /// Sends the buffered statements, `checkpoint_sql` and `COMMIT` in one round trip, and
    /// returns without waiting: the next call that sends waits for the commit first, and
    /// returns its error; [`Writer::take_confirmed`] tells when it succeeded.
    pub async fn commit_async(&mut self, checkpoint_sql: &str) -> Result<()> {
        self.buf.push_statement(checkpoint_sql);
        self.buf.push_statement("COMMIT");
        let text = self.buf.take();
        self.send(text).await?;
        self.committing = true;
        self.in_txn = false;
        self.sent = false;
        Ok(())
    }

    /// Executes a single statement inside the batch's transaction and waits for it.
    pub async fn execute(&mut self, sql: String, what: &str) -> Result<()> {
        self.flush().await?;
        self.send_now(sql, what).await
    }

    /// Executes one statement with parameters inside the batch's transaction, after what is
    /// buffered, and waits for it; the number of rows it changed.
    pub async fn execute_params(
        &mut self,
        sql: &str,
        params: Vec<mysql_async::Value>,
        what: &str,
    ) -> Result<u64> {
        self.flush().await?;
        self.settle().await?;
        let mut conn = self.conn.take().expect("the connection is back");
        let r = async {
            if !self.in_txn {
                conn.query_drop("START TRANSACTION").await?;
                self.in_txn = true;
            }
            self.sent = true;
            conn.exec_drop(sql, params).await?;
            Ok(conn.affected_rows())
        }
        .await;
        self.conn = Some(conn);
        r.map_err(|e| self.db_err(what, e))
    }

    /// Abandons the current batch.
    pub async fn rollback(&mut self) {
        self.buf.clear();
        let _ = self.settle().await;
        if self.in_txn {
            if let Some(c) = self.conn.as_mut() {
                let _ = c.query_drop("ROLLBACK").await;
            }
        }
        self.in_txn = false;
        self.sent = false;
    }

    pub async fn close(mut self) {
        let _ = self.settle().await;
        if let Some(c) = self.conn.take() {
            let _ = c.disconnect().await;
        }
    }
}
