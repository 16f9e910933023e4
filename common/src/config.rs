//! Site configuration, shared by both binaries: one TOML file per site (see `config/*.toml`),
//! then environment variables, then command-line flags, each overriding the one before.
//!
//! Every struct refuses unknown keys, durations are written as `"1s"`, `"250ms"`, and every
//! default is documented on its field. Secrets are [`Secret`]s: never printed, and never needed
//! in the file (use `*_file`, or the environment variables listed in [`ENV_OVERRIDES`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, SecretRef};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
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
    /// otherwise. Env: `CONTINUUM_SITE`.
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
    /// Default `127.0.0.1`. Env: `CONTINUUM_DB_HOST`.
    #[serde(default = "default_db_host")]
    pub host: String,
    /// Default `3306`. Env: `CONTINUUM_DB_PORT`.
    #[serde(default = "default_db_port")]
    pub port: u16,
    /// Env: `CONTINUUM_DB_USER`.
    pub user: String,
    /// Prefer `password_file` or `CONTINUUM_DB_PASSWORD`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Env: `CONTINUUM_DB_PASSWORD_FILE`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to the server. Absent: plaintext.
    #[serde(default)]
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
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbTlsConfig {
    /// PEM file of the CA that signed the server's certificate. Env: `CONTINUUM_DB_TLS_CA_FILE`.
    pub ca_file: PathBuf,
    /// Check that the server's certificate names `database.host`. Default `true`.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

/// One site's Kafka cluster and schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Bootstrap servers, `host:port[,host:port]`. Env: `CONTINUUM_<SITE>_BROKERS`.
    pub brokers: String,
    /// The site's changelog topic. Default `<site>.cdc`. Env: `CONTINUUM_<SITE>_TOPIC`.
    #[serde(default)]
    pub topic: Option<String>,
    pub registry: RegistryConfig,
    #[serde(default)]
    pub tls: Option<KafkaTlsConfig>,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// Raw librdkafka settings, for what has no typed setting. Keys that a typed setting
    /// controls are refused (see [`RESERVED_KAFKA_KEYS`]). Values of keys that may hold a
    /// secret (`ssl.keystore.password`, `sasl.oauthbearer.client.secret`, ...) never show in
    /// debug output.
    #[serde(default)]
    pub kafka_options: KafkaOptions,
    /// That site's MariaDB, for the operator verbs that compare or inspect it from here
    /// (`verify`, `orphans`, `promote`). Optional; this site's own database is `[database]`.
    /// Env: `CONTINUUM_<SITE>_DB_HOST`, `_DB_PORT`, `_DB_USER`, `_DB_PASSWORD`,
    /// `_DB_TLS_CA_FILE` (the last only for a database configured here or by the others).
    #[serde(default)]
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
    /// `http://` or `https://` URL. Env: `CONTINUUM_<SITE>_REGISTRY_URL`.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Env: `CONTINUUM_<SITE>_REGISTRY_PASSWORD`.
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA for an `https://` registry.
    #[serde(default)]
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
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Env: `CONTINUUM_<SITE>_TLS_KEY_PASSWORD`.
    #[serde(default)]
    pub key_password: Option<Secret>,
    #[serde(default)]
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
    /// Env: `CONTINUUM_<SITE>_SASL_PASSWORD`.
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Replica `server_id` the producer registers with; must differ from every server and
    /// replica in the topology. Default `4001`. Env: `CONTINUUM_PRODUCER_SERVER_ID`.
    pub server_id: u32,
    /// `db.table` patterns to capture (`*` matches any run of characters). Default: every table
    /// of every non-system database. Env: `CONTINUUM_PRODUCER_INCLUDE` (comma-separated).
    pub include: Vec<String>,
    /// `db.table` patterns to leave out, applied after `include`. Default none.
    /// Env: `CONTINUUM_PRODUCER_EXCLUDE` (comma-separated).
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
    /// Upper bound of the reconnect backoff. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Where `/metrics` and `/health` are served. Default `127.0.0.1:9101`.
    /// Env: `CONTINUUM_PRODUCER_METRICS_LISTEN`.
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
    /// 500 transactions, 8 MiB of records, `100ms`. Larger groups were measured and not kept:
    /// 20000/2000/32 MiB made apply alone about 10% faster in interleaved runs over one topic
    /// (59.5-66.7 s against 70.6-71.8 s), but in `make bench` (1M rows) the drain ratios did
    /// not move (apply alone 0.92x native either way), `consumer run` peaked at 130 MiB instead
    /// of 120 MiB, and the p99 lag at 50% load rose from 615 to 758 ms.
    pub batch_rows: usize,
    pub batch_transactions: usize,
    pub batch_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Default `apply`.
    pub ddl: DdlPolicy,
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
    /// Env: `CONTINUUM_CONSUMER_METRICS_LISTEN`.
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
    /// `text` (default) or `json`. Env: `CONTINUUM_LOG_FORMAT`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` (default) or `info,continuum_producer=debug`.
    /// Env: `CONTINUUM_LOG`.
    pub filter: String,
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

/// The environment variables read by [`SiteConfig::apply_env`]. `<SITE>` is a site name in
/// upper case.
pub const ENV_OVERRIDES: &[&str] = &[
    "CONTINUUM_SITE",
    "CONTINUUM_DB_HOST",
    "CONTINUUM_DB_PORT",
    "CONTINUUM_DB_USER",
    "CONTINUUM_DB_PASSWORD",
    "CONTINUUM_DB_PASSWORD_FILE",
    "CONTINUUM_DB_TLS_CA_FILE",
    "CONTINUUM_<SITE>_BROKERS",
    "CONTINUUM_<SITE>_TOPIC",
    "CONTINUUM_<SITE>_REGISTRY_URL",
    "CONTINUUM_<SITE>_REGISTRY_PASSWORD",
    "CONTINUUM_<SITE>_SASL_PASSWORD",
    "CONTINUUM_<SITE>_TLS_KEY_PASSWORD",
    "CONTINUUM_<SITE>_DB_HOST",
    "CONTINUUM_<SITE>_DB_PORT",
    "CONTINUUM_<SITE>_DB_USER",
    "CONTINUUM_<SITE>_DB_PASSWORD",
    "CONTINUUM_<SITE>_DB_TLS_CA_FILE",
    "CONTINUUM_PRODUCER_INCLUDE",
    "CONTINUUM_PRODUCER_EXCLUDE",
    "CONTINUUM_PRODUCER_SERVER_ID",
    "CONTINUUM_PRODUCER_METRICS_LISTEN",
    "CONTINUUM_CONSUMER_METRICS_LISTEN",
    "CONTINUUM_LOG_FORMAT",
    "CONTINUUM_LOG",
];

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

fn parse_env<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.parse()
        .map_err(|e: T::Err| invalid(name, format!("'{v}' does not parse: {e}")))
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

    pub fn from_toml(text: &str) -> Result<SiteConfig, String> {
        toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
    }

    /// Loads a config file, applies the process environment, and validates.
    pub fn load(path: &Path) -> Result<SiteConfig, ConfigError> {
        let mut c = Self::from_file(path)?;
        c.apply_env(|k| std::env::var(k).ok())?;
        c.validate()?;
        Ok(c)
    }

    /// Applies the overrides in [`ENV_OVERRIDES`], reading variables through `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("CONTINUUM_SITE") {
            self.site = v;
        }
        let db = &mut self.database;
        if let Some(v) = env("CONTINUUM_DB_HOST") {
            db.host = v;
        }
        if let Some(v) = env("CONTINUUM_DB_PORT") {
            db.port = parse_env("CONTINUUM_DB_PORT", &v)?;
        }
        if let Some(v) = env("CONTINUUM_DB_USER") {
            db.user = v;
        }
        if let Some(v) = env("CONTINUUM_DB_PASSWORD") {
            db.password = Some(Secret::new(v));
        }
        if let Some(v) = env("CONTINUUM_DB_PASSWORD_FILE") {
            db.password_file = Some(v.into());
            db.password = None;
        }
        if let Some(v) = env("CONTINUUM_DB_TLS_CA_FILE") {
            db.set_tls_ca(v);
        }
        for (name, c) in self.sites.iter_mut() {
            let var = |suffix: &str| {
                format!(
                    "CONTINUUM_{}_{suffix}",
                    name.to_uppercase().replace('-', "_")
                )
            };
            if let Some(v) = env(&var("BROKERS")) {
                c.brokers = v;
            }
            if let Some(v) = env(&var("TOPIC")) {
                c.topic = Some(v);
            }
            if let Some(v) = env(&var("REGISTRY_URL")) {
                c.registry.url = v;
            }
            if let Some(v) = env(&var("REGISTRY_PASSWORD")) {
                c.registry.password = Some(Secret::new(v));
            }
            if let Some(v) = env(&var("SASL_PASSWORD")) {
                match &mut c.sasl {
                    Some(s) => s.password = Some(Secret::new(v)),
                    None => {
                        return Err(invalid(
                            var("SASL_PASSWORD"),
                            format!("is set, but sites.{name}.sasl is not configured"),
                        ))
                    }
                }
            }
            if let Some(v) = env(&var("DB_HOST")) {
                c.database
                    .get_or_insert_with(|| DatabaseConfig::remote("continuum"))
                    .host = v;
            }
            if let Some(v) = env(&var("DB_PORT")) {
                c.database
                    .get_or_insert_with(|| DatabaseConfig::remote("continuum"))
                    .port = parse_env(&var("DB_PORT"), &v)?;
            }
            if let Some(v) = env(&var("DB_USER")) {
                c.database
                    .get_or_insert_with(|| DatabaseConfig::remote("continuum"))
                    .user = v;
            }
            if let Some(v) = env(&var("DB_PASSWORD")) {
                c.database
                    .get_or_insert_with(|| DatabaseConfig::remote("continuum"))
                    .password = Some(Secret::new(v));
            }
            // Only for a site whose database is configured (in the file, or by the variables
            // above): a CA alone does not say where that database is.
            if let (Some(v), Some(db)) = (env(&var("DB_TLS_CA_FILE")), c.database.as_mut()) {
                db.set_tls_ca(v);
            }
            if let Some(v) = env(&var("TLS_KEY_PASSWORD")) {
                match &mut c.tls {
                    Some(t) => t.key_password = Some(Secret::new(v)),
                    None => {
                        return Err(invalid(
                            var("TLS_KEY_PASSWORD"),
                            format!("is set, but sites.{name}.tls is not configured"),
                        ))
                    }
                }
            }
        }
        if let Some(v) = env("CONTINUUM_PRODUCER_INCLUDE") {
            self.producer.include = v
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
        }
        if let Some(v) = env("CONTINUUM_PRODUCER_EXCLUDE") {
            self.producer.exclude = v
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
        }
        if let Some(v) = env("CONTINUUM_PRODUCER_SERVER_ID") {
            self.producer.server_id = parse_env("CONTINUUM_PRODUCER_SERVER_ID", &v)?;
        }
        if let Some(v) = env("CONTINUUM_PRODUCER_METRICS_LISTEN") {
            self.producer.metrics_listen = parse_env("CONTINUUM_PRODUCER_METRICS_LISTEN", &v)?;
        }
        if let Some(v) = env("CONTINUUM_CONSUMER_METRICS_LISTEN") {
            self.consumer.metrics_listen = parse_env("CONTINUUM_CONSUMER_METRICS_LISTEN", &v)?;
        }
        if let Some(v) = env("CONTINUUM_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        "CONTINUUM_LOG_FORMAT",
                        format!("expected text or json, got '{v}'"),
                    ))
                }
            };
        }
        if let Some(v) = env("CONTINUUM_LOG") {
            self.log.filter = v;
        }
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
        let e = c
            .apply_env(|k| (k == "CONTINUUM_DB_PORT").then(|| "x".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("CONTINUUM_DB_PORT"), "{e}");
        let e = c
            .apply_env(|k| (k == "CONTINUUM_SF_SASL_PASSWORD").then(|| "x".to_string()))
            .unwrap_err();
        assert!(
            e.to_string().contains("sites.sf.sasl is not configured"),
            "{e}"
        );
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
        let e = SiteConfig::from_toml(&bad)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("MARKER-2b7e")
                && e.contains("sites.sf.registry.url")
                && e.contains("CONTINUUM_SF_REGISTRY_PASSWORD"),
            "{e}"
        );
        let bad = MINIMAL.replace("http://127.0.0.1:18081", "u:MARKER-2b7e@reg.example");
        let e = SiteConfig::from_toml(&bad)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
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
