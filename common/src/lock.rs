//! Named locks on MariaDB (`GET_LOCK`), held on a dedicated connection for as long as a process
//! does the work the lock guards: one producer per topic, one mirror per target topic.
//!
//! A second holder is refused at once, naming the connection that holds the lock. The lock is
//! checked every second; when it is lost (the connection dropped, the server restarted), the
//! watch channel flips so the holder can stop writing at once.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::watch;

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
    /// Only a failure to reach the server is worth retrying; a held lock means another
    /// process does the work.
    pub fn is_transient(&self) -> bool {
        matches!(self, LockError::Db { .. })
    }
}

pub struct NamedLock {
    pub name: String,
    target: String,
    /// `Some(reason)` once the lock is lost.
    pub lost: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NamedLock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NamedLock {
    /// Takes `name`, or fails with [`LockError::Held`]; `what` names the guarded work in the
    /// message ("a producer for sf.cdc").
    pub async fn acquire(
        opts: Opts,
        target: &str,
        name: &str,
        what: &str,
    ) -> Result<NamedLock, LockError> {
        let db = |source| LockError::Db {
            lock: name.to_owned(),
            target: target.to_owned(),
            source,
        };
        let mut conn = Conn::new(opts).await.map_err(db)?;
        let got: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, 0)", (name,))
            .await
            .map_err(db)?;
        if got.flatten() != Some(1) {
            let holder: Option<Option<i64>> = conn
                .exec_first("SELECT IS_USED_LOCK(?)", (name,))
                .await
                .map_err(db)?;
            return Err(LockError::Held {
                lock: name.to_owned(),
                target: target.to_owned(),
                holder: holder
                    .flatten()
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                what: what.to_owned(),
            });
        }
        let (tx, rx) = watch::channel(None);
        let lock_name = name.to_owned();
        let task = tokio::spawn(async move {
            let mut conn = conn;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let r: Result<Option<Option<i64>>, _> = conn
                    .exec_first("SELECT IS_USED_LOCK(?) = CONNECTION_ID()", (&lock_name,))
                    .await;
                let reason = match r {
                    Ok(Some(Some(1))) => continue,
                    Ok(_) => "the lock is no longer held by this connection".to_string(),
                    Err(e) => format!("lock connection failed: {e}"),
                };
                let _ = tx.send(Some(reason));
                return;
            }
        });
        tracing::info!(lock = %name, "holding the lock");
        Ok(NamedLock {
            name: name.to_owned(),
            target: target.to_owned(),
            lost: rx,
            task,
        })
    }

    /// The loss as an error, if the lock was lost.
    pub fn check(&self) -> Result<(), LockError> {
        match self.lost.borrow().clone() {
            Some(reason) => Err(LockError::Lost {
                lock: self.name.clone(),
                target: self.target.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}
