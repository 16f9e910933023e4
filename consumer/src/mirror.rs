//! `mirror`: copies a changelog topic from one site's cluster to another's, exactly once and in
//! order, carrying its schemas.
//!
//! Guarantees:
//! - records keep their order, key, headers, timestamp and value bytes; only the 4-byte schema
//!   ids of key and value change;
//! - exactly once without Kafka transactions: an idempotent producer writes the target (so it
//!   holds a prefix of what was sent) and every mirrored record carries its source offset in the
//!   `continuum.mirror.offset` header; on start the mirror reads the target's last record (once
//!   its end offset is stable) and resumes at the next source offset. No other offsets store;
//! - it resumes only into the source topic it copied: the resume offset must lie within the
//!   source's offsets, and the source record before it must be the one the copy ends with. A
//!   source topic deleted by retention, or deleted and recreated, stops the mirror with a fatal
//!   error saying which, before anything is written;
//! - self-sufficient target site: each schema id met is fetched from the source registry and
//!   registered under the same subject (TopicRecordNameStrategy) in the target registry, so the
//!   target site decodes everything without the source registry. Ids are cached;
//! - one mirror per target topic: a named lock on this site's MariaDB. A second mirror waits
//!   for it and takes over when it is free (when the first stops, or its host dies: see
//!   `continuum_common::lock`); the holder checks the lock before each record it writes;
//! - an unavailable source or target cluster or registry is retried with backoff; a schema the
//!   source registry does not have stops the mirror with an error naming the record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

use continuum_common::config::{ClusterConfig, ProducerConfig};
use continuum_common::kafka::{self, FetchedRecord};
use continuum_common::lock::{LockError, NamedLock, Wait};
use continuum_common::observe::{now_ms, Health, Status};
use continuum_common::supervise::Supervisor;
use continuum_common::writer::{RecordLimit, SendError, Writer};
use continuum_common::{db, ConfigError, SiteConfig};
use continuum_schemas::{avro, Registry, RegistryError};
use continuum_schemas::{HEADER_MIRROR_OFFSET, HEADER_POS};

use crate::metrics as m;
use crate::settings::chosen_or_other_site;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("Kafka ({site} cluster) {what}: {source}")]
    Kafka {
        site: String,
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{0}")]
    Send(#[from] SendError),
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("record {topic}@{offset} on the {site} cluster: {part} uses schema id {id}, which the {site} registry ({registry}) does not have; the record cannot be mirrored without its schema")]
    SchemaNotFound {
        site: String,
        topic: String,
        offset: i64,
        part: &'static str,
        id: u32,
        registry: String,
    },
    #[error("record {topic}@{offset}: {reason}")]
    Record {
        topic: String,
        offset: i64,
        reason: String,
    },
    #[error("record {topic}@{offset} of the {from} cluster (position {position}) is {size} bytes of key and value, more than the {to} cluster takes: the limit is {limit}. Raise the {to} cluster's topic max.message.bytes (and producer.max_record_bytes if it is the lower); nothing from this record on was mirrored, and the mirror stops here again until then")]
    TooLarge {
        from: String,
        to: String,
        topic: String,
        offset: i64,
        position: String,
        size: usize,
        limit: String,
    },
    #[error("the {to} cluster's copy of {topic} would resume at source offset {next}, but {topic} on the {from} cluster ends at offset {high} (it holds offsets {low} to {high}): the {from} topic was deleted and recreated, or emptied, after it was mirrored here. The mirror cannot resume there and wrote nothing. {fix}", fix = replaced_fix(from, to, topic))]
    SourceShorter {
        from: String,
        to: String,
        topic: String,
        next: i64,
        low: i64,
        high: i64,
    },
    #[error("record {topic}@{offset} on the {from} cluster is not the record the {to} cluster's copy ends with (its last record, offset {target_offset}, was mirrored from {from} offset {offset}; {difference}): the {from} topic was deleted and recreated after it was mirrored here. The mirror cannot resume there and wrote nothing. {fix}", fix = replaced_fix(from, to, topic))]
    SourceReplaced {
        from: String,
        to: String,
        topic: String,
        offset: i64,
        target_offset: i64,
        difference: String,
    },
    #[error("the last record of {topic} on the {site} cluster (offset {offset}) has no {HEADER_MIRROR_OFFSET} header: the target topic holds records that were not mirrored here; point the mirror at a topic of its own")]
    ForeignTarget {
        site: String,
        topic: String,
        offset: i64,
    },
}

impl MirrorError {
    pub fn is_transient(&self) -> bool {
        match self {
            MirrorError::Kafka { source, .. } => kafka::is_transient(source),
            MirrorError::Send(SendError::Delivery { .. }) => true,
            MirrorError::Send(SendError::Kafka { source, .. }) => kafka::is_transient(source),
            MirrorError::Registry(e) => e.is_transient(),
            MirrorError::Lock(e) => e.is_transient() || matches!(e, LockError::Lost { .. }),
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            MirrorError::Config(_) => "config",
            MirrorError::Kafka { .. } | MirrorError::Send(_) => "kafka",
            MirrorError::Registry(_) | MirrorError::SchemaNotFound { .. } => "registry",
            MirrorError::Lock(_) => "lock",
            MirrorError::Record { .. } | MirrorError::ForeignTarget { .. } => "record",
            MirrorError::SourceShorter { .. } | MirrorError::SourceReplaced { .. } => {
                "source_replaced"
            }
            MirrorError::TooLarge { .. } => "too_large",
        }
    }
}

/// What to do when the source topic is not the one the target copied.
fn replaced_fix(from: &str, to: &str, topic: &str) -> String {
    format!(
        "If the {from} topic was recreated on purpose (its producer then starts it over with a snapshot), stop `continuum-consumer run` at {to}, delete topic {topic} on the {to} cluster so that the mirror copies the new topic from its first record, and move {to}'s apply to its start with `continuum-consumer replay --from-beginning` (it skips by GTID what it applied already); otherwise restore the {from} topic"
    )
}

/// Why the mirror may not resume at source offset `next` in a source partition holding offsets
/// `low..high`, if it may not. `next == high` (nothing new yet) is fine.
fn resume_problem(s: &MirrorSettings, next: i64, low: i64, high: i64) -> Option<MirrorError> {
    if next < low {
        return Some(MirrorError::Record {
            topic: s.topic.clone(),
            offset: next,
            reason: format!(
                "the next record to mirror is at offset {next}, but the {} cluster keeps offsets from {low} on: records {next}..{low} were deleted by retention before they were mirrored. Raise the topic's retention; the target cannot be completed",
                s.from
            ),
        });
    }
    if next > high {
        return Some(MirrorError::SourceShorter {
            from: s.from.clone(),
            to: s.to.clone(),
            topic: s.topic.clone(),
            next,
            low,
            high,
        });
    }
    None
}

/// How `mirrored` (a record of the target) differs from `source`, the record it was copied from,
/// or `None` if it is its copy: same headers (but the mirror's own), same key and value after
/// the 4-byte schema ids, which the mirror rewrites. (Timestamps are not compared: a target
/// topic with `message.timestamp.type=LogAppendTime` sets its own.)
pub fn copy_difference(source: &FetchedRecord, mirrored: &FetchedRecord) -> Option<String> {
    let headers = |r: &FetchedRecord| -> Vec<(String, Vec<u8>)> {
        r.headers
            .iter()
            .filter(|(k, _)| k != HEADER_MIRROR_OFFSET)
            .cloned()
            .collect()
    };
    let (hs, hm) = (headers(source), headers(mirrored));
    if hs != hm {
        let show = |h: &[(String, Vec<u8>)]| {
            h.iter()
                .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Some(format!(
            "headers [{}] and [{}] differ",
            show(&hs),
            show(&hm)
        ));
    }
    // Confluent wire format: magic byte, 4-byte schema id, then the Avro body.
    let body = |b: &Option<Vec<u8>>| -> Option<Vec<u8>> {
        b.as_ref().map(|b| {
            if b.len() >= 5 {
                b[5..].to_vec()
            } else {
                b.clone()
            }
        })
    };
    if body(&source.key) != body(&mirrored.key) {
        return Some("their keys differ".into());
    }
    if body(&source.value) != body(&mirrored.value) {
        return Some("their values differ".into());
    }
    None
}

/// Flags of `continuum-consumer mirror`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MirrorArgs {
    /// Site whose changelog is copied (default: consumer.mirror.from, else the other site).
    #[arg(long, value_name = "SITE")]
    pub from: Option<String>,
    /// Site whose cluster receives the copy (default: consumer.mirror.to, else this site).
    #[arg(long, value_name = "SITE")]
    pub to: Option<String>,
    /// Source brokers, overriding the from site's `brokers`.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub from_brokers: Option<String>,
    /// Source registry URL, overriding the from site's registry.
    #[arg(long, value_name = "URL")]
    pub from_registry: Option<String>,
    /// Target brokers, overriding the to site's `brokers`.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub to_brokers: Option<String>,
    /// Target registry URL, overriding the to site's registry.
    #[arg(long, value_name = "URL")]
    pub to_registry: Option<String>,
}

/// Everything the mirror works on, resolved from the site configuration and flags.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    pub from: String,
    pub to: String,
    /// The changelog topic: the same name on both clusters.
    pub topic: String,
    pub from_cluster: ClusterConfig,
    pub to_cluster: ClusterConfig,
    pub database: continuum_common::config::DatabaseConfig,
    pub producer: ProducerConfig,
    pub max_retry_delay: Duration,
}

impl MirrorSettings {
    pub fn resolve(cfg: &SiteConfig, args: &MirrorArgs) -> Result<Self, ConfigError> {
        let from = chosen_or_other_site(
            cfg,
            args.from.as_ref().or(cfg.consumer.mirror.from.as_ref()),
            "consumer.mirror.from",
        )?;
        let to = args
            .to
            .clone()
            .or_else(|| cfg.consumer.mirror.to.clone())
            .unwrap_or_else(|| cfg.site.clone());
        if from == to {
            return Err(ConfigError::Invalid {
                setting: "consumer.mirror".into(),
                reason: format!(
                    "from and to are both '{from}': a topic cannot be mirrored onto itself"
                ),
            });
        }
        let mut from_cluster = cfg.cluster(&from)?.clone();
        let mut to_cluster = cfg.cluster(&to)?.clone();
        if let Some(b) = &args.from_brokers {
            from_cluster.brokers = b.clone();
        }
        if let Some(r) = &args.from_registry {
            from_cluster.registry.url = r.clone();
        }
        if let Some(b) = &args.to_brokers {
            to_cluster.brokers = b.clone();
        }
        if let Some(r) = &args.to_registry {
            to_cluster.registry.url = r.clone();
        }
        Ok(MirrorSettings {
            topic: cfg.topic_of(&from)?,
            from,
            to,
            from_cluster,
            to_cluster,
            database: cfg.database.clone(),
            producer: cfg.producer.clone(),
            max_retry_delay: cfg.consumer.mirror.max_retry_delay,
        })
    }
}

/// Source schema id -> target schema id, filled on first use.
struct SchemaMap {
    from: Registry,
    to: Registry,
    from_site: String,
    topic: String,
    ids: HashMap<u32, u32>,
}

impl SchemaMap {
    async fn target_id(
        &mut self,
        id: u32,
        offset: i64,
        part: &'static str,
    ) -> Result<u32, MirrorError> {
        if let Some(t) = self.ids.get(&id) {
            return Ok(*t);
        }
        let text = match self.from.schema_by_id(id).await {
            Ok(t) => t,
            Err(RegistryError::UnknownId { url, id }) => {
                return Err(MirrorError::SchemaNotFound {
                    site: self.from_site.clone(),
                    topic: self.topic.clone(),
                    offset,
                    part,
                    id,
                    registry: url,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let schema = avro::parse_schema(&text).map_err(|reason| MirrorError::Record {
            topic: self.topic.clone(),
            offset,
            reason: format!("{part} schema id {id} does not parse: {reason}"),
        })?;
        let name = schema
            .name()
            .map(|n| n.fullname(None))
            .ok_or_else(|| MirrorError::Record {
                topic: self.topic.clone(),
                offset,
                reason: format!("{part} schema id {id} is not a named record"),
            })?;
        let target = self
            .to
            .register(&avro::subject(&self.topic, &name), &text)
            .await?;
        counter!(m::MIRROR_SCHEMA_TRANSLATIONS_TOTAL.name).increment(1);
        tracing::debug!(source_id = id, target_id = target, subject = %avro::subject(&self.topic, &name), "schema mirrored");
        self.ids.insert(id, target);
        Ok(target)
    }

    /// The payload with its schema id replaced by the target registry's.
    async fn rewrite(
        &mut self,
        bytes: &[u8],
        offset: i64,
        part: &'static str,
    ) -> Result<Vec<u8>, MirrorError> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(MirrorError::Record {
                topic: self.topic.clone(),
                offset,
                reason: format!(
                    "{part} is not in Confluent wire format (magic byte 0 and a schema id)"
                ),
            });
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let target = self.target_id(id, offset, part).await?;
        let mut out = Vec::with_capacity(bytes.len());
        out.push(0);
        out.extend_from_slice(&target.to_be_bytes());
        out.extend_from_slice(&bytes[5..]);
        Ok(out)
    }
}

/// Runs the mirror until shutdown (Ok) or a fatal error, restarting after transient ones.
pub async fn run(
    s: MirrorSettings,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let client_id = format!("continuum-mirror-{}-to-{}", s.from, s.to);
    let pcfg = kafka::producer_config(&s.to, &s.to_cluster, &client_id, &s.producer)?;
    let target_read = kafka::consumer_config(&s.to, &s.to_cluster, &format!("{client_id}-tail"))?;
    let source_read = kafka::consumer_config(&s.from, &s.from_cluster, &client_id)?;
    let mut schemas = SchemaMap {
        from: Registry::new(
            &s.from_cluster
                .registry
                .settings(&format!("sites.{}.registry", s.from))?,
        )?,
        to: Registry::new(
            &s.to_cluster
                .registry
                .settings(&format!("sites.{}.registry", s.to))?,
        )?,
        from_site: s.from.clone(),
        topic: s.topic.clone(),
        ids: HashMap::new(),
    };
    let mut writer = Writer::new(
        pcfg.clone(),
        &s.topic,
        m::MIRROR_RECORDS_DELIVERED_TOTAL.name,
    )
    .map_err(|source| MirrorError::Kafka {
        site: s.to.clone(),
        what: "creating the producer".into(),
        source,
    })?;
    let opts = db::opts(&s.database, &[])?;
    let target = db::describe(&s.database);
    let lock_name = format!("continuum.mirror.{}.{}", s.to, s.topic);
    let mut lock: Option<NamedLock> = None;
    let mut supervisor = Supervisor::new(
        "mirror",
        m::MIRROR_ERRORS_TOTAL.name,
        health.clone(),
        s.max_retry_delay,
    );
    loop {
        if *shutdown.borrow() {
            writer.flush().await?;
            return Ok(());
        }
        if lock.is_none() {
            // Waits while another mirror holds the lock (a standby); a signal ends the wait.
            let what = format!("a mirror of {} into the {} cluster", s.topic, s.to);
            let mut stop = shutdown.clone();
            let acquired = tokio::select! {
                r = NamedLock::take(opts.clone(), &target, &lock_name, &what, Wait::UntilFree) => r,
                Ok(_) = stop.wait_for(|v| *v) => continue,
            };
            match acquired {
                Ok(l) => lock = Some(l),
                Err(e) if e.is_transient() => {
                    let e = MirrorError::from(e);
                    let delay = supervisor.transient(
                        writer.delivered(),
                        e.kind(),
                        &e,
                        "taking the mirror lock again",
                    );
                    supervisor.wait(delay, &mut shutdown.clone()).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let result = session(
            &s,
            &mut writer,
            &mut schemas,
            &target_read,
            &source_read,
            lock.as_ref().expect("lock"),
            &health,
            &shutdown,
        )
        .await;
        match result {
            Ok(()) => {
                writer.flush().await?;
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                if matches!(e, MirrorError::Lock(LockError::Lost { .. })) {
                    writer.purge_queue();
                    lock = None;
                }
                if matches!(e, MirrorError::Send(SendError::Delivery { .. })) {
                    writer.reset().await.map_err(|source| MirrorError::Kafka {
                        site: s.to.clone(),
                        what: "re-creating the producer".into(),
                        source,
                    })?;
                }
                // Records the target acknowledged are progress.
                let delay = supervisor.transient(
                    writer.delivered(),
                    e.kind(),
                    &e,
                    "interrupted; resuming from the target's last record",
                );
                supervisor.wait(delay, &mut shutdown.clone()).await;
            }
            Err(e) => {
                supervisor.fatal(e.kind(), &e);
                let _ = writer.flush().await;
                return Err(e);
            }
        }
    }
}

/// Where to resume: the source offset after the target's last mirrored record, and that record.
async fn resume_offset(
    s: &MirrorSettings,
    target_read: &ClientConfig,
) -> Result<Option<(i64, FetchedRecord)>, MirrorError> {
    let cfg = target_read.clone();
    let topic = s.topic.clone();
    let to = s.to.clone();
    let last = tokio::task::spawn_blocking(move || {
        kafka::read_last_stable(&cfg, &topic, Duration::from_secs(10))
    })
    .await
    .expect("tail task")
    .map_err(|source| MirrorError::Kafka {
        site: s.to.clone(),
        what: format!("reading the last record of {}", s.topic),
        source,
    })?;
    let Some(rec) = last else { return Ok(None) };
    let offset: i64 = rec
        .header_str(HEADER_MIRROR_OFFSET)
        .and_then(|v| v.parse().ok())
        .ok_or(MirrorError::ForeignTarget {
            site: to,
            topic: s.topic.clone(),
            offset: rec.offset,
        })?;
    Ok(Some((offset + 1, rec)))
}

/// Checks that the source record at `offset` is the one `mirrored` was copied from.
async fn check_same_source(
    s: &MirrorSettings,
    source_read: &ClientConfig,
    offset: i64,
    mirrored: &FetchedRecord,
) -> Result<(), MirrorError> {
    let cfg = source_read.clone();
    let topic = s.topic.clone();
    let read = tokio::task::spawn_blocking(move || {
        let c: rdkafka::consumer::BaseConsumer = cfg.create()?;
        kafka::read_at(&c, &topic, offset, Duration::from_secs(10))
    })
    .await
    .expect("source read task")
    .map_err(|source| MirrorError::Kafka {
        site: s.from.clone(),
        what: format!("reading record {}@{offset}", s.topic),
        source,
    })?;
    let Some(source) = read else {
        return Err(MirrorError::Kafka {
            site: s.from.clone(),
            what: format!("reading record {}@{offset}", s.topic),
            source: rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
            ),
        });
    };
    match copy_difference(&source, mirrored) {
        None => Ok(()),
        Some(difference) => Err(MirrorError::SourceReplaced {
            from: s.from.clone(),
            to: s.to.clone(),
            topic: s.topic.clone(),
            offset,
            target_offset: mirrored.offset,
            difference,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    s: &MirrorSettings,
    writer: &mut Writer,
    schemas: &mut SchemaMap,
    target_read: &ClientConfig,
    source_read: &ClientConfig,
    lock: &NamedLock,
    health: &Health,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    writer.flush().await?;
    writer.check()?;
    let kerr = |site: &str, what: &str| {
        let site = site.to_owned();
        let what = what.to_owned();
        move |source| MirrorError::Kafka { site, what, source }
    };
    let consumer: StreamConsumer = source_read
        .create()
        .map_err(kerr(&s.from, "creating the consumer"))?;
    // The session's first request to the source cluster: a client the source refuses (a wrong
    // password, CA or protocol) stops the mirror here with a kafka::SecurityError, fatal.
    let (low, high) = {
        let topic = s.topic.clone();
        let c = source_read.clone();
        tokio::task::spawn_blocking(move || {
            kafka::fetch_watermarks(&c, &topic, Duration::from_secs(10))
        })
        .await
        .expect("watermarks task")
        .map_err(kerr(&s.from, &format!("watermarks of {}", s.topic)))?
    };
    // The target topic takes what the source topic takes (a topic created here copies the
    // source's max.message.bytes); a target whose limit is lower stops the mirror at the first
    // record it would refuse, with both settings named.
    let source_max = kafka::topic_max_message_bytes(
        &kafka::base_config(&s.from, &s.from_cluster, "continuum-mirror-admin")?,
        &s.topic,
        Duration::from_secs(30),
    )
    .await
    .map_err(kerr(
        &s.from,
        &format!("reading the settings of topic {}", s.topic),
    ))?;
    let admin = writer_config(s)?;
    kafka::ensure_changelog_topic(&admin, &s.topic, source_max, Duration::from_secs(30))
        .await
        .map_err(kerr(&s.to, &format!("creating topic {}", s.topic)))?;
    let target_max = kafka::topic_max_message_bytes(&admin, &s.topic, Duration::from_secs(30))
        .await
        .map_err(kerr(
            &s.to,
            &format!("reading the settings of topic {}", s.topic),
        ))?;
    let limit = RecordLimit::new(s.producer.max_record_bytes, &s.topic, target_max);
    let start = match resume_offset(s, target_read).await? {
        Some((next, last)) => {
            if let Some(e) = resume_problem(s, next, low, high) {
                return Err(e);
            }
            // The record before `next` is still in the source (not deleted by retention): it
            // must be the one the copy ends with, or the source topic is another one now.
            if next > low {
                check_same_source(s, source_read, next - 1, &last).await?;
            }
            next
        }
        None => low,
    };
    tracing::info!(from = %s.from, to = %s.to, topic = %s.topic, start, source_end = high, "mirroring");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&s.topic, 0, Offset::Offset(start))
        .map_err(kerr(&s.from, "assigning the partition"))?;
    consumer
        .assign(&tpl)
        .map_err(kerr(&s.from, "assigning the partition"))?;
    health.set(
        "mirror",
        Status::Ok,
        format!(
            "mirroring {} from {} to {} at {start}",
            s.topic, s.from, s.to
        ),
    );

    let mut lost = lock.lost.clone();
    let mut shutdown = shutdown.clone();
    let mut source_high = high;
    let mut last_watermarks = Instant::now();
    let mut next = start;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::select! {
            biased;
            _ = lost.changed() => return lock.check().map_err(MirrorError::from),
            _ = shutdown.changed() => continue,
            _ = tick.tick() => {
                writer.check()?;
                if last_watermarks.elapsed() >= Duration::from_secs(1) {
                    if let Ok((_, h)) = consumer.fetch_watermarks(&s.topic, 0, Duration::from_secs(5)) {
                        source_high = h;
                    }
                    last_watermarks = Instant::now();
                }
                gauge!(m::MIRROR_LAG_RECORDS.name).set((source_high - next).max(0) as f64);
                if next >= source_high {
                    gauge!(m::MIRROR_LAG_SECONDS.name).set(0.0);
                }
            }
            m = consumer.recv() => {
                let m = m.map_err(kerr(&s.from, &format!("reading {}", s.topic)))?;
                let rec = FetchedRecord::from_message(&m);
                drop(m);
                // Not a write without a fresh confirmation of the lock: after a stall (a frozen
                // process or host) a replacement may hold it already.
                lock.check()?;
                mirror_one(s, writer, schemas, &limit, &rec).await?;
                next = rec.offset + 1;
                if let Some(ts) = rec.timestamp_ms {
                    gauge!(m::MIRROR_LAG_SECONDS.name).set(((now_ms() - ts) as f64 / 1000.0).max(0.0));
                }
                counter!(m::MIRROR_RECORDS_TOTAL.name).increment(1);
            }
        }
    }
}

fn writer_config(s: &MirrorSettings) -> Result<ClientConfig, ConfigError> {
    kafka::base_config(&s.to, &s.to_cluster, "continuum-mirror-admin")
}

async fn mirror_one(
    s: &MirrorSettings,
    writer: &Writer,
    schemas: &mut SchemaMap,
    limit: &RecordLimit,
    rec: &FetchedRecord,
) -> Result<(), MirrorError> {
    let size = rec.key.as_ref().map_or(0, Vec::len) + rec.value.as_ref().map_or(0, Vec::len);
    if size > limit.bytes() {
        return Err(MirrorError::TooLarge {
            from: s.from.clone(),
            to: s.to.clone(),
            topic: s.topic.clone(),
            offset: rec.offset,
            position: rec.header_str(HEADER_POS).unwrap_or("?").to_owned(),
            size,
            limit: limit.describe(),
        });
    }
    let key = match &rec.key {
        Some(k) => Some(schemas.rewrite(k, rec.offset, "key").await?),
        None => None,
    };
    let value = match &rec.value {
        Some(v) => Some(schemas.rewrite(v, rec.offset, "value").await?),
        None => None,
    };
    let offset = rec.offset.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len() + 1);
    for (k, v) in &rec.headers {
        if k != HEADER_MIRROR_OFFSET {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
    }
    headers = headers.insert(Header {
        key: HEADER_MIRROR_OFFSET,
        value: Some(&offset),
    });
    let mut record = BaseRecord::<[u8], [u8]>::to(&s.topic).headers(headers);
    if let Some(ts) = rec.timestamp_ms {
        record = record.timestamp(ts);
    }
    if let Some(k) = &key {
        record = record.key(&k[..]);
    }
    if let Some(v) = &value {
        record = record.payload(&v[..]);
    }
    writer.send(record).await?;
    Ok(())
}

/// `continuum-consumer mirror`.
pub async fn main(cfg: SiteConfig, args: MirrorArgs) -> Result<(), MirrorError> {
    let s = MirrorSettings::resolve(&cfg, &args)?;
    let health = Health::default();
    health.set("mirror", Status::Starting, "starting");
    if let Err(e) =
        continuum_common::observe::serve(cfg.consumer.metrics_listen, health.clone()).await
    {
        return Err(ConfigError::Invalid {
            setting: "consumer.metrics_listen".into(),
            reason: e.to_string(),
        }
        .into());
    }
    let rx = continuum_common::supervise::shutdown_on_signals("stopping");
    run(s, health, rx).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_common::kafka::{refusal_error, SecurityFailure};

    /// The mirror of the example EU site (`config/eu.toml`): from SF to EU.
    fn settings() -> MirrorSettings {
        let cfg = SiteConfig::from_toml(include_str!("../../config/eu.toml")).unwrap();
        MirrorSettings::resolve(&cfg, &MirrorArgs::default()).unwrap()
    }

    #[test]
    fn resume_offsets_outside_the_source_range_are_fatal_and_say_why() {
        let s = settings();
        assert!(resume_problem(&s, 0, 0, 0).is_none());
        assert!(resume_problem(&s, 5, 0, 5).is_none(), "nothing new yet");
        assert!(resume_problem(&s, 3, 2, 9).is_none());
        let e = resume_problem(&s, 1, 2, 9).unwrap();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("deleted by retention"), "{e}");
        let e = resume_problem(&s, 6, 0, 2).unwrap();
        assert!(!e.is_transient());
        let m = e.to_string();
        for want in [
            "the eu cluster's copy of sf.cdc would resume at source offset 6",
            "sf.cdc on the sf cluster ends at offset 2 (it holds offsets 0 to 2)",
            "deleted and recreated",
            "delete topic sf.cdc on the eu cluster",
            "replay --from-beginning",
        ] {
            assert!(m.contains(want), "{want:?} in {m}");
        }
    }

    fn rec(offset: i64, key: &[u8], value: &[u8], headers: &[(&str, &str)]) -> FetchedRecord {
        FetchedRecord {
            offset,
            timestamp_ms: Some(1),
            key: Some(key.to_vec()),
            value: Some(value.to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn a_copy_differs_from_its_source_only_in_schema_ids_and_the_offset_header() {
        const POS: (&str, &str) = (HEADER_POS, "txn:1-1-5:0:last:1-1-4");
        // Key and value differ from the source's only in their schema ids (bytes 1 to 4).
        let copy = rec(
            5,
            &[0, 0, 0, 0, 70, 1, 2],
            &[0, 0, 0, 0, 80, 3, 4],
            &[POS, (HEADER_MIRROR_OFFSET, "5")],
        );
        let (key, value): (&[u8], &[u8]) = (&[0, 0, 0, 0, 7, 1, 2], &[0, 0, 0, 0, 8, 3, 4]);
        let (other_key, other_value): (&[u8], &[u8]) =
            (&[0, 0, 0, 0, 7, 1, 9], &[0, 0, 0, 0, 8, 3, 9]);
        let other_pos = "txn:1-1-9:0:last:1-1-8";
        // (source key, source value, source position header, what the difference names)
        type Case<'a> = (&'a [u8], &'a [u8], &'a str, &'a [&'a str]);
        let cases: [Case; 4] = [
            (key, value, POS.1, &[]),
            (key, other_value, POS.1, &["their values differ"]),
            (other_key, value, POS.1, &["their keys differ"]),
            (key, value, other_pos, &["txn:1-1-9", "txn:1-1-5"]),
        ];
        for (key, value, pos, want) in cases {
            let src = rec(5, key, value, &[(HEADER_POS, pos)]);
            let got = copy_difference(&src, &copy);
            if want.is_empty() {
                assert_eq!(got, None, "source {pos}");
                continue;
            }
            let d = got.unwrap_or_else(|| panic!("{want:?}: no difference found"));
            assert!(want.iter().all(|w| d.contains(w)), "{want:?} in {d}");
        }
    }

    #[test]
    fn a_cluster_that_refuses_the_client_stops_the_mirror() {
        let e = MirrorError::Kafka {
            site: "eu".into(),
            what: "creating topic t".into(),
            source: refusal_error(SecurityFailure::TlsRequired, "sites.eu.tls"),
        };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("set sites.eu.tls as"), "{e}");
    }
}
