//! Streams the changelog: assigns partition 0 at an explicit offset (never group offsets),
//! reads only committed records (`isolation.level=read_committed`), decodes each one through the
//! registry of the cluster it is read from, and hands records to apply in topic order through a
//! bounded channel, so decoding overlaps with MariaDB work while memory stays bounded.
//!
//! Guarantees:
//! - records arrive in offset order, each exactly once per reader; the reader stops at the first
//!   error and sends it as its last item;
//! - a record that does not decode is an error naming its offset and, from its `continuum.pos`
//!   header, its GTID;
//! - a record's position is its payload's; a `continuum.pos` or `continuum.kind` header that
//!   disagrees with the payload is an error naming both.

use continuum_common::kafka::FetchedRecord;
use continuum_schemas::{Decoder, RecordAt, StreamPosition, StreamRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::error::{ApplyError, RecordContext};
use crate::settings::PARTITION;

use continuum_schemas::{HEADER_KIND, HEADER_POS};

/// Records travel between the stages in chunks of at most this many (one wake-up per chunk,
/// not per record).
const CHUNK: usize = 256;
/// Chunks in flight per stage: with two stages, at most 2 × 2 × [`CHUNK`] records are held
/// beyond librdkafka's own queue.
const CHUNKS_IN_FLIGHT: usize = 2;

/// One decoded record.
#[derive(Debug)]
pub struct Incoming {
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// Key and value bytes, for batch size limits.
    pub size: usize,
    pub pos: StreamPosition,
    pub record: StreamRecord,
}

/// The GTID text a position names, for messages.
pub fn gtid_text(pos: Option<&StreamPosition>) -> String {
    match pos {
        Some(StreamPosition::Txn { gtid, .. }) => gtid.to_string(),
        Some(StreamPosition::At(p)) => format!("at {p}"),
        Some(StreamPosition::Snapshot { id, .. }) => format!("snapshot {id}"),
        Some(StreamPosition::Chunk { id, .. }) => format!("a chunk of snapshot {id}"),
        None => String::new(),
    }
}

type Item = Result<Incoming, ApplyError>;

/// A running reader; dropping it stops the polling thread and the decoding task.
pub struct Reader {
    rx: mpsc::Receiver<Vec<Item>>,
    ready: std::collections::VecDeque<Item>,
    task: tokio::task::JoinHandle<()>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.abort();
    }
}

impl Reader {
    /// Starts reading `topic` partition 0 at `offset`.
    pub fn start(
        consumer: BaseConsumer,
        topic: String,
        cluster: String,
        offset: i64,
        decoder: Decoder,
    ) -> Result<Reader, ApplyError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, PARTITION, Offset::Offset(offset))
            .and_then(|_| consumer.assign(&tpl))
            .map_err(|source| ApplyError::Kafka {
                what: format!("assigning {topic}[{PARTITION}] at offset {offset}"),
                source,
            })?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ftx, frx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("continuum-reader".into())
                .spawn(move || poll_thread(consumer, ftx, stop))
                .expect("spawn the reader thread");
        }
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let task = tokio::spawn(run(frx, topic, cluster, decoder, tx));
        Ok(Reader {
            rx,
            ready: Default::default(),
            task,
            stop,
        })
    }

    /// Whether a record (or the reader's end) is ready to be taken without waiting.
    pub fn has_ready(&mut self) -> bool {
        if !self.ready.is_empty() {
            return true;
        }
        match self.rx.try_recv() {
            Ok(chunk) => {
                self.ready.extend(chunk);
                true
            }
            Err(mpsc::error::TryRecvError::Empty) => false,
            Err(mpsc::error::TryRecvError::Disconnected) => true,
        }
    }

    /// The next record, or `None` if the reader ended (after sending its error). Cancel-safe.
    pub async fn recv(&mut self) -> Option<Item> {
        if let Some(x) = self.ready.pop_front() {
            return Some(x);
        }
        let chunk = self.rx.recv().await?;
        self.ready.extend(chunk);
        self.ready.pop_front()
    }
}

/// Polls librdkafka on a thread of its own, handing over what is ready in chunks; back-pressure
/// from the bounded channel stops polling (librdkafka then stops fetching at its queue limits).
fn poll_thread(
    consumer: BaseConsumer,
    tx: mpsc::Sender<Vec<Result<FetchedRecord, KafkaError>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut wait = std::time::Duration::from_millis(100);
        let mut failed = false;
        while chunk.len() < CHUNK {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => chunk.push(Ok(FetchedRecord::from_message(&m))),
                Some(Err(e)) => {
                    chunk.push(Err(e));
                    failed = true;
                    break;
                }
            }
            wait = std::time::Duration::ZERO;
        }
        if chunk.is_empty() {
            continue;
        }
        if tx.blocking_send(chunk).is_err() || failed {
            return;
        }
    }
}

async fn run(
    mut frx: mpsc::Receiver<Vec<Result<FetchedRecord, KafkaError>>>,
    topic: String,
    cluster: String,
    mut decoder: Decoder,
    tx: mpsc::Sender<Vec<Item>>,
) {
    while let Some(fetched) = frx.recv().await {
        let mut out = Vec::with_capacity(fetched.len());
        let mut failed = false;
        for f in fetched {
            let item = match f {
                Ok(f) => decode(&mut decoder, &topic, f).await,
                Err(e) => Err(kafka_error(&topic, &cluster, e)),
            };
            failed = item.is_err();
            out.push(item);
            if failed {
                break;
            }
        }
        if tx.send(out).await.is_err() || failed {
            return;
        }
    }
}

fn kafka_error(topic: &str, cluster: &str, e: KafkaError) -> ApplyError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset) => ApplyError::Topic {
            topic: topic.to_owned(),
            cluster: cluster.to_owned(),
            reason: format!(
                "the checkpoint's offset is outside the topic ({e}): the records were deleted (retention) or the topic was recreated. Records are missing from this replica's view; run `continuum-consumer replay --from-beginning` to re-apply what the topic holds, or restore the replica from a snapshot"
            ),
        },
        _ => ApplyError::Kafka {
            what: format!("reading {topic} on the {cluster} cluster"),
            source: e,
        },
    }
}

/// Decodes one fetched record.
pub async fn decode(
    decoder: &mut Decoder,
    topic: &str,
    r: FetchedRecord,
) -> Result<Incoming, ApplyError> {
    let header_pos: Option<StreamPosition> = r.header_str(HEADER_POS).and_then(|s| s.parse().ok());
    let gtid = gtid_text(header_pos.as_ref());
    let ctx = |table: String| RecordContext {
        topic: topic.to_owned(),
        offset: r.offset,
        gtid: gtid.clone(),
        table,
        key: String::new(),
    };
    let poison = |reason: String| {
        ApplyError::Record {
        at: Box::new(ctx(String::new())),
        reason,
        fix: "the record is not a valid Continuum record; find out what wrote it (the producer, the mirror, or something else writing to this topic). To pass it, move the checkpoint past it with `continuum-consumer replay --to-offset` once the replica is known to be right".into(),
    }
    };
    let Some(value) = r.value.as_deref() else {
        return Err(poison("the record has no value".into()));
    };
    let at = RecordAt {
        topic: topic.to_owned(),
        partition: PARTITION,
        offset: r.offset,
    };
    let record = match decoder.decode(&at, r.key.as_deref(), value).await {
        Ok(rec) => rec,
        Err(e) if e.is_transient() => return Err(ApplyError::Registry(e)),
        Err(e) => return Err(poison(format!("it does not decode: {e}"))),
    };
    if let Some(kind) = r.header_str(HEADER_KIND) {
        if kind != record.kind() {
            return Err(poison(format!(
                "its {HEADER_KIND} header says '{kind}' but it decodes as a {} record",
                record.kind()
            )));
        }
    }
    // The position travels twice: in the payload (authoritative, it is what the producer
    // encoded) and in the header (so that readers find positions without decoding). They must
    // agree; a record whose header says otherwise was rewritten by something else.
    let pos = record.position();
    match (header_pos, r.header_str(HEADER_POS)) {
        (Some(h), _) if h != pos => {
            return Err(poison(format!(
                "its {HEADER_POS} header says '{h}' but its payload is at '{pos}'"
            )))
        }
        (None, Some(text)) => {
            return Err(poison(format!(
                "its {HEADER_POS} header '{text}' does not parse"
            )))
        }
        _ => {}
    }
    let size = r.key.as_ref().map_or(0, |k| k.len()) + value.len();
    Ok(Incoming {
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        size,
        pos,
        record,
    })
}
