//! The bench's settings: every environment variable it reads is declared here once, with clap
//! (`#[arg(env = ...)]`), so each is also a flag (`--rows` for `BENCH_ROWS`, ...). A value that
//! does not parse stops the bench before it touches anything, with a message naming the
//! variable and the form expected; an empty variable counts as unset (the defaults of
//! docs/bench.md, "Settings"). [`Cfg`] is the result with every derived default filled in.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::db::{self, Db};
use crate::procs;

/// A phase `BENCH_SKIP` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Phase {
    Native,
    Load,
    Producer,
    Apply,
    E2e,
    Steady,
    Snapshot,
}

/// What the bench reads of the stack itself (`make up` exports it in `$STACK_DIR/env`; `make
/// tools` records the install roots): its state directory, TLS and server versions.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// The stack's state directory (`make up` writes `$STACK_DIR/env`)
    #[arg(long = "stack-dir", env = "STACK_DIR")]
    pub dir: PathBuf,
    /// CA of the stack's MariaDB TLS, if it has any
    #[arg(long = "stack-tls-ca", env = "STACK_TLS_CA")]
    pub tls_ca: Option<String>,
    /// Kafka's install root, for the report (its name carries the version)
    #[arg(long, env = "KAFKA_HOME")]
    pub kafka_home: Option<PathBuf>,
    /// Apicurio Registry's install root, for the report
    #[arg(long, env = "APICURIO_HOME")]
    pub apicurio_home: Option<PathBuf>,
}

/// The environment (or flags) of `continuum-bench`. Run it through `make bench`, or source
/// `$STACK_DIR/env` first: the stack's addresses and users come from there.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "continuum-bench",
    about = "Continuum against native MariaDB replication on the local stack (docs/bench.md)"
)]
pub struct Args {
    /// Row changes in the backlog (at least 1000; `_` may separate digits)
    #[arg(long, env = "BENCH_ROWS", default_value_t = 1_000_000, value_parser = rows)]
    pub rows: u64,
    /// 1 (or yes/true/on): sync_binlog=0, innodb_flush_log_at_trx_commit=2 on every MariaDB
    /// for the run, restored after
    #[arg(long, env = "BENCH_RELAXED", default_value = "0", value_parser = flag, hide_possible_values = true,
          action = ArgAction::Set, num_args = 0..=1, default_missing_value = "1")]
    pub relaxed: bool,
    /// Generator connections
    #[arg(long, env = "BENCH_WORKERS", default_value_t = 4, value_parser = number::<usize>)]
    pub workers: usize,
    /// Seconds per steady-state load [default: 60, 15 below 200k rows]
    #[arg(long, env = "BENCH_STEADY_SECS", value_parser = number::<u64>)]
    pub steady_secs: Option<u64>,
    /// Cargo profile of the binaries benchmarked (`dev`: target/debug)
    #[arg(long, env = "BENCH_PROFILE", default_value = "release")]
    pub profile: String,
    /// Where the JSON, Markdown, PNG and history.csv go [default: <BENCH_ROOT>/bench/results]
    #[arg(long, env = "BENCH_OUT")]
    pub out: Option<PathBuf>,
    /// The native replica's port
    #[arg(long, env = "BENCH_REPLICA_PORT", default_value_t = 3309, value_parser = number::<u16>)]
    pub replica_port: u16,
    /// Comma-separated phases to leave out: native, load, producer, apply, e2e, steady
    #[arg(long, env = "BENCH_SKIP", value_delimiter = ',', value_parser = phase)]
    pub skip: Vec<Phase>,
    /// Seconds each drain may take [default: 300 + rows/200]
    #[arg(long, env = "BENCH_PHASE_TIMEOUT", value_parser = number::<u64>)]
    pub phase_timeout: Option<u64>,
    /// 1: keep the bench's topics and checkpoint rows
    #[arg(long, env = "BENCH_KEEP", default_value = "0", value_parser = flag, hide_possible_values = true,
          action = ArgAction::Set, num_args = 0..=1, default_missing_value = "1")]
    pub keep: bool,
    /// Generator seed
    #[arg(long, env = "BENCH_SEED", default_value_t = 1, value_parser = number::<u64>)]
    pub seed: u64,
    /// The repository (for target/, bench/results and the commit) [default: the current directory]
    #[arg(long, env = "BENCH_ROOT")]
    pub root: Option<PathBuf>,
    /// Where the Continuum binaries and `workload` are [default: <BENCH_ROOT>/target/<profile>]
    #[arg(long, env = "BENCH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The database the backlog goes to (re-created on SF and EU)
    #[arg(long, env = "BENCH_DATABASE", default_value = "continuum_bench")]
    pub database: String,

    #[command(flatten)]
    pub stack: StackArgs,

    #[arg(long, env = "SF_DB_HOST")]
    pub sf_db_host: String,
    #[arg(long, env = "SF_DB_PORT", value_parser = number::<u16>)]
    pub sf_db_port: u16,
    /// The bench's own connections to SF (creates databases, reads checksums)
    #[arg(long, env = "SF_DB_ADMIN_USER")]
    pub sf_db_admin_user: String,
    #[arg(long, env = "SF_DB_ADMIN_PASSWORD", default_value = "")]
    pub sf_db_admin_password: String,
    /// The Continuum producer's user at SF (also the native replica's)
    #[arg(long, env = "SF_DB_USER")]
    pub sf_db_user: String,
    #[arg(long, env = "SF_DB_PASSWORD")]
    pub sf_db_password: String,
    #[arg(long, env = "SF_BROKERS")]
    pub sf_brokers: String,
    #[arg(long, env = "SF_REGISTRY")]
    pub sf_registry: String,

    #[arg(long, env = "EU_DB_HOST")]
    pub eu_db_host: String,
    #[arg(long, env = "EU_DB_PORT", value_parser = number::<u16>)]
    pub eu_db_port: u16,
    #[arg(long, env = "EU_DB_ADMIN_USER")]
    pub eu_db_admin_user: String,
    #[arg(long, env = "EU_DB_ADMIN_PASSWORD", default_value = "")]
    pub eu_db_admin_password: String,
    /// The consumer's user at EU
    #[arg(long, env = "EU_DB_USER")]
    pub eu_db_user: String,
    #[arg(long, env = "EU_DB_PASSWORD")]
    pub eu_db_password: String,
    #[arg(long, env = "EU_BROKERS")]
    pub eu_brokers: String,
    #[arg(long, env = "EU_REGISTRY")]
    pub eu_registry: String,
}

/// A number, with `_` allowed between digits (`BENCH_ROWS=1_000_000`).
fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| "expected a whole number (digits, `_` allowed between them)".to_owned())
}

/// A yes or no: 1/0, yes/no, true/false, on/off.
fn flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err("expected 1 or 0 (or yes/no, true/false, on/off)".into()),
    }
}

fn rows(s: &str) -> Result<u64, String> {
    match number::<u64>(s)? {
        n if n < 1000 => Err(format!("{n}: use at least 1000")),
        n => Ok(n),
    }
}

fn phase(s: &str) -> Result<Phase, String> {
    Phase::from_str(s.trim(), true).map_err(|_| {
        "expected phases separated by commas: native, load, producer, apply, e2e, steady, snapshot".into()
    })
}

const HINT: &str = "run it through `make bench`, or `. $STACK_DIR/env` first (make up writes it)";

impl Args {
    /// The clap command, each value named after its environment variable, so that an error
    /// says which variable is wrong (`invalid value 'x' for '--rows <BENCH_ROWS>'`).
    pub fn command_named() -> clap::Command {
        Args::command()
            .mut_args(
                |a| match a.get_env().map(|e| e.to_string_lossy().into_owned()) {
                    // clap wants a &'static str without its `string` feature; a few names, once.
                    Some(env) => a.value_name(&*Box::leak(env.into_boxed_str())),
                    None => a,
                },
            )
            .after_help(HINT)
    }

    /// Prints a parse error (with how to get the stack's variables, when some are missing);
    /// returns the exit code.
    pub fn report_error(e: &clap::Error) -> u8 {
        let _ = e.print();
        if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
            eprintln!("{HINT}");
        }
        e.exit_code() as u8
    }

    /// Parses flags and environment; an environment variable set to the empty string counts
    /// as unset, as it always has for the bench.
    pub fn parse_env() -> Result<Args, clap::Error> {
        for a in Args::command().get_arguments() {
            if let Some(env) = a.get_env() {
                if std::env::var_os(env).is_some_and(|v| v.is_empty()) {
                    std::env::remove_var(env);
                }
            }
        }
        // Built after: a clap argument reads its variable when it is made.
        Args::parse_with(Args::command_named(), std::env::args_os())
    }

    fn parse_with<I, T>(mut cmd: clap::Command, args: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let m = cmd.try_get_matches_from_mut(args)?;
        Args::from_arg_matches(&m).map_err(|e| e.with_cmd(&cmd))
    }
}

/// The settings with every derived default resolved: `args` as given, and what follows from
/// them.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub args: Args,
    pub root: PathBuf,
    /// `$STACK_DIR/bench`: the bench's configs, logs, replica and dumps.
    pub work: PathBuf,
    pub bin_dir: PathBuf,
    pub out_dir: PathBuf,
    pub steady_secs: u64,
    pub phase_timeout: Duration,
    /// The bench's own (admin) logins at SF and EU.
    pub sf: Db,
    pub eu: Db,
}

impl Cfg {
    pub fn new(a: Args) -> Result<Cfg> {
        let root = match &a.root {
            Some(r) => r.clone(),
            None => std::env::current_dir()?,
        };
        let profile_dir = if a.profile == "dev" {
            "debug"
        } else {
            &a.profile
        };
        let admin = |name: &str, host: &String, port, user: &String, password: &String| Db {
            name: format!("{name} MariaDB"),
            host: host.clone(),
            port,
            user: user.clone(),
            password: password.clone(),
        };
        Ok(Cfg {
            work: a.stack.dir.join("bench"),
            bin_dir: a
                .bin_dir
                .clone()
                .unwrap_or_else(|| root.join("target").join(profile_dir)),
            out_dir: a.out.clone().unwrap_or_else(|| root.join("bench/results")),
            steady_secs: a
                .steady_secs
                .unwrap_or(if a.rows >= 200_000 { 60 } else { 15 }),
            phase_timeout: Duration::from_secs(a.phase_timeout.unwrap_or(300 + a.rows / 200)),
            sf: admin(
                "sf",
                &a.sf_db_host,
                a.sf_db_port,
                &a.sf_db_admin_user,
                &a.sf_db_admin_password,
            ),
            eu: admin(
                "eu",
                &a.eu_db_host,
                a.eu_db_port,
                &a.eu_db_admin_user,
                &a.eu_db_admin_password,
            ),
            root,
            args: a,
        })
    }

    /// Whether `BENCH_SKIP` leaves `phase` out.
    pub fn skips(&self, phase: Phase) -> bool {
        self.args.skip.contains(&phase)
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    pub fn logs(&self) -> PathBuf {
        self.work.join("logs")
    }

    /// A Continuum site config for the bench: the stack's addresses, the given topic for SF's
    /// changelog, only the bench database captured, metrics on an ephemeral port.
    pub fn site_toml(&self, site: &str, topic: &str) -> String {
        let a = &self.args;
        let (db, user) = if site == "sf" {
            (&self.sf, &a.sf_db_user)
        } else {
            (&self.eu, &a.eu_db_user)
        };
        format!(
            r#"# Written by continuum-bench for one run; see docs/bench.md.
site = "{site}"

[database]
host = "{host}"
port = {port}
user = "{user}"
{tls}

[sites.sf]
brokers = "{sfb}"
topic = "{topic}"
registry = {{ url = "{sfr}" }}

[sites.eu]
brokers = "{eub}"
topic = "{topic}.eu-unused"
registry = {{ url = "{eur}" }}

[producer]
server_id = 4091
include = ["{dbname}.*"]
metrics_listen = "127.0.0.1:0"

[consumer]
metrics_listen = "127.0.0.1:0"
"#,
            host = db.host,
            port = db.port,
            tls = db::tls_toml(a.stack.tls_ca.as_deref()),
            sfb = a.sf_brokers,
            eub = a.eu_brokers,
            sfr = a.sf_registry,
            eur = a.eu_registry,
            dbname = a.database,
        )
    }

    pub fn write_config(&self, site: &str, topic: &str) -> Result<PathBuf> {
        let p = self.work.join(format!("{topic}.{site}.toml"));
        std::fs::write(&p, self.site_toml(site, topic))?;
        Ok(p)
    }

    /// The environment of a Continuum process: none of the caller's CONTINUUM_* settings (the
    /// bench's config file is the whole truth), the site's password.
    pub fn continuum_env(&self, site: &str) -> Vec<(String, String)> {
        let pw = if site == "sf" {
            &self.args.sf_db_password
        } else {
            &self.args.eu_db_password
        };
        vec![
            ("CONTINUUM_DB_PASSWORD".into(), pw.clone()),
            ("CONTINUUM_LOG_FORMAT".into(), "text".into()),
        ]
    }

    pub fn generator_env(&self) -> Vec<(String, String)> {
        vec![
            ("SF_DB_HOST".into(), self.sf.host.clone()),
            ("SF_DB_PORT".into(), self.sf.port.to_string()),
            ("SF_DB_ADMIN_USER".into(), self.sf.user.clone()),
            ("SF_DB_ADMIN_PASSWORD".into(), self.sf.password.clone()),
        ]
    }

    /// The stack's processes among `parts` that run, with their PIDs.
    pub fn stack_procs(&self, parts: &[&str]) -> Vec<(String, i32)> {
        parts
            .iter()
            .filter_map(|p| {
                procs::stack_pid(&self.args.stack.dir, p).map(|pid| (p.to_string(), pid))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const STACK: &[&str] = &[
        "continuum-bench",
        "--stack-dir=/s",
        "--root=/r",
        "--sf-db-host=127.0.0.1",
        "--sf-db-port=1",
        "--sf-db-admin-user=root",
        "--sf-db-user=continuum",
        "--sf-db-password=x",
        "--sf-brokers=127.0.0.1:3",
        "--sf-registry=http://127.0.0.1:5",
        "--eu-db-host=127.0.0.1",
        "--eu-db-port=2",
        "--eu-db-admin-user=root",
        "--eu-db-user=continuum",
        "--eu-db-password=x",
        "--eu-brokers=127.0.0.1:4",
        "--eu-registry=http://127.0.0.1:6",
    ];

    /// Flags only: the environment the tests run in (perhaps the stack's) is left out.
    fn flags_only<'a>(args: impl IntoIterator<Item = &'a &'a str>) -> Result<Args, clap::Error> {
        let cmd = Args::command_named().mut_args(|a| a.env(None));
        Args::parse_with(cmd, args)
    }

    /// The stack's settings as flags, and `extra`.
    pub(crate) fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        flags_only(STACK.iter().chain(extra))
    }

    #[test]
    fn defaults_are_docs_bench_md_s() {
        let cfg = Cfg::new(parse(&[]).unwrap()).unwrap();
        assert_eq!(cfg.args.rows, 1_000_000);
        assert_eq!(cfg.steady_secs, 60);
        assert_eq!(cfg.phase_timeout, Duration::from_secs(300 + 5000));
        assert_eq!(cfg.bin_dir, PathBuf::from("/r/target/release"));
        assert_eq!(cfg.out_dir, PathBuf::from("/r/bench/results"));
        let a = &cfg.args;
        assert_eq!((a.workers, a.replica_port, a.seed), (4, 3309, 1));
        assert!(!a.relaxed && !a.keep && a.skip.is_empty());
        assert_eq!(cfg.sf.password, "");
        let cfg = Cfg::new(parse(&["--rows=20_000", "--profile=dev"]).unwrap()).unwrap();
        assert_eq!(cfg.steady_secs, 15);
        assert_eq!(cfg.bin_dir, PathBuf::from("/r/target/debug"));
    }

    #[test]
    fn values_parse_as_before() {
        let a = parse(&[
            "--skip",
            "native, load,e2e",
            "--relaxed",
            "--keep=1",
            "--steady-secs=5",
        ])
        .unwrap();
        assert_eq!(a.skip, vec![Phase::Native, Phase::Load, Phase::E2e]);
        assert!(a.relaxed && a.keep);
        assert_eq!(a.steady_secs, Some(5));
        assert!(!parse(&["--relaxed=0"]).unwrap().relaxed);
        assert!(parse(&["--relaxed=yes"]).unwrap().relaxed);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_form() {
        for (arg, var, form) in [
            ("--rows=12", "BENCH_ROWS", "at least 1000"),
            ("--rows=many", "BENCH_ROWS", "whole number"),
            (
                "--skip=native,lunch",
                "BENCH_SKIP",
                "native, load, producer",
            ),
            ("--keep=maybe", "BENCH_KEEP", "true"),
            ("--replica-port=70000", "BENCH_REPLICA_PORT", "whole number"),
        ] {
            let e = parse(&[arg]).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(form), "{arg}: {e}");
        }
        let e = flags_only(&["continuum-bench"]).unwrap_err().to_string();
        assert!(e.contains("STACK_DIR"), "{e}");
    }

    /// Every variable the bench reads is in docs/bench.md.
    #[test]
    fn docs_list_every_variable() {
        let docs = include_str!("../../docs/bench.md");
        let missing: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .filter(|e| !docs.contains(&format!("`{e}`")))
            .collect();
        assert!(missing.is_empty(), "not in docs/bench.md: {missing:?}");
    }

    #[test]
    fn config_names_only_the_bench_database() {
        let cfg = Cfg::new(parse(&["--rows=1000"]).unwrap()).unwrap();
        let t = cfg.site_toml("eu", "bench.1.e2e");
        let parsed = continuum_common::SiteConfig::from_toml(&t).unwrap();
        assert_eq!(parsed.site, "eu");
        assert_eq!(parsed.database.port, 2);
        assert_eq!(
            parsed.producer.include,
            vec!["continuum_bench.*".to_owned()]
        );
        assert!(
            !t.contains("password"),
            "passwords travel by environment only"
        );
    }
}
