//! Apply's Prometheus metrics (served on `consumer.metrics_listen` at `/metrics`), recorded with
//! the `metrics` crate. Counters count committed work only: a batch that rolls back counts
//! nothing.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `continuum_apply_rows_total{op}` | counter | rows applied, by op (`insert`, `update`, `delete`, `read` = snapshot) |
//! | `continuum_apply_transactions_total` | counter | source transactions applied |
//! | `continuum_apply_skipped_transactions_total` | counter | source transactions skipped by GTID (already applied) |
//! | `continuum_apply_commits_total` | counter | MariaDB transactions committed |
//! | `continuum_apply_batch_rows` | histogram | rows per MariaDB transaction |
//! | `continuum_apply_batch_transactions` | histogram | source transactions per MariaDB transaction |
//! | `continuum_apply_seconds_behind_source` | gauge | now minus the source time of the last applied transaction or heartbeat |
//! | `continuum_apply_checkpoint_offset` | gauge | the checkpoint's next offset |
//! | `continuum_apply_errors_total{kind}` | counter | errors by kind (`db`, `kafka`, `registry`, `record`, `ddl`, …), transient ones included |
//! | `continuum_apply_ddl_total{outcome}` | counter | schema changes `applied`, `already_applied`, `skipped` |
//! | `continuum_apply_stalled` | gauge | 1 while apply is stopped at a record it cannot apply (`consumer run` retries it every `consumer.apply.retry_failed_after`), 0 once a commit goes through |

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};

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
    counter!("continuum_apply_rows_total", "op" => "insert").increment(ops.insert);
    counter!("continuum_apply_rows_total", "op" => "update").increment(ops.update);
    counter!("continuum_apply_rows_total", "op" => "delete").increment(ops.delete);
    counter!("continuum_apply_rows_total", "op" => "read").increment(ops.read);
    counter!("continuum_apply_transactions_total").increment(txns);
    counter!("continuum_apply_skipped_transactions_total").increment(skipped);
    counter!("continuum_apply_commits_total").increment(1);
    histogram!("continuum_apply_batch_rows").record(ops.total() as f64);
    histogram!("continuum_apply_batch_transactions").record(txns as f64);
    gauge!("continuum_apply_checkpoint_offset").set(offset as f64);
}

/// Apply is stopped at a record it cannot apply (`true`), or committing again (`false`).
pub fn stalled(on: bool) {
    gauge!("continuum_apply_stalled").set(if on { 1.0 } else { 0.0 });
}

pub fn error(kind: &'static str) {
    counter!("continuum_apply_errors_total", "kind" => kind).increment(1);
}

pub fn ddl(outcome: &'static str) {
    counter!("continuum_apply_ddl_total", "outcome" => outcome).increment(1);
}

/// The source time of the last applied transaction or heartbeat, shared with the task that
/// keeps `continuum_apply_seconds_behind_source` current while nothing arrives.
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
            gauge!("continuum_apply_seconds_behind_source").set(behind);
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
