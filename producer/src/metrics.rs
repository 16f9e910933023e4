//! The producer's Prometheus metrics, served by `continuum-producer` on `producer.metrics_listen`
//! at `/metrics`: each name defined once here, and [`ALL`] the list from which [`describe`] gives
//! each its unit and help line. `docs/metrics.md` lists the same metrics, and the dashboard
//! `docker/grafana/continuum.json` uses only these names (both checked by
//! `cargo test -p continuum-consumer --test metrics_contract`).
//!
//! Guarantees: a name recorded by the producer is one of these constants, with the labels its
//! entry in [`ALL`] gives; no call site spells a name itself.

use continuum_common::observe::{MetricKind, MetricSpec};
use metrics::Unit;

/// Errors by kind (`ProducerError::kind`), transient ones included.
pub const ERRORS_TOTAL: &str = "continuum_producer_errors_total";
/// Now minus the source time of the last binlog event read (0 while caught up and idle).
pub const SECONDS_BEHIND_SOURCE: &str = "continuum_producer_seconds_behind_source";
/// Source transactions written whole to the topic.
pub const TRANSACTIONS_TOTAL: &str = "continuum_producer_transactions_total";
/// The sequence number of the last committed GTID, by domain.
pub const LAST_GTID_SEQ: &str = "continuum_producer_last_gtid_seq";
/// Records sent to the topic, by kind.
pub const RECORDS_TOTAL: &str = "continuum_producer_records_total";
/// Records the broker acknowledged (the shared writer's delivery reports).
pub const RECORDS_DELIVERED_TOTAL: &str = "continuum_producer_records_delivered_total";
/// Bytes (key plus value) sent to the topic.
pub const BYTES_TOTAL: &str = "continuum_producer_bytes_total";
/// Rows read by a snapshot, by table.
pub const SNAPSHOT_ROWS_TOTAL: &str = "continuum_producer_snapshot_rows_total";
/// How far the running snapshot is, by the row estimate.
pub const SNAPSHOT_PROGRESS_PERCENT: &str = "continuum_producer_snapshot_progress_percent";

/// Every metric of the producer.
pub const ALL: &[MetricSpec] = &[
    MetricSpec {
        name: ERRORS_TOTAL,
        kind: MetricKind::Counter,
        unit: Unit::Count,
        labels: &["kind"],
        help: "Producer errors by kind; transient ones (the pipeline resumes) included.",
    },
    MetricSpec {
        name: SECONDS_BEHIND_SOURCE,
        kind: MetricKind::Gauge,
        unit: Unit::Seconds,
        labels: &[],
        help: "Now minus the source time of the last binlog event read; 0 while caught up.",
    },
    MetricSpec {
        name: TRANSACTIONS_TOTAL,
        kind: MetricKind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "Source transactions written whole to the changelog topic.",
    },
    MetricSpec {
        name: LAST_GTID_SEQ,
        kind: MetricKind::Gauge,
        unit: Unit::Count,
        labels: &["domain"],
        help: "Sequence number of the last committed GTID read, by GTID domain.",
    },
    MetricSpec {
        name: RECORDS_TOTAL,
        kind: MetricKind::Counter,
        unit: Unit::Count,
        labels: &["kind"],
        help: "Records sent to the changelog topic, by kind (row, ddl, heartbeat, snapshot).",
    },
    MetricSpec {
        name: RECORDS_DELIVERED_TOTAL,
        kind: MetricKind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "Records the broker acknowledged.",
    },
    MetricSpec {
        name: BYTES_TOTAL,
        kind: MetricKind::Counter,
        unit: Unit::Bytes,
        labels: &[],
        help: "Bytes (key plus value) sent to the changelog topic.",
    },
    MetricSpec {
        name: SNAPSHOT_ROWS_TOTAL,
        kind: MetricKind::Counter,
        unit: Unit::Count,
        labels: &["table"],
        help: "Rows read by snapshots, by table.",
    },
    MetricSpec {
        name: SNAPSHOT_PROGRESS_PERCENT,
        kind: MetricKind::Gauge,
        unit: Unit::Percent,
        labels: &[],
        help: "Progress of the running snapshot by the row estimate; 100 once it finished.",
    },
];

/// Gives each metric its unit and help line on `/metrics` (see
/// [`continuum_common::observe::describe`]). Call once at start-up.
pub fn describe() {
    continuum_common::observe::describe(ALL);
}
