//! # continuum-producer
//!
//! Captures every committed change on a MariaDB primary into the site's changelog topic, exactly
//! once, in commit order. The binary (`src/main.rs`) only parses flags and starts the
//! [`pipeline`]; every stage is a module of this library, so its logic is unit-tested without a
//! server:
//!
//! | module | what it does |
//! |---|---|
//! | [`pipeline`] | wires the stages: lock, preflight, resume decision, snapshot or streaming, restarts |
//! | [`preflight`] | checks the source's settings and privileges before anything is read |
//! | [`resume`] | where a run starts, from the topic's last record |
//! | [`snapshot`] | the consistent snapshot of the captured tables |
//! | [`incremental`] | incremental snapshots of given tables, in chunks, while streaming; resumable |
//! | [`request`] | the snapshot requests the operator queues on the source |
//! | [`boundary`] | where the binlog reader stands between transactions, in binlog coordinates (pure) |
//! | [`binlog`] | reads the binlog as a replica and turns it into [`binlog::SourceEvent`]s |
//! | [`rows`] | decodes row images by the table map's layout |
//! | [`shape`] | MariaDB column types to the schema's table shape and values |
//! | [`framing`] | the records of each transaction, with their place in it (pure) |
//! | [`sink`] | encodes records and writes them to the topic |
//! | [`error`] | the producer's errors, transient or fatal |
//! | [`metrics`] | the producer's metric names and descriptions, one list (checked against `docs/metrics.md` and the dashboard) |

pub mod binlog;
pub mod boundary;
pub mod error;
pub mod framing;
pub mod incremental;
pub mod metrics;
pub mod pipeline;
pub mod preflight;
pub mod request;
pub mod resume;
pub mod rows;
pub mod shape;
pub mod sink;
pub mod snapshot;
