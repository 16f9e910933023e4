//! The results: one JSON file, one Markdown file, one PNG, named after BENCH_ROWS and the
//! durability mode (`bench-<rows>[-relaxed].{json,md,png}`), so a smoke run never overwrites
//! a full one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::config::Cfg;
use crate::db::Durability;
use crate::procs::CpuUse;

/// A progress line on stderr, with the time.
pub fn say(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {}] {}",
        chrono::Utc::now().format("%H:%M:%S"),
        msg.as_ref()
    );
}

#[derive(Debug, Clone, Serialize)]
pub struct Contestant {
    /// Short name in the results (`native_st`, `e2e`, ...) and its label in the report.
    pub key: String,
    pub name: String,
    #[serde(flatten)]
    pub drain: Drain,
    /// `rows_per_s` over native replication's with 1 SQL thread, and with 4 threads.
    pub ratio_native_st: Option<f64>,
    pub ratio_native_par: Option<f64>,
    /// CPU seconds per 1000 rows, per process.
    pub cpu_per_1k_rows: BTreeMap<String, f64>,
    /// Peak RSS (VmHWM, or ru_maxrss of a process that exited) of each Continuum binary, MiB.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// The brokers' share of the CPU used by the processes measured.
    pub broker_cpu_share: Option<f64>,
    /// The brokers' share of the machine (cores x wall time).
    pub broker_machine_share: Option<f64>,
    pub cpu: CpuUse,
    /// The target's tables equal SF's (row count and CHECKSUM TABLE).
    pub verified: bool,
    pub verify_detail: String,
}

/// The row changes a contestant drained, in `seconds` of wall time, and their rate (at the top
/// level of the contestant's JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
}

impl Drain {
    pub fn new(rows: u64, seconds: f64) -> Drain {
        Drain {
            rows,
            seconds,
            rows_per_s: rows as f64 / seconds,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SteadyRun {
    pub load_pct: u32,
    pub target_rows_per_s: f64,
    pub achieved_rows_per_s: f64,
    pub seconds: f64,
    pub rows: u64,
    /// Probes of up to `steady::GOAL_MAX_TXN_ROWS` rows, and their lag (the goal's).
    pub heartbeats: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The lag of each size of probe transaction.
    pub by_size: Vec<LagBySize>,
    /// How long after the generator stopped the last heartbeat reached EU.
    pub drain_after_s: f64,
    pub cpu_per_1k_rows: BTreeMap<String, f64>,
    pub cpu: CpuUse,
    /// (seconds since the run started, lag ms) per heartbeat.
    pub series: Vec<(f64, f64)>,
}

/// The lag of the probe transactions of one size, in one load.
#[derive(Debug, Clone, Serialize)]
pub struct LagBySize {
    pub txn_rows: u32,
    pub probes: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: Option<f64>,
    pub unit: String,
    pub target: f64,
    /// `at least` or `at most`.
    pub direction: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub date_utc: String,
    pub commit: Option<String>,
    pub machine: serde_json::Value,
    pub broker: String,
    pub durability: Durability,
    pub relaxed: bool,
    pub build_profile: String,
    pub bench_rows: u64,
    pub backlog: serde_json::Value,
    pub contestants: Vec<Contestant>,
    pub steady: Vec<SteadyRun>,
    /// Copies of the bench tables into EU's emptied tables: Continuum's incremental snapshot, and
    /// `mariadb-dump | mariadb`.
    pub snapshots: Vec<Contestant>,
    pub goals: Vec<Goal>,
    pub notes: Vec<String>,
    #[serde(skip)]
    out_stem: String,
}

/// The brokers and registries the run measured, from the install roots `make tools` recorded
/// in `.stack/env` (`KAFKA_HOME=.../kafka-4.4.0`, `APICURIO_HOME=.../apicurio-registry-3.3.3`).
fn stack_servers(cfg: &Cfg) -> String {
    let version = |home: &Option<PathBuf>, prefix: &str| {
        home.as_ref()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .and_then(|n| n.strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "Apache Kafka {} (KRaft, one node per site), Apicurio Registry {} (kafkasql)",
        version(&cfg.args.stack.kafka_home, "kafka-"),
        version(&cfg.args.stack.apicurio_home, "apicurio-registry-")
    )
}

fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()?
        .trim()
        .to_owned();
    (!s.is_empty()).then_some(s)
}

fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned());
    serde_json::json!({
        "cores": cores,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu": model,
        "kernel": first_line("uname", &["-r"]),
        "mariadb": first_line("mariadbd", &["--version"]),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
    })
}

impl Report {
    pub fn new(cfg: &Cfg, d: &Durability, run_id: &str) -> Report {
        let commit = std::process::Command::new("git")
            .args([
                "-C",
                &cfg.root.to_string_lossy(),
                "rev-parse",
                "--short",
                "HEAD",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let notes = vec![format!(
            "Build profile: {} (BENCH_PROFILE).",
            cfg.args.profile
        )];
        Report {
            run_id: run_id.to_owned(),
            date_utc: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            commit,
            machine: machine(),
            broker: stack_servers(cfg),
            durability: d.clone(),
            relaxed: cfg.args.relaxed,
            build_profile: cfg.args.profile.clone(),
            bench_rows: cfg.args.rows,
            backlog: serde_json::Value::Null,
            contestants: Vec::new(),
            steady: Vec::new(),
            snapshots: Vec::new(),
            goals: Vec::new(),
            notes,
            out_stem: format!(
                "bench-{}{}",
                cfg.args.rows,
                if cfg.args.relaxed { "-relaxed" } else { "" }
            ),
        }
    }

    fn get(&self, key: &str) -> Option<&Contestant> {
        self.contestants.iter().find(|c| c.key == key)
    }

    /// Ratios and goals.
    pub fn finish(&mut self) {
        let st = self.get("native_st").map(|c| c.drain.rows_per_s);
        let par = self.get("native_par").map(|c| c.drain.rows_per_s);
        for c in &mut self.contestants {
            c.ratio_native_st = st.map(|s| c.drain.rows_per_s / s);
            c.ratio_native_par = par.map(|p| c.drain.rows_per_s / p);
        }
        let e2e = self.get("e2e").cloned();
        let prod = self.get("producer").cloned();
        let apply = self.get("apply").cloned();
        let load = self.get("load_data").cloned();
        let rss = |names: &[&str]| -> Option<f64> {
            self.contestants
                .iter()
                .flat_map(|c| c.peak_rss_mib.iter())
                .filter(|(k, _)| names.contains(&k.as_str()))
                .map(|(_, v)| *v)
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
        };
        let p99_50 = self
            .steady
            .iter()
            .find(|s| s.load_pct == 50)
            .map(|s| s.p99_ms);
        let g = |goal: &str, measured: Option<f64>, unit: &str, target: f64, at_least: bool| Goal {
            goal: goal.into(),
            measured,
            unit: unit.into(),
            target,
            direction: if at_least { "at least" } else { "at most" }.into(),
            met: measured.map(|m| if at_least { m >= target } else { m <= target }),
        };
        self.goals = vec![
            g(
                "end-to-end drain vs native single-thread",
                e2e.as_ref().and_then(|c| c.ratio_native_st),
                "x",
                2.0,
                true,
            ),
            g(
                "end-to-end drain vs native parallel",
                e2e.as_ref().and_then(|c| c.ratio_native_par),
                "x",
                1.0,
                true,
            ),
            g(
                "producer throughput",
                prod.as_ref().map(|c| c.drain.rows_per_s),
                "rows/s",
                150_000.0,
                true,
            ),
            g(
                "apply vs LOAD DATA",
                apply
                    .as_ref()
                    .zip(load.as_ref())
                    .map(|(a, l)| a.drain.rows_per_s / l.drain.rows_per_s),
                "x",
                0.5,
                true,
            ),
            g("p99 lag at 50% load", p99_50, "ms", 250.0, false),
            g("producer peak RSS", rss(&["producer"]), "MiB", 64.0, false),
            g(
                "consumer peak RSS",
                rss(&["consumer apply", "consumer run"]),
                "MiB",
                128.0,
                false,
            ),
        ];
    }

    /// Writes the results (`.json`, `.md`), appends to `history.csv`, and has `plot` draw the
    /// `.png` from this run and the history.
    pub fn write(
        &self,
        cfg: &Cfg,
        plot: impl FnOnce(&std::path::Path, &Report, &[HistoryPoint]) -> Result<()>,
    ) -> Result<Vec<PathBuf>> {
        let stem = cfg.out_dir.join(&self.out_stem);
        let json = stem.with_extension("json");
        let md = stem.with_extension("md");
        let png = stem.with_extension("png");
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(
            &md,
            self.markdown(png.file_name().unwrap().to_string_lossy().as_ref()),
        )?;
        let history = cfg.out_dir.join("history.csv");
        self.append_history(&history)?;
        let past = history_points(&std::fs::read_to_string(&history)?, self.bench_rows);
        plot(&png, self, &past)?;
        Ok(vec![json, md, png, history])
    }

    /// One line per run in `history.csv` beside the results: when, which commit, how many
    /// rows, then each goal's measured value (empty when the run skipped its phase). The
    /// header is written with the first line.
    fn append_history(&self, path: &std::path::Path) -> Result<()> {
        use std::io::Write;
        let header = history_header(&self.goals);
        let fresh = !path.exists();
        if !fresh {
            let first = std::fs::read_to_string(path)?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            anyhow::ensure!(
                first == header,
                "{} has other columns than this bench writes (expected the header {header:?}, found {first:?}): move it aside",
                path.display()
            );
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if fresh {
            writeln!(f, "{header}")?;
        }
        writeln!(f, "{}", self.history_line())?;
        Ok(())
    }

    fn history_line(&self) -> String {
        let mut cols = vec![
            self.date_utc.clone(),
            self.commit.clone().unwrap_or_default(),
            self.bench_rows.to_string(),
            if self.relaxed { "relaxed" } else { "strict" }.to_owned(),
            self.build_profile.clone(),
        ];
        cols.extend(
            self.goals
                .iter()
                .map(|g| g.measured.map(|m| format!("{m:.3}")).unwrap_or_default()),
        );
        cols.join(",")
    }

    pub fn headline(&self) -> String {
        let m = &self.machine;
        format!(
            "{} cores, {} GiB ({}); broker {}; sync_binlog={}, innodb_flush_log_at_trx_commit={}{}; BENCH_ROWS={}; {} build",
            m["cores"],
            m["memory_gib"],
            m["cpu"].as_str().unwrap_or("?"),
            self.broker,
            self.durability.sync_binlog,
            self.durability.innodb_flush_log_at_trx_commit,
            if self.relaxed { " (relaxed)" } else { "" },
            self.bench_rows,
            self.build_profile
        )
    }

    fn markdown(&self, png: &str) -> String {
        let mut s = String::new();
        let f = |v: Option<f64>, d: usize| v.map_or("–".to_owned(), |v| format!("{v:.d$}"));
        s.push_str(&format!("# Continuum bench, {}\n\n", self.date_utc));
        s.push_str(&format!("- Machine: {}\n", self.headline()));
        if let Some(c) = &self.commit {
            s.push_str(&format!("- Commit: {c}; run id {}\n", self.run_id));
        }
        let b = &self.backlog;
        s.push_str(&format!(
            "- Backlog: {} row changes ({} inserts, {} updates, {} deletes) in {} transactions ({} large), over {} tables; {} rows at the end; written on SF by {} connections in {:.1} s ({:.0} rows/s); GTID {} → {}\n",
            b["rows"], b["inserted"], b["updated"], b["deleted"], b["transactions"], b["large_transactions"], b["tables"], b["final_rows"],
            b["generator_workers"], b["generated_s"].as_f64().unwrap_or(0.0), b["generated_rows_per_s"].as_f64().unwrap_or(0.0),
            b["gtid_before"].as_str().unwrap_or("?"), b["gtid_after"].as_str().unwrap_or("?")
        ));
        s.push_str("\n## Backlog drain\n\n");
        s.push_str("| contestant | rows | seconds | rows/s | × native 1 thread | × native parallel | CPU-s per 1k rows, per process | peak RSS MiB | brokers' CPU share | machine busy | same rows as SF |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|\n");
        for c in &self.contestants {
            let cpu = cpu_cell(&c.cpu_per_1k_rows);
            let rss: Vec<String> = c
                .peak_rss_mib
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect();
            let busy = if c.cpu.machine_capacity_s > 0.0 {
                c.cpu.machine_busy_s / c.cpu.machine_capacity_s * 100.0
            } else {
                0.0
            };
            let ours: f64 = c.cpu.cpu_s.values().sum();
            s.push_str(&format!(
                "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {:.0}% ({:.0}% by these processes) | {} |\n",
                c.name,
                c.drain.rows,
                c.drain.seconds,
                c.drain.rows_per_s,
                f(c.ratio_native_st, 2),
                f(c.ratio_native_par, 2),
                if cpu.is_empty() { "–".into() } else { cpu },
                if rss.is_empty() { "–".into() } else { rss.join(", ") },
                c.broker_cpu_share.map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
                busy,
                if c.cpu.machine_capacity_s > 0.0 { ours / c.cpu.machine_capacity_s * 100.0 } else { 0.0 },
                if c.verify_detail.is_empty() || c.verified { if c.key == "producer" { "n/a (topic checked)".to_owned() } else { "yes".to_owned() } } else { format!("NO: {}", c.verify_detail) },
            ));
        }
        if !self.snapshots.is_empty() {
            s.push_str(&snapshot_section(&self.snapshots));
        }
        if !self.steady.is_empty() {
            s.push_str("\n## Steady state (end-to-end lag of probe transactions: one committed on SF every 100 ms, its heartbeat row watched for on EU every 5 ms)\n\nThe lag columns count the probes of up to 100 rows (the goal's); the table below splits them by size.\n\n");
            s.push_str("| load | target rows/s | achieved rows/s | seconds | probes up to 100 rows | p50 ms | p99 ms | max ms | last heartbeat arrived after the load stopped | CPU-s per 1k rows |\n");
            s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
            for r in &self.steady {
                let cpu = cpu_cell(&r.cpu_per_1k_rows);
                s.push_str(&format!(
                    "| {}% | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.1} s | {} |\n",
                    r.load_pct,
                    r.target_rows_per_s,
                    r.achieved_rows_per_s,
                    r.seconds,
                    r.heartbeats,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.drain_after_s,
                    cpu
                ));
            }
            s.push_str("\n### Lag by the size of the probe transaction\n\n| load | rows in the transaction | probes | p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|\n");
            for r in &self.steady {
                for b in &r.by_size {
                    s.push_str(&format!(
                        "| {}% | {} | {} | {:.0} | {:.0} | {:.0} |\n",
                        r.load_pct, b.txn_rows, b.probes, b.p50_ms, b.p99_ms, b.max_ms
                    ));
                }
            }
        }
        s.push_str("\n## Goals\n\n| goal | target | measured | met |\n|---|---|---:|---|\n");
        for g in &self.goals {
            s.push_str(&format!(
                "| {} | {} {} {} | {} {} | {} |\n",
                g.goal,
                g.direction,
                g.target,
                g.unit,
                f(g.measured, if g.unit == "x" { 2 } else { 0 }),
                g.unit,
                match g.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                }
            ));
        }
        s.push_str("\n## Notes\n\n");
        s.push_str("- Every contestant drains the same backlog, on the same machine, in the same run, with the same durability settings on every MariaDB (SF, EU, the native replica). Times run from the contestant's start to the moment its target holds the backlog's last GTID (native: `gtid_slave_pos`; Continuum: EU's checkpoint row, or the topic's last record for the producer alone; apply alone: process exit). `LOAD DATA` counts the final rows, not the row changes.\n");
        s.push_str("- CPU-seconds come from /proc/<pid>/stat (utime+stime) at the start and end of each phase, or from wait4's rusage for a process that exited; peak RSS is VmHWM from /proc/<pid>/status (ru_maxrss for a process that exited). \"machine busy\" is /proc/stat over the phase: it includes every process on the machine, this bench's and anybody else's.\n");
        for n in &self.notes {
            s.push_str(&format!("- {n}\n"));
        }
        s.push_str(&format!("\n![throughput and lag]({png})\n"));
        s
    }
}

/// `date,commit,rows,durability,profile`, then one column per goal, named from its text.
/// CPU seconds per 1000 rows of each process that used any, for a table cell.
fn cpu_cell(per_1k: &BTreeMap<String, f64>) -> String {
    let cpu: Vec<String> = per_1k
        .iter()
        .filter(|(_, v)| **v > 0.0005)
        .map(|(k, v)| format!("{k} {v:.3}"))
        .collect();
    cpu.join(", ")
}

/// The snapshot section: each copy of the final tables, and the incremental snapshot's rate
/// against `mariadb-dump | mariadb`'s.
fn snapshot_section(snapshots: &[Contestant]) -> String {
    let mut s = String::from("\n## Snapshot of the bench tables as the steady state left them (into EU's emptied tables)\n\n");
    s.push_str("| copy | rows | seconds | rows/s | CPU-s per 1k rows, per process | peak RSS MiB | same rows as SF |\n|---|---:|---:|---:|---|---|---|\n");
    for c in snapshots {
        let rss: Vec<String> = c
            .peak_rss_mib
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        let cpu = cpu_cell(&c.cpu_per_1k_rows);
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} |\n",
            c.name,
            c.drain.rows,
            c.drain.seconds,
            c.drain.rows_per_s,
            if cpu.is_empty() { "–".into() } else { cpu },
            if rss.is_empty() {
                "–".into()
            } else {
                rss.join(", ")
            },
            if c.verified {
                "yes".to_owned()
            } else {
                format!("NO: {}", c.verify_detail)
            },
        ));
    }
    let rate = |key: &str| {
        snapshots
            .iter()
            .find(|c| c.key == key)
            .map(|c| c.drain.rows_per_s)
    };
    if let (Some(inc), Some(dump)) = (rate("snapshot"), rate("dump_load")) {
        s.push_str(&format!(
            "\nThe incremental snapshot copied {:.2} × the rows per second of `mariadb-dump | mariadb`, while the producer went on streaming.\n\n",
            inc / dump
        ));
    }
    s
}

fn history_header(goals: &[Goal]) -> String {
    let mut cols: Vec<String> = ["date_utc", "commit", "rows", "durability", "profile"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cols.extend(goals.iter().map(|g| {
        let name: String = g
            .goal
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let unit = if g.unit == "x" {
            "ratio"
        } else {
            g.unit.as_str()
        };
        format!(
            "{}_{}",
            name.trim_matches('_'),
            unit.replace('/', "_per_").to_lowercase()
        )
    }));
    cols.join(",")
}

/// One earlier run of the same size, for the plot: its date and its end-to-end ratios against
/// native replication (single-thread, parallel).
pub struct HistoryPoint {
    pub date: String,
    pub e2e_vs_st: Option<f64>,
    pub e2e_vs_par: Option<f64>,
}

/// The runs of `rows` rows in `history.csv`'s text, oldest first. Columns are found by name,
/// so a line written before a goal was added still reads.
fn history_points(csv: &str, rows: u64) -> Vec<HistoryPoint> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (date, n, st, par) = (
        at("date_utc"),
        at("rows"),
        at("end_to_end_drain_vs_native_single_thread_ratio"),
        at("end_to_end_drain_vs_native_parallel_ratio"),
    );
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let get = |i: Option<usize>| i.and_then(|i| f.get(i)).copied().unwrap_or_default();
            (get(n).parse::<u64>().ok()? == rows).then(|| HistoryPoint {
                date: get(date).to_owned(),
                e2e_vs_st: get(st).parse().ok(),
                e2e_vs_par: get(par).parse().ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod history_tests {
    use super::*;

    fn goal(name: &str, unit: &str, measured: Option<f64>) -> Goal {
        Goal {
            goal: name.into(),
            measured,
            unit: unit.into(),
            target: 1.0,
            direction: "at least".into(),
            met: None,
        }
    }

    #[test]
    fn history_points_are_the_runs_of_the_same_size_by_column_name() {
        let csv = "date_utc,commit,rows,end_to_end_drain_vs_native_parallel_ratio,end_to_end_drain_vs_native_single_thread_ratio\n\
                   d1,c1,1000,0.100,0.190\n\
                   d2,c2,20000,0.5,0.9\n\
                   d3,c3,1000,,2.500\n";
        let p = history_points(csv, 1000);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].date.as_str(), p[0].e2e_vs_st, p[0].e2e_vs_par),
            ("d1", Some(0.19), Some(0.1))
        );
        assert_eq!((p[1].e2e_vs_st, p[1].e2e_vs_par), (Some(2.5), None));
        assert!(history_points("", 1000).is_empty());
    }

    #[test]
    fn the_header_names_each_goal_and_its_unit() {
        let h = history_header(&[
            goal("end-to-end drain vs native single-thread", "x", None),
            goal("producer throughput", "rows/s", None),
        ]);
        assert_eq!(
            h,
            "date_utc,commit,rows,durability,profile,end_to_end_drain_vs_native_single_thread_ratio,producer_throughput_rows_per_s"
        );
    }
}
