//! Named locks on MariaDB (`GET_LOCK`), held on a dedicated connection for as long as a process
//! does the work the lock guards: one producer per topic, one mirror per target topic, one apply
//! per topic and replica (`continuum-consumer`'s `lock` module builds on this one).
//!
//! Guarantees:
//! - a process that wants a lock another connection holds waits for it ([`Wait::UntilFree`]):
//!   it logs which connection holds it and what that is, and takes the lock as soon as it is
//!   free. A second instance is a standby, not an error. Only [`Wait::No`] refuses
//!   at once, for verbs that must not run beside the holder (`replay`);
//! - the lock connection sets a short `wait_timeout` ([`LOCK_WAIT_TIMEOUT`]) and is polled every
//!   [`POLL`]. When the holder's host dies (as opposed to its process, whose socket the kernel
//!   closes), its connection is left half-open and silent; MariaDB keeps a connection's locks
//!   until it drops the connection, which with the default `wait_timeout` is 8 hours later. With
//!   the short one it is [`LOCK_WAIT_TIMEOUT`] after the dead holder's last poll, and the waiting
//!   replacement takes over then;
//! - the holder learns that it lost the lock through the `lost` watch (a poll failed, did not
//!   answer within [`LEASE`], or found the lock gone) and through [`NamedLock::check`], which
//!   also counts the lock as lost while no poll has confirmed it for [`LEASE`]: a process that
//!   was frozen longer than that (a stalled VM, SIGSTOP) may have lost the lock to a replacement
//!   without having noticed yet, and must not write before a poll says it still holds it.
//!   [`LEASE`] is half of [`LOCK_WAIT_TIMEOUT`], so a holder that checks before it writes stops
//!   writing before MariaDB can give the lock to anyone else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::watch;

/// `wait_timeout` of a lock connection: MariaDB drops a lock connection that said nothing for
/// this long, and frees its locks. A live holder polls every [`POLL`].
pub const LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a holder confirms that it still holds its lock.
pub const POLL: Duration = Duration::from_secs(1);
/// How long a confirmation counts ([`NamedLock::check`]), and how long a poll may take.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often a waiting process repeats that it still waits (and whenever the holder changes).
const REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{target}: taking lock '{lock}': {source}")]
    Db {
        lock: String,
        target: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error(
        "the lock '{lock}' on {target} is held by connection {holder}: {what} is already running"
    )]
    Held {
        lock: String,
        target: String,
        holder: String,
        what: String,
    },
    #[error("lost the lock '{lock}' on {target}: {reason}; stopping at once so that no second writer can interleave")]
    Lost {
        lock: String,
        target: String,
        reason: String,
    },
}

impl LockError {
    /// Only a failure to reach the server is worth retrying; a held lock (from
    /// [`Wait::No`]) means another process does the work.
    pub fn is_transient(&self) -> bool {
        matches!(self, LockError::Db { .. })
    }
}

/// What taking a lock that another connection holds does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait until it is free: a second instance is a standby.
    UntilFree,
    /// Fail at once with [`LockError::Held`].
    No,
}

pub struct NamedLock {
    pub name: String,
    target: String,
    /// `Some(reason)` once the lock is lost.
    pub lost: watch::Receiver<Option<String>>,
    /// The MariaDB connection that holds the lock (`IS_USED_LOCK` answers it).
    pub connection_id: u32,
    /// When the last poll that confirmed the lock was sent.
    confirmed: Arc<Mutex<Instant>>,
    /// Tells the poll task to release the lock and close its connection.
    release: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NamedLock {
    /// Drops the lock connection with the poll task; MariaDB frees the lock when it sees the
    /// connection close.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a lock whose last confirmation is `age` old no longer counts as held, if it does not.
pub fn lease_expired(age: Duration) -> Option<String> {
    (age > LEASE).then(|| {
        format!(
            "no poll confirmed it for {:.1}s (more than {}s: this process or its host stalled), so MariaDB may have given it to another process meanwhile",
            age.as_secs_f64(),
            LEASE.as_secs()
        )
    })
}

/// Whether a waiting process should say again that it waits: the first time, when another
/// connection holds the lock now, and every [`REPORT_EVERY`].
fn should_report(last: Option<(i64, Instant)>, holder: i64, now: Instant) -> bool {
    match last {
        None => true,
        Some((h, at)) => h != holder || now.duration_since(at) >= REPORT_EVERY,
    }
}

impl NamedLock {
    /// Takes `name`. While another connection holds it, [`Wait::UntilFree`] waits (logging, now
    /// and then, which connection that is; `what` names the guarded work: "a mirror of
    /// sf.cdc"), and dropping the future stops the wait; [`Wait::No`] fails at once with
    /// [`LockError::Held`], naming the holder. Otherwise fails only when the server cannot be
    /// reached.
    pub async fn take(
        opts: Opts,
        target: &str,
        name: &str,
        what: &str,
        wait: Wait,
    ) -> Result<NamedLock, LockError> {
        let db = db_error(name, target);
        let mut conn = connect(opts, name, target).await?;
        let started = Instant::now();
        let mut reported: Option<(i64, Instant)> = None;
        // One second at a time, so that a dropped future ends the wait within a second.
        let timeout = match wait {
            Wait::UntilFree => Duration::from_secs(1),
            Wait::No => Duration::ZERO,
        };
        loop {
            if get_lock(&mut conn, name, timeout).await.map_err(&db)? {
                if reported.is_some() {
                    tracing::info!(lock = %name, waited_s = started.elapsed().as_secs(), "the lock is free: taking over");
                }
                return Ok(Self::hold(conn, name, target));
            }
            let holder = lock_holder(&mut conn, name).await.map_err(&db)?;
            if wait == Wait::No {
                return Err(LockError::Held {
                    lock: name.to_owned(),
                    target: target.to_owned(),
                    holder: holder.map_or_else(|| "unknown".into(), |h| h.to_string()),
                    what: what.to_owned(),
                });
            }
            let Some(holder) = holder else {
                continue;
            };
            let now = Instant::now();
            if should_report(reported, holder, now) {
                tracing::warn!(
                    lock = %name,
                    target = %target,
                    holder,
                    waited_s = started.elapsed().as_secs(),
                    "waiting for the lock '{name}' on {target}, held by connection {holder}: {what} is running, or its host stopped answering (MariaDB then frees the lock when it drops that connection, {}s after its last poll). This process takes over as soon as the lock is free",
                    LOCK_WAIT_TIMEOUT.as_secs()
                );
                reported = Some((holder, now));
            }
        }
    }

    /// Holds the lock `conn` took: polls it every [`POLL`] until it is lost.
    fn hold(conn: Conn, name: &str, target: &str) -> NamedLock {
        let connection_id = conn.id();
        let (tx, rx) = watch::channel(None);
        let confirmed = Arc::new(Mutex::new(Instant::now()));
        let lock_name = name.to_owned();
        let (release, mut released) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let confirmed = confirmed.clone();
            async move {
                let mut conn = conn;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = &mut released => {
                            let _ = conn.exec_drop("DO RELEASE_LOCK(?)", (&lock_name,)).await;
                            let _ = conn.disconnect().await;
                            return;
                        }
                    }
                    let sent = Instant::now();
                    let r = tokio::time::timeout(
                        LEASE,
                        conn.exec_first::<Option<i64>, _, _>(
                            "SELECT IS_USED_LOCK(?) = CONNECTION_ID()",
                            (&lock_name,),
                        ),
                    )
                    .await;
                    let reason = match r {
                        Ok(Ok(Some(Some(1)))) => {
                            *confirmed.lock().expect("lock confirmation") = sent;
                            continue;
                        }
                        Ok(Ok(_)) => "the lock is no longer held by this connection".to_string(),
                        Ok(Err(e)) => format!("lock connection failed: {e}"),
                        Err(_) => format!(
                            "the lock connection did not answer within {}s",
                            LEASE.as_secs()
                        ),
                    };
                    let _ = tx.send(Some(reason));
                    return;
                }
            }
        });
        tracing::info!(lock = %name, connection = connection_id, "holding the lock");
        NamedLock {
            name: name.to_owned(),
            target: target.to_owned(),
            lost: rx,
            connection_id,
            confirmed,
            release: Some(release),
            task,
        }
    }

    /// Releases the lock and closes its connection (dropping the lock does the same, without
    /// waiting for it).
    pub async fn release(mut self) {
        if let Some(tx) = self.release.take() {
            if tx.send(()).is_ok() {
                let _ = tokio::time::timeout(LEASE, &mut self.task).await;
            }
        }
    }

    /// Whether a poll found the lock lost (its connection failed, or the lock is gone).
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Ok while the lock is held and a poll confirmed it within [`LEASE`]; call it before
    /// writing.
    pub fn check(&self) -> Result<(), LockError> {
        let reason = match self.lost.borrow().clone() {
            Some(reason) => Some(reason),
            None => lease_expired(self.confirmed.lock().expect("lock confirmation").elapsed()),
        };
        match reason {
            Some(reason) => Err(LockError::Lost {
                lock: self.name.clone(),
                target: self.target.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// `GET_LOCK(name, wait)`, waiting whole seconds: whether `conn` holds `name` now.
pub async fn get_lock(
    conn: &mut Conn,
    name: &str,
    wait: Duration,
) -> Result<bool, mysql_async::Error> {
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (name, wait.as_secs()))
        .await?;
    Ok(got.flatten() == Some(1))
}

/// `IS_USED_LOCK(name)`: the id of the connection holding `name`, if one does.
pub async fn lock_holder(conn: &mut Conn, name: &str) -> Result<Option<i64>, mysql_async::Error> {
    let holder: Option<Option<i64>> = conn.exec_first("SELECT IS_USED_LOCK(?)", (name,)).await?;
    Ok(holder.flatten())
}

fn db_error(name: &str, target: &str) -> impl Fn(mysql_async::Error) -> LockError {
    let (lock, target) = (name.to_owned(), target.to_owned());
    move |source| LockError::Db {
        lock: lock.clone(),
        target: target.clone(),
        source,
    }
}

/// A lock connection: MariaDB drops it, and frees its locks, after [`LOCK_WAIT_TIMEOUT`] of
/// silence.
async fn connect(opts: Opts, name: &str, target: &str) -> Result<Conn, LockError> {
    let db = db_error(name, target);
    let mut conn = Conn::new(opts).await.map_err(&db)?;
    conn.query_drop(format!(
        "SET SESSION wait_timeout = {}",
        LOCK_WAIT_TIMEOUT.as_secs()
    ))
    .await
    .map_err(&db)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_counts_for_the_lease_only() {
        assert_eq!(lease_expired(Duration::ZERO), None);
        assert_eq!(lease_expired(LEASE), None);
        let why = lease_expired(LEASE + Duration::from_millis(1500)).unwrap();
        assert!(why.contains("no poll confirmed it for 6.5s"), "{why}");
        // A holder that checks before writing stops before MariaDB can free the lock.
        assert!(LEASE + POLL < LOCK_WAIT_TIMEOUT);
    }

    #[test]
    fn a_waiting_process_says_so_first_on_a_new_holder_and_then_now_and_then() {
        let t0 = Instant::now();
        assert!(should_report(None, 7, t0));
        assert!(!should_report(
            Some((7, t0)),
            7,
            t0 + Duration::from_secs(1)
        ));
        assert!(should_report(Some((7, t0)), 8, t0 + Duration::from_secs(1)));
        assert!(should_report(Some((7, t0)), 7, t0 + REPORT_EVERY));
    }
}
