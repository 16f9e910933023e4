//! The steady state, on the end-to-end pipeline once it has caught up: the generator at 25%,
//! 50% and 75% of the end-to-end rows/s for `BENCH_STEADY_SECS` each, while a heartbeat row is
//! written on SF every 100 ms and looked for on EU every 5 ms; lag = seen on EU − written on SF
//! (one clock). Each load ends only when its last heartbeat has reached EU; afterwards EU must
//! hold exactly SF's rows, or the phase fails.

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
use crate::report::{say, SteadyRun};

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Lag samples: (seconds since the run's start when sent, lag in ms).
type Series = Vec<(f64, f64)>;

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
        let samples: Arc<Mutex<Vec<(i64, i64, i64)>>> = Arc::new(Mutex::new(Vec::new()));
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
                    c.query_drop(format!(
                        "INSERT INTO `{dbn}`.heartbeat (id, sent_us) VALUES ({id}, {})",
                        now_us()
                    ))
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
                    let rows: Vec<(i64, i64)> = c.query(format!("SELECT id, sent_us FROM `{dbn}`.heartbeat WHERE id > {last} ORDER BY id")).await?;
                    let seen = now_us();
                    {
                        let mut s = samples.lock().unwrap();
                        for (id, sent) in rows {
                            s.push((id, sent, seen));
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
            .map(|(_, sent, seen)| (seen - sent) as f64 / 1000.0)
            .collect();
        let series: Series = s
            .iter()
            .map(|(_, sent, seen)| {
                (
                    (sent - t_start_us) as f64 / 1e6,
                    (seen - sent) as f64 / 1000.0,
                )
            })
            .collect();
        lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pctl = |p: f64| -> f64 {
            if lags.is_empty() {
                return f64::NAN;
            }
            let i = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len()) - 1;
            lags[i]
        };
        let run = SteadyRun {
            load_pct: pct,
            target_rows_per_s: rate,
            achieved_rows_per_s: gen_rows as f64 / gen_s,
            seconds: gen_s,
            rows: gen_rows,
            heartbeats: lags.len() as u64,
            p50_ms: pctl(0.50),
            p99_ms: pctl(0.99),
            max_ms: lags.last().copied().unwrap_or(f64::NAN),
            drain_after_s: drain_s,
            cpu_per_1k_rows: cpu.per_1k_rows(gen_rows.max(1)),
            cpu,
            series,
        };
        say(format!(
            "steady {pct}%: {:.0} rows/s achieved, {} heartbeats, lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            run.achieved_rows_per_s, run.heartbeats, run.p50_ms, run.p99_ms, run.max_ms
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
    tables.push("heartbeat".into());
    let sums = db::checksums(&mut sf, &cfg.args.database, &tables).await?;
    let v = db::verify(&cfg.eu, &cfg.args.database, &tables, &sums).await?;
    if !v.0 {
        bail!("after the steady state EU differs from SF: {}", v.1);
    }
    say("after the steady state EU holds exactly SF's rows");
    Ok(out)
}
