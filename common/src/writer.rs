//! An idempotent Kafka writer shared by the producer and the mirror: one `ThreadedProducer`
//! with `enable.idempotence`, records sent in order to partition 0, backpressure when the
//! local queue is full, and delivery reports that keep the first failure.
//!
//! Guarantees: the topic holds a prefix of what was sent, in order. After a failure the owner
//! stops sending, calls [`Writer::flush`] (every queued record is then delivered or failed),
//! reads the topic's tail and resumes after it; [`Writer::reset`] replaces a producer that may
//! be unusable. Nothing is dropped silently.

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
pub const HEADER_POS: &str = "continuum.pos";

/// Delivery reports: the first failure is kept; successes are counted under `metric`.
pub struct Deliveries {
    failed: Mutex<Option<String>>,
    metric: &'static str,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => metrics::counter!(self.metric).increment(1),
            Err((e, m)) => {
                let pos = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|x| x.key == HEADER_POS)
                            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
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

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// An earlier record was not delivered; stop, flush, and resume from the topic's tail.
    #[error("a record was not delivered to {topic}: {reason}")]
    Delivery { topic: String, reason: String },
    /// The record is larger than `message.max.bytes`.
    #[error("record of {size} bytes is larger than message.max.bytes")]
    TooLarge { size: usize },
    #[error("producing to {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

pub struct Writer {
    producer: Arc<ThreadedProducer<Deliveries>>,
    ctx: Arc<Deliveries>,
    config: ClientConfig,
    topic: String,
    metric: &'static str,
}

impl Writer {
    /// `config` should come from [`crate::kafka::producer_config`]; `delivered_metric` names
    /// the counter of delivered records.
    pub fn new(
        config: ClientConfig,
        topic: &str,
        delivered_metric: &'static str,
    ) -> Result<Self, KafkaError> {
        let producer: ThreadedProducer<Deliveries> = config.create_with_context(Deliveries {
            failed: Mutex::new(None),
            metric: delivered_metric,
        })?;
        let ctx = producer.context().clone();
        Ok(Writer {
            producer: Arc::new(producer),
            ctx,
            config,
            topic: topic.to_owned(),
            metric: delivered_metric,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The first delivery failure, if any.
    pub fn check(&self) -> Result<(), SendError> {
        match self.ctx.failed.lock().unwrap().clone() {
            Some(reason) => Err(SendError::Delivery {
                topic: self.topic.clone(),
                reason,
            }),
            None => Ok(()),
        }
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

    /// Drops queued (not yet sent) records, so nothing more reaches the topic from here.
    pub fn purge_queue(&self) {
        self.producer.purge(PurgeConfig::default().queue());
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
            })?;
        self.ctx = producer.context().clone();
        self.producer = Arc::new(producer);
        Ok(())
    }
}
