//! The producer's errors, split into transient (retried with backoff: the pipeline restarts from
//! the topic's last record) and fatal (the producer stops and says what to do).

use continuum_schemas::CodecError;

use crate::shape::{BadValue, UnsupportedColumn};

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    // ---- transient ----
    #[error("source MariaDB {target}: {source}")]
    Db {
        target: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("Kafka {what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "a record was not delivered to {topic}: {reason}; resuming from the topic's last record"
    )]
    Delivery { topic: String, reason: String },
    #[error(transparent)]
    Codec(#[from] CodecError),

    // ---- fatal ----
    #[error("{0}")]
    Config(#[from] continuum_common::ConfigError),
    #[error("preflight: {setting} is {actual}, expected {expected}. {fix}")]
    Preflight {
        setting: String,
        expected: String,
        actual: String,
        fix: String,
    },
    #[error(transparent)]
    Unsupported(#[from] UnsupportedColumn),
    #[error("cannot convert a row value: {0}")]
    BadValue(#[from] BadValue),
    #[error("the binlog position {position} is no longer on the source (error 1236: {message}). The changes since then are lost to this pipeline; run continuum-producer --resnapshot to start over from a fresh snapshot")]
    PositionPurged { position: String, message: String },
    #[error("{0}")]
    Lock(#[from] continuum_common::lock::LockError),
    #[error("record too large for {topic}: {size} bytes of key and value for table {table}, primary key ({key}); the limit is {limit}. Raise both settings above the record's size, or exclude the table. Nothing from this row change on was written; a restart stops here again, and never skips it")]
    RecordTooLarge {
        topic: String,
        table: String,
        key: String,
        size: usize,
        limit: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("resume: {0}")]
    Resume(String),
    #[error("binlog: {0}")]
    Binlog(String),
    #[error("tables without a primary key are captured: {tables}. Add a primary key, exclude them (producer.exclude), or set producer.tables_without_primary_key = \"exclude\"")]
    NoPrimaryKey { tables: String },
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl ProducerError {
    /// Whether restarting the pipeline (from the topic's last record) may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ProducerError::Db { source, .. } => {
                continuum_common::db::is_transient(source) || is_connect_error(source)
            }
            ProducerError::Kafka { source, .. } => continuum_common::kafka::is_transient(source),
            ProducerError::Delivery { .. } => true,
            ProducerError::Codec(c) => c.is_transient(),
            ProducerError::Lock(l) => l.is_transient(),
            _ => false,
        }
    }

    /// A short label for the `errors` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            ProducerError::Db { .. } => "mariadb",
            ProducerError::Kafka { .. } | ProducerError::Delivery { .. } => "kafka",
            ProducerError::Codec(_) => "codec",
            ProducerError::Config(_) => "config",
            ProducerError::Preflight { .. } | ProducerError::NoPrimaryKey { .. } => "preflight",
            ProducerError::Unsupported(_) | ProducerError::BadValue(_) => "type",
            ProducerError::PositionPurged { .. } => "purged",
            ProducerError::Lock(_) => "lock",
            ProducerError::RecordTooLarge { .. } | ProducerError::Refused(_) => "too_large",
            ProducerError::Resume(_) => "resume",
            ProducerError::Binlog(_) => "binlog",
            ProducerError::Snapshot(_) => "snapshot",
        }
    }
}

fn is_connect_error(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Io(_))
        || matches!(
            e,
            mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed)
        )
}

/// Attaches the source description to MariaDB errors.
pub trait DbContext<T> {
    fn db(self, target: &str) -> Result<T, ProducerError>;
}

impl<T> DbContext<T> for Result<T, mysql_async::Error> {
    fn db(self, target: &str) -> Result<T, ProducerError> {
        self.map_err(|source| ProducerError::Db {
            target: target.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_common::kafka::{SecurityError, SecurityFailure};

    #[test]
    fn a_cluster_that_refuses_the_client_stops_the_producer() {
        let refused = SecurityError {
            failure: SecurityFailure::SaslCredentials,
            site: Some("sf".into()),
            broker: "b:9095".into(),
            problem: "the sf cluster refused the SASL login".into(),
            setting: "sites.sf.sasl.password".into(),
            fix: "(password_file) to that user's password".into(),
        };
        let e = ProducerError::Kafka {
            what: "creating topic t".into(),
            source: refused.into(),
        };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("set sites.sf.sasl.password"), "{e}");
        // A broker that is down is retried.
        let down = ProducerError::Kafka {
            what: "creating topic t".into(),
            source: rdkafka::error::KafkaError::MetadataFetch(
                rdkafka::error::RDKafkaErrorCode::BrokerTransportFailure,
            ),
        };
        assert!(down.is_transient());
    }
}
