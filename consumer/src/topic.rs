//! Random access to a changelog topic: watermarks, the record at (or after) an offset, the
//! first offset at a time, and binary searches over offsets. Used where apply must find a place
//! in the topic rather than stream it: replay targets, status, and moving between clusters.
//!
//! Guarantees:
//! - [`offset_for_time`] never trusts the broker alone: the broker's ListOffsets-by-time answer
//!   is checked against the record timestamps around it, and a binary search over record
//!   timestamps (which never decrease in a changelog: the producer guarantees it) replaces it
//!   when it is wrong;
//! - every search reads only committed records (read_committed) and tolerates offset gaps.

use std::sync::Arc;
use std::time::Duration;

use continuum_common::kafka::FetchedRecord;
use continuum_schemas::StreamPosition;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::PARTITION;

pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A blocking topic reader (every call waits on the broker; run it off the async workers).
#[derive(Clone)]
pub struct TopicReader {
    pub consumer: Arc<BaseConsumer>,
    pub topic: String,
}

impl TopicReader {
    pub fn new(consumer: BaseConsumer, topic: &str) -> Self {
        TopicReader {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
        }
    }

    /// Number of partitions, or `None` if the topic does not exist.
    pub fn partitions(&self) -> Result<Option<usize>, KafkaError> {
        let md = self.consumer.fetch_metadata(Some(&self.topic), TIMEOUT)?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .and_then(|t| {
                if t.error().is_some() || t.partitions().is_empty() {
                    None
                } else {
                    Some(t.partitions().len())
                }
            }))
    }

    /// Low and high watermarks of the partition.
    pub fn watermarks(&self) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, PARTITION, TIMEOUT)
    }

    /// The first record at or after `offset`, or `None` if there is none within the timeout.
    pub fn read_from(&self, offset: i64) -> Result<Option<FetchedRecord>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, PARTITION, Offset::Offset(offset))?;
        self.consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.consumer.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(m)) if rdkafka::Message::offset(&m) >= offset => {
                    return Ok(Some(FetchedRecord::from_message(&m)))
                }
                Some(Ok(_)) | None => continue,
                Some(Err(e)) => return Err(e),
            }
        }
    }

    /// The record at or after `offset` that must exist (`offset` below the high watermark).
    pub fn must_read(&self, offset: i64) -> Result<FetchedRecord, KafkaError> {
        self.read_from(offset)?
            .ok_or(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
            ))
    }

    /// The smallest offset in `[lo, hi)` whose record satisfies `pred`, or `hi`; `pred` must be
    /// false then true along the topic (monotone).
    pub fn first_where(
        &self,
        mut lo: i64,
        mut hi: i64,
        mut pred: impl FnMut(&FetchedRecord) -> bool,
    ) -> Result<i64, KafkaError> {
        // Invariant: every offset < lo is false, every record at >= hi is true (or the end).
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.must_read(mid)?;
            if r.offset >= hi {
                // A gap up to hi: nothing in [mid, hi) exists.
                hi = mid;
            } else if pred(&r) {
                hi = mid.min(r.offset);
            } else {
                lo = r.offset + 1;
            }
        }
        Ok(hi)
    }

    /// What the broker says is the first offset with timestamp >= `ts_ms` (high watermark if
    /// none), via ListOffsets by time.
    pub fn broker_offset_for_time(&self, ts_ms: i64, high: i64) -> Result<i64, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, PARTITION, Offset::Offset(ts_ms))?;
        let res = self.consumer.offsets_for_times(tpl, TIMEOUT)?;
        let e = res
            .find_partition(&self.topic, PARTITION)
            .map(|p| p.offset())
            .unwrap_or(Offset::End);
        Ok(match e {
            Offset::Offset(o) => o,
            _ => high,
        })
    }

    /// The first offset whose record timestamp is >= `ts_ms` (the high watermark if none).
    /// Returns the offset and whether the broker's own answer was right.
    pub fn offset_for_time(&self, ts_ms: i64) -> Result<(i64, bool), KafkaError> {
        let (low, high) = self.watermarks()?;
        if low >= high {
            return Ok((high, true));
        }
        let ts = |r: &FetchedRecord| r.timestamp_ms.unwrap_or(i64::MIN);
        let verified = match self.broker_offset_for_time(ts_ms, high) {
            Ok(o) if o >= low && o <= high => {
                let at_ok = o == high
                    || self
                        .read_from(o)?
                        .is_some_and(|r| r.offset == o && ts(&r) >= ts_ms);
                let before_ok = o == low
                    || self
                        .read_from(o - 1)?
                        .is_some_and(|r| r.offset == o - 1 && ts(&r) < ts_ms);
                (at_ok && before_ok).then_some(o)
            }
            Ok(o) => {
                tracing::warn!(topic = %self.topic, offset = o, low, high, "the broker's offset for a time is outside the topic");
                None
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "the broker cannot list offsets by time");
                None
            }
        };
        match verified {
            Some(o) => Ok((o, true)),
            None => {
                let o = self.first_where(low, high, |r| ts(r) >= ts_ms)?;
                Ok((o, false))
            }
        }
    }
}

/// The stream position of a fetched record, from its `continuum.pos` header.
pub fn position_of(r: &FetchedRecord) -> Option<StreamPosition> {
    r.header_str(continuum_schemas::HEADER_POS)?.parse().ok()
}
