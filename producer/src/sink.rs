//! The producer's writer stage: encodes [`StreamRecord`]s through the registry and writes them
//! to the changelog topic through the shared idempotent [`Writer`], with `continuum.kind` and
//! `continuum.pos` headers and a never-decreasing timestamp.
//!
//! Guarantees: records are sent in the order given, so the topic always holds a prefix of what
//! was sent. A delivery failure surfaces through [`Sink::check`] or the next send; the pipeline
//! then flushes and resumes from the topic's last record. A record larger than the limit is a
//! fatal error naming its table and primary key, never a silent drop.

use metrics::counter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::ClientConfig;

use continuum_common::writer::{RecordLimit, SendError, Writer};
use continuum_schemas::{Encoder, StreamRecord, Value};

use crate::error::ProducerError;

pub const HEADER_KIND: &str = "continuum.kind";
pub use continuum_common::writer::HEADER_POS;

pub struct Sink {
    writer: Writer,
    encoder: Encoder,
    limit: RecordLimit,
    last_ts: i64,
}

fn key_text(ev: &continuum_schemas::ChangeEvent) -> String {
    ev.key()
        .iter()
        .map(|v| match v {
            Value::Text(s) => format!("'{s}'"),
            Value::Bytes(b) => format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
        let writer = Writer::new(config, &topic, "continuum_producer_records_delivered_total")
            .map_err(|source| ProducerError::Kafka {
                what: format!("creating the producer for {topic}"),
                source,
            })?;
        let limit = RecordLimit::unknown_topic(max_record_bytes, &topic);
        Ok(Sink {
            writer,
            encoder,
            limit,
            last_ts: 0,
        })
    }

    pub fn set_limit(&mut self, limit: RecordLimit) {
        self.limit = limit;
    }

    /// The first delivery failure, if any.
    pub fn check(&self) -> Result<(), ProducerError> {
        self.writer.check().map_err(ProducerError::from)
    }

    /// Writes one record (returns once it is queued; delivery is checked by [`Sink::check`]).
    pub async fn send(&mut self, rec: &StreamRecord) -> Result<usize, ProducerError> {
        let now = continuum_common::observe::now_ms();
        let enc = self.encoder.encode(rec, now).await?;
        let size = enc.value.len() + enc.key.as_ref().map_or(0, Vec::len);
        let too_large = |size: usize| match rec {
            StreamRecord::Change(ev) => ProducerError::RecordTooLarge {
                topic: self.writer.topic().to_owned(),
                table: ev.table.qualified_name(),
                key: key_text(ev),
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
        let pos = rec.position().to_string();
        // Two headers only: the local broker stores each header as a row of its own.
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: HEADER_KIND,
                value: Some(rec.kind()),
            })
            .insert(Header {
                key: HEADER_POS,
                value: Some(&pos),
            });
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
        counter!("continuum_producer_bytes_total").increment(size as u64);
        counter!("continuum_producer_records_total", "kind" => rec.kind()).increment(1);
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
