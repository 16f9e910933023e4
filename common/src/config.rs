//! Site configuration, shared by both binaries: one TOML file per site (see `config/*.toml`),
//! then environment variables, then command-line flags, each overriding the one before. The
//! variables are declared once, in [`ENV_OVERRIDES`]: figment layers them over the file
//! ([`SiteConfig::apply_env`]), and README.md's table of them is checked against it.
//!
//! Every struct refuses unknown keys, durations are written as `"1s"`, `"250ms"`, and every
//! default is documented on its field. Secrets are [`Secret`]s: never printed, and never needed
//! in the file (use `*_file`, or the environment variables listed in [`ENV_OVERRIDES`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, SecretRef, UnreadableSecret};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
}

impl From<UnreadableSecret> for ConfigError {
    fn from(e: UnreadableSecret) -> Self {
        ConfigError::Invalid {
            reason: format!("cannot read {}: {}", e.path.display(), e.source),
            setting: e.setting,
        }
    }
}

fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        reason: reason.into(),
    }
}

/// The whole configuration of one site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// This site's name. Its changelog topic is `<site>.cdc` unless `sites.<site>.topic` says
    /// otherwise.
    pub site: String,
    /// This site's MariaDB: the source the producer captures, and the target apply writes to.
    pub database: DatabaseConfig,
    /// Every site's Kafka cluster and schema registry, this site's included.
    pub sites: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub producer: ProducerConfig,
    #[serde(default)]
    pub consumer: ConsumerConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// The file as data, for [`SiteConfig::apply_env`] to layer the environment over.
    #[serde(skip)]
    file: FileLayer,
}

/// A config file's data. Its `Debug` shows none of it: it may hold secrets.
#[derive(Clone, Default)]
struct FileLayer(Option<std::sync::Arc<figment::value::Dict>>);

impl std::fmt::Debug for FileLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileLayer")
    }
}

fn default_db_host() -> String {
    "127.0.0.1".into()
}
fn default_db_port() -> u16 {
    3306
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Default `127.0.0.1`.
    #[serde(default = "default_db_host")]
    pub host: String,
    /// Default `3306`.
    #[serde(default = "default_db_port")]
    pub port: u16,
    pub user: String,
    /// Prefer `password_file` or the environment.
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// TLS to the server. Absent: plaintext.
    pub tls: Option<DbTlsConfig>,
    /// Default `10s`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl DatabaseConfig {
    /// A database given only by environment variables: defaults for everything else.
    pub fn remote(user: &str) -> DatabaseConfig {
        DatabaseConfig {
            host: default_db_host(),
            port: default_db_port(),
            user: user.to_owned(),
            password: None,
            password_file: None,
            tls: None,
            connect_timeout: default_connect_timeout(),
        }
    }

    /// Connects with TLS, trusting `ca`; keeps `verify_hostname` if TLS was configured already
    /// (default: verify).
    pub fn set_tls_ca(&mut self, ca: impl Into<PathBuf>) {
        match &mut self.tls {
            Some(t) => t.ca_file = ca.into(),
            None => {
                self.tls = Some(DbTlsConfig {
                    ca_file: ca.into(),
                    verify_hostname: true,
                })
            }
        }
    }

    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        SecretRef {
            value: self.password.clone(),
            file: self.password_file.clone(),
        }
        .resolve("database.password_file")
        .map_err(ConfigError::from)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbTlsConfig {
    /// PEM file of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// Check that the server's certificate names `database.host`. Default `true`.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

/// One site's Kafka cluster and schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// The site's changelog topic. Default `<site>.cdc`.
    pub topic: Option<String>,
    pub registry: RegistryConfig,
    pub tls: Option<KafkaTlsConfig>,
    pub sasl: Option<SaslConfig>,
    /// Raw librdkafka settings, for what has no typed setting. Keys that a typed setting
    /// controls are refused (see [`RESERVED_KAFKA_KEYS`]). Values of keys that may hold a
    /// secret (`ssl.keystore.password`, `sasl.oauthbearer.client.secret`, ...) never show in
    /// debug output.
    #[serde(default)]
    pub kafka_options: KafkaOptions,
    /// That site's MariaDB, for the operator verbs that compare or inspect it from here
    /// (`verify`, `orphans`, `promote`). Optional; this site's own database is `[database]`.
    pub database: Option<DatabaseConfig>,
}

/// Raw librdkafka settings (`kafka_options`): a map whose `Debug` redacts the values of keys
/// that may hold a secret, since librdkafka has secrets without a typed setting here.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaOptions(pub BTreeMap<String, String>);

impl KafkaOptions {
    /// Whether librdkafka key `key` may hold a secret (a password, a client secret, a private
    /// key inline, a config string with credentials).
    pub fn is_sensitive(key: &str) -> bool {
        let k = key.to_ascii_lowercase();
        [
            "password",
            "secret",
            "passphrase",
            ".pem",
            "private.key",
            "oauthbearer.config",
            "credential",
            "token",
        ]
        .iter()
        .any(|s| k.contains(s))
    }
}

impl std::ops::Deref for KafkaOptions {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KafkaOptions {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a KafkaOptions {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                (
                    k,
                    if Self::is_sensitive(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            }))
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// PEM CA for an `https://` registry.
    pub ca_file: Option<PathBuf>,
    /// Default `10s`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl RegistryConfig {
    /// The registry client's settings: URL, basic auth (the password from `password` or
    /// `password_file`), CA. `setting` names this section in errors, e.g. `sites.sf.registry`.
    pub fn settings(
        &self,
        setting: &str,
    ) -> Result<continuum_schemas::RegistrySettings, ConfigError> {
        let password = SecretRef {
            value: self.password.clone(),
            file: self.password_file.clone(),
        }
        .resolve(&format!("{setting}.password_file"))?;
        let ca_pem = match &self.ca_file {
            Some(f) => Some(std::fs::read(f).map_err(|e| ConfigError::Invalid {
                setting: format!("{setting}.ca_file"),
                reason: format!("cannot read {}: {e}", f.display()),
            })?),
            None => None,
        };
        Ok(continuum_schemas::RegistrySettings {
            url: self.url.clone(),
            basic_auth: self.username.clone().map(|u| {
                (
                    u,
                    password.map(|p| p.expose().to_owned()).unwrap_or_default(),
                )
            }),
            ca_pem,
            timeout: Some(self.timeout),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTlsConfig {
    /// PEM CA that signed the brokers' certificates.
    pub ca_file: PathBuf,
    /// Client certificate (PEM), for brokers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub key_password: Option<Secret>,
    pub key_password_file: Option<PathBuf>,
    /// Check that broker certificates name the broker host. Default `true`.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
}

/// What to do with captured tables that have no primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoPrimaryKey {
    /// Capture them (default): a row is identified by all its values, as MariaDB's own
    /// replication does, and apply changes one matching row per delete or update. Exactly once
    /// like every table; a `replay` over such a table re-inserts rows (there is no key to make
    /// it idempotent).
    #[default]
    Replicate,
    /// Refuse to start, listing the tables; a table without a key created while streaming stops
    /// the producer, naming it. Add a key or exclude them.
    Refuse,
    /// Leave them out of the capture, listing them in the log at start. Their rows are never
    /// written, so the replica's copy of them is not maintained.
    Exclude,
}

/// How the producer fills an empty topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FirstSnapshot {
    /// `incremental` when every captured table can be snapshotted so, and `consistent` when one
    /// cannot (the log names those and why). Default.
    #[default]
    Auto,
    /// One consistent snapshot of every captured table: apply empties each table at its START
    /// and loads it; any table, with or without a primary key. The source holds one transaction
    /// open for the whole snapshot, and a crash part-way starts it again.
    Consistent,
    /// Stream from the source's current position, every captured table defined there, and
    /// snapshot every captured table incrementally (docs/snapshot.md): no long transaction on
    /// the source, resumable at the next chunk, and the replica's rows are replaced and cleaned
    /// in place, not emptied first. Every captured table needs a primary key of a type that
    /// bounds key ranges, and InnoDB; the producer refuses to start otherwise, naming them.
    Incremental,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Replica `server_id` the producer registers with; must differ from every server and
    /// replica in the topology. Default `4001`.
    pub server_id: u32,
    /// `db.table` patterns to capture (`*` matches any run of characters). Default: every table
    /// of every non-system database. A change that captures a table that already exists
    /// snapshots it incrementally at the next start (docs/snapshot.md).
    pub include: Vec<String>,
    /// `db.table` patterns to leave out, applied after `include`. Default none.
    pub exclude: Vec<String>,
    /// `replicate` (default), `refuse` or `exclude`: see [`NoPrimaryKey`].
    pub tables_without_primary_key: NoPrimaryKey,
    /// Most records in one produce batch (librdkafka `batch.num.messages`). Default 10000.
    pub batch_records: usize,
    /// Most bytes in one produce batch (librdkafka `batch.size`). Default 1 MiB.
    pub batch_bytes: usize,
    /// How long a batch may wait to fill (librdkafka `linger.ms`). Default `5ms`.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Most records held in memory, queued or in flight (librdkafka
    /// `queue.buffering.max.messages`; at least `batch_records`). When the broker is slower than
    /// the source, the producer waits instead of buffering: this bounds its memory. Default 20000.
    pub queue_records: usize,
    /// Largest record the producer will send (librdkafka `message.max.bytes`); a larger one
    /// stops the producer with an error naming the table and key. Default 64 MiB.
    pub max_record_bytes: usize,
    /// A heartbeat is written when nothing else was for this long. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Most rows read per snapshot query. Default 10000.
    pub snapshot_chunk_rows: usize,
    /// Most bytes of rows a snapshot query reads before the producer writes them: a chunk ends
    /// at `snapshot_chunk_rows` rows or at this many bytes, whichever comes first (at least one
    /// row), so a table of wide BLOBs is read a few rows at a time. Default 32 MiB.
    pub snapshot_chunk_bytes: usize,
    /// How an empty topic is filled: `auto` (default), `incremental` or `consistent`
    /// ([`FirstSnapshot`]).
    pub first_snapshot: FirstSnapshot,
    /// Upper bound of the reconnect backoff. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Where `/metrics` and `/health` are served. Default `127.0.0.1:9101`.
    pub metrics_listen: SocketAddr,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            server_id: 4001,
            include: vec!["*.*".into()],
            exclude: Vec::new(),
            tables_without_primary_key: NoPrimaryKey::Replicate,
            batch_records: 10_000,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            queue_records: 20_000,
            max_record_bytes: 64 << 20,
            heartbeat_interval: Duration::from_secs(1),
            snapshot_chunk_rows: 10_000,
            snapshot_chunk_bytes: 32 << 20,
            first_snapshot: FirstSnapshot::Auto,
            max_retry_delay: Duration::from_secs(10),
            metrics_listen: "127.0.0.1:9101".parse().unwrap(),
        }
    }
}

/// What apply does with a schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DdlPolicy {
    /// Run it on the replica, in order (default).
    #[default]
    Apply,
    /// Log it and go on: for replicas whose schema is managed separately.
    Skip,
    /// Stop apply before it, with the statement in the error.
    Stop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplyConfig {
    /// Whose changelog to apply. Default: the other site (there must be exactly one).
    pub source_site: Option<String>,
    /// Which site's cluster to read that changelog from. Default: this site's (the mirrored
    /// copy). Switching needs no offset translation: apply finds its place by GTID.
    pub read_from: Option<String>,
    /// Limits of one MariaDB transaction; whole source transactions only. Defaults 5000 rows,
    /// 500 transactions, 8 MiB of records, `100ms`. `batch_wait` is how long a batch may stay
    /// open after its first record while more records are ready to be read; a batch with
    /// nothing queued behind it commits at once, since waiting would only add lag. Larger
    /// groups were measured and not kept: 20000/2000/32 MiB made apply alone about 10% faster
    /// in interleaved runs over one topic (59.5-66.7 s against 70.6-71.8 s), but in `make
    /// bench` (1M rows) the drain ratios did not move (apply alone 0.92x native either way),
    /// `consumer run` peaked at 130 MiB instead of 120 MiB, and the p99 lag at 50% load rose
    /// from 615 to 758 ms.
    pub batch_rows: usize,
    pub batch_transactions: usize,
    pub batch_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Default `apply`.
    pub ddl: DdlPolicy,
    /// Connections apply writes through, 1 to 16. Default 2. With more than one, a batch's
    /// statements run while the batches before it commit, except for rows those batches may
    /// touch (same primary-key value, or a table counted whole), which wait for their commits;
    /// commits stay one at a time, in source order. The sessions then run in READ COMMITTED
    /// (the replica must not log `binlog_format=STATEMENT`). 1 sends nothing of a batch before
    /// the one before it has committed.
    pub connections: usize,
    /// With more than one connection: how long a statement of apply waits for a row lock
    /// (`innodb_lock_wait_timeout` of its sessions, whole seconds) before its batches are
    /// rolled back and applied again one at a time. Default `1s`: such a wait is almost always
    /// two of apply's own batches meeting on a gap lock (see docs/apply.md).
    #[serde(with = "humantime_serde")]
    pub lock_wait_timeout: Duration,
    /// Upper bound of retry backoff. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// `consumer run`: after apply stops at a record it cannot apply (the replica refuses it,
    /// a schema change fails), how long it waits before it tries that record again. The mirror
    /// goes on meanwhile, and the error shows in `status`, `/health` and
    /// `continuum_apply_stalled`. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub retry_failed_after: Duration,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            source_site: None,
            read_from: None,
            batch_rows: 5000,
            batch_transactions: 500,
            batch_bytes: 8 << 20,
            batch_wait: Duration::from_millis(100),
            ddl: DdlPolicy::Apply,
            connections: 2,
            lock_wait_timeout: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(10),
            retry_failed_after: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Site whose topic is copied. Default: the other site.
    pub from: Option<String>,
    /// Site whose cluster receives the copy. Default: this site.
    pub to: Option<String>,
    /// Upper bound of retry backoff. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            from: None,
            to: None,
            max_retry_delay: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    pub apply: ApplyConfig,
    pub mirror: MirrorConfig,
    /// Where `/metrics` and `/health` are served. Default `127.0.0.1:9102`.
    pub metrics_listen: SocketAddr,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            apply: ApplyConfig::default(),
            mirror: MirrorConfig::default(),
            metrics_listen: "127.0.0.1:9102".parse().unwrap(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` (default) or `info,continuum_producer=debug`.
    pub filter: String,
}

/// The `--log-format` and `--log` flags of both binaries (flattened into their command lines).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `info,continuum_consumer=debug` (overrides `log.filter`).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
}

impl LogArgs {
    /// The flags given override `log`.
    pub fn apply_to(&self, log: &mut LogConfig) {
        if let Some(f) = self.log_format {
            log.format = f;
        }
        if let Some(f) = &self.log {
            log.filter = f.clone();
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// librdkafka keys that typed settings own; `kafka_options` may not set them.
pub const RESERVED_KAFKA_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "security.protocol",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "enable.ssl.certificate.verification",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "transactional.id",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "group.id",
    "batch.num.messages",
    "batch.size",
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.messages",
    "message.max.bytes",
    "retries",
    "message.send.max.retries",
];

/// How a variable's value becomes a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvValue {
    /// The text as given; the setting's own type parses it (a port as a number, an address as
    /// `host:port`, `text`/`json` as a log format), and an error names the variable, the
    /// expected and the given value.
    Text,
    /// Comma-separated, each item trimmed, empty items dropped: a list setting.
    List,
}

/// When a variable applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvWhen {
    Always,
    /// Only where this section is configured (in the file, or by a variable above it in
    /// [`ENV_OVERRIDES`]); set without it, an error: a secret alone does not configure it.
    Needs(&'static str),
    /// Only where this section is configured; ignored otherwise.
    If(&'static str),
}

/// One environment variable: the name, the setting it overrides, and how. `<SITE>` in a name is
/// each site name of the file in upper case, `-` as `_`; `<site>` in a key is that site.
#[derive(Debug, Clone, Copy)]
pub struct EnvOverride {
    pub var: &'static str,
    pub key: &'static str,
    pub value: EnvValue,
    pub when: EnvWhen,
    /// A setting the variable unsets as well (an inline password, when a password file is
    /// given).
    pub unsets: Option<&'static str>,
    /// A setting filled in when the variable creates its section: (key, value).
    pub creates: Option<(&'static str, &'static str)>,
}

const fn var(var: &'static str, key: &'static str) -> EnvOverride {
    EnvOverride {
        var,
        key,
        value: EnvValue::Text,
        when: EnvWhen::Always,
        unsets: None,
        creates: None,
    }
}

impl EnvOverride {
    const fn list(self) -> Self {
        EnvOverride {
            value: EnvValue::List,
            ..self
        }
    }
    const fn when(self, when: EnvWhen) -> Self {
        EnvOverride { when, ..self }
    }
    const fn unsets(self, key: &'static str) -> Self {
        EnvOverride {
            unsets: Some(key),
            ..self
        }
    }
    /// A site database made from variables alone has user `continuum` unless one is given.
    const fn creates_site_db(self) -> Self {
        EnvOverride {
            creates: Some(("sites.<site>.database.user", "continuum")),
            ..self
        }
    }

    /// The README's row for this variable (checked by a test against README.md).
    pub fn doc_row(&self) -> String {
        let mut notes = Vec::new();
        if self.value == EnvValue::List {
            notes.push("comma-separated".to_owned());
        }
        if let Some(k) = self.unsets {
            notes.push(format!("unsets `{k}`"));
        }
        match self.when {
            EnvWhen::Always => {}
            EnvWhen::Needs(s) => notes.push(format!("needs `[{s}]` configured")),
            EnvWhen::If(s) => notes.push(format!("only where `[{s}]` is configured")),
        }
        if let Some((k, v)) = self.creates {
            let (section, field) = k.rsplit_once('.').unwrap_or(("", k));
            notes.push(format!(
                "creates `[{section}]` if absent (`{field}` default `{v}`)"
            ));
        }
        format!("| `{}` | `{}` | {} |", self.var, self.key, notes.join("; ")).replace("|  |", "| |")
    }
}

/// Every environment variable that overrides the file, in the order they apply: the one
/// declaration that [`SiteConfig::apply_env`] layers and README.md's table documents.
#[rustfmt::skip]
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    var("CONTINUUM_SITE", "site"),
    var("CONTINUUM_DB_HOST", "database.host"),
    var("CONTINUUM_DB_PORT", "database.port"),
    var("CONTINUUM_DB_USER", "database.user"),
    var("CONTINUUM_DB_PASSWORD", "database.password"),
    var("CONTINUUM_DB_PASSWORD_FILE", "database.password_file").unsets("database.password"),
    var("CONTINUUM_DB_TLS_CA_FILE", "database.tls.ca_file"),
    var("CONTINUUM_<SITE>_BROKERS", "sites.<site>.brokers"),
    var("CONTINUUM_<SITE>_TOPIC", "sites.<site>.topic"),
    var("CONTINUUM_<SITE>_REGISTRY_URL", "sites.<site>.registry.url"),
    var("CONTINUUM_<SITE>_REGISTRY_PASSWORD", "sites.<site>.registry.password"),
    var("CONTINUUM_<SITE>_SASL_PASSWORD", "sites.<site>.sasl.password").when(EnvWhen::Needs("sites.<site>.sasl")),
    var("CONTINUUM_<SITE>_TLS_KEY_PASSWORD", "sites.<site>.tls.key_password").when(EnvWhen::Needs("sites.<site>.tls")),
    var("CONTINUUM_<SITE>_DB_HOST", "sites.<site>.database.host").creates_site_db(),
    var("CONTINUUM_<SITE>_DB_PORT", "sites.<site>.database.port").creates_site_db(),
    var("CONTINUUM_<SITE>_DB_USER", "sites.<site>.database.user").creates_site_db(),
    var("CONTINUUM_<SITE>_DB_PASSWORD", "sites.<site>.database.password").creates_site_db(),
    // A CA alone does not say where that database is.
    var("CONTINUUM_<SITE>_DB_TLS_CA_FILE", "sites.<site>.database.tls.ca_file").when(EnvWhen::If("sites.<site>.database")),
    var("CONTINUUM_PRODUCER_INCLUDE", "producer.include").list(),
    var("CONTINUUM_PRODUCER_EXCLUDE", "producer.exclude").list(),
    var("CONTINUUM_PRODUCER_SERVER_ID", "producer.server_id"),
    var("CONTINUUM_PRODUCER_FIRST_SNAPSHOT", "producer.first_snapshot"),
    var("CONTINUUM_PRODUCER_METRICS_LISTEN", "producer.metrics_listen"),
    var("CONTINUUM_CONSUMER_METRICS_LISTEN", "consumer.metrics_listen"),
    var("CONTINUUM_APPLY_CONNECTIONS", "consumer.apply.connections"),
    var("CONTINUUM_LOG_FORMAT", "log.format"),
    var("CONTINUUM_LOG", "log.filter"),
];

/// One layer of the configuration for figment: the file, or one variable. Named by where it
/// came from, so that figment's errors name the variable.
struct Layer {
    name: String,
    data: figment::value::Dict,
}

impl figment::Provider for Layer {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name.clone())
    }
    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.data.clone()))
    }
}

/// `value` at `key` (`a.b.<site>.c`), `<site>` one segment even if the name has a dot.
fn nest(key: &str, site: &str, value: figment::value::Value) -> figment::value::Dict {
    let mut v = value;
    for seg in key.rsplit('.') {
        let seg = if seg == "<site>" { site } else { seg };
        v = figment::value::Value::from(figment::value::Dict::from([(seg.to_owned(), v)]));
    }
    v.into_dict().unwrap_or_default()
}

/// Whether the layers so far configure section `key` (`<site>` as in [`nest`]).
fn configured(fig: &figment::Figment, key: &str, site: &str) -> bool {
    let mut segs = key.split('.').map(|s| if s == "<site>" { site } else { s });
    let Some(first) = segs.next() else {
        return false;
    };
    let Ok(mut v) = fig.find_value(first) else {
        return false;
    };
    for seg in segs {
        match v.into_dict().and_then(|mut d| d.remove(seg)) {
            Some(next) => v = next,
            None => return false,
        }
    }
    true
}

/// A TOML error as `line L, column C: message`. Not the error's own `Display`: that quotes the
/// offending line of the file, and the line may hold a secret (`pasword = "..."`, a typo, is
/// refused as an unknown field, with its value on display). Quoted strings in the message
/// (serde's `invalid type: string "..."`) are left out for the same reason.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = redact_quoted_strings(e.message().trim());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// `scheme://user:password@host/...` -> `scheme://<redacted>@host/...`; other text unchanged.
pub fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}<redacted>{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// `invalid type: string "x", expected ...` -> `invalid type: string, expected ...`.
fn redact_quoted_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i + "string".len()]);
        let quoted = &rest[i + "string \"".len()..];
        // The string is Debug-escaped: it ends at the first unescaped quote.
        let mut end = quoted.len();
        let mut escaped = false;
        for (j, ch) in quoted.char_indices() {
            match ch {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = j + 1;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &quoted[end.min(quoted.len())..];
    }
    out.push_str(rest);
    out
}

impl SiteConfig {
    /// Reads and parses a config file (without environment overrides or validation).
    pub fn from_file(path: &Path) -> Result<SiteConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses a config file's text. The `toml` crate reads it, not figment: its errors give the
    /// line and column, and are kept free of the file's values (see [`describe_toml_error`]).
    pub fn from_toml(text: &str) -> Result<SiteConfig, String> {
        let mut c: SiteConfig = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        let table: toml::Table = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        let data = figment::value::Value::serialize(table)
            .ok()
            .and_then(|v| v.into_dict())
            .ok_or("cannot be read as a table")?;
        c.file = FileLayer(Some(std::sync::Arc::new(data)));
        Ok(c)
    }

    /// Loads a config file, applies the process environment, and validates.
    pub fn load(path: &Path) -> Result<SiteConfig, ConfigError> {
        let mut c = Self::from_file(path)?;
        c.apply_env(|k| std::env::var(k).ok())?;
        c.validate()?;
        Ok(c)
    }

    /// Layers the variables of [`ENV_OVERRIDES`] over the file this configuration was read
    /// from, reading them through `env`: figment merges each as its own layer and extracts the
    /// result, converting text to the setting's type. Starts again from the file: changes made
    /// to `self` since it was read are not kept.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        use figment::value::{Empty, Value};
        let Some(file) = self.file.0.clone() else {
            return Err(invalid(
                "environment",
                "this configuration was not read from a file (SiteConfig::from_toml)",
            ));
        };
        let mut fig = figment::Figment::from(Layer {
            name: "the config file".into(),
            data: (*file).clone(),
        });
        let mut created = Vec::new();
        // Values to quote in errors: those of the variables that hold no secret.
        let mut given: Vec<(String, String)> = Vec::new();
        for o in ENV_OVERRIDES {
            // Once per site of the file, or once for a variable that names none.
            let sites: Vec<&str> = if o.var.contains("<SITE>") {
                self.sites.keys().map(String::as_str).collect()
            } else {
                vec![""]
            };
            for site in sites {
                let name = o
                    .var
                    .replace("<SITE>", &site.to_uppercase().replace('-', "_"));
                let Some(v) = env(&name) else { continue };
                if !o.key.contains("password") {
                    given.push((name.clone(), v.clone()));
                }
                match o.when {
                    EnvWhen::Always => {}
                    EnvWhen::If(s) if !configured(&fig, s, site) => continue,
                    EnvWhen::Needs(s) if !configured(&fig, s, site) => {
                        return Err(invalid(
                            name,
                            format!(
                                "is set, but {} is not configured",
                                s.replace("<site>", site)
                            ),
                        ))
                    }
                    EnvWhen::If(_) | EnvWhen::Needs(_) => {}
                }
                let value = match o.value {
                    EnvValue::Text => Value::from(v),
                    EnvValue::List => Value::from(
                        v.split(',')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(|p| Value::from(p.to_owned()))
                            .collect::<Vec<_>>(),
                    ),
                };
                let name = format!("environment variable {name}");
                fig = fig.merge(Layer {
                    name: name.clone(),
                    data: nest(o.key, site, value),
                });
                if let Some(k) = o.unsets {
                    let data = nest(k, site, Value::from(Empty::None));
                    fig = fig.merge(Layer { name, data });
                }
                if let Some((k, v)) = o.creates {
                    created.push(nest(k, site, Value::from(v.to_owned())));
                }
            }
        }
        // Fills only what no layer set: a section the variables created.
        for data in created {
            fig = fig.join(Layer {
                name: "a default".into(),
                data,
            });
        }
        let mut c: SiteConfig = fig.extract_lossy().map_err(|e| {
            let key = e.path.join(".");
            match &e.metadata {
                Some(m) if m.name.starts_with("environment variable ") => {
                    let var = m.name.trim_start_matches("environment variable ");
                    let mut reason = e.kind.to_string();
                    match given.iter().find(|(n, _)| n == var) {
                        Some((_, v)) if !reason.contains(v.as_str()) => {
                            reason.push_str(&format!(", got '{v}'"))
                        }
                        _ => {}
                    }
                    invalid(var, format!("{reason} (setting {key})"))
                }
                _ => invalid(key, e.kind.to_string()),
            }
        })?;
        c.file = self.file.clone();
        *self = c;
        Ok(())
    }

    /// Checks what serde cannot: cross references, reserved keys, value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.site.is_empty() {
            return Err(invalid("site", "must not be empty"));
        }
        if !self.sites.contains_key(&self.site) {
            return Err(invalid(
                "site",
                format!(
                    "'{}' has no [sites.{}] section (configured sites: {})",
                    self.site,
                    self.site,
                    self.site_names()
                ),
            ));
        }
        for (name, c) in &self.sites {
            if c.brokers.trim().is_empty() {
                return Err(invalid(
                    format!("sites.{name}.brokers"),
                    "must not be empty",
                ));
            }
            for k in c.kafka_options.keys() {
                if RESERVED_KAFKA_KEYS.contains(&k.as_str()) {
                    return Err(invalid(
                        format!("sites.{name}.kafka_options.\"{k}\""),
                        "is controlled by a typed setting (brokers, tls, sasl, or the producer and consumer settings) and may not be set here",
                    ));
                }
            }
            if let Some(t) = &c.tls {
                if t.cert_file.is_some() != t.key_file.is_some() {
                    return Err(invalid(
                        format!("sites.{name}.tls"),
                        "cert_file and key_file must be given together",
                    ));
                }
            }
            if !(c.registry.url.starts_with("http://") || c.registry.url.starts_with("https://")) {
                return Err(invalid(
                    format!("sites.{name}.registry.url"),
                    format!(
                        "expected an http:// or https:// URL, got '{}'",
                        redact_userinfo(&c.registry.url)
                    ),
                ));
            }
            // The URL is printed in logs and errors; credentials in it would be too.
            if redact_userinfo(&c.registry.url) != c.registry.url {
                return Err(invalid(
                    format!("sites.{name}.registry.url"),
                    format!(
                        "must not hold credentials ('{}'): set sites.{name}.registry.username, and the password with password_file or CONTINUUM_{}_REGISTRY_PASSWORD",
                        redact_userinfo(&c.registry.url),
                        name.to_uppercase().replace('-', "_")
                    ),
                ));
            }
        }
        if self.database.user.is_empty() {
            return Err(invalid("database.user", "must not be empty"));
        }
        if self.producer.server_id == 0 {
            return Err(invalid(
                "producer.server_id",
                "must be between 1 and 4294967295 (0 means 'no server id' to MariaDB)",
            ));
        }
        for s in [
            &self.consumer.apply.source_site,
            &self.consumer.apply.read_from,
            &self.consumer.mirror.from,
            &self.consumer.mirror.to,
        ]
        .into_iter()
        .flatten()
        {
            if !self.sites.contains_key(s) {
                return Err(invalid(
                    "consumer",
                    format!("refers to site '{s}', which has no [sites.{s}] section (configured sites: {})", self.site_names()),
                ));
            }
        }
        let apply = &self.consumer.apply;
        if !(1..=16).contains(&apply.connections) {
            return Err(invalid(
                "consumer.apply.connections",
                format!("must be between 1 and 16, got {}", apply.connections),
            ));
        }
        if apply.lock_wait_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "consumer.apply.lock_wait_timeout",
                format!(
                    "must be at least 1s (MariaDB counts it in whole seconds), got {:?}",
                    apply.lock_wait_timeout
                ),
            ));
        }
        Ok(())
    }

    fn site_names(&self) -> String {
        self.sites.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// This site's cluster.
    pub fn local(&self) -> &ClusterConfig {
        &self.sites[&self.site]
    }

    pub fn cluster(&self, site: &str) -> Result<&ClusterConfig, ConfigError> {
        self.sites.get(site).ok_or_else(|| {
            invalid(
                "site",
                format!(
                    "'{site}' has no [sites.{site}] section (configured sites: {})",
                    self.site_names()
                ),
            )
        })
    }

    /// The changelog topic of `site`.
    pub fn topic_of(&self, site: &str) -> Result<String, ConfigError> {
        let c = self.cluster(site)?;
        Ok(c.topic.clone().unwrap_or_else(|| format!("{site}.cdc")))
    }

    /// Another site's MariaDB (`[sites.<site>.database]`), for operator verbs.
    pub fn database_of(&self, site: &str) -> Result<&DatabaseConfig, ConfigError> {
        if site == self.site {
            return Ok(&self.database);
        }
        self.cluster(site)?.database.as_ref().ok_or_else(|| {
            invalid(
                format!("sites.{site}.database"),
                format!(
                    "is not configured: add a [sites.{site}.database] section (host, port, user, password_file), or set CONTINUUM_{}_DB_HOST / _DB_PORT / _DB_USER / _DB_PASSWORD",
                    site.to_uppercase()
                ),
            )
        })
    }

    /// The one site other than this one, for defaults that need it.
    pub fn other_site(&self, what: &str) -> Result<String, ConfigError> {
        let others: Vec<&String> = self.sites.keys().filter(|s| **s != self.site).collect();
        match others.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(invalid(
                what,
                format!(
                    "not set, and there is no single other site to default to (configured sites: {})",
                    self.site_names()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINIMAL: &str = r#"
        site = "sf"
        [database]
        user = "continuum"
        [sites.sf]
        brokers = "127.0.0.1:19092"
        registry = { url = "http://127.0.0.1:18081" }
        [sites.eu]
        brokers = "127.0.0.1:29092"
        registry = { url = "http://127.0.0.1:28081" }
    "#;

    #[test]
    fn example_configs_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                let c = SiteConfig::from_file(&p).unwrap_or_else(|e| panic!("{e}"));
                c.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                seen += 1;
            }
        }
        assert!(
            seen >= 2,
            "expected the example configs in {}",
            dir.display()
        );
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = SiteConfig::from_toml(MINIMAL).unwrap();
        c.validate().unwrap();
        assert_eq!(c.database.port, 3306);
        assert_eq!(c.producer.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.producer.linger, Duration::from_millis(5));
        assert_eq!(c.topic_of("sf").unwrap(), "sf.cdc");
        assert_eq!(c.other_site("x").unwrap(), "eu");
        assert_eq!(c.consumer.apply.ddl, DdlPolicy::Apply);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let bad = MINIMAL.replace("user = \"continuum\"", "user = \"continuum\"\nusr = \"x\"");
        let e = SiteConfig::from_toml(&bad).unwrap_err();
        assert!(e.contains("unknown field `usr`"), "{e}");
    }

    /// The error `validate` gives for the config `toml`, which parses.
    fn validation_error(toml: &str) -> String {
        SiteConfig::from_toml(toml)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn apply_connections_and_lock_wait_are_checked() {
        for (setting, value, needle) in [
            ("connections", "0", "between 1 and 16, got 0"),
            ("connections", "17", "between 1 and 16, got 17"),
            ("lock_wait_timeout", "\"500ms\"", "at least 1s"),
        ] {
            let bad = format!("{MINIMAL}\n[consumer.apply]\n{setting} = {value}\n");
            let e = SiteConfig::from_toml(&bad)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("consumer.apply.{setting}")) && e.contains(needle),
                "{setting} = {value}: {e}"
            );
        }
        let c = SiteConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(c.consumer.apply.connections, 2);
    }

    #[test]
    fn reserved_kafka_keys_are_refused() {
        let bad =
            format!("{MINIMAL}\n[sites.sf.kafka_options]\n\"enable.idempotence\" = \"false\"\n");
        let c = SiteConfig::from_toml(&bad).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("sites.sf.kafka_options.\"enable.idempotence\""),
            "{e}"
        );
        let ok = format!(
            "{MINIMAL}\n[sites.sf.kafka_options]\n\"socket.keepalive.enable\" = \"true\"\n"
        );
        SiteConfig::from_toml(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn environment_overrides_file() {
        let mut c = SiteConfig::from_toml(MINIMAL).unwrap();
        let env: HashMap<&str, &str> = [
            ("CONTINUUM_DB_PORT", "3308"),
            ("CONTINUUM_DB_PASSWORD", "pw"),
            ("CONTINUUM_EU_BROKERS", "10.0.0.1:9092"),
            ("CONTINUUM_SF_TOPIC", "prod.sf.cdc"),
            ("CONTINUUM_LOG_FORMAT", "json"),
        ]
        .into();
        c.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.database.port, 3308);
        assert_eq!(c.database.password().unwrap().unwrap().expose(), "pw");
        assert_eq!(c.sites["eu"].brokers, "10.0.0.1:9092");
        assert_eq!(c.topic_of("sf").unwrap(), "prod.sf.cdc");
        assert_eq!(c.log.format, LogFormat::Json);
        // A bad value: the variable, the value and what was expected.
        for (var, value, expected) in [
            ("CONTINUUM_DB_PORT", "x", "u16"),
            ("CONTINUUM_EU_DB_PORT", "70000", "u16"),
            ("CONTINUUM_LOG_FORMAT", "xml", "`text` or `json`"),
            (
                "CONTINUUM_PRODUCER_METRICS_LISTEN",
                "nowhere",
                "socket address",
            ),
        ] {
            let e = c
                .apply_env(|k| (k == var).then(|| value.to_string()))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("setting {var}:"))
                    && e.contains(value)
                    && e.contains(expected),
                "{e}"
            );
        }
        // The password file wins over the password; lists are comma-separated.
        let env: HashMap<&str, &str> = [
            ("CONTINUUM_DB_PASSWORD", "pw"),
            ("CONTINUUM_DB_PASSWORD_FILE", "/pw"),
            ("CONTINUUM_PRODUCER_INCLUDE", " a.*, ,b.t "),
            ("CONTINUUM_EU_DB_PORT", "3310"),
        ]
        .into();
        c.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert!(c.database.password.is_none());
        assert_eq!(c.database.password_file.as_deref(), Some(Path::new("/pw")));
        assert_eq!(c.producer.include, ["a.*", "b.t"]);
        let eu = c.database_of("eu").unwrap();
        assert_eq!((eu.user.as_str(), eu.port), ("continuum", 3310));
        let e = c
            .apply_env(|k| (k == "CONTINUUM_SF_SASL_PASSWORD").then(|| "x".to_string()))
            .unwrap_err();
        assert!(
            e.to_string().contains("sites.sf.sasl is not configured"),
            "{e}"
        );
    }

    /// README.md's table of variables is [`ENV_OVERRIDES`], row for row; every `CONTINUUM_*`
    /// variable that README.md or docs/ name is one of them (or a site's instance of one), or
    /// one of the few that are not config overrides.
    #[test]
    fn readme_documents_every_environment_variable() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let expected: Vec<String> = ENV_OVERRIDES.iter().map(EnvOverride::doc_row).collect();
        let documented: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("| `CONTINUUM_"))
            .collect();
        assert_eq!(
            documented,
            expected,
            "README.md's table of environment variables differs from ENV_OVERRIDES; its rows should be:\n{}",
            expected.join("\n")
        );
        // Read elsewhere: the binaries' --config flag, and the container images' scripts.
        const NOT_OVERRIDES: &[&str] = &[
            "CONTINUUM_CONFIG",
            "CONTINUUM_DB_ROLE",
            "CONTINUUM_HEALTH_ADDR",
        ];
        let declares = |name: &str| {
            ENV_OVERRIDES
                .iter()
                .any(|o| match o.var.split_once("<SITE>") {
                    None => o.var == name || (name.ends_with('_') && o.var.starts_with(name)),
                    Some((pre, post)) => {
                        name.starts_with(pre)
                            && name.len() > pre.len()
                            && (name.ends_with(post) && name.len() > pre.len() + post.len()
                                || name.ends_with('_') && o.var.starts_with(name))
                    }
                })
        };
        let mut files = vec![root.join("README.md")];
        for e in std::fs::read_dir(root.join("docs")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices("CONTINUUM_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| {
                        c.is_ascii_uppercase() || c.is_ascii_digit() || "_<>".contains(*c)
                    })
                    .collect();
                assert!(
                    NOT_OVERRIDES.contains(&name.as_str()) || declares(&name),
                    "{} names {name}, which ENV_OVERRIDES does not declare",
                    f.display()
                );
            }
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut c = SiteConfig::from_toml(MINIMAL).unwrap();
        c.apply_env(|k| (k == "CONTINUUM_DB_PASSWORD").then(|| "MARKER-8d1f".to_string()))
            .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("MARKER-8d1f"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn config_errors_never_quote_a_secret() {
        // A typo in a key is refused as an unknown field; toml's own message would show the
        // whole line, value included.
        let typo = MINIMAL.replace(
            "user = \"continuum\"",
            "user = \"continuum\"\npasword = \"MARKER-2b7e\"",
        );
        let e = SiteConfig::from_toml(&typo).unwrap_err();
        assert!(!e.contains("MARKER-2b7e"), "{e}");
        assert!(
            e.contains("line 5") && e.contains("unknown field `pasword`"),
            "{e}"
        );
        // A syntax error on the line of a secret.
        let broken = MINIMAL.replace(
            "user = \"continuum\"",
            "user = \"continuum\"\npassword = \"MARKER-2b7e\" oops",
        );
        let e = SiteConfig::from_toml(&broken).unwrap_err();
        assert!(!e.contains("MARKER-2b7e") && e.contains("line 5"), "{e}");
        // A secret where another type was expected.
        let misplaced = MINIMAL.replace(
            "registry = { url = \"http://127.0.0.1:18081\" }",
            "registry = \"MARKER-2b7e\"",
        );
        let e = SiteConfig::from_toml(&misplaced).unwrap_err();
        assert!(
            !e.contains("MARKER-2b7e") && e.contains("invalid type: string, expected"),
            "{e}"
        );
        assert_eq!(
            redact_quoted_strings(r#"invalid type: string "a\"b", expected x"#),
            "invalid type: string, expected x"
        );
    }

    #[test]
    fn registry_url_credentials_are_refused_without_printing_them() {
        let bad = MINIMAL.replace(
            "http://127.0.0.1:18081",
            "https://u:MARKER-2b7e@reg.example:8081/x",
        );
        let e = validation_error(&bad);
        assert!(
            !e.contains("MARKER-2b7e")
                && e.contains("sites.sf.registry.url")
                && e.contains("CONTINUUM_SF_REGISTRY_PASSWORD"),
            "{e}"
        );
        let bad = MINIMAL.replace("http://127.0.0.1:18081", "u:MARKER-2b7e@reg.example");
        let e = validation_error(&bad);
        assert!(!e.contains("MARKER-2b7e"), "{e}");
        assert_eq!(
            redact_userinfo("http://reg:8081/a@b"),
            "http://reg:8081/a@b"
        );
    }

    #[test]
    fn sensitive_kafka_options_are_redacted_in_debug_output() {
        let c = SiteConfig::from_toml(&format!(
            "{MINIMAL}\n[sites.sf.kafka_options]\n\"sasl.oauthbearer.config\" = \"MARKER-2b7e\"\n\"sasl.oauthbearer.client.secret\" = \"MARKER-2b7e\"\n\"socket.keepalive.enable\" = \"true\"\n"
        ))
        .unwrap();
        c.validate().unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("MARKER-2b7e"), "{dbg}");
        assert!(
            dbg.contains("\"socket.keepalive.enable\": \"true\""),
            "{dbg}"
        );
        // The values still reach librdkafka.
        assert_eq!(
            c.sites["sf"]
                .kafka_options
                .get("sasl.oauthbearer.config")
                .map(String::as_str),
            Some("MARKER-2b7e")
        );
    }

    #[test]
    fn site_database_tls_ca_from_the_environment() {
        let mut c = SiteConfig::from_toml(MINIMAL).unwrap();
        let env: HashMap<&str, &str> = [
            ("CONTINUUM_DB_TLS_CA_FILE", "/ca.pem"),
            ("CONTINUUM_EU_DB_HOST", "10.0.0.2"),
            ("CONTINUUM_EU_DB_TLS_CA_FILE", "/eu-ca.pem"),
            // No database configured for sf under [sites.sf]: a CA alone creates none.
            ("CONTINUUM_SF_DB_TLS_CA_FILE", "/sf-ca.pem"),
        ]
        .into();
        c.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        let t = c.database.tls.as_ref().unwrap();
        assert_eq!(
            (t.ca_file.as_path(), t.verify_hostname),
            (Path::new("/ca.pem"), true)
        );
        let eu = c.database_of("eu").unwrap();
        assert_eq!(eu.host, "10.0.0.2");
        assert_eq!(eu.tls.as_ref().unwrap().ca_file, Path::new("/eu-ca.pem"));
        assert!(c.sites["sf"].database.is_none());
    }

    #[test]
    fn unknown_site_is_named() {
        let c = SiteConfig::from_toml(&MINIMAL.replace("site = \"sf\"", "site = \"ny\"")).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("'ny' has no [sites.ny] section") && e.contains("eu, sf"),
            "{e}"
        );
    }
}
