//! Single apply per topic: the named lock `continuum.apply.<topic>` (`GET_LOCK`, no wait) on the
//! target MariaDB, held by a dedicated connection for the life of the process.
//!
//! Guarantees:
//! - a second apply (or a `replay`) for the same topic on the same replica refuses to start,
//!   naming the connection that holds the lock;
//! - before every commit apply checks that its connection still holds the lock; if the lock
//!   connection died, the lock is re-taken (or apply stops if someone else took it), so two
//!   appliers never interleave commits.

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
    conn: Option<Conn>,
    opts: Opts,
    pub name: String,
    conn_id: u32,
    target: String,
    topic: String,
}

impl ApplyLock {
    /// Takes the lock or fails with [`ApplyError::LockHeld`].
    pub async fn acquire(opts: Opts, target: &str, topic: &str) -> Result<ApplyLock> {
        let mut lock = ApplyLock {
            conn: None,
            opts,
            name: lock_name(topic),
            conn_id: 0,
            target: target.to_owned(),
            topic: topic.to_owned(),
        };
        lock.take().await?;
        Ok(lock)
    }

    fn db_err(&self, what: &str, source: mysql_async::Error) -> ApplyError {
        ApplyError::Db {
            target: self.target.clone(),
            what: what.to_owned(),
            source,
        }
    }

    async fn take(&mut self) -> Result<()> {
        let mut conn = Conn::new(self.opts.clone())
            .await
            .map_err(|e| self.db_err("connecting to take the apply lock", e))?;
        let got: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, 0)", (&self.name,))
            .await
            .map_err(|e| self.db_err("taking the apply lock", e))?;
        if got.flatten() != Some(1) {
            let holder: Option<Option<i64>> = conn
                .exec_first("SELECT IS_USED_LOCK(?)", (&self.name,))
                .await
                .map_err(|e| self.db_err("asking who holds the apply lock", e))?;
            return Err(ApplyError::LockHeld {
                lock: self.name.clone(),
                target: self.target.clone(),
                holder: holder.flatten().map_or("unknown".into(), |h| h.to_string()),
                topic: self.topic.clone(),
            });
        }
        self.conn_id = conn.id();
        self.conn = Some(conn);
        tracing::info!(lock = %self.name, connection = self.conn_id, "took the apply lock");
        Ok(())
    }

    /// Makes sure the lock is still ours: pings the lock connection and re-takes the lock if
    /// that connection died (fails with `LockHeld` if someone else has it now).
    pub async fn ensure(&mut self) -> Result<()> {
        let alive = match self.conn.as_mut() {
            Some(c) => c.ping().await.is_ok(),
            None => false,
        };
        if !alive {
            tracing::warn!(lock = %self.name, "the apply lock's connection is gone; taking the lock again");
            self.conn = None;
            self.take().await?;
        }
        Ok(())
    }

    /// Checks, on `conn`, that the lock is still held by this process's lock connection.
    pub async fn check(&self, conn: &mut Conn) -> Result<()> {
        let holder: Option<Option<i64>> = conn
            .exec_first("SELECT IS_USED_LOCK(?)", (&self.name,))
            .await
            .map_err(|e| self.db_err("checking the apply lock", e))?;
        match holder.flatten() {
            Some(id) if id == self.conn_id as i64 => Ok(()),
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

    /// Releases the lock (also released when the process ends).
    pub async fn release(mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.exec_drop("DO RELEASE_LOCK(?)", (&self.name,)).await;
            let _ = c.disconnect().await;
        }
    }
}
