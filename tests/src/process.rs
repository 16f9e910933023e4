//! The processes a suite starts (Continuum's binaries, a throwaway server): killed and reaped
//! whatever way the test ends, signalled by name, and given a free port.

use std::process::{Child, Command};

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
