//! Processes: the ones the bench starts (spawned, stopped by PID, reaped with their rusage) and
//! the stack's (by the PID files under `$STACK_DIR/pids`), and what /proc says about them:
//! CPU seconds (utime + stime) and peak RSS (VmHWM).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds, or None if it is gone.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Machine-wide CPU from /proc/stat: (busy seconds, total seconds) over all cores.
pub fn machine_cpu() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or("");
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / clk_tck(), total / clk_tck())
}

/// A stack part's PID from `$STACK_DIR/pids/<part>.pid`, if it is running.
pub fn stack_pid(stack_dir: &Path, part: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(stack_dir.join("pids").join(format!("{part}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    cpu_seconds(pid).map(|_| pid)
}

/// How a spawned process ended: exit status and its own rusage (exact, from wait4).
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: i32,
    pub cpu_s: f64,
    pub maxrss_kib: u64,
}

/// A process the bench started, in its own process group, output to a log file.
pub struct Spawned {
    pub name: String,
    pub pid: i32,
    pub log: PathBuf,
    pub started: Instant,
    exit: Option<Exit>,
    // Kept so std does not consider the child abandoned; reaped by wait4 below.
    _child: std::process::Child,
}

impl Spawned {
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log: &Path,
        cwd: &Path,
    ) -> Result<Spawned> {
        if let Some(p) = log.parent() {
            std::fs::create_dir_all(p)?;
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // The caller's CONTINUUM_* settings would override the bench's config files.
        for (k, _) in std::env::vars() {
            if k.starts_with("CONTINUUM_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {}", program.display()))?;
        Ok(Spawned {
            name: name.to_owned(),
            pid: child.id() as i32,
            log: log.to_owned(),
            started: Instant::now(),
            exit: None,
            _child: child,
        })
    }

    pub fn cpu_now(&self) -> Option<f64> {
        cpu_seconds(self.pid)
    }

    pub fn hwm_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmHWM")
    }

    /// Reaps the process if it has exited (non-blocking).
    pub fn try_exit(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            let mut status = 0;
            // SAFETY: plain syscall on our own child; rusage is written by the kernel.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    -1
                };
                let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                self.exit = Some(Exit {
                    code,
                    cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
                    maxrss_kib: ru.ru_maxrss as u64,
                });
            }
        }
        self.exit
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_exit() {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) still running after {:?}; see {}",
                    self.name,
                    self.pid,
                    timeout,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it ended.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        if let Some(e) = self.try_exit() {
            return e;
        }
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        match self.wait(grace).await {
            Ok(e) => e,
            Err(_) => {
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                loop {
                    if let Some(e) = self.try_exit() {
                        return e;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Fails, with the last lines of its log, if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(e) = self.try_exit() {
            bail!(
                "{} exited (status {}) before the phase ended; last lines of {}:\n{}",
                self.name,
                e.code,
                self.log.display(),
                self.log_tail(25)
            );
        }
        Ok(())
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Never leave a child running if the bench fails half way.
        if self.try_exit().is_none() {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let mut status = 0;
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU seconds of a set of processes (and of the machine) between two instants.
pub struct CpuWindow {
    pub started: Instant,
    start: BTreeMap<String, (i32, f64)>,
    machine0: (f64, f64),
}

/// What a window measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CpuUse {
    pub wall_s: f64,
    /// Per process: CPU seconds used in the window.
    pub cpu_s: BTreeMap<String, f64>,
    /// Busy CPU seconds of the whole machine (every process, this bench's and others').
    pub machine_busy_s: f64,
    /// Cores x wall seconds.
    pub machine_capacity_s: f64,
}

impl CpuWindow {
    pub fn start(procs: &[(String, i32)]) -> CpuWindow {
        let start = procs
            .iter()
            .map(|(n, p)| (n.clone(), (*p, cpu_seconds(*p).unwrap_or(0.0))))
            .collect();
        CpuWindow {
            started: Instant::now(),
            start,
            machine0: machine_cpu(),
        }
    }

    /// Adds a process that starts (from zero CPU) inside the window.
    pub fn add_new(&mut self, name: &str, pid: i32) {
        self.start.insert(name.to_owned(), (pid, 0.0));
    }

    /// CPU per process now; `overrides` gives exact totals for processes that already exited.
    pub fn finish(&self, overrides: &BTreeMap<String, f64>) -> CpuUse {
        let m = machine_cpu();
        let mut cpu_s = BTreeMap::new();
        for (n, (pid, c0)) in &self.start {
            let now = overrides
                .get(n)
                .copied()
                .or_else(|| cpu_seconds(*pid))
                .unwrap_or(*c0);
            cpu_s.insert(n.clone(), (now - c0).max(0.0));
        }
        CpuUse {
            wall_s: self.started.elapsed().as_secs_f64(),
            cpu_s,
            machine_busy_s: m.0 - self.machine0.0,
            machine_capacity_s: m.1 - self.machine0.1,
        }
    }
}

impl CpuUse {
    /// CPU seconds per 1000 of `rows`, per process.
    pub fn per_1k_rows(&self, rows: u64) -> BTreeMap<String, f64> {
        self.cpu_s
            .iter()
            .map(|(k, v)| (k.clone(), v / (rows as f64 / 1000.0)))
            .collect()
    }
}
