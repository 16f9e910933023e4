//! Kafka clients built from typed settings: TLS and SASL from [`ClusterConfig`], the raw
//! `kafka_options` map (already checked against reserved keys), and the settings each role
//! needs for the pipeline's guarantees. Also the topic helpers every stage uses: create a
//! single-partition changelog, read watermarks, read the last record.
//!
//! Security failures: librdkafka treats a refused SASL login, a broker certificate that does not
//! verify, or a plaintext client at a TLS listener like a broker that is down (it logs and
//! retries for ever; a request just times out). The topic helpers here create their clients with
//! a [`Guard`] context that watches for these and stops the call at once with a
//! [`SecurityError`], fatal (not [`is_transient`]), naming the site and the setting to fix. They
//! are the first Kafka calls of the producer's and the mirror's sessions, so a wrong password,
//! CA or protocol stops those before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::types::RDKafkaConfRes;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::{ClusterConfig, ConfigError, ProducerConfig};
use crate::secret::SecretRef;

/// Base client settings for a site's cluster: servers, TLS, SASL and raw options.
pub fn base_config(
    site: &str,
    c: &ClusterConfig,
    client_id: &str,
) -> Result<ClientConfig, ConfigError> {
    remember_site(&c.brokers, site);
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
    // changes. The queue is bounded by bytes only (queued.min.messages is librdkafka's
    // default), so small records do not stop the prefetch early.
    //
    // When the queue is over its bound, librdkafka postpones the partition's next fetch by
    // fetch.queue.backoff.ms, 1 000 ms by default: a consumer that drains its queue faster than
    // that then waits for records with nothing queued. Measured on apply alone (300k row
    // changes, 2026-12-07): with an 8 MiB queue and the default backoff, the reader thread waited
    // 4.6-5.8 s of 15.4 s on an empty queue; with 20 ms, 0.1 s, and the drain took 10.4 s. The
    // queue is then 4 MiB: it refills every 20 ms, so a larger one only holds more memory.
    //
    // A record larger than the fetch size is still returned whole (Kafka's KIP-74), up to
    // receive.message.max.bytes, which must exceed the largest record a writer may send.
    //
    // fetch.wait.max.ms stays at librdkafka's 500 ms: Kafka answers a fetch as soon as it has
    // data, so the wait only bounds how long an idle consumer's fetch is held (50 ms would cost
    // an idle consumer 20 empty fetches a second for nothing).
    for (k, v) in [
        ("fetch.max.bytes", CONSUMER_FETCH_BYTES),
        ("max.partition.fetch.bytes", CONSUMER_FETCH_BYTES),
        ("queued.max.messages.kbytes", CONSUMER_QUEUE_KBYTES),
        ("fetch.queue.backoff.ms", CONSUMER_QUEUE_BACKOFF_MS),
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
pub const CONSUMER_QUEUE_KBYTES: &str = "4096";
/// The default `fetch.queue.backoff.ms` of Continuum's consumers: how soon a fetch follows a
/// full prefetch queue.
pub const CONSUMER_QUEUE_BACKOFF_MS: &str = "20";

/// Whether a Kafka error is worth retrying (broker unavailable, timeouts, transport). A cluster
/// that refused this client (authentication, authorization, TLS) or a [`SecurityError`] (carried
/// as a client configuration error) is not: the settings must change first.
pub fn is_transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match (e, e.rdkafka_error_code()) {
        (KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_), _) => false,
        (
            _,
            Some(
                C::Authentication
                | C::SSL
                | C::SaslAuthenticationFailed
                | C::UnsupportedSASLMechanism
                | C::IllegalSASLState
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SecurityDisabled,
            ),
        ) => false,
        (
            _,
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
            ),
        ) => true,
        _ => matches!(e, KafkaError::MetadataFetch(_) | KafkaError::OffsetFetch(_)),
    }
}

// ---------------------------------------------------------------------------------------------
// Security failures

/// Which refusal a [`SecurityError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityFailure {
    /// The cluster refused the SASL login: a wrong password, or a user it does not have.
    SaslCredentials,
    /// The cluster does not offer the configured SASL mechanism.
    SaslMechanism,
    /// The broker's certificate did not verify against the configured CA (or does not name the
    /// address, with `verify_hostname`).
    UntrustedCertificate,
    /// The broker refused this client's certificate, or its absence.
    ClientCertificate,
    /// The listener speaks TLS, and the client connects without it.
    TlsRequired,
}

/// A cluster refused this client for a reason no retry can fix: the client's security settings
/// do not match the listener's. It names the site's setting to fix and never holds a secret.
/// Fatal: carried as a client configuration error (see `From<SecurityError> for KafkaError`),
/// which [`is_transient`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; set {setting} {fix}")]
pub struct SecurityError {
    pub failure: SecurityFailure,
    /// The site whose settings the client was built from ([`base_config`]), if known.
    pub site: Option<String>,
    /// The broker that refused, `host:port`.
    pub broker: String,
    pub problem: String,
    /// The setting to fix, e.g. `sites.sf.sasl.password`.
    pub setting: String,
    pub fix: String,
}

impl From<SecurityError> for KafkaError {
    /// A client configuration error that reads `Client config error: <the SecurityError>`: the
    /// helpers here return [`KafkaError`], and their callers wrap it as it is.
    fn from(e: SecurityError) -> KafkaError {
        KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            format!("{}; set", e.problem),
            e.setting,
            e.fix,
        )
    }
}

/// A cluster's refusal of this client as the helpers here return it: a [`SecurityFailure`] that
/// names `setting` (for tests of error handling).
pub fn refusal_error(failure: SecurityFailure, setting: &str) -> KafkaError {
    SecurityError {
        failure,
        site: setting.split('.').nth(1).map(str::to_owned),
        broker: "b:9094".into(),
        problem: format!("the broker at b:9094 refused the client ({failure:?})"),
        setting: setting.to_owned(),
        fix: "as the cluster's listener wants".into(),
    }
    .into()
}

/// The sites whose settings each broker list was built from ([`base_config`] records them), so
/// that a security failure met by a client of that list names that site's settings. A process
/// loads one configuration: a few entries.
fn sites_by_brokers() -> &'static Mutex<BTreeMap<String, BTreeSet<String>>> {
    static SITES: OnceLock<Mutex<BTreeMap<String, BTreeSet<String>>>> = OnceLock::new();
    SITES.get_or_init(Default::default)
}

fn remember_site(brokers: &str, site: &str) {
    sites_by_brokers()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(brokers.to_owned())
        .or_default()
        .insert(site.to_owned());
}

/// The security settings of one client, read back from its [`ClientConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Link {
    /// `None` if no site, or several, were configured with these brokers.
    site: Option<String>,
    protocol: String,
    mechanism: String,
    username: String,
    ca_file: String,
    cert_file: Option<String>,
    verify_hostname: bool,
}

/// librdkafka's advice appended to some failures, which names its own properties (the
/// [`SecurityError`] names Continuum's settings instead).
const LIBRDKAFKA_HINTS: &[&str] = &[
    ": broker certificate could not be verified",
    ": client SSL authentication might be required",
];

/// TLS alerts a server sends when it refuses the client's certificate (or its absence).
const CLIENT_CERTIFICATE_ALERTS: &[&str] = &[
    "alert bad certificate",
    "alert certificate required",
    "alert unknown ca",
    "alert certificate unknown",
    "alert certificate expired",
    "alert certificate revoked",
    "alert unsupported certificate",
];

/// Splits librdkafka's `[<protocol>://]<host:port>/<id>: <what happened> (after N ms in state S)`
/// (its log lines start with `[thrd:<thread>]: ` too) into the broker's `host:port` and what
/// happened.
fn split_reason(reason: &str) -> (String, String) {
    let reason = match reason.strip_prefix("[thrd:") {
        Some(r) => r.split_once("]: ").map_or(r, |(_, rest)| rest),
        None => reason,
    };
    let (head, rest) = reason.split_once(": ").unwrap_or(("", reason));
    let address = head.rsplit("://").next().unwrap_or(head);
    let broker = address.split('/').next().unwrap_or(address).to_owned();
    let mut detail = match rest.rfind(" (after ") {
        Some(i) if rest.ends_with(')') => &rest[..i],
        _ => rest,
    };
    for hint in LIBRDKAFKA_HINTS {
        if let Some(i) = detail.find(hint) {
            detail = &detail[..i];
        }
    }
    (broker, detail.trim().to_owned())
}

impl Link {
    fn of(cfg: &ClientConfig) -> Link {
        let get = |k: &str| cfg.get(k).unwrap_or_default().to_owned();
        let brokers = get("bootstrap.servers");
        let site = sites_by_brokers()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&brokers)
            .filter(|s| s.len() == 1)
            .and_then(|s| s.first().cloned());
        let protocol = match get("security.protocol").to_ascii_lowercase() {
            p if p.is_empty() => "plaintext".to_owned(),
            p => p,
        };
        Link {
            site,
            protocol,
            mechanism: get("sasl.mechanisms"),
            username: get("sasl.username"),
            ca_file: get("ssl.ca.location"),
            cert_file: cfg.get("ssl.certificate.location").map(str::to_owned),
            verify_hostname: cfg.get("ssl.endpoint.identification.algorithm") != Some("none"),
        }
    }

    fn tls(&self) -> bool {
        self.protocol.ends_with("ssl")
    }

    fn site_name(&self) -> &str {
        self.site.as_deref().unwrap_or("<site>")
    }

    /// `sites.<site>`: where the settings are.
    fn table(&self) -> String {
        format!("sites.{}", self.site_name())
    }

    fn cluster(&self) -> String {
        match &self.site {
            Some(s) => format!("the {s} cluster"),
            None => "the cluster".to_owned(),
        }
    }

    /// The [`SecurityError`] an error librdkafka reported (its error callback) is, if any.
    fn classify(&self, code: RDKafkaErrorCode, reason: &str) -> Option<SecurityError> {
        use RDKafkaErrorCode as C;
        let (broker, detail) = split_reason(reason);
        let lower = detail.to_ascii_lowercase();
        let refused_certificate = CLIENT_CERTIFICATE_ALERTS.iter().any(|a| lower.contains(a));
        let failure = match code {
            C::Authentication if lower.contains("unsupported sasl mechanism") => {
                SecurityFailure::SaslMechanism
            }
            C::Authentication => SecurityFailure::SaslCredentials,
            C::SSL if lower.contains("certificate verify failed") => {
                SecurityFailure::UntrustedCertificate
            }
            // TLS 1.3 sends the refusal after the handshake, as the first read's error.
            C::SSL | C::BrokerTransportFailure if self.tls() && refused_certificate => {
                SecurityFailure::ClientCertificate
            }
            _ => return None,
        };
        Some(self.error(failure, broker, &detail))
    }

    fn error(&self, failure: SecurityFailure, broker: String, detail: &str) -> SecurityError {
        let t = self.table();
        let host = broker.rsplit_once(':').map_or(broker.as_str(), |(h, _)| h);
        let (problem, setting, fix) = match failure {
            SecurityFailure::SaslCredentials => (
                format!(
                    "{} refused the SASL login of user \"{}\" with {} at {broker}: {detail}",
                    self.cluster(),
                    self.username,
                    self.mechanism
                ),
                format!("{t}.sasl.password"),
                format!(
                    "(password_file, password or CONTINUUM_{}_SASL_PASSWORD) to that user's password on this cluster, or {t}.sasl.username to a user it has",
                    self.site_name().to_uppercase()
                ),
            ),
            SecurityFailure::SaslMechanism => {
                let offered = detail
                    .split("supported mechanisms: ")
                    .nth(1)
                    .map_or("?", str::trim);
                (
                    format!(
                        "{} does not offer SASL mechanism {} at {broker}: {detail}",
                        self.cluster(),
                        self.mechanism
                    ),
                    format!("{t}.sasl.mechanism"),
                    format!("to one of {offered} (it is {})", self.mechanism),
                )
            }
            SecurityFailure::UntrustedCertificate => (
                format!(
                    "the certificate of the broker at {broker} ({}) did not verify: {detail}",
                    self.cluster()
                ),
                format!("{t}.tls.ca_file"),
                if self.verify_hostname {
                    format!(
                        "to the CA that signed the brokers' certificates (it is {}); {t}.tls.verify_hostname is true, so the certificate must also name {host}, the address in {t}.brokers",
                        self.ca_file
                    )
                } else {
                    format!(
                        "to the CA that signed the brokers' certificates (it is {})",
                        self.ca_file
                    )
                },
            ),
            SecurityFailure::ClientCertificate => (
                format!(
                    "the broker at {broker} ({}) refused this client's certificate: {detail}",
                    self.cluster()
                ),
                format!("{t}.tls.cert_file"),
                format!(
                    "and key_file to a certificate from a CA the cluster trusts (cert_file is {})",
                    self.cert_file.as_deref().unwrap_or("not set")
                ),
            ),
            SecurityFailure::TlsRequired => (
                format!(
                    "the listener at {broker} ({}) speaks TLS, but this client connects without TLS (security.protocol={}): {detail}",
                    self.cluster(),
                    self.protocol
                ),
                format!("{t}.tls"),
                format!(
                    "(a [{t}.tls] section, with the brokers' CA as ca_file) to connect with TLS, or {t}.brokers to a listener without TLS"
                ),
            ),
        };
        SecurityError {
            failure,
            site: self.site.clone(),
            broker,
            problem,
            setting,
            fix,
        }
    }
}

/// The broker a plaintext client's connection log line says failed while it asked for the API
/// versions, its first request: a TLS listener closes the connection there (or answers with
/// bytes that are no Kafka response). Whether the listener speaks TLS is then asked directly.
fn failed_at_first_request(fac: &str, msg: &str) -> Option<String> {
    (fac == "FAIL" && msg.contains("APIVERSION_QUERY")).then(|| split_reason(msg).0)
}

/// Whether the listener at `addr` speaks TLS: a TLS handshake (native-tls, with no certificate
/// checks: only the protocol matters here) that completes, or that the server ends with a TLS
/// alert, says yes; a listener that closes or answers something else says no. `None` if it
/// cannot be reached within `timeout`.
fn speaks_tls(addr: &str, timeout: Duration) -> Option<bool> {
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let s = TcpStream::connect_timeout(&sock, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let connector = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .danger_accept_invalid_hostnames(true)
        .build()
        .ok()?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    Some(match connector.connect(host, s) {
        Ok(_) => true,
        Err(native_tls::HandshakeError::Failure(e)) => handshake_failure_is_tls(&e.to_string()),
        Err(native_tls::HandshakeError::WouldBlock(_)) => return None,
    })
}

/// Whether a failed handshake still met a TLS server: it sent an alert (it refused something of
/// ours), rather than closing or answering in another protocol.
fn handshake_failure_is_tls(error: &str) -> bool {
    error.contains("alert")
}

/// The context of the clients the helpers here create: it records the first
/// [`SecurityError`] its client meets, from librdkafka's error callback and, for a plaintext
/// client, from its connection log (a listener that fails its first request is asked whether
/// it speaks TLS). Every error and log line still goes to the log as with the default
/// context.
pub struct Guard {
    link: Link,
    failure: watch::Sender<Option<SecurityError>>,
    /// Listeners already asked whether they speak TLS.
    probed: Mutex<BTreeSet<String>>,
}

impl Guard {
    pub fn new(cfg: &ClientConfig) -> Guard {
        Guard {
            link: Link::of(cfg),
            failure: watch::Sender::new(None),
            probed: Mutex::new(BTreeSet::new()),
        }
    }

    /// The first security failure the client met.
    pub fn failure(&self) -> Option<SecurityError> {
        self.failure.borrow().clone()
    }

    fn record(&self, e: SecurityError) {
        self.failure.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(e);
            }
            first
        });
    }

    /// Waits until the client meets a security failure.
    async fn failed(&self) -> SecurityError {
        let mut rx = self.failure.subscribe();
        let failure = match rx.wait_for(Option::is_some).await {
            Ok(f) => f.clone(),
            Err(_) => None,
        };
        match failure {
            Some(f) => f,
            None => std::future::pending().await,
        }
    }
}

impl ClientContext for Guard {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        DefaultClientContext.log(level, fac, log_message);
        if self.link.tls() || self.failure().is_some() {
            return;
        }
        let Some(broker) = failed_at_first_request(fac, log_message) else {
            return;
        };
        if !self
            .probed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(broker.clone())
        {
            return;
        }
        if speaks_tls(&broker, Duration::from_secs(2)) == Some(true) {
            let detail = "it answers a TLS ClientHello";
            self.record(
                self.link
                    .error(SecurityFailure::TlsRequired, broker, detail),
            );
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        DefaultClientContext.error(error, reason);
        if let Some(e) = code.and_then(|c| self.link.classify(c, reason)) {
            self.record(e);
        }
    }
}

impl ConsumerContext for Guard {}

/// `cfg` for a guarded client: librdkafka logs connection failures at level info, which the
/// guard reads whatever the process's log level (the default context still filters what it
/// prints).
fn guarded_config(cfg: &ClientConfig) -> ClientConfig {
    let mut c = cfg.clone();
    if (c.log_level as i32) < RDKafkaLogLevel::Info as i32 {
        c.set_log_level(RDKafkaLogLevel::Info);
    }
    c
}

fn guarded_consumer(cfg: &ClientConfig) -> KafkaResult<BaseConsumer<Guard>> {
    guarded_config(cfg).create_with_context(Guard::new(cfg))
}

fn guarded_admin(cfg: &ClientConfig) -> KafkaResult<AdminClient<Guard>> {
    guarded_config(cfg).create_with_context(Guard::new(cfg))
}

/// How long one attempt of a [`guarded`] call waits before the guard looks at what its client
/// met.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Errors that say no broker answered (yet).
fn no_broker_answered(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::RequestTimedOut
        )
    )
}

/// Runs `call`, a blocking call of `c`'s taking a timeout, for at most `timeout` in attempts of
/// [`ATTEMPT`]. Between attempts it serves the client's events (librdkafka calls the error and
/// log callbacks only then), so that a security failure ends the call at once, as the
/// [`SecurityError`], instead of at the timeout. It tries again only while no broker answered.
fn guarded<T>(
    c: &BaseConsumer<Guard>,
    timeout: Duration,
    mut call: impl FnMut(Duration) -> KafkaResult<T>,
) -> KafkaResult<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let started = Instant::now();
        let e = match call(deadline.saturating_duration_since(started).min(ATTEMPT)) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        // A log event polls as None; an empty 10 ms is the end of the queue.
        while c.poll(Duration::from_millis(10)).is_some() {}
        if let Some(f) = c.context().failure() {
            return Err(f.into());
        }
        if !no_broker_answered(&e) || Instant::now() >= deadline {
            return Err(e);
        }
        if started.elapsed() < ATTEMPT / 2 {
            std::thread::sleep(ATTEMPT / 10);
        }
    }
}

/// Awaits `call`, an admin request of a client with a [`Guard`], or the guard's first security
/// failure, whichever comes first.
async fn guarded_async<T>(
    guard: &Guard,
    call: impl std::future::Future<Output = KafkaResult<T>>,
) -> KafkaResult<T> {
    tokio::select! {
        biased;
        r = call => r,
        f = guard.failed() => Err(f.into()),
    }
}

/// Creates `topic` with one partition if it does not exist, and checks that an existing one
/// has exactly one: the changelog is the binlog, in order. A topic created here gets
///
/// - `max.message.bytes = max_message_bytes`, so that it takes every record its writer may send
///   (a cluster's default, `message.max.bytes`, is about 1 MiB);
/// - `retention.ms = -1`: records are never deleted by age. Kafka's default (7 days) counts from
///   each record's own timestamp, and the mirror keeps the source's timestamps, so a backlog
///   mirrored late would be deleted on arrival, before apply read it. The topic is the only
///   copy of the changes and of the pipeline's position; an operator who must bound its size
///   sets a retention longer than any outage of apply (README.md, "Running against your own
///   Kafka").
///
/// An existing topic keeps its own settings (the writers read its limit with
/// [`topic_max_message_bytes`]).
pub async fn ensure_changelog_topic(
    cfg: &ClientConfig,
    topic: &str,
    max_message_bytes: usize,
    timeout: Duration,
) -> Result<(), KafkaError> {
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
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
        .set("max.message.bytes", &limit)
        .set("retention.ms", "-1");
    let admin = guarded_admin(cfg)?;
    let res = guarded_async(
        admin.inner().context(),
        admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(timeout)),
        ),
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
    let admin = guarded_admin(cfg)?;
    let res = guarded_async(
        admin.inner().context(),
        admin.describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(timeout)),
        ),
    )
    .await?;
    let bad = |why: String| {
        KafkaError::AdminOpCreation(format!("reading max.message.bytes of topic {topic}: {why}"))
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

/// Number of partitions of `topic`, or `None` if it does not exist. A [`SecurityError`] if the
/// cluster refuses the client.
pub fn topic_partitions(
    cfg: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>, KafkaError> {
    let c = guarded_consumer(cfg)?;
    let md = guarded(&c, timeout, |t| c.fetch_metadata(Some(topic), t))?;
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
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<(i64, i64), KafkaError> {
    consumer.fetch_watermarks(topic, 0, timeout)
}

/// Low and high watermarks of partition 0 through a client of its own from `cfg`; a
/// [`SecurityError`] if the cluster refuses the client.
pub fn fetch_watermarks(
    cfg: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<(i64, i64), KafkaError> {
    let c = guarded_consumer(cfg)?;
    guarded(&c, timeout, |t| watermarks(&c, topic, t))
}

/// Reads the record at `offset` of partition 0, waiting up to `timeout`.
pub fn read_at<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
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
pub fn read_last<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
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
/// where to resume. A [`SecurityError`] if the cluster refuses the client.
pub fn read_last_stable(
    cfg: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<FetchedRecord>, KafkaError> {
    let consumer = guarded_consumer(cfg)?;
    let mut high = guarded(&consumer, timeout, |t| watermarks(&consumer, topic, t))?.1;
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

    #[test]
    fn a_cluster_that_refuses_the_client_is_fatal_and_named_by_its_setting() {
        let refused = refusal_error(SecurityFailure::SaslCredentials, "sites.sf.sasl.password");
        assert!(!is_transient(&refused));
        assert!(
            refused
                .to_string()
                .contains("; set sites.sf.sasl.password as"),
            "{refused}"
        );
        let down = KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown);
        assert!(is_transient(&down));
    }

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

    const SASL_REFUSED: &str = "sasl_ssl://127.0.0.1:19095/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 350ms in state AUTH_REQ)";
    const MECHANISM_REFUSED: &str = "sasl_ssl://127.0.0.1:19095/bootstrap: SASL SCRAM-SHA-256 mechanism handshake failed: Broker: Unsupported SASL mechanism: broker's supported mechanisms: SCRAM-SHA-512 (after 301ms in state AUTH_HANDSHAKE)";
    const NOT_VERIFIED: &str = "ssl://127.0.0.1:19094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly configured or root CA certificates are installed (install ca-certificates package) (after 17ms in state SSL_HANDSHAKE)";
    const NO_CLIENT_CERT: &str = "ssl://127.0.0.1:19094/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42 (after 1ms in state APIVERSION_QUERY)";
    const PLAINTEXT_CLOSED: &str = "[thrd:127.0.0.1:19094/bootstrap]: 127.0.0.1:19094/bootstrap: Disconnected: connection closed by peer: receive 0 after POLLIN (after 2ms in state APIVERSION_QUERY)";

    /// The link of a client built by base_config for `site` from `extra` TOML.
    fn link(site: &str, brokers: &str, extra: &str) -> Link {
        let c = SiteConfig::from_toml(&format!(
            "site = \"{site}\"\n[database]\nuser = \"u\"\n[sites.{site}]\nbrokers = \"{brokers}\"\nregistry = {{ url = \"http://r\" }}\n{extra}"
        ))
        .unwrap();
        Link::of(&base_config(site, c.local(), "t").unwrap())
    }

    #[test]
    fn librdkafka_reasons_split_into_broker_and_what_happened() {
        assert_eq!(
            split_reason(SASL_REFUSED),
            ("127.0.0.1:19095".to_owned(), "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512".to_owned())
        );
        // librdkafka's advice names its own properties: left out.
        assert_eq!(
            split_reason(NOT_VERIFIED).1,
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"
        );
        // Log lines start with the thread.
        assert_eq!(split_reason(PLAINTEXT_CLOSED).0, "127.0.0.1:19094");
        assert_eq!(split_reason("1/1 brokers are down").0, "");
    }

    #[test]
    fn security_failures_name_the_site_and_the_setting() {
        use RDKafkaErrorCode as C;
        let sasl = link(
            "euw",
            "sasl.euw.example:9095",
            "[sites.euw.tls]\nca_file = \"/ca.pem\"\n[sites.euw.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"continuum\"\npassword = \"MARKER-secret\"\n",
        );
        assert_eq!(sasl.site.as_deref(), Some("euw"));
        assert_eq!(sasl.protocol, "sasl_ssl");
        let e = sasl.classify(C::Authentication, SASL_REFUSED).unwrap();
        assert_eq!(e.failure, SecurityFailure::SaslCredentials);
        assert_eq!(e.setting, "sites.euw.sasl.password");
        assert_eq!(e.broker, "127.0.0.1:19095");
        let text = e.to_string();
        for part in [
            "the euw cluster refused the SASL login of user \"continuum\" with SCRAM-SHA-512",
            "invalid credentials",
            "set sites.euw.sasl.password (password_file, password or CONTINUUM_EUW_SASL_PASSWORD)",
            "sites.euw.sasl.username",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("MARKER"), "{text}");
        // Carried as a client configuration error: fatal, and the same words.
        let k: KafkaError = e.clone().into();
        assert!(!is_transient(&k));
        assert_eq!(k.to_string(), format!("Client config error: {e}"));

        let sha256 = link(
            "euw",
            "sasl.euw.example:9095",
            "[sites.euw.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"continuum\"\npassword = \"x\"\n",
        );
        let m = sha256
            .classify(C::Authentication, MECHANISM_REFUSED)
            .unwrap();
        assert_eq!(m.failure, SecurityFailure::SaslMechanism);
        assert_eq!(m.setting, "sites.euw.sasl.mechanism");
        assert!(
            m.to_string().ends_with(
                "set sites.euw.sasl.mechanism to one of SCRAM-SHA-512 (it is SCRAM-SHA-256)"
            ),
            "{m}"
        );

        let tls = link(
            "euw",
            "tls.euw.example:9094",
            "[sites.euw.tls]\nca_file = \"/etc/ca.pem\"\n",
        );
        let v = tls.classify(C::SSL, NOT_VERIFIED).unwrap();
        assert_eq!(v.failure, SecurityFailure::UntrustedCertificate);
        assert_eq!(v.setting, "sites.euw.tls.ca_file");
        let text = v.to_string();
        assert!(text.contains("(it is /etc/ca.pem)"), "{text}");
        assert!(text.contains("must also name 127.0.0.1"), "{text}");
        assert!(!text.contains("ssl.ca.location"), "{text}");
        let c = tls
            .classify(C::BrokerTransportFailure, NO_CLIENT_CERT)
            .unwrap();
        assert_eq!(c.failure, SecurityFailure::ClientCertificate);
        assert_eq!(c.setting, "sites.euw.tls.cert_file");
        assert!(c.to_string().contains("(cert_file is not set)"), "{c}");

        // What a broker that is down, or restarting, says: not a security failure.
        for (code, reason) in [
            (C::BrokerTransportFailure, "ssl://127.0.0.1:19094/bootstrap: Connect to ipv4#127.0.0.1:19094 failed: Connection refused (after 0ms in state CONNECT)"),
            (C::BrokerTransportFailure, "ssl://127.0.0.1:19094/bootstrap: SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT broker listener? (after 4ms in state SSL_HANDSHAKE)"),
            (C::SSL, "ssl://127.0.0.1:19094/1: SSL handshake failed: error:0A000126:SSL routines::unexpected eof while reading (after 3ms in state SSL_HANDSHAKE)"),
            (C::AllBrokersDown, "1/1 brokers are down"),
        ] {
            assert_eq!(tls.classify(code, reason), None, "{reason}");
        }
        // A plaintext client does not read TLS alerts.
        let plain = link("euw", "plain.euw.example:9092", "");
        assert_eq!(
            plain.classify(C::BrokerTransportFailure, NO_CLIENT_CERT),
            None
        );
        let t = plain.error(SecurityFailure::TlsRequired, "127.0.0.1:19094".into(), "x");
        assert!(
            t.to_string().contains("security.protocol=plaintext") && t.setting == "sites.euw.tls",
            "{t}"
        );
    }

    #[test]
    fn a_site_is_named_only_when_one_uses_the_brokers() {
        let _ = link("one", "shared.example:9092", "");
        let _ = link("two", "shared.example:9092", "");
        let l = link("one", "shared.example:9092", "");
        assert_eq!(l.site, None);
        let e = l.error(SecurityFailure::SaslCredentials, "b:1".into(), "x");
        assert_eq!(e.setting, "sites.<site>.sasl.password");
        assert_eq!(Link::of(&ClientConfig::new()).site, None);
    }

    #[test]
    fn a_plaintext_connection_that_fails_at_the_first_request_is_a_suspect() {
        assert_eq!(
            failed_at_first_request("FAIL", PLAINTEXT_CLOSED).as_deref(),
            Some("127.0.0.1:19094")
        );
        // Refused connections and failures later in a connection's life are not.
        assert_eq!(failed_at_first_request("FAIL", "[thrd:b:1/bootstrap]: b:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)"), None);
        assert_eq!(
            failed_at_first_request(
                "FAIL",
                "[thrd:b:1/1]: b:1/1: Disconnected (after 60000ms in state UP)"
            ),
            None
        );
        assert_eq!(failed_at_first_request("CONFWARN", PLAINTEXT_CLOSED), None);
    }

    #[test]
    fn a_handshake_ended_by_an_alert_met_a_tls_server() {
        assert!(handshake_failure_is_tls(
            "error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required"
        ));
        assert!(!handshake_failure_is_tls(
            "error:0A000126:SSL routines::unexpected eof while reading"
        ));
        assert!(!handshake_failure_is_tls(
            "error:0A00010B:SSL routines:ssl3_get_record:wrong version number"
        ));
    }

    #[test]
    fn refusals_are_not_transient() {
        use RDKafkaErrorCode as C;
        for code in [
            C::Authentication,
            C::SSL,
            C::SaslAuthenticationFailed,
            C::TopicAuthorizationFailed,
        ] {
            assert!(!is_transient(&KafkaError::MetadataFetch(code)), "{code:?}");
            assert!(!is_transient(&KafkaError::Global(code)), "{code:?}");
        }
        assert!(is_transient(&KafkaError::MetadataFetch(
            C::BrokerTransportFailure
        )));
        assert!(is_transient(&KafkaError::Global(C::AllBrokersDown)));
        assert!(!is_transient(&KafkaError::ClientCreation(
            "ssl.key.location failed".into()
        )));
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
