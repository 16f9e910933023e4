//! The producer lock: `GET_LOCK('continuum.producer.<topic>')` on the source, held on a
//! dedicated connection for as long as the producer writes. A second producer for the same
//! topic is refused. The lock is checked every second; when it is lost (the connection dropped,
//! the server restarted), the watch channel flips and the pipeline stops writing at once.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::sync::watch;

use crate::error::{DbContext, ProducerError};

pub struct SourceLock {
    pub name: String,
    target: String,
    /// `Some(reason)` once the lock is lost.
    pub lost: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SourceLock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SourceLock {
    /// Takes the lock, or fails with [`ProducerError::LockHeld`] naming the holder.
    pub async fn acquire(opts: Opts, target: &str, topic: &str) -> Result<SourceLock, ProducerError> {
        let name = format!("continuum.producer.{topic}");
        let mut conn = Conn::new(opts).await.db(target)?;
        let got: Option<Option<i64>> = conn.exec_first("SELECT GET_LOCK(?, 0)", (&name,)).await.db(target)?;
        if got.flatten() != Some(1) {
            let holder: Option<Option<i64>> = conn.exec_first("SELECT IS_USED_LOCK(?)", (&name,)).await.db(target)?;
            return Err(ProducerError::LockHeld {
                lock: name,
                target: target.into(),
                holder: holder.flatten().map(|h| h.to_string()).unwrap_or_else(|| "unknown".into()),
                topic: topic.into(),
            });
        }
        let (tx, rx) = watch::channel(None);
        let lock_name = name.clone();
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
        tracing::info!(lock = %name, "holding the producer lock");
        Ok(SourceLock { name, target: target.into(), lost: rx, task })
    }

    /// The loss as an error, if the lock was lost.
    pub fn check(&self) -> Result<(), ProducerError> {
        match self.lost.borrow().clone() {
            Some(reason) => Err(ProducerError::LockLost { lock: self.name.clone(), target: self.target.clone(), reason }),
            None => Ok(()),
        }
    }
}
