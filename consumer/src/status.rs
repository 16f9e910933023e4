//! `status [--json]`: where apply is, from the checkpoint row and the topic: checkpoint offset
//! and high watermark, records behind, GTID position applied versus the latest in the topic
//! (from the last record's `continuum.pos`), seconds behind the source, and a state:
//!
//! | state | meaning |
//! |---|---|
//! | `running` | apply holds its lock and records are waiting |
//! | `idle` | apply holds its lock and has applied everything in the topic |
//! | `snapshot-loading` | a snapshot is loading: its tables are partial until its END |
//! | `replaying` | GTID skip is suspended until the position recorded by `replay` is passed |
//! | `until-time-reached` | apply stopped at `replay --until-time` |
//! | `stopped-at-error` | apply stopped at a record it cannot apply (see `error`) |
//! | `stopped` | no apply is running |
//! | `not-started` | there is no checkpoint yet |
//!
//! While the producer writes an incremental snapshot (the first of an empty topic, a requested
//! one, a repair), the topic's last record carries its progress, and status shows it: the replica
//! holds every row of those tables only once it ends and apply has caught up.
//!
//! Reads only; safe to run at any time.

use std::time::Duration;

use continuum_schemas::StreamPosition;
use mysql_async::prelude::*;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use crate::checkpoint::fmt_ms;
use crate::checkpoint::{self, Checkpoint};
use crate::error::ApplyError;
use crate::lock::lock_name;
use crate::settings::{ApplySettings, PARTITION};
use crate::topic::{position_of, TopicReader};

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The changelog topic applied here.
    pub topic: String,
    /// Always 0: a changelog has one partition.
    pub partition: i32,
    /// The cluster being read (`consumer.apply.read_from`).
    pub read_from: String,
    /// The cluster the checkpoint's offset refers to.
    pub checkpoint_cluster: Option<String>,
    /// The replica's MariaDB server (user@host:port).
    pub target: String,
    /// One of the states in the table above (`running`, `idle`, ...).
    pub state: String,
    /// MariaDB connection id holding the apply lock, if apply runs.
    pub apply_connection: Option<i64>,
    /// The checkpoint's next offset: the first record not yet applied.
    pub checkpoint_offset: Option<i64>,
    /// The topic's first and next offsets in the cluster read.
    pub low_watermark: Option<i64>,
    pub high_watermark: Option<i64>,
    /// `high_watermark` minus `checkpoint_offset`.
    pub records_behind: Option<i64>,
    /// The source GTID position the replica is at, and the last transaction applied.
    pub gtid_applied: Option<String>,
    pub last_applied_gtid: Option<String>,
    /// The latest GTID position in the topic, from its last record's `continuum.pos`.
    pub gtid_latest: Option<String>,
    /// The last record's `continuum.pos`, whole.
    pub latest_record: Option<String>,
    /// Now minus the source time of the last transaction or heartbeat applied.
    pub seconds_behind_source: Option<f64>,
    /// That source time, and the time of the last commit here (UTC, RFC 3339).
    pub source_time: Option<String>,
    pub applied_at: Option<String>,
    /// The checkpoint's `replay_until` and `until_ts_ms` (see [`Checkpoint`]).
    pub replay_until: Option<String>,
    pub until_time: Option<String>,
    /// The id of the snapshot being loaded.
    pub snapshot_loading: Option<String>,
    /// The incremental snapshot being written into the topic, from its last record's progress
    /// header.
    pub incremental_snapshot: Option<IncrementalSnapshot>,
    /// Why apply stopped, if it stopped at an error.
    pub error: Option<String>,
    /// Problems reaching the broker, if any (the rest is still reported).
    pub kafka_error: Option<String>,
}

/// An incremental snapshot the producer is writing, as the topic's last record says.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncrementalSnapshot {
    pub id: String,
    /// Its row in the source's `continuum.snapshot_request`.
    pub request: u64,
    /// The tables still to read (once per key range of a repair); the first is being read.
    pub tables_left: Vec<String>,
    /// Rows written so far.
    pub rows_written: u64,
}

impl IncrementalSnapshot {
    /// From a record's `continuum.snapshot` header; `None` when it does not parse or the
    /// snapshot is done.
    fn of(header: &str) -> Option<IncrementalSnapshot> {
        let p = continuum_producer::incremental::Progress::parse(header, "").ok()?;
        (!p.done()).then_some(IncrementalSnapshot {
            id: p.id,
            request: p.request,
            tables_left: p.tables,
            rows_written: p.rows,
        })
    }
}

/// The `status` verb.
pub async fn main(cfg: continuum_common::SiteConfig, args: StatusArgs) -> Result<(), ApplyError> {
    let settings = ApplySettings::resolve(&cfg).map_err(ApplyError::from)?;
    let report = tokio::time::timeout(STATUS_TIMEOUT * 3, status(&settings))
        .await
        .map_err(|_| ApplyError::Topic {
            topic: settings.topic.clone(),
            cluster: settings.read_from.clone(),
            reason: "status timed out".into(),
        })??;
    crate::report::print(&report, args.json, |r| r.to_string());
    Ok(())
}

pub async fn status(settings: &ApplySettings) -> Result<StatusReport, ApplyError> {
    let target = settings.target();
    let db = |what: &str| ApplyError::db(&target, what);
    let mut conn = mysql_async::Conn::new(settings.db_opts_plain()?)
        .await
        .map_err(db("connecting"))?;
    let ck: Option<Checkpoint> =
        match checkpoint::load(&mut conn, &target, &settings.topic, PARTITION).await {
            Ok(c) => c,
            Err(e) if e.server_code() == Some(1146) || e.server_code() == Some(1049) => None,
            Err(e) => return Err(e),
        };
    let holder: Option<Option<i64>> = conn
        .exec_first("SELECT IS_USED_LOCK(?)", (lock_name(&settings.topic),))
        .await
        .map_err(db("checking the apply lock"))?;
    let holder = holder.flatten();
    let _ = conn.disconnect().await;

    // The topic: watermarks and the last record.
    let consumer: Result<BaseConsumer, _> = settings
        .consumer_config("status")
        .map_err(ApplyError::from)?
        .create();
    let topic = settings.topic.clone();
    let kafka = match consumer {
        Ok(c) => {
            let r = TopicReader::new(c, &topic);
            tokio::task::spawn_blocking(move || -> Result<_, rdkafka::error::KafkaError> {
                let (low, high) = r.watermarks()?;
                let last = if high > low {
                    r.read_from(high - 1)?
                } else {
                    None
                };
                Ok((low, high, last))
            })
            .await
            .expect("join")
        }
        Err(e) => Err(e),
    };
    let (low, high, last, kafka_error) = match kafka {
        Ok((l, h, last)) => (Some(l), Some(h), last, None),
        Err(e) => (None, None, None, Some(e.to_string())),
    };
    let last_pos = last.as_ref().and_then(position_of);
    let gtid_latest = last_pos.as_ref().map(|p| match p {
        StreamPosition::Txn { gtid, resume, .. } => resume.with(*gtid).to_string(),
        StreamPosition::At(p) => p.to_string(),
        StreamPosition::Snapshot { position, .. } | StreamPosition::Chunk { position, .. } => {
            position.to_string()
        }
    });
    let same_cluster = ck.as_ref().is_some_and(|c| c.cluster == settings.read_from);
    let behind = match (&ck, high) {
        (Some(c), Some(h)) if same_cluster => Some((h - c.next_offset).max(0)),
        _ => None,
    };
    let running = holder.is_some();
    let state = match &ck {
        None if running => "running",
        None => "not-started",
        Some(c) if c.error.is_some() && !running => "stopped-at-error",
        Some(c) if c.until_reached => "until-time-reached",
        Some(c) if c.snapshot.is_some() => "snapshot-loading",
        Some(c) if c.replay_until.is_some() => "replaying",
        Some(_) if running && behind == Some(0) => "idle",
        Some(_) if running => "running",
        Some(_) => "stopped",
    };
    let now = continuum_common::observe::now_ms();
    Ok(StatusReport {
        topic: settings.topic.clone(),
        partition: PARTITION,
        read_from: settings.read_from.clone(),
        checkpoint_cluster: ck.as_ref().map(|c| c.cluster.clone()),
        target,
        state: state.into(),
        apply_connection: holder,
        checkpoint_offset: ck.as_ref().map(|c| c.next_offset),
        low_watermark: low,
        high_watermark: high,
        records_behind: behind,
        gtid_applied: ck.as_ref().map(|c| c.gtid_position.to_string()),
        last_applied_gtid: ck.as_ref().and_then(|c| c.last_gtid.map(|g| g.to_string())),
        gtid_latest,
        latest_record: last_pos.map(|p| p.to_string()),
        seconds_behind_source: ck
            .as_ref()
            .and_then(|c| c.source_ts_ms)
            .map(|ts| ((now - ts).max(0) as f64 / 1000.0 * 1000.0).round() / 1000.0),
        source_time: ck.as_ref().and_then(|c| c.source_ts_ms).map(fmt_ms),
        applied_at: ck.as_ref().and_then(|c| c.applied_at.clone()),
        replay_until: ck
            .as_ref()
            .and_then(|c| c.replay_until.as_ref().map(|p| p.to_string())),
        until_time: ck.as_ref().and_then(|c| c.until_ts_ms).map(fmt_ms),
        snapshot_loading: ck
            .as_ref()
            .and_then(|c| c.snapshot.as_ref().map(|s| s.id.clone())),
        incremental_snapshot: last
            .as_ref()
            .and_then(|r| r.header_str(continuum_producer::incremental::HEADER_SNAPSHOT))
            .and_then(IncrementalSnapshot::of),
        error: ck.as_ref().and_then(|c| c.error.clone()),
        kafka_error,
    })
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let n = |v: Option<i64>| v.map_or("-".into(), |x| x.to_string());
        writeln!(
            f,
            "topic            {} [{}] read from the {} cluster",
            self.topic, self.partition, self.read_from
        )?;
        writeln!(f, "target           {}", self.target)?;
        writeln!(
            f,
            "state            {}{}",
            self.state,
            self.apply_connection.map_or(String::new(), |c| format!(
                " (apply holds the lock on connection {c})"
            ))
        )?;
        writeln!(
            f,
            "checkpoint       offset {} of {} ({} records behind){}",
            n(self.checkpoint_offset),
            n(self.high_watermark),
            n(self.records_behind),
            match &self.checkpoint_cluster {
                Some(c) if *c != self.read_from => format!(" [offset refers to the {c} cluster]"),
                _ => String::new(),
            }
        )?;
        writeln!(
            f,
            "gtid applied     {} (last transaction {})",
            o(&self.gtid_applied),
            o(&self.last_applied_gtid)
        )?;
        writeln!(
            f,
            "gtid in topic    {} (last record {})",
            o(&self.gtid_latest),
            o(&self.latest_record)
        )?;
        writeln!(
            f,
            "behind source    {} (source time {}, applied at {})",
            self.seconds_behind_source
                .map_or("-".into(), |s| format!("{s:.3} s")),
            o(&self.source_time),
            o(&self.applied_at)
        )?;
        if let Some(r) = &self.replay_until {
            writeln!(f, "replay           GTID skip suspended until {r}")?;
        }
        if let Some(t) = &self.until_time {
            writeln!(f, "until time       {t}")?;
        }
        if let Some(s) = &self.snapshot_loading {
            writeln!(
                f,
                "snapshot         loading {s} (its tables are partial until it ends)"
            )?;
        }
        if let Some(s) = &self.incremental_snapshot {
            writeln!(
                f,
                "incremental snapshot {} (request {}) being written: {} to read, from {}; {} rows so far (its tables are complete here once it ends and apply has caught up)",
                s.id,
                s.request,
                s.tables_left.len(),
                s.tables_left.first().map_or("-", String::as_str),
                s.rows_written
            )?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "error            {e}")?;
        }
        if let Some(e) = &self.kafka_error {
            writeln!(f, "kafka            {e}")?;
        }
        Ok(())
    }
}

/// How long a status run may wait on the broker.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_producer::incremental::Progress;

    #[test]
    fn a_running_incremental_snapshot_is_read_from_the_progress_header() {
        let mut p = Progress::new(4, vec!["d.a".into(), "d.b".into()], Vec::new());
        p.rows = 1200;
        let s = IncrementalSnapshot::of(&p.header()).expect("running");
        assert_eq!((s.request, s.rows_written), (4, 1200));
        assert_eq!(s.tables_left, ["d.a", "d.b"]);
        p.tables.clear();
        assert_eq!(IncrementalSnapshot::of(&p.header()), None, "done");
        assert_eq!(IncrementalSnapshot::of("not json"), None);
    }
}
