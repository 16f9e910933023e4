//! An idempotent Kafka writer shared by the producer and the mirror: one `ThreadedProducer`
//! with `enable.idempotence`, records sent in order to partition 0, backpressure when the
//! local queue is full, and delivery reports that keep the first failure.
//!
//! Guarantees: the topic holds a prefix of what was sent, in order. After a failure the owner
//! stops sending, calls [`Writer::flush`] (every queued record is then delivered or failed),
//! reads the topic's tail and resumes after it; [`Writer::reset`] replaces a producer that may
//! be unusable. Nothing is dropped silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::ClientConfig;

/// The header whose value identifies a record in delivery-failure messages.
use continuum_schemas::HEADER_POS;

/// The first record the broker did not take.
#[derive(Debug, Clone)]
struct Failure {
    code: Option<RDKafkaErrorCode>,
    reason: String,
    /// The record's `continuum.pos` header.
    position: String,
    /// Key plus value, in bytes.
    size: usize,
}

/// Delivery reports: the first failure is kept; successes are counted under `metric`.
pub struct Deliveries {
    failed: Mutex<Option<Failure>>,
    metric: &'static str,
    /// Records delivered since the writer was made (kept across [`Writer::reset`]).
    delivered: Arc<AtomicU64>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                metrics::counter!(self.metric).increment(1);
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                let position = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|x| x.key == HEADER_POS)
                            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                    })
                    .unwrap_or_default();
                let mut f = self.failed.lock().unwrap();
                if f.is_none() {
                    *f = Some(Failure {
                        code: e.rdkafka_error_code(),
                        reason: e.to_string(),
                        position,
                        size: m.payload_len() + m.key().map_or(0, <[u8]>::len),
                    });
                }
            }
        }
    }
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// An earlier record was not delivered; stop, flush, and resume from the topic's tail.
    #[error("a record was not delivered to {topic}: {reason}")]
    Delivery { topic: String, reason: String },
    /// The record is larger than the producer's `message.max.bytes` (refused before sending).
    #[error("record of {size} bytes is larger than message.max.bytes")]
    TooLarge { size: usize },
    /// The broker refused a record for its size. With `enable.gapless.guarantee` nothing queued
    /// after it was written. Retrying cannot help: the topic's or the cluster's limit must rise.
    #[error("the {topic} broker refused the record at position {position} ({size} bytes of key and value): {reason}. Nothing after it was written. Raise the topic's max.message.bytes (or the cluster's message.max.bytes) above the record's size; the writer stops at this record until then, and never skips it")]
    Refused {
        topic: String,
        position: String,
        size: usize,
        reason: String,
    },
    #[error("producing to {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// The largest record a writer sends: `producer.max_record_bytes` (its `message.max.bytes`), or
/// the topic's `max.message.bytes` if that is lower. Both are named in the error a larger record
/// gives, so the operator knows which to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLimit {
    pub max_record_bytes: usize,
    pub topic: String,
    /// The topic's `max.message.bytes`, once read from the broker.
    pub topic_max: Option<usize>,
}

/// Room left in the limit for what the broker counts besides key and value: the record
/// batch's header, the record's own framing and its two headers.
const RECORD_OVERHEAD: usize = 512;

impl RecordLimit {
    pub fn new(max_record_bytes: usize, topic: &str, topic_max: usize) -> Self {
        RecordLimit {
            max_record_bytes,
            topic: topic.to_owned(),
            topic_max: Some(topic_max),
        }
    }

    /// Before the topic's own limit is known.
    pub fn unknown_topic(max_record_bytes: usize, topic: &str) -> Self {
        RecordLimit {
            max_record_bytes,
            topic: topic.to_owned(),
            topic_max: None,
        }
    }

    /// The largest key plus value that fits.
    pub fn bytes(&self) -> usize {
        self.max_record_bytes
            .min(self.topic_max.unwrap_or(usize::MAX))
            .saturating_sub(RECORD_OVERHEAD)
    }

    /// Which settings bound the record size, for the error a larger record gives.
    pub fn describe(&self) -> String {
        let topic = match self.topic_max {
            Some(t) => format!("topic {}'s max.message.bytes = {t}", self.topic),
            None => format!("topic {}'s max.message.bytes", self.topic),
        };
        format!(
            "{} bytes of key and value, from producer.max_record_bytes = {} and {topic}, less {RECORD_OVERHEAD} bytes of record framing",
            self.bytes(),
            self.max_record_bytes
        )
    }
}

pub struct Writer {
    producer: Arc<ThreadedProducer<Deliveries>>,
    ctx: Arc<Deliveries>,
    config: ClientConfig,
    topic: String,
    metric: &'static str,
    delivered: Arc<AtomicU64>,
}

impl Writer {
    /// `config` should come from [`crate::kafka::producer_config`]; `delivered_metric` names
    /// the counter of delivered records.
    pub fn new(
        config: ClientConfig,
        topic: &str,
        delivered_metric: &'static str,
    ) -> Result<Self, KafkaError> {
        let delivered = Arc::new(AtomicU64::new(0));
        let producer: ThreadedProducer<Deliveries> = config.create_with_context(Deliveries {
            failed: Mutex::new(None),
            metric: delivered_metric,
            delivered: delivered.clone(),
        })?;
        let ctx = producer.context().clone();
        Ok(Writer {
            producer: Arc::new(producer),
            ctx,
            config,
            topic: topic.to_owned(),
            metric: delivered_metric,
            delivered,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many records the broker has acknowledged since this writer was made: a measure of
    /// progress for the supervisor ([`crate::supervise`]).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The first delivery failure, if any.
    pub fn check(&self) -> Result<(), SendError> {
        let Some(f) = self.ctx.failed.lock().unwrap().clone() else {
            return Ok(());
        };
        use RDKafkaErrorCode as C;
        Err(match f.code {
            Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
                SendError::Refused {
                    topic: self.topic.clone(),
                    position: f.position,
                    size: f.size,
                    reason: f.reason,
                }
            }
            _ => SendError::Delivery {
                topic: self.topic.clone(),
                reason: format!("{} (record {})", f.reason, f.position),
            },
        })
    }

    /// Queues one record for partition 0, waiting while the local queue is full.
    pub async fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), SendError> {
        let size = record.payload.map_or(0, <[u8]>::len) + record.key.map_or(0, <[u8]>::len);
        record = record.partition(0);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.check()?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                    return Err(SendError::TooLarge { size })
                }
                // Refused for good (a record the broker refused, with enable.gapless.guarantee):
                // say which record and why, not "fatal error".
                Err(_) if self.producer.client().fatal_error().is_some() => {
                    return Err(self.failed_for_good().await)
                }
                Err((e, _)) => {
                    return Err(SendError::Kafka {
                        topic: self.topic.clone(),
                        source: e,
                    })
                }
            }
        }
    }

    /// Waits until every queued record is delivered or has failed. With `message.timeout.ms=0`
    /// this blocks while the broker is down: the pipeline waits, it never drops.
    pub async fn flush(&self) -> Result<(), SendError> {
        loop {
            let p = self.producer.clone();
            let done = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(5)))
                .await
                .expect("flush task");
            match done {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    // A producer that raised a fatal error (a record refused with
                    // enable.gapless.guarantee) sends nothing more: what it still holds will
                    // never be delivered, so waiting for it would wait for ever.
                    if self.producer.client().fatal_error().is_some() {
                        return Err(self.failed_for_good().await);
                    }
                    tracing::warn!(topic = %self.topic, queued = self.producer.in_flight_count(), "records not yet delivered; waiting for the broker");
                }
                Err(e) => {
                    return Err(SendError::Kafka {
                        topic: self.topic.clone(),
                        source: e,
                    })
                }
            }
        }
    }

    /// The error of a producer that raised a fatal error and sends nothing more. What it still
    /// holds is dropped, and its delivery reports are awaited (a few seconds at most): the
    /// first failed report names the record and why, which the fatal error alone does not.
    async fn failed_for_good(&self) -> SendError {
        self.purge_all();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.producer.in_flight_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = self.check() {
            return e;
        }
        let (code, reason) = self
            .producer
            .client()
            .fatal_error()
            .unwrap_or((RDKafkaErrorCode::Fatal, String::new()));
        tracing::error!(topic = %self.topic, %reason, "the producer failed for good");
        SendError::Kafka {
            topic: self.topic.clone(),
            source: KafkaError::MessageProduction(code),
        }
    }

    /// Drops queued (not yet sent) records, so nothing more reaches the topic from here.
    pub fn purge_queue(&self) {
        self.producer.purge(PurgeConfig::default().queue());
    }

    /// Drops queued and in-flight records alike: for a producer that can send nothing more.
    fn purge_all(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
    }

    /// After a failed delivery the idempotent producer may be unusable: drain it and start a
    /// fresh one, with a fresh delivery record.
    pub async fn reset(&mut self) -> Result<(), KafkaError> {
        let _ = self.flush().await;
        self.purge_queue();
        let producer: ThreadedProducer<Deliveries> =
            self.config.create_with_context(Deliveries {
                failed: Mutex::new(None),
                metric: self.metric,
                delivered: self.delivered.clone(),
            })?;
        self.ctx = producer.context().clone();
        self.producer = Arc::new(producer);
        Ok(())
    }
}
