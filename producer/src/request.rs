//! The running producer's side of snapshot requests (`continuum_common::request` has the table
//! and the verbs' side): it polls `continuum.snapshot_request` for its own topic's requests, takes
//! the oldest not done, one at a time, and records when it started, the rows written, and when
//! it ended (or why it failed).

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use continuum_common::filter::TableFilter;
use continuum_common::request::no_table;
pub use continuum_common::request::{
    check_tables, parse_ranges, split, submit, wait, Ended, KeyRange, Request,
};
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
        let conn = self.conn().await?;
        let query = "SELECT id, tables, ranges FROM continuum.snapshot_request WHERE topic = ? AND done_at IS NULL ORDER BY id LIMIT 1";
        let mut row: Result<Option<(u64, String, Option<String>)>, _> =
            conn.exec_first(query, (topic.as_str(),)).await;
        if matches!(&row, Err(mysql_async::Error::Server(se)) if se.code == 1054) {
            // A table made by a version without key ranges: bring it up to date.
            continuum_common::request::create(conn, &target).await?;
            row = conn.exec_first(query, (topic.as_str(),)).await;
        }
        match row {
            Ok(Some((id, tables, ranges))) => {
                let tables = split(&tables);
                match parse_ranges(id, tables.len(), ranges.as_deref()) {
                    Ok(ranges) => Ok(Some(Request { id, tables, ranges })),
                    // A request that does not read is failed, and the next one taken.
                    Err(e) => {
                        tracing::error!(request = id, error = %e, "snapshot request refused");
                        self.finished(id, 0, Some(&e.to_string())).await?;
                        Ok(None)
                    }
                }
            }
            Ok(None) => Ok(None),
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
    let (tables, refused) = incremental_refusals(conn, target, filter).await?;
    if tables.is_empty() {
        return Ok((position, 0, tables));
    }
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
    let id = submit(conn, target, topic, Some(filter), &tables, &[]).await?;
    Ok((position, id, tables))
}

/// The capture filter each topic's producer last streamed with, so that a table newly captured
/// by a changed `producer.include`/`producer.exclude` is snapshotted: its rows before the change
/// are in no binlog event the producer will read.
const CAPTURE_CREATE: &str = "CREATE TABLE IF NOT EXISTS continuum.capture (\
       topic VARCHAR(249) NOT NULL PRIMARY KEY COMMENT 'the changelog topic', \
       include TEXT NOT NULL COMMENT 'producer.include, as a JSON array', \
       exclude TEXT NOT NULL COMMENT 'producer.exclude, as a JSON array', \
       left_out MEDIUMTEXT NOT NULL COMMENT 'tables left out at start (no primary key), as a JSON array', \
       updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)\
     ) ENGINE=InnoDB COMMENT 'the filter continuum-producer last streamed each topic with (docs/snapshot.md)'";

/// `producer.include` and `producer.exclude` as a producer streamed with them, and the tables
/// it left out at start (no primary key, `tables_without_primary_key = "exclude"`): a table that
/// gets a key is newly captured too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSet {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub left_out: Vec<String>,
}

impl CaptureSet {
    /// The capture of `cfg`, with `filter` (its tables left out at start).
    pub fn of(cfg: &continuum_common::config::ProducerConfig, filter: &TableFilter) -> CaptureSet {
        CaptureSet {
            include: cfg.include.clone(),
            exclude: cfg.exclude.clone(),
            left_out: filter.left_out().to_vec(),
        }
    }

    fn filter(&self) -> Result<TableFilter, ProducerError> {
        let cfg = continuum_common::config::ProducerConfig {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            ..Default::default()
        };
        let mut filter = TableFilter::new(&cfg)?;
        for t in &self.left_out {
            filter.exclude_table(t.clone());
        }
        Ok(filter)
    }
}

/// The tables of `existing` (`db`, `table`) that `now` captures and the filter `before`
/// did not, as `db.table`.
pub fn newly_captured(
    now: &TableFilter,
    before: &CaptureSet,
    existing: &[(String, String)],
) -> Result<Vec<String>, ProducerError> {
    let before = before.filter()?;
    Ok(existing
        .iter()
        .filter(|(d, t)| now.captures(d, t) && !before.captures(d, t))
        .map(|(d, t)| format!("{d}.{t}"))
        .collect())
}

/// The filter the producer of `topic` last streamed with; `None` if none is recorded (a topic
/// first written by an older producer, or by this one for the first time).
pub async fn captured_before(
    conn: &mut Conn,
    target: &str,
    topic: &str,
) -> Result<Option<CaptureSet>, ProducerError> {
    let row: Result<Option<(String, String, String)>, _> = conn
        .exec_first(
            "SELECT include, exclude, left_out FROM continuum.capture WHERE topic = ?",
            (topic,),
        )
        .await;
    let (include, exclude, left_out) = match row {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) if no_table(&e) => return Ok(None),
        Err(source) => {
            return Err(ProducerError::Db {
                target: target.to_owned(),
                source,
            })
        }
    };
    let parse = |text: &str, column: &str| {
        serde_json::from_str::<Vec<String>>(text).map_err(|e| {
            ProducerError::Snapshot(format!(
                "continuum.capture.{column} of topic {topic} on {target} is not a JSON array of patterns ({e}): '{text}'; delete the row to stop comparing with it"
            ))
        })
    };
    Ok(Some(CaptureSet {
        include: parse(&include, "include")?,
        exclude: parse(&exclude, "exclude")?,
        left_out: parse(&left_out, "left_out")?,
    }))
}

/// Records `set` as the filter the producer of `topic` streams with.
pub async fn record_capture(
    conn: &mut Conn,
    target: &str,
    topic: &str,
    set: &CaptureSet,
) -> Result<(), ProducerError> {
    let json = |v: &Vec<String>| serde_json::to_string(v).expect("strings serialise");
    let upsert = "INSERT INTO continuum.capture (topic, include, exclude, left_out) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE include = VALUES(include), exclude = VALUES(exclude), left_out = VALUES(left_out)";
    let params = (
        topic,
        json(&set.include),
        json(&set.exclude),
        json(&set.left_out),
    );
    match conn.exec_drop(upsert, params.clone()).await {
        // The table is made the first time only: DDL is binlogged even when it changes nothing.
        Err(e) if no_table(&e) => {
            for sql in [continuum_common::request::CREATE[0], CAPTURE_CREATE] {
                conn.query_drop(sql).await.db(target)?;
            }
            conn.exec_drop(upsert, params).await.db(target)
        }
        r => r.db(target),
    }
}

/// Every table `filter` captures, and why any of them cannot be snapshotted incrementally
/// (empty: every one can).
pub async fn incremental_refusals(
    conn: &mut Conn,
    target: &str,
    filter: &TableFilter,
) -> Result<(Vec<String>, Vec<String>), ProducerError> {
    let tables = captured_tables(conn, target, filter).await?;
    if tables.is_empty() {
        return Ok((tables, Vec::new()));
    }
    let refused = check_tables(conn, target, Some(filter), &tables).await?;
    Ok((tables, refused))
}

/// A request of `topic` not done for exactly `tables`, whole.
pub async fn pending_for(
    conn: &mut Conn,
    target: &str,
    topic: &str,
    tables: &[String],
) -> Result<Option<u64>, ProducerError> {
    let id = conn
        .exec_first(
            "SELECT id FROM continuum.snapshot_request WHERE topic = ? AND tables = ? AND ranges IS NULL AND done_at IS NULL ORDER BY id LIMIT 1",
            (topic, tables.join(",")),
        )
        .await;
    match id {
        Ok(id) => Ok(id),
        Err(mysql_async::Error::Server(se)) if se.code == 1054 => Ok(None),
        Err(e) if no_table(&e) => Ok(None),
        Err(source) => Err(ProducerError::Db {
            target: target.to_owned(),
            source,
        }),
    }
}

/// Every table of the source that `filter` captures, as `db.table`.
pub async fn captured_tables(
    conn: &mut Conn,
    target: &str,
    filter: &TableFilter,
) -> Result<Vec<String>, ProducerError> {
    Ok(base_tables(conn, target)
        .await?
        .into_iter()
        .filter(|(d, t)| filter.captures(d, t))
        .map(|(d, t)| format!("{d}.{t}"))
        .collect())
}

/// Every base table of the source, as (`db`, `table`).
pub async fn base_tables(
    conn: &mut Conn,
    target: &str,
) -> Result<Vec<(String, String)>, ProducerError> {
    conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
    )
    .await
    .db(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(include: &[&str], exclude: &[&str]) -> CaptureSet {
        CaptureSet {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            left_out: Vec::new(),
        }
    }

    fn tables(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| {
                let (d, t) = n.split_once('.').unwrap();
                (d.to_owned(), t.to_owned())
            })
            .collect()
    }

    #[test]
    fn a_table_is_new_only_when_the_old_filter_left_it_out() {
        let existing = tables(&["shop.orders", "shop.tmp_x", "crm.leads", "crm.customers"]);
        let now = set(&["shop.*", "crm.*"], &["shop.tmp_*"]).filter().unwrap();
        let before = set(&["shop.*", "crm.customers"], &[]);
        assert_eq!(
            newly_captured(&now, &before, &existing).unwrap(),
            vec!["crm.leads"],
            "shop.tmp_x is no longer captured, crm.customers and shop.orders were already"
        );
        assert!(newly_captured(&now, &set(&["*.*"], &[]), &existing)
            .unwrap()
            .is_empty());
        // A table dropped from the capture and taken back is new again.
        let narrowed = set(&["shop.*"], &[]);
        assert_eq!(
            newly_captured(&now, &narrowed, &existing).unwrap(),
            vec!["crm.leads", "crm.customers"]
        );
    }

    #[test]
    fn a_table_left_out_for_its_missing_key_is_new_once_it_has_one() {
        let existing = tables(&["shop.orders", "shop.log"]);
        let now = set(&["shop.*"], &[]).filter().unwrap();
        let mut before = set(&["shop.*"], &[]);
        before.left_out = vec!["shop.log".into()];
        assert_eq!(
            newly_captured(&now, &before, &existing).unwrap(),
            vec!["shop.log"]
        );
        // Still without a key, it is left out now too: nothing new.
        let mut still = now.clone();
        still.exclude_table("shop.log".into());
        assert!(newly_captured(&still, &before, &existing)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_recorded_filter_that_does_not_compile_is_refused() {
        let now = set(&["*.*"], &[]).filter().unwrap();
        assert!(newly_captured(&now, &set(&["nodot"], &[]), &[]).is_err());
    }
}
