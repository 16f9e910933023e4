//! The running producer's side of snapshot requests (`continuum_common::request` has the table
//! and the verbs' side): it polls `continuum.snapshot_request` for its own topic's requests, takes
//! the oldest not done, one at a time, and records when it started, the rows written, and when
//! it ended (or why it failed).

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use continuum_common::filter::TableFilter;
use continuum_common::request::no_table;
pub use continuum_common::request::{check_tables, split, submit, wait, Ended, Request};
use continuum_schemas::GtidPosition;

use crate::error::{DbContext, ProducerError};

/// The requests table of the source, as the running producer reads and updates it.
pub struct Requests {
    opts: Opts,
    target: String,
    topic: String,
    conn: Option<Conn>,
    last_poll: Option<Instant>,
}

impl Requests {
    pub fn new(opts: Opts, target: String, topic: String) -> Requests {
        Requests {
            opts,
            target,
            topic,
            conn: None,
            last_poll: None,
        }
    }

    async fn conn(&mut self) -> Result<&mut Conn, ProducerError> {
        if self.conn.is_none() {
            self.conn = Some(Conn::new(self.opts.clone()).await.db(&self.target)?);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// The oldest request not done, looked for at most once per `every`. A request table the
    /// producer cannot read (a privilege missing, say) does not stop streaming: it is logged,
    /// and looked at again a minute later.
    pub async fn poll(&mut self, every: Duration) -> Result<Option<Request>, ProducerError> {
        if self.last_poll.is_some_and(|t| t.elapsed() < every) {
            return Ok(None);
        }
        self.last_poll = Some(Instant::now());
        match self.next_pending().await {
            Err(e) if !e.is_transient() => {
                tracing::warn!(error = %e, "cannot read continuum.snapshot_request; snapshot requests are not taken until it can be read (looking again in a minute)");
                self.last_poll = Some(Instant::now() + Duration::from_secs(60) - every);
                Ok(None)
            }
            other => other,
        }
    }

    /// The oldest request for this producer's topic not done.
    pub async fn next_pending(&mut self) -> Result<Option<Request>, ProducerError> {
        let target = self.target.clone();
        let topic = self.topic.clone();
        let row: Result<Option<(u64, String)>, _> = self
            .conn()
            .await?
            .exec_first(
                "SELECT id, tables FROM continuum.snapshot_request WHERE topic = ? AND done_at IS NULL ORDER BY id LIMIT 1",
                (topic,),
            )
            .await;
        match row {
            Ok(r) => Ok(r.map(|(id, tables)| Request {
                id,
                tables: split(&tables),
            })),
            Err(e) if no_table(&e) => Ok(None),
            Err(e) => Err(ProducerError::Db { target, source: e }),
        }
    }

    /// The producer began (or resumed) request `id` as snapshot `snapshot_id`.
    pub async fn started(&mut self, id: u64, snapshot_id: &str) -> Result<(), ProducerError> {
        let target = self.target.clone();
        self.conn()
            .await?
            .exec_drop(
                "UPDATE continuum.snapshot_request SET snapshot_id = ?, started_at = COALESCE(started_at, NOW(3)) WHERE id = ?",
                (snapshot_id, id),
            )
            .await
            .db(&target)
    }

    /// `rows` rows of request `id` are written.
    pub async fn rows(&mut self, id: u64, rows: u64) -> Result<(), ProducerError> {
        let target = self.target.clone();
        self.conn()
            .await?
            .exec_drop(
                "UPDATE continuum.snapshot_request SET rows_done = ? WHERE id = ?",
                (rows, id),
            )
            .await
            .db(&target)
    }

    /// Request `id` ended: every row is in the topic, or it failed with `error`.
    pub async fn finished(
        &mut self,
        id: u64,
        rows: u64,
        error: Option<&str>,
    ) -> Result<(), ProducerError> {
        let target = self.target.clone();
        self.conn()
            .await?
            .exec_drop(
                "UPDATE continuum.snapshot_request SET rows_done = ?, done_at = NOW(3), error = ? WHERE id = ?",
                (rows, error, id),
            )
            .await
            .db(&target)
    }
}

/// `--recapture`: the source's current GTID position, from which the producer streams, and a
/// request (queued now) for every table the producer captures; requests of `topic` not done
/// are ended as superseded. Refuses, naming them, when a captured table cannot be snapshotted
/// incrementally (no primary key, not InnoDB): `--resnapshot` is then the way.
pub async fn recapture(
    conn: &mut Conn,
    target: &str,
    topic: &str,
    filter: &TableFilter,
) -> Result<(GtidPosition, u64, Vec<String>), ProducerError> {
    let position: Option<String> = conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .db(target)?;
    let position: GtidPosition = position
        .unwrap_or_default()
        .parse()
        .map_err(|e: continuum_schemas::ParsePositionError| ProducerError::Binlog(e.to_string()))?;
    let all: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .db(target)?;
    let tables: Vec<String> = all
        .into_iter()
        .filter(|(d, t)| filter.captures(d, t))
        .map(|(d, t)| format!("{d}.{t}"))
        .collect();
    if tables.is_empty() {
        return Ok((position, 0, tables));
    }
    let refused = check_tables(conn, target, Some(filter), &tables).await?;
    if !refused.is_empty() {
        return Err(ProducerError::Snapshot(format!(
            "--recapture snapshots every captured table incrementally, and these cannot be: {}. Exclude them, or restart with --resnapshot",
            refused.join("; ")
        )));
    }
    let superseded = conn
        .exec_drop(
            "UPDATE continuum.snapshot_request SET done_at = NOW(3), error = 'superseded by --recapture, which snapshots every table' WHERE topic = ? AND done_at IS NULL",
            (topic,),
        )
        .await;
    match superseded {
        Err(e) if !no_table(&e) => {
            return Err(ProducerError::Db {
                target: target.to_owned(),
                source: e,
            })
        }
        _ => {}
    }
    let id = submit(conn, target, topic, Some(filter), &tables).await?;
    Ok((position, id, tables))
}
