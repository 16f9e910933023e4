//! The producer's writer stage: encodes [`StreamRecord`]s through the registry and writes them
//! to the changelog topic through the shared idempotent [`Writer`], with `continuum.kind` and
//! `continuum.pos` headers and a never-decreasing timestamp; while an incremental snapshot runs,
//! with its progress in a `continuum.snapshot` header too.
//!
//! Guarantees: records are sent in the order given, so the topic always holds a prefix of what
//! was sent. A delivery failure surfaces through [`Sink::check`] or the next send; the pipeline
//! then flushes and resumes from the topic's last record. A record larger than the limit is a
//! fatal error naming its table and primary key, never a silent drop.

use std::fmt::Write as _;

use metrics::{counter, Counter};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::ClientConfig;

use crate::metrics as m;
use continuum_common::writer::{RecordLimit, SendError, Writer};
use continuum_schemas::{Encoded, Encoder, StreamRecord};

use crate::error::ProducerError;

pub use continuum_schemas::{HEADER_KIND, HEADER_POS};

pub struct Sink {
    writer: Writer,
    encoder: Encoder,
    limit: RecordLimit,
    last_ts: i64,
    /// Reused for every record: its encoding and its position header.
    encoded: Encoded,
    pos: String,
    /// The incremental snapshot's progress, carried by every record while it runs.
    progress: Option<String>,
    metrics: SinkMetrics,
}

/// The sink's counters, registered once (a labelled `counter!` per record hashes its key).
struct SinkMetrics {
    bytes: Counter,
    /// [`m::RECORDS_TOTAL.name`] by kind: row, ddl, heartbeat, snapshot, chunk.
    records: [Counter; 5],
}

impl SinkMetrics {
    fn new() -> Self {
        let records = |kind: &'static str| counter!(m::RECORDS_TOTAL.name, "kind" => kind);
        SinkMetrics {
            bytes: counter!(m::BYTES_TOTAL.name),
            records: [
                records("row"),
                records("ddl"),
                records("heartbeat"),
                records("snapshot"),
                records("chunk"),
            ],
        }
    }

    fn record(&self, rec: &StreamRecord) -> &Counter {
        &self.records[match rec {
            StreamRecord::Change(_) => 0,
            StreamRecord::SchemaChange(_) => 1,
            StreamRecord::Heartbeat(_) => 2,
            StreamRecord::Snapshot(_) => 3,
            StreamRecord::ChunkEnd(_) => 4,
        }]
    }
}

impl From<SendError> for ProducerError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Delivery { topic, reason } => ProducerError::Delivery { topic, reason },
            SendError::Kafka { topic, source } => ProducerError::Kafka {
                what: format!("producing to {topic}"),
                source,
            },
            SendError::TooLarge { size } => ProducerError::Delivery {
                topic: String::new(),
                reason: format!("a record of {size} bytes was refused as too large"),
            },
            e @ SendError::Refused { .. } => ProducerError::Refused(e.to_string()),
        }
    }
}

impl Sink {
    /// A sink whose record limit is `producer.max_record_bytes` (the `message.max.bytes` of
    /// `config`) until [`Sink::set_limit`] adds the topic's.
    pub fn new(config: ClientConfig, encoder: Encoder) -> Result<Self, ProducerError> {
        let max_record_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX);
        let topic = encoder.topic().to_owned();
        let writer =
            Writer::new(config, &topic, m::RECORDS_DELIVERED_TOTAL.name).map_err(|source| {
                ProducerError::Kafka {
                    what: format!("creating the producer for {topic}"),
                    source,
                }
            })?;
        let limit = RecordLimit::unknown_topic(max_record_bytes, &topic);
        Ok(Sink {
            writer,
            encoder,
            limit,
            last_ts: 0,
            encoded: Encoded::default(),
            pos: String::new(),
            progress: None,
            metrics: SinkMetrics::new(),
        })
    }

    /// The `continuum.snapshot` header of the records sent from now on (`None`: no header).
    pub fn set_progress(&mut self, progress: Option<String>) {
        self.progress = progress;
    }

    pub fn set_limit(&mut self, limit: RecordLimit) {
        self.limit = limit;
    }

    /// Records the broker has acknowledged since the sink was made.
    pub fn delivered(&self) -> u64 {
        self.writer.delivered()
    }

    /// The first delivery failure, if any.
    pub fn check(&self) -> Result<(), ProducerError> {
        self.writer.check().map_err(ProducerError::from)
    }

    /// Writes one record (returns once it is queued; delivery is checked by [`Sink::check`]).
    pub async fn send(&mut self, rec: &StreamRecord) -> Result<usize, ProducerError> {
        let now = continuum_common::observe::now_ms();
        self.encoder
            .encode_into(rec, now, &mut self.encoded)
            .await?;
        let enc = &self.encoded;
        let size = enc.value.len() + enc.key.as_ref().map_or(0, Vec::len);
        let too_large = |size: usize| match rec {
            StreamRecord::Change(ev) => ProducerError::RecordTooLarge {
                topic: self.writer.topic().to_owned(),
                table: ev.table.qualified_name(),
                key: ev.key_text(),
                size,
                limit: self.limit.describe(),
            },
            other => ProducerError::RecordTooLarge {
                topic: self.writer.topic().to_owned(),
                table: format!("({} record)", other.kind()),
                key: String::new(),
                size,
                limit: self.limit.describe(),
            },
        };
        if size > self.limit.bytes() {
            return Err(too_large(size));
        }
        self.last_ts = self.last_ts.max(now);
        self.pos.clear();
        write!(self.pos, "{}", rec.position()).expect("writing to a String");
        let mut headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: HEADER_KIND,
                value: Some(rec.kind()),
            })
            .insert(Header {
                key: HEADER_POS,
                value: Some(&self.pos),
            });
        if let Some(p) = &self.progress {
            headers = headers.insert(Header {
                key: crate::incremental::HEADER_SNAPSHOT,
                value: Some(p.as_str()),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(self.writer.topic())
            .payload(&enc.value[..])
            .timestamp(self.last_ts)
            .headers(headers);
        if let Some(k) = &enc.key {
            record = record.key(&k[..]);
        }
        match self.writer.send(record).await {
            Ok(()) => {}
            Err(SendError::TooLarge { size }) => return Err(too_large(size)),
            Err(e) => return Err(e.into()),
        }
        self.metrics.bytes.increment(size as u64);
        self.metrics.record(rec).increment(1);
        Ok(size)
    }

    pub async fn flush(&self) -> Result<(), ProducerError> {
        self.writer.flush().await.map_err(ProducerError::from)
    }

    pub fn purge_queue(&self) {
        self.writer.purge_queue()
    }

    pub async fn reset(&mut self) -> Result<(), ProducerError> {
        let topic = self.writer.topic().to_owned();
        self.writer
            .reset()
            .await
            .map_err(|source| ProducerError::Kafka {
                what: format!("re-creating the producer for {topic}"),
                source,
            })
    }
}
