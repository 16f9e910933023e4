//! The producer's Prometheus metrics, served by `continuum-producer` on `producer.metrics_listen`
//! at `/metrics`: each metric defined once here, as a [`MetricSpec`] (name, kind, unit, labels
//! and help line), and [`ALL`] the list from which [`describe`] gives each its unit and help
//! line. `docs/metrics.md` lists the same metrics, and the dashboard
//! `docker/grafana/continuum.json` uses only these names (both checked by
//! `cargo test -p continuum-consumer --test metrics_contract`).
//!
//! Guarantees: a name recorded by the producer is one of these constants, with the labels its
//! entry in [`ALL`] gives; no call site spells a name itself.

use continuum_common::observe::{MetricKind, MetricSpec};
use metrics::Unit;

pub const ERRORS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_producer_errors_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &["kind"],
    help: "Producer errors by kind; transient ones (the pipeline resumes) included.",
};
pub const SECONDS_BEHIND_SOURCE: MetricSpec = MetricSpec {
    name: "continuum_producer_seconds_behind_source",
    kind: MetricKind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    help: "Now minus the source time of the last binlog event read; 0 while caught up.",
};
pub const TRANSACTIONS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_producer_transactions_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Source transactions written whole to the changelog topic.",
};
pub const LAST_GTID_SEQ: MetricSpec = MetricSpec {
    name: "continuum_producer_last_gtid_seq",
    kind: MetricKind::Gauge,
    unit: Unit::Count,
    labels: &["domain"],
    help: "Sequence number of the last committed GTID read, by GTID domain.",
};
pub const RECORDS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_producer_records_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &["kind"],
    help: "Records sent to the changelog topic, by kind (row, ddl, heartbeat, snapshot).",
};
pub const RECORDS_DELIVERED_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_producer_records_delivered_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Records the broker acknowledged.",
};
pub const BYTES_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_producer_bytes_total",
    kind: MetricKind::Counter,
    unit: Unit::Bytes,
    labels: &[],
    help: "Bytes (key plus value) sent to the changelog topic.",
};
pub const SNAPSHOT_ROWS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_producer_snapshot_rows_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &["table"],
    help: "Rows read by snapshots, by table.",
};
pub const SNAPSHOT_PROGRESS_PERCENT: MetricSpec = MetricSpec {
    name: "continuum_producer_snapshot_progress_percent",
    kind: MetricKind::Gauge,
    unit: Unit::Percent,
    labels: &[],
    help: "Progress of the running snapshot by the row estimate; 100 once it finished.",
};

/// Every metric of the producer.
pub const ALL: &[MetricSpec] = &[
    ERRORS_TOTAL,
    SECONDS_BEHIND_SOURCE,
    TRANSACTIONS_TOTAL,
    LAST_GTID_SEQ,
    RECORDS_TOTAL,
    RECORDS_DELIVERED_TOTAL,
    BYTES_TOTAL,
    SNAPSHOT_ROWS_TOTAL,
    SNAPSHOT_PROGRESS_PERCENT,
];

/// Gives each metric its unit and help line on `/metrics` (see
/// [`continuum_common::observe::describe`]). Call once at start-up.
pub fn describe() {
    continuum_common::observe::describe(ALL);
}
