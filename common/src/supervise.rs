//! One restart policy for Continuum's long-running loops (the producer's pipeline, the mirror,
//! apply) and one shutdown signal for the whole process.
//!
//! A loop runs sessions. A session that fails with a transient error is tried again after a
//! jittered exponential backoff: the `n`-th delay in a row is `d` plus a random part of `d`, where
//! `d` doubles from [`MIN_DELAY`] up to the component's `max_retry_delay` (so no delay exceeds
//! twice that setting, and restarts of many processes do not fall into step). Each failure comes
//! with the component's progress count (records the broker acknowledged, commits); when it grew
//! since the failure before, the next attempt waits the shortest delay again. A fatal error stops
//! the loop.
//!
//! Each retry and each fatal stop shows in the same three places, always together: the
//! component's entry in `/health` (`starting` with the error while retrying, `failed` when
//! stopped), its `errors_total{kind}` counter, and one log line naming the error and the delay.
//!
//! [`shutdown_on_signals`] installs the process's only SIGTERM/SIGINT handler: the first signal
//! flips one watch that every loop of the process observes (each stops at its own safe point),
//! a second one exits at once with status 130.

use std::fmt::Display;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;

use crate::observe::{Health, Status};

/// The first delay after a failure (and again after progress).
pub const MIN_DELAY: Duration = Duration::from_millis(200);

/// The process's shutdown: `true` once a stop was asked for.
pub type Shutdown = watch::Receiver<bool>;

/// Restarts of one component's sessions: backoff, health, error counter and log line.
pub struct Supervisor {
    component: &'static str,
    errors_metric: &'static str,
    health: Health,
    builder: ExponentialBuilder,
    backoff: ExponentialBackoff,
    /// The progress count at the last failure.
    progress: u64,
}

impl Supervisor {
    /// `component` names the entry in `/health` (`producer`, `mirror`, `apply`);
    /// `errors_metric` is its `…_errors_total` counter (label `kind`); `max_delay` is the
    /// component's `max_retry_delay` (at least [`MIN_DELAY`]).
    pub fn new(
        component: &'static str,
        errors_metric: &'static str,
        health: Health,
        max_delay: Duration,
    ) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(MIN_DELAY)
            .with_max_delay(max_delay.max(MIN_DELAY))
            .with_jitter()
            .without_max_times();
        Supervisor {
            component,
            errors_metric,
            health,
            backoff: builder.build(),
            builder,
            progress: 0,
        }
    }

    /// The delay before the next attempt after a transient error of `kind`, recorded in the
    /// health, the error counter and the log (`next` says what the retry does). `progress` is a
    /// count that only grows with the component's work (records acknowledged, commits): if it
    /// grew since the last failure, the backoff starts over from the shortest delay.
    pub fn transient(
        &mut self,
        progress: u64,
        kind: &'static str,
        error: &dyn Display,
        next: &str,
    ) -> Duration {
        if progress > self.progress {
            self.progress = progress;
            self.backoff = self.builder.build();
        }
        let delay = self
            .backoff
            .next()
            .expect("the backoff has no maximum number of attempts");
        metrics::counter!(self.errors_metric, "kind" => kind).increment(1);
        self.health.set(
            self.component,
            Status::Starting,
            format!("retrying in {}: {error}", humantime::format_duration(delay)),
        );
        tracing::warn!(component = self.component, error = %error, retry_in = ?delay, "{}: {next}", self.component);
        delay
    }

    /// Waits `delay`, or until shutdown is asked for; `false` if it was.
    pub async fn wait(&self, delay: Duration, shutdown: &mut Shutdown) -> bool {
        if *shutdown.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// A fatal error of `kind` stops the component: recorded in the health and the counter (the
    /// caller returns the error, whose message says what to do).
    pub fn fatal(&self, kind: &'static str, error: &dyn Display) {
        metrics::counter!(self.errors_metric, "kind" => kind).increment(1);
        self.health
            .set(self.component, Status::Failed, error.to_string());
    }
}

/// Installs the process's SIGTERM and SIGINT handler and returns the shutdown watch. The first
/// signal logs `first` and flips the watch; a second exits the process at once (status 130).
pub fn shutdown_on_signals(first: &'static str) -> Shutdown {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGTERM handler; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("{first} (signal again to stop at once)");
        let _ = tx.send(true);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor(max: Duration) -> Supervisor {
        Supervisor::new(
            "test",
            "continuum_test_errors_total",
            Health::default(),
            max,
        )
    }

    /// The `n`-th delay in a row lies in `[d, 2d)` with `d = min(200 ms * 2^(n-1), max)`.
    #[test]
    fn delays_double_up_to_the_maximum_with_jitter_below_the_delay() {
        let max = Duration::from_secs(5);
        let mut s = supervisor(max);
        for n in 0..12u32 {
            let d = (MIN_DELAY * 2u32.pow(n)).min(max);
            let got = s.transient(0, "db", &"down", "retrying");
            assert!(
                got >= d && got < d * 2,
                "delay {n}: {got:?} outside [{d:?}, {:?})",
                d * 2
            );
        }
    }

    #[test]
    fn progress_starts_the_backoff_over() {
        let mut s = supervisor(Duration::from_secs(30));
        for _ in 0..8 {
            s.transient(0, "db", &"down", "retrying");
        }
        assert!(s.transient(0, "db", &"down", "retrying") >= Duration::from_secs(25));
        let first = s.transient(1, "db", &"down", "retrying");
        assert!(
            first < MIN_DELAY * 2,
            "after progress the delay is the shortest again, got {first:?}"
        );
    }

    #[test]
    fn retries_and_fatal_errors_show_in_the_health() {
        let health = Health::default();
        let mut s = Supervisor::new(
            "mirror",
            "continuum_test_errors_total",
            health.clone(),
            Duration::from_secs(1),
        );
        s.transient(0, "kafka", &"broker down", "resuming");
        let c = health.snapshot().get("mirror").cloned().expect("entry");
        assert_eq!(c.status, Status::Starting);
        assert!(
            c.detail.contains("broker down") && c.detail.contains("retrying in"),
            "{c:?}"
        );
        s.fatal("config", &"bad setting");
        let c = health.snapshot().get("mirror").cloned().expect("entry");
        assert_eq!(c.status, Status::Failed);
        assert_eq!(c.detail, "bad setting");
    }

    #[tokio::test]
    async fn a_wait_ends_early_on_shutdown() {
        let s = supervisor(Duration::from_secs(60));
        let (tx, mut rx) = watch::channel(false);
        let waiting = tokio::spawn(async move { s.wait(Duration::from_secs(60), &mut rx).await });
        tx.send(true).unwrap();
        let completed = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends on shutdown")
            .unwrap();
        assert!(!completed, "a wait cut short by shutdown says so");
    }
}
