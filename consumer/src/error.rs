//! Errors of the apply family (reader, writer, checkpoint, lock, apply loop), split into
//! transient (the apply session restarts from its checkpoint after a backoff) and fatal (apply
//! stops with a message saying what is wrong and what to do).

use continuum_schemas::CodecError;
use rdkafka::error::KafkaError;

/// Where a record is and what it touches, for messages about one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordContext {
    pub topic: String,
    pub offset: i64,
    /// GTID of the record's source transaction, or what its position says (`-` if unknown).
    pub gtid: String,
    /// `db.table`, or `-`.
    pub table: String,
    /// Primary key as `col=value, …`, or `-`.
    pub key: String,
}

impl std::fmt::Display for RecordContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {}@{} (GTID {}, table {}, primary key {})",
            self.topic,
            self.offset,
            or_dash(&self.gtid),
            or_dash(&self.table),
            or_dash(&self.key)
        )
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// A MariaDB failure at a named site, for the operator verbs (`orphans`, `promote`): which
/// site, which server, and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{site} MariaDB {target}: {what}: {source}")]
pub struct SiteDbError {
    pub site: String,
    pub target: String,
    pub what: String,
    #[source]
    pub source: mysql_async::Error,
}

impl SiteDbError {
    /// The error for a failure of `site`'s MariaDB at `target` while doing `what`.
    pub fn at(
        site: &str,
        target: &str,
        what: &str,
    ) -> impl FnOnce(mysql_async::Error) -> SiteDbError + use<> {
        let (site, target, what) = (site.to_owned(), target.to_owned(), what.to_owned());
        move |source| SiteDbError {
            site,
            target,
            what,
            source,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    // ---- transient when the cause is ----
    #[error("MariaDB {target}: {what}: {source}")]
    Db {
        target: String,
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("Kafka {what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    #[error("schema registry: {0}")]
    Registry(#[source] CodecError),
    #[error("lost the apply lock '{lock}' on {target}: {reason}")]
    LockLost {
        lock: String,
        target: String,
        reason: String,
    },
    #[error("topic {topic} does not exist on the {cluster} cluster yet")]
    NoTopic { topic: String, cluster: String },

    // ---- fatal ----
    #[error("{0}")]
    Config(#[from] continuum_common::ConfigError),
    #[error("another apply holds the lock '{lock}' on {target} (MariaDB connection {holder}); only one apply may write {topic}. Stop the other one (SHOW PROCESSLIST shows connection {holder}) or wait for it to end")]
    LockHeld {
        lock: String,
        target: String,
        holder: String,
        topic: String,
    },
    #[error("cannot apply {at}: {reason}. The checkpoint stays before this record; {fix}")]
    Record {
        at: Box<RecordContext>,
        reason: String,
        fix: String,
    },
    #[error("schema change at {at} stopped apply (consumer.apply.ddl = \"stop\"): {ddl}. Apply it to the replica yourself if wanted, then set consumer.apply.ddl to \"skip\" for one run, or to \"apply\"")]
    DdlStop { at: Box<RecordContext>, ddl: String },
    #[error("schema change at {at} failed on {target}: {ddl}: {reason}. The checkpoint stays before it; fix the replica's schema so that the statement can run (or set consumer.apply.ddl = \"skip\" to pass it), then restart apply")]
    Ddl {
        at: Box<RecordContext>,
        target: String,
        ddl: String,
        reason: String,
    },
    #[error("topic {topic} on the {cluster} cluster: {reason}")]
    Topic {
        topic: String,
        cluster: String,
        reason: String,
    },
    #[error("checkpoint row of {topic} in {target}: {reason}")]
    Checkpoint {
        topic: String,
        target: String,
        reason: String,
    },
}

impl ApplyError {
    /// The error for a failure of the MariaDB server at `target` while doing `what`.
    pub fn db(target: &str, what: &str) -> impl FnOnce(mysql_async::Error) -> ApplyError + use<> {
        let (target, what) = (target.to_owned(), what.to_owned());
        move |source| ApplyError::Db {
            target,
            what,
            source,
        }
    }

    /// Whether restarting the session from the checkpoint (after a backoff) may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Db { source, .. } => db_error_is_transient(source),
            ApplyError::Kafka { source, .. } => continuum_common::kafka::is_transient(source),
            ApplyError::Registry(e) => e.is_transient(),
            ApplyError::LockLost { .. } | ApplyError::NoTopic { .. } => true,
            _ => false,
        }
    }

    /// A short label for the `errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::Db { .. } => "db",
            ApplyError::Kafka { .. } => "kafka",
            ApplyError::Registry(_) => "registry",
            ApplyError::LockLost { .. } => "lock_lost",
            ApplyError::NoTopic { .. } => "no_topic",
            ApplyError::Config(_) => "config",
            ApplyError::LockHeld { .. } => "lock_held",
            ApplyError::Record { .. } => "record",
            ApplyError::DdlStop { .. } => "ddl_stop",
            ApplyError::Ddl { .. } => "ddl",
            ApplyError::Topic { .. } => "topic",
            ApplyError::Checkpoint { .. } => "checkpoint",
        }
    }

    /// The MariaDB server error code, if this is a server error.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            ApplyError::Db {
                source: mysql_async::Error::Server(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }
}

/// Deadlocks, lock waits, a server going away or not answering: worth retrying. Not a packet
/// over the connection's limit (`max_allowed_packet`).
pub fn db_error_is_transient(e: &mysql_async::Error) -> bool {
    // A packet over the connection's limit comes again on every retry.
    if continuum_common::db::is_packet_too_large(e) {
        return false;
    }
    if continuum_common::db::is_transient(e) {
        return true;
    }
    match e {
        mysql_async::Error::Server(s) => matches!(s.code, 1158 | 1159 | 1160 | 1161 | 4031),
        mysql_async::Error::Driver(d) => matches!(d, mysql_async::DriverError::ConnectionClosed),
        mysql_async::Error::Io(_) => true,
        _ => false,
    }
}

pub type Result<T, E = ApplyError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_common::kafka::{refusal_error, SecurityFailure};

    #[test]
    fn a_packet_over_the_limit_stops_apply() {
        let e = ApplyError::Db {
            target: "continuum@db:3306".into(),
            what: "applying a batch".into(),
            source: continuum_common::db::packet_too_large_error(),
        };
        assert!(!e.is_transient(), "the same packet comes again: {e}");
    }

    #[test]
    fn a_cluster_that_refuses_the_client_stops_apply() {
        let e = ApplyError::Kafka {
            what: "reading the topic's metadata".into(),
            source: refusal_error(
                SecurityFailure::UntrustedCertificate,
                "sites.eu.tls.ca_file",
            ),
        };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("set sites.eu.tls.ca_file"), "{e}");
        let down = ApplyError::Kafka {
            what: "reading the topic's metadata".into(),
            source: KafkaError::MetadataFetch(rdkafka::error::RDKafkaErrorCode::AllBrokersDown),
        };
        assert!(down.is_transient());
    }
}
