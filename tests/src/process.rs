//! The processes a suite starts (Continuum's binaries, a throwaway server): killed and reaped
//! whatever way the test ends, signalled by name, given a free port, and watched while one
//! takes over from another that stopped answering.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process killed (-9) and reaped when dropped, also when the test panics, so a failing
/// test leaves nothing running. Woken first (`SIGCONT`) in case the test stopped it.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        signal(self.0.id(), "CONT");
        kill9(&mut self.0);
    }
}

/// Kills a child with SIGKILL and reaps it.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends the signal `sig` (`TERM`, `STOP`, `CONT`, ...) to `pid`; whether `kill` succeeded.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A TCP port of 127.0.0.1 that was free a moment ago (for a metrics listener, a server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (at most `timeout`, polling every 250 ms) until `taken_over` holds: `replacement` was
/// started after another process was stopped (at `stopped`) while it held its lock through the
/// connection `silent_holder`, and must wait, then take over. Panics with the replacement's
/// `log` if it exits meanwhile or the time runs out (then also naming who holds the lock now).
/// Once it has taken over, prints how long that took and asserts the lock has a new holder.
pub async fn wait_for_takeover(
    replacement: &mut Child,
    timeout: Duration,
    stopped: Instant,
    silent_holder: i64,
    mut taken_over: impl AsyncFnMut() -> bool,
    mut lock_holder: impl AsyncFnMut() -> Option<i64>,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !taken_over().await {
        if let Some(status) = replacement.try_wait().unwrap() {
            panic!(
                "the replacement exited ({status}) while the silent connection {silent_holder} held the lock:\n{}",
                log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the replacement did not take over within {timeout:?}; the lock is held by {:?}; its log:\n{}",
            lock_holder().await,
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "the replacement took over {:.1}s after the first process stopped answering",
        stopped.elapsed().as_secs_f64()
    );
    assert_ne!(lock_holder().await, Some(silent_holder));
}
