//! Where a session starts: the checkpoint's offset on the cluster it names, or, read from
//! another cluster, the first record the checkpoint's GTID position does not cover, moved back
//! to the start of what it belongs to (a transaction's first event, a snapshot's START).
//! Guarantees: a start is always a record that starts something, inside the topic's range;
//! records deleted before they were applied, or a topic that was recreated, stop apply with a
//! message saying what to do.

use continuum_schemas::StreamPosition;
use rdkafka::consumer::BaseConsumer;

use super::Apply;
use crate::checkpoint::Checkpoint;
use crate::error::{ApplyError, Result};
use crate::settings::PARTITION;
use crate::topic::{position_of, TopicReader};

impl Apply {
    fn topic_reader(&self) -> Result<TopicReader> {
        let c: BaseConsumer = self
            .settings
            .consumer_config("apply-seek")?
            .create()
            .map_err(|source| ApplyError::Kafka {
                what: "creating a consumer".into(),
                source,
            })?;
        Ok(TopicReader::new(c, &self.settings.topic))
    }

    /// Where to start: the checkpoint's offset on the same cluster; on another cluster the
    /// first record the checkpoint's GTID position does not cover; the topic's start if there is
    /// no checkpoint. Also returns the high watermark.
    pub(super) async fn start_point(
        &self,
        loaded: Option<Checkpoint>,
    ) -> Result<(Checkpoint, i64)> {
        let s = &self.settings;
        let reader = self.topic_reader()?;
        let topic = s.topic.clone();
        let cluster = s.read_from.clone();
        let kafka = |what: &str| {
            let what = what.to_owned();
            move |source| ApplyError::Kafka { what, source }
        };
        // The session's first requests to the cluster go through the guarded helpers: a cluster
        // that refuses this client (a wrong password, CA or protocol) stops apply at once with
        // a fatal error naming the setting, instead of timing out for ever.
        let cfg = s.consumer_config("apply-start")?;
        let t = topic.clone();
        let (parts, marks) = blocking(move || {
            let timeout = std::time::Duration::from_secs(10);
            let p = continuum_common::kafka::topic_partitions(&cfg, &t, timeout)?;
            let w = if p.is_some() {
                Some(continuum_common::kafka::fetch_watermarks(
                    &cfg, &t, timeout,
                )?)
            } else {
                None
            };
            Ok((p, w))
        })
        .await
        .map_err(kafka("reading the topic's metadata"))?;
        let topic_err = |reason: String| ApplyError::Topic {
            topic: topic.clone(),
            cluster: cluster.clone(),
            reason,
        };
        match parts {
            None => {
                return Err(ApplyError::NoTopic {
                    topic: topic.clone(),
                    cluster: cluster.clone(),
                })
            }
            Some(1) => {}
            Some(n) => {
                return Err(topic_err(format!(
                    "has {n} partitions; a changelog must have exactly one (it is the binlog, in order)"
                )))
            }
        }
        let (low, high) = marks.unwrap_or((0, 0));
        let ck = match loaded {
            None => {
                tracing::info!(%topic, %cluster, offset = low, "no checkpoint yet: applying from the start of the topic");
                Checkpoint::new(&topic, PARTITION, &cluster, low)
            }
            Some(c) if c.cluster == cluster => {
                if c.next_offset < low {
                    return Err(topic_err(format!(
                        "the checkpoint is at offset {}, but the topic now starts at {low}: records {}..{low} were deleted before this replica applied them. Restore the replica from a fresh snapshot (restart the producer with --resnapshot) or run `continuum-consumer replay --from-beginning` knowing those changes are missing",
                        c.next_offset, c.next_offset
                    )));
                }
                if c.next_offset > high {
                    return Err(topic_err(format!(
                        "the checkpoint is at offset {}, beyond the topic's end {high}: the topic was recreated or truncated. Run `continuum-consumer replay --from-beginning` to apply it again from the start",
                        c.next_offset
                    )));
                }
                c
            }
            Some(mut c) => {
                let covered_pos = c.gtid_position.clone();
                let loading = c.snapshot.as_ref().map(|l| l.id.clone());
                let r = reader.clone();
                let found = blocking(move || {
                    let o = r.first_where(low, high, |rec| {
                        match position_of(rec) {
                            Some(StreamPosition::Txn { gtid, .. }) => covered_pos.contains(&gtid),
                            Some(StreamPosition::At(p)) => covered_pos.covers(&p),
                            Some(StreamPosition::Snapshot { id, position }) => {
                                loading.as_deref() != Some(id.as_str())
                                    && covered_pos.covers(&position)
                            }
                            Some(chunk @ StreamPosition::Chunk { .. }) => {
                                chunk.contained_in(&covered_pos)
                            }
                            None => false,
                        }
                        .then_some(())
                        .is_none()
                    })?;
                    align_to_start(&r, low, o, high)
                })
                .await
                .map_err(|e| match e {
                    AlignError::Kafka(source) => ApplyError::Kafka {
                        what: "finding the checkpoint's place by GTID".into(),
                        source,
                    },
                    AlignError::Other(reason) => topic_err(reason),
                })?;
                tracing::warn!(
                    from = %c.cluster, to = %cluster, gtid_position = %c.gtid_position, offset = found,
                    "the checkpoint refers to another cluster: found its place here by GTID position"
                );
                c.cluster = cluster.clone();
                c.next_offset = found;
                c
            }
        };
        Ok((ck, high))
    }
}

/// Runs a blocking topic call off the async workers.
pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> std::result::Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

#[derive(Debug)]
pub enum AlignError {
    Kafka(rdkafka::error::KafkaError),
    Other(String),
}

impl From<rdkafka::error::KafkaError> for AlignError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        AlignError::Kafka(e)
    }
}

/// Moves `o` back to where what it is part of starts: a source transaction's first event, or
/// a snapshot's START marker. Returns `high` for `o >= high`.
pub fn align_to_start(
    r: &TopicReader,
    low: i64,
    o: i64,
    high: i64,
) -> std::result::Result<i64, AlignError> {
    if o >= high {
        return Ok(high);
    }
    let rec = r.must_read(o)?;
    if rec.offset >= high {
        return Ok(high);
    }
    let o = rec.offset;
    match position_of(&rec) {
        Some(StreamPosition::Txn { gtid, index, .. }) if index > 0 => {
            let start = o - index as i64;
            if start >= low {
                let first = r.must_read(start)?;
                if let Some(StreamPosition::Txn {
                    gtid: g, index: 0, ..
                }) = position_of(&first)
                {
                    if g == gtid && first.offset == start {
                        return Ok(start);
                    }
                }
            }
            Err(AlignError::Other(format!(
                "offset {o} is event {index} of transaction {gtid}, and its first event is not at offset {start}; choose an offset where a transaction starts"
            )))
        }
        Some(StreamPosition::Snapshot { id, .. }) => {
            let want = id.clone();
            let start = r.first_where(low, o + 1, |x| {
                matches!(position_of(x), Some(StreamPosition::Snapshot { id, .. }) if id == want)
            })?;
            let first = r.must_read(start)?;
            if first.header_str(continuum_schemas::HEADER_KIND) == Some("snapshot") {
                Ok(start)
            } else {
                Err(AlignError::Other(format!(
                    "offset {o} is part of snapshot {id}, whose START marker is no longer in the topic (the first record of it is at {start}); choose an offset after the snapshot's END or restore from a new snapshot"
                )))
            }
        }
        _ => Ok(o),
    }
}
