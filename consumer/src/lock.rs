//! Single apply per topic: the named lock `continuum.apply.<topic>` (`GET_LOCK`) on the target
//! MariaDB, held by a dedicated connection for the life of the process
//! ([`continuum_common::lock::NamedLock`]: a short `wait_timeout`, polled every second).
//!
//! Guarantees:
//! - a second apply for the same topic on the same replica waits for the lock, logging which
//!   connection holds it, and takes over when it is free: when the first apply stops, or when
//!   MariaDB drops the connection of one whose host died (within the lock connection's
//!   `wait_timeout` of its last poll, not the default 8 hours);
//! - `replay` (taking it with [`Wait::No`]) refuses to run while an apply holds the lock, naming
//!   the connection that holds it;
//! - before every commit apply checks, on its own connection and so on the server that commits,
//!   that its lock connection still holds the lock ([`ApplyLock::check`]); if the lock
//!   connection died, the lock is re-taken (or apply restarts its session, waiting, if someone
//!   else took it), so two appliers never interleave commits.

pub use continuum_common::lock::Wait;
use continuum_common::lock::{LockError, NamedLock};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

use crate::error::{ApplyError, Result};

/// The lock name for `topic` (hashed when too long for MariaDB's limit).
pub fn lock_name(topic: &str) -> String {
    let name = format!("continuum.apply.{topic}");
    if name.len() <= 128 {
        return name;
    }
    // FNV-1a, enough to keep distinct topics apart.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in topic.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let prefix: String = topic.chars().take(80).collect();
    format!("continuum.apply.{prefix}#{h:016x}")
}

pub struct ApplyLock {
    lock: Option<NamedLock>,
    opts: Opts,
    pub name: String,
    target: String,
    topic: String,
}

impl ApplyLock {
    /// Takes the lock. While another apply holds it, [`Wait::UntilFree`] waits (and says so);
    /// [`Wait::No`] fails at once with [`ApplyError::LockHeld`].
    pub async fn take(opts: Opts, target: &str, topic: &str, wait: Wait) -> Result<ApplyLock> {
        let mut lock = ApplyLock::new(opts, target, topic);
        let l = NamedLock::take(lock.opts.clone(), target, &lock.name, &lock.what(), wait)
            .await
            .map_err(|e| lock.error(e))?;
        lock.took(l);
        Ok(lock)
    }

    fn new(opts: Opts, target: &str, topic: &str) -> ApplyLock {
        ApplyLock {
            lock: None,
            opts,
            name: lock_name(topic),
            target: target.to_owned(),
            topic: topic.to_owned(),
        }
    }

    fn what(&self) -> String {
        format!("an apply of {}", self.topic)
    }

    fn took(&mut self, l: NamedLock) {
        tracing::info!(lock = %self.name, connection = l.connection_id, "took the apply lock");
        self.lock = Some(l);
    }

    fn error(&self, e: LockError) -> ApplyError {
        match e {
            LockError::Db { source, .. } => ApplyError::Db {
                target: self.target.clone(),
                what: format!("taking the apply lock '{}'", self.name),
                source,
            },
            LockError::Held { holder, .. } => ApplyError::LockHeld {
                lock: self.name.clone(),
                target: self.target.clone(),
                holder,
                topic: self.topic.clone(),
            },
            LockError::Lost { reason, .. } => ApplyError::LockLost {
                lock: self.name.clone(),
                target: self.target.clone(),
                reason,
            },
        }
    }

    /// Makes sure the lock is still ours: if its connection died, re-takes the lock; if someone
    /// else holds it now, fails with `LockLost` (transient: the session restarts and tries
    /// again, so this apply waits as a standby).
    pub async fn ensure(&mut self) -> Result<()> {
        if self.lock.as_ref().is_some_and(|l| !l.is_lost()) {
            return Ok(());
        }
        tracing::warn!(lock = %self.name, "the apply lock's connection is gone; taking the lock again");
        self.lock = None;
        let (opts, what) = (self.opts.clone(), self.what());
        match NamedLock::take(opts, &self.target, &self.name, &what, Wait::No).await {
            Ok(l) => {
                self.took(l);
                Ok(())
            }
            Err(LockError::Held { holder, .. }) => Err(ApplyError::LockLost {
                lock: self.name.clone(),
                target: self.target.clone(),
                reason: format!("it is held by connection {holder} now"),
            }),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Checks, on `conn`, that the lock is still held by this process's lock connection.
    pub async fn check(&self, conn: &mut Conn) -> Result<()> {
        let Some(ours) = self.lock.as_ref().map(|l| l.connection_id) else {
            return Err(ApplyError::LockLost {
                lock: self.name.clone(),
                target: self.target.clone(),
                reason: "the lock connection was lost".into(),
            });
        };
        let holder: Option<Option<i64>> = conn
            .exec_first("SELECT IS_USED_LOCK(?)", (&self.name,))
            .await
            .map_err(ApplyError::db(&self.target, "checking the apply lock"))?;
        match holder.flatten() {
            Some(id) if id == ours as i64 => Ok(()),
            other => Err(ApplyError::LockLost {
                lock: self.name.clone(),
                target: self.target.clone(),
                reason: match other {
                    Some(id) => format!("it is held by connection {id} now"),
                    None => "it is free (the lock connection was lost)".into(),
                },
            }),
        }
    }

    /// Releases the lock (also released when the process ends): the lock connection closes.
    pub async fn release(mut self) {
        if let Some(l) = self.lock.take() {
            l.release().await;
        }
    }
}
