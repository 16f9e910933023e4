//! Kafka clients built from typed settings: TLS and SASL from [`ClusterConfig`], the raw
//! `kafka_options` map (already checked against reserved keys), and the settings each role
//! needs for the pipeline's guarantees. Also the topic helpers every stage uses: create a
//! single-partition changelog, read watermarks, read the last record.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{ClusterConfig, ConfigError, ProducerConfig};
use crate::secret::SecretRef;

/// Base client settings for a site's cluster: servers, TLS, SASL and raw options.
pub fn base_config(
    site: &str,
    c: &ClusterConfig,
    client_id: &str,
) -> Result<ClientConfig, ConfigError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &c.brokers);
    cfg.set("client.id", client_id);
    let protocol = match (c.tls.is_some(), c.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    cfg.set("security.protocol", protocol);
    if let Some(t) = &c.tls {
        cfg.set("ssl.ca.location", t.ca_file.to_string_lossy());
        if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
            cfg.set("ssl.certificate.location", cert.to_string_lossy());
            cfg.set("ssl.key.location", key.to_string_lossy());
        }
        let pw = SecretRef {
            value: t.key_password.clone(),
            file: t.key_password_file.clone(),
        }
        .resolve(&format!("sites.{site}.tls.key_password_file"))?;
        if let Some(pw) = pw {
            cfg.set("ssl.key.password", pw.expose());
        }
        cfg.set(
            "ssl.endpoint.identification.algorithm",
            if t.verify_hostname { "https" } else { "none" },
        );
    }
    if let Some(s) = &c.sasl {
        cfg.set("sasl.mechanisms", s.mechanism.as_str());
        cfg.set("sasl.username", &s.username);
        let pw = SecretRef {
            value: s.password.clone(),
            file: s.password_file.clone(),
        }
        .resolve(&format!("sites.{site}.sasl.password_file"))?
        .ok_or_else(|| ConfigError::Invalid {
            setting: format!("sites.{site}.sasl.password"),
            reason: format!(
                "SASL needs a password: set password_file or CONTINUUM_{}_SASL_PASSWORD",
                site.to_uppercase()
            ),
        })?;
        cfg.set("sasl.password", pw.expose());
    }
    for (k, v) in &c.kafka_options {
        cfg.set(k, v);
    }
    Ok(cfg)
}

/// An idempotent producer: the log always holds a prefix of what was sent, in order.
///
/// - `acks=all` and `enable.idempotence`: no duplicates and no reordering across retries, with
///   up to 5 requests in flight (Kafka's limit for idempotent ordering).
/// - `enable.gapless.guarantee`: if the broker refuses a record for good (too large, say), the
///   producer fails as a whole and every record queued after it fails too. Without it librdkafka
///   drops the refused record and still delivers the ones behind it, and a writer that resumes
///   from its topic's tail would then skip the refused one for ever.
/// - `message.timeout.ms=0`: delivery waits for an unavailable broker instead of failing, so
///   the pipeline blocks, it never drops.
/// - `message.max.bytes`: the largest record the writer hands to librdkafka, the writer's own
///   limit (the topic's `max.message.bytes` may be lower; the writers read it and stop with an
///   error naming both before sending a larger record).
pub fn producer_config(
    site: &str,
    c: &ClusterConfig,
    client_id: &str,
    p: &ProducerConfig,
) -> Result<ClientConfig, ConfigError> {
    let mut cfg = base_config(site, c, client_id)?;
    cfg.set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", "0")
        .set("linger.ms", p.linger.as_millis().to_string())
        .set("batch.num.messages", p.batch_records.to_string())
        .set("batch.size", p.batch_bytes.to_string())
        .set(
            "queue.buffering.max.messages",
            p.queue_records.max(p.batch_records).to_string(),
        )
        .set("message.max.bytes", p.max_record_bytes.to_string());
    if !c.kafka_options.contains_key("compression.type")
        && !c.kafka_options.contains_key("compression.codec")
    {
        cfg.set("compression.type", "lz4");
    }
    Ok(cfg)
}

/// A consumer that is assigned partitions and seeks explicitly: no group offsets are relied
/// on, and only committed data is read.
pub fn consumer_config(
    site: &str,
    c: &ClusterConfig,
    client_id: &str,
) -> Result<ClientConfig, ConfigError> {
    let mut cfg = base_config(site, c, client_id)?;
    cfg.set("group.id", format!("continuum.{client_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    // Fetch and prefetch-queue sizes, each unless kafka_options sets it. librdkafka's defaults
    // (50 MiB fetches, a 64 MiB prefetch queue per consumer) let one process hold hundreds of MiB
    // of records, and `consumer run` has two consumers. Each Continuum consumer reads one
    // partition, so a fetch is one partition's: 4 MiB (counted compressed) is thousands of row
    // changes, enough that the next fetch is in flight long before the queue runs dry, and the
    // queue holds two fetches. The queue is bounded by bytes only (queued.min.messages is
    // librdkafka's default), so small records do not stop the prefetch early. A record larger
    // than the fetch size is still returned whole (Kafka's KIP-74), up to
    // receive.message.max.bytes, which must exceed the largest record a writer may send.
    //
    // fetch.wait.max.ms stays at librdkafka's 500 ms: Kafka answers a fetch as soon as it has
    // data, so the wait only bounds how long an idle consumer's fetch is held (50 ms would cost
    // an idle consumer 20 empty fetches a second for nothing).
    for (k, v) in [
        ("fetch.max.bytes", CONSUMER_FETCH_BYTES),
        ("max.partition.fetch.bytes", CONSUMER_FETCH_BYTES),
        ("queued.max.messages.kbytes", CONSUMER_QUEUE_KBYTES),
        ("receive.message.max.bytes", "209715200"),
    ] {
        if !c.kafka_options.contains_key(k) {
            cfg.set(k, v);
        }
    }
    Ok(cfg)
}

/// The default `fetch.max.bytes` and `max.partition.fetch.bytes` of Continuum's consumers.
pub const CONSUMER_FETCH_BYTES: &str = "4194304";
/// The default `queued.max.messages.kbytes` (prefetch queue) of Continuum's consumers.
pub const CONSUMER_QUEUE_KBYTES: &str = "8192";

/// Whether a Kafka error is worth retrying (broker unavailable, timeouts, transport).
pub fn is_transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::BrokerNotAvailable
            | C::Resolve
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::QueueFull
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::UnknownTopicOrPartition
            | C::PartitionEOF,
        ) => true,
        _ => matches!(e, KafkaError::MetadataFetch(_) | KafkaError::OffsetFetch(_)),
    }
}

/// Creates `topic` with one partition if it does not exist, and checks that an existing one
/// has exactly one: the changelog is the binlog, in order. A topic created here gets
/// `max.message.bytes = max_message_bytes`, so that it takes every record its writer may send
/// (a cluster's default, `message.max.bytes`, is about 1 MiB); an existing topic keeps its own
/// (the writers read it with [`topic_max_message_bytes`]).
pub async fn ensure_changelog_topic(
    cfg: &ClientConfig,
    topic: &str,
    max_message_bytes: usize,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.create()?;
    let partitions = topic_partitions(cfg, topic, timeout)?;
    match partitions {
        Some(1) => return Ok(()),
        Some(n) => {
            return Err(KafkaError::AdminOpCreation(format!(
                "topic {topic} has {n} partitions; a changelog topic must have exactly 1 (the topic is the binlog, in commit order)"
            )))
        }
        None => {}
    }
    let limit = max_message_bytes.to_string();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set("max.message.bytes", &limit);
    let res = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(timeout)),
        )
        .await?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaError::AdminOpCreation(format!(
                    "creating topic {t}: {code}"
                )))
            }
        }
    }
    // Wait until the metadata shows it.
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if topic_partitions(cfg, topic, timeout)?.is_some() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::AdminOpCreation(format!(
                "topic {topic} was created but does not appear in metadata"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The topic's `max.message.bytes` as the broker applies it (its own setting, else the
/// cluster's `message.max.bytes`): the largest record batch the broker accepts for it.
pub async fn topic_max_message_bytes(
    cfg: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.create()?;
    let res = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(timeout)),
        )
        .await?;
    let bad = |why: String| {
        KafkaError::AdminOpCreation(format!(
            "reading max.message.bytes of topic {topic}: {why}"
        ))
    };
    let resource = res
        .into_iter()
        .next()
        .ok_or_else(|| bad("no answer".into()))?
        .map_err(|code| bad(code.to_string()))?;
    let entry = resource
        .get("max.message.bytes")
        .ok_or_else(|| bad("the broker did not return it".into()))?;
    entry
        .value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(format!("unreadable value {:?}", entry.value)))
}

/// Number of partitions of `topic`, or `None` if it does not exist.
pub fn topic_partitions(
    cfg: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>, KafkaError> {
    let c: BaseConsumer = cfg.create()?;
    let md = c.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| {
            if t.error().is_some() || t.partitions().is_empty() {
                None
            } else {
                Some(t.partitions().len())
            }
        }))
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct FetchedRecord {
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl FetchedRecord {
    pub fn from_message<M: Message>(m: &M) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|hh| {
                        (
                            hh.key.to_owned(),
                            hh.value.map(|v| v.to_vec()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        FetchedRecord {
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().map(|v| v.to_vec()),
            headers,
        }
    }

    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, key: &str) -> Option<&str> {
        self.header(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn owned_headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        h
    }
}

/// Low and high watermarks of partition 0.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<(i64, i64), KafkaError> {
    consumer.fetch_watermarks(topic, 0, timeout)
}

/// Reads the record at `offset` of partition 0, waiting up to `timeout`.
pub fn read_at(
    consumer: &BaseConsumer,
    topic: &str,
    offset: i64,
    timeout: Duration,
) -> Result<Option<FetchedRecord>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match consumer.poll(left.min(Duration::from_millis(200))) {
            Some(Ok(m)) if m.offset() == offset => {
                return Ok(Some(FetchedRecord::from_message(&m)))
            }
            Some(Ok(m)) if m.offset() > offset => {
                tracing::error!(
                    topic,
                    wanted = offset,
                    got = m.offset(),
                    "fetch skipped past the requested offset"
                );
                return Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OffsetOutOfRange,
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e),
            None => continue,
        }
    }
}

/// The last record of partition 0, or `None` if the partition is empty.
pub fn read_last(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<FetchedRecord>, KafkaError> {
    let (low, high) = watermarks(consumer, topic, timeout)?;
    if high <= low {
        return Ok(None);
    }
    match read_at(consumer, topic, high - 1, timeout)? {
        Some(r) => Ok(Some(r)),
        None => Err(KafkaError::MessageConsumption(
            RDKafkaErrorCode::RequestTimedOut,
        )),
    }
}

/// The last record of partition 0 once the end offset has stopped moving, or `None` for an
/// empty partition. A writer that resumes from its topic's tail calls this, so that a record
/// still in flight from a predecessor that just died is counted before the writer decides
/// where to resume.
pub fn read_last_stable(
    cfg: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<FetchedRecord>, KafkaError> {
    let consumer: BaseConsumer = cfg.create()?;
    let mut high = watermarks(&consumer, topic, timeout)?.1;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let h = watermarks(&consumer, topic, timeout)?.1;
        if h == high {
            break;
        }
        high = h;
    }
    read_last(&consumer, topic, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteConfig;

    fn cfg(extra: &str) -> SiteConfig {
        SiteConfig::from_toml(&format!(
            r#"
            site = "sf"
            [database]
            user = "u"
            [sites.sf]
            brokers = "b1:9092,b2:9092"
            registry = {{ url = "http://r" }}
            {extra}
        "#
        ))
        .unwrap()
    }

    #[test]
    fn plaintext_by_default_and_idempotent_producer() {
        let c = cfg("");
        let p = producer_config("sf", c.local(), "test", &c.producer).unwrap();
        assert_eq!(p.get("security.protocol"), Some("plaintext"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("linger.ms"), Some("5"));
        assert_eq!(p.get("queue.buffering.max.messages"), Some("20000"));
        let k = consumer_config("sf", c.local(), "test").unwrap();
        assert_eq!(k.get("isolation.level"), Some("read_committed"));
        assert_eq!(k.get("enable.auto.commit"), Some("false"));
        assert_eq!(p.get("enable.gapless.guarantee"), Some("true"));
        assert_eq!(k.get("fetch.max.bytes"), Some(CONSUMER_FETCH_BYTES));
        // kafka_options may set the fetch sizes.
        let c = cfg("[sites.sf.kafka_options]\n\"fetch.max.bytes\" = \"1048576\"\n");
        let k = consumer_config("sf", c.local(), "test").unwrap();
        assert_eq!(k.get("fetch.max.bytes"), Some("1048576"));
    }

    #[test]
    fn tls_and_sasl_are_typed() {
        let c = cfg(r#"
            [sites.sf.tls]
            ca_file = "/ca.pem"
            cert_file = "/c.pem"
            key_file = "/k.pem"
            [sites.sf.sasl]
            mechanism = "SCRAM-SHA-512"
            username = "continuum"
            password = "pw"
            "#);
        let b = base_config("sf", c.local(), "t").unwrap();
        assert_eq!(b.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(b.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(b.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(
            b.get("ssl.endpoint.identification.algorithm"),
            Some("https")
        );
    }

    #[test]
    fn every_security_setting_maps_to_librdkafka() {
        let dir = std::env::temp_dir().join(format!("continuum-kafka-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sasl"), "from-file\n").unwrap();
        std::fs::write(dir.join("keypw"), "key-pw\n").unwrap();
        for (mechanism, tls, protocol) in [
            ("PLAIN", false, "sasl_plaintext"),
            ("SCRAM-SHA-256", true, "sasl_ssl"),
            ("SCRAM-SHA-512", false, "sasl_plaintext"),
        ] {
            let tls = if tls {
                format!(
                    "[sites.sf.tls]\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\nkey_password_file = \"{}\"\nverify_hostname = false\n",
                    dir.join("keypw").display()
                )
            } else {
                String::new()
            };
            let c = cfg(&format!(
                "{tls}[sites.sf.sasl]\nmechanism = \"{mechanism}\"\nusername = \"continuum\"\npassword_file = \"{}\"\n",
                dir.join("sasl").display()
            ));
            c.validate().unwrap();
            for b in [
                base_config("sf", c.local(), "t").unwrap(),
                producer_config("sf", c.local(), "t", &c.producer).unwrap(),
                consumer_config("sf", c.local(), "t").unwrap(),
            ] {
                assert_eq!(b.get("security.protocol"), Some(protocol), "{mechanism}");
                assert_eq!(b.get("sasl.mechanisms"), Some(mechanism));
                assert_eq!(b.get("sasl.username"), Some("continuum"));
                assert_eq!(b.get("sasl.password"), Some("from-file"));
                if protocol == "sasl_ssl" {
                    assert_eq!(b.get("ssl.ca.location"), Some("/ca.pem"));
                    assert_eq!(b.get("ssl.certificate.location"), Some("/c.pem"));
                    assert_eq!(b.get("ssl.key.location"), Some("/k.pem"));
                    assert_eq!(b.get("ssl.key.password"), Some("key-pw"));
                    assert_eq!(b.get("ssl.endpoint.identification.algorithm"), Some("none"));
                } else {
                    assert_eq!(b.get("ssl.ca.location"), None);
                }
            }
        }
        // The environment's password wins over the file.
        let mut c = cfg(&format!(
            "[sites.sf.tls]\nca_file = \"/ca.pem\"\n[sites.sf.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword_file = \"{}\"\n",
            dir.join("sasl").display()
        ));
        c.apply_env(|k| match k {
            "CONTINUUM_SF_SASL_PASSWORD" => Some("from-env".into()),
            "CONTINUUM_SF_TLS_KEY_PASSWORD" => Some("key-from-env".into()),
            _ => None,
        })
        .unwrap();
        let b = base_config("sf", c.local(), "t").unwrap();
        assert_eq!(b.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(b.get("sasl.password"), Some("from-env"));
        assert_eq!(b.get("ssl.key.password"), Some("key-from-env"));
        // A key password file that cannot be read names the setting.
        let c =
            cfg("[sites.sf.tls]\nca_file = \"/ca.pem\"\nkey_password_file = \"/nonexistent/pw\"\n");
        let e = base_config("sf", c.local(), "t").unwrap_err().to_string();
        assert!(e.contains("sites.sf.tls.key_password_file"), "{e}");
    }

    #[test]
    fn raw_options_may_not_weaken_the_typed_security_settings() {
        for key in [
            "security.protocol",
            "ssl.ca.location",
            "ssl.endpoint.identification.algorithm",
            "enable.ssl.certificate.verification",
            "ssl.keystore.location",
            "sasl.mechanism",
            "sasl.password",
        ] {
            let c = cfg(&format!("[sites.sf.kafka_options]\n\"{key}\" = \"x\"\n"));
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("\"x\""), "{key}: {e}");
        }
    }

    #[test]
    fn sasl_without_password_names_the_setting() {
        let c = cfg(r#"
            [sites.sf.sasl]
            mechanism = "PLAIN"
            username = "continuum"
            "#);
        let e = base_config("sf", c.local(), "t").unwrap_err().to_string();
        assert!(
            e.contains("sites.sf.sasl.password") && e.contains("CONTINUUM_SF_SASL_PASSWORD"),
            "{e}"
        );
    }
}
