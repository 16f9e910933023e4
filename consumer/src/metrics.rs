//! The consumer's Prometheus metrics, served by `continuum-consumer` on `consumer.metrics_listen`
//! at `/metrics` (`apply` serves apply's, `mirror` the mirror's, `run` both): each metric defined
//! once here, as a [`MetricSpec`] (name, kind, unit, labels and help line), and [`ALL`] the
//! list from which [`describe`] gives each its unit and help line.
//! `docs/metrics.md` lists the same metrics, and the dashboard `docker/grafana/continuum.json`
//! uses only these names (both checked by `tests/metrics_contract.rs`).
//!
//! Guarantees: a name recorded by the consumer is one of these constants, with the labels its
//! entry in [`ALL`] gives. Apply's counters of rows, transactions and commits count committed work
//! only: a batch that rolls back counts nothing. The parallelism counters count what happened,
//! committed or not.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use continuum_common::observe::{MetricKind, MetricSpec};
use metrics::{counter, gauge, histogram, Unit};

// ---- apply -------------------------------------------------------------------------------

pub const APPLY_ROWS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_rows_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &["op"],
    help: "Rows applied, by op (insert, update, delete, read = snapshot).",
};
pub const APPLY_TRANSACTIONS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_transactions_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Source transactions applied.",
};
pub const APPLY_SKIPPED_TRANSACTIONS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_skipped_transactions_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Source transactions skipped by GTID (already applied).",
};
pub const APPLY_COMMITS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_commits_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "MariaDB transactions committed by apply.",
};
pub const APPLY_PARALLEL_BATCHES_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_parallel_batches_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Batches whose statements ran while a batch before them was still committing (consumer.apply.connections above 1).",
};
pub const APPLY_HELD_ROWS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_held_rows_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help:
        "Row changes held back until the commit of a batch before them that may touch the same row.",
};
pub const APPLY_BATCH_ROWS: MetricSpec = MetricSpec {
    name: "continuum_apply_batch_rows",
    kind: MetricKind::Histogram,
    unit: Unit::Count,
    labels: &[],
    help: "Rows per MariaDB transaction.",
};
pub const APPLY_BATCH_TRANSACTIONS: MetricSpec = MetricSpec {
    name: "continuum_apply_batch_transactions",
    kind: MetricKind::Histogram,
    unit: Unit::Count,
    labels: &[],
    help: "Source transactions per MariaDB transaction.",
};
pub const APPLY_SECONDS_BEHIND_SOURCE: MetricSpec = MetricSpec {
    name: "continuum_apply_seconds_behind_source",
    kind: MetricKind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    help: "Now minus the source time of the last applied transaction or heartbeat.",
};
pub const APPLY_CHECKPOINT_OFFSET: MetricSpec = MetricSpec {
    name: "continuum_apply_checkpoint_offset",
    kind: MetricKind::Gauge,
    unit: Unit::Count,
    labels: &[],
    help: "The checkpoint's next topic offset.",
};
pub const APPLY_ERRORS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_errors_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &["kind"],
    help: "Apply errors by kind; transient ones (apply restarts from the checkpoint) included.",
};
pub const APPLY_DDL_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_apply_ddl_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &["outcome"],
    help: "Schema changes by outcome (applied, already_applied, skipped).",
};
pub const APPLY_STALLED: MetricSpec = MetricSpec {
    name: "continuum_apply_stalled",
    kind: MetricKind::Gauge,
    unit: Unit::Count,
    labels: &[],
    help: "1 while apply is stopped at a record it cannot apply, 0 once a commit goes through.",
};

// ---- mirror ------------------------------------------------------------------------------

pub const MIRROR_ERRORS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_mirror_errors_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &["kind"],
    help: "Mirror errors by kind; transient ones (the mirror resumes) included.",
};
pub const MIRROR_RECORDS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_mirror_records_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Records copied from the other site's changelog topic.",
};
pub const MIRROR_RECORDS_DELIVERED_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_mirror_records_delivered_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Copied records the target cluster acknowledged.",
};
pub const MIRROR_LAG_RECORDS: MetricSpec = MetricSpec {
    name: "continuum_mirror_lag_records",
    kind: MetricKind::Gauge,
    unit: Unit::Count,
    labels: &[],
    help: "Records in the source topic not copied yet.",
};
pub const MIRROR_LAG_SECONDS: MetricSpec = MetricSpec {
    name: "continuum_mirror_lag_seconds",
    kind: MetricKind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    help: "Now minus the timestamp of the last record copied; 0 when caught up.",
};
pub const MIRROR_SCHEMA_TRANSLATIONS_TOTAL: MetricSpec = MetricSpec {
    name: "continuum_mirror_schema_translations_total",
    kind: MetricKind::Counter,
    unit: Unit::Count,
    labels: &[],
    help: "Schemas registered in the target registry for mirrored records.",
};

/// Every metric of the consumer: apply's, then the mirror's.
pub const ALL: &[MetricSpec] = &[
    APPLY_ROWS_TOTAL,
    APPLY_TRANSACTIONS_TOTAL,
    APPLY_SKIPPED_TRANSACTIONS_TOTAL,
    APPLY_COMMITS_TOTAL,
    APPLY_PARALLEL_BATCHES_TOTAL,
    APPLY_HELD_ROWS_TOTAL,
    APPLY_BATCH_ROWS,
    APPLY_BATCH_TRANSACTIONS,
    APPLY_SECONDS_BEHIND_SOURCE,
    APPLY_CHECKPOINT_OFFSET,
    APPLY_ERRORS_TOTAL,
    APPLY_DDL_TOTAL,
    APPLY_STALLED,
    MIRROR_ERRORS_TOTAL,
    MIRROR_RECORDS_TOTAL,
    MIRROR_RECORDS_DELIVERED_TOTAL,
    MIRROR_LAG_RECORDS,
    MIRROR_LAG_SECONDS,
    MIRROR_SCHEMA_TRANSLATIONS_TOTAL,
];

/// Gives each metric its unit and help line on `/metrics` (see
/// [`continuum_common::observe::describe`]). Call once at start-up.
pub fn describe() {
    continuum_common::observe::describe(ALL);
}

/// Per-op row counts of one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpCounts {
    pub insert: u64,
    pub update: u64,
    pub delete: u64,
    pub read: u64,
}

impl OpCounts {
    pub fn total(&self) -> u64 {
        self.insert + self.update + self.delete + self.read
    }
}

/// Records a committed batch.
pub fn batch_committed(ops: &OpCounts, txns: u64, skipped: u64, offset: i64) {
    counter!(APPLY_ROWS_TOTAL.name, "op" => "insert").increment(ops.insert);
    counter!(APPLY_ROWS_TOTAL.name, "op" => "update").increment(ops.update);
    counter!(APPLY_ROWS_TOTAL.name, "op" => "delete").increment(ops.delete);
    counter!(APPLY_ROWS_TOTAL.name, "op" => "read").increment(ops.read);
    counter!(APPLY_TRANSACTIONS_TOTAL.name).increment(txns);
    counter!(APPLY_SKIPPED_TRANSACTIONS_TOTAL.name).increment(skipped);
    counter!(APPLY_COMMITS_TOTAL.name).increment(1);
    histogram!(APPLY_BATCH_ROWS.name).record(ops.total() as f64);
    histogram!(APPLY_BATCH_TRANSACTIONS.name).record(txns as f64);
    gauge!(APPLY_CHECKPOINT_OFFSET.name).set(offset as f64);
}

/// A batch sent statements while a batch before it was committing.
pub fn parallel_batch() {
    counter!(APPLY_PARALLEL_BATCHES_TOTAL.name).increment(1);
}

/// Row changes held back until the commits before their batch: a handle taken once, as it
/// counts on apply's hot path.
pub fn held_rows() -> metrics::Counter {
    counter!(APPLY_HELD_ROWS_TOTAL.name)
}

/// Apply is stopped at a record it cannot apply (`true`), or committing again (`false`).
pub fn stalled(on: bool) {
    gauge!(APPLY_STALLED.name).set(if on { 1.0 } else { 0.0 });
}

pub fn ddl(outcome: &'static str) {
    counter!(APPLY_DDL_TOTAL.name, "outcome" => outcome).increment(1);
}

/// The source time of the last applied transaction or heartbeat, shared with the task that
/// keeps [`APPLY_SECONDS_BEHIND_SOURCE`] current while nothing arrives.
#[derive(Debug, Clone, Default)]
pub struct SourceClock(Arc<AtomicI64>);

impl SourceClock {
    pub fn set(&self, ts_ms: i64) {
        self.0.store(ts_ms, Ordering::Relaxed);
        Self::publish(ts_ms);
    }

    fn publish(ts_ms: i64) {
        if ts_ms > 0 {
            let behind = (continuum_common::observe::now_ms() - ts_ms).max(0) as f64 / 1000.0;
            gauge!(APPLY_SECONDS_BEHIND_SOURCE.name).set(behind);
        }
    }

    /// Updates the lag gauge every second until the process ends.
    pub fn spawn_ticker(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                Self::publish(me.0.load(Ordering::Relaxed));
            }
        });
    }
}
