//! The checkpoint: one row of `continuum.checkpoint` per (source topic, partition), stored in the
//! replica itself.
//!
//! Guarantees:
//! - every MariaDB transaction that applies rows also upserts this row (see
//!   [`Checkpoint::upsert_sql`]), so the row and the data it describes commit or vanish together:
//!   a crash at any instant resumes exactly at the first record not yet applied;
//! - `next_offset` always points at a record that starts something (a source transaction, a
//!   heartbeat, a snapshot marker or row): apply never commits half a source transaction;
//! - `cluster` names the site whose Kafka cluster `next_offset` refers to. Reading from another
//!   cluster, apply finds its place by GTID instead (see `apply.rs`).

use continuum_schemas::{Gtid, GtidPosition};
use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::error::{ApplyError, Result};
use crate::sql::push_literal_text;

pub const SCHEMA_SQL: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS `continuum`",
    "CREATE TABLE IF NOT EXISTS `continuum`.`checkpoint` (
  `source_topic`   VARCHAR(249) NOT NULL COMMENT 'changelog topic applied',
  `partition`      INT NOT NULL COMMENT 'always 0: a changelog has one partition',
  `cluster`        VARCHAR(64) NOT NULL COMMENT 'site whose Kafka cluster next_offset refers to',
  `next_offset`    BIGINT NOT NULL COMMENT 'first record not yet applied',
  `gtid_position`  TEXT NOT NULL COMMENT 'source GTID position the replica is at',
  `last_gtid`      VARCHAR(64) NULL COMMENT 'last source transaction applied',
  `source_ts_ms`   BIGINT NULL COMMENT 'source time of the last applied transaction or heartbeat',
  `record_ts_ms`   BIGINT NULL COMMENT 'Kafka timestamp of the last record passed',
  `applied_at`     DATETIME(6) NOT NULL COMMENT 'UTC time of the last commit',
  `replay_until`   TEXT NULL COMMENT 'replay: GTID skip is suspended until this position is passed',
  `until_ts_ms`    BIGINT NULL COMMENT 'replay --until-time: stop before the first record newer than this',
  `until_reached`  TINYINT NOT NULL DEFAULT 0 COMMENT '1 once apply stopped at until_ts_ms',
  `snapshot_id`    VARCHAR(255) NULL COMMENT 'snapshot being loaded',
  `snapshot_state` VARCHAR(16) NULL COMMENT 'loading while a snapshot loads',
  `error`          TEXT NULL COMMENT 'why apply stopped, if it stopped at an error',
  `error_at`       DATETIME(6) NULL,
  PRIMARY KEY (`source_topic`, `partition`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// A snapshot being loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadingSnapshot {
    pub id: String,
}

/// An epoch-milliseconds time (the checkpoint's `source_ts_ms`, `until_ts_ms`) as RFC 3339 UTC,
/// or the number itself if it is out of range.
pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The checkpoint row, as apply keeps it in memory between commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The changelog topic applied (`source_topic`).
    pub topic: String,
    /// Always 0: a changelog has one partition.
    pub partition: i32,
    /// The site whose Kafka cluster `next_offset` refers to.
    pub cluster: String,
    /// The first record not yet applied.
    pub next_offset: i64,
    /// The source's GTID position the replica is at.
    pub gtid_position: GtidPosition,
    /// The last source transaction applied.
    pub last_gtid: Option<Gtid>,
    /// Source time of the last transaction or heartbeat applied, epoch ms.
    pub source_ts_ms: Option<i64>,
    /// Kafka timestamp of the last record passed, epoch ms.
    pub record_ts_ms: Option<i64>,
    /// `replay`: GTID skip is suspended until this position is passed.
    pub replay_until: Option<GtidPosition>,
    /// `replay --until-time`: stop before the first record newer than this, epoch ms.
    pub until_ts_ms: Option<i64>,
    /// Apply stopped at `until_ts_ms`.
    pub until_reached: bool,
    /// The snapshot being loaded, between its START and END markers.
    pub snapshot: Option<LoadingSnapshot>,
    /// Why apply stopped, if it stopped at a record it cannot apply.
    pub error: Option<String>,
    /// `applied_at` as read (UTC text); not written back (the server sets it).
    pub applied_at: Option<String>,
}

impl Checkpoint {
    pub fn new(topic: &str, partition: i32, cluster: &str, next_offset: i64) -> Self {
        Checkpoint {
            topic: topic.to_owned(),
            partition,
            cluster: cluster.to_owned(),
            next_offset,
            gtid_position: GtidPosition::new(),
            last_gtid: None,
            source_ts_ms: None,
            record_ts_ms: None,
            replay_until: None,
            until_ts_ms: None,
            until_reached: false,
            snapshot: None,
            error: None,
            applied_at: None,
        }
    }

    /// The upsert that records this checkpoint; part of every apply transaction. Clears `error`.
    pub fn upsert_sql(&self) -> String {
        let mut s = String::with_capacity(512);
        s.push_str(
            "INSERT INTO `continuum`.`checkpoint` (`source_topic`,`partition`,`cluster`,`next_offset`,`gtid_position`,`last_gtid`,`source_ts_ms`,`record_ts_ms`,`applied_at`,`replay_until`,`until_ts_ms`,`until_reached`,`snapshot_id`,`snapshot_state`,`error`,`error_at`) VALUES (",
        );
        push_literal_text(&mut s, &self.topic);
        s.push_str(&format!(",{},", self.partition));
        push_literal_text(&mut s, &self.cluster);
        s.push_str(&format!(",{},", self.next_offset));
        push_literal_text(&mut s, &self.gtid_position.to_string());
        s.push(',');
        opt_text(&mut s, self.last_gtid.map(|g| g.to_string()).as_deref());
        s.push(',');
        opt_num(&mut s, self.source_ts_ms);
        s.push(',');
        opt_num(&mut s, self.record_ts_ms);
        s.push_str(",UTC_TIMESTAMP(6),");
        opt_text(
            &mut s,
            self.replay_until.as_ref().map(|p| p.to_string()).as_deref(),
        );
        s.push(',');
        opt_num(&mut s, self.until_ts_ms);
        s.push_str(if self.until_reached { ",1," } else { ",0," });
        opt_text(&mut s, self.snapshot.as_ref().map(|l| l.id.as_str()));
        s.push(',');
        opt_text(&mut s, self.snapshot.as_ref().map(|_| "loading"));
        s.push_str(",NULL,NULL) ON DUPLICATE KEY UPDATE ");
        let cols = [
            "cluster",
            "next_offset",
            "gtid_position",
            "last_gtid",
            "source_ts_ms",
            "record_ts_ms",
            "applied_at",
            "replay_until",
            "until_ts_ms",
            "until_reached",
            "snapshot_id",
            "snapshot_state",
            "error",
            "error_at",
        ];
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("`{c}`=VALUES(`{c}`)"));
        }
        s
    }
}

fn opt_text(s: &mut String, v: Option<&str>) {
    match v {
        Some(t) => push_literal_text(s, t),
        None => s.push_str("NULL"),
    }
}

fn opt_num(s: &mut String, v: Option<i64>) {
    match v {
        Some(n) => s.push_str(&n.to_string()),
        None => s.push_str("NULL"),
    }
}

/// Creates the `continuum` schema and the checkpoint table if missing.
pub async fn ensure_schema(conn: &mut Conn, target: &str) -> Result<()> {
    for sql in SCHEMA_SQL {
        conn.query_drop(*sql).await.map_err(ApplyError::db(
            target,
            "creating continuum.checkpoint (the apply user needs CREATE on the `continuum` schema)",
        ))?;
    }
    Ok(())
}

/// Reads the checkpoint row of `topic`, if there is one.
pub async fn load(
    conn: &mut Conn,
    target: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<Checkpoint>> {
    let row: Option<mysql_async::Row> = conn
        .exec_first(
            "SELECT `cluster`,`next_offset`,`gtid_position`,`last_gtid`,`source_ts_ms`,`record_ts_ms`,
                    DATE_FORMAT(`applied_at`, '%Y-%m-%dT%H:%i:%s.%fZ'),`replay_until`,`until_ts_ms`,`until_reached`,
                    `snapshot_id`,`snapshot_state`,`error`
             FROM `continuum`.`checkpoint` WHERE `source_topic`=? AND `partition`=?",
            (topic, partition),
        )
        .await
        .map_err(ApplyError::db(target, "reading continuum.checkpoint"))?;
    let Some(row) = row else { return Ok(None) };
    let bad = |reason: String| ApplyError::Checkpoint {
        topic: topic.to_owned(),
        target: target.to_owned(),
        reason,
    };
    let mut row = row;
    macro_rules! col {
        ($i:expr, $t:ty) => {
            row.take_opt::<$t, _>($i)
                .ok_or_else(|| bad(format!("column {} is missing", $i)))?
                .map_err(|e| bad(format!("column {}: {e}", $i)))?
        };
    }
    let cluster: String = col!(0, String);
    let next_offset: i64 = col!(1, i64);
    let gtid: String = col!(2, String);
    let last_gtid: Option<String> = col!(3, Option<String>);
    let source_ts_ms: Option<i64> = col!(4, Option<i64>);
    let record_ts_ms: Option<i64> = col!(5, Option<i64>);
    let applied_at: Option<String> = col!(6, Option<String>);
    let replay_until: Option<String> = col!(7, Option<String>);
    let until_ts_ms: Option<i64> = col!(8, Option<i64>);
    let until_reached: i64 = col!(9, i64);
    let snapshot_id: Option<String> = col!(10, Option<String>);
    let snapshot_state: Option<String> = col!(11, Option<String>);
    let error: Option<String> = col!(12, Option<String>);
    let gtid_position: GtidPosition = gtid
        .parse()
        .map_err(|e| bad(format!("gtid_position: {e}")))?;
    let last_gtid = match last_gtid {
        Some(g) if !g.is_empty() => Some(g.parse().map_err(|e| bad(format!("last_gtid: {e}")))?),
        _ => None,
    };
    let replay_until = match replay_until {
        Some(p) => Some(p.parse().map_err(|e| bad(format!("replay_until: {e}")))?),
        None => None,
    };
    let snapshot = match (snapshot_id, snapshot_state.as_deref()) {
        (Some(id), Some("loading")) => Some(LoadingSnapshot { id }),
        _ => None,
    };
    Ok(Some(Checkpoint {
        topic: topic.to_owned(),
        partition,
        cluster,
        next_offset,
        gtid_position,
        last_gtid,
        source_ts_ms,
        record_ts_ms,
        replay_until,
        until_ts_ms,
        until_reached: until_reached != 0,
        snapshot,
        error,
        applied_at,
    }))
}

/// Records why apply stopped, without moving the checkpoint (its own autocommit statement).
pub async fn record_error(
    conn: &mut Conn,
    topic: &str,
    partition: i32,
    message: &str,
) -> std::result::Result<(), mysql_async::Error> {
    conn.exec_drop(
        "UPDATE `continuum`.`checkpoint` SET `error`=?, `error_at`=UTC_TIMESTAMP(6) WHERE `source_topic`=? AND `partition`=?",
        (message, topic, partition),
    )
    .await
}

/// The larger of two positions in every domain.
pub fn merge_max(a: &GtidPosition, b: &GtidPosition) -> GtidPosition {
    let mut out = a.clone();
    for g in b.iter() {
        if !out.contains(g) {
            out.advance(*g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_takes_the_max_per_domain() {
        let a: GtidPosition = "1-1-10,2-2-5".parse().unwrap();
        let b: GtidPosition = "1-1-7,2-2-9,3-3-1".parse().unwrap();
        assert_eq!(merge_max(&a, &b).to_string(), "1-1-10,2-2-9,3-3-1");
    }

    #[test]
    fn upsert_is_literal_safe() {
        let mut c = Checkpoint::new("sf.cdc'; DROP TABLE x; --", 0, "eu", 42);
        c.gtid_position = "1-1-5".parse().unwrap();
        c.snapshot = Some(LoadingSnapshot { id: "s'1".into() });
        let sql = c.upsert_sql();
        assert!(!sql.contains("DROP TABLE"), "{sql}");
        assert!(sql.contains(",42,"), "{sql}");
    }
}
