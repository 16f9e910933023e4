//! `workload`: write a realistic, checkable workload to a MariaDB primary (the SF site of the
//! local stack by default: `. .stack/env` first). See `continuum_tests::workload` for what it
//! writes; `workload --help` for the flags.
//!
//! Exit status: 0 when the run finished and the bank invariant holds, 1 on an error or a
//! violated invariant, 2 on bad flags.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use continuum_tests::workload::{run_until, Config};

#[tokio::main]
async fn main() -> ExitCode {
    // `workload bench ...`: the benchmark's load (continuum_tests::workload::bench).
    if std::env::args().nth(1).as_deref() == Some("bench") {
        return continuum_tests::workload::bench::main(std::env::args().skip(2).collect()).await;
    }
    let cfg = Config::parse();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("workload: stopping after the current transaction");
            stop.store(true, Ordering::Relaxed);
        });
    }
    match run_until(&cfg, stop).await {
        Ok(s) => {
            if cfg.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).expect("summary as JSON")
                );
            } else {
                print!("{}", s.human());
            }
            if s.bank.invariant_ok {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "workload: the sum of the balances is {}, not {}: the bank invariant is violated",
                    s.bank.balance_total, s.bank.balance_expected
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("workload: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
