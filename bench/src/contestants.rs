//! The contestants: native replication (one SQL thread, then parallel), `LOAD DATA` of the
//! final rows, the producer alone, apply alone, and Continuum end to end. Each drains the same
//! backlog through one skeleton, [`race`]: open a CPU window on the stack processes it loads,
//! start its Continuum processes, wait for its drain, measure wall time, CPU and peak RSS,
//! check the target against SF's tables, and stop what it started (end to end leaves its
//! pipeline running for the steady state). A contestant that fails stops its processes and
//! fails the bench; none reports a number it did not check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use continuum_schemas::{GtidPosition, StreamPosition};
use mysql_async::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::backlog::{covers, wait_for_checkpoint, wait_until, Backlog};
use crate::config::Cfg;
use crate::db::{self, Db, Durability};
use crate::procs::{self, mib, CpuUse, CpuWindow, Exit, Spawned};
use crate::replica;
use crate::report::{say, Contestant, Drain};

/// Every process of the two-site stack.
pub const STACK: &[&str] = &[
    "sf-db",
    "eu-db",
    "sf-broker",
    "eu-broker",
    "sf-registry",
    "eu-registry",
];

/// A Continuum process a contestant starts: `label` names it in the CPU and RSS columns,
/// `log` its log file.
struct Launch {
    label: &'static str,
    log: String,
    bin: &'static str,
    site: &'static str,
    args: Vec<String>,
}

/// What a contestant is, for [`race`].
struct Race<'a> {
    key: &'static str,
    name: String,
    /// The stack's processes whose CPU the contestant costs.
    stack: &'a [&'a str],
    /// Other processes whose CPU counts (the native replica's mariadbd).
    others: Vec<(String, i32)>,
    /// The Continuum processes started when the clock starts; the clock starts at the first.
    launch: Vec<Launch>,
    /// Where the result is checked against SF's tables (None: the drain checks it).
    check: Option<&'a Db>,
    /// Leave the processes running afterwards (end to end, for the steady state).
    keep_running: bool,
}

/// What a drain tells [`race`]: how many rows it moved (default: the backlog's), and how the
/// processes that exited by themselves ended (exact CPU and peak RSS, from wait4).
#[derive(Default)]
struct Drained {
    rows: Option<u64>,
    exited: BTreeMap<&'static str, Exit>,
}

/// The one spawn–wait–measure skeleton of every contestant (module docs).
async fn race(
    cfg: &Cfg,
    bl: &Backlog,
    r: Race<'_>,
    drain: impl AsyncFnOnce(&mut [Spawned]) -> Result<Drained>,
) -> Result<(Contestant, Vec<Spawned>)> {
    let mut watched = cfg.stack_procs(r.stack);
    watched.extend(r.others);
    let mut win = CpuWindow::start(&watched);
    let mut ps = Vec::new();
    for l in &r.launch {
        let p = Spawned::start(
            &l.log,
            &cfg.bin(l.bin),
            &l.args,
            &cfg.continuum_env(l.site),
            &cfg.logs().join(format!("{}.log", l.log)),
            &cfg.root,
        )?;
        win.add_new(l.label, p.pid);
        ps.push(p);
    }
    let t0 = ps.first().map_or_else(Instant::now, |p| p.started);
    let drained = drain(&mut ps).await;
    let secs = t0.elapsed().as_secs_f64();
    let drained = match drained {
        Ok(d) => d,
        Err(e) => {
            for p in ps.iter_mut() {
                p.stop(Duration::from_secs(30)).await;
            }
            return Err(e);
        }
    };
    let exact = drained
        .exited
        .iter()
        .map(|(k, e)| (k.to_string(), e.cpu_s))
        .collect();
    let cpu = win.finish(&exact);
    let rss: BTreeMap<String, f64> = r
        .launch
        .iter()
        .zip(&ps)
        .map(|(l, p)| {
            let kib = match drained.exited.get(l.label) {
                Some(e) => e.maxrss_kib,
                None => p.hwm_kib().unwrap_or(0),
            };
            (l.label.to_owned(), mib(kib))
        })
        .collect();
    if !r.keep_running {
        for p in ps.iter_mut() {
            p.stop(Duration::from_secs(60)).await;
        }
    }
    let verified = match r.check {
        Some(target) => db::verify(target, &cfg.args.database, &bl.tables, &bl.source_sums).await?,
        None => (true, String::new()),
    };
    let rows = drained.rows.unwrap_or(bl.rows);
    let peaks: String = rss
        .iter()
        .map(|(k, v)| format!(", peak RSS {k} {v:.1} MiB"))
        .collect();
    say(format!(
        "{}: {rows} rows in {secs:.2} s ({:.0} rows/s){peaks}; matches SF: {}",
        r.name,
        rows as f64 / secs,
        if r.check.is_some() {
            verified.0.to_string()
        } else {
            "(not a table check)".into()
        }
    ));
    let c = contestant(r.key, &r.name, rows, secs, cpu, rss, verified);
    Ok((c, ps))
}

/// Fills a contestant's derived fields.
fn contestant(
    key: &str,
    name: &str,
    rows: u64,
    seconds: f64,
    cpu: CpuUse,
    rss: BTreeMap<String, f64>,
    verified: (bool, String),
) -> Contestant {
    let total: f64 = cpu.cpu_s.values().sum();
    let broker: f64 = cpu
        .cpu_s
        .iter()
        .filter(|(k, _)| k.ends_with("-broker"))
        .map(|(_, v)| v)
        .sum();
    Contestant {
        key: key.into(),
        name: name.into(),
        drain: Drain::new(rows, seconds),
        ratio_native_st: None,
        ratio_native_par: None,
        cpu_per_1k_rows: cpu.per_1k_rows(rows),
        peak_rss_mib: rss,
        broker_cpu_share: (broker > 0.0 && total > 0.0).then(|| broker / total),
        broker_machine_share: (broker > 0.0 && cpu.machine_capacity_s > 0.0)
            .then(|| broker / cpu.machine_capacity_s),
        cpu,
        verified: verified.0,
        verify_detail: verified.1,
    }
}

/// Empties EU's bench tables (outside its binlog) for the next contestant.
async fn empty_eu(cfg: &Cfg, bl: &Backlog) -> Result<()> {
    let mut eu = cfg.eu.conn().await?;
    db::recreate(&mut eu, &cfg.args.database, &bl.defs).await?;
    let _ = eu.disconnect().await;
    Ok(())
}

/// The producer from `start` into `topic` on the SF cluster.
fn producer(cfg: &Cfg, start: &GtidPosition, topic: &str) -> Result<Launch> {
    Ok(Launch {
        label: "producer",
        log: format!("{topic}.producer"),
        bin: "continuum-producer",
        site: "sf",
        args: vec![
            "--config".into(),
            cfg.write_config("sf", topic)?.to_string_lossy().into(),
            "--start-position".into(),
            start.to_string(),
        ],
    })
}

/// `continuum-consumer --config <EU's config for topic> ARGS`.
fn consumer(cfg: &Cfg, topic: &str, label: &'static str, args: &[&str]) -> Result<Launch> {
    let conf = cfg.write_config("eu", topic)?;
    Ok(Launch {
        label,
        log: format!("{topic}.{}", label.replace(' ', "-")),
        bin: "continuum-consumer",
        site: "eu",
        args: ["--config".to_owned(), conf.to_string_lossy().into()]
            .into_iter()
            .chain(args.iter().map(|a| a.to_string()))
            .collect(),
    })
}

pub async fn load_data(cfg: &Cfg, bl: &Backlog) -> Result<Contestant> {
    say("LOAD DATA: dumping SF's final rows, then loading them into EU's empty tables");
    let dir = cfg.work.join("load");
    std::fs::create_dir_all(&dir)?;
    let mut sf = cfg.sf.conn().await?;
    let mut files = Vec::new();
    let cols = "id,account_id,status,amount,created_at,updated_at,name,payload";
    for t in &bl.tables {
        let path = dir.join(format!("{t}.tsv"));
        let rows: Vec<String> = sf
            .query(format!(
                "SELECT CONCAT_WS('\\t', id, account_id, status, amount, DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s.%f'), name, payload) FROM `{}`.`{t}` ORDER BY id",
                cfg.args.database
            ))
            .await?;
        let mut text = rows.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(&path, text)?;
        files.push((t.clone(), path));
    }
    empty_eu(cfg, bl).await?;
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let opts = mysql_async::OptsBuilder::from_opts(cfg.eu.opts())
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new(paths)));
    let mut c = mysql_async::Conn::new(opts).await?;
    // The same session as apply's (skip_replication, no FK checks), binlogged like apply.
    for s in [
        "SET SESSION skip_replication=1",
        "SET SESSION foreign_key_checks=0",
        "SET SESSION time_zone='+00:00'",
        "SET NAMES utf8mb4",
    ] {
        c.query_drop(s).await?;
    }
    let race_ = Race {
        key: "load_data",
        name: "LOAD DATA of the final rows (EU)".into(),
        stack: &["eu-db"],
        others: Vec::new(),
        launch: Vec::new(),
        check: Some(&cfg.eu),
        keep_running: false,
    };
    let (contestant, _) = race(cfg, bl, race_, async |_: &mut [Spawned]| {
        let mut loaded = 0u64;
        for (t, path) in &files {
            c.query_drop(format!(
                "LOAD DATA LOCAL INFILE '{}' INTO TABLE `{}`.`{t}` FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' ({cols})",
                path.display(),
                cfg.args.database
            ))
            .await
            .with_context(|| format!("LOAD DATA into {t}"))?;
            loaded += c.affected_rows();
        }
        Ok(Drained {
            rows: Some(loaded),
            ..Drained::default()
        })
    })
    .await?;
    let _ = c.disconnect().await;
    Ok(contestant)
}

/// Native replication into a third mariadbd, with one SQL thread and then with four.
pub async fn native(
    cfg: &Cfg,
    want: &Durability,
    bl: &Backlog,
) -> Result<(Contestant, Contestant)> {
    say(format!(
        "native replica: starting a third mariadbd on port {}",
        cfg.args.replica_port
    ));
    let rep = replica::Replica::start(
        &cfg.work.join("replica"),
        cfg.args.replica_port,
        want,
        &cfg.logs(),
    )
    .await?;
    let r = async {
        let st = native_run(cfg, bl, &rep, 0).await?;
        let par = native_run(cfg, bl, &rep, 4).await?;
        anyhow::Ok((st, par))
    }
    .await;
    if let Ok(mut c) = rep.db.conn().await {
        let _ = c.query_drop("STOP SLAVE").await;
        let _ = c.query_drop("RESET SLAVE ALL").await;
    }
    rep.stop().await;
    r
}

async fn native_run(
    cfg: &Cfg,
    bl: &Backlog,
    rep: &replica::Replica,
    threads: u32,
) -> Result<Contestant> {
    let mut c = rep.db.conn().await?;
    let _ = c.query_drop("STOP SLAVE").await;
    let _ = c.query_drop("RESET SLAVE ALL").await;
    db::recreate(&mut c, &cfg.args.database, &bl.defs).await?;
    c.query_drop("RESET MASTER").await?;
    c.query_drop(format!("SET GLOBAL gtid_slave_pos = '{}'", bl.before))
        .await?;
    c.query_drop(format!("SET GLOBAL slave_parallel_threads = {threads}"))
        .await?;
    c.query_drop("SET GLOBAL slave_parallel_mode = 'optimistic'")
        .await?;
    // TLS as Continuum's own connections use it (the stack's continuum users require it), so
    // both contestants pay for the same link.
    let tls = match &cfg.args.stack.tls_ca {
        Some(ca) => format!(
            ", MASTER_SSL = 1, MASTER_SSL_CA = {}, MASTER_SSL_VERIFY_SERVER_CERT = 1",
            db::literal(ca)
        ),
        None => String::new(),
    };
    // CHANGE MASTER cannot be prepared: literals.
    c.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_USER = {}, MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos{tls}",
        db::literal(&cfg.sf.host),
        cfg.sf.port,
        db::literal(&cfg.args.sf_db_user),
        db::literal(&cfg.args.sf_db_password)
    ))
    .await?;
    let (key, name) = if threads == 0 {
        ("native_st", "native replication, 1 SQL thread".to_owned())
    } else {
        (
            "native_par",
            format!("native replication, {threads} threads optimistic"),
        )
    };
    say(format!("{name}: draining from {}", bl.before));
    let race_ = Race {
        key,
        name,
        stack: &["sf-db"],
        others: vec![("replica-db".into(), rep.proc.pid)],
        launch: Vec::new(),
        check: Some(&rep.db),
        keep_running: false,
    };
    let (contestant, _) = race(cfg, bl, race_, async |_: &mut [Spawned]| {
        c.query_drop("START SLAVE").await?;
        let mut last_status = Instant::now();
        wait_until(
            "native replica",
            cfg.phase_timeout,
            Duration::from_millis(50),
            async || {
                if covers(&db::var(&mut c, "gtid_slave_pos").await?, &bl.target) {
                    return Ok(true);
                }
                if last_status.elapsed() > Duration::from_secs(1) {
                    last_status = Instant::now();
                    slave_errors(&mut c).await?;
                }
                Ok(false)
            },
        )
        .await?;
        Ok(Drained::default())
    })
    .await?;
    c.query_drop("STOP SLAVE").await?;
    Ok(contestant)
}

/// Fails with the replica's SQL or I/O thread error, if it has one.
async fn slave_errors(c: &mut mysql_async::Conn) -> Result<()> {
    let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await?;
    if let Some(row) = row {
        for k in ["Last_SQL_Error", "Last_IO_Error"] {
            let e: Option<String> = row.get(k).unwrap_or(None);
            if let Some(e) = e.filter(|e| !e.is_empty()) {
                bail!("native replica: {k}: {e}");
            }
        }
    }
    Ok(())
}

fn kafka_reader(brokers: &str) -> Result<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("continuum-bench-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set("log_level", "3");
    Ok(c.create()?)
}

/// Where the last record of `topic` says the topic has reached, if it ends a consistent point.
fn topic_position(consumer: &BaseConsumer, topic: &str) -> Option<GtidPosition> {
    let r = continuum_common::kafka::read_last(consumer, topic, Duration::from_secs(5)).ok()??;
    let pos: StreamPosition = r.header_str(continuum_schemas::HEADER_POS)?.parse().ok()?;
    pos.after()
}

/// The producer from the backlog's start into an empty topic, timed until the topic's last
/// record carries the backlog's end.
pub async fn producer_alone(cfg: &Cfg, bl: &Backlog, topic: &str) -> Result<Contestant> {
    say(format!(
        "producer alone: --start-position {} into the empty topic {topic} (SF cluster)",
        bl.before
    ));
    let reader = kafka_reader(&cfg.args.sf_brokers)?;
    let race_ = Race {
        key: "producer",
        name: "Continuum producer alone (binlog to SF topic)".into(),
        stack: &["sf-db", "sf-broker", "sf-registry"],
        others: Vec::new(),
        launch: vec![producer(cfg, &bl.before, topic)?],
        check: None,
        keep_running: false,
    };
    let (mut c, _) = race(cfg, bl, race_, async |ps: &mut [Spawned]| {
        wait_until(
            "producer alone",
            cfg.phase_timeout,
            Duration::from_millis(250),
            async || {
                ps[0].ensure_running()?;
                Ok(topic_position(&reader, topic).is_some_and(|p| p.covers(&bl.target)))
            },
        )
        .await?;
        Ok(Drained::default())
    })
    .await?;
    let (_, high) = reader.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    c.verify_detail = format!(
        "topic holds {high} records and ends at the backlog's last GTID (not a table check)"
    );
    Ok(c)
}

/// `consumer apply --until-caught-up` from the producer's pre-filled topic into EU's emptied
/// tables, timed from start to exit.
pub async fn apply_alone(cfg: &Cfg, bl: &Backlog, topic: &str) -> Result<Contestant> {
    say(format!("apply alone: --until-caught-up from the pre-filled topic {topic} (SF cluster) into EU's empty tables"));
    empty_eu(cfg, bl).await?;
    let apply = consumer(
        cfg,
        topic,
        "consumer apply",
        &[
            "--read-from",
            "sf",
            "apply",
            "--until-caught-up",
            "--no-metrics",
        ],
    )?;
    let race_ = Race {
        key: "apply",
        name: "Continuum apply alone (topic to EU MariaDB)".into(),
        stack: &["eu-db", "sf-broker", "sf-registry"],
        others: Vec::new(),
        launch: vec![apply],
        check: Some(&cfg.eu),
        keep_running: false,
    };
    let (c, _) = race(cfg, bl, race_, async |ps: &mut [Spawned]| {
        let p = &mut ps[0];
        let exit = p.wait(cfg.phase_timeout).await?;
        if exit.code != 0 {
            bail!(
                "apply --until-caught-up exited with {}; last lines of {}:\n{}",
                exit.code,
                p.log.display(),
                p.log_tail(25)
            );
        }
        let pos = db::checkpoint_position(&cfg.eu, topic)
            .await?
            .unwrap_or_default();
        if !covers(&pos, &bl.target) {
            bail!(
                "apply --until-caught-up ended at {pos:?}, short of the backlog's end {}",
                bl.target
            );
        }
        Ok(Drained {
            exited: [("consumer apply", exit)].into(),
            ..Drained::default()
        })
    })
    .await?;
    Ok(c)
}

/// Producer and `consumer run` from the before-position into fresh topics; returns when EU's
/// checkpoint reaches the backlog's end, leaving both running (for the steady state).
pub async fn end_to_end(
    cfg: &Cfg,
    bl: &Backlog,
    topic: &str,
) -> Result<(Contestant, Vec<Spawned>)> {
    say(format!(
        "end to end: producer -> SF broker -> mirror -> EU broker -> apply, topic {topic}"
    ));
    empty_eu(cfg, bl).await?;
    let race_ = Race {
        key: "e2e",
        name: "Continuum end to end (producer, mirror, apply)".into(),
        stack: STACK,
        others: Vec::new(),
        launch: vec![
            producer(cfg, &bl.before, topic)?,
            consumer(cfg, topic, "consumer run", &["run", "--no-metrics"])?,
        ],
        check: Some(&cfg.eu),
        keep_running: true,
    };
    race(cfg, bl, race_, async |ps: &mut [Spawned]| {
        wait_for_checkpoint(
            cfg,
            "end to end",
            topic,
            &bl.target,
            Duration::from_millis(100),
            || ps.iter_mut().try_for_each(Spawned::ensure_running),
        )
        .await?;
        Ok(Drained::default())
    })
    .await
}

/// `bl` with SF's tables and position as they are now (row counts and checksums): what a copy
/// of them must match, and where a producer starts that has nothing to stream.
pub async fn tables_now(cfg: &Cfg, bl: &Backlog) -> Result<Backlog> {
    let mut sf = cfg.sf.conn().await?;
    let sums = db::checksums(&mut sf, &cfg.args.database, &bl.tables).await?;
    let target = db::gtid_binlog_pos(&mut sf).await?;
    let _ = sf.disconnect().await;
    Ok(Backlog {
        source_sums: sums,
        target,
        ..bl.clone()
    })
}

/// The rows of the tables to copy.
fn final_rows(bl: &Backlog) -> u64 {
    bl.source_sums.values().map(|(rows, _)| rows).sum()
}

/// Continuum's incremental snapshot of the bench tables (`bl` from [`tables_now`]) into EU's
/// emptied tables: the producer streams from SF's position into an empty topic while it reads the tables in
/// chunks (`continuum-producer snapshot`), and apply (from the SF cluster) applies them. Timed
/// from the producer's start until the request is done and apply has applied the whole topic.
pub async fn snapshot_incremental(cfg: &Cfg, bl: &Backlog, topic: &str) -> Result<Contestant> {
    say(format!(
        "incremental snapshot: producer at {} into the empty topic {topic} (SF cluster), `snapshot` of the bench tables, apply into EU's empty tables",
        bl.target
    ));
    empty_eu(cfg, bl).await?;
    let conf = cfg.write_config("sf", topic)?;
    let tables: Vec<String> = bl
        .tables
        .iter()
        .map(|t| format!("{}.{t}", cfg.args.database))
        .collect();
    let mut verb = tokio::process::Command::new(cfg.bin("continuum-producer"));
    verb.arg("--config").arg(&conf).arg("snapshot");
    for t in &tables {
        verb.args(["--table", t]);
    }
    for (k, v) in cfg.continuum_env("sf") {
        verb.env(k, v);
    }
    let out = verb.output().await?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "continuum-producer snapshot failed: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let id: u64 = said
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("no request id in {said:?}"))?;
    let producer = producer(cfg, &bl.target, topic)?;
    let apply = consumer(
        cfg,
        topic,
        "consumer apply",
        &["--read-from", "sf", "apply", "--no-metrics"],
    )?;
    let reader = kafka_reader(&cfg.args.sf_brokers)?;
    let race_ = Race {
        key: "snapshot",
        name: "Continuum incremental snapshot (producer and apply)".into(),
        stack: &["sf-db", "eu-db", "sf-broker", "sf-registry"],
        others: Vec::new(),
        launch: vec![producer, apply],
        check: Some(&cfg.eu),
        keep_running: false,
    };
    let mut sf = cfg.sf.conn().await?;
    let rows = final_rows(bl);
    let (c, _) = race(cfg, bl, race_, async |ps: &mut [Spawned]| {
        wait_until(
            "incremental snapshot",
            cfg.phase_timeout,
            Duration::from_millis(100),
            async || {
                ps.iter_mut().try_for_each(Spawned::ensure_running)?;
                let r: Option<(Option<String>, Option<String>)> = sf
                    .exec_first(
                        "SELECT CAST(done_at AS CHAR), error FROM continuum.snapshot_request WHERE id = ?",
                        (id,),
                    )
                    .await?;
                match r {
                    Some((Some(_), Some(e))) => bail!("snapshot request {id} failed: {e}"),
                    Some((done, None)) => Ok(done.is_some()),
                    _ => bail!("snapshot request {id} is gone from continuum.snapshot_request"),
                }
            },
        )
        .await?;
        let (_, high) = reader.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
        wait_until(
            "incremental snapshot applied",
            cfg.phase_timeout,
            Duration::from_millis(50),
            async || {
                ps.iter_mut().try_for_each(Spawned::ensure_running)?;
                Ok(db::checkpoint_offset(&cfg.eu, topic).await?.unwrap_or(0) >= high)
            },
        )
        .await?;
        Ok(Drained {
            rows: Some(rows),
            ..Drained::default()
        })
    })
    .await?;
    let _ = sf
        .exec_drop("DELETE FROM continuum.snapshot_request WHERE id = ?", (id,))
        .await;
    Ok(c)
}

/// `mariadb-dump --single-transaction` of the bench tables piped into `mariadb` at
/// EU, into its emptied tables: how an operator copies tables by hand. The two clients' own CPU
/// is not counted (the servers' is).
pub async fn dump_load(cfg: &Cfg, bl: &Backlog) -> Result<Contestant> {
    say("mariadb-dump | mariadb: SF's bench tables into EU's empty tables");
    empty_eu(cfg, bl).await?;
    let race_ = Race {
        key: "dump_load",
        // No `|` in a name: it is a Markdown table cell.
        name: "mariadb-dump piped into mariadb (SF to EU)".into(),
        stack: &["sf-db", "eu-db"],
        others: Vec::new(),
        launch: Vec::new(),
        check: Some(&cfg.eu),
        keep_running: false,
    };
    let rows = final_rows(bl);
    let (c, _) = race(cfg, bl, race_, async |_: &mut [Spawned]| {
        let (sf, eu) = (&cfg.sf, &cfg.eu);
        let script = format!(
            "set -o pipefail; MYSQL_PWD=\"$SF_PW\" mariadb-dump --protocol=tcp -h {} -P {} -u {} --single-transaction --skip-lock-tables --no-create-info {} {} | MYSQL_PWD=\"$EU_PW\" mariadb --protocol=tcp -h {} -P {} -u {} --init-command='SET SESSION skip_replication=1' {}",
            sf.host, sf.port, sf.user, cfg.args.database, bl.tables.join(" "),
            eu.host, eu.port, eu.user, cfg.args.database
        );
        let out = tokio::process::Command::new("bash")
            .args(["-c", &script])
            .env("SF_PW", &sf.password)
            .env("EU_PW", &eu.password)
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "mariadb-dump | mariadb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Drained {
            rows: Some(rows),
            ..Drained::default()
        })
    })
    .await?;
    Ok(c)
}

/// Deletes the run's checkpoint rows at EU and its topics on both clusters (`BENCH_KEEP=1`
/// keeps everything, for a look afterwards): a 1M-row run leaves several topics of hundreds of
/// MB each.
pub async fn cleanup(cfg: &Cfg, topics_sf: &[String], topics_eu: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    for (brokers, topics) in [
        (&cfg.args.sf_brokers, topics_sf),
        (&cfg.args.eu_brokers, topics_eu),
    ] {
        if topics.is_empty() {
            continue;
        }
        let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
            .set("bootstrap.servers", brokers.as_str())
            .create();
        if let Ok(a) = admin {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            match a
                .delete_topics(
                    &names,
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(120))),
                )
                .await
            {
                Ok(rs) => {
                    for r in rs {
                        if let Err((t, e)) = r {
                            say(format!(
                                "note: could not delete topic {t} on {brokers}: {e}"
                            ));
                        }
                    }
                }
                Err(e) => say(format!(
                    "note: could not delete the bench topics on {brokers}: {e}"
                )),
            }
        }
    }
    if let Ok(mut c) = cfg.eu.conn().await {
        let _ = c.query_drop("SET SESSION sql_log_bin = 0").await;
        for t in topics_sf {
            let _ = c
                .exec_drop(
                    "DELETE FROM continuum.checkpoint WHERE source_topic = ?",
                    (t,),
                )
                .await;
        }
    }
}

/// Whether the stack has every process the bench loads.
pub fn check_stack(cfg: &Cfg) -> Result<()> {
    for part in STACK {
        if procs::stack_pid(&cfg.args.stack.dir, part).is_none() {
            bail!(
                "{part} of the stack in {} is not running: make up",
                cfg.args.stack.dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contestant's part of the results JSON: its field names, in order, as the report's
    /// readers know them.
    #[test]
    fn a_contestants_json_keeps_its_field_names() {
        let c = contestant(
            "e2e",
            "end to end",
            1000,
            2.0,
            CpuUse::default(),
            BTreeMap::new(),
            (true, String::new()),
        );
        let want = concat!(
            r#"{"key":"e2e","name":"end to end","rows":1000,"seconds":2.0,"rows_per_s":500.0,"#,
            r#""ratio_native_st":null,"ratio_native_par":null,"cpu_per_1k_rows":{},"#,
            r#""peak_rss_mib":{},"broker_cpu_share":null,"broker_machine_share":null,"#,
            r#""cpu":{"wall_s":0.0,"cpu_s":{},"machine_busy_s":0.0,"machine_capacity_s":0.0},"#,
            r#""verified":true,"verify_detail":""}"#
        );
        assert_eq!(serde_json::to_string(&c).unwrap(), want);
    }
}
