//! The native-replication contestant: a third `mariadbd` (own data directory and port under
//! `$STACK_DIR/bench/replica`), configured like the stack's servers (same buffer pool, redo log
//! size, binlog settings with `log_slave_updates`, same durability), started by the bench and
//! stopped by its PID.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::db::{Db, Durability};
use crate::procs::Spawned;

pub struct Replica {
    pub db: Db,
    pub proc: Spawned,
}

fn my_cnf(dir: &Path, port: u16, d: &Durability) -> String {
    format!(
        "[mariadbd]
datadir={dir}/data
socket={dir}/mariadbd.sock
pid-file={dir}/mariadbd.pid
port={port}
bind-address=127.0.0.1
skip-name-resolve
user={user}
server_id=3
gtid_domain_id=3
log_bin=replica-bin
log_slave_updates=ON
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
gtid_strict_mode=ON
sync_binlog={sb}
innodb_flush_log_at_trx_commit={fl}
character_set_server=utf8mb4
collation_server=utf8mb4_general_ci
max_allowed_packet=256M
innodb_buffer_pool_size=256M
innodb_log_file_size=256M
max_connections=300
skip_slave_start
relay_log=replica-relay
",
        dir = dir.display(),
        user = whoami(),
        sb = d.sync_binlog,
        fl = d.innodb_flush_log_at_trx_commit,
    )
}

fn whoami() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "root".into())
}

fn which(name: &str) -> Result<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if p.is_empty() {
        bail!("{name} is not on PATH (make deps installs mariadb-server)");
    }
    Ok(PathBuf::from(p))
}

impl Replica {
    /// Starts the replica server, creating its data directory the first time.
    pub async fn start(dir: &Path, port: u16, d: &Durability, log_dir: &Path) -> Result<Replica> {
        std::fs::create_dir_all(dir)?;
        let cnf = dir.join("my.cnf");
        std::fs::write(&cnf, my_cnf(dir, port, d))?;
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!("port {port} for the native replica is taken; set BENCH_REPLICA_PORT to a free port");
        }
        if !dir.join("data/mysql").is_dir() {
            let _ = std::fs::remove_dir_all(dir.join("data"));
            let out = Command::new(which("mariadb-install-db")?)
                .arg(format!("--defaults-file={}", cnf.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .output()
                .context("running mariadb-install-db")?;
            if !out.status.success() {
                bail!(
                    "mariadb-install-db for the native replica failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let proc = Spawned::start(
            "replica-db",
            &which("mariadbd")?,
            &[format!("--defaults-file={}", cnf.display())],
            &[],
            &log_dir.join("replica-db.log"),
            dir,
        )?;
        let db = Db {
            name: "native replica".into(),
            host: "127.0.0.1".into(),
            port,
            user: "root".into(),
            password: String::new(),
        };
        let mut r = Replica { db, proc };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(e) = r.proc.try_exit() {
                bail!(
                    "the native replica's mariadbd exited ({}) at start:\n{}",
                    e.code,
                    r.proc.log_tail(20)
                );
            }
            // Root logs in over the socket first (no TCP root account yet on a fresh datadir).
            let sock = dir.join("mariadbd.sock");
            let ok = Command::new("mariadb")
                .args(["--no-defaults", "--protocol=socket", "-S"])
                .arg(&sock)
                .args(["-uroot", "-e", "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the native replica did not answer within 120 s; see {}",
                    r.proc.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        r.db.conn().await?;
        Ok(r)
    }

    pub async fn stop(mut self) {
        self.proc.stop(Duration::from_secs(120)).await;
    }
}
