//! What apply, replay and status work on, resolved once from the site configuration: whose
//! changelog (`consumer.apply.source_site`, default the other site), read from which cluster
//! (`consumer.apply.read_from`, default this site's), the topic, the registry of that cluster, and
//! this site's MariaDB as the target.

use std::time::Duration;

use continuum_common::config::{ApplyConfig, ClusterConfig, DatabaseConfig};
use continuum_common::{ConfigError, SiteConfig};
use continuum_schemas::Registry;
use rdkafka::ClientConfig;

/// The single partition of a changelog topic.
pub const PARTITION: i32 = 0;

#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// This site: whose MariaDB is the target.
    pub site: String,
    /// Whose changelog is applied.
    pub source_site: String,
    /// Whose cluster the changelog is read from.
    pub read_from: String,
    pub topic: String,
    pub cluster: ClusterConfig,
    pub database: DatabaseConfig,
    pub apply: ApplyConfig,
    pub metrics_listen: std::net::SocketAddr,
}

/// The site chosen by `choice` (a flag or a setting), or else the one other site of the config;
/// `setting` names what to set when the config has more than one other site.
pub fn chosen_or_other_site(
    cfg: &SiteConfig,
    choice: Option<&String>,
    setting: &str,
) -> Result<String, ConfigError> {
    match choice {
        Some(s) => Ok(s.clone()),
        None => cfg.other_site(setting),
    }
}

/// The site whose changelog this site applies: `consumer.apply.source_site`, or else the one
/// other site.
pub fn apply_source_site(cfg: &SiteConfig) -> Result<String, ConfigError> {
    chosen_or_other_site(
        cfg,
        cfg.consumer.apply.source_site.as_ref(),
        "consumer.apply.source_site",
    )
}

impl ApplySettings {
    pub fn resolve(cfg: &SiteConfig) -> Result<Self, ConfigError> {
        let source_site = apply_source_site(cfg)?;
        if source_site == cfg.site {
            return Err(ConfigError::Invalid {
                setting: "consumer.apply.source_site".into(),
                reason: format!(
                    "is this site ('{}'): apply would write its own changes back into its own database. Name the other site",
                    cfg.site
                ),
            });
        }
        let read_from = cfg
            .consumer
            .apply
            .read_from
            .clone()
            .unwrap_or_else(|| cfg.site.clone());
        let topic = cfg.topic_of(&source_site)?;
        let cluster = cfg.cluster(&read_from)?.clone();
        Ok(ApplySettings {
            site: cfg.site.clone(),
            source_site,
            read_from,
            topic,
            cluster,
            database: cfg.database.clone(),
            apply: cfg.consumer.apply.clone(),
            metrics_listen: cfg.consumer.metrics_listen,
        })
    }

    /// `user@host:port` of the target, for messages.
    pub fn target(&self) -> String {
        continuum_common::db::describe(&self.database)
    }

    /// The registry of the cluster being read.
    pub fn registry(&self) -> Result<Registry, ConfigError> {
        let r = &self.cluster.registry;
        let setting = format!("sites.{}.registry", self.read_from);
        Registry::new(&r.settings(&setting)?).map_err(|e| ConfigError::Invalid {
            setting: format!("{setting}.url"),
            reason: e.to_string(),
        })
    }

    /// Consumer settings for reading the changelog: assigned partition, read_committed, no group
    /// offsets, fetch and prefetch queue bounded to a few MiB, each unless `kafka_options` sets
    /// it (common's consumer config). A broker far away may want larger fetches
    /// (`fetch.max.bytes`, `max.partition.fetch.bytes`, `queued.max.messages.kbytes`) at the
    /// cost of memory.
    pub fn consumer_config(&self, role: &str) -> Result<ClientConfig, ConfigError> {
        let client_id = format!("continuum-consumer-{role}-{}", self.site);
        continuum_common::kafka::consumer_config(&self.read_from, &self.cluster, &client_id)
    }

    /// Connection options of the target with apply's session settings.
    pub fn db_opts(&self) -> Result<mysql_async::Opts, ConfigError> {
        continuum_common::db::opts(&self.database, SESSION_SETTINGS)
    }

    /// Connection options without session settings (status).
    pub fn db_opts_plain(&self) -> Result<mysql_async::Opts, ConfigError> {
        continuum_common::db::opts(&self.database, &[])
    }

    pub fn max_retry_delay(&self) -> Duration {
        self.apply.max_retry_delay
    }
}

/// Leaves the text of apply's statements out of the replica's binlog: MariaDB writes each
/// statement that changes rows as an annotation before its row events
/// (`binlog_annotate_row_events`, ON by default), and apply's multi-row `REPLACE`s, their values
/// in hex, are larger than the row events they make. Measured on the 1M-row bench topic: EU's
/// binlog grew 945 MiB with the annotations and 420 MiB without (apply's time did not change
/// beyond the runs' noise). Setting it needs `BINLOG ADMIN` (or `SUPER`); without it apply
/// warns once and goes on with the annotations (see [`crate::writer::connect`]).
pub const NO_ANNOTATIONS: &str = "SET SESSION binlog_annotate_row_events=0";

/// Session settings of every connection that writes to the replica.
///
/// - `skip_replication=1`: every change apply makes carries MariaDB's skip-replication flag, and
///   the producer ignores such events, so applied changes are never captured again (loop
///   prevention).
/// - strict `sql_mode`, but with zero dates and `ALLOW_INVALID_DATES`: apply must accept every
///   value the source could store, and must never silently truncate one. Not
///   `NO_BACKSLASH_ESCAPES` (literals are hex anyway).
/// - `time_zone='+00:00'`: TIMESTAMP values travel as UTC.
/// - utf8mb4.
/// - `foreign_key_checks=0`: the source enforced the keys already; a batch holds whole source
///   transactions and is atomic, so the replica never shows a state the keys forbid at a
///   commit boundary. With the checks off, `REPLACE` and `DELETE` do not cascade (checked by
///   the test suite), so a cascade is applied exactly as the source logged it, once.
pub const SESSION_SETTINGS: &[&str] = &[
    "SET SESSION skip_replication=1",
    "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES,ERROR_FOR_DIVISION_BY_ZERO'",
    "SET SESSION time_zone='+00:00'",
    "SET NAMES utf8mb4",
    "SET SESSION foreign_key_checks=0",
];
