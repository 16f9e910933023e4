//! The Kafka writer: encodes [`StreamRecord`]s through the registry and writes them to the
//! changelog topic with an idempotent producer, with `continuum.kind` and `continuum.pos`
//! headers and a never-decreasing timestamp.
//!
//! Guarantees: records are sent in the order given, to partition 0, by one idempotent producer,
//! so the topic always holds a prefix of what was sent. The first failed delivery is kept and
//! reported by [`Sink::check`]; the caller then stops, flushes, and resumes from the topic's
//! last record. Nothing is dropped silently: a record larger than the limit is a fatal error
//! naming its table and primary key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::counter;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::ClientConfig;

use continuum_schemas::{Encoder, StreamRecord, Value};

use crate::error::ProducerError;

pub const HEADER_KIND: &str = "continuum.kind";
pub const HEADER_POS: &str = "continuum.pos";

/// Delivery reports: the first failure is kept; successes are counted.
#[derive(Default)]
pub struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => counter!("continuum_producer_records_delivered_total").increment(1),
            Err((e, m)) => {
                let pos = m
                    .headers()
                    .and_then(|h| {
                        use rdkafka::message::Headers;
                        h.iter().find(|x| x.key == HEADER_POS).and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                    })
                    .unwrap_or_default();
                let mut f = self.failed.lock().unwrap();
                if f.is_none() {
                    *f = Some(format!("{e} (record {pos})"));
                }
            }
        }
    }
}

pub struct Sink {
    producer: Arc<ThreadedProducer<Deliveries>>,
    ctx: Arc<Deliveries>,
    config: ClientConfig,
    encoder: Encoder,
    topic: String,
    limit: usize,
    last_ts: i64,
}

fn key_text(ev: &continuum_schemas::ChangeEvent) -> String {
    ev.key()
        .iter()
        .map(|v| match v {
            Value::Text(s) => format!("'{s}'"),
            Value::Bytes(b) => format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sink {
    pub fn new(config: ClientConfig, encoder: Encoder, limit: usize) -> Result<Self, ProducerError> {
        let topic = encoder.topic().to_owned();
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries::default())
            .map_err(|source| ProducerError::Kafka { what: format!("creating the producer for {topic}"), source })?;
        let ctx = producer.context().clone();
        Ok(Sink { producer: Arc::new(producer), ctx, config, encoder, topic, limit, last_ts: 0 })
    }

    /// Returns the first delivery failure, if any.
    pub fn check(&self) -> Result<(), ProducerError> {
        match self.ctx.failed.lock().unwrap().clone() {
            Some(reason) => Err(ProducerError::Delivery { topic: self.topic.clone(), reason }),
            None => Ok(()),
        }
    }

    /// Writes one record (returns once it is queued; delivery is checked by [`Sink::check`]).
    pub async fn send(&mut self, rec: &StreamRecord) -> Result<usize, ProducerError> {
        let now = continuum_common::observe::now_ms();
        let enc = self.encoder.encode(rec, now).await?;
        let size = enc.value.len() + enc.key.as_ref().map_or(0, Vec::len);
        let too_large = |size: usize| match rec {
            StreamRecord::Change(ev) => ProducerError::RecordTooLarge {
                topic: self.topic.clone(),
                table: ev.table.qualified_name(),
                key: key_text(ev),
                size,
                limit: self.limit,
            },
            other => ProducerError::RecordTooLarge {
                topic: self.topic.clone(),
                table: format!("({} record)", other.kind()),
                key: String::new(),
                size,
                limit: self.limit,
            },
        };
        if size + 512 > self.limit {
            return Err(too_large(size));
        }
        self.last_ts = self.last_ts.max(now);
        let pos = rec.position().to_string();
        // Two headers only: the local broker stores each header as a row of its own.
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: HEADER_KIND, value: Some(rec.kind()) })
            .insert(Header { key: HEADER_POS, value: Some(&pos) });
        let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&self.topic)
            .partition(0)
            .payload(&enc.value)
            .timestamp(self.last_ts)
            .headers(headers);
        if let Some(k) = &enc.key {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.check()?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => return Err(too_large(size)),
                Err((e, _)) => return Err(ProducerError::Kafka { what: format!("producing to {}", self.topic), source: e }),
            }
        }
        counter!("continuum_producer_bytes_total").increment(size as u64);
        counter!("continuum_producer_records_total", "kind" => rec.kind()).increment(1);
        Ok(size)
    }

    /// Waits until every queued record is delivered or has failed. With `message.timeout.ms=0`
    /// this blocks while the broker is down: the pipeline waits, it never drops.
    pub async fn flush(&self) -> Result<(), ProducerError> {
        loop {
            let p = self.producer.clone();
            let done = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(5)))
                .await
                .expect("flush task");
            match done {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    tracing::warn!(topic = %self.topic, queued = self.producer.in_flight_count(), "records not yet delivered; waiting for the broker");
                }
                Err(e) => return Err(ProducerError::Kafka { what: format!("flushing {}", self.topic), source: e }),
            }
        }
    }

    /// Drops queued (not yet sent) records: used when the producer lock is lost, so nothing
    /// more reaches the topic from this process.
    pub fn purge_queue(&self) {
        self.producer.purge(PurgeConfig::default().queue());
    }

    /// After a failed delivery the idempotent producer may be unusable: start a fresh one (and
    /// a fresh delivery record) once the old one has drained.
    pub async fn reset(&mut self) -> Result<(), ProducerError> {
        let _ = self.flush().await;
        self.purge_queue();
        let producer: ThreadedProducer<Deliveries> = self
            .config
            .create_with_context(Deliveries::default())
            .map_err(|source| ProducerError::Kafka { what: format!("creating the producer for {}", self.topic), source })?;
        self.ctx = producer.context().clone();
        self.producer = Arc::new(producer);
        Ok(())
    }
}
