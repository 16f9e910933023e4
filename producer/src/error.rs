//! The producer's errors, split into transient (retried with backoff: the pipeline restarts from
//! the topic's last record) and fatal (the producer stops and says what to do).

use continuum_schemas::CodecError;

use continuum_common::binlog::Refusal;

use crate::shape::{BadValue, UnsupportedColumn};

/// What an error 1236 means for the producer, and what to do.
fn refused(target: &str, position: &str, refusal: &Refusal, message: &str) -> String {
    match refusal {
        Refusal::Purged => format!(
            "the binlog position {position} is no longer on the source {target}: the binlog files that hold it were purged (error 1236: {message}). The changes since then are lost to this pipeline. To repair the replica in place while the pipeline runs: restart the producer once with --recapture (it streams from the source's current position and snapshots every captured table incrementally; docs/snapshot.md, \"After a purged binlog\"); or, to reload the replica's tables from scratch, with --resnapshot. Then keep binlogs (binlog_expire_logs_seconds) longer than the producer may be stopped"
        ),
        Refusal::NotInBinlog { gtid } => format!(
            "the topic's position {position} names GTID {gtid}, which the source {target} never wrote: its binlog ends before it in that domain (error 1236: {message}). The topic was written from another server, or from an earlier life of this one (a restore, RESET MASTER, a rebuilt primary). Check that database.host and database.port name the server this topic captures; if the server was replaced on purpose, restart with --resnapshot"
        ),
        Refusal::Diverged { gtid } => format!(
            "the topic's position {position} names GTID {gtid}, which is not in the binlog of the source {target} although that binlog goes further in the domain (error 1236: {message}): the source's history and the topic's have diverged (the source lost transactions the topic holds, for example by a restore or a failover to a server that lacked them, or wrote others in their place). Resuming would mix two histories. Compare the sites with continuum-consumer verify, then restart with --resnapshot"
        ),
        Refusal::StrictModeHole { gtid } => format!(
            "the topic's position {position} names GTID {gtid}, which the binlog of the source {target} lacks although it holds an earlier and a later sequence number of that domain and server; the producer reads with GTID strict mode, so the server refuses to start there (error 1236: {message}). That transaction was not binlogged (written with sql_log_bin=0, or a gtid_seq_no set by hand skipped it): the topic cannot resume exactly; restart with --resnapshot"
        ),
        Refusal::EventTooLarge => format!(
            "the source {target} did not send a binlog event after {position}: it is over the server's 1 GiB replication limit (max_allowed_packet) or the binlog is corrupt there (error 1236: {message}). Check that binlog position with mariadb-binlog; once the source's binlog is past it, restart with --resnapshot"
        ),
        Refusal::Other => format!(
            "the source {target} refused to send its binlog from {position} (error 1236: {message}). Fix what the server's message names, then restart the producer"
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    // ---- transient ----
    #[error("source MariaDB {target}: {source}")]
    Db {
        target: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("the definition of {table} changed while the snapshot read it ({detail}); a new snapshot starts")]
    DefinitionChanged { table: String, detail: String },
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
    /// The session ends at a transaction boundary to start again from there (for a table
    /// newly captured, whose definitions go into the topic only between transactions).
    #[error("{0}; the session starts again from the topic's last record")]
    Restart(String),

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
    /// Error 1236: the source does not send its binlog from `position`; why is in `refusal`.
    #[error("{}", refused(.target, .position, .refusal, .message))]
    PositionRefused {
        target: String,
        position: String,
        refusal: Refusal,
        message: String,
    },
    #[error("a binlog event of {target} after GTID position {position} is larger than {limit} bytes, the largest packet a replica connection takes (max_allowed_packet = {limit}, MariaDB's maximum, as for a native replica's slave_max_allowed_packet), so no replica can read it ({detail}). Continuum cannot stream past that event: once the source's binlog is past it, restart with --resnapshot (a new snapshot, then streaming from there)")]
    PacketTooLarge {
        target: String,
        position: String,
        limit: usize,
        detail: String,
    },
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
    #[error("tables without a primary key are captured: {tables}. Add a primary key, exclude them (producer.exclude), or set producer.tables_without_primary_key to \"replicate\" (rows matched by every value) or \"exclude\"")]
    NoPrimaryKey { tables: String },
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl From<continuum_common::request::RequestError> for ProducerError {
    fn from(e: continuum_common::request::RequestError) -> Self {
        use continuum_common::request::RequestError;
        match e {
            RequestError::Db { target, source } => ProducerError::Db { target, source },
            RequestError::Refused(m) => ProducerError::Snapshot(m),
        }
    }
}

impl ProducerError {
    /// Whether restarting the pipeline (from the topic's last record) may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ProducerError::Db { source, .. } => {
                continuum_common::db::is_transient(source) || is_connect_error(source)
            }
            ProducerError::Kafka { source, .. } => continuum_common::kafka::is_transient(source),
            ProducerError::Delivery { .. }
            | ProducerError::DefinitionChanged { .. }
            | ProducerError::Restart(_) => true,
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
            ProducerError::PositionRefused { refusal, .. } => match refusal {
                Refusal::Purged => "purged",
                Refusal::NotInBinlog { .. } => "position_unknown",
                Refusal::Diverged { .. } => "diverged",
                Refusal::StrictModeHole { .. } => "position_in_gap",
                Refusal::EventTooLarge => "packet",
                Refusal::Other => "binlog_refused",
            },
            ProducerError::PacketTooLarge { .. } => "packet",
            ProducerError::Lock(_) => "lock",
            ProducerError::RecordTooLarge { .. } | ProducerError::Refused(_) => "too_large",
            ProducerError::Resume(_) => "resume",
            ProducerError::Binlog(_) => "binlog",
            ProducerError::Snapshot(_)
            | ProducerError::DefinitionChanged { .. }
            | ProducerError::Restart(_) => "snapshot",
        }
    }
}

fn is_connect_error(e: &mysql_async::Error) -> bool {
    if continuum_common::db::is_packet_too_large(e) {
        return false;
    }
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
    use continuum_common::kafka::{refusal_error, SecurityFailure};

    #[test]
    fn a_packet_over_the_limit_is_not_retried() {
        let packet: mysql_async::Error = mysql_async::DriverError::PacketTooLarge.into();
        let e = ProducerError::Db {
            target: "continuum@db:3306".into(),
            source: packet,
        };
        assert!(!e.is_transient(), "{e}");
        let reset: mysql_async::Error =
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        let e = ProducerError::Db {
            target: "continuum@db:3306".into(),
            source: reset,
        };
        assert!(e.is_transient(), "{e}");
    }

    #[test]
    fn a_cluster_that_refuses_the_client_stops_the_producer() {
        let e = ProducerError::Kafka {
            what: "creating topic t".into(),
            source: refusal_error(SecurityFailure::SaslCredentials, "sites.sf.sasl.password"),
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
