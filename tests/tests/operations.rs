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

use continuum_tests::{stack, unique_name, wait_for_blocking, workspace_root};

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
        Command::new("bash")
            .arg(workspace_root().join(script))
            .args(args)
            .env("STACK_DIR", &self.dir)
            .env("CONTINUUM_PRODUCER_INCLUDE", format!("{}_*.*", self.prefix))
            .env("CONTINUUM_SF_TOPIC", format!("{}.sf.cdc", self.prefix))
            .env("CONTINUUM_EU_TOPIC", format!("{}.eu.cdc", self.prefix))
            .env("CONTINUUM_PRODUCER_METRICS_LISTEN", "127.0.0.1:0")
            // Ids no other producer on the stack uses (the preflight refuses a duplicate).
            .env("CONTINUUM_PRODUCER_SERVER_ID", self.server_id.to_string())
            .env("CONTINUUM_CONSUMER_METRICS_LISTEN", "127.0.0.1:0")
            .current_dir(workspace_root())
            .output()
            .unwrap()
    }

    fn must(&self, script: &str, args: &[&str]) -> String {
        let out = self.script(script, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
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
