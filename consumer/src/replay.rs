//! `replay`: moves the checkpoint back (to an offset, a time, or the start of the topic) so that
//! apply re-applies from there. Row operations are idempotent, so re-applying converges.
//!
//! Guarantees:
//! - refuses to run while apply runs (it takes the apply lock itself);
//! - the new offset is moved back to where a source transaction or a snapshot starts, so apply
//!   never begins inside one;
//! - records `replay_until` = the replica's GTID position before the replay (merged with an
//!   earlier unfinished replay's): until apply has passed it again, GTID skip is suspended and
//!   every transaction is re-applied; after it, skipping resumes;
//! - `--from-time` does not trust the broker's ListOffsets-by-time alone: the answer is checked
//!   against record timestamps and replaced by a binary search over them when wrong;
//! - `--until-time T` makes apply stop before the first record newer than `T` (a point-in-time
//!   rebuild: start from a snapshot or an empty replica for an exact state at `T`). A `replay`
//!   without it clears an earlier one.

use continuum_schemas::{GtidPosition, StreamPosition};
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use crate::apply::{align_to_start, AlignError};
use crate::checkpoint::{self, fmt_ms, merge_max, Checkpoint};
use crate::error::ApplyError;
use crate::lock::{ApplyLock, Wait};
use crate::settings::{ApplySettings, PARTITION};
use crate::topic::{position_of, TopicReader};
use crate::writer;

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["to_offset", "from_time", "from_beginning"])))]
pub struct ReplayArgs {
    /// Re-apply from this offset (moved back to the start of the transaction or snapshot it
    /// is part of).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<i64>,
    /// Re-apply from the first record written at or after this time (RFC 3339, e.g.
    /// 2025-01-31T12:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Re-apply everything the topic holds.
    #[arg(long)]
    pub from_beginning: bool,
    /// Then stop apply before the first record written after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub until_time: Option<i64>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// RFC 3339 text to milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("'{s}' is not an RFC 3339 time (e.g. 2025-01-31T12:00:00Z): {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("apply is running for {topic} (MariaDB connection {holder} holds '{lock}'); stop it, run replay, then start apply again")]
    ApplyRunning {
        topic: String,
        holder: String,
        lock: String,
    },
    #[error("offset {offset} is outside topic {topic} on the {cluster} cluster, which holds offsets {low} to {high}")]
    OutOfRange {
        topic: String,
        cluster: String,
        offset: i64,
        low: i64,
        high: i64,
    },
    #[error("topic {topic} on the {cluster} cluster: {reason}")]
    Topic {
        topic: String,
        cluster: String,
        reason: String,
    },
}

impl From<continuum_common::ConfigError> for ReplayError {
    fn from(e: continuum_common::ConfigError) -> Self {
        ReplayError::Apply(ApplyError::Config(e))
    }
}

impl ReplayError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ReplayError::Apply(e) if e.is_transient())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub topic: String,
    pub cluster: String,
    pub previous_offset: Option<i64>,
    pub offset: i64,
    /// For `--from-time`: whether the broker's ListOffsets-by-time answer was right.
    pub broker_time_lookup_ok: Option<bool>,
    pub gtid_position: String,
    pub replay_until: Option<String>,
    pub until_time_ms: Option<i64>,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "checkpoint of {} moved from offset {} to {} (on the {} cluster)",
            self.topic,
            self.previous_offset.map_or("-".into(), |o| o.to_string()),
            self.offset,
            self.cluster
        )?;
        if let Some(ok) = self.broker_time_lookup_ok {
            writeln!(
                f,
                "time lookup: {}",
                if ok {
                    "the broker's answer checked out"
                } else {
                    "the broker's answer was wrong; found by a search over record timestamps"
                }
            )?;
        }
        match &self.replay_until {
            Some(p) => writeln!(
                f,
                "GTID skip is suspended until position {p} is passed again"
            )?,
            None => writeln!(f, "nothing to re-apply before the current position")?,
        }
        if let Some(t) = self.until_time_ms {
            writeln!(
                f,
                "apply will stop before the first record written after {}",
                fmt_ms(t)
            )?;
        }
        write!(f, "start apply to re-apply")
    }
}

/// Where the replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayFrom {
    Offset(i64),
    Time(i64),
    Beginning,
}

impl ReplayArgs {
    pub fn from(&self) -> ReplayFrom {
        match (self.to_offset, self.from_time) {
            (Some(o), _) => ReplayFrom::Offset(o),
            (None, Some(t)) => ReplayFrom::Time(t),
            _ => ReplayFrom::Beginning,
        }
    }
}

/// The `replay` verb.
pub async fn main(cfg: continuum_common::SiteConfig, args: ReplayArgs) -> Result<(), ReplayError> {
    let settings = ApplySettings::resolve(&cfg).map_err(ApplyError::from)?;
    let report = replay(&settings, args.from(), args.until_time).await?;
    crate::report::print(&report, args.json, |r| format!("{r}\n"));
    Ok(())
}

/// Moves the checkpoint.
pub async fn replay(
    settings: &ApplySettings,
    from: ReplayFrom,
    until_ms: Option<i64>,
) -> Result<ReplayReport, ReplayError> {
    let target = settings.target();
    let lock = match ApplyLock::take(
        settings.db_opts_plain()?,
        &target,
        &settings.topic,
        Wait::No,
    )
    .await
    {
        Ok(l) => l,
        Err(ApplyError::LockHeld {
            lock,
            holder,
            topic,
            ..
        }) => {
            return Err(ReplayError::ApplyRunning {
                topic,
                holder,
                lock,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let r = move_checkpoint(settings, from, until_ms).await;
    lock.release().await;
    r
}

async fn move_checkpoint(
    settings: &ApplySettings,
    from: ReplayFrom,
    until_ms: Option<i64>,
) -> Result<ReplayReport, ReplayError> {
    let target = settings.target();
    let mut conn = writer::connect(&settings.db_opts()?, &target).await?;
    checkpoint::ensure_schema(&mut conn, &target).await?;
    let old = checkpoint::load(&mut conn, &target, &settings.topic, PARTITION).await?;
    let consumer: BaseConsumer = settings
        .consumer_config("replay")
        .map_err(ApplyError::from)?
        .create()
        .map_err(|source| ApplyError::Kafka {
            what: "creating a consumer".into(),
            source,
        })?;
    let reader = TopicReader::new(consumer, &settings.topic);
    let (topic, cluster) = (settings.topic.clone(), settings.read_from.clone());
    let kafka = |source| {
        ReplayError::Apply(ApplyError::Kafka {
            what: format!("reading {topic} on the {cluster} cluster"),
            source,
        })
    };
    let r = reader.clone();
    let (low, high) = tokio::task::spawn_blocking(move || r.watermarks())
        .await
        .expect("join")
        .map_err(kafka)?;
    let mut broker_ok = None;
    let wanted = match from {
        ReplayFrom::Beginning => low,
        ReplayFrom::Offset(o) => {
            if o < low || o > high {
                return Err(ReplayError::OutOfRange {
                    topic: topic.clone(),
                    cluster: cluster.clone(),
                    offset: o,
                    low,
                    high,
                });
            }
            o
        }
        ReplayFrom::Time(t) => {
            let r = reader.clone();
            let (o, ok) = tokio::task::spawn_blocking(move || r.offset_for_time(t))
                .await
                .expect("join")
                .map_err(kafka)?;
            if !ok {
                tracing::warn!(%topic, time = %fmt_ms(t), offset = o, "the broker's offset for this time was wrong; used a search over record timestamps");
            }
            broker_ok = Some(ok);
            o
        }
    };
    let r = reader.clone();
    let (aligned, before) =
        tokio::task::spawn_blocking(move || -> Result<(i64, Option<GtidPosition>), AlignError> {
            let a = align_to_start(&r, low, wanted, high)?;
            if a >= high {
                return Ok((a, None));
            }
            let rec = r.must_read(a)?;
            // The position just before the record: where the replica will be when apply gets there.
            let before = match position_of(&rec) {
                Some(StreamPosition::Txn { resume, .. }) => Some(resume),
                Some(StreamPosition::At(p)) | Some(StreamPosition::Chunk { position: p, .. }) => {
                    Some(p)
                }
                Some(StreamPosition::Snapshot { .. }) => Some(GtidPosition::new()),
                None => None,
            };
            Ok((a, before))
        })
        .await
        .expect("join")
        .map_err(|e| match e {
            AlignError::Kafka(source) => kafka(source),
            AlignError::Other(reason) => ReplayError::Topic {
                topic: topic.clone(),
                cluster: cluster.clone(),
                reason,
            },
        })?;
    if aligned != wanted {
        tracing::info!(
            wanted,
            aligned,
            "moved the replay start back to where a transaction or snapshot starts"
        );
    }
    let mut ck = old
        .clone()
        .unwrap_or_else(|| Checkpoint::new(&topic, PARTITION, &cluster, aligned));
    let previous_offset = old.as_ref().map(|c| c.next_offset);
    if aligned < high {
        let old_pos = old.as_ref().map(|c| {
            let p = c.gtid_position.clone();
            match &c.replay_until {
                Some(r) => merge_max(&p, r),
                None => p,
            }
        });
        ck.replay_until = old_pos.filter(|p| !p.is_empty());
        if let Some(b) = before {
            ck.gtid_position = b;
        }
    } else {
        ck.replay_until = old.as_ref().and_then(|c| c.replay_until.clone());
    }
    ck.next_offset = aligned;
    ck.cluster = cluster.clone();
    ck.until_ts_ms = until_ms;
    ck.until_reached = false;
    ck.snapshot = None;
    ck.error = None;
    use mysql_async::prelude::Queryable;
    conn.query_drop(ck.upsert_sql())
        .await
        .map_err(ApplyError::db(&target, "writing the checkpoint"))?;
    let _ = conn.disconnect().await;
    tracing::info!(%topic, from = ?previous_offset, to = aligned, replay_until = ?ck.replay_until.as_ref().map(|p| p.to_string()), "checkpoint moved");
    Ok(ReplayReport {
        topic,
        cluster,
        previous_offset,
        offset: aligned,
        broker_time_lookup_ok: broker_ok,
        gtid_position: ck.gtid_position.to_string(),
        replay_until: ck.replay_until.map(|p| p.to_string()),
        until_time_ms: until_ms,
    })
}
