//! The operator's commands, against the local stack (`make up`, `.stack/env`): what `make
//! clean`, `make drill` and `make bench` do to the pipeline `make run` started.
//!
//! - `stack.sh clean` (what `make clean` runs) stops `make run`'s four pipeline processes before
//!   it deletes `.stack/`, whose PID files are the only record of them.
//!
//! The pipelines started here are confined to databases and topics of their own, with their
//! own `STACK_DIR`, so they touch nothing else on the stack.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use continuum_tests::check::{exec_all, output_text, query_one, run_ok};
use continuum_tests::{
    stack, unique_name, wait_for_blocking, wait_sf_producer_streaming, workspace_root,
};
use mysql_async::prelude::Queryable;

const PROCS: [&str; 4] = ["sf-producer", "eu-consumer", "eu-producer", "sf-consumer"];

fn stack_dir() -> PathBuf {
    std::env::var("STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".stack"))
}

/// Whether process `pid` still runs (a zombie has exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|r| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// A `STACK_DIR` of its own whose `env` is the running stack's (same servers and logins), so
/// that the scripts keep their PID files and logs apart from the stack's.
struct Confined {
    dir: PathBuf,
    prefix: String,
    server_id: u32,
    pids: Vec<u32>,
}

impl Confined {
    fn new(name: &str) -> Confined {
        let _ = stack();
        let prefix = unique_name(name);
        let dir = std::env::temp_dir().join(&prefix).join("stack");
        std::fs::create_dir_all(&dir).unwrap();
        let env = std::fs::read_to_string(stack_dir().join("env")).expect("the stack's env");
        let env: String = env
            .lines()
            .map(|l| {
                if l.starts_with("export STACK_DIR=") {
                    format!("export STACK_DIR='{}'", dir.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("env"), env + "\n").unwrap();
        Confined {
            dir,
            prefix,
            server_id: 20_000 + std::process::id() % 10_000,
            pids: Vec::new(),
        }
    }

    fn script(&self, script: &str, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("bash");
        c.arg(workspace_root().join(script)).args(args);
        self.confine(&mut c).output().unwrap()
    }

    /// A consumer verb at `site`, with that site's pipeline environment, as an operator runs it
    /// (`eval "$(scripts/pipeline.sh env SITE)"`, docs/failover.md).
    fn consumer_at(&self, site: &str, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.args([
            "-c",
            &format!("eval \"$(scripts/pipeline.sh env {site})\" && exec \"$0\" \"$@\""),
        ])
        .arg(workspace_root().join("target/debug/continuum-consumer"))
        .args(args);
        self.confine(&mut c);
        c
    }

    /// Starts the confined pipeline's four processes and records their PIDs.
    fn start(&mut self) {
        self.must("scripts/pipeline.sh", &["start"]);
        for p in PROCS {
            let pid =
                Confined::pid_of(&self.dir, p).unwrap_or_else(|| panic!("{p} has no PID file"));
            self.pids.push(pid);
        }
    }

    fn confine<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.env("STACK_DIR", &self.dir)
            .env("CONTINUUM_PRODUCER_INCLUDE", format!("{}_*.*", self.prefix))
            .env("CONTINUUM_SF_TOPIC", format!("{}.sf.cdc", self.prefix))
            .env("CONTINUUM_EU_TOPIC", format!("{}.eu.cdc", self.prefix))
            .env("CONTINUUM_PRODUCER_METRICS_LISTEN", "127.0.0.1:0")
            // Ids no other producer on the stack uses (the preflight refuses a duplicate).
            .env("CONTINUUM_PRODUCER_SERVER_ID", self.server_id.to_string())
            .env("CONTINUUM_CONSUMER_METRICS_LISTEN", "127.0.0.1:0")
            .current_dir(workspace_root())
    }

    fn must(&self, script: &str, args: &[&str]) -> String {
        let out = self.script(script, args);
        let text = output_text(&out);
        assert!(out.status.success(), "{script} {args:?} failed:\n{text}");
        text
    }

    fn pid_of(dir: &Path, proc: &str) -> Option<u32> {
        std::fs::read_to_string(dir.join("pids").join(format!("{proc}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Confined {
    /// Whatever happened, nothing this test started is left running: every process it recorded
    /// or whose PID file is still there is killed, by PID.
    fn drop(&mut self) {
        let mut pids = self.pids.clone();
        pids.extend(PROCS.iter().filter_map(|p| Confined::pid_of(&self.dir, p)));
        for pid in pids {
            if alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.parent().unwrap());
    }
}

/// `make clean` with `make run`'s pipeline running: the pipeline is stopped first, then the
/// stack's directory (PID files included) is deleted. Before, the four processes went on
/// running and writing, and nothing showed them any more.
#[test]
fn clean_stops_the_pipeline_before_deleting_the_stack_directory() {
    let mut c = Confined::new("clean");
    c.must("scripts/pipeline.sh", &["start"]);
    for p in PROCS {
        let pid = Confined::pid_of(&c.dir, p).unwrap_or_else(|| panic!("{p} has no PID file"));
        c.pids.push(pid);
    }
    assert!(c.pids.iter().all(|&p| alive(p)), "the pipeline runs");

    let out = c.must("scripts/stack.sh", &["clean"]);
    assert!(!c.dir.exists(), "clean deletes the stack directory:\n{out}");
    let pids = c.pids.clone();
    wait_for_blocking(
        "every pipeline process to be gone after clean",
        Duration::from_secs(10),
        || pids.iter().all(|&p| !alive(p)).then_some(()),
    );
}

/// Sets the two servers' roles the way `scripts/stack.sh role` does (the stack's own
/// `STACK_DIR`), SF primary and EU replica, now and again when the test ends, whatever happened.
struct Roles;

impl Roles {
    fn sf_primary() -> Roles {
        Roles::set();
        Roles
    }

    fn set() {
        for (part, role) in [("sf-db", "primary"), ("eu-db", "replica")] {
            run_ok(
                Command::new("bash")
                    .arg(workspace_root().join("scripts/stack.sh"))
                    .args(["role", part, role])
                    .env("STACK_DIR", stack_dir())
                    .current_dir(workspace_root()),
                &format!("stack.sh role {part} {role}"),
            );
        }
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        Roles::set();
    }
}

async fn read_only(site: &continuum_tests::Site) -> bool {
    let mut c = site.admin_conn().await;
    c.query_first::<u8, _>("SELECT @@read_only").await.unwrap() == Some(1)
}

/// SF primary and EU replica ([`Roles`], until the returned value is dropped), and the pipeline
/// confined to test `name` ([`Confined`]) replicating `db.t` (`id BIGINT` primary key) from SF,
/// EU applying it. Returns them with `db`.
async fn switchover_setup(name: &str) -> (Roles, Confined, String) {
    let s = stack();
    let roles = Roles::sf_primary();
    let mut c = Confined::new(name);
    let db = format!("{}_w", c.prefix);
    let table = "t (id BIGINT PRIMARY KEY, site VARCHAR(8) NOT NULL) ENGINE=InnoDB";
    exec_all(
        &mut s.sf.admin_conn().await,
        [
            format!("CREATE DATABASE `{db}`"),
            format!("CREATE TABLE `{db}`.{table}"),
        ],
    )
    .await;
    c.start();
    let q = format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 't'"
    );
    continuum_tests::wait_for(
        &format!("{db}.t to be replicated to EU"),
        Duration::from_secs(180),
        || count_at(&s.eu, &q),
    )
    .await;
    (roles, c, db)
}

/// `Some(())` once `q` counts 1 at `site`.
async fn count_at(site: &continuum_tests::Site, q: &str) -> Option<()> {
    let mut c = site.admin_conn().await;
    (c.query_first::<i64, _>(q).await.ok()?? == 1).then_some(())
}

async fn checkpoint_of(conn: &mut mysql_async::Conn, topic: &str) -> Option<String> {
    conn.exec_first(
        "SELECT gtid_position FROM continuum.checkpoint WHERE source_topic = ?",
        (topic,),
    )
    .await
    .unwrap()
}

async fn drop_database(db: &str) {
    for site in [&stack().sf, &stack().eu] {
        let mut c = site.admin_conn().await;
        let _ = c.query_drop("SET SESSION skip_replication = 1").await;
        let _ = c
            .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .await;
    }
}

/// A planned switchover (promote at EU while SF answers) with the applications still writing to
/// SF. SF must stop taking writes before EU takes any, and EU must apply everything SF
/// committed before it became writable: no write committed at SF is left behind as an orphan.
/// Before, promote drained to a high watermark sampled once from EU's copy, made EU writable,
/// and only then made SF read-only, so the writes SF took in between never reached EU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_fences_the_old_primary_first_and_loses_no_write() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let s = stack();
    let (_roles, c, db) = switchover_setup("switch").await;

    // An application login: it cannot write while SF is read-only (no READ_ONLY ADMIN).
    let user = format!("{}_app", c.prefix);
    let user = &user[user.len().saturating_sub(60)..];
    let mut sf = s.sf.admin_conn().await;
    exec_all(
        &mut sf,
        [
            format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'app-pw'"),
            format!("GRANT SELECT, INSERT ON `{db}`.* TO '{user}'@'%'"),
        ],
    )
    .await;
    let app: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(s.sf.admin_opts())
        .user(Some(user))
        .pass(Some("app-pw"))
        .into();

    let stop = Arc::new(AtomicBool::new(false));
    let committed: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let writer = tokio::spawn({
        let (stop, committed, db) = (stop.clone(), committed.clone(), db.clone());
        async move {
            let mut conn = mysql_async::Conn::new(app).await.unwrap();
            let mut refused = None;
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                match conn
                    .exec_drop(format!("INSERT INTO `{db}`.t VALUES (?, 'sf')"), (id,))
                    .await
                {
                    Ok(()) => committed.lock().unwrap().push((id, Instant::now())),
                    Err(e) => {
                        refused.get_or_insert(e.to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            refused
        }
    });
    let eu_writable: Arc<Mutex<Option<Instant>>> = Arc::default();
    let monitor = tokio::spawn({
        let (stop, eu_writable) = (stop.clone(), eu_writable.clone());
        async move {
            let mut eu = stack().eu.admin_conn().await;
            while !stop.load(Ordering::Relaxed) {
                if eu.query_first::<u8, _>("SELECT @@read_only").await.unwrap() == Some(0) {
                    eu_writable.lock().unwrap().get_or_insert(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    continuum_tests::wait_for(
        "the application to commit at SF",
        Duration::from_secs(30),
        || {
            let n = committed.lock().unwrap().len();
            async move { (n >= 50).then_some(()) }
        },
    )
    .await;

    let mut promote = c.consumer_at("eu", &["promote", "--drain-timeout", "120s", "--json"]);
    let out = tokio::task::spawn_blocking(move || promote.output().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let refused = writer.await.unwrap();
    monitor.await.unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "promote at EU failed:\n{text}");
    assert!(
        read_only(&s.sf).await,
        "SF is read-only after the switchover"
    );
    assert!(
        !read_only(&s.eu).await,
        "EU is writable after the switchover"
    );
    let refused = refused.expect("the application was refused at SF once it was fenced");
    assert!(
        refused.contains("read-only") || refused.contains("1290"),
        "{refused}"
    );

    // Every write SF acknowledged is at EU, the moment promote returns.
    let committed = committed.lock().unwrap().clone();
    let mut eu = s.eu.admin_conn().await;
    let at_eu: std::collections::BTreeSet<i64> = eu
        .query::<i64, _>(format!("SELECT id FROM `{db}`.t"))
        .await
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<i64> = committed
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !at_eu.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of the {} writes SF acknowledged are not at EU after promote (orphaned): {:?}\n{text}",
        missing.len(),
        committed.len(),
        missing
    );
    // SF took its last write before EU took any.
    let (last_id, last_at) = *committed.last().unwrap();
    let writable_at = eu_writable.lock().unwrap().expect("EU became writable");
    assert!(
        last_at < writable_at,
        "SF acknowledged write {last_id} {:?} after EU had become writable: both took writes",
        last_at - writable_at
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["orphans"]["count"], 0, "{p}");
    assert_eq!(p["old_primary_demoted"], true, "{p}");

    c.must("scripts/pipeline.sh", &["stop"]);
    let _ = sf.query_drop(format!("DROP USER '{user}'@'%'")).await;
    drop_database(&db).await;
}

/// `promote --orphans discard` moves the old primary's checkpoint past the discarded orphans.
/// It must hold the old primary's apply lock while it does: an apply running there (here: one
/// that took its lock the moment the old primary was fenced, simulated by a connection holding
/// that lock) would otherwise overwrite the checkpoint with its own at its next commit, and
/// apply the orphans after all. Promote waits for the lock; the checkpoint does not change
/// while another connection holds it; once it is released, the orphans are discarded and the
/// old primary never applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_orphans_waits_for_the_old_primary_apply_lock() {
    let s = stack();
    let (_roles, c, db) = switchover_setup("discard").await;
    let mut sf = s.sf.admin_conn().await;
    exec_all(&mut sf, [format!("INSERT INTO `{db}`.t VALUES (1, 'sf')")]).await;

    // EU becomes the primary; SF follows it.
    run_ok(
        &mut c.consumer_at("eu", &["promote", "--drain-timeout", "120s"]),
        "promote at EU",
    );
    assert!(read_only(&s.sf).await && !read_only(&s.eu).await);

    // A write at SF that EU never applies: an orphan of SF (written by an administrator, who may
    // write to a read-only server).
    exec_all(
        &mut sf,
        [format!("INSERT INTO `{db}`.t VALUES (1000, 'orphan')")],
    )
    .await;
    let orphan_gtid: String = query_one(&mut sf, "SELECT @@last_gtid").await;
    let sf_topic = format!("{}.sf.cdc", c.prefix);
    continuum_tests::wait_for("SF's orphan to be listed", Duration::from_secs(120), || {
        let out = c
            .consumer_at("sf", &["orphans", "--json"])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout).contains(&orphan_gtid);
        async move { listed.then_some(()) }
    })
    .await;

    // An apply at EU holds its lock on sf.cdc, as one that started as EU was fenced would.
    let lock = format!("continuum.apply.{sf_topic}");
    let mut holder = s.eu.admin_conn().await;
    let got: Option<i64> = holder
        .exec_first("SELECT GET_LOCK(?, 0)", (&lock,))
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(1),
        "the apply lock at EU is free while EU is the primary"
    );
    let mut eu = s.eu.admin_conn().await;
    let before = checkpoint_of(&mut eu, &sf_topic).await;

    let promote = c
        .consumer_at(
            "sf",
            &[
                "promote",
                "--orphans",
                "discard",
                "--drain-timeout",
                "120s",
                "--json",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let held_until = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < held_until {
        let now = checkpoint_of(&mut eu, &sf_topic).await;
        assert_eq!(
            now, before,
            "promote moved EU's checkpoint of {sf_topic} while another connection held EU's apply lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _: Option<i64> = holder
        .exec_first("SELECT RELEASE_LOCK(?)", (&lock,))
        .await
        .unwrap();
    drop(holder);
    let out = tokio::task::spawn_blocking(move || promote.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "promote at SF failed:\n{text}");
    assert!(!read_only(&s.sf).await && read_only(&s.eu).await, "{text}");
    let after: continuum_schemas::GtidPosition = checkpoint_of(&mut eu, &sf_topic)
        .await
        .unwrap()
        .parse()
        .unwrap();
    let orphan: continuum_schemas::Gtid = orphan_gtid.parse().unwrap();
    assert!(
        after.contains(&orphan),
        "EU's checkpoint {after} is past the discarded orphan {orphan}:\n{text}"
    );

    // EU follows SF again and never applies the orphan: a new write at SF arrives, it does not.
    exec_all(&mut sf, [format!("INSERT INTO `{db}`.t VALUES (2, 'sf')")]).await;
    let q = format!("SELECT COUNT(*) FROM `{db}`.t WHERE id = 2");
    continuum_tests::wait_for(
        "EU to apply SF's next write",
        Duration::from_secs(120),
        || count_at(&s.eu, &q),
    )
    .await;
    let orphan_at_eu: Option<i64> = eu
        .query_first(format!("SELECT COUNT(*) FROM `{db}`.t WHERE id = 1000"))
        .await
        .unwrap();
    assert_eq!(orphan_at_eu, Some(0), "EU applied the discarded orphan");

    c.must("scripts/pipeline.sh", &["stop"]);
    drop_database(&db).await;
}

/// `scripts/pipeline.sh` of the stack itself (`make run`'s pipeline), with none of this test
/// process's CONTINUUM_* settings.
fn stack_pipeline(args: &[&str]) -> std::process::Output {
    let mut c = Command::new("bash");
    c.arg(workspace_root().join("scripts/pipeline.sh"))
        .args(args)
        .env("STACK_DIR", stack_dir())
        .current_dir(workspace_root());
    for (k, _) in std::env::vars() {
        if k.starts_with("CONTINUUM_") {
            c.env_remove(k);
        }
    }
    c.output().unwrap()
}

/// Stops `make run`'s pipeline when the test ends if it was not running before.
struct PipelineAsBefore {
    was_running: bool,
}

impl Drop for PipelineAsBefore {
    fn drop(&mut self) {
        if !self.was_running {
            let _ = stack_pipeline(&["stop"]);
        }
    }
}

/// The records of partition 0 of `topic` on `site`'s cluster from `from` to its end.
fn records_since(
    site: &continuum_tests::Site,
    topic: &str,
    from: i64,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = site.consumer_config("ops-tail").create().unwrap();
    let high = c
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map(|w| w.1)
        .unwrap_or(0);
    if high <= from {
        return Vec::new();
    }
    site.read_from(
        topic,
        from,
        (high - from) as usize,
        Duration::from_secs(120),
    )
}

fn high_watermark(site: &continuum_tests::Site, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = site.consumer_config("ops-wm").create().unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map(|w| w.1)
        .unwrap_or(0)
}

/// What `verify --json` found, table by table, as comparable text.
fn differences(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for t in v["tables"].as_array().into_iter().flatten() {
        for d in t["differences"].as_array().into_iter().flatten() {
            for kind in ["changed", "missing", "extra"] {
                for k in d[kind].as_array().into_iter().flatten() {
                    out.insert(format!("{} {kind} {k}", t["table"]));
                }
            }
        }
    }
    for side in ["source_only", "replica_only"] {
        for t in v[side].as_array().into_iter().flatten() {
            out.insert(format!("{side} {t}"));
        }
    }
    out
}

/// `make drill` while `make run`'s pipeline runs. The drill stops that pipeline, runs its own
/// (confined to its databases and topics), and starts `make run`'s again at the end. Before,
/// that pipeline, which captured every database, then read the drill's writes from both
/// binlogs and replicated them a second time (SF's history replayed onto EU after EU's own
/// writes), so SF and EU ended different although the drill's own `verify` had found them
/// identical (apart from the discarded orphans). Now neither of `make run`'s topics carries a
/// record of the drill's databases, and after `make run`'s pipeline has caught up, `verify`
/// finds exactly what the drill's own `verify` found.
#[test]
fn the_drill_leaves_both_sites_as_it_verified_them_with_make_run_up() {
    use continuum_schemas::GtidPosition;
    let s = stack();
    let status = String::from_utf8_lossy(&stack_pipeline(&["status"]).stdout).into_owned();
    let _pipeline = PipelineAsBefore {
        was_running: status.contains(" running "),
    };
    let _roles = Roles::sf_primary();
    let out = stack_pipeline(&["start"]);
    assert!(
        out.status.success(),
        "make run's pipeline:\n{}",
        output_text(&out)
    );
    wait_sf_producer_streaming(Duration::from_secs(600));
    let sf_from = high_watermark(&s.sf, "sf.cdc");
    let eu_from = high_watermark(&s.eu, "eu.cdc");

    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let prefix = format!("drill_{ms}");
    let mut drill = Command::new("bash");
    drill
        .arg(workspace_root().join("scripts/drill.sh"))
        .env("STACK_DIR", stack_dir())
        .env("DRILL_PREFIX", &prefix)
        .env("DRILL_SF_SECONDS", "10")
        .env("DRILL_EU_SECONDS", "8")
        .current_dir(workspace_root());
    for (k, _) in std::env::vars() {
        if k.starts_with("CONTINUUM_") {
            drill.env_remove(k);
        }
    }
    let out = drill.output().unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "the drill failed:\n{text}");
    let status = String::from_utf8_lossy(&stack_pipeline(&["status"]).stdout).into_owned();
    assert_eq!(
        status.matches(" running ").count(),
        4,
        "the drill started make run's pipeline again:\n{status}"
    );

    // make run's pipeline catches up with everything SF holds now.
    let sf_position: GtidPosition = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut c = s.sf.admin_conn().await;
            query_one::<String>(&mut c, "SELECT @@gtid_binlog_pos")
                .await
                .parse()
                .unwrap()
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(continuum_tests::wait_for(
        &format!("make run's EU apply to reach SF's position {sf_position}"),
        Duration::from_secs(600),
        || async {
            let mut c = s.eu.admin_conn().await;
            let applied = checkpoint_of(&mut c, "sf.cdc").await?;
            applied
                .parse::<GtidPosition>()
                .ok()?
                .covers(&sf_position)
                .then_some(())
        },
    ));

    // Neither of make run's topics carries anything of the drill's databases.
    for (site, topic, from) in [(&s.sf, "sf.cdc", sf_from), (&s.eu, "eu.cdc", eu_from)] {
        use rdkafka::Message;
        let leaked: Vec<String> = records_since(site, topic, from)
            .iter()
            .filter(|m| {
                let has = |b: Option<&[u8]>| {
                    b.is_some_and(|b| b.windows(prefix.len()).any(|w| w == prefix.as_bytes()))
                };
                has(m.key()) || has(m.payload())
            })
            .map(|m| format!("{topic}@{}", m.offset()))
            .collect();
        assert!(
            leaked.is_empty(),
            "make run's pipeline replicated the drill's databases ({prefix}_*) again: {} record(s) in {topic} on the {} cluster: {leaked:?}",
            leaked.len(),
            site.name
        );
    }

    // Both sites are as the drill verified them.
    let drill_verify: serde_json::Value = serde_json::from_slice(
        &std::fs::read(stack_dir().join("drill").join(&prefix).join("verify.json")).unwrap(),
    )
    .unwrap();
    let mut verify = Command::new("bash");
    verify
        .args([
            "-c",
            "eval \"$(scripts/pipeline.sh env eu)\" && exec \"$0\" \"$@\"",
        ])
        .arg(workspace_root().join("target/debug/continuum-consumer"))
        .args([
            "verify",
            "--databases",
            &format!("{prefix}_0,{prefix}_1"),
            "--json",
        ])
        .env("STACK_DIR", stack_dir())
        .current_dir(workspace_root());
    for (k, _) in std::env::vars() {
        if k.starts_with("CONTINUUM_") {
            verify.env_remove(k);
        }
    }
    let out = verify.output().unwrap();
    let now: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}:\n{}", output_text(&out)));
    let (then, now) = (differences(&drill_verify), differences(&now));
    assert!(
        then == now,
        "after make run's pipeline caught up, SF and EU differ beyond what the drill verified:\nthe drill: {} difference(s)\nnow: {} difference(s), new: {:?}",
        then.len(),
        now.len(),
        now.difference(&then).take(20).collect::<Vec<_>>()
    );
    // The drill's databases stay (like any drill's); nothing to clean here but its directory.
    let _ = std::fs::remove_dir_all(stack_dir().join("drill").join(&prefix));
}
