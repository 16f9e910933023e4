//! Shared by the mirror suites: a source topic filled with real changelog records, the mirror as
//! a child process, and the comparison of source and target topics.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use continuum_schemas::types::{IntWidth, TextKind};
use continuum_schemas::{
    BinlogPosition, ChangeEvent, Column, ColumnType, Decoder, Encoder, Gtid, GtidPosition, Op,
    RecordAt, Registry, RegistrySettings, SourceInfo, StreamRecord, TableSchema, TxPlace, Value,
};
use continuum_tests::{stack, wait_for_blocking, Site, TestSite};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

pub struct MirrorCase {
    /// The SF changelog the case mirrors into EU (its [`TestSite::topic`]).
    pub topic: String,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl MirrorCase {
    /// A site config for EU that mirrors a topic of its own (the SF changelog, named from
    /// `prefix`) from SF into EU. The topic is not created: see [`MirrorCase::with_records`].
    pub fn new(prefix: &str) -> MirrorCase {
        let mut site = TestSite::new(&stack().eu, prefix);
        site.set("consumer.mirror.max_retry_delay", "1s");
        let config = site.write();
        MirrorCase {
            topic: site.topic,
            dir: site.dir,
            config,
        }
    }

    /// [`MirrorCase::new`], with its SF topic created (one partition) and holding records
    /// `0..records` (see [`produce`]).
    pub async fn with_records(prefix: &str, records: u64) -> MirrorCase {
        let case = MirrorCase::new(prefix);
        stack().sf.create_topic(&case.topic, 1).await;
        produce(&case.topic, 0, records, Duration::ZERO).await;
        case
    }

    pub fn spawn(&self) -> Child {
        self.spawn_as("mirror")
    }

    /// A mirror process whose log is `<name>.log` (see [`MirrorCase::log_of`]), to tell several
    /// mirrors of one case apart.
    pub fn spawn_as(&self, name: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_continuum-consumer"))
            .args([
                "--config",
                self.config.to_str().unwrap(),
                "--log",
                "info,continuum_consumer=debug",
                "mirror",
            ])
            .env("CONTINUUM_DB_PASSWORD", &stack().eu.db_password)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn continuum-consumer mirror")
    }

    pub fn log(&self) -> String {
        self.log_of("mirror")
    }

    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

pub fn registry(site: &Site) -> Registry {
    Registry::new(&RegistrySettings {
        url: site.registry.clone(),
        ..Default::default()
    })
    .unwrap()
}

pub fn table() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        db: "mirrored".into(),
        table: "items".into(),
        columns: vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Integer {
                    width: IntWidth::Big,
                    unsigned: false,
                },
                nullable: false,
            },
            Column {
                name: "name".into(),
                ty: ColumnType::Text {
                    kind: TextKind::VarChar,
                },
                nullable: true,
            },
            Column {
                name: "price".into(),
                ty: ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
                nullable: true,
            },
        ],
        primary_key: vec![0],
    })
}

/// The `n`-th changelog record: transaction `n / 3`, event `n % 3`.
pub fn record(t: &Arc<TableSchema>, n: u64) -> StreamRecord {
    let seq = 100 + n / 3;
    let gtid = Gtid::new(1, 1, seq);
    let resume: GtidPosition = format!("1-1-{}", seq - 1).parse().unwrap();
    StreamRecord::Change(ChangeEvent {
        op: Op::Insert,
        table: t.clone(),
        before: None,
        after: Some(vec![
            Value::Int(n as i64),
            Value::Text(format!("item {n} ü")),
            Value::Decimal(format!("{}.{:02}", n, n % 100)),
        ]),
        source: SourceInfo {
            server_id: 1,
            gtid: Some(gtid),
            gtid_position: resume.with(gtid),
            resume_position: resume,
            binlog: BinlogPosition::new("sf-bin.000001", 4 + n),
            commit_ts_ms: 1_700_000_000_000 + n as i64,
            snapshot_id: None,
        },
        tx: Some(TxPlace {
            index: n % 3,
            last: n % 3 == 2,
        }),
    })
}

/// Writes records `from..to` to the SF topic, with the producer's headers.
pub async fn produce(topic: &str, from: u64, to: u64, pace: Duration) {
    let t = table();
    for n in from..to {
        produce_record(topic, &record(&t, n), n).await;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
}

/// Writes one record to the SF topic as the producer would, with a timestamp from `n`. Returns
/// the size of its key and value.
pub async fn produce_record(topic: &str, rec: &StreamRecord, n: u64) -> usize {
    static PRODUCER: std::sync::OnceLock<FutureProducer> = std::sync::OnceLock::new();
    let s = stack();
    let producer = PRODUCER.get_or_init(|| {
        s.sf.producer_config("mirror-test-source")
            .set("message.max.bytes", (64 << 20).to_string())
            .create()
            .unwrap()
    });
    let mut enc = Encoder::new(registry(&s.sf), topic);
    let e = enc.encode(rec, 1_700_000_000_000).await.unwrap();
    let pos = rec.position().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "continuum.kind",
            value: Some("row"),
        })
        .insert(Header {
            key: "continuum.pos",
            value: Some(&pos),
        });
    let key = e.key.unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .partition(0)
                .key(&key)
                .payload(&e.value)
                .headers(headers)
                .timestamp(1_700_000_000_000 + n as i64),
            Duration::from_secs(60),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    key.len() + e.value.len()
}

pub fn high_watermark(site: &Site, topic: &str) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = site.consumer_config("mirror-test-wm").create().unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(5))
        .ok()
        .map(|w| w.1)
}

/// Waits until the EU copy has as many records as the SF topic.
pub fn wait_mirrored(topic: &str, expected: i64, timeout: Duration) {
    let s = stack();
    wait_for_blocking(
        &format!("{topic} mirrored to {expected} records"),
        timeout,
        || (high_watermark(&s.eu, topic)? >= expected).then_some(()),
    );
}

/// Source and target hold the same records, in order, once each: same headers (plus the
/// source offset), timestamps, keys and values apart from the schema id; the target decodes
/// through the EU registry alone into the same records.
pub async fn assert_exact_copy(topic: &str, expected: usize) {
    let s = stack();
    let src: Vec<OwnedMessage> = s.sf.read_from(topic, 0, expected, Duration::from_secs(120));
    let dst: Vec<OwnedMessage> = s.eu.read_from(topic, 0, expected, Duration::from_secs(120));
    assert_eq!(
        high_watermark(&s.eu, topic),
        Some(expected as i64),
        "no record beyond the source's"
    );
    let mut sf_dec = Decoder::new(registry(&s.sf));
    let mut eu_dec = Decoder::new(registry(&s.eu));
    for (a, b) in src.iter().zip(&dst) {
        let hdr = |m: &OwnedMessage, k: &str| {
            m.headers().and_then(|h| {
                h.iter()
                    .filter(|x| x.key == k)
                    .last()
                    .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
        };
        assert_eq!(
            hdr(b, "continuum.mirror.offset"),
            Some(a.offset().to_string()),
            "target offset {} carries its source offset",
            b.offset()
        );
        assert_eq!(
            b.offset(),
            a.offset(),
            "offsets line up: nothing skipped or doubled"
        );
        assert_eq!(hdr(b, "continuum.pos"), hdr(a, "continuum.pos"));
        assert_eq!(hdr(b, "continuum.kind"), hdr(a, "continuum.kind"));
        assert_eq!(b.timestamp().to_millis(), a.timestamp().to_millis());
        let (ak, bk) = (a.key().unwrap(), b.key().unwrap());
        let (av, bv) = (a.payload().unwrap(), b.payload().unwrap());
        assert_eq!(&ak[5..], &bk[5..]);
        assert_eq!(&av[5..], &bv[5..]);
        let at = RecordAt {
            topic: topic.into(),
            partition: 0,
            offset: a.offset(),
        };
        let ra = sf_dec.decode(&at, Some(ak), av).await.unwrap();
        let rb = eu_dec
            .decode(&at, Some(bk), bv)
            .await
            .unwrap_or_else(|e| panic!("EU decode of {at}: {e}"));
        assert_eq!(ra, rb);
    }
}
