//! The backlog every contestant drains: `workload bench` writes exactly `BENCH_ROWS` row
//! changes to SF while every reader is stopped, and the GTID positions before and after say
//! where a contestant starts and when it is done. Also the generator runner the steady state
//! uses, and the polling that waits for a target to hold a position.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use continuum_schemas::GtidPosition;

use crate::config::Cfg;
use crate::db;
use crate::report::{say, Report};

/// The backlog as written: where it starts, where a drain ends, and the source's final rows.
#[derive(Debug, Clone)]
pub struct Backlog {
    pub before: GtidPosition,
    pub target: GtidPosition,
    pub rows: u64,
    pub defs: Vec<(String, String)>,
    pub tables: Vec<String>,
    pub source_sums: BTreeMap<String, (u64, u64)>,
}

/// Runs `workload bench ARGS` to completion and returns its JSON summary.
pub async fn generator(cfg: &Cfg, args: &[String]) -> Result<serde_json::Value> {
    let mut cmd = tokio::process::Command::new(cfg.bin("workload"));
    cmd.arg("bench")
        .args(args)
        .args(["--database", &cfg.args.database]);
    for (k, v) in cfg.generator_env() {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {} bench", cfg.bin("workload").display()))?;
    if !out.status.success() {
        bail!(
            "workload bench {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "workload bench output: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `workload bench`'s flags for a run: `lead` (how much to write), then `BENCH_WORKERS`
/// connections and `seed`.
pub fn generator_args(cfg: &Cfg, lead: &[String], seed: u64) -> Vec<String> {
    let mut args = lead.to_vec();
    args.extend([
        "--workers".into(),
        cfg.args.workers.to_string(),
        "--seed".into(),
        seed.to_string(),
    ]);
    args
}

/// The domains the backlog advanced, with their positions after it: what "drained" means.
pub fn target_of(before: &GtidPosition, after: &GtidPosition) -> GtidPosition {
    let mut t = GtidPosition::new();
    for g in after.iter() {
        if !before.contains(g) {
            t = t.with(*g);
        }
    }
    t
}

/// Whether a position read from a target (text) covers `target`.
pub fn covers(observed: &str, target: &GtidPosition) -> bool {
    observed
        .trim()
        .parse::<GtidPosition>()
        .map(|p| p.covers(target))
        .unwrap_or(false)
}

/// Polls `check` every `every` until it returns true and returns how long that took; fails
/// with `check`'s error, or after `timeout`.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        if check().await? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            bail!("{what}: not done after {timeout:?} (BENCH_PHASE_TIMEOUT raises the limit)");
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until EU's checkpoint for `topic` covers `target`.
pub async fn wait_for_checkpoint(
    cfg: &Cfg,
    what: &str,
    topic: &str,
    target: &GtidPosition,
    every: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Duration> {
    wait_until(what, cfg.phase_timeout, every, async || {
        alive()?;
        Ok(db::checkpoint_position(&cfg.eu, topic)
            .await?
            .is_some_and(|p| covers(&p, target)))
    })
    .await
}

/// Re-creates the bench database on SF (and its empty tables on EU), then writes the backlog.
pub async fn make(cfg: &Cfg, rep: &mut Report) -> Result<Backlog> {
    let mut sf = cfg.sf.conn().await?;
    let mut eu = cfg.eu.conn().await?;
    say(format!(
        "creating {} on SF (10 tables), and the same empty tables on EU",
        cfg.args.database
    ));
    generator(cfg, &["--reset".into()]).await?;
    let defs = db::table_definitions(&mut sf, &cfg.args.database).await?;
    let tables = db::load_tables(&defs);
    db::recreate(&mut eu, &cfg.args.database, &defs).await?;
    let before = db::gtid_binlog_pos(&mut sf).await?;
    say(format!(
        "backlog: {} row changes on SF, every reader stopped; GTID position before: {before}",
        cfg.args.rows
    ));
    let t0 = Instant::now();
    let args = generator_args(
        cfg,
        &["--rows".into(), cfg.args.rows.to_string()],
        cfg.args.seed,
    );
    let summary = generator(cfg, &args).await?;
    let gen_s = t0.elapsed().as_secs_f64();
    let after = db::gtid_binlog_pos(&mut sf).await?;
    let target = target_of(&before, &after);
    let rows = summary["rows"].as_u64().unwrap_or(0);
    if rows != cfg.args.rows {
        bail!(
            "the generator wrote {rows} row changes, not {}",
            cfg.args.rows
        );
    }
    let txns = summary["transactions"].as_u64().unwrap_or(0);
    let seq_span: u64 = target
        .iter()
        .map(|g| {
            g.seq
                - before
                    .iter()
                    .find(|b| b.domain == g.domain)
                    .map_or(0, |b| b.seq)
        })
        .sum();
    if seq_span != txns {
        say(format!("warning: SF's binlog advanced by {seq_span} transactions, the generator committed {txns}: something else writes to SF"));
        rep.notes.push(format!("SF's binlog advanced by {seq_span} transactions during the backlog, the generator committed {txns}: another client wrote to SF."));
    }
    say(format!(
        "backlog written in {gen_s:.1} s ({:.0} rows/s on SF); after: {after}",
        rows as f64 / gen_s
    ));
    let source_sums = db::checksums(&mut sf, &cfg.args.database, &tables).await?;
    rep.backlog = serde_json::json!({
        "rows": rows,
        "transactions": txns,
        "large_transactions": summary["large_transactions"],
        "inserted": summary["inserted"],
        "updated": summary["updated"],
        "deleted": summary["deleted"],
        "final_rows": source_sums.values().map(|v| v.0).sum::<u64>(),
        "tables": tables.len(),
        "generator_workers": cfg.args.workers,
        "generated_s": gen_s,
        "generated_rows_per_s": rows as f64 / gen_s,
        "gtid_before": before.to_string(),
        "gtid_after": after.to_string(),
    });
    Ok(Backlog {
        before,
        target,
        rows,
        defs,
        tables,
        source_sums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_is_what_advanced() {
        let pos = |s: &str| s.parse::<GtidPosition>().unwrap();
        let target = target_of(&pos("1-1-10,2-2-5"), &pos("1-1-20,2-2-5"));
        assert_eq!(target.to_string(), "1-1-20");
        assert!(covers("1-1-20,2-2-1", &target));
        assert!(!covers("1-1-19", &target));
        assert!(!covers("", &target));
    }
}
