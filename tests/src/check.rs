//! Small checks the suites share, each of which panics naming what failed:
//!
//! - [`run_ok`] runs a command and requires it to exit 0, with its output in the panic;
//! - [`output_text`] is a finished command's stdout and stderr as one text;
//! - [`exec_all`] runs SQL statements in order, naming the statement that failed;
//! - [`query_one`] reads the one value a query returns, [`exec_row`] the row a prepared
//!   statement may return;
//! - [`env_or`] reads a tuning knob (`E2E_SECONDS`, …) from the environment;
//! - [`TempDir`] is a scratch directory removed when the test passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, Params};

/// Runs `cmd` to completion and returns its output; panics, naming `what` and with all the
/// command printed, unless it exits 0.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        output_text(&out)
    );
    out
}

/// What a finished command printed: its stdout, then its stderr.
pub fn output_text(out: &Output) -> String {
    [&out.stdout[..], &out.stderr[..]]
        .map(String::from_utf8_lossy)
        .concat()
}

/// Runs `statements` on `c`, in order; panics naming the first that fails.
pub async fn exec_all<S: AsRef<str>>(c: &mut Conn, statements: impl IntoIterator<Item = S>) {
    for s in statements {
        let s = s.as_ref();
        c.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// The first row `sql` returns on `c` (one column: `T` is that column's type); panics if the
/// query fails or returns no row.
pub async fn query_one<T: FromRow + Send + 'static>(c: &mut Conn, sql: &str) -> T {
    c.query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// The first row, if any, of the prepared statement `sql` run with `params` on `c`; panics
/// naming `sql` if it fails.
pub async fn exec_row<T, P>(c: &mut Conn, sql: &str, params: P) -> Option<T>
where
    T: FromRow + Send + 'static,
    P: Into<Params> + Send,
{
    c.exec_first(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The environment variable `name` parsed, or `default` when it is unset or does not parse.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A new directory under the system's temporary directory, named after `prefix` and unique to
/// this run ([`crate::unique_name`]); removed with its contents when dropped, unless the test is
/// failing (panicking), when it is left for a look.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let d = std::env::temp_dir().join(crate::unique_name(prefix));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        TempDir(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("left {} for a look", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
