//! Snapshot requests: the table `continuum.snapshot_request` on the source, where the operator's
//! `continuum-producer snapshot --table db.t` queues a request and the running producer takes it.
//!
//! - A request names tables; [`check_tables`] refuses, with the reason, a table that is not
//!   `db.table`, does not exist, is not captured by `producer.include`/`exclude`, is not InnoDB,
//!   or has no primary key. The verb checks before it queues; the producer checks again when it
//!   takes the request, and records a refusal in the request's `error` column.
//! - A request is for one changelog topic: several producers may capture one server, each into
//!   its own topic with its own tables, and each takes only its own topic's requests.
//! - The producer takes the oldest request not done, one at a time. What it has done of it is in
//!   the topic (`incremental`), not here: this table only says what was asked, and for the
//!   operator, when it started, how many rows are written, and when it was done.
//! - `continuum` is Continuum's own schema, never captured, so these writes never reach a topic.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use continuum_common::filter::TableFilter;

use crate::error::{DbContext, ProducerError};

const CREATE: [&str; 2] = [
    "CREATE DATABASE IF NOT EXISTS continuum",
    "CREATE TABLE IF NOT EXISTS continuum.snapshot_request (\
       id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, \
       topic VARCHAR(249) NOT NULL COMMENT 'the changelog topic of the producer that takes it', \
       tables TEXT NOT NULL COMMENT 'db.table of each table, comma-separated', \
       requested_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \
       snapshot_id VARCHAR(64) NULL, \
       started_at DATETIME(3) NULL, \
       rows_done BIGINT UNSIGNED NOT NULL DEFAULT 0, \
       done_at DATETIME(3) NULL, \
       error TEXT NULL\
       , KEY pending (topic, done_at)\
     ) ENGINE=InnoDB COMMENT 'continuum-producer snapshot requests (docs/snapshot.md)'",
];

/// A queued request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub tables: Vec<String>,
}

/// How a request ended, as the producer recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Done { rows: u64 },
    Failed { rows: u64, error: String },
}

/// Splits the `tables` column (or the verb's list) into `db.table` names.
pub fn split(tables: &str) -> Vec<String> {
    tables
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why each of `tables` cannot be snapshotted incrementally; empty if every one can.
pub async fn check_tables(
    conn: &mut Conn,
    target: &str,
    filter: &TableFilter,
    tables: &[String],
) -> Result<Vec<String>, ProducerError> {
    let mut refused = Vec::new();
    if tables.is_empty() {
        refused.push("no table is named".to_owned());
    }
    for t in tables {
        let Some((d, n)) = t.split_once('.') else {
            refused.push(format!("'{t}' is not db.table"));
            continue;
        };
        if !filter.captures(d, n) {
            refused.push(format!(
                "{t} is not captured (producer.include / producer.exclude, or a system schema)"
            ));
            continue;
        }
        let engine: Option<(String, Option<String>)> = conn
            .exec_first(
                "SELECT TABLE_TYPE, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (d, n),
            )
            .await
            .db(target)?;
        match engine {
            None => {
                refused.push(format!("{t} does not exist on the source"));
                continue;
            }
            Some((ty, _)) if ty != "BASE TABLE" => {
                refused.push(format!("{t} is a {ty}, not a table"));
                continue;
            }
            Some((_, e))
                if !e
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case("InnoDB")) =>
            {
                refused.push(format!(
                    "{t} is not InnoDB ({}), so it has no consistent snapshot",
                    e.unwrap_or_default()
                ));
                continue;
            }
            Some(_) => {}
        }
        let pk: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'",
                (d, n),
            )
            .await
            .db(target)?;
        if pk.unwrap_or(0) == 0 {
            refused.push(format!(
                "{t} has no primary key, so it cannot be read in key ranges"
            ));
        }
    }
    Ok(refused)
}

/// Queues a request for `tables` (after [`check_tables`]) for the producer of `topic`; returns
/// its id. Refuses on a read-only source: its rows came from elsewhere (see
/// `snapshot::mark_start`).
pub async fn submit(
    conn: &mut Conn,
    target: &str,
    topic: &str,
    filter: &TableFilter,
    tables: &[String],
) -> Result<u64, ProducerError> {
    let read_only: Option<u8> = conn.query_first("SELECT @@read_only").await.db(target)?;
    if read_only.unwrap_or(0) != 0 {
        return Err(ProducerError::Snapshot(format!(
            "{target} is read_only (a replica): its rows came from the other site, and a snapshot would send them back there. Request the snapshot at the primary's site"
        )));
    }
    let refused = check_tables(conn, target, filter, tables).await?;
    if !refused.is_empty() {
        return Err(ProducerError::Snapshot(format!(
            "cannot snapshot: {}",
            refused.join("; ")
        )));
    }
    for sql in CREATE {
        conn.query_drop(sql).await.db(target)?;
    }
    conn.exec_drop(
        "INSERT INTO continuum.snapshot_request (topic, tables) VALUES (?, ?)",
        (topic, tables.join(",")),
    )
    .await
    .db(target)?;
    Ok(conn.last_insert_id().unwrap_or(0))
}

/// Whether a MariaDB error says the request table (or its schema) is not there.
fn no_table(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(se) if se.code == 1146 || se.code == 1049)
}

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

/// Waits until request `id` has ended, polling every half second, for at most `timeout`.
/// `Ok(None)`: not ended in time.
pub async fn wait(
    conn: &mut Conn,
    target: &str,
    id: u64,
    timeout: Duration,
) -> Result<Option<Ended>, ProducerError> {
    let start = Instant::now();
    loop {
        let row: Option<(Option<String>, u64, Option<String>)> = conn
            .exec_first(
                "SELECT CAST(done_at AS CHAR), rows_done, error FROM continuum.snapshot_request WHERE id = ?",
                (id,),
            )
            .await
            .db(target)?;
        match row {
            None => {
                return Err(ProducerError::Snapshot(format!(
                    "snapshot request {id} is not in continuum.snapshot_request on {target}"
                )))
            }
            Some((Some(_), rows, None)) => return Ok(Some(Ended::Done { rows })),
            Some((Some(_), rows, Some(error))) => return Ok(Some(Ended::Failed { rows, error })),
            Some((None, _, _)) => {}
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_column_splits_into_names() {
        assert_eq!(split("a.b, c.d,,"), vec!["a.b", "c.d"]);
        assert!(split("").is_empty());
    }
}
