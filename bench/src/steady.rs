//! The steady state, on the end-to-end pipeline once it has caught up: the generator at 25%,
//! 50% and 75% of the end-to-end rows/s for `BENCH_STEADY_SECS` each, while a probe transaction
//! is committed on SF every 100 ms and its heartbeat row looked for on EU every 5 ms; lag = seen
//! on EU − written on SF (one clock). Probes come in three sizes ([`probe_rows`]): 1 row, 100
//! rows (the largest the lag goal covers) and 2 000 rows (the generator's large transactions),
//! and the lag is reported per size. Each load ends only when its last heartbeat has reached EU;
//! afterwards EU must hold exactly SF's rows, or the phase fails.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use mysql_async::prelude::*;

use crate::backlog::{generator, generator_args, target_of, wait_for_checkpoint, Backlog};
use crate::config::Cfg;
use crate::contestants::STACK;
use crate::db;
use crate::procs::{CpuWindow, Spawned};
use crate::report::{say, LagBySize, SteadyRun};

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Lag samples: (seconds since the run's start when sent, lag in ms).
type Series = Vec<(f64, f64)>;

/// One probe transaction as the watcher saw it arrive on EU.
#[derive(Debug, Clone, Copy)]
struct Probe {
    sent_us: i64,
    seen_us: i64,
    txn_rows: u32,
}

impl Probe {
    fn lag_ms(&self) -> f64 {
        (self.seen_us - self.sent_us) as f64 / 1000.0
    }

    fn in_goal(&self) -> bool {
        self.txn_rows <= GOAL_MAX_TXN_ROWS
    }
}

/// The largest probe transaction the lag goal covers, in rows.
pub const GOAL_MAX_TXN_ROWS: u32 = 100;

/// Rows in probe transaction `id` (one every 100 ms): every 100th (one each 10 s) is as large as
/// the generator's large transactions, every 10th as large as the lag goal covers, the rest are
/// the heartbeat row alone.
pub fn probe_rows(id: u64) -> u32 {
    match id {
        i if i % 100 == 0 => 2_000,
        i if i % 10 == 0 => GOAL_MAX_TXN_ROWS,
        _ => 1,
    }
}

/// The statements of probe `id` of `rows` rows, committed together: `rows - 1` filler rows
/// (about 300 bytes each, like the load's), then the heartbeat row with the time it is sent.
fn probe_sql(db: &str, id: u64, rows: u32, sent_us: i64) -> String {
    let heartbeat = format!(
        "INSERT INTO `{db}`.heartbeat (id, sent_us, txn_rows) VALUES ({id}, {sent_us}, {rows})"
    );
    if rows <= 1 {
        return heartbeat;
    }
    let pad = "p".repeat(250);
    let fill: Vec<String> = (1..rows).map(|n| format!("({id},{n},'{pad}')")).collect();
    format!(
        "START TRANSACTION; INSERT INTO `{db}`.heartbeat_fill (hb_id, n, pad) VALUES {}; {heartbeat}; COMMIT",
        fill.join(",")
    )
}

/// p50, p99 and max of `lags` (sorted here), NaN when there are none.
fn percentiles(lags: &mut [f64]) -> (f64, f64, f64) {
    lags.sort_by(|a, b| a.total_cmp(b));
    let pctl = |p: f64| -> f64 {
        if lags.is_empty() {
            return f64::NAN;
        }
        let i = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len()) - 1;
        lags[i]
    };
    (
        pctl(0.50),
        pctl(0.99),
        lags.last().copied().unwrap_or(f64::NAN),
    )
}

pub async fn steady(
    cfg: &Cfg,
    bl: &Backlog,
    topic: &str,
    max_rows_per_s: f64,
    pipeline: &mut [Spawned],
) -> Result<Vec<SteadyRun>> {
    let mut out = Vec::new();
    let next_id = Arc::new(AtomicU64::new(1));
    for pct in [25u32, 50, 75] {
        let rate = max_rows_per_s * pct as f64 / 100.0;
        say(format!("steady state at {pct}% of the end-to-end maximum: {rate:.0} row changes/s for {} s, heartbeats every 100 ms", cfg.steady_secs));
        let mut win = CpuWindow::start(&cfg.stack_procs(STACK));
        win.add_new("producer", pipeline[0].pid);
        win.add_new("consumer run", pipeline[1].pid);
        let base: BTreeMap<String, f64> = [("producer", 0usize), ("consumer run", 1)]
            .iter()
            .map(|(n, i)| (n.to_string(), pipeline[*i].cpu_now().unwrap_or(0.0)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<Probe>>> = Arc::new(Mutex::new(Vec::new()));
        let first_id = next_id.load(Ordering::Relaxed);
        let t_start_us = now_us();
        // Heartbeat writer on SF.
        let writer = {
            let (sf, stop, next_id, dbn) = (
                cfg.sf.clone(),
                stop.clone(),
                next_id.clone(),
                cfg.args.database.clone(),
            );
            tokio::spawn(async move {
                let mut c = sf.conn().await?;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    c.query_drop(probe_sql(&dbn, id, probe_rows(id), now_us()))
                        .await?;
                }
                anyhow::Ok(next_id.load(Ordering::Relaxed) - 1)
            })
        };
        // Watcher on EU.
        let watcher = {
            let (eu, samples, dbn) = (cfg.eu.clone(), samples.clone(), cfg.args.database.clone());
            let stop_after = Arc::new(AtomicU64::new(u64::MAX));
            let sa = stop_after.clone();
            let h = tokio::spawn(async move {
                let mut c = eu.conn().await?;
                let mut last = first_id as i64 - 1;
                let give_up = Instant::now() + Duration::from_secs(3600);
                loop {
                    let rows: Vec<(i64, i64, u32)> = c.query(format!("SELECT id, sent_us, txn_rows FROM `{dbn}`.heartbeat WHERE id > {last} ORDER BY id")).await?;
                    let seen = now_us();
                    {
                        let mut s = samples.lock().unwrap();
                        for (id, sent, rows) in rows {
                            s.push(Probe {
                                sent_us: sent,
                                seen_us: seen,
                                txn_rows: rows,
                            });
                            last = last.max(id);
                        }
                    }
                    if last as u64 >= sa.load(Ordering::Relaxed) || Instant::now() > give_up {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                anyhow::Ok(())
            });
            (h, stop_after)
        };
        let lead = [
            "--rate".into(),
            format!("{rate:.1}"),
            "--duration".into(),
            format!("{}s", cfg.steady_secs),
        ];
        let gen = generator(cfg, &generator_args(cfg, &lead, cfg.args.seed + pct as u64)).await;
        stop.store(true, Ordering::Relaxed);
        let last_id = writer.await??;
        let gen = gen?;
        watcher.1.store(last_id, Ordering::Relaxed);
        // Let the pipeline deliver the last heartbeat (it also drains what the generator wrote).
        let drain_t0 = Instant::now();
        let drained = tokio::time::timeout(cfg.phase_timeout, watcher.0).await;
        let drain_s = drain_t0.elapsed().as_secs_f64();
        for p in pipeline.iter_mut() {
            p.ensure_running()?;
        }
        match drained {
            Ok(r) => r??,
            Err(_) => bail!(
                "steady state at {pct}%: the last heartbeat did not reach EU within {:?}",
                cfg.phase_timeout
            ),
        }
        let cpu = win.finish(&BTreeMap::new());
        let mut cpu = cpu;
        for (n, b) in &base {
            if let Some(v) = cpu.cpu_s.get_mut(n) {
                *v = (*v - b).max(0.0);
            }
        }
        let s = samples.lock().unwrap().clone();
        let gen_rows = gen["rows"].as_u64().unwrap_or(0);
        let gen_s = gen["elapsed_s"].as_f64().unwrap_or(cfg.steady_secs as f64);
        let mut lags: Vec<f64> = s
            .iter()
            .filter(|p| p.in_goal())
            .map(Probe::lag_ms)
            .collect();
        let series: Series = s
            .iter()
            .filter(|p| p.in_goal())
            .map(|p| ((p.sent_us - t_start_us) as f64 / 1e6, p.lag_ms()))
            .collect();
        let mut sizes: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for p in &s {
            sizes.entry(p.txn_rows).or_default().push(p.lag_ms());
        }
        let by_size = sizes
            .into_iter()
            .map(|(txn_rows, mut l)| {
                let (p50_ms, p99_ms, max_ms) = percentiles(&mut l);
                LagBySize {
                    txn_rows,
                    probes: l.len() as u64,
                    p50_ms,
                    p99_ms,
                    max_ms,
                }
            })
            .collect();
        let (p50_ms, p99_ms, max_ms) = percentiles(&mut lags);
        let run = SteadyRun {
            load_pct: pct,
            target_rows_per_s: rate,
            achieved_rows_per_s: gen_rows as f64 / gen_s,
            seconds: gen_s,
            rows: gen_rows,
            heartbeats: lags.len() as u64,
            p50_ms,
            p99_ms,
            max_ms,
            by_size,
            drain_after_s: drain_s,
            cpu_per_1k_rows: cpu.per_1k_rows(gen_rows.max(1)),
            cpu,
            series,
        };
        say(format!(
            "steady {pct}%: {:.0} rows/s achieved, {} probes of up to {GOAL_MAX_TXN_ROWS} rows, lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; by size: {}",
            run.achieved_rows_per_s, run.heartbeats, run.p50_ms, run.p99_ms, run.max_ms,
            run.by_size.iter().map(|b| format!("{} rows p50 {:.0} p99 {:.0} ms ({})", b.txn_rows, b.p50_ms, b.p99_ms, b.probes)).collect::<Vec<_>>().join(", ")
        ));
        out.push(run);
    }
    // After the steady runs: EU still holds exactly SF's rows.
    let pos = {
        let mut sf = cfg.sf.conn().await?;
        db::gtid_binlog_pos(&mut sf).await?
    };
    let target = target_of(&bl.before, &pos);
    wait_for_checkpoint(
        cfg,
        "end to end after the steady state",
        topic,
        &target,
        Duration::from_millis(200),
        || Ok(()),
    )
    .await?;
    let mut sf = cfg.sf.conn().await?;
    let mut tables = bl.tables.clone();
    tables.extend(db::PROBE_TABLES.map(String::from));
    let sums = db::checksums(&mut sf, &cfg.args.database, &tables).await?;
    let v = db::verify(&cfg.eu, &cfg.args.database, &tables, &sums).await?;
    if !v.0 {
        bail!("after the steady state EU differs from SF: {}", v.1);
    }
    say("after the steady state EU holds exactly SF's rows");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_come_in_three_sizes_at_fixed_shares() {
        let sizes: Vec<u32> = (1..=1000).map(probe_rows).collect();
        let count = |n: u32| sizes.iter().filter(|s| **s == n).count();
        assert_eq!((count(1), count(100), count(2000)), (900, 90, 10));
    }

    #[test]
    fn a_probe_commits_its_fill_rows_with_its_heartbeat() {
        assert_eq!(
            probe_sql("b", 7, 1, 42),
            "INSERT INTO `b`.heartbeat (id, sent_us, txn_rows) VALUES (7, 42, 1)"
        );
        let sql = probe_sql("b", 10, 100, 42);
        assert!(
            sql.starts_with("START TRANSACTION; INSERT INTO `b`.heartbeat_fill"),
            "{sql}"
        );
        assert!(sql.ends_with("VALUES (10, 42, 100); COMMIT"), "{sql}");
        assert_eq!(
            sql.matches("(10,").count(),
            100,
            "99 fill rows and the heartbeat"
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(percentiles(&mut l), (100.0, 198.0, 200.0));
        let (p50, p99, max) = percentiles(&mut []);
        assert!(p50.is_nan() && p99.is_nan() && max.is_nan());
    }
}
